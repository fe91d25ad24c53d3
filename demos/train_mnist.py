#!/usr/bin/env python
"""Train a VAE on MNIST (or Fashion-MNIST), evaluate it, draw the figures, checkpoint.

    NPVAE_DATA_DIR=../shared/data/mnist python demos/train_mnist.py

With the defaults this trains the 784-400-20 ReLU VAE of the PyTorch examples (Bernoulli
decoder, dynamically binarized MNIST, Adam 1e-3, batch 128) for 10 epochs, then writes
to ``--out`` (default ``results/``):

* ``metrics.json``: final test -ELBO, reconstruction and KL, the importance-sampled test
  log-likelihood with its k, the number of active latent units, wall time, history;
* ``checkpoint.npz``: the last completed epoch (``--resume`` continues from it);
* figures: ``reconstructions.png``, ``samples.png``, ``curves.png``, ``latent.png``,
  ``interpolation.png`` and, with ``--latent-dim 2``, ``manifold.png``.

Nothing is lost:

* ``--out`` is checked before the data is loaded or a step is taken: the folder is
  created (with its parents) and a probe file is written, flushed and removed. An
  existing file, a path under a file, a folder without write permission or a full disk
  gives one line on stderr naming ``--out``, what is wrong and the fix, exit code 2.
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
* Ctrl-C saves a checkpoint of the last completed step and the figures so far, prints
  the command that resumes, and exits with 130.
* A write that fails (a full disk, a lost permission) stops with one line naming the
  file and the cause, exit code 1. Checkpoints are written to a temporary file and
  renamed, so the previous checkpoint is intact and ``--resume`` continues from it.

Bad arguments or data give a one-line error on stderr and exit code 2; a non-finite loss
stops training with exit code 1 and keeps the last good checkpoint.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from npvae import data as npdata
from npvae.checkpoint import atomic_write, load_checkpoint
from npvae.optim import Adam
from npvae.train import NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted, upgrade_meta
from npvae.vae import VAE

PROG = "train_mnist.py"


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


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=_positive_int, default=10, help="number of training epochs")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="examples per training step")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[400],
                   help="hidden layer widths of the encoder (the decoder mirrors them), e.g. --hidden 200 200")
    p.add_argument("--latent-dim", type=_positive_int, default=20, help="dimension of z")
    p.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "softplus", "elu"], help="hidden activation")
    p.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"],
                   help="decoder p(x|z): Bernoulli logits, or Gaussian mean with fixed --sigma-x")
    p.add_argument("--sigma-x", type=_positive_float, default=0.1, help="decoder std for --likelihood gaussian")
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
    p.add_argument("--out", default="results", help="results folder (metrics, figures, checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz; the model and training settings come from the checkpoint, "
                        "--epochs may be raised to train longer")
    p.add_argument("--eval-k", type=_positive_int, default=1000,
                   help="importance samples per test image for the final log p(x) estimate "
                        "(5000 gives numbers comparable with papers, at 5x the time)")
    p.add_argument("--eval-images", type=_positive_int, default=None,
                   help="number of test images for the log p(x) estimate (default: the whole test set)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="floating-point precision")
    p.add_argument("--train-limit", type=_positive_int, default=None,
                   help="use only the first N training images (quick runs)")
    p.add_argument("--test-limit", type=_positive_int, default=None, help="use only the first N test images")
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


def check_out(out: str) -> Path:
    """Make sure results can be written to the folder ``out``, before any work is done.

    Creates the folder (and its parents), then writes, flushes and removes a probe file.
    Returns the folder as a Path. Raises UsageError (one line naming ``--out``, what is
    wrong and the fix) for an existing file, a path under a file, no permission, a
    read-only or full disk, or any other OSError.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: expected a folder, got an existing file; "
                         f"choose another --out (e.g. --out {path.with_suffix('')}-results) or move the file away")
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {out}: expected a folder path, got one under the file {parent}; "
                                 f"choose an --out whose parents are folders")
            break
    probe = path / f".npvae-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        fix = {errno.EACCES: "choose a folder you can write to (e.g. --out ~/npvae-results) or fix its permissions",
               errno.EPERM: "choose a folder you can write to (e.g. --out ~/npvae-results) or fix its permissions",
               errno.ENOSPC: "free some space on that disk or choose an --out on another disk",
               errno.EDQUOT: "free some space (disk quota exceeded) or choose an --out on another disk",
               errno.EROFS: "choose an --out on a writable disk"}.get(exc.errno, "choose another --out")
        raise UsageError(f"--out {out}: expected a folder that can be written, got an error writing "
                         f"{probe.name} in it: {_cause(exc)}; {fix}") from exc
    return path


