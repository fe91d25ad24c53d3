"""Shared helpers for the study guide's figure scripts (``demos/guide/*.py``).

Every guide script is seeded, reproducible and runnable as ``python demos/guide/<name>.py``
(full size, < 2 minutes on 2 cores) or with ``--quick`` (tiny sizes, for CI: a few hundred
images, 1 epoch, small k). What lives here:

* :func:`make_parser` / :func:`parse_args` - the common flags ``--quick``, ``--out``
  (default ``docs/figures``), ``--seed``;
* :func:`load_subset` - a seeded random subset of MNIST through :func:`npvae.load_mnist`
  (which reads ``NPVAE_DATA_DIR``), as uint8 (N, 784) images and (N,) labels;
* :func:`binarize` - one Bernoulli(pixel/255) draw of uint8 images, as float;
* :func:`train_model` / :func:`train_vae` - train with npvae's public ``Trainer``,
  ``TrainConfig`` and ``Adam`` / ``AdamW``;
* :func:`save_figure` - write a matplotlib figure as a small PNG (npvae.plots' palette
  encoder) and check it is under 300 KB.

Run from the repository root or anywhere: the scripts put the repository root on
``sys.path`` themselves (``demos/guide`` is a package, so ``python -m demos.guide.<name>``
works too).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # let `python demos/guide/x.py` import npvae from a fresh clone
    sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from npvae import VAE, Adam, AdamW, TrainConfig, Trainer, load_mnist  # noqa: E402
from npvae import data as npdata  # noqa: E402
from npvae.plots import _save  # noqa: E402

__all__ = ["REPO", "DEFAULT_OUT", "MAX_FIGURE_BYTES", "make_parser", "parse_args", "load_subset", "binarize",
           "train_model", "train_vae", "save_figure", "Timer"]

DEFAULT_OUT = REPO / "docs" / "figures"
MAX_FIGURE_BYTES = 300 * 1024


def make_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with ``--quick``, ``--out DIR`` (default docs/figures) and ``--seed INT`` (default 0).

    Scripts add their own flags to it, then call :func:`parse_args`.
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (a few hundred images, 1 epoch, small k): seconds, for CI")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the figure (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0, help="seed of every random stream (default 0)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` (None: sys.argv[1:]); checks ``--seed >= 0`` and creates ``--out``."""
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed: expected an integer >= 0, got {args.seed}")
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def load_subset(n_train: int, n_test: int, *, seed: int = 0, data_dir=None, dataset: str = "mnist"):
    """A seeded random subset of MNIST (or Fashion-MNIST).

    Returns ``(train_x, train_y, test_x, test_y)``: images uint8 (n, 784) with grey levels
    0..255 and labels uint8 (n,). The subsets are drawn without replacement by
    ``np.random.default_rng(seed)``, so they are the same on every run. ``data_dir``
    None: ``NPVAE_DATA_DIR`` or the cache (see :func:`npvae.data.resolve_data_dir`).
    Raises ValueError if ``n_train``/``n_test`` are not in 1..split size;
    :class:`npvae.data.DataNotFoundError` if the files cannot be found or downloaded.
    """
    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = load_mnist(split, dataset=dataset, data_dir=data_dir)
        if not (isinstance(n, (int, np.integer)) and 1 <= n <= len(images)):
            raise ValueError(f"n_{split}: expected an integer in 1..{len(images)}, got {n!r}")
        idx = np.sort(rng.choice(len(images), size=int(n), replace=False))
        out += [images[idx].reshape(len(idx), -1), labels[idx]]
    return tuple(out)


def binarize(images: np.ndarray, *, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """One Bernoulli(pixel/255) draw of uint8 ``images`` (any shape): {0, 1} in ``dtype``, ``images``' shape.

    The draw of :func:`npvae.data.binarize` (``u < pixel / 255``, u ~ U[0, 1) from ``rng``), the
    binarizer training uses.
    """
    images = np.asarray(images)
    return npdata.binarize(images.reshape(1, -1), rng=rng, dtype=dtype).reshape(images.shape)


def train_model(model, images: np.ndarray, *, test_images=None, epochs: int = 5, batch_size: int = 128,
                lr: float = 1e-3, weight_decay: float = 0.0, beta: float = 1.0, warmup_epochs: float = 0.0,
                binarize: str = "dynamic", seed: int = 0, log=None) -> list[dict]:
    """Train ``model`` (any npvae model) in place on uint8 ``images`` (N, 784); return the Trainer's history.

    The optimizer is :class:`npvae.Adam` (``weight_decay == 0``) or :class:`npvae.AdamW`
    (decoupled decay ``weight_decay`` on every parameter). The training stream is
    ``np.random.default_rng(seed)``; ``log`` receives one line per epoch (None: silent).
    History entries: see :meth:`npvae.Trainer.fit` (``train_loss``, ``test_loss``, ...
    in nats per example).
    """
    opt = Adam(model.params, lr=lr) if weight_decay == 0 else AdamW(model.params, lr=lr, weight_decay=weight_decay)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, beta=beta, warmup_epochs=warmup_epochs,
                         binarize=binarize, seed=seed)
    trainer = Trainer(model, opt, images, test_images, config, rng=np.random.default_rng(seed), log=log)
    return trainer.fit()


def train_vae(images: np.ndarray, *, z_dim: int = 20, hidden=(400,), likelihood: str = "bernoulli",
              sigma_x: float = 1.0, activation: str = "relu", dtype=np.float32, seed: int = 0, **kwargs) -> VAE:
    """Build a :class:`npvae.VAE` (784-hidden-z_dim) seeded by ``seed`` and train it on uint8 ``images``.

    ``kwargs`` go to :func:`train_model` (epochs, batch_size, lr, weight_decay, beta,
    warmup_epochs, binarize, test_images, log). Returns the trained model; its training
    history is in ``model.history`` (list of dicts, nats per example).
    """
    model = VAE(images.reshape(len(images), -1).shape[1], z_dim, hidden, activation, likelihood,
                rng=np.random.default_rng(seed), dtype=dtype, sigma_x=sigma_x)
    model.history = train_model(model, images, seed=seed, **kwargs)
    return model


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (npvae.plots' 8-bit grey / 256-colour palette encoder, atomic).

    Returns the Path. Raises ValueError if ``path`` does not end in .png or the file is
    300 KB or more (then make the figure smaller instead of committing it).
    """
    path = _save(fig, path)
    size = os.path.getsize(path)
    if size >= MAX_FIGURE_BYTES:
        raise ValueError(f"{path}: figure is {size / 1024:.0f} KB, expected < 300 KB")
    print(f"wrote {path} ({size / 1024:.0f} KB)")
    return path


class Timer:
    """``with Timer("train"):`` prints the wall time of the block in seconds."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        print(f"[{self.label}: {self.seconds:.1f} s]")
        return False
