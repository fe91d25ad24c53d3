#!/usr/bin/env python
"""Train a model of npvae.models on MNIST (or Fashion-MNIST), evaluate it, draw the figures, checkpoint.

    python demos/train_mnist.py                      # the VAE
    python demos/train_mnist.py --model ae           # vae | ae | cvae | dirichlet | ... (see --help)

With the defaults this trains the 784-400-20 ReLU VAE of the PyTorch examples (Bernoulli
decoder, dynamically binarized MNIST, Adam 1e-3, batch 128) for 10 epochs. ``--model``
picks any model registered in :data:`npvae.models.MODELS` (built with
:func:`npvae.models.build_model`; a conditional model is given the labels). The run
writes to ``--out`` (default ``results/``):

* ``metrics.json``: the objective named by the model (``objective``, e.g. "neg_elbo", and
  ``test_neg_elbo``; ``test_neg_log_likelihood`` for the autoencoder), every test metric
  (``test_reconstruction``, ``test_kl``, ...), the importance-sampled test log-likelihood
  with its k (log p(x|y) for a conditional model; none for the autoencoder, which has no
  p(x)), the number of active latent units, wall time, history;
* ``checkpoint.npz``: the last completed epoch (``--resume`` continues from it);
* figures, for every model: ``reconstructions.png``, ``curves.png``, ``latent.png``;
  for an unconditional model ``samples.png`` (means of p(x|z) at prior draws; for the
  autoencoder, which has no prior, its decoder at z ~ N(0, I)), ``interpolation.png`` and,
  with ``--latent-dim 2``, ``manifold.png``; for a conditional model (CVAE)
  ``class_samples.png`` (one row per class, prior draws) and ``same_z.png`` (the same z
  decoded under every label); for the Dirichlet VAE ``theta_by_class.png`` (the mean
  θ = softmax(z) of each class, a heat map); for the VampVAE ``pseudo_inputs.png`` (the
  learned u_k and their decodings). ``--compare DIR`` (another run's ``--out``)
  adds ``compare_samples.png`` (the same z ~ N(0, I) through both decoders, e.g. AE vs
  VAE) and ``compare_latent.png`` (both latent scatters).

Nothing is lost:

* ``--out`` is checked before the data is loaded or a step is taken: the folder is
  created (with its parents) and a probe file is written, flushed and removed. An
  existing file, a path under a file, a folder without write permission or a full disk
  gives one line on stderr naming ``--out``, what is wrong and the fix, exit code 2.
  A folder holding another run's ``checkpoint.npz`` is refused unless ``--resume``
  continues it or ``--overwrite`` replaces it (its checkpoint, metrics and figures are
  removed first). The run holds a lock on the folder (``fcntl.flock`` on ``.npvae.lock``)
  for its life: a second run on the same ``--out`` is refused, naming the first one's
  pid. Temporary files that killed runs left behind are removed; every file is written
  through an unpredictable temporary name (``tempfile.mkstemp``) and renamed.
* Everything the run needs at its end is checked at its start: at least 2 test images
  (the latent scatter), every size (``--latent-dim``, ``--hidden``, ``--flow-length``,
  ``--k``, ``--n-samples``, ``--batch-size``, ``--eval-k``) within what memory can hold,
  no flag the model or likelihood ignores (``--sigma-x`` with Bernoulli, ``--eval-k``
  for a model without p(x)). A figure that still fails after training is reported on
  one line (exit code 1) after ``metrics.json`` is written and the numbers printed.
* ``--resume`` continues from ``OUT/checkpoint.npz``; the model and the training settings
  come from the checkpoint. A flag given on the command line whose value differs from
  the checkpoint's (``--latent-dim``, ``--hidden``, ``--activation``, ``--likelihood``,
  ``--sigma-x``, ``--dtype``, ``--batch-size``, ``--lr``, ``--beta``, ``--warmup-epochs``,
  ``--n-samples``, ``--binarize``, ``--seed``) is *refused*, before the data is loaded:
  exit code 2 and one line listing each such flag with the checkpoint's value. The same
  value as the checkpoint's is accepted, so the command printed after Ctrl-C works as
  printed. ``--epochs`` sets the target (default on resume: the checkpoint's own target):
  raise it to train longer. At or below the epochs the checkpoint has completed, there
  is nothing to train: the demo says so on one line, then evaluates the checkpoint's
  model and writes ``metrics.json`` and the figures, exit code 0. (This also finishes a
  run stopped during its final evaluation, or one whose figures could not be written.)
* Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``, a scheduler) saves a checkpoint of
  the last completed step and the figures so far, prints the command that resumes, and
  exits with 128 + the signal number (130, 143). ``--resume`` refuses a ``--dataset``,
  ``--train-limit`` other than the checkpoint's too (and takes the checkpoint's when they
  are not given); the checkpoint itself is checked as data before it is used.
* A write that fails (a full disk, a lost permission) stops with one line naming the
  file and the cause, exit code 1. Checkpoints are written to a temporary file and
  renamed, so the previous checkpoint is intact and ``--resume`` continues from it.

Bad arguments or data give a one-line error on stderr and exit code 2; a non-finite loss
stops training with exit code 1 and keeps the last good checkpoint.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from npvae import data as npdata
from npvae import evaluate
from npvae.checkpoint import (FolderInUse, atomic_write, load_checkpoint, lock_folder, remove_stale_temporaries,
                              restore_params)
from npvae.dirichlet import ALPHA_MAX, ALPHA_MIN
from npvae.distributions import SIGMA_X_MAX, SIGMA_X_MIN
from npvae.models import LIKELIHOODS, MODELS, build_model, from_config
from npvae.optim import Adam
from npvae.train import (NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted, check_meta, check_model_config,
                         check_run_sizes, check_stored_optimizer, check_stored_params, upgrade_meta)

PROG = "train_mnist.py"
CLASS_NAMES = {"mnist": [str(d) for d in range(10)],
               "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot"]}
#: plain names of the objectives (``model.loss_name``) for the summary and the curves
OBJECTIVES = {"neg_elbo": "-ELBO", "neg_log_likelihood": "-log p(x|z) (reconstruction)",
              "neg_iwae_bound": "-IWAE bound"}
#: flags only some models take: dest -> constructor keyword (passed only to a model whose __init__ has it)
MODEL_OPTIONS = {"alpha": "alpha", "k": "k", "flow": "flow", "flow_length": "flow_length", "n_pseudo": "n_pseudo"}
#: flags of a model with two stochastic layers (one whose __init__ takes ``z_dims``): dest -> default
TWO_LAYER_OPTIONS = {"top_latent_dim": 10, "top_hidden": [100]}
#: every file a run writes in --out (what --overwrite removes; nothing else is touched)
FIGURES = ("reconstructions.png", "samples.png", "curves.png", "latent.png", "interpolation.png", "manifold.png",
           "class_samples.png", "same_z.png", "theta_by_class.png", "pseudo_inputs.png", "compare_samples.png",
           "compare_latent.png")
OUTPUTS = ("checkpoint.npz", "metrics.json", *FIGURES)
#: test images the figures need: the latent scatter plots at least 2 codes
MIN_TEST_IMAGES = 2
#: model config key -> the flag that sets it (for the size checks' messages)
SIZE_FLAGS = {"z_dim": "--latent-dim", "hidden": "--hidden", "flow_length": "--flow-length", "k": "--k"}


def _accepts(kind: str, keyword: str) -> bool:
    return keyword in inspect.signature(MODELS[kind].__init__).parameters


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _float_in(low: float, high: float):
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}], got {text}")
        return value
    return parse


def _folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder path, got {text!r} (use --out . for this folder)")
    return text


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="vae", choices=sorted(MODELS),
                   help="vae: the Gaussian VAE; ae: the deterministic autoencoder (no KL, no prior); cvae: the "
                        "conditional VAE (the label as input); dirichlet: the Dirichlet VAE (theta = softmax(z)); "
                        "iwae: the importance-weighted bound with --k samples; flow: a VAE whose q(z|x) is a "
                        "normalizing flow (--flow, --flow-length); conv: convolutional encoder and decoder; hvae: "
                        "two stochastic layers z1, z2 (--top-latent-dim, --top-hidden); vamp: the VampPrior with "
                        "--n-pseudo learned pseudo-inputs (choices: the models installed)")
    p.add_argument("--epochs", type=_positive_int, default=10, help="number of training epochs")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="examples per training step")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[400],
                   help="hidden layer widths of the encoder (the decoder mirrors them), e.g. --hidden 200 200")
    p.add_argument("--latent-dim", type=_positive_int, default=20, help="dimension of z")
    p.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "softplus", "elu"], help="hidden activation")
    p.add_argument("--likelihood", default="bernoulli", choices=list(LIKELIHOODS),
                   help="decoder p(x|z): Bernoulli logits; Gaussian mean with fixed std --sigma-x; or Gaussian "
                        "with a learned std (gaussian_learned, starting at --sigma-x); use the Gaussians with "
                        "--binarize none")
    p.add_argument("--sigma-x", type=_float_in(SIGMA_X_MIN, SIGMA_X_MAX), default=0.1,
                   help="decoder std for --likelihood gaussian (the initial std for gaussian_learned)")
    if any(_accepts(kind, "alpha") for kind in MODELS):
        p.add_argument("--alpha", type=_float_in(ALPHA_MIN, ALPHA_MAX), default=0.3,
                       help="Dirichlet(alpha) prior concentration of the Dirichlet VAE (< 1: sparse theta)")
    if any(_accepts(kind, "k") for kind in MODELS):
        p.add_argument("--k", type=_positive_int, default=None,
                       help="importance samples in the objective (default: 5 for iwae, 1 (the ELBO) for hvae)")
    if any(_accepts(kind, "flow") for kind in MODELS):
        p.add_argument("--flow", default="planar", choices=["planar", "iaf"], help="normalizing flow of q(z|x)")
        p.add_argument("--flow-length", type=_positive_int, default=4, help="number of flow steps")
    if any(_accepts(kind, "n_pseudo") for kind in MODELS):
        p.add_argument("--n-pseudo", type=_positive_int, default=500,
                       help="K, the pseudo-inputs of the VampPrior (vamp)")
    if any(_accepts(kind, "z_dims") for kind in MODELS):
        p.add_argument("--top-latent-dim", type=_positive_int, default=TWO_LAYER_OPTIONS["top_latent_dim"],
                       help="hvae: dimension of z2, the top stochastic layer (--latent-dim is z1's)")
        p.add_argument("--top-hidden", type=_positive_int, nargs="+", default=TWO_LAYER_OPTIONS["top_hidden"],
                       help="hvae: hidden widths of q(z2|z1) (p(z1|z2) mirrors them); --hidden is x <-> z1's")
    p.add_argument("--binarize", default="dynamic", choices=["dynamic", "static", "none"],
                   help="dynamic: fresh Bernoulli draw per batch; static: one fixed draw; none: grey levels")
    p.add_argument("--beta", type=_nonnegative_float, default=1.0, help="KL weight (1 = the ELBO; beta-VAE otherwise)")
    p.add_argument("--warmup-epochs", type=_nonnegative_float, default=0.0,
                   help="linear KL warm-up from 0 to --beta over this many epochs (0: off)")
    p.add_argument("--n-samples", type=_positive_int, default=1, help="samples of z per example in the ELBO")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (weights, batches, noise)")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"], help="which dataset")
    p.add_argument("--data-dir", default=None,
                   help="folder with the four IDX .gz files (default: $NPVAE_DATA_DIR, then ~/.cache/npvae/<dataset>; "
                        "downloaded there if missing)")
    p.add_argument("--out", type=_folder, default="results", help="results folder (metrics, figures, checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz; the model and training settings come from the checkpoint, "
                        "--epochs may be raised to train longer")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds another run's checkpoint, removing its checkpoint, "
                        "metrics.json and figures (without it such an --out is refused)")
    p.add_argument("--eval-k", type=_positive_int, default=1000,
                   help="importance samples per test image for the final log p(x) estimate "
                        "(5000 gives numbers comparable with papers, at 5x the time)")
    p.add_argument("--eval-images", type=_positive_int, default=None,
                   help="number of test images for the log p(x) estimate (default: the whole test set)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="floating-point precision")
    p.add_argument("--train-limit", type=_positive_int, default=None,
                   help="use only the first N training images (quick runs)")
    p.add_argument("--test-limit", type=_positive_int, default=None, help="use only the first N test images")
    p.add_argument("--compare", default=None, metavar="DIR",
                   help="results folder of another run (its checkpoint.npz), e.g. a VAE next to --model ae: draws "
                        "the same z ~ N(0, I) through both decoders and both latent scatters side by side")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines during long epochs (> 3 s) and the log p(x) estimate (the per-epoch lines stay)")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    return p


class UsageError(ValueError):
    """A bad combination of flags or an unusable ``--out``: one line, exit code 2."""


class WriteFailed(Exception):
    """Writing ``path`` failed (e.g. a full disk): one line naming the file and the cause, exit code 1."""

    def __init__(self, path: Path, exc: OSError, advice: str):
        self.path, self.exc = path, exc
        super().__init__(f"could not write {path}: {_cause(exc)}; {advice}")


def _cause(exc: OSError) -> str:
    """``"No space left on device (ENOSPC)"`` for an OSError with an errno, else its text."""
    if exc.errno in errno.errorcode:
        return f"{exc.strerror or os.strerror(exc.errno)} ({errno.errorcode[exc.errno]})"
    return str(exc) or type(exc).__name__


#: the lock held on --out for the run's life (released by :func:`release_out`)
_LOCK: list[int] = []


def check_out(out: str, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Make sure results can be written to the folder ``out``, and that no other run uses it, before any work is done.

    Creates the folder (and its parents), then writes, flushes and removes a probe file
    (made by ``tempfile.mkstemp``: never a planted symlink). Takes the folder's lock
    (:func:`npvae.checkpoint.lock_folder`, held until :func:`release_out`), refuses a
    folder holding another run's checkpoint unless ``resume`` or ``overwrite`` (which
    removes the previous run's :data:`OUTPUTS`), and removes the temporary files of dead
    runs. Returns the folder as a Path. Raises UsageError (one line naming ``--out``, what
    is wrong and the fix) for an existing file, a path under a file, no permission, a
    read-only or full disk, a folder in use, or any other OSError.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: expected a folder, got an existing file; "
                         f"choose another --out (e.g. --out {path.with_name(path.stem + '-out')}) or move the file away")
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {out}: expected a folder path, got one under the file {parent}; "
                                 f"choose an --out whose parents are folders")
            break
    probe = path / f".npvae-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path, prefix=probe.name + ".")
        probe = Path(name)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        _LOCK.append(lock_folder(path))
    except FolderInUse as exc:
        raise UsageError(f"--out {out}: expected a folder no other run is using, got one locked by the run with pid "
                         f"{exc.holder} (still running); wait for it to end, or choose another --out") from None
    except OSError as exc:
        fix = {errno.EACCES: "choose a folder you can write to (e.g. --out ~/npvae-results) or fix its permissions",
               errno.EPERM: "choose a folder you can write to (e.g. --out ~/npvae-results) or fix its permissions",
               errno.ENOSPC: "free some space on that disk or choose an --out on another disk",
               errno.EDQUOT: "free some space (disk quota exceeded) or choose an --out on another disk",
               errno.EROFS: "choose an --out on a writable disk"}.get(exc.errno, "choose another --out")
        raise UsageError(f"--out {out}: expected a folder that can be written, got an error writing "
                         f"{probe.name} in it: {_cause(exc)}; {fix}") from exc
    if not resume and (path / "checkpoint.npz").exists():
        if not overwrite:
            release_out()
            raise UsageError(f"--out {out}: expected a folder without another run's checkpoint, got "
                             f"{path / 'checkpoint.npz'}; continue that run with --resume, start this one in another "
                             f"--out, or pass --overwrite to replace it")
        gone = [name for name in OUTPUTS if (path / name).is_file() or (path / name).is_symlink()]
        for name in gone:
            (path / name).unlink()
        print(f"--overwrite: removed the previous run's {', '.join(gone)} from {path}", flush=True)
    remove_stale_temporaries(path)
    return path


def release_out() -> None:
    """Release the lock :func:`check_out` took (at the end of a run; the lock file stays)."""
    while _LOCK:
        os.close(_LOCK.pop())


#: flags the checkpoint fixes on --resume: dest -> (section of the checkpoint meta, key)
RESUME_FIXED = {
    "latent_dim": ("model_config", "z_dim"), "hidden": ("model_config", "hidden"),
    "activation": ("model_config", "activation"), "likelihood": ("model_config", "likelihood"),
    "sigma_x": ("model_config", "sigma_x"), "dtype": ("model_config", "dtype"),
    "batch_size": ("train_config", "batch_size"), "beta": ("train_config", "beta"),
    "warmup_epochs": ("train_config", "warmup_epochs"), "n_samples": ("train_config", "n_samples"),
    "binarize": ("train_config", "binarize"), "seed": ("train_config", "seed"),
    "lr": ("optimizer", "lr"), "model": ("model_config", "kind"),
    **{dest: ("model_config", key) for dest, key in MODEL_OPTIONS.items()},
    "dataset": ("info", "dataset"), "train_limit": ("info", "train_limit"),
}


def explicit_flags(argv: list[str]) -> dict:
    """The flags given on the command line ``argv`` (dest -> parsed value), defaults left out."""
    unset = object()  # a default no command line can produce
    parser = build_parser()
    parser.set_defaults(**{dest: unset for dest in vars(parser.parse_args([]))})
    return {dest: value for dest, value in vars(parser.parse_args(argv)).items() if value is not unset}


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def check_resume_flags(ckpt, explicit: dict) -> None:
    """Refuse every flag in ``explicit`` whose value differs from the checkpoint's.

    Raises UsageError with one line listing each (``--latent-dim 7 (checkpoint: 20)``).
    A flag the checkpoint's model has no value for (e.g. ``--sigma-x`` when it is not
    stored) is not compared.
    """
    meta = upgrade_meta(ckpt.meta)
    stored = {"model_config": meta.get("model_config", {}), "train_config": meta.get("train_config", {}),
              "optimizer": {"lr": float(ckpt.optimizer_state["lr"])} if "lr" in ckpt.optimizer_state else {},
              "info": meta.get("info", {}) if isinstance(meta.get("info"), dict) else {}}
    clashes = []
    for dest, (section, key) in RESUME_FIXED.items():
        if dest in explicit and key in stored[section]:
            given, saved = explicit[dest], stored[section][key]
            if list(given) != list(saved) if isinstance(given, list) else given != saved:
                clashes.append(f"--{dest.replace('_', '-')} {_show(given)} (checkpoint: {_show(saved)})")
    if clashes:
        raise UsageError("--resume: the checkpoint fixes these; drop them or start a new run: " + ", ".join(clashes))


def load_data(args):
    """(train images, train labels, test images, test labels), uint8 and int, limited as asked."""
    train_x, train_y = npdata.load_mnist("train", dataset=args.dataset, data_dir=args.data_dir)
    test_x, test_y = npdata.load_mnist("test", dataset=args.dataset, data_dir=args.data_dir)
    n, m = args.train_limit, args.test_limit
    return train_x[:n], train_y[:n].astype(np.int64), test_x[:m], test_y[:m].astype(np.int64)


def check_model_options(args, explicit: dict) -> None:
    """Refuse a flag that does not apply to the chosen model or likelihood (UsageError naming it).

    A model-specific flag for a model that does not take it; ``--sigma-x`` with the
    Bernoulli likelihood (it has no sigma); ``--beta``, ``--warmup-epochs``,
    ``--n-samples`` for a model whose objective has none (read from ``forward_options``);
    ``--test-limit`` below :data:`MIN_TEST_IMAGES`. ``--eval-k``/``--eval-images`` for a
    model with no likelihood to estimate (the AE) are reported as ignored, on one line.
    """
    for dest, keyword in [*MODEL_OPTIONS.items(), *((d, "z_dims") for d in TWO_LAYER_OPTIONS)]:
        if dest in explicit and not _accepts(args.model, keyword):
            takers = [kind for kind in MODELS if _accepts(kind, keyword)]
            raise UsageError(f"--{dest.replace('_', '-')}: the {args.model} model has no {keyword}; "
                             f"expected it only with --model {' or '.join(takers)}")
    if "sigma_x" in explicit and args.likelihood == "bernoulli":
        raise UsageError(f"--sigma-x {_show(args.sigma_x)}: the bernoulli likelihood has no sigma_x; expected it only "
                         f"with --likelihood gaussian or gaussian_learned")
    cls = MODELS[args.model]
    for dest in ("eval_k", "eval_images"):  # reported, not refused: the same flags serve several models
        if dest in explicit and not hasattr(cls, "log_weights"):
            print(f"--{dest.replace('_', '-')} {_show(explicit[dest])}: ignored, the {args.model} model has no "
                  f"likelihood p(x) to estimate", flush=True)
    config = TrainConfig(batch_size=args.batch_size, beta=args.beta, warmup_epochs=args.warmup_epochs,
                         n_samples=args.n_samples)
    try:
        Trainer._forward_options(cls, config)
    except ValueError as exc:
        raise UsageError(f"--{str(exc).split(':')[0].replace('_', '-')}{str(exc)[str(exc).index(':'):]}") from None
    check_test_images(args.test_limit, "--test-limit")


def use_stored_data_settings(args, meta: dict, explicit: dict, path: Path) -> None:
    """On resume, ``--dataset``, ``--train-limit``, ``--test-limit`` are the checkpoint's unless given
    (:func:`check_resume_flags` has refused differing ones); ValueError for stored values of the wrong kind."""
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
    for dest in ("dataset", "train_limit", "test_limit"):
        if dest not in info:
            continue  # a checkpoint from before these were stored
        value = info[dest]
        ok = value in CLASS_NAMES if dest == "dataset" else value is None or (type(value) is int and value >= 1)
        if not ok:
            want = "one of " + ", ".join(CLASS_NAMES) if dest == "dataset" else "null or an integer >= 1"
            raise ValueError(f"checkpoint {path}: meta 'info' {dest!r}: expected {want}, got {value!r}")
        if dest not in explicit:
            setattr(args, dest, value)


def check_test_images(n, name: str) -> None:
    """UsageError unless ``n`` (None: not limited) test images are enough for every figure."""
    if n is not None and n < MIN_TEST_IMAGES:
        raise UsageError(f"{name}: expected at least {MIN_TEST_IMAGES} test images (latent.png plots their codes, "
                         f"metrics.json their spread), got {n}")


def model_option(args, dest: str):
    """The value of a model flag: ``--k`` not given is 5 for the IWAE and 1 (the ELBO) for the others."""
    value = getattr(args, dest)
    return (5 if args.model == "iwae" else 1) if dest == "k" and value is None else value


def new_config(args, n_classes: int) -> dict:
    """The model config the flags describe (before a model is built): what the size checks read."""
    config = {"kind": args.model, "x_dim": 784, "z_dim": args.latent_dim, "hidden": list(args.hidden),
              "dtype": args.dtype}
    if _accepts(args.model, "n_classes"):
        config["n_classes"] = n_classes
    if _accepts(args.model, "z_dims"):  # two stochastic layers: z1 (--latent-dim) and z2 (--top-latent-dim)
        del config["z_dim"]
        config.update(z_dims=[args.latent_dim, args.top_latent_dim], hidden=[list(args.hidden), list(args.top_hidden)])
    config.update({kw: model_option(args, dest) for dest, kw in MODEL_OPTIONS.items()
                   if hasattr(args, dest) and _accepts(args.model, kw)})
    return config


def check_memory(args, config: dict, train: dict, *, from_checkpoint: bool) -> None:
    """Refuse any size that would not fit in memory, before anything is allocated (UsageError naming it and its bound).

    The cost is :func:`npvae.train.estimate_run_bytes` of the whole run; every size of the
    model config (every integer, any model kind) and of the run (``--batch-size``,
    ``--n-samples``, ``--eval-k``) is checked (:func:`npvae.train.check_run_sizes`).
    """
    run = {"batch_size": train["batch_size"], "n_samples": train["n_samples"], "eval_k": args.eval_k,
           "train_images": args.train_limit or 60000, "test_images": args.test_limit or 10000}

    def name(key, index):
        if key in run:
            return "--" + key.replace("_", "-")
        if from_checkpoint:
            return f"checkpoint model_config {key!r}"
        return SIZE_FLAGS.get(key, f"model size {key!r}")
    try:
        check_run_sizes(config, run, name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def read_checkpoint(path: Path, source: str):
    """A checkpoint of this demo and a model built from it, everything checked as data before an array is read.

    The meta (:func:`npvae.train.check_meta`), the model config against the stored
    parameter shapes (:func:`npvae.train.check_model_config`), then the model built from
    the config and its parameters against the ``.npy`` headers; only then are the arrays
    read (:func:`npvae.checkpoint.load_checkpoint`). Returns ``(checkpoint, model)``, the
    model's weights restored.
    """
    built = []

    def expect(meta, headers):
        where = f"checkpoint {path}"
        m = check_meta(meta, source=where)
        stored = {k[len("param/"):]: h for k, h in headers.items() if k.startswith("param/")}
        config = check_model_config(m["model_config"], {k: s for k, (s, _) in stored.items()}, source=where)
        try:
            model = from_config(config, rng=np.random.default_rng(0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: model_config: {exc}") from None
        check_stored_params(model.params, stored, source=f"{source} {path}")
        if source == "checkpoint":  # --resume restores the optimizer too (--compare reads only the weights)
            check_stored_optimizer(Adam(model.params), {k[len("optim/"):]: h for k, h in headers.items()
                                                        if k.startswith("optim/")}, source=f"{source} {path}")
        built.append(model)

    ckpt = load_checkpoint(path, expect=expect)
    restore_params(built[0].params, ckpt.params, source=f"{source} {path}")
    return ckpt, built[0]


def new_model(args, n_classes: int):
    """The model ``--model`` with the architecture flags, weights drawn from ``[seed, 0]``."""
    kwargs = dict(x_dim=784, z_dim=args.latent_dim, hidden=tuple(args.hidden), activation=args.activation,
                  likelihood=args.likelihood, rng=np.random.default_rng([args.seed, 0]),
                  dtype=np.dtype(args.dtype), sigma_x=args.sigma_x)
    if _accepts(args.model, "n_classes"):
        kwargs["n_classes"] = n_classes
    if _accepts(args.model, "z_dims"):  # two stochastic layers: z1 (--latent-dim) and z2 (--top-latent-dim)
        del kwargs["z_dim"]
        kwargs.update(z_dims=(args.latent_dim, args.top_latent_dim), hidden=(tuple(args.hidden), tuple(args.top_hidden)))
    kwargs.update({kw: model_option(args, dest) for dest, kw in MODEL_OPTIONS.items()
                   if hasattr(args, dest) and _accepts(args.model, kw)})
    return build_model(args.model, **kwargs)


def build(args, data, ckpt=None, epochs=None, model=None):
    """The model, optimizer and trainer, fresh or restored from the checkpoint ``ckpt`` (with target ``epochs``;
    ``model``: the one :func:`read_checkpoint` built from it)."""
    train_x, train_y, test_x, test_y = data
    ckpt_path = Path(args.out) / "checkpoint.npz"
    if ckpt is not None:
        meta = upgrade_meta(ckpt.meta)
        model = model if model is not None else from_config(meta["model_config"], rng=np.random.default_rng(0))
        config = TrainConfig(**{**meta["train_config"], "epochs": max(epochs, meta["epoch"], 1)})
        lr = float(ckpt.optimizer_state["lr"])
    else:
        model = new_model(args, len(CLASS_NAMES[args.dataset]))
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, beta=args.beta,
                             warmup_epochs=args.warmup_epochs, n_samples=args.n_samples, binarize=args.binarize,
                             seed=args.seed)
        lr = args.lr
    trainer = Trainer(model, Adam(model.params, lr=lr), train_x, test_x, config,
                      rng=np.random.default_rng([config.seed, 1]), checkpoint_path=ckpt_path,
                      log=lambda line: print(line, flush=True), train_labels=train_y, test_labels=test_y,
                      progress=not args.quiet)
    if ckpt is not None:
        trainer.load(ckpt)
        print(f"resumed from {ckpt_path}: epoch {trainer.epoch}, step {trainer.step}")
    trainer.info = {"dataset": args.dataset, "train_limit": args.train_limit, "test_limit": args.test_limit}
    return model, trainer


def _write(path: Path, write, advice=None):
    """``write(path)``, with an OSError turned into :class:`WriteFailed` naming ``path`` (``advice()`` appended)."""
    try:
        return write(path)
    except OSError as exc:
        raise WriteFailed(path, exc, advice() if advice else "check the disk and the folder's permissions") from exc


def _labels(model, y):
    """``(y,)`` for a conditional model (its data methods take labels after x), else ``()``."""
    return (y,) if model.conditional else ()


def _code_name(model) -> str:
    if not hasattr(model, "sample"):  # the autoencoder: a point code, no posterior
        return "z = encoder(x)"
    return "mean of q(z|x, y)" if model.conditional else "mean of q(z|x)"


def _theta(model, x, mu):
    """The Dirichlet VAE's simplex point of each example: the model's ``theta(x)`` (softmax of the mean of
    q(z|x)), else softmax(mu)."""
    if hasattr(model, "theta"):
        try:
            return np.asarray(model.theta(x), dtype=np.float64)
        except TypeError:
            pass
    z = mu.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))  # softmax(z) = exp(z - max z) / sum exp(z - max z)
    return e / e.sum(axis=1, keepdims=True)


def load_model(folder) -> object:
    """The model of another run, from ``folder``/checkpoint.npz (for ``--compare``), checked as data first."""
    return read_checkpoint(Path(folder) / "checkpoint.npz", "--compare")[1]


def draw_figures(model, trainer, out: Path, *, mu=None, labels=None, class_names=None, compare=None,
                 advice=None) -> list[Path]:
    """Write the figures that fit ``model``; with the test set's codes ``mu`` and labels, the final ones too.

    ``compare``: another model (``--compare``) drawn beside this one. Raises WriteFailed
    (naming the file, then ``advice()``: what is kept, what to do) if a file cannot be written.
    """
    from npvae import plots  # matplotlib is imported only when figures are drawn

    seed = trainer.config.seed
    n_show = min(10, len(trainer.test_images))
    x = npdata.batch_to_float(trainer.test_images[:n_show], binarize="none", dtype=model.dtype)
    y = trainer.test_labels[:n_show] if trainer.test_labels is not None else None
    generative = hasattr(model, "sample")
    codes = evaluate.posterior_means(model, x, y=y if model.conditional else None)
    figures = [("reconstructions.png", lambda p: plots.plot_reconstructions(
        x, model.decode(codes, *_labels(model, y)), p, n=len(x),
        title="Reconstructions: means of p(x|z) at z = " + _code_name(model)))]
    if not model.conditional:
        if generative:
            draw, what = model.sample(64, rng=np.random.default_rng([seed, 3])), "Samples: means of p(x|z), z ~ p(z)"
        else:  # the AE has no prior: decode N(0, I) draws anyway, to show it is not a generative model
            z = np.random.default_rng([seed, 3]).standard_normal((64, model.z_dim)).astype(model.dtype)
            draw, what = model.decode(z), "AE decoder at z ~ N(0, I) (means of p(x|z)): no prior, so not samples"
        figures.append(("samples.png", lambda p: plots.plot_samples(draw, p, title=what)))
    else:
        C = len(class_names)
        rng = np.random.default_rng([seed, 3])
        rows = np.stack([model.sample(10, np.full(10, c, dtype=np.int64), rng=rng) for c in range(C)])
        figures.append(("class_samples.png", lambda p: plots.plot_image_rows(
            rows, p, row_labels=[f"y = {name}" for name in class_names],
            title="Means of p(x|z, y), z ~ N(0, I): one row per class y", caption="10 prior draws per row")))
        z = np.random.default_rng([seed, 5]).standard_normal((8, model.z_dim)).astype(model.dtype)
        same = np.stack([model.decode(np.repeat(z[i:i + 1], C, axis=0), np.arange(C, dtype=np.int64))
                         for i in range(len(z))])
        figures.append(("same_z.png", lambda p: plots.plot_image_rows(
            same, p, row_labels=[f"z{i + 1}" for i in range(len(z))], col_labels=list(class_names),
            title="Means of p(x|z, y): each row one z ~ N(0, I) decoded under every label y",
            caption="style kept along a row, class changed along it")))
    if hasattr(model, "pseudo_inputs"):  # the VampPrior's components: u_k and the decoder at the mean of q(z|u_k)
        u = model.pseudo_inputs[:12]
        pseudo = np.stack([u, model.decode(model.encode(u)[0])])
        figures.append(("pseudo_inputs.png", lambda p: plots.plot_image_rows(
            pseudo, p, row_labels=["u_k", "recon"], col_labels=[f"k={k + 1}" for k in range(len(u))],
            title="VampPrior: the first 12 pseudo-inputs u_k and the means of p(x|z) at z = mean of q(z|u_k)",
            caption="p(z) = (1/K) sum_k q(z|u_k)")))
    if trainer.history:
        loss_name = getattr(model, "loss_name", "loss")
        series = [k[len("train_"):] for k in trainer.history[0] if k.startswith("train_")]
        names = ["loss"] + [m for m in series if m not in ("loss", "elbo")]
        figures.append(("curves.png", lambda p: plots.plot_curves(
            trainer.history, p, names=names, titles={"loss": OBJECTIVES.get(loss_name, loss_name),
                                                     "kl": "KL(q(z|x) || p(z))",
                                                     "reconstruction": "reconstruction -E_q[log p(x|z)]"},
            title=f"{model.kind}: training (solid) and test (dashed), nats per example")))
    if mu is not None:
        figures.append(("latent.png", lambda p: plots.plot_latent(
            mu, labels, p, class_names=class_names, legend_title="class", code_name=_code_name(model),
            title=f"{model.kind}: latent codes of the test set")))
        if not model.conditional:
            if model.z_dim == 2:
                figures.append(("manifold.png", lambda p: plots.plot_manifold(model, p)))
            pairs = np.arange(len(x) // 2)[:3]
            if len(pairs):
                figures.append(("interpolation.png",
                                lambda p: plots.plot_interpolation(model, x[2 * pairs], x[2 * pairs + 1], p)))
        if model.kind == "dirichlet":
            x_all = npdata.batch_to_float(trainer.test_images, binarize="none", dtype=model.dtype)
            theta = _theta(model, x_all, mu)
            present = [c for c in range(len(class_names)) if np.any(labels == c)]
            means = np.stack([theta[labels == c].mean(axis=0) for c in present])
            figures.append(("theta_by_class.png", lambda p: plots.plot_heatmap(
                means, p, row_labels=[class_names[c] for c in present],
                col_labels=[str(k + 1) for k in range(means.shape[1])],
                title="Dirichlet VAE: mean theta = softmax(z) per class (z = mean of q(z|x))",
                xlabel="component k of theta", ylabel="class", value_label="mean theta_k")))
        if compare is not None:
            z = np.random.default_rng([seed, 6]).standard_normal((64, max(model.z_dim, compare.z_dim)))
            mus = [(f"this run: {model.kind}", mu, _code_name(model))]
            panels = []
            for name, m in ((f"this run: {model.kind}", model), (f"--compare: {compare.kind}", compare)):
                panels.append((name, m.decode(z[:, :m.z_dim].astype(m.dtype))))
            x_all = npdata.batch_to_float(trainer.test_images, binarize="none", dtype=compare.dtype)
            mus.append((f"--compare: {compare.kind}", evaluate.posterior_means(compare, x_all), _code_name(compare)))
            figures.append(("compare_samples.png", lambda p: plots.plot_image_panels(
                panels, p, title="The same z ~ N(0, I) through each decoder (means of p(x|z))")))
            figures.append(("compare_latent.png", lambda p: plots.plot_latent_panels(
                mus, labels, p, class_names=class_names, title="Latent codes of the test set")))
    return [_write(out / name, draw, advice) for name, draw in figures]


def run(args, argv: list[str]) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    ckpt_path = out / "checkpoint.npz"
    resume_cmd = f"python {shlex.join([sys.argv[0], *[a for a in argv if a not in ('--resume', '--overwrite')], '--resume'])}"
    # everything that can be refused is refused here, before the data is loaded or a step is taken
    explicit = explicit_flags(argv)
    ckpt, model, epochs = None, None, args.epochs
    if args.resume and args.overwrite:
        raise UsageError("--overwrite: expected it only for a new run, got it with --resume (which continues the "
                         "checkpoint it would remove); drop one of them")
    if args.resume:
        if not ckpt_path.is_file():
            load_checkpoint(ckpt_path)  # FileNotFoundError naming the file, before --out is touched
    else:
        check_model_options(args, explicit)
    compare = load_model(args.compare) if args.compare else None
    if compare is not None and (compare.conditional or (not args.resume and MODELS[args.model].conditional)):
        name = "--compare" if compare.conditional else "--model"
        raise UsageError(f"{name}: expected an unconditional model next to --compare (no labels needed), "
                         f"got a conditional one; compare two of {', '.join(k for k in MODELS if not MODELS[k].conditional)}")
    check_out(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        ckpt, model = read_checkpoint(ckpt_path, "checkpoint")
        check_resume_flags(ckpt, explicit)
        meta = upgrade_meta(ckpt.meta)
        use_stored_data_settings(args, meta, explicit, ckpt_path)
        check_memory(args, meta["model_config"], meta["train_config"], from_checkpoint=True)
        if compare is not None and model.conditional:
            raise UsageError("--model: expected an unconditional model next to --compare (no labels needed), got a "
                             "conditional one in the checkpoint")
        done = meta["epoch"]
        epochs = explicit.get("epochs", meta["train_config"]["epochs"])
        if epochs <= done:
            print(f"--epochs {epochs}: nothing to train, the checkpoint {ckpt_path} has completed {done} epoch(s); "
                  f"evaluating it and writing the metrics and figures (pass --epochs {done + 1} or more to train "
                  f"longer)", flush=True)
    else:
        check_memory(args, new_config(args, len(CLASS_NAMES[args.dataset])),
                     {"batch_size": args.batch_size, "n_samples": args.n_samples}, from_checkpoint=False)
    data = load_data(args)
    train_x, _, test_x, test_y = data
    check_test_images(len(test_x), f"the test set in {npdata.resolve_data_dir(args.data_dir, args.dataset)}")
    model, trainer = build(args, data, ckpt, epochs, model)
    c = trainer.config
    class_names = CLASS_NAMES[args.dataset]
    print(f"{model}  |  {len(train_x)} train / {len(test_x)} test images ({args.dataset}, binarize={c.binarize})  |  "
          f"{sum(p.size for p in model.params.values()):,} parameters", flush=True)

    def kept() -> str:  # what survives a failed write, and how to continue
        if not ckpt_path.is_file():
            return "no checkpoint was written yet: free some space (or choose another --out) and start again"
        return (f"the checkpoint {ckpt_path} (epoch {load_checkpoint(ckpt_path).meta['epoch']}) is intact: "
                f"free some space, then continue with: {resume_cmd}")
    try:
        history = trainer.fit()
    except TrainingInterrupted as exc:
        try:
            draw_figures(model, trainer, out, class_names=class_names, advice=kept)
            where = f"figures so far are in {out}/"
        except (ValueError, TypeError, FloatingPointError, ArithmeticError) as failed:  # WriteFailed propagates
            where = f"the figures could not be drawn ({failed})"
        print(f"\n{exc}; {where}\nresume with:\n  {resume_cmd}", file=sys.stderr)
        return exc.exit_code
    except NonFiniteLossError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the only file fit writes is the checkpoint (atomically: the old one is intact)
        raise WriteFailed(ckpt_path, exc, kept()) from exc

    last = history[-1]
    loss_name = getattr(model, "loss_name", "loss")
    objective = OBJECTIVES.get(loss_name, loss_name)
    x_test = npdata.batch_to_float(trainer.test_images, binarize="none", dtype=model.dtype)
    y_test = test_y if model.conditional else None
    ll = None
    t_ll = time.perf_counter()
    n_ll = min(args.eval_images or len(x_test), len(x_test))
    if hasattr(model, "log_weights"):  # a probabilistic model: importance-sampled log p(x) (or log p(x|y))
        ll = evaluate.log_likelihood(model, x_test[:n_ll], args.eval_k, y=None if y_test is None else y_test[:n_ll],
                                     rng=np.random.default_rng([c.seed, 4]), batch_size=100,
                                     progress=not args.quiet)
    t_ll = time.perf_counter() - t_ll
    mu = evaluate.posterior_means(model, x_test, y=y_test)
    activity = mu.astype(np.float64).var(axis=0)  # Burda et al. 2016: A_u = Var_x E_q[z_u]
    per_layer = [int(n) for n in model.layer_active_units(x_test)] if hasattr(model, "layer_active_units") else None
    del x_test  # 31 MB, freed before matplotlib loads: keeps the run's peak memory low
    figure_error = None
    try:
        figures = draw_figures(model, trainer, out, mu=mu, labels=test_y, class_names=class_names, compare=compare,
                               advice=kept)
    except WriteFailed:
        raise
    except Exception as exc:  # after training: keep the checkpoint, write the metrics, report it on one line
        figures = [out / name for name in FIGURES if (out / name).is_file()]
        figure_error = exc
    test_metrics = {k: v for k, v in last.items() if k.startswith("test_") and k != "test_loss"}

    def named(entry: dict) -> dict:  # the history with the objective named: train_neg_elbo, test_neg_elbo
        return {k.replace("_loss", f"_{loss_name}") if k in ("train_loss", "test_loss") else k: v
                for k, v in entry.items()}
    log_of = "log p(x|y)" if model.conditional else "log p(x)"
    metrics = {
        "model_kind": model.kind, "objective": loss_name, "objective_description": objective,
        f"initial_test_{loss_name}": trainer.initial_test_loss, f"test_{loss_name}": last["test_loss"],
        **test_metrics,
        "test_log_likelihood": None if ll is None else float(ll.mean()), "log_likelihood_of": log_of,
        "log_likelihood_k": args.eval_k, "log_likelihood_images": n_ll if ll is not None else 0,
        "log_likelihood_stderr": float(ll.std(ddof=1) / np.sqrt(n_ll)) if ll is not None and n_ll > 1 else None,
        "log_likelihood_seconds": t_ll,
        "active_units": int(np.sum(activity > evaluate.ACTIVE_THRESHOLD)),
        "active_unit_threshold": evaluate.ACTIVE_THRESHOLD,
        "latent_activity": activity.tolist(),
        **({"active_units_per_layer": per_layer} if per_layer is not None else {}),
        "epochs": trainer.epoch, "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "wall_time_s": time.perf_counter() - start,
        "model": model.config, "train_config": asdict(c), "lr": trainer.optimizer.lr,
        "dataset": args.dataset, "history": [named(h) for h in history], "figures": [p.name for p in figures],
    }
    _write(out / "metrics.json",
           lambda p: atomic_write(p, lambda f: f.write(json.dumps(metrics, indent=2).encode())), kept)
    parts = ", ".join(f"{k[len('test_'):]} {v:.2f}" for k, v in test_metrics.items()
                      if k != "test_elbo" and isinstance(v, float) and v != last["test_loss"])
    print(f"\ntest {objective} {last['test_loss']:.2f} nats" + (f" ({parts})" if parts else ""))
    if ll is not None:
        print(f"test {log_of} ~ {float(ll.mean()):.2f} nats (IWAE, k={args.eval_k}, {n_ll} images, {t_ll:.0f} s)")
    else:
        print(f"no {log_of}: the {model.kind} model has no prior, so it defines no likelihood of x")
    if "active_units_per_layer" in metrics:  # two stochastic layers: Burda et al.'s count, per layer
        print("active units: " + ", ".join(f"z{i + 1} {n} of {d}" for i, (n, d) in
                                          enumerate(zip(metrics["active_units_per_layer"], model.z_dims)))
              + f" (Var_x E_q[z_u] > {evaluate.ACTIVE_THRESHOLD})")
    else:
        print(f"active units: {metrics['active_units']} of {model.z_dim} (Var_x E_q[z_u] > {evaluate.ACTIVE_THRESHOLD})")
    print(f"wall time {metrics['wall_time_s']:.0f} s; metrics, figures and checkpoint in {out}/")
    if figure_error is not None:
        print(f"{PROG}: error: could not draw the figures after training ({type(figure_error).__name__}: "
              f"{figure_error}); the checkpoint {ckpt_path} and {out / 'metrics.json'} are kept", file=sys.stderr)
        return 1
    return 0


class Terminated(BaseException):
    """SIGTERM outside training (loading data, evaluating): nothing to save, exit 143."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        return run(args, argv)
    except KeyboardInterrupt:  # outside training (loading data, evaluating): nothing to save
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"\n{PROG}: terminated (SIGTERM) outside training; the last checkpoint, if any, is kept", file=sys.stderr)
        return 128 + signal.SIGTERM
    except WriteFailed as exc:  # a full disk, a lost permission: the work so far is in the last checkpoint
        if args.traceback:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as exc:  # bad input or data: one line, like argparse
        if args.traceback:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        release_out()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
