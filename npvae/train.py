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
end of the last good epoch, is left as it was. SIGINT (Ctrl-C) and SIGTERM (``kill``,
``timeout``, a batch scheduler or a container stop) set a flag; the step under way
finishes, a checkpoint of it is written, and :class:`TrainingInterrupted` is raised
(its ``exit_code`` is 128 + the signal number: 130, 143). A second signal interrupts at once.

A checkpoint is resumed only after it is checked as data (:func:`check_meta`,
:meth:`Trainer.load`): every meta key present with its type, counters within the epoch,
the stored order a permutation of the training set, the training settings those of this
run, the parameters and optimizer entries (from the ``.npy`` headers) this model's. A
program that builds the model from a checkpoint's config checks it first with
:func:`check_model_config` (the demo does).
"""

from __future__ import annotations

import inspect
import math
import numbers
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

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "TrainingInterrupted", "upgrade_meta", "check_meta",
           "check_model_config", "check_stored_params", "check_stored_optimizer", "estimate_run_bytes",
           "check_run_sizes", "SIGNALS"]

#: the signals that stop training cleanly (checkpoint of the last completed step, then TrainingInterrupted)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; ``epoch`` and ``batch`` (1-based) say where."""

    def __init__(self, epoch: int, batch: int, loss: float, checkpoint: Path | None):
        self.epoch, self.batch, self.loss, self.checkpoint = epoch, batch, loss, checkpoint
        kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
        super().__init__(f"training stopped: the loss is {loss} at epoch {epoch}, batch {batch} "
                         f"(try a smaller --lr or gradient clipping){kept}")


class TrainingInterrupted(Exception):
    """Training was stopped by SIGINT or SIGTERM after a completed step; ``checkpoint`` holds that step.

    ``signum``: the signal; ``exit_code``: 128 + ``signum`` (130 for SIGINT, 143 for SIGTERM),
    the shell's code for a process ended by that signal.
    """

    def __init__(self, epoch: int, batch: int, checkpoint: Path | None, signum: int = signal.SIGINT):
        self.epoch, self.batch, self.checkpoint, self.signum = epoch, batch, checkpoint, int(signum)
        self.exit_code = 128 + self.signum
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else " (no checkpoint path was set)"
        how = "interrupted" if self.signum == signal.SIGINT else f"stopped by {signal.Signals(self.signum).name}"
        super().__init__(f"{how} after epoch {epoch}, batch {batch}{where}")


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


#: meta key -> (type, what it is) of every checkpoint the Trainer writes
_META = {"model_config": (dict, "a dict"), "train_config": (dict, "a dict"), "epoch": (int, "an integer >= 0"),
         "step": (int, "an integer >= 0"), "batch": (int, "an integer >= 0"), "sums": (dict, "a dict"),
         "seconds": (numbers.Real, "a number >= 0"), "rng_state": (dict, "a dict"), "history": (list, "a list")}
#: model config keys that count samples, not sizes of parameters (bounded by memory, not by the stored shapes)
SAMPLE_KEYS = ("k", "n_samples")


