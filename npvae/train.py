"""The training loop: minibatch descent on any model's loss, evaluation, checkpoints, resume.

The Trainer relies only on the model contract of :mod:`npvae.models` (``params``,
``grads``, ``forward -> terms``, ``backward``, ``conditional``, ``config``), never on a
model's type: every model kind trains through it.

Usable from code::

    import numpy as np
    from npvae import VAE, Adam, Trainer, TrainConfig, load_mnist

    train_images, _ = load_mnist("train")
    test_images, _ = load_mnist("test")
    model = VAE(784, 20, (400,), rng=np.random.default_rng(0))
    trainer = Trainer(model, Adam(model.params, lr=1e-3), train_images, test_images,
                      TrainConfig(epochs=10), rng=np.random.default_rng(1),
                      checkpoint_path="results/checkpoint.npz")
    history = trainer.fit()

Everything random in training comes from the one ``rng`` given to the Trainer: the
permutation of each epoch, the dynamic binarization of each batch, and the noise
``eps``. Its state is stored in every checkpoint together with the parameters, the
optimizer state, the epoch's permutation and the counters, so a run resumed from a
checkpoint takes exactly the steps the uninterrupted run would have taken (bit for bit
in float64). Evaluation uses its own Generator seeded from ``config.seed``, so it never
disturbs the training stream.

Faults: a non-finite loss stops training with :class:`NonFiniteLossError` (naming the
epoch and batch) before the bad step is applied, and the last checkpoint, written at the
end of the last good epoch, is left as it was. SIGINT (Ctrl-C) sets a flag; the step
under way finishes, a checkpoint of it is written, and :class:`TrainingInterrupted` is
raised. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import data as _data
from ._checks import check_bool, check_choice, check_float, check_int, check_rng
from .checkpoint import Checkpoint, load_checkpoint, restore_params, save_checkpoint
from .optim import Optimizer
from .progress import Progress

#: seconds an epoch runs before :class:`Trainer` (``progress=True``) starts reporting inside it
PROGRESS_DELAY = 3.0

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "TrainingInterrupted", "upgrade_meta"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; ``epoch`` and ``batch`` (1-based) say where."""

    def __init__(self, epoch: int, batch: int, loss: float, checkpoint: Path | None):
        self.epoch, self.batch, self.loss, self.checkpoint = epoch, batch, loss, checkpoint
        kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
        super().__init__(f"training stopped: the loss is {loss} at epoch {epoch}, batch {batch} "
                         f"(try a smaller --lr or gradient clipping){kept}")


class TrainingInterrupted(Exception):
    """Training was stopped by SIGINT after a completed step; ``checkpoint`` holds that step."""

    def __init__(self, epoch: int, batch: int, checkpoint: Path | None):
        self.epoch, self.batch, self.checkpoint = epoch, batch, checkpoint
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else " (no checkpoint path was set)"
        super().__init__(f"interrupted after epoch {epoch}, batch {batch}{where}")


@dataclass
class TrainConfig:
    """Training hyperparameters (all JSON-serialisable; stored in checkpoints).

    epochs : int >= 1             number of passes over the training set
    batch_size : int >= 1         examples per step (the last batch of an epoch may be smaller)
    beta : float >= 0             KL weight (1 = the ELBO); only for models whose forward takes ``beta``
    warmup_epochs : float >= 0    linear KL warm-up: beta_t = beta * min(1, t / (warmup_epochs * steps per epoch))
                                  (Bowman et al. 2016; Sønderby et al. 2016). 0 disables it.
    n_samples : int >= 1          L, samples of z per example in the ELBO estimate (models taking ``n_samples``)
    binarize : str                "dynamic" (fresh Bernoulli draw per batch), "static" (one fixed draw
                                  from ``seed``) or "none" (grey levels)
    seed : int >= 0               seeds the static binarization and the evaluation noise
    eval_batch_size : int >= 1    batch size of the test-set evaluation
    """

    epochs: int = 10
    batch_size: int = 128
    beta: float = 1.0
    warmup_epochs: float = 0.0
    n_samples: int = 1
    binarize: str = "dynamic"
    seed: int = 0
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        self.epochs = check_int(self.epochs, "epochs", minimum=1)
        self.batch_size = check_int(self.batch_size, "batch_size", minimum=1)
        self.beta = check_float(self.beta, "beta", minimum=0.0)
        self.warmup_epochs = check_float(self.warmup_epochs, "warmup_epochs", minimum=0.0)
        self.n_samples = check_int(self.n_samples, "n_samples", minimum=1)
        self.binarize = check_choice(self.binarize, "binarize", ("dynamic", "static", "none"))
        self.seed = check_int(self.seed, "seed", minimum=0)
        self.eval_batch_size = check_int(self.eval_batch_size, "eval_batch_size", minimum=1)


