"""Figures for VAE results: image grids, reconstructions, prior samples, learning curves,
latent spaces, the 2-D latent manifold and latent interpolations.

Everything is drawn on a :class:`matplotlib.figure.Figure` with an Agg canvas attached
directly, so pyplot's global state is never touched and no display is needed. Every
``plot_*`` function writes one PNG atomically (a temporary file in the target folder,
then :func:`os.replace`, so a reader never sees half a file), creates parent folders as
needed and returns the :class:`pathlib.Path` it wrote.

Images are rows of length ``H * W`` (784 for MNIST) with values in [0, 1], reshaped in
C (row-major) order to ``image_shape = (H, W)``, the layout of the MNIST IDX files.
Values outside [0, 1] (e.g. Gaussian decoder means) are clipped for display only. Image
figures are grayscale (0 = black, 1 = white), drawn with no interpolation at an integer
number of screen pixels per image pixel and a modest dpi, so files stay small.

Errors follow :mod:`npvae._checks`: ``TypeError`` for a wrong type and ``ValueError``
for a wrong shape or value, naming the argument, the expected and the received value.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image
from scipy.stats import norm

from ._checks import check_array, check_int
from .checkpoint import atomic_write

__all__ = ["image_grid", "pca_2d", "plot_reconstructions", "plot_samples", "plot_curves",
           "plot_latent", "plot_manifold", "plot_interpolation"]

DPI = 100            # dots per inch of every figure
_MAX_PX = 1000       # image grids are scaled up by an integer factor to at most this size
_LINE_PX = 18        # height of one caption line (10 pt at 100 dpi, plus leading)
_CHAR_PX = 7         # rough width of one caption character, to keep captions inside the figure
_DIGIT_COLORS = [f"C{d}" for d in range(10)]  # matplotlib's "tab10" cycle: one colour per digit
CURVE_KEYS = ("epoch", "train_loss", "test_loss", "train_reconstruction", "test_reconstruction",
              "train_kl", "test_kl")


# ------------------------------------------------------------------------------------------
# validation and output helpers
# ------------------------------------------------------------------------------------------
def _check_image_shape(image_shape) -> tuple[int, int]:
    if not isinstance(image_shape, tuple) or len(image_shape) != 2:
        raise TypeError(f"image_shape: expected a tuple (H, W) of two ints, got {image_shape!r}")
    return (check_int(image_shape[0], "image_shape[0]", minimum=1),
            check_int(image_shape[1], "image_shape[1]", minimum=1))


def _check_images(x, name: str, image_shape) -> np.ndarray:
    """A finite floating array of shape (N >= 1, H * W)."""
    h, w = _check_image_shape(image_shape)
    check_array(x, name, shape=(None, h * w), finite=True)
    if x.shape[0] == 0:
        raise ValueError(f"{name}: expected at least 1 image, got shape {x.shape}")
    return x


def _check_labels(labels, n: int) -> np.ndarray:
    """An integer array of shape (n,) with digit labels in 0..9."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels: expected a numpy.ndarray of integers, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected an integer dtype, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) (one label per row of mu), got shape {labels.shape}")
    if n and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels: expected digit labels in 0..9, got values in "
                         f"{int(labels.min())}..{int(labels.max())}")
    return labels


def _check_model(model, image_shape):
    """Anything VAE-like (``encode``, ``decode``, ``z_dim``, ``x_dim``, ``dtype``) with x_dim == H * W."""
    if not all(hasattr(model, a) for a in ("encode", "decode", "z_dim", "x_dim", "dtype")):
        raise TypeError(f"model: expected a VAE (with encode, decode, z_dim, x_dim, dtype), "
                        f"got {type(model).__name__}")
    h, w = _check_image_shape(image_shape)
    if model.x_dim != h * w:
        raise ValueError(f"image_shape: expected H * W == model.x_dim = {model.x_dim}, got {image_shape}")
    return model


def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path: expected a file name ending in .png, got {str(path)!r}")
    return path