def check_meta(meta, source: str = "checkpoint") -> dict:
    """A Trainer checkpoint's meta, checked as data and upgraded (:func:`upgrade_meta`); ValueError otherwise.

    Every key of :data:`_META` present with its type; ``epoch``, ``step``, ``batch`` >= 0;
    ``seconds`` finite >= 0; ``sums`` numbers; ``history`` one dict per completed epoch;
    ``train_config`` the fields of :class:`TrainConfig` with valid values;
    ``initial_test_loss`` a number or None. The error names the key, what was expected
    and what was found.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: expected its metadata as a dict, got {type(meta).__name__}")
    m = upgrade_meta(meta)
    for key, (kind, what) in _META.items():
        if key not in m:
            raise ValueError(f"{source}: expected the meta key {key!r}, got a checkpoint without it "
                             f"(altered, or not written by npvae's Trainer)")
        value = m[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{source}: meta {key!r}: expected {what}, got {type(value).__name__} {str(value)[:60]}")
        if kind is not dict and kind is not list and not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{source}: meta {key!r}: expected {what}, got {value}")
    for name, v in m["sums"].items():
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{source}: meta 'sums' {name!r}: expected a finite number, got {v!r}")
    if len(m["history"]) != m["epoch"] or not all(isinstance(h, dict) for h in m["history"]):
        raise ValueError(f"{source}: meta 'history': expected {m['epoch']} dicts (one per completed epoch, "
                         f"'epoch' = {m['epoch']}), got {len(m['history'])} entries")
    loss = m.get("initial_test_loss")
    if loss is not None and (not isinstance(loss, numbers.Real) or isinstance(loss, bool)):
        raise ValueError(f"{source}: meta 'initial_test_loss': expected a number or null, got {loss!r}")
    fields = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(m["train_config"]) - fields)
    if unknown:
        raise ValueError(f"{source}: meta 'train_config': expected only the fields of TrainConfig "
                         f"({', '.join(sorted(fields))}), got {unknown[0]!r}")
    try:
        TrainConfig(**m["train_config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: meta 'train_config': {exc}") from None
    return m


def _ints(value):
    """Every int (not bool) in ``value`` and the lists inside it."""
    if isinstance(value, bool):
        return []
    if isinstance(value, numbers.Integral):
        return [int(value)]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _ints(v)]
    return []


def _json_type_ok(value, default) -> tuple[bool, str]:
    """Whether a config ``value`` has the type of its constructor ``default``, and what that type is."""
    if default is inspect.Parameter.empty:  # a required size (x_dim, z_dim, n_classes, ...)
        return isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    if isinstance(default, bool):
        return isinstance(value, bool), "true or false"
    if isinstance(default, numbers.Integral):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    if isinstance(default, numbers.Real):
        reals = value if isinstance(value, list) else [value]
        return (bool(reals) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                                    for v in reals)), "a finite number (or a list of them)"
    if isinstance(default, str):
        return isinstance(value, str), "a string"
    def integers(v):
        return isinstance(v, list) and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in v)

    if isinstance(default, (tuple, list)) and default and isinstance(default[0], (tuple, list)):  # one per layer
        return isinstance(value, list) and all(integers(v) for v in value), "a list of lists of integers"
    if isinstance(default, (tuple, list)):
        return integers(value), "a list of integers"
    if isinstance(default, type) or isinstance(default, np.dtype):  # dtype=np.float32
        return value in ("float32", "float64"), "'float32' or 'float64'"
    return isinstance(value, (type(None), bool, numbers.Real, str, list)), "a JSON value"


def check_model_config(config, shapes: dict | None = None, source: str = "checkpoint") -> dict:
    """A model config from a checkpoint, checked before a model is built from it; returns it.

    ``kind`` a registered model (format 1: none, a VAE); every other key an argument of
    that model's constructor, with the type of its default (read from the signature, so
    any registered model is covered: ``per_pixel_sigma`` must be true or false, not
    ``'no'``); every required argument present. With ``shapes`` (parameter name ->
    stored shape, from the ``.npy`` headers), every integer in the config (sizes such as
    ``z_dim``, ``hidden``, ``flow_length``), except the sample counts of
    :data:`SAMPLE_KEYS`, must be at most the largest stored dimension or the number of
    stored parameters: a model of that config is no larger than the file's own arrays,
    so building it cannot exhaust memory. ValueError naming the key otherwise.
    """
    from .models import MODELS  # here: npvae.models does not import the trainer

    if not isinstance(config, dict):
        raise ValueError(f"{source}: meta 'model_config': expected a dict, got {type(config).__name__}")
    kind = config.get("kind", "vae")
    if not isinstance(kind, str) or kind not in MODELS:
        raise ValueError(f"{source}: model_config 'kind': expected one of {', '.join(sorted(MODELS))}, got {kind!r}")
    cls = MODELS[kind]
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
              if n not in ("self", "rng") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for key, value in config.items():
        if key == "kind":
            continue
        if key not in params:
            raise ValueError(f"{source}: model_config: expected only arguments of {cls.__name__} "
                             f"({', '.join(params)}), got {key!r}")
        ok, what = _json_type_ok(value, params[key].default)
        if not ok:
            raise ValueError(f"{source}: model_config {key!r}: expected {what}, got {type(value).__name__} "
                             f"{str(value)[:60]}")
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in config:
            raise ValueError(f"{source}: model_config: expected the key {name!r} ({cls.__name__} needs it), got none")
    if shapes is not None:
        limit = max([len(shapes), *(d for shape in shapes.values() for d in shape)])
        for key, value in config.items():
            for i in _ints(value):
                if i < 0 or (key not in SAMPLE_KEYS and i > limit):
                    raise ValueError(f"{source}: model_config {key!r}: expected sizes from 0 to {limit} (the "
                                     f"largest size of the {len(shapes)} stored parameters), got {i}; the "
                                     f"config does not match the stored arrays")
    return config


def check_stored_optimizer(optimizer: Optimizer, stored: dict, source: str = "checkpoint") -> None:
    """Refuse stored optimizer entries (key -> (shape, dtype)) other than ``optimizer``'s state keys, before reading them."""
    wanted = optimizer.state_dict()
    missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
    if missing or extra:
        raise ValueError(f"{source}: expected the {type(optimizer).__name__} state of this model "
                         f"({len(wanted)} entries), got " + ", ".join(
                             [f"{len(missing)} missing ({', '.join(map(repr, missing[:3]))})"] * bool(missing)
                             + [f"{len(extra)} unexpected ({', '.join(map(repr, extra[:3]))})"] * bool(extra)))