def upgrade_meta(meta: dict) -> dict:
    """A checkpoint's meta in today's form: format 1 (a VAE before the model contract) is converted.

    Format 1 stored ``model_config`` without ``kind`` (always a VAE) and the epoch's sums as
    a list [reconstruction, kl, examples]; format 2 adds ``kind`` and keeps the sums by
    name. Raises ValueError naming ``format_version`` for a version this code cannot read.
    """
    version = meta.get("format_version", 1)
    if version == 2:
        return meta
    if version != 1:
        raise ValueError(f"checkpoint: expected format_version 1 or 2, got {version!r}")
    meta = dict(meta)
    if isinstance(meta.get("model_config"), dict):
        meta["model_config"] = {"kind": "vae", **meta["model_config"]}
    if isinstance(meta.get("sums"), list) and len(meta["sums"]) == 3:
        rec, kl, _ = meta["sums"]
        meta["sums"] = {"loss": rec + kl, "reconstruction": rec, "kl": kl, "elbo": -(rec + kl)} if _ else {}
    return meta


def _accumulate(sums: dict, terms, n: int) -> None:
    """Add a batch's ``n * terms.loss`` and per-example metric sums (float64) into ``sums``."""
    sums["loss"] = sums.get("loss", 0.0) + terms.loss * n
    for k, v in terms.metrics.items():
        sums[k] = sums.get(k, 0.0) + float(np.sum(v, dtype=np.float64))