#: flags the checkpoint fixes on --resume: dest -> (section of the checkpoint meta, key)
RESUME_FIXED = {
    "latent_dim": ("model_config", "z_dim"), "hidden": ("model_config", "hidden"),
    "activation": ("model_config", "activation"), "likelihood": ("model_config", "likelihood"),
    "sigma_x": ("model_config", "sigma_x"), "dtype": ("model_config", "dtype"),
    "batch_size": ("train_config", "batch_size"), "beta": ("train_config", "beta"),
    "warmup_epochs": ("train_config", "warmup_epochs"), "n_samples": ("train_config", "n_samples"),
    "binarize": ("train_config", "binarize"), "seed": ("train_config", "seed"),
    "lr": ("optimizer", "lr"),
}


def explicit_flags(argv: list[str]) -> dict:
    """The flags given on the command line ``argv`` (dest -> parsed value), defaults left out."""
    unset = object()  # a default no command line can produce
    parser = build_parser()
    parser.set_defaults(**{dest: unset for dest in vars(parser.parse_args([]))})
    return {dest: value for dest, value in vars(parser.parse_args(argv)).items() if value is not unset}


def _show(value) -> str:
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
              "optimizer": {"lr": float(ckpt.optimizer_state["lr"])} if "lr" in ckpt.optimizer_state else {}}
    clashes = []
    for dest, (section, key) in RESUME_FIXED.items():
        if dest in explicit and key in stored[section]:
            given, saved = explicit[dest], stored[section][key]
            if list(given) != list(saved) if isinstance(given, list) else given != saved:
                clashes.append(f"--{dest.replace('_', '-')} {_show(given)} (checkpoint: {_show(saved)})")
    if clashes:
        raise UsageError("--resume: the checkpoint fixes these; drop them or start a new run: " + ", ".join(clashes))


def load_data(args):
    train_x, _ = npdata.load_mnist("train", dataset=args.dataset, data_dir=args.data_dir)
    test_x, test_y = npdata.load_mnist("test", dataset=args.dataset, data_dir=args.data_dir)
    return train_x[:args.train_limit], test_x[:args.test_limit], test_y[:args.test_limit]


def build(args, train_x, test_x, ckpt=None, epochs=None):
    """The model, optimizer and trainer, fresh or restored from the checkpoint ``ckpt`` (with target ``epochs``)."""
    ckpt_path = Path(args.out) / "checkpoint.npz"
    if ckpt is not None:
        meta = upgrade_meta(ckpt.meta)
        model = VAE.from_config(meta["model_config"], rng=np.random.default_rng(0))
        config = TrainConfig(**{**meta["train_config"], "epochs": max(epochs, meta["epoch"], 1)})
        lr = float(ckpt.optimizer_state["lr"])
    else:
        model = VAE(784, args.latent_dim, tuple(args.hidden), args.activation, args.likelihood,
                    rng=np.random.default_rng([args.seed, 0]), dtype=np.dtype(args.dtype), sigma_x=args.sigma_x)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, beta=args.beta,
                             warmup_epochs=args.warmup_epochs, n_samples=args.n_samples, binarize=args.binarize,
                             seed=args.seed)
        lr = args.lr
    trainer = Trainer(model, Adam(model.params, lr=lr), train_x, test_x, config,
                      rng=np.random.default_rng([config.seed, 1]), checkpoint_path=ckpt_path,
                      log=lambda line: print(line, flush=True))
    if ckpt is not None:
        trainer.load(ckpt)
        print(f"resumed from {ckpt_path}: epoch {trainer.epoch}, step {trainer.step}")
    return model, trainer


def _write(path: Path, write, advice=None):
    """``write(path)``, with an OSError turned into :class:`WriteFailed` naming ``path`` (``advice()`` appended)."""
    try:
        return write(path)
    except OSError as exc:
        raise WriteFailed(path, exc, advice() if advice else "check the disk and the folder's permissions") from exc