def check_stored_params(params: dict, stored: dict, source: str = "checkpoint") -> None:
    """Refuse stored parameters (name -> (shape, dtype), from the ``.npy`` headers) unlike ``params``, before reading them."""
    wanted = {k: (p.shape, p.dtype) for k, p in params.items()}
    for name in sorted(set(wanted) | set(stored)):
        if stored.get(name) != wanted.get(name):
            got = "none" if name not in stored else f"shape {stored[name][0]}, dtype {stored[name][1]}"
            want = "no such parameter" if name not in wanted else f"shape {wanted[name][0]}, dtype {wanted[name][1]}"
            raise ValueError(f"{source}: parameter {name!r}: expected {want} (this model's), got {got} "
                             f"(the checkpoint was written for a different architecture)")


def estimate_run_bytes(config: dict, *, batch_size: int, n_samples: int = 1, eval_k: int = 0,
                       eval_images_batch: int = 100, train_images: int = 60000, test_images: int = 10000,
                       eval_batch_size: int = 1000) -> int:
    """About the peak bytes of training and evaluating a model of ``config``: what the size checks bound.

    Read from the config's sizes (any model kind; missing keys count as absent): an
    encoder ``x_dim`` (+ ``n_classes``) -> ``hidden`` -> 2 ``z_dim`` (+ ``context_dim``), its
    mirror decoder, ``flow_length`` flow steps (an IAF MADE's size, the larger kind),
    ``channels`` feature maps of up to ``x_dim`` pixels, two stochastic layers (``z_dims``,
    nested ``hidden``) and ``n_pseudo`` pseudo-inputs through the encoder. Parameters count 8 times
    (parameters, gradients, Adam's two moments, their checkpoint copies, a loaded
    checkpoint) plus 1 KiB of bookkeeping per array; a training step holds ``batch_size *
    n_samples * k`` rows of decoder activations (4 arrays each), the test evaluation
    ``eval_batch_size * k`` rows, log p(x) an (``eval_k``, 100) float64 array 3 times; the
    data are the uint8 training images (twice: a static binarization) and the float test
    set. Every term grows with every size, so :func:`npvae._checks.check_size` can bisect it.
    """
    item = 8 if config.get("dtype") == "float64" else 4

    def size(key, default=0):
        v = config.get(key, default)
        return int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else default

    x, z, c, ctx = size("x_dim", 784), size("z_dim", 1), size("n_classes"), size("context_dim")
    flows, k, pseudo = size("flow_length"), max(size("k", 1), 1), size("n_pseudo")
    z_dims = [int(v) for v in config.get("z_dims") or [] if isinstance(v, numbers.Integral)]
    z = sum(z_dims) if z_dims else z  # two stochastic layers: count both
    widths = [w for h in config.get("hidden") or [] for w in (h if isinstance(h, (list, tuple)) else [h])]
    hidden = [int(h) for h in widths if isinstance(h, numbers.Integral)]
    channels = [int(h) for h in config.get("channels") or [] if isinstance(h, numbers.Integral)]
    fh = max([*(int(h) for h in config.get("flow_hidden") or []), 2 * z, 8]) if flows else 0
    enc, dec = [x + c, *hidden, 2 * z + ctx], [z + c, *hidden[::-1], x]
    dense = sum(a * b + b for chain in (enc, dec) for a, b in zip(chain, chain[1:]))
    conv = sum(a * b * 9 + b for a, b in zip([1, *channels], channels)) * 2
    step = (z + ctx) * fh + fh * 2 * z + fh + 4 * z + 1
    params = dense + conv + flows * step
    arrays = 2 * (len(enc) + len(dec) + 2 * len(channels)) + 6 * flows
    per_sample = sum(dec) + x * sum(channels) + flows * (z + fh)  # what each of the k * n_samples draws holds
    per_example = sum(enc) + x * sum(channels)                       # what the encoder holds once per example
    rows = batch_size * n_samples * k
    train = 4 * item * ((batch_size + pseudo) * per_example + rows * per_sample)  # + the VampPrior's pseudo-inputs
    test = 3 * item * eval_batch_size * (per_example + k * per_sample)
    ll = 3 * 8 * eval_k * eval_images_batch
    data = 2 * train_images * x + test_images * x * item
    return 8 * item * params + 8 * 1024 * arrays + max(train, test, ll) + data


