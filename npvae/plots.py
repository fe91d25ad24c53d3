"""Figures for any model's results: image grids, reconstructions, samples, learning curves,
latent spaces, the 2-D latent manifold, latent interpolations, labelled image rows (one
row per class), side-by-side image panels (two models compared) and heat maps.

Nothing here knows a model's history keys or the classes of a dataset: learning curves
plot whatever ``train_<name>``/``test_<name>`` series the history holds, and class
labels are integer indices 0..C-1 whose names (digits, Fashion-MNIST items, ...) are
passed in as ``class_names``.

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
           "plot_latent", "plot_manifold", "plot_interpolation", "plot_image_rows", "plot_image_panels", "plot_latent_panels",
           "plot_heatmap", "class_colors"]

DPI = 100            # dots per inch of every figure
_MAX_PX = 1000       # image grids are scaled up by an integer factor to at most this size
_LINE_PX = 18        # height of one caption line (10 pt at 100 dpi, plus leading)
_CHAR_PX = 7         # rough width of one caption character, to keep captions inside the figure
_SPLITS = ("train", "test")  # the prefixes of the history's series


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


def _check_labels(labels, n: int, class_names) -> list[str]:
    """An integer array of shape (n,) with class indices in 0..C-1; returns the C class names.

    ``class_names`` (a sequence of C strings) gives C; None means C = max(labels) + 1 and
    the names "0", "1", ...
    """
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels: expected a numpy.ndarray of integers, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected an integer dtype, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) (one label per row of mu), got shape {labels.shape}")
    if class_names is None:
        class_names = [str(k) for k in range(int(labels.max()) + 1 if n else 1)]
    class_names = _check_names(class_names, "class_names")
    if n and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels: expected class indices in 0..{len(class_names) - 1} (one per class name), "
                         f"got values in {int(labels.min())}..{int(labels.max())}")
    return class_names


def _check_names(names, name: str, n: int | None = None) -> list[str]:
    """A non-empty list/tuple of strings (of length ``n`` if given)."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(v, str) for v in names) or not names:
        raise TypeError(f"{name}: expected a non-empty list of strings, got {names!r}")
    if n is not None and len(names) != n:
        raise ValueError(f"{name}: expected {n} names, got {len(names)}")
    return list(names)


def class_colors(n: int) -> np.ndarray:
    """``n`` distinct RGBA colours, (n, 4) float: matplotlib's tab10 (n <= 10), tab20 (n <= 20), else viridis."""
    import matplotlib

    n = check_int(n, "n", minimum=1)
    if n <= 10:
        return to_rgba_array([f"C{k}" for k in range(n)])
    if n <= 20:
        return matplotlib.colormaps["tab20"](np.arange(n))
    return matplotlib.colormaps["viridis"](np.linspace(0, 1, n))


