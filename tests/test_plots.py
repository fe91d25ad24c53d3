"""Figures: valid, small, non-blank PNGs with the expected layout; pca_2d; argument errors."""

import numpy as np
import pytest
from matplotlib.image import imread
from scipy.stats import norm

from npvae import plots
from npvae.plots import (class_colors, image_grid, pca_2d, plot_curves, plot_heatmap, plot_image_panels,
                         plot_latent_panels,
                         plot_image_rows, plot_interpolation, plot_latent, plot_manifold, plot_reconstructions,
                         plot_samples)
from npvae.models import VAE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N = 60


@pytest.fixture(scope="module")
def vae2():
    return VAE(784, 2, (32,), rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def vae5():
    return VAE(784, 5, (32,), rng=np.random.default_rng(1))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    return rng.random((N, 784), dtype=np.float32), rng.integers(0, 10, N)


def asymmetric_image(shape=(28, 28)):
    """An "F" in the top-left and a left-to-right gradient along the bottom: any flip or transpose shows."""
    img = np.zeros(shape, np.float32)
    img[3:20, 4:7] = 1
    img[3:6, 4:18] = 1
    img[10:13, 4:14] = 0.6
    img[24:27, :] = np.linspace(0, 1, shape[1])
    return img.ravel()


def check_png(path, folder):
    """A real PNG, 200 B..300 KB, not one flat colour, and the only file in ``folder``. Returns the pixels."""
    assert path.exists() and path.suffix == ".png"
    raw = path.read_bytes()
    assert raw.startswith(PNG_SIGNATURE)
    assert 200 < len(raw) < 300_000
    pixels = imread(path)
    assert pixels.std() > 0
    assert [p.name for p in folder.iterdir()] == [path.name], "temporary files left behind"
    return pixels


def grid_area(pixels, grid):
    """The part of a rendered image figure that shows ``grid``: the bottom rows, centred, downscaled."""
    h, w = grid.shape
    s = max(1, min(4, plots._MAX_PX // max(h, w)))
    assert pixels.ndim == 2, "image figures are saved as 8-bit grayscale"
    left = (pixels.shape[1] - w * s) // 2
    area = pixels[-h * s:, left:left + w * s]
    assert area.shape == (h * s, w * s)
    return area[s // 2::s, s // 2::s]  # one screen pixel from the middle of each image pixel


# --------------------------------------------------------------------------------------------
# image_grid and pca_2d
# --------------------------------------------------------------------------------------------
def test_image_grid_exact_values():
    images = np.arange(12, dtype=np.float64).reshape(3, 4)  # three 2x2 images
    got = image_grid(images, 2, 2, image_shape=(2, 2), pad=1, pad_value=-1.0)
    p = -1.0
    expected = np.array([
        [p, p, p, p, p, p, p],
        [p, 0, 1, p, 4, 5, p],
        [p, 2, 3, p, 6, 7, p],
        [p, p, p, p, p, p, p],
        [p, 8, 9, p, p, p, p],
        [p, 10, 11, p, p, p, p],
        [p, p, p, p, p, p, p],
    ])
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(image_grid(images[:1], 1, 1, image_shape=(2, 2), pad=0), [[0, 1], [2, 3]])
    # non-square images are reshaped in C order: H rows of W pixels
    np.testing.assert_array_equal(image_grid(images[:1], 1, 1, image_shape=(1, 4), pad=0), [[0, 1, 2, 3]])


def test_image_grid_errors():
    x = np.zeros((5, 784), np.float32)
    with pytest.raises(ValueError, match=r"images: expected at most nrow \* ncol = 4 images, got 5"):
        image_grid(x, 2, 2)
    with pytest.raises(ValueError, match=r"images: expected shape \(\*, 784\), got shape \(5, 783\)"):
        image_grid(np.zeros((5, 783)), 3, 3)
    with pytest.raises(TypeError, match="images: expected a numpy.ndarray, got list"):
        image_grid([[0.0] * 784], 1, 1)
    with pytest.raises(TypeError, match="image_shape"):
        image_grid(x, 3, 3, image_shape=784)
    with pytest.raises(ValueError, match="nrow"):
        image_grid(x, 0, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pca_2d_recovers_dominant_direction(dtype):
    rng = np.random.default_rng(3)
    u = rng.standard_normal(6)
    u /= np.linalg.norm(u)
    x = (5.0 * rng.standard_normal((500, 1)) * u + 0.3 * rng.standard_normal((500, 6)) + 7.0).astype(dtype)
    proj, frac = pca_2d(x, return_explained=True)
    assert proj.shape == (500, 2)
    np.testing.assert_allclose(proj.mean(axis=0), 0.0, atol=1e-9)
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    direction = centred.T @ proj[:, 0]  # X^T X v = s^2 v: the first principal direction
    assert abs(direction @ u) / np.linalg.norm(direction) > 0.99
    assert abs(proj[:, 0] @ proj[:, 1]) < 1e-6 * np.sum(proj ** 2)  # uncorrelated components
    assert frac.shape == (2,) and frac[0] > 0.9 and frac.sum() <= 1.0 + 1e-12
    np.testing.assert_array_equal(pca_2d(x), proj)


def test_pca_2d_errors():
    with pytest.raises(ValueError, match=r"mu: expected shape \(N, D\) with N >= 2 and D >= 2, got shape \(10, 1\)"):
        pca_2d(np.zeros((10, 1)))
    with pytest.raises(ValueError, match="mu: expected shape"):
        pca_2d(np.zeros(10))
    with pytest.raises(TypeError, match="mu"):
        pca_2d(np.zeros((10, 3), dtype=np.int64))


# --------------------------------------------------------------------------------------------
# image figures: the rendered pixels are the grid, upscaled
# --------------------------------------------------------------------------------------------
def test_plot_samples_pixels_and_orientation(tmp_path):
    x = np.stack([asymmetric_image(), 1 - asymmetric_image(), np.full(784, 0.25, np.float32)])
    path = plot_samples(x, tmp_path / "samples.png", nrow=2, title=None)
    assert path == tmp_path / "samples.png"
    pixels = check_png(path, tmp_path)
    expected = image_grid(x, 2, 2)
    np.testing.assert_allclose(grid_area(pixels, expected), expected, atol=2 / 255)


def test_plot_samples_from_model(tmp_path, vae2):
    samples = vae2.sample(16, rng=np.random.default_rng(0))
    pixels = check_png(plot_samples(samples, tmp_path / "s.png", nrow=4), tmp_path)
    expected = image_grid(samples, 4, 4)
    np.testing.assert_allclose(grid_area(pixels, expected), expected, atol=2 / 255)


def test_plot_reconstructions_layout(tmp_path, vae2, data):
    x = data[0][:20].copy()
    x[0] = asymmetric_image()
    recon = vae2.reconstruct(x)
    path = plot_reconstructions(x, recon, tmp_path / "r.png", n=20, title="test")
    pixels = check_png(path, tmp_path)
    # 20 pairs, 16 per row: originals / reconstructions / originals (4) / reconstructions (4)
    cells = np.full((4, 16, 784), 0.5)
    cells[0], cells[1], cells[2, :4], cells[3, :4] = x[:16], recon[:16], x[16:], recon[16:]
    expected = image_grid(cells.reshape(-1, 784), 4, 16)
    np.testing.assert_allclose(grid_area(pixels, expected), expected, atol=2 / 255)
    # n larger than N: all N pairs in one row pair
    pixels = imread(plot_reconstructions(x[:3], recon[:3], tmp_path / "r.png", n=10))
    expected = image_grid(np.concatenate([x[:3], recon[:3]]), 2, 3)
    np.testing.assert_allclose(grid_area(pixels, expected), expected, atol=2 / 255)


def test_plot_reconstructions_errors(tmp_path, data):
    x = data[0]
    with pytest.raises(ValueError, match=r"reconstructions: expected shape \(60, 784\) .*got shape \(59, 784\)"):
        plot_reconstructions(x, x[:59], tmp_path / "r.png")
    with pytest.raises(ValueError, match=r"originals: expected shape \(\*, 784\), got shape \(60, 28, 28\)"):
        plot_reconstructions(x.reshape(60, 28, 28), x, tmp_path / "r.png")
    with pytest.raises(TypeError, match="reconstructions: expected a numpy.ndarray, got list"):
        plot_reconstructions(x, x.tolist(), tmp_path / "r.png")
    with pytest.raises(ValueError, match="path: expected a file name ending in .png"):
        plot_reconstructions(x, x, tmp_path / "r.jpg")
    assert list(tmp_path.iterdir()) == []


def test_plot_manifold_grid(tmp_path):
    for dtype in (np.float32, np.float64):
        model = VAE(784, 2, (32,), rng=np.random.default_rng(4), dtype=dtype)
        pixels = check_png(plot_manifold(model, tmp_path / "m.png", n=5), tmp_path)
        q = norm.ppf(np.linspace(0.05, 0.95, 5))
        # row i (top to bottom) has z2 = q[4 - i]; column j has z1 = q[j]
        z = np.array([[q[j], q[4 - i]] for i in range(5) for j in range(5)], dtype=dtype)
        expected = image_grid(model.decode(z), 5, 5, pad=0)
        np.testing.assert_allclose(grid_area(pixels, expected), expected, atol=2 / 255)


def test_plot_manifold_needs_z_dim_2(tmp_path, vae5):
    with pytest.raises(ValueError, match="model.z_dim: expected 2 .*got 5"):
        plot_manifold(vae5, tmp_path / "m.png")
    with pytest.raises(TypeError, match="model"):
        plot_manifold(object(), tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(784,), (1, 784), (3, 784)])
def test_plot_interpolation(tmp_path, vae5, data, shape):
    x_a, x_b = data[0][:3], data[0][3:6].copy()
    x_b[0] = asymmetric_image()
    x_a, x_b = x_a[:shape[0]] if len(shape) == 2 else x_a[0], x_b[:shape[0]] if len(shape) == 2 else x_b[0]
    path = plot_interpolation(vae5, x_a, x_b, tmp_path / "sub" / "dir" / "i.png", steps=4)
    pixels = check_png(path, tmp_path / "sub" / "dir")
    a, b = x_a.reshape(-1, 784), x_b.reshape(-1, 784)
    mu_a, mu_b = vae5.encode(a)[0], vae5.encode(b)[0]
    rows = []
    for p in range(a.shape[0]):
        z = np.stack([mu_a[p] + t * (mu_b[p] - mu_a[p]) for t in np.linspace(0, 1, 4)]).astype(np.float32)
        rows += [a[p], *vae5.decode(z), b[p]]
    expected = image_grid(np.stack(rows), a.shape[0], 6)
    np.testing.assert_allclose(grid_area(pixels, expected), expected, atol=2 / 255)


def test_plot_interpolation_errors(tmp_path, vae5, data):
    x = data[0]
    with pytest.raises(ValueError, match=r"x_b: expected shape \(2, 784\) \(the same as x_a\), got shape \(3, 784\)"):
        plot_interpolation(vae5, x[:2], x[:3], tmp_path / "i.png")
    with pytest.raises(ValueError, match=r"x_a: expected shape \(784,\), got shape \(783,\)"):
        plot_interpolation(vae5, x[0, :783], x[1], tmp_path / "i.png")
    with pytest.raises(TypeError, match="x_a: expected dtype float32, got dtype float64"):
        plot_interpolation(vae5, x[0].astype(np.float64), x[1], tmp_path / "i.png")
    with pytest.raises(ValueError, match="steps"):
        plot_interpolation(vae5, x[0], x[1], tmp_path / "i.png", steps=1)


# --------------------------------------------------------------------------------------------
# curves and latent scatter plots
# --------------------------------------------------------------------------------------------
def history(epochs):
    return [dict(epoch=e, train_loss=200.0 / e, test_loss=210.0 / e, train_reconstruction=180.0 / e,
                 test_reconstruction=190.0 / e, train_kl=20.0 + e, test_kl=np.float64(20.5 + e))
            for e in range(1, epochs + 1)]


@pytest.mark.parametrize("epochs", [1, 5, 50])
def test_plot_curves(tmp_path, epochs):
    pixels = check_png(plot_curves(history(epochs), tmp_path / "curves.png"), tmp_path)
    assert pixels.ndim == 3  # coloured lines
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 10


def test_plot_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="history: expected at least one epoch"):
        plot_curves([], tmp_path / "c.png")
    with pytest.raises(TypeError, match="history: expected a list of per-epoch dicts, got dict"):
        plot_curves(history(1)[0], tmp_path / "c.png")
    bad = history(2)
    del bad[1]["test_kl"]
    with pytest.raises(ValueError, match=r"history\[1\]: .*got no 'test_kl'"):
        plot_curves(bad, tmp_path / "c.png")
    bad = history(2)
    bad[0]["train_kl"] = "3.0"
    with pytest.raises(TypeError, match=r"history\[0\]\['train_kl'\]: expected a real number"):
        plot_curves(bad, tmp_path / "c.png")


@pytest.mark.parametrize("z_dim", [1, 2, 5])
def test_plot_latent(tmp_path, data, z_dim):
    mu = np.random.default_rng(5).standard_normal((N, z_dim)).astype(np.float32)
    pixels = check_png(plot_latent(mu, data[1], tmp_path / "latent.png", title="test"), tmp_path)
    assert pixels.ndim == 3 and len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 10


def test_plot_latent_from_model_and_size(tmp_path, vae5):
    # a full test set's worth of points still gives a small file
    rng = np.random.default_rng(6)
    mu = rng.standard_normal((10_000, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1])
    check_png(plot_latent(mu, rng.integers(0, 10, 10_000), tmp_path / "big.png"), tmp_path)
    (tmp_path / "big.png").unlink()
    x = rng.random((N, 784), dtype=np.float32)
    check_png(plot_latent(vae5.encode(x)[0], rng.integers(0, 10, N), tmp_path / "l.png"), tmp_path)


def test_plot_latent_errors(tmp_path, data):
    mu, labels = np.zeros((N, 2)), data[1]
    with pytest.raises(ValueError, match=r"labels: expected shape \(60,\) .*got shape \(59,\)"):
        plot_latent(mu, labels[:59], tmp_path / "l.png")
    with pytest.raises(TypeError, match="labels: expected an integer dtype, got dtype float64"):
        plot_latent(mu, labels.astype(np.float64), tmp_path / "l.png")
    with pytest.raises(TypeError, match="labels: expected a numpy.ndarray"):
        plot_latent(mu, list(labels), tmp_path / "l.png")
    digits = [str(d) for d in range(10)]
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0..9 \(one per class name\), "
                                         r"got values in 0..10"):
        plot_latent(mu, np.append(labels[:-1], 10), tmp_path / "l.png", class_names=digits)
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0..2 .*got values in -1"):
        plot_latent(mu, np.append(labels[:-1], -1) % 3 - (np.arange(N) == 0), tmp_path / "l.png",
                    class_names=["a", "b", "c"])
    with pytest.raises(TypeError, match="class_names: expected a non-empty list of strings"):
        plot_latent(mu, labels, tmp_path / "l.png", class_names=list(range(10)))
    with pytest.raises(TypeError, match="mu: expected a numpy.ndarray, got list"):
        plot_latent(mu.tolist(), labels, tmp_path / "l.png")
    with pytest.raises(ValueError, match=r"mu: expected shape \(\*, \*\), got shape \(60,\)"):
        plot_latent(mu[:, 0], labels, tmp_path / "l.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_curves_takes_any_series(tmp_path):
    """No fixed keys: an autoencoder's history (loss and reconstruction only) and a chosen subset."""
    ae = [dict(epoch=e, train_loss=90.0 / e, test_loss=95.0 / e, train_reconstruction=90.0 / e,
               test_reconstruction=95.0 / e, beta=1.0, seconds=1.0) for e in (1, 2, 3)]
    check_png(plot_curves(ae, tmp_path / "c.png", titles={"loss": "-log p(x|z)"}), tmp_path)
    (tmp_path / "c.png").unlink()
    four = [dict(h, train_elbo=-h["train_loss"], test_extra=1.0) for h in history(4)]
    check_png(plot_curves(four, tmp_path / "c.png", names=["kl", "extra"], title="t"), tmp_path)
    with pytest.raises(ValueError, match=r"names: expected some of the series in history\[0\] "
                                         r"\(loss, reconstruction, kl, elbo, extra\), got \['nope'\]"):
        plot_curves(four, tmp_path / "d.png", names=["kl", "nope"])


@pytest.mark.parametrize("n_classes", [3, 10, 15, 30])
def test_plot_latent_any_classes(tmp_path, n_classes):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, n_classes, 200)
    mu = rng.standard_normal((200, 2)) + labels[:, None]
    names = [f"class {k}" for k in range(n_classes)]
    pixels = check_png(plot_latent(mu, labels, tmp_path / "l.png", class_names=names, legend_title="item",
                                   code_name="z = encoder(x)"), tmp_path)
    assert pixels.ndim == 3
    assert class_colors(n_classes).shape == (n_classes, 4)
    assert len(np.unique(class_colors(n_classes), axis=0)) == n_classes


def test_plot_image_rows_layout(tmp_path):
    """Row r, column c shows images[r, c] (checked pixel by pixel in the grid area)."""
    rng = np.random.default_rng(8)
    images = rng.random((3, 4, 784)).astype(np.float32)
    images[1, 2] = asymmetric_image()
    path = plot_image_rows(images, tmp_path / "rows.png", row_labels=["y = 0", "y = 1", "y = 2"],
                           col_labels=["a", "b", "c", "d"], title="means of p(x|z, y)", caption="one row per class")
    pixels = check_png(path, tmp_path)
    expected = image_grid(images.reshape(12, 784), 3, 4)
    h, w = expected.shape
    s = max(1, min(4, plots._MAX_PX // max(h, w)))
    assert pixels.ndim == 2
    # the grid sits at the bottom, right of the row labels: find its left edge, then compare every pixel
    bottom = pixels[-h * s:]
    assert any(np.allclose(bottom[s // 2::s, off + s // 2:off + w * s:s], expected, atol=2 / 255)
               for off in range(0, pixels.shape[1] - w * s + 1))
    with pytest.raises(ValueError, match="row_labels: expected 3 names, got 2"):
        plot_image_rows(images, tmp_path / "x.png", row_labels=["a", "b"], title="t")
    with pytest.raises(ValueError, match=r"images: expected shape \(\*, \*, 784\), got shape \(12, 784\)"):
        plot_image_rows(images.reshape(12, 784), tmp_path / "x.png", row_labels=["a"], title="t")


def test_plot_image_panels_and_heatmap(tmp_path):
    rng = np.random.default_rng(9)
    a, b = rng.random((16, 784)), rng.random((16, 784))
    check_png(plot_image_panels([("AE", a), ("VAE", b)], tmp_path / "p.png", title="decoded z ~ N(0, I)", nrow=4),
              tmp_path)
    (tmp_path / "p.png").unlink()
    theta = rng.dirichlet(np.ones(5), size=10)
    pixels = check_png(plot_heatmap(theta, tmp_path / "h.png", row_labels=[str(d) for d in range(10)],
                                    col_labels=[f"k={k}" for k in range(5)], title="mean theta per class",
                                    value_label="theta"), tmp_path)
    assert pixels.ndim == 3
    with pytest.raises(TypeError, match="panels: expected a non-empty list"):
        plot_image_panels([], tmp_path / "q.png", title="t")
    (tmp_path / "h.png").unlink()
    labels = rng.integers(0, 10, 50)
    check_png(plot_latent_panels([("AE", rng.standard_normal((50, 2)), "z = encoder(x)"),
                                  ("VAE", rng.standard_normal((50, 5)), "mean of q(z|x)")], labels,
                                 tmp_path / "l.png", class_names=[str(d) for d in range(10)], title="codes"), tmp_path)
    with pytest.raises(ValueError, match=r"panels\['VAE'\] mu: expected 50 rows"):
        plot_latent_panels([("AE", np.zeros((50, 2)), "z"), ("VAE", np.zeros((40, 2)), "z")], labels,
                           tmp_path / "q.png")
    with pytest.raises(ValueError, match="col_labels: expected 5 names, got 4"):
        plot_heatmap(theta, tmp_path / "q.png", row_labels=[str(d) for d in range(10)], col_labels=list("abcd"),
                     title="t")


def test_plot_interpolation_of_an_autoencoder_code(tmp_path, vae5, data):
    """A model whose encode returns the code itself (an autoencoder) is interpolated too."""
    class CodeOnly:
        x_dim, z_dim, dtype = 784, 5, np.dtype(np.float32)

        def encode(self, x):
            return vae5.encode(x)[0]

        def decode(self, z):
            return vae5.decode(z)
    x = data[0]
    check_png(plot_interpolation(CodeOnly(), x[:2], x[2:4], tmp_path / "i.png", steps=3), tmp_path)


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------
def test_overwrite_and_failed_write_leave_no_temp_files(tmp_path, data, monkeypatch):
    x = data[0][:4]
    path = plot_samples(x, str(tmp_path / "s.png"), nrow=2)  # a str path works too
    first = path.read_bytes()
    plot_samples(x[::-1].copy(), path, nrow=2)
    assert path.read_bytes() != first and [p.name for p in tmp_path.iterdir()] == ["s.png"]

    def broken_save(self, *args, **kwargs):
        args[0].write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(plots.Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        plot_samples(x, path, nrow=2)
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]
    check_png(path, tmp_path)  # the old file is intact