def draw_figures(model, trainer, out: Path, *, mu=None, labels=None, advice=None) -> list[Path]:
    """Write the figures; with the test set's posterior means ``mu`` and labels, the final ones too.

    Raises WriteFailed (naming the file, then ``advice()``: what is kept, what to do) if a file
    cannot be written.
    """
    from npvae import plots  # matplotlib is imported only when figures are drawn

    x = npdata.batch_to_float(trainer.test_images[:10], binarize="none", dtype=model.dtype)
    figures = [("reconstructions.png", lambda p: plots.plot_reconstructions(x, model.reconstruct(x), p, n=len(x))),
               ("samples.png", lambda p: plots.plot_samples(
                   model.sample(64, rng=np.random.default_rng([trainer.config.seed, 3])), p))]
    if trainer.history:
        figures.append(("curves.png", lambda p: plots.plot_curves(trainer.history, p)))
    if mu is not None:
        figures.append(("latent.png", lambda p: plots.plot_latent(mu, labels, p)))
        if model.z_dim == 2:
            figures.append(("manifold.png", lambda p: plots.plot_manifold(model, p)))
        pairs = np.arange(len(x) // 2)[:3]
        figures.append(("interpolation.png",
                        lambda p: plots.plot_interpolation(model, x[2 * pairs], x[2 * pairs + 1], p)))
    return [_write(out / name, draw, advice) for name, draw in figures]


def run(args, argv: list[str]) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    ckpt_path = out / "checkpoint.npz"
    resume_cmd = f"python {shlex.join([sys.argv[0], *[a for a in argv if a != '--resume'], '--resume'])}"
    # everything that can be refused is refused here, before the data is loaded or a step is taken
    ckpt, epochs = None, args.epochs
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        explicit = explicit_flags(argv)
        check_resume_flags(ckpt, explicit)
        done = int(ckpt.meta["epoch"])
        epochs = explicit.get("epochs", upgrade_meta(ckpt.meta)["train_config"]["epochs"])
        if epochs <= done:
            print(f"--epochs {epochs}: nothing to train, the checkpoint {ckpt_path} has completed {done} epoch(s); "
                  f"evaluating it and writing the metrics and figures (pass --epochs {done + 1} or more to train "
                  f"longer)", flush=True)
    check_out(args.out)
    train_x, test_x, test_y = load_data(args)
    model, trainer = build(args, train_x, test_x, ckpt, epochs)
    c = trainer.config
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
        draw_figures(model, trainer, out, advice=kept)
        print(f"\n{exc}; figures so far are in {out}/\nresume with:\n  {resume_cmd}", file=sys.stderr)
        return 130
    except NonFiniteLossError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the only file fit writes is the checkpoint (atomically: the old one is intact)
        raise WriteFailed(ckpt_path, exc, kept()) from exc

    last = history[-1]
    x_test = npdata.batch_to_float(trainer.test_images, binarize="none", dtype=model.dtype)
    n_ll = min(args.eval_images or len(x_test), len(x_test))
    t_ll = time.perf_counter()
    ll = model.log_likelihood(x_test[:n_ll], args.eval_k, rng=np.random.default_rng([c.seed, 4]), batch_size=100)
    t_ll = time.perf_counter() - t_ll
    mu = model.posterior_means(x_test)
    activity = model.latent_activity(x_test)  # Burda et al. 2016: A_u = Var_x E_q[z_u]
    del x_test  # 31 MB, freed before matplotlib loads: keeps the run's peak memory low
    figures = draw_figures(model, trainer, out, mu=mu, labels=test_y, advice=kept)
    metrics = {
        "initial_test_loss": trainer.initial_test_loss,
        "test_loss": last["test_loss"], "test_reconstruction": last["test_reconstruction"], "test_kl": last["test_kl"],
        "test_log_likelihood": float(ll.mean()), "log_likelihood_k": args.eval_k, "log_likelihood_images": n_ll,
        "log_likelihood_stderr": float(ll.std(ddof=1) / np.sqrt(n_ll)) if n_ll > 1 else None,
        "log_likelihood_seconds": t_ll,
        "active_units": int(np.sum(activity > 0.01)), "active_unit_threshold": 0.01,
        "latent_activity": activity.tolist(),
        "epochs": trainer.epoch, "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "wall_time_s": time.perf_counter() - start,
        "model": model.config, "train_config": asdict(c), "lr": trainer.optimizer.lr,
        "dataset": args.dataset, "history": history, "figures": [p.name for p in figures],
    }
    _write(out / "metrics.json",
           lambda p: atomic_write(p, lambda f: f.write(json.dumps(metrics, indent=2).encode())), kept)
    print(f"\ntest -ELBO {metrics['test_loss']:.2f} nats (reconstruction {metrics['test_reconstruction']:.2f}, "
          f"KL {metrics['test_kl']:.2f})")
    print(f"test log p(x) ~ {metrics['test_log_likelihood']:.2f} nats (IWAE, k={args.eval_k}, {n_ll} images, "
          f"{t_ll:.0f} s)")
    print(f"active units: {metrics['active_units']} of {model.z_dim} (Var_x E_q[z_u] > 0.01)")
    print(f"wall time {metrics['wall_time_s']:.0f} s; metrics, figures and checkpoint in {out}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv)
    except KeyboardInterrupt:  # outside training (loading data, evaluating): nothing to save
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
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


if __name__ == "__main__":
    sys.exit(main())