def _check_model(model, image_shape):
    """Any model with ``encode``, ``decode``, ``z_dim``, ``x_dim``, ``dtype`` and x_dim == H * W."""
    if not all(hasattr(model, a) for a in ("encode", "decode", "z_dim", "x_dim", "dtype")):
        raise TypeError(f"model: expected a model with encode, decode, z_dim, x_dim, dtype (npvae.models), "
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


def plot_curves(history, path, *, names=None, titles=None, title=None) -> Path:
    """Learning curves, one panel per quantity, train (solid) and test (dashed).

    ``history``: a non-empty list of per-epoch dicts with a real-number "epoch" and any
    number of series ``"train_<name>"`` / ``"test_<name>"`` (nats per example; NaN values
    are left out of the lines), e.g. the :class:`npvae.train.Trainer` history. The series
    present in ``history[0]`` must be present in every entry. ``names``: the quantities to
    plot, in order (default: every ``<name>`` found, "loss" first). ``titles``: optional
    dict name -> panel title (default: the name). Panels are laid out up to 3 per row;
    points carry markers for up to 30 epochs, so a single epoch shows. Writes a PNG to
    ``path`` and returns it as a Path. Raises TypeError for a non-list, non-dict entries or
    non-numbers, ValueError for an empty list, a missing key or an unknown name.
    """
    if not isinstance(history, (list, tuple)):
        raise TypeError(f"history: expected a list of per-epoch dicts, got {type(history).__name__}")
    if not history:
        raise ValueError("history: expected at least one epoch, got an empty list")
    if not isinstance(history[0], dict):
        raise TypeError(f"history[0]: expected a dict, got {type(history[0]).__name__}")
    keys = ["epoch"] + [k for k in history[0] if k.partition("_")[0] in _SPLITS and k.partition("_")[2]]
    found = list(dict.fromkeys(k.partition("_")[2] for k in keys[1:]))
    found = sorted(found, key=lambda name: name != "loss")  # "loss" first, the others in history order
    if names is None:
        names = found
    names = _check_names(names, "names") if names else names
    unknown = [name for name in names if name not in found]
    if unknown or not names:
        raise ValueError(f"names: expected some of the series in history[0] ({', '.join(found) or 'none'}), "
                         f"got {unknown or names!r}")
    titles = dict(titles or {})
    cols = {key: [] for key in keys}
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise TypeError(f"history[{i}]: expected a dict, got {type(row).__name__}")
        for key in keys:
            if key not in row:
                raise ValueError(f"history[{i}]: expected the keys of history[0] ({', '.join(keys)}), got no {key!r}")
            v = row[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"history[{i}][{key!r}]: expected a real number, got {type(v).__name__} {v!r}")
            cols[key].append(float(v))
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig = Figure(figsize=(4 * ncol, 3.6 * nrow + (0.3 if title else 0)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title)
    marker = "o" if len(history) <= 30 else None
    axes = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
    for ax, name in zip(axes, names):
        for split, style in (("train", "-"), ("test", "--")):
            if f"{split}_{name}" in cols:
                ax.plot(cols["epoch"], cols[f"{split}_{name}"], style, marker=marker, markersize=4, label=split)
        ax.set(title=titles.get(name, name), xlabel="epoch", ylabel="nats per example")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if min(cols["epoch"]) == max(cols["epoch"]):  # one epoch: a readable range around it
            ax.set_xlim(cols["epoch"][0] - 1, cols["epoch"][0] + 1)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[len(names):]:
        ax.set_axis_off()
    return _save(fig, path)


def _latent_axes(ax, mu, labels, class_names, legend_title, title, code_name, legend=True) -> None:
    """Draw one latent scatter (see :func:`plot_latent`) on ``ax``; arguments already checked."""
    n, d = mu.shape
    palette = class_colors(len(class_names))
    order = np.random.default_rng(0).permutation(n)
    if d == 1:
        jitter = np.random.default_rng(1).uniform(-0.3, 0.3, n)
        xy = np.column_stack([mu[:, 0], labels + jitter])
        xlabel, ylabel, kind = f"z1 ({code_name})", f"{legend_title} (jittered)", "z_dim = 1"
    elif d == 2:
        xy = mu.astype(np.float64)
        xlabel, ylabel, kind = f"z1 ({code_name})", f"z2 ({code_name})", "z_dim = 2"
    else:
        xy, frac = pca_2d(mu, return_explained=True)
        xlabel, ylabel = (f"PC{i + 1} ({100 * f:.1f}% of variance)" for i, f in enumerate(frac))
        kind = f"PCA of z_dim = {d}: {100 * frac.sum():.1f}% of variance shown"
    ax.scatter(xy[order, 0], xy[order, 1], c=palette[labels[order]], s=6 if n > 2000 else 14, alpha=0.7,
               linewidths=0)
    if d == 1:
        ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title or 'Latent codes: ' + code_name}\n({kind})")
    if legend and len(class_names) <= 20:
        handles = [Line2D([], [], marker="o", linestyle="", color=c, label=name)
                   for name, c in zip(class_names, palette)]
        ax.legend(handles=handles, title=legend_title, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)


def _check_codes(mu, name):
    check_array(mu, name, shape=(None, None), finite=True)
    n, d = mu.shape
    if n == 0 or d == 0 or (d > 2 and n < 2):
        raise ValueError(f"{name}: expected shape (N, D) with N >= 1 (N >= 2 when D > 2) and D >= 1, "
                         f"got shape {mu.shape}")
    return mu


def plot_latent(mu, labels, path, *, class_names=None, legend_title="class", title=None,
                code_name="mean of q(z|x)") -> Path:
    """Scatter of latent codes (e.g. posterior means of the test set) coloured by class.

    ``mu``: (N, D) floating array of codes; ``labels``: (N,) integer class indices
    0..C-1, C = ``len(class_names)`` (default: max(labels) + 1, named "0", "1", ...); one
    colour per class (:func:`class_colors`), a legend titled ``legend_title`` for up to 20
    classes. D == 2 plots z1 against z2; D > 2 plots the 2-D PCA projection
    (:func:`pca_2d`) with each component's explained-variance fraction in its axis label;
    D == 1 is a strip plot of z1 against the jittered class. ``code_name`` labels the axes
    (e.g. "z = encoder(x)" for an autoencoder). Points are drawn in a fixed random order so
    no class hides the others. Writes a PNG to ``path`` and returns it as a Path. Raises
    TypeError for non-arrays or non-integer labels, ValueError for bad shapes, N mismatch
    or labels outside 0..C-1.
    """
    _check_codes(mu, "mu")
    class_names = _check_labels(labels, mu.shape[0], class_names)
    fig = Figure(figsize=(7, 6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    _latent_axes(fig.add_subplot(), mu, labels, class_names, legend_title, title, code_name)
    return _save(fig, path)


def plot_latent_panels(panels, labels, path, *, class_names=None, legend_title="class", title=None) -> Path:
    """Latent scatters side by side (e.g. an autoencoder's codes next to a VAE's), one legend.

    ``panels``: a non-empty list of (name, mu, code_name) triples, each ``mu`` (N, D) with
    the same N, coloured by the shared ``labels`` (see :func:`plot_latent`). Writes a PNG
    to ``path`` and returns it as a Path. Raises TypeError/ValueError as :func:`plot_latent`.
    """
    if not isinstance(panels, (list, tuple)) or not panels or not all(
            isinstance(p, (list, tuple)) and len(p) == 3 and isinstance(p[0], str) for p in panels):
        raise TypeError(f"panels: expected a non-empty list of (name, mu, code_name) triples, got {panels!r:.80}")
    for name, mu, _ in panels:
        _check_codes(mu, f"panels[{name!r}] mu")
    class_names = _check_labels(labels, panels[0][1].shape[0], class_names)
    for name, mu, _ in panels:
        if mu.shape[0] != labels.shape[0]:
            raise ValueError(f"panels[{name!r}] mu: expected {labels.shape[0]} rows (one per label), got {mu.shape[0]}")
    fig = Figure(figsize=(5.5 * len(panels) + 1, 5.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title)
    for i, (ax, (name, mu, code_name)) in enumerate(zip(np.atleast_1d(fig.subplots(1, len(panels))), panels)):
        _latent_axes(ax, mu, labels, class_names, legend_title, name, code_name, legend=i == len(panels) - 1)
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


def _code(encoded):
    """The latent code from ``model.encode``'s result: ``mu`` of (mu, logvar), or the array itself (AE)."""
    return encoded[0] if isinstance(encoded, tuple) else encoded


def plot_interpolation(model, x_a, x_b, path, *, steps=10, image_shape=(28, 28)) -> Path:
    """Decode straight-line interpolations between the posterior means of image pairs.

    ``x_a``, ``x_b``: one image each, shape (H * W,) or (1, H * W), or P pairs, shape
    (P, H * W); same shape, ``model.dtype``. Their means ``mu_a``, ``mu_b`` of q(z|x) are
    interpolated in ``steps`` evenly spaced points (ends included) and decoded. Each pair
    is one row: ``x_a``, the ``steps`` decoder means, ``x_b``. (For a model whose ``encode``
    returns the code itself, an autoencoder, that code is interpolated.) Writes a grayscale PNG to
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
    mu_a, mu_b = _code(model.encode(x_a)), _code(model.encode(x_b))       # (P, Z)
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    z = ((1 - t) * mu_a[:, None] + t * mu_b[:, None]).astype(model.dtype)   # (P, steps, Z)
    decoded = model.decode(z.reshape(-1, model.z_dim)).reshape(x_a.shape[0], steps, -1)
    rows = np.concatenate([x_a[:, None], decoded, x_b[:, None]], axis=1)  # (P, steps + 2, H * W)
    grid = image_grid(rows.reshape(-1, model.x_dim), x_a.shape[0], steps + 2, image_shape=image_shape)
    caption = f"ends: the two inputs; between: decoded means along mu_a -> mu_b ({steps} steps)"
    return _save(_image_figure(grid, ["Latent interpolation", caption]), path)


def plot_image_rows(images, path, *, row_labels, col_labels=None, title, caption=None,
                    image_shape=(28, 28)) -> Path:
    """A grid of images with a name beside each row (and optionally above each column).

    ``images``: (R, C, H * W) floating array, row r column c is ``images[r, c]``;
    ``row_labels``: R strings (e.g. the class each row is conditioned on);
    ``col_labels``: None or C strings. ``title`` (say what the images are: means of
    p(x|z) or draws) and ``caption`` are written above. E.g. a conditional model's
    samples, one row per class, or the same z decoded under every label, one column per
    class. Writes a grayscale PNG to ``path`` and returns it as a Path. Raises TypeError
    for a non-array or non-string labels, ValueError for a bad shape or label count.
    """
    h, w = _check_image_shape(image_shape)
    check_array(images, "images", shape=(None, None, h * w), finite=True)
    R, C, _ = images.shape
    if R == 0 or C == 0:
        raise ValueError(f"images: expected shape (R >= 1, C >= 1, {h * w}), got shape {images.shape}")
    row_labels = _check_names(row_labels, "row_labels", R)
    col_labels = _check_names(col_labels, "col_labels", C) if col_labels is not None else None
    pad = 2
    grid = image_grid(images.reshape(R * C, h * w), R, C, image_shape=image_shape, pad=pad)
    s = max(1, min(4, _MAX_PX // max(grid.shape)))
    lines = [line for line in (title, caption) if line]
    left = max(len(v) for v in row_labels) * _CHAR_PX + 12
    top = _LINE_PX * len(lines) + 8 + (_LINE_PX if col_labels else 0)
    gh, gw = grid.shape[0] * s, grid.shape[1] * s
    width = max(left + gw + 10, max((len(v) for v in lines), default=0) * _CHAR_PX + 20)
    height = gh + top
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / width, 0, gw / width, gh / height))
    ax.imshow(np.clip(grid, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    for i, line in enumerate(lines):
        fig.text(0.5, 1 - (4 + (i + 0.5) * _LINE_PX) / height, line, ha="center", va="center", fontsize=10)
    for r, label in enumerate(row_labels):
        y = gh - (pad + r * (h + pad) + h / 2) * s
        fig.text((left - 6) / width, y / height, label, ha="right", va="center", fontsize=10)
    for c, label in enumerate(col_labels or ()):
        x = left + (pad + c * (w + pad) + w / 2) * s
        fig.text(x / width, (gh + _LINE_PX / 2) / height, label, ha="center", va="center", fontsize=10)
    return _save(fig, path)


def plot_image_panels(panels, path, *, title, nrow=8, image_shape=(28, 28)) -> Path:
    """Image grids side by side, one per named panel (e.g. two models' decodings of the same z).

    ``panels``: a non-empty list of (name, images) pairs, images (N, H * W) floating,
    each drawn in ``nrow`` rows under its name; ``title`` above all (say whether the
    images are means of p(x|z) or draws). Writes a grayscale PNG to ``path`` and returns
    it as a Path. Raises TypeError/ValueError for a malformed panel list or bad images.
    """
    if not isinstance(panels, (list, tuple)) or not panels or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in panels):
        raise TypeError(f"panels: expected a non-empty list of (name, images) pairs, got {type(panels).__name__}")
    grids = []
    for name, images in panels:
        _check_images(images, f"panels[{name!r}]", image_shape)
        rows = min(check_int(nrow, "nrow", minimum=1), images.shape[0])
        grids.append((name, image_grid(images, rows, math.ceil(images.shape[0] / rows), image_shape=image_shape)))
    gap = 8
    height_px = max(g.shape[0] for _, g in grids)
    combined = np.full((height_px, sum(g.shape[1] for _, g in grids) + gap * (len(grids) - 1)), 1.0)
    x, centres = 0, []
    for name, g in grids:
        combined[:g.shape[0], x:x + g.shape[1]] = g
        centres.append((name, x + g.shape[1] / 2))
        x += g.shape[1] + gap
    fig = _image_figure(combined, [title, " " * 4])
    # name each panel just above its grid, centred on it
    s = max(1, min(4, _MAX_PX // max(combined.shape)))
    w_px, h_px = fig.get_size_inches() * DPI
    x0 = (w_px - combined.shape[1] * s) / 2
    for name, centre in centres:
        fig.text((x0 + centre * s) / w_px, (combined.shape[0] * s + _LINE_PX / 2 + 2) / h_px, name,
                 ha="center", va="center", fontsize=10)
    return _save(fig, path)


def plot_heatmap(matrix, path, *, row_labels, col_labels, title, xlabel="", ylabel="", value_label="",
                 annotate=None) -> Path:
    """A matrix as a heat map (viridis) with named rows and columns and a colour bar.

    ``matrix``: (R, C) finite floating array, e.g. the mean topic proportions θ of each
    class (rows: classes, columns: components). ``row_labels``/``col_labels``: R and C
    strings. ``annotate``: write each value in its cell (default: when R * C <= 200).
    Writes a PNG to ``path`` and returns it as a Path. Raises TypeError/ValueError for a
    bad matrix or label count.
    """
    check_array(matrix, "matrix", shape=(None, None), finite=True)
    R, C = matrix.shape
    if R == 0 or C == 0:
        raise ValueError(f"matrix: expected shape (R >= 1, C >= 1), got shape {matrix.shape}")
    row_labels = _check_names(row_labels, "row_labels", R)
    col_labels = _check_names(col_labels, "col_labels", C)
    fig = Figure(figsize=(min(2 + 0.6 * C, 16), min(1.5 + 0.45 * R, 12)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    m = matrix.astype(np.float64)
    im = ax.imshow(m, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xticks(range(C), col_labels)
    ax.set_yticks(range(R), row_labels)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax, label=value_label)
    if annotate if annotate is not None else R * C <= 200:
        lo, hi = float(m.min()), float(m.max())
        for (r, c), v in np.ndenumerate(m):
            bright = hi > lo and (v - lo) / (hi - lo) > 0.6
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="black" if bright else "white")
    return _save(fig, path)
