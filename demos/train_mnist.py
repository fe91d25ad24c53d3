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

Ctrl-C saves a checkpoint of the last completed step and the figures so far, prints the
command that resumes, and exits with 130. Bad arguments or data give a one-line error on
stderr and exit code 2; a non-finite loss stops training with exit code 1 and keeps the
last good checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from npvae import data as npdata
from npvae.checkpoint import atomic_write, load_checkpoint
from npvae.optim import Adam
from npvae.train import NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted
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


def load_data(args):
    train_x, _ = npdata.load_mnist("train", dataset=args.dataset, data_dir=args.data_dir)
    test_x, test_y = npdata.load_mnist("test", dataset=args.dataset, data_dir=args.data_dir)
    return train_x[:args.train_limit], test_x[:args.test_limit], test_y[:args.test_limit]


def build(args, train_x, test_x):
    """The model, optimizer and trainer, fresh or restored from OUT/checkpoint.npz."""
    ckpt_path = Path(args.out) / "checkpoint.npz"
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        model = VAE.from_config(ckpt.meta["model_config"], rng=np.random.default_rng(0))
        config = TrainConfig(**{**ckpt.meta["train_config"], "epochs": max(args.epochs, ckpt.meta["epoch"])})
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
    if args.resume:
        trainer.load(ckpt)
        print(f"resumed from {ckpt_path}: epoch {trainer.epoch}, step {trainer.step}")
    return model, trainer


def draw_figures(model, trainer, out: Path, *, mu=None, labels=None) -> list[Path]:
    """Write the figures; with the test set's posterior means ``mu`` and labels, the final ones too."""
    from npvae import plots  # matplotlib is imported only when figures are drawn

    x = npdata.batch_to_float(trainer.test_images[:10], binarize="none", dtype=model.dtype)
    paths = [plots.plot_reconstructions(x, model.reconstruct(x), out / "reconstructions.png", n=len(x)),
             plots.plot_samples(model.sample(64, rng=np.random.default_rng([trainer.config.seed, 3])),
                                out / "samples.png")]
    if trainer.history:
        paths.append(plots.plot_curves(trainer.history, out / "curves.png"))
    if mu is not None:
        paths.append(plots.plot_latent(mu, labels, out / "latent.png"))
        if model.z_dim == 2:
            paths.append(plots.plot_manifold(model, out / "manifold.png"))
        pairs = np.arange(len(x) // 2)[:3]
        paths.append(plots.plot_interpolation(model, x[2 * pairs], x[2 * pairs + 1], out / "interpolation.png"))
    return paths


def run(args, argv: list[str]) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    train_x, test_x, test_y = load_data(args)
    model, trainer = build(args, train_x, test_x)
    c = trainer.config
    print(f"{model}  |  {len(train_x)} train / {len(test_x)} test images ({args.dataset}, binarize={c.binarize})  |  "
          f"{sum(p.size for p in model.params.values()):,} parameters", flush=True)
    try:
        history = trainer.fit()
    except TrainingInterrupted as exc:
        draw_figures(model, trainer, out)
        again = [a for a in argv if a != "--resume"]
        print(f"\n{exc}; figures so far are in {out}/\nresume with:\n  "
              f"python {shlex.join([sys.argv[0], *again, '--resume'])}", file=sys.stderr)
        return 130
    except NonFiniteLossError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1

    last = history[-1]
    x_test = npdata.batch_to_float(trainer.test_images, binarize="none", dtype=model.dtype)
    n_ll = min(args.eval_images or len(x_test), len(x_test))
    t_ll = time.perf_counter()
    ll = model.log_likelihood(x_test[:n_ll], args.eval_k, rng=np.random.default_rng([c.seed, 4]), batch_size=100)
    t_ll = time.perf_counter() - t_ll
    mu = model.posterior_means(x_test)
    activity = model.latent_activity(x_test)  # Burda et al. 2016: A_u = Var_x E_q[z_u]
    del x_test  # 31 MB, freed before matplotlib loads: keeps the run's peak memory low
    figures = draw_figures(model, trainer, out, mu=mu, labels=test_y)
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
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))
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
    except (ValueError, TypeError, OSError) as exc:  # bad input or data: one line, like argparse
        if args.traceback:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