def _save(fig: Figure, path) -> Path:
    """Render ``fig`` with Agg and write it as a small PNG at ``path``, atomically.

    Pillow (a dependency of matplotlib) encodes the pixels: grayscale figures as 8-bit
    "L" images, others with a 256-colour palette, which keeps scatter plots of 10,000
    points well under 300 KB. The file is written to a temporary name in the same folder
    and moved into place with os.replace, so readers never see a partial file.
    """
    path = _check_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # the figure background is opaque
    if (rgb == rgb[..., :1]).all():
        img = Image.fromarray(np.ascontiguousarray(rgb[..., 0]))  # uint8 (H, W): "L"
    else:
        img = Image.fromarray(np.ascontiguousarray(rgb)).quantize(256, dither=Image.Dither.NONE)
    return atomic_write(path, lambda f: img.save(f, format="PNG", optimize=True, dpi=(DPI, DPI)))


def _image_figure(grid: np.ndarray, lines) -> Figure:
    """A figure showing ``grid`` pixel-exactly (integer upscaling), with caption ``lines`` above."""
    lines = [line for line in lines if line]
    h, w = grid.shape
    s = max(1, min(4, _MAX_PX // max(h, w)))
    head = _LINE_PX * len(lines) + (8 if lines else 0)
    width = max(w * s, max((len(line) for line in lines), default=0) * _CHAR_PX + 20)
    height = h * s + head
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes(((width - w * s) / 2 / width, 0, w * s / width, h * s / height))
    ax.imshow(np.clip(grid, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    for i, line in enumerate(lines):
        fig.text(0.5, 1 - (4 + (i + 0.5) * _LINE_PX) / height, line, ha="center", va="center", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------
# public helpers
# ------------------------------------------------------------------------------------------
def image_grid(images, nrow, ncol, *, image_shape=(28, 28), pad=2, pad_value=0.5) -> np.ndarray:
    """Tile flat images into one 2-D array, row by row.

    Parameters
    ----------
    images : np.ndarray, shape (N, H * W), floating
        Image ``k`` goes to row ``k // ncol``, column ``k % ncol``; ``N <= nrow * ncol``,
        and cells beyond ``N`` are filled with ``pad_value``.
    nrow, ncol : int
        Number of rows and columns of the grid (>= 1).
    image_shape : (H, W)
        Each row of ``images`` is reshaped (C order) to this.
    pad : int
        Pixels of ``pad_value`` between neighbouring images and around the border (>= 0).
    pad_value : float
        Value of the padding and of empty cells (0.5: mid-grey).

    Returns
    -------
    np.ndarray, shape (nrow * (H + pad) + pad, ncol * (W + pad) + pad), dtype of ``images``.

    Raises TypeError for a non-array / non-float ``images`` or non-int sizes, and ValueError
    for a wrong shape, non-finite values or more images than cells.
    """
    h, w = _check_image_shape(image_shape)
    check_array(images, "images", shape=(None, h * w), finite=True)
    nrow, ncol = check_int(nrow, "nrow", minimum=1), check_int(ncol, "ncol", minimum=1)
    pad = check_int(pad, "pad", minimum=0)
    if images.shape[0] > nrow * ncol:
        raise ValueError(f"images: expected at most nrow * ncol = {nrow * ncol} images, got {images.shape[0]}")
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=images.dtype)
    for k, img in enumerate(images):
        top, left = pad + (k // ncol) * (h + pad), pad + (k % ncol) * (w + pad)
        grid[top:top + h, left:left + w] = img.reshape(h, w)
    return grid


def pca_2d(mu, *, return_explained=False):
    """Project ``mu`` (N, D), N >= 2, D >= 2, onto its first two principal components.

    The rows are centred, then ``np.linalg.svd`` gives the principal directions; each
    direction's sign is fixed so its largest-magnitude entry is positive (deterministic
    output). Returns the (N, 2) float64 projection (centred: columns have mean 0) and, if
    ``return_explained``, also a (2,) array with the fraction of the total variance each
    component explains. Raises TypeError for a non-float array, ValueError for a bad shape.
    """
    check_array(mu, "mu", shape=(None, None), finite=True)
    if mu.shape[0] < 2 or mu.shape[1] < 2:
        raise ValueError(f"mu: expected shape (N, D) with N >= 2 and D >= 2, got shape {mu.shape}")
    centred = mu.astype(np.float64) - mu.mean(axis=0, dtype=np.float64)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    components = components * np.sign(components[[0, 1], np.argmax(np.abs(components), axis=1)])[:, None]
    proj = centred @ components.T
    if not return_explained:
        return proj
    total = float(np.sum(s ** 2))
    return proj, (s[:2] ** 2 / total if total > 0 else np.zeros(2))


# ------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------
def plot_reconstructions(originals, reconstructions, path, *, n=10, image_shape=(28, 28), title=None) -> Path:
    """Originals in one row above their reconstructions in the row below.

    ``originals`` and ``reconstructions``: (N, H * W) floating arrays with the same N
    (typically ``model.reconstruct(originals)``). The first ``min(n, N)`` pairs are drawn,
    at most 16 per row; more are wrapped into further (original, reconstruction) row pairs.
    Writes a grayscale PNG to ``path`` and returns it as a Path. Raises TypeError for
    non-arrays, ValueError for bad shapes or different N.
    """
    _check_images(originals, "originals", image_shape)
    _check_images(reconstructions, "reconstructions", image_shape)
    if reconstructions.shape != originals.shape:
        raise ValueError(f"reconstructions: expected shape {originals.shape} (the same as originals), "
                         f"got shape {reconstructions.shape}")
    n = min(check_int(n, "n", minimum=1), originals.shape[0])
    ncol = min(n, 16)
    pairs = math.ceil(n / ncol)
    cells = np.full((2 * pairs, ncol, originals.shape[1]), 0.5, dtype=np.float64)
    for p in range(pairs):
        k = min(ncol, n - p * ncol)
        cells[2 * p, :k] = originals[p * ncol:p * ncol + k]
        cells[2 * p + 1, :k] = reconstructions[p * ncol:p * ncol + k]
    grid = image_grid(cells.reshape(-1, originals.shape[1]), 2 * pairs, ncol, image_shape=image_shape)
    caption = "top: originals, bottom: reconstructions" if pairs == 1 else \
        "rows 1, 3, ...: originals; rows 2, 4, ...: their reconstructions"
    return _save(_image_figure(grid, [title, caption]), path)


def plot_samples(samples, path, *, nrow=8, image_shape=(28, 28), title="Samples from the prior") -> Path:
    """A grid of images, e.g. ``model.sample(64, rng=rng)`` (means of p(x|z), z ~ N(0, I)).

    ``samples``: (N, H * W) floating array, drawn in ``nrow`` rows (fewer if N < nrow) of
    ``ceil(N / nrow)`` images. Writes a grayscale PNG to ``path`` and returns it as a
    Path. Raises TypeError for a non-array, ValueError for a bad shape.
    """
    _check_images(samples, "samples", image_shape)
    nrow = min(check_int(nrow, "nrow", minimum=1), samples.shape[0])
    grid = image_grid(samples, nrow, math.ceil(samples.shape[0] / nrow), image_shape=image_shape)
    return _save(_image_figure(grid, [title]), path)


def plot_curves(history, path) -> Path:
    """Learning curves in three panels: -ELBO, reconstruction and KL, train and test.

    ``history``: a non-empty list of per-epoch dicts with the real-number keys "epoch",
    "train_loss", "test_loss", "train_reconstruction", "test_reconstruction", "train_kl"
    and "test_kl" (nats per example; NaN values are left out of the lines). Points carry
    markers for up to 30 epochs, so a single epoch shows. Writes a PNG to ``path`` and
    returns it as a Path. Raises TypeError for a non-list or non-dict entries or
    non-numbers, ValueError for an empty list or a missing key.
    """
    if not isinstance(history, (list, tuple)):
        raise TypeError(f"history: expected a list of per-epoch dicts, got {type(history).__name__}")
    if not history:
        raise ValueError("history: expected at least one epoch, got an empty list")
    cols = {key: [] for key in CURVE_KEYS}
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise TypeError(f"history[{i}]: expected a dict, got {type(row).__name__}")
        for key in CURVE_KEYS:
            if key not in row:
                raise ValueError(f"history[{i}]: expected the keys {', '.join(CURVE_KEYS)}, got no {key!r}")
            v = row[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"history[{i}][{key!r}]: expected a real number, got {type(v).__name__} {v!r}")
            cols[key].append(float(v))
    fig = Figure(figsize=(12, 3.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    marker = "o" if len(history) <= 30 else None
    panels = [("loss", "-ELBO (loss)"), ("reconstruction", "reconstruction  -E_q[log p(x|z)]"),
              ("kl", "KL(q(z|x) || p(z))")]
    for ax, (key, name) in zip(fig.subplots(1, 3), panels):
        for split, style in (("train", "-"), ("test", "--")):
            ax.plot(cols["epoch"], cols[f"{split}_{key}"], style, marker=marker, markersize=4, label=split)
        ax.set(title=name, xlabel="epoch", ylabel="nats per example")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if min(cols["epoch"]) == max(cols["epoch"]):  # one epoch: a readable range around it
            ax.set_xlim(cols["epoch"][0] - 1, cols["epoch"][0] + 1)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_latent(mu, labels, path, *, title=None) -> Path:
    """Scatter of posterior means (e.g. of the test set) coloured by digit label.

    ``mu``: (N, D) floating array of means of q(z|x); ``labels``: (N,) integer array of
    digits 0..9 (one colour each, legend 0-9). D == 2 plots z1 against z2; D > 2 plots
    the 2-D PCA projection (:func:`pca_2d`) with each component's explained-variance
    fraction in its axis label; D == 1 is a strip plot of z1 against the jittered label.
    Points are drawn in a fixed random order so no digit hides the others. Writes a PNG
    to ``path`` and returns it as a Path. Raises TypeError for non-arrays or non-integer
    labels, ValueError for bad shapes, N mismatch or labels outside 0..9.
    """
    check_array(mu, "mu", shape=(None, None), finite=True)
    n, d = mu.shape
    if n == 0 or d == 0 or (d > 2 and n < 2):
        raise ValueError(f"mu: expected shape (N, D) with N >= 1 (N >= 2 when D > 2) and D >= 1, "
                         f"got shape {mu.shape}")
    _check_labels(labels, n)
    order = np.random.default_rng(0).permutation(n)
    if d == 1:
        jitter = np.random.default_rng(1).uniform(-0.3, 0.3, n)
        xy = np.column_stack([mu[:, 0], labels + jitter])
        xlabel, ylabel, kind = "z1 (mean of q(z|x))", "digit label (jittered)", "z_dim = 1"
    elif d == 2:
        xy = mu.astype(np.float64)
        xlabel, ylabel, kind = "z1 (mean of q(z|x))", "z2 (mean of q(z|x))", "z_dim = 2"
    else:
        xy, frac = pca_2d(mu, return_explained=True)
        xlabel, ylabel = (f"PC{i + 1} ({100 * f:.1f}% of variance)" for i, f in enumerate(frac))
        kind = f"PCA of z_dim = {d}: {100 * frac.sum():.1f}% of variance shown"
    fig = Figure(figsize=(7, 6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = to_rgba_array(_DIGIT_COLORS)[labels[order]]
    ax.scatter(xy[order, 0], xy[order, 1], c=colors, s=6 if n > 2000 else 14, alpha=0.7, linewidths=0)
    if d == 1:
        ax.set_yticks(range(10))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title or 'Latent means of q(z|x)'}\n({kind})")
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=str(k)) for k, c in enumerate(_DIGIT_COLORS)]
    ax.legend(handles=handles, title="digit", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_manifold(model, path, *, n=20, image_shape=(28, 28)) -> Path:
    """The learned 2-D manifold: decoder means on an n x n grid of latent points.

    Only for ``model.z_dim == 2``. The grid takes z1 and z2 at the Gaussian quantiles
    ``scipy.stats.norm.ppf(np.linspace(0.05, 0.95, n))`` (Kingma & Welling 2014, fig. 4),
    built in ``model.dtype``: z1 grows left to right, z2 bottom to top. The n * n means of
    p(x|z) (``model.decode``) are tiled into one grayscale image. Writes a PNG to ``path``
    and returns it as a Path. Raises TypeError for a non-VAE, ValueError if ``model.z_dim``
    is not 2, ``model.x_dim != H * W`` or ``n < 2``.
    """
    _check_model(model, image_shape)
    if model.z_dim != 2:
        raise ValueError(f"model.z_dim: expected 2 (a 2-D latent space), got {model.z_dim}")
    n = check_int(n, "n", minimum=2)
    q = norm.ppf(np.linspace(0.05, 0.95, n))
    z1, z2 = np.meshgrid(q, q[::-1])  # row 0 at the top holds the largest z2
    z = np.column_stack([z1.ravel(), z2.ravel()]).astype(model.dtype)
    grid = image_grid(model.decode(z), n, n, image_shape=image_shape, pad=0)
    caption = f"decoder means on a {n} x {n} grid of Gaussian quantiles 5%..95%: z1 left to right, z2 bottom to top"
    return _save(_image_figure(grid, ["Learned 2-D manifold", caption]), path)


def plot_interpolation(model, x_a, x_b, path, *, steps=10, image_shape=(28, 28)) -> Path:
    """Decode straight-line interpolations between the posterior means of image pairs.

    ``x_a``, ``x_b``: one image each, shape (H * W,) or (1, H * W), or P pairs, shape
    (P, H * W); same shape, ``model.dtype``. Their means ``mu_a``, ``mu_b`` of q(z|x) are
    interpolated in ``steps`` evenly spaced points (ends included) and decoded. Each pair
    is one row: ``x_a``, the ``steps`` decoder means, ``x_b``. Writes a grayscale PNG to
    ``path`` and returns it as a Path. Raises TypeError for a non-VAE, non-arrays or the
    wrong dtype, ValueError for bad or different shapes or ``steps < 2``.
    """
    _check_model(model, image_shape)
    pair = []
    for name, x in (("x_a", x_a), ("x_b", x_b)):
        if isinstance(x, np.ndarray) and x.ndim == 1:  # one image: (H * W,) -> (1, H * W)
            x = check_array(x, name, shape=(model.x_dim,))[None]
        pair.append(check_array(_check_images(x, name, image_shape), name, dtype=model.dtype))
    x_a, x_b = pair
    if x_b.shape != x_a.shape:
        raise ValueError(f"x_b: expected shape {x_a.shape} (the same as x_a), got shape {x_b.shape}")
    steps = check_int(steps, "steps", minimum=2)
    mu_a, mu_b = model.encode(x_a)[0], model.encode(x_b)[0]                 # (P, Z)
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    z = ((1 - t) * mu_a[:, None] + t * mu_b[:, None]).astype(model.dtype)   # (P, steps, Z)
    decoded = model.decode(z.reshape(-1, model.z_dim)).reshape(x_a.shape[0], steps, -1)
    rows = np.concatenate([x_a[:, None], decoded, x_b[:, None]], axis=1)  # (P, steps + 2, H * W)
    grid = image_grid(rows.reshape(-1, model.x_dim), x_a.shape[0], steps + 2, image_shape=image_shape)
    caption = f"ends: the two inputs; between: decoded means along mu_a -> mu_b ({steps} steps)"
    return _save(_image_figure(grid, ["Latent interpolation", caption]), path)