def _prepare(images: np.ndarray, binarize: str, seed: int, name: str) -> np.ndarray:
    """Images as uint8 (N, 784). "static" binarizes once here (values 0/255 -> exactly 0/1 later)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        got = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise TypeError(f"{name}: expected a uint8 array of images (N, 28, 28) or (N, 784), got {got}")
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"{name}: expected a non-empty batch of images (N, 28, 28) or (N, 784), got shape {images.shape}")
    images = images.reshape(len(images), -1)
    return _data.binarize_static(images, seed=seed) if binarize == "static" else images


class Trainer:
    """Train any model that follows the contract of :mod:`npvae.models` on uint8 images.

    Parameters
    ----------
    model
        A model following the contract (``params``, ``grads``, ``forward``, ``backward``,
        ``conditional``, ``config``, ``x_dim``, ``dtype``).
    optimizer : Optimizer
        From :mod:`npvae.optim`, built on ``model.params``.
    train_images, test_images : np.ndarray, uint8, (N, 28, 28) or (N, 784)
        Kept as uint8; each batch is converted to ``model.dtype`` as it is used. The test
        set is binarized once (a fixed draw from ``seed + 1``) unless ``binarize="none"``,
        so test numbers are comparable across epochs. ``test_images`` may be None.
    config : TrainConfig
    rng : np.random.Generator
        The training stream (permutations, binarization, the model's noise).
    checkpoint_path : path, optional
        Where to write the checkpoint after every epoch and on interrupt.
    log : callable(str), optional
        Receives one progress line per epoch (default ``print``).
    train_labels, test_labels : np.ndarray of int, (N,), optional
        Class labels; required when ``model.conditional`` (a CVAE), ignored otherwise.
    progress : bool
        Report progress inside an epoch (batches done, batches/s, time left; see
        :class:`npvae.progress.Progress`) once it has run :data:`PROGRESS_DELAY` seconds, so
        only long epochs report; on stderr. Default False.

    Attributes: ``epoch`` (completed epochs), ``step`` (completed steps in all),
    ``history`` (one dict per epoch, see :meth:`fit`), ``initial_test_loss`` (the test
    loss before the first step, measured by :meth:`fit`).

    Raises TypeError/ValueError naming a bad argument, e.g. ``beta`` != 1 for a model
    whose forward has no KL weight, or missing labels for a conditional model.
    """

    def __init__(self, model, optimizer: Optimizer, train_images: np.ndarray, test_images: np.ndarray | None = None,
                 config: TrainConfig | None = None, *, rng: np.random.Generator, checkpoint_path=None,
                 log: Callable[[str], None] | None = print, train_labels: np.ndarray | None = None,
                 test_labels: np.ndarray | None = None, progress: bool = False) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected an npvae.optim Optimizer, got {type(optimizer).__name__}")
        self.model, self.optimizer = model, optimizer
        self.config = config if config is not None else TrainConfig()
        if not isinstance(self.config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(self.config).__name__}")
        self.rng = check_rng(rng)
        c = self.config
        self._options = self._forward_options(model, c)
        self.train_images = _prepare(train_images, c.binarize, c.seed, "train_images")
        if self.train_images.shape[1] != model.x_dim:
            raise ValueError(f"train_images: expected {model.x_dim} pixels per image (the model's x_dim), "
                             f"got {self.train_images.shape[1]}")
        self.test_images = None
        if test_images is not None:
            test_mode = "none" if c.binarize == "none" else "static"
            self.test_images = _prepare(test_images, test_mode, c.seed + 1, "test_images")
        self.conditional = bool(getattr(model, "conditional", False))
        self.train_labels = self._labels(train_labels, self.train_images, "train_labels")
        self.test_labels = self._labels(test_labels, self.test_images, "test_labels")
        # "static" data are already 0/255, so each batch only needs the /255 of "none"
        self._batch_mode = "dynamic" if c.binarize == "dynamic" else "none"
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.log = log or (lambda line: None)
        self.progress = check_bool(progress, "progress")
        self.steps_per_epoch = _data.n_batches(len(self.train_images), c.batch_size)
        # training state (everything a checkpoint must hold to resume exactly)
        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self._perm: np.ndarray | None = None
        self._batch = 0            # completed batches in the current epoch
        self._sums: dict[str, float] = {}  # this epoch's sums of n * loss and of each metric, float64
        self._seconds = 0.0         # training time spent in the current epoch so far
        self._interrupted = False
        self.initial_test_loss: float | None = None  # test loss before the first step

    @staticmethod
    def _forward_options(model, c: TrainConfig) -> dict:
        """The optional forward keywords this run needs (``beta``, ``n_samples``), checked against the model."""
        accepted = getattr(model, "forward_options", ())
        wanted = {"beta": c.beta != 1.0 or c.warmup_epochs > 0, "n_samples": c.n_samples != 1}
        for name, needed in wanted.items():
            if needed and name not in accepted:
                what = {"beta": f"beta={c.beta}, warmup_epochs={c.warmup_epochs}",
                        "n_samples": f"n_samples={c.n_samples}"}[name]
                raise ValueError(f"{name}: the {getattr(model, 'kind', type(model).__name__)} model's objective has "
                                 f"no {name}; expected the default (1{', no warm-up' if name == 'beta' else ''}), "
                                 f"got {what}")
        return {name for name, needed in wanted.items() if needed}

    def _labels(self, labels, images, name):
        if not self.conditional or images is None:
            return None
        if labels is None:
            raise ValueError(f"{name}: expected class labels for the conditional {self.model.kind} model, got None")
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected {len(images)} integer labels (one per image), "
                             f"got shape {labels.shape}, dtype {labels.dtype}")
        return labels.astype(np.int64)

    def _forward(self, x, labels, rng, **options):
        return self.model.forward(x, *(() if labels is None else (labels,)), rng=rng, **options)

    # ------------------------------------------------------------------------------
    def beta_at(self, step: int) -> float:
        """The KL weight used at 0-based global step ``step`` (linear warm-up, then ``beta``)."""
        c = self.config
        if c.warmup_epochs == 0:
            return c.beta
        return c.beta * min(1.0, (step + 1) / (c.warmup_epochs * self.steps_per_epoch))

    def evaluate(self, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> dict:
        """Mean test loss and metrics (nats per example) of uint8 ``images``.

        Defaults to the prepared test set (and its labels). The loss is the model's
        objective at its defaults (beta = 1: the -ELBO for a VAE). Uses a Generator seeded
        from ``config.seed`` (the same noise at every call), never the training stream.
        Returns a dict with ``loss`` and one key per metric of ``terms.metrics``.
        """
        if images is None:
            images, labels = self.test_images, self.test_labels
        if images is None:
            raise ValueError("images: expected test images (none were given to the Trainer), got None")
        rng = np.random.default_rng([self.config.seed, 2])
        sums: dict[str, float] = {}
        size = self.config.eval_batch_size
        for i in range(0, len(images), size):
            x = _data.batch_to_float(images[i:i + size], binarize="none", dtype=self.model.dtype)
            terms = self._forward(x, None if labels is None else labels[i:i + size], rng)
            _accumulate(sums, terms, len(x))
        return {k: v / len(images) for k, v in sums.items()}

    # ------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train until ``config.epochs`` epochs are complete; return the history.

        Each history entry: ``epoch``; ``train_loss`` (the mean of ``terms.loss`` over the
        epoch, at the KL weight of each step) and ``train_<metric>`` for every metric the
        model reports (e.g. ``train_reconstruction``, ``train_kl``), nats per example;
        ``test_loss`` and ``test_<metric>`` (if a test set was given, at beta = 1);
        ``beta`` (at the epoch's end); ``seconds`` (training time of the epoch, evaluation
        excluded); ``samples_per_s``.

        Raises NonFiniteLossError or TrainingInterrupted as described in the module
        docstring.
        """
        if self.step == 0 and self.test_images is not None and self.initial_test_loss is None:
            self.initial_test_loss = self.evaluate()["loss"]
        previous = self._install_sigint()
        try:
            while self.epoch < self.config.epochs:
                self._train_epoch()
                self._end_epoch()
                if self._interrupted:  # Ctrl-C during the evaluation: the epoch's checkpoint is written
                    raise TrainingInterrupted(self.epoch, self.steps_per_epoch, self.checkpoint_path)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return self.history

    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._interrupted:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._interrupted = True

        return signal.signal(signal.SIGINT, handler)

    def _train_epoch(self) -> None:
        c, model = self.config, self.model
        n = len(self.train_images)
        if self._perm is None:  # a new epoch (not one resumed mid-way)
            self._perm = self.rng.permutation(n)
            self._batch, self._sums, self._seconds = 0, {}, 0.0
        start = time.perf_counter()
        # a progress line only for epochs longer than PROGRESS_DELAY (the IWAE paper's batch 20, k = 50)
        bar = Progress(self.steps_per_epoch, f"epoch {self.epoch + 1}/{c.epochs}", unit="batches",
                       quiet=not self.progress, delay=PROGRESS_DELAY, done=self._batch)
        try:
            while self._batch < self.steps_per_epoch and not self._interrupted:
                idx = self._perm[self._batch * c.batch_size:(self._batch + 1) * c.batch_size]
                x = _data.batch_to_float(self.train_images[idx], binarize=self._batch_mode, rng=self.rng,
                                         dtype=model.dtype)
                options = {"beta": self.beta_at(self.step)} if "beta" in self._options else {}
                if "n_samples" in self._options:
                    options["n_samples"] = c.n_samples
                labels = None if self.train_labels is None else self.train_labels[idx]
                terms = self._forward(x, labels, self.rng, **options)
                if not math.isfinite(terms.loss):
                    raise NonFiniteLossError(self.epoch + 1, self._batch + 1, terms.loss,
                                             self.checkpoint_path if self._checkpoint_exists() else None)
                self.optimizer.step(model.backward())
                _accumulate(self._sums, terms, len(idx))
                self._batch += 1
                self.step += 1
                bar.update()
        finally:
            bar.clear()  # the epoch's summary line (or the error) takes the progress line's place
            self._seconds += time.perf_counter() - start
        if self._interrupted:  # Ctrl-C: checkpoint the last completed step, then stop
            path = self.save() if self.checkpoint_path else None
            raise TrainingInterrupted(self.epoch + 1, self._batch, path)

    def _end_epoch(self) -> None:
        n = len(self.train_images)
        for name, p in self.model.params.items():
            if not np.isfinite(p).all():  # a last step can leave NaN weights with a finite loss
                raise NonFiniteLossError(self.epoch + 1, self._batch, float("nan"),
                                         self.checkpoint_path if self._checkpoint_exists() else None)
        entry = {"epoch": self.epoch + 1, **{f"train_{k}": v / n for k, v in self._sums.items()},
                 "beta": self.beta_at(self.step - 1), "seconds": self._seconds,
                 "samples_per_s": n / self._seconds if self._seconds > 0 else float("inf")}
        if self.test_images is not None:
            entry.update({f"test_{k}": v for k, v in self.evaluate().items()})
        self.history.append(entry)
        self.epoch += 1
        self._perm, self._batch = None, 0
        test = f"test {entry['test_loss']:8.3f}  " if "test_loss" in entry else ""
        kl = entry.get("test_kl", entry.get("train_kl"))
        self.log(f"epoch {entry['epoch']:3d}/{self.config.epochs}  train {entry['train_loss']:8.3f}  {test}"
                 + (f"KL {kl:6.3f}  " if kl is not None else "")
                 + f"{entry['seconds']:6.1f} s  {entry['samples_per_s']:8.0f} samples/s")
        if self.checkpoint_path:
            self.save()

    def _checkpoint_exists(self) -> bool:
        return self.checkpoint_path is not None and self.checkpoint_path.is_file()

    # ------------------------------------------------------------------------------
    def save(self, path=None) -> Path:
        """Write the complete training state to ``path`` (default ``checkpoint_path``) atomically."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("path: expected a checkpoint path (none given and no checkpoint_path set), got None")
        meta = {
            "model_config": self.model.config,
            "train_config": asdict(self.config),
            "optimizer": type(self.optimizer).__name__,
            "epoch": self.epoch, "step": self.step, "batch": self._batch,
            "sums": self._sums, "seconds": self._seconds,
            "rng_state": self.rng.bit_generator.state,
            "history": self.history, "initial_test_loss": self.initial_test_loss,
        }
        arrays = {"perm": self._perm} if self._perm is not None else {}
        return save_checkpoint(path, params=self.model.params, optimizer_state=self.optimizer.state_dict(),
                               meta=meta, arrays=arrays)

    def load(self, checkpoint) -> None:
        """Restore the training state from a checkpoint (path or :class:`Checkpoint`).

        The model and optimizer must have the architecture and class the checkpoint was
        written with (ValueError naming the difference otherwise). Parameters, optimizer
        state, the Generator's state, the counters, the history and the current epoch's
        permutation are all restored, so :meth:`fit` continues exactly where it stopped.
        """
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        m = upgrade_meta(ckpt.meta)
        if m.get("model_config") != self.model.config:
            raise ValueError(f"checkpoint: expected a checkpoint of this model {self.model.config}, "
                             f"got one of {m.get('model_config')}")
        restore_params(self.model.params, ckpt.params)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        state = m["rng_state"]
        if state.get("bit_generator") != type(self.rng.bit_generator).__name__:
            raise ValueError(f"checkpoint: expected rng state of {type(self.rng.bit_generator).__name__}, "
                             f"got {state.get('bit_generator')}")
        self.rng.bit_generator.state = state
        self.epoch, self.step, self._batch = int(m["epoch"]), int(m["step"]), int(m["batch"])
        self._sums, self._seconds = dict(m["sums"]), float(m["seconds"])
        self.history = list(m["history"])
        self.initial_test_loss = m.get("initial_test_loss")
        self._perm = ckpt.arrays.get("perm")
        if self._perm is not None and self._perm.shape != (len(self.train_images),):
            raise ValueError(f"checkpoint: expected a permutation of {len(self.train_images)} training images, "
                             f"got {self._perm.shape[0]} (resume with the same training set)")
