"""Shared helpers for the study guide's figure scripts (``demos/guide/*.py``).

Every guide script is seeded, reproducible and runnable as ``python demos/guide/<name>.py``
(full size; docs/guide.md states each one's measured time) or with ``--quick`` (tiny sizes,
for CI: a few hundred images, 1 epoch, small k). What lives here:

* :func:`make_parser` / :func:`parse_args` - the common flags ``--quick``, ``--out``,
  ``--seed``. A run with the guide's own settings writes its figure to ``docs/figures``
  and its numbers to ``docs/guide_data``; any other run (``--quick``, another seed, any
  flag changed) writes both to :data:`SCRATCH_OUT` unless ``--out`` is given, so that an
  exercise never overwrites what the guide quotes;
* :func:`load_subset` - a seeded random subset of MNIST through :func:`npvae.load_mnist`
  (which reads ``NPVAE_DATA_DIR``), as uint8 (N, 784) images and (N,) labels;
* :func:`binarize` - one Bernoulli(pixel/255) draw of uint8 images, as float;
* :func:`train_model` / :func:`train_vae` - train with npvae's public ``Trainer``,
  ``TrainConfig`` and ``Adam`` / ``AdamW``;
* :func:`guide_style` and the colours every guide figure shares (:data:`IMAGE_CMAP` for
  images, :data:`HEAT_CMAP` for heat maps, :data:`DIGIT_COLORS`, :data:`COLORS`);
* :func:`save_figure` - write a matplotlib figure as a small PNG and check it is under 300 KB;
* :func:`write_numbers` - write the numbers the guide quotes as JSON (``docs/guide_data``),
  which ``tests/test_guide_numbers.py`` compares with the guide's text.

Run from the repository root or anywhere: the scripts put the repository root on
``sys.path`` themselves (``demos/guide`` is a package, so ``python -m demos.guide.<name>``
works too).
"""

from __future__ import annotations

import argparse
import json
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

__all__ = ["REPO", "DEFAULT_OUT", "DEFAULT_DATA", "SCRATCH_OUT", "MAX_FIGURE_BYTES", "IMAGE_CMAP", "HEAT_CMAP",
           "DIGIT_COLORS", "COLORS", "STYLE", "make_parser", "parse_args", "load_subset", "binarize", "train_model",
           "train_vae", "guide_style", "save_figure", "write_numbers", "Timer"]

DEFAULT_OUT = REPO / "docs" / "figures"
DEFAULT_DATA = REPO / "docs" / "guide_data"
#: where a run with other settings than the guide's writes its figure and numbers (unless --out is given)
SCRATCH_OUT = Path(os.environ.get("TMPDIR", "/tmp")) / "npvae_guide"
MAX_FIGURE_BYTES = 300 * 1024

# ---- one look for every guide figure ------------------------------------------------------------
#: images (digits, decoder means, traversals): black ink on white, 0 = white, 1 = black
IMAGE_CMAP = "gray_r"
#: heat maps (KL per unit against epochs, ...): one sequential map, dark = 0
HEAT_CMAP = "viridis"
#: one colour per digit 0-9 (tab10, exact: :func:`save_figure` keeps them)
DIGIT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: the same quantity in the same colour in every figure
COLORS = {
    "prior": "black",            # p(z) (dashed where drawn as a density)
    "posterior": "#d62728",      # the true posterior p(z|x), by quadrature
    "q": "#1f77b4",              # the encoder's q(z|x)
    "naive": "#d62728",          # estimates that sample the prior
    "importance": "#1f77b4",     # estimates that sample q(z|x)
    "score function": "#d62728",
    "score function + baseline": "#ff7f0e",
    "pathwise": "#1f77b4",
    "AE": "#ff7f0e",
    "VAE": "#1f77b4",
    "train": "#7f7f7f",
    "test": "#1f77b4",
    "reconstruction": "#1f77b4",
    "kl": "#d62728",
}
#: matplotlib settings of :func:`guide_style`: the guide shows a figure about 900 px wide, so a
#: figure of at most ~11 inches at 100 dpi with 11-12 pt text stays readable there
STYLE = {
    "font.size": 11, "axes.titlesize": 11.5, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
    "legend.fontsize": 10, "figure.titlesize": 12.5, "axes.grid": False, "image.cmap": IMAGE_CMAP,
    "lines.linewidth": 1.8, "savefig.dpi": 100, "figure.dpi": 100,
}


def guide_style():
    """``with guide_style(): ...``: draw a figure with :data:`STYLE` (matplotlib.rc_context)."""
    return matplotlib.rc_context(STYLE)