def check_run_sizes(config: dict, run: dict, name: Callable[[str, int | None], str]) -> None:
    """Check every size of a run against memory before anything is allocated; ValueError naming the first too large.

    ``config``: a model config (every positive integer in it, in lists too, is a size);
    ``run``: the keywords of :func:`estimate_run_bytes` (``batch_size``, ``n_samples``,
    ``eval_k``, ...). Sizes are checked in order, each with the ones before it as given and
    the ones after it at 1, so the error names the size that breaks the budget and the
    largest value it may take (:func:`npvae._checks.check_size`); ``name(key, index)``
    gives the name the error uses (the demo's flag, e.g. ``--latent-dim``).
    """
    from ._checks import check_size

    slots = [(key, i if isinstance(v, list) else None, x)
             for key, v in config.items() for i, x in enumerate(v if isinstance(v, list) else [v])
             if isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 1]
    state_c = {k: (list(v) if isinstance(v, list) else v) for k, v in config.items()}
    for key, index, _ in slots:
        if index is None:
            state_c[key] = 1
        else:
            state_c[key][index] = 1
    sizes = [k for k in ("batch_size", "n_samples", "eval_k") if k in run]
    state_r = {**run, **{k: 1 for k in sizes}}

    def set_config(key, index, value):
        c = {**state_c, key: list(state_c[key]) if index is not None else value}
        if index is not None:
            c[key][index] = value
        return c

    for key, index, value in slots:
        check_size(value, name(key, index), lambda v: estimate_run_bytes(set_config(key, index, v), **state_r),
                   what=" with the sizes before it as given")
        state_c = set_config(key, index, value)
    for key in sizes:
        check_size(run[key], name(key, None), lambda v: estimate_run_bytes(state_c, **{**state_r, key: v}),
                   what=" with the sizes before it as given")
        state_r[key] = run[key]


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
        others = [k for k, v in model.params.items() if optimizer.params.get(k) is not v]
        if others or len(optimizer.params) != len(model.params):
            raise ValueError(f"optimizer: expected an optimizer built on this model's parameters "
                             f"(e.g. Adam(model.params)), got one whose arrays differ "
                             f"({(others or sorted(set(optimizer.params) - set(model.params)))[0]!r}): its steps "
                             f"would never change the model")
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
        self._signal = signal.SIGINT  # the signal that set _interrupted
        self.initial_test_loss: float | None = None  # test loss before the first step
        #: what else a checkpoint records about the run (JSON-able; the demo puts the dataset here);
        #: restored by :meth:`load`
        self.info: dict = {}

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
        previous = self._install_handlers()
        try:
            while self.epoch < self.config.epochs:
                self._train_epoch()
                self._end_epoch()
                if self._interrupted:  # a signal during the evaluation: the epoch's checkpoint is written
                    raise TrainingInterrupted(self.epoch, self.steps_per_epoch, self.checkpoint_path, self._signal)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.history

    def _install_handlers(self) -> dict:
        """Catch SIGINT and SIGTERM (main thread only); returns the handlers they replace."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self._interrupted:  # a second signal: stop now
                raise KeyboardInterrupt
            self._interrupted, self._signal = True, signum

        return {signum: signal.signal(signum, handler) for signum in SIGNALS}

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
        if self._interrupted:  # Ctrl-C or SIGTERM: checkpoint the last completed step, then stop
            path = self.save() if self.checkpoint_path else None
            raise TrainingInterrupted(self.epoch + 1, self._batch, path, self._signal)

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
        if not all(np.isfinite(p).all() for p in self.model.params.values()):  # never store NaN weights
            last = self.checkpoint_path if self._checkpoint_exists() else None
            raise NonFiniteLossError(self.epoch + 1, self._batch, float("nan"), last)
        meta = {
            "model_config": self.model.config,
            "train_config": asdict(self.config),
            "optimizer": type(self.optimizer).__name__,
            "epoch": self.epoch, "step": self.step, "batch": self._batch,
            "sums": self._sums, "seconds": self._seconds,
            "rng_state": self.rng.bit_generator.state,
            "history": self.history, "initial_test_loss": self.initial_test_loss,
            "train_images": len(self.train_images), "info": self.info,
        }
        arrays = {"perm": self._perm} if self._perm is not None else {}
        return save_checkpoint(path, params=self.model.params, optimizer_state=self.optimizer.state_dict(),
                               meta=meta, arrays=arrays)

    def load(self, checkpoint) -> None:
        """Restore the training state from a checkpoint (path or :class:`Checkpoint`).

        The model and optimizer must have the architecture and class the checkpoint was
        written with, and the Trainer the checkpoint's training settings (all of
        :class:`TrainConfig` but ``epochs`` and ``eval_batch_size``) and number of training
        images. The meta is checked as data (:func:`check_meta`), the batch counter must
        lie within the epoch (``step = epoch * steps_per_epoch + batch``) and a stored order
        must be a permutation of the training images; a path is read with the model's
        parameter names, shapes and dtypes checked from the ``.npy`` headers before any
        array is read. ValueError naming the difference otherwise, and nothing is changed.
        Parameters, optimizer state, the Generator's state, the counters, the history and
        the current epoch's permutation are all restored, so :meth:`fit` continues exactly
        where it stopped.
        """
        if isinstance(checkpoint, Checkpoint):
            ckpt = checkpoint
        else:
            ckpt = load_checkpoint(checkpoint, expect=self._expect)
        m = check_meta(ckpt.meta)
        if m.get("model_config") != self.model.config:
            raise ValueError(f"checkpoint: expected a checkpoint of this model {self.model.config}, "
                             f"got one of {m.get('model_config')}")
        ours, theirs = asdict(self.config), m["train_config"]
        clashes = [f"{k} {ours[k]!r} (checkpoint: {theirs[k]!r})" for k in ours
                   if k not in ("epochs", "eval_batch_size") and k in theirs and theirs[k] != ours[k]]
        if clashes:
            raise ValueError(f"checkpoint: expected the training settings it was written with, got "
                             f"{', '.join(clashes)}; resume with the checkpoint's settings")
        n, spe = len(self.train_images), self.steps_per_epoch
        if m.get("train_images", n) != n:
            raise ValueError(f"checkpoint: expected {m['train_images']} training images (the checkpoint's), got {n} "
                             f"(resume with the same training set and limit)")
        epoch, step, batch = m["epoch"], m["step"], m["batch"]
        if batch > spe or step != epoch * spe + batch:
            raise ValueError(f"checkpoint: expected a batch counter within the epoch (0..{spe}) and step = "
                             f"epoch * {spe} + batch, got epoch {epoch}, step {step}, batch {batch}; the file "
                             f"was altered or is from another training set")
        perm = ckpt.arrays.get("perm")
        if perm is None and batch > 0:
            raise ValueError(f"checkpoint: expected the epoch's order (array 'perm') with batch {batch} > 0, got none")
        if perm is not None:
            if perm.shape != (n,):
                raise ValueError(f"checkpoint: expected a permutation of {n} training images, "
                                 f"got {perm.shape[0] if perm.ndim == 1 else perm.shape} (resume with the same "
                                 f"training set)")
            if perm.dtype.kind not in "iu" or not np.array_equal(np.sort(perm), np.arange(n)):
                raise ValueError(f"checkpoint: expected the epoch's order to be a permutation of 0..{n - 1}, got "
                                 f"{perm.dtype} values with repeats or out of range; the file was altered")
        state = m["rng_state"]
        if state.get("bit_generator") != type(self.rng.bit_generator).__name__:
            raise ValueError(f"checkpoint: expected rng state of {type(self.rng.bit_generator).__name__}, "
                             f"got {state.get('bit_generator')}")
        info = m.get("info", {})
        if not isinstance(info, dict):
            raise ValueError(f"checkpoint: meta 'info': expected a dict, got {type(info).__name__}")
        try:  # a state the Generator cannot take is refused before anything changes
            type(self.rng.bit_generator)().state = state
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ValueError(f"checkpoint: meta 'rng_state': expected the state of a "
                             f"{type(self.rng.bit_generator).__name__} generator, got one it refuses ({exc})") from None
        restore_params(self.model.params, ckpt.params)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.rng.bit_generator.state = state
        self.epoch, self.step, self._batch = epoch, step, batch
        self._sums, self._seconds = dict(m["sums"]), float(m["seconds"])
        self.history = list(m["history"])
        self.initial_test_loss = m.get("initial_test_loss")
        self.info = dict(info)
        self._perm = perm

    def _expect(self, meta: dict, headers: dict) -> None:
        """For :func:`load_checkpoint`: refuse a file whose parameters are not this model's, before reading them."""
        stored = {k[len("param/"):]: h for k, h in headers.items() if k.startswith("param/")}
        config = check_meta(meta)["model_config"]  # compared with this model's: no registry, no model built
        if config != self.model.config:
            raise ValueError(f"checkpoint: expected a checkpoint of this model {self.model.config}, got one of {config}")
        check_stored_params(self.model.params, stored)
        check_stored_optimizer(self.optimizer, {k[len("optim/"):]: h for k, h in headers.items() if k.startswith("optim/")})