def make_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with ``--quick``, ``--out DIR`` and ``--seed INT`` (default 0).

    Scripts add their own flags to it, then call :func:`parse_args`. ``--out`` defaults to
    docs/figures for a run with the guide's settings and to :data:`SCRATCH_OUT` otherwise.
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (a few hundred images, 1 epoch, small k): seconds, for CI")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for the figure and the numbers' JSON (default: {DEFAULT_OUT} and "
                        f"{DEFAULT_DATA} for the guide's settings, {SCRATCH_OUT} for any other run)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random stream (default 0)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` (None: sys.argv[1:]); checks ``--seed >= 0``, resolves and creates ``--out``.

    Sets ``args.out`` (the figures' folder) and ``args.data`` (the JSON's folder):
    docs/figures and docs/guide_data when every flag has its default (the run the guide
    quotes); otherwise :data:`SCRATCH_OUT` for both, unless ``--out`` is given (then both go
    there). ``args.guide_run`` is True for the guide's own run.
    """
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed: expected an integer >= 0, got {args.seed}")
    changed = [a.dest for a in parser._actions
               if a.dest not in ("help", "out") and getattr(args, a.dest, None) != a.default]
    args.guide_run = not changed and args.out is None
    if args.out is None:
        args.out = DEFAULT_OUT if not changed else SCRATCH_OUT
        if changed:
            print(f"not the guide's settings ({', '.join('--' + c.replace('_', '-') for c in changed)}): "
                  f"writing to {SCRATCH_OUT}")
    args.out = Path(args.out)
    args.data = DEFAULT_DATA if args.out.resolve() == DEFAULT_OUT.resolve() else args.out
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
    """Write ``fig`` as a PNG at ``path`` (8-bit grey or a 256-colour palette, atomic) and return the Path.

    A figure with at most 256 distinct colours keeps them exactly (so the digit colours of a
    scatter stay distinct); otherwise Pillow's octree quantizer picks 256. Raises ValueError
    if ``path`` does not end in .png or the file is 300 KB or more (then make the figure
    smaller instead of committing it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from npvae.checkpoint import atomic_write

    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"path: expected a file name ending in .png, got {str(path)!r}")
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
    if (rgb == rgb[..., :1]).all():
        img = Image.fromarray(np.ascontiguousarray(rgb[..., 0]))          # grey: 8-bit "L"
    else:
        colours, index = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        if len(colours) <= 256:                                           # exact: one palette entry per colour
            img = Image.fromarray(index.reshape(rgb.shape[:2]).astype(np.uint8), mode="P")
            img.putpalette(colours.astype(np.uint8).ravel().tolist())
        else:
            img = Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: img.save(f, format="PNG", optimize=True, dpi=(100, 100)))
    size = os.path.getsize(path)
    if size >= MAX_FIGURE_BYTES:
        raise ValueError(f"{path}: figure is {size / 1024:.0f} KB, expected < 300 KB")
    print(f"wrote {path} ({size / 1024:.0f} KB, {img.size[0]}x{img.size[1]} px)")
    return path


def _plain(value):
    """``value`` with numpy scalars and arrays turned into Python floats, ints and lists, inf and nan into
    None (for JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None                                      # JSON has no inf/nan: null
    if isinstance(value, Path):
        return str(value)
    return value


def write_numbers(args, name: str, numbers: dict, *, seconds: float | None = None) -> Path:
    """Write ``numbers`` (a dict of floats, ints, lists, dicts; numpy allowed) to ``args.data/<name>.json``.

    The file also records the script, its settings (every flag), the wall time ``seconds``
    of the run if given, and ``cpu_seconds``, the process's CPU time so far (the time the run
    takes on one free core; the wall time grows when other processes share the cores). docs/guide_data/<name>.json is what docs/guide.md quotes and
    ``tests/test_guide_numbers.py`` checks. Written atomically; returns the Path.
    """
    from npvae.checkpoint import atomic_write

    settings = {k: v for k, v in vars(args).items() if k not in ("out", "data", "guide_run")}
    record = {"script": f"demos/guide/{name}.py", "settings": _plain(settings), "numbers": _plain(numbers)}
    if seconds is not None:
        record["seconds"] = round(float(seconds), 1)
    record["cpu_seconds"] = round(time.process_time(), 1)   # this process's CPU time so far (one thread: ~ wall time)
    text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n"
    path = atomic_write(Path(args.data) / f"{name}.json", lambda f: f.write(text.encode()))
    print(f"wrote {path}")
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
