"""The study guide's scripts (part B): vae_vs_ae, traversals, collapse, architecture.

Each script's ``main`` runs in ``--quick`` mode into a temporary folder (real MNIST, through
the ``mnist_dir`` fixture: skipped with a reason when NPVAE_DATA_DIR is unset) and its
figure is checked. What the scripts compute is checked where it is fast: the traversal
grid's shape and content, the KL per dimension summing to the model's KL, the two written
forms of the Gaussian KL agreeing (and matching quadrature), the "off the data" fraction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate

from demos.guide import architecture, collapse, traversals, vae_vs_ae
from npvae import distributions as dist
from npvae.models import VAE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 1_000 < len(data) < 300 * 1024, f"{path}: {len(data)} bytes"


def _small_vae(z_dim=3, seed=0):
    return VAE(12, z_dim, hidden=(8,), activation="tanh", rng=np.random.default_rng(seed), dtype=np.float64)


# ---- the two written forms of the Gaussian KL (study notes 004 vs the code) ---------------
def test_gaussian_kl_two_forms_agree_and_match_quadrature():
    rng = np.random.default_rng(0)
    mu = rng.normal(0, 2, 200)
    logvar = rng.uniform(-6, 4, 200)
    sigma = np.exp(0.5 * logvar)
    notes_form = np.log(1 / sigma) + (sigma ** 2 + mu ** 2) / 2 - 0.5       # log 1/σ + (σ² + μ²)/2 − 1/2
    code_form = 0.5 * (mu ** 2 + np.exp(logvar) - logvar - 1)                # ½(μ² + e^logvar − logvar − 1)
    library = dist.gaussian_kl(mu[:, None], logvar[:, None])         # (200,), one dimension each
    np.testing.assert_allclose(notes_form, code_form, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(library, code_form, rtol=1e-12, atol=1e-12)
    # and both are E_q[log q - log p], by quadrature, for a few cases
    for m, s in ((0.0, 1.0), (1.5, 0.3), (-2.0, 2.5)):
        def integrand(z):
            log_q = -0.5 * (math.log(2 * math.pi) + 2 * math.log(s) + ((z - m) / s) ** 2)
            log_p = -0.5 * (math.log(2 * math.pi) + z * z)
            return math.exp(log_q) * (log_q - log_p)
        exact, _ = integrate.quad(integrand, m - 12 * s, m + 12 * s, epsabs=1e-13, epsrel=1e-12)
        assert abs(exact - (math.log(1 / s) + (s * s + m * m) / 2 - 0.5)) < 1e-9


# ---- traversals ---------------------------------------------------------------------------
def test_kl_per_dimension_sums_to_the_models_kl():
    model = _small_vae(z_dim=4)
    x = (np.random.default_rng(1).random((30, 12)) < 0.5).astype(np.float64)
    mu, logvar = model.encode(x)
    per_dim = traversals.kl_per_dimension(mu, logvar)
    assert per_dim.shape == (4,) and np.all(per_dim >= 0)
    kl = model.forward(x, rng=np.random.default_rng(2)).metrics["kl"]
    np.testing.assert_allclose(per_dim.sum(), kl.mean(), rtol=1e-12)


def test_kl_per_dimension_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logvar"):
        traversals.kl_per_dimension(np.zeros((3, 2)), np.zeros((3, 3)))


def test_traversal_grid_shape_and_content():
    model = _small_vae(z_dim=3)
    z0 = np.array([0.3, -0.2, 1.1])
    grid = traversals.traversal_grid(model, z0, steps=5, units=[2, 0, 1])
    assert grid.shape == (3, 5, 12) and grid.dtype == np.float64          # n_units x steps images
    values = np.linspace(-3, 3, 5)
    z = np.tile(z0, (5, 1))
    z[:, 2] = values                                                        # row 0 traverses unit 2
    np.testing.assert_allclose(grid[0], model.decode(z), rtol=1e-12)
    with pytest.raises(ValueError, match="units"):
        traversals.traversal_grid(model, z0, units=[3])


def test_traversal_tiles_have_gaps_and_a_white_split():
    rows = [[np.full(784, 1.0)] * 4 for _ in range(2)]            # black tiles
    img = traversals._tiles(rows, gap=2, gap_value=0.3, split=1, split_gap=10)
    assert img.shape == (2 * (28 + 2) + 2, 2 + 28 + 10 + 3 * 28 + 2 * 2 + 2)
    assert np.all(img[2:30, 30:40] == 0.0) and np.all(img[32:60, 30:40] == 0.0)   # the white split column
    assert np.all(img[0, :] == 0.3) and np.all(img[30:32, 2:30] == 0.3)             # grey gaps between rows
    assert np.all(img[2:30, 2:30] == 1.0)                                            # a tile itself


# ---- vae_vs_ae --------------------------------------------------------------------------------
def test_inside_prior_fraction():
    codes = np.random.default_rng(0).normal(size=(20_000, 2))
    assert abs(vae_vs_ae.inside_prior_fraction(codes) - (1 - np.exp(-2))) < 0.01   # chi2(2) mass below 4
    assert vae_vs_ae.inside_prior_fraction(10 * codes + 50) == 0.0


# ---- every script end to end, --quick --------------------------------------------------------
def test_architecture_figure(tmp_path):
    out = architecture.main(["--quick", "--out", str(tmp_path)])
    _check_png(out["path"])


def test_traversals_quick(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(mnist_dir))
    results = traversals.main(["--quick", "--out", str(tmp_path)])
    _check_png(tmp_path / "guide_traversals.png")
    numbers = json.loads((tmp_path / "traversals.json").read_text())["numbers"]
    assert set(numbers["betas"]) == {f"{b:g}" for b in traversals.BETAS}
    assert set(results) == set(traversals.BETAS)
    for r in results.values():
        assert r["grid"].shape == (traversals.Z_DIM, traversals.STEPS, 784)
        assert np.isclose(r["kl_per_dim"].sum(), r["kl"], rtol=1e-4)
        assert 0 <= r["active_units"] <= traversals.Z_DIM
        assert sorted(r["order"]) == list(range(traversals.Z_DIM))


def test_collapse_quick(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(mnist_dir))
    runs = collapse.main(["--quick", "--out", str(tmp_path)])
    _check_png(tmp_path / "guide_collapse.png")
    summary = json.loads((tmp_path / "collapse.json").read_text())["numbers"]["summary"]
    assert summary["final_active"]["none"] == list(runs.values())[0]["active"][-1]
    assert len(runs) == 2
    for r in runs.values():
        assert r["kl_per_dim"].shape == (2, collapse.Z_DIM)
        np.testing.assert_allclose(r["kl_per_dim"].sum(1), r["kl"], rtol=1e-3)
        assert np.all((0 <= r["active"]) & (r["active"] <= collapse.Z_DIM))
    warm = [r for name, r in runs.items() if name.startswith("warm")][0]
    assert warm["beta"][0] < 1.0 and warm["beta"][-1] == 1.0                 # the warm-up ramp, then beta = 1


def test_vae_vs_ae_quick(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(mnist_dir))
    results = vae_vs_ae.main(["--quick", "--out", str(tmp_path)])
    _check_png(tmp_path / "guide_vae_vs_ae.png")
    numbers = json.loads((tmp_path / "vae_vs_ae.json").read_text())["numbers"]
    assert numbers["VAE"]["inside"] == results["VAE"]["inside"]
    np.testing.assert_allclose(numbers["AE"]["code_mean"], results["AE"]["codes"].mean(0), rtol=1e-5)
    assert set(results) == {"AE", "VAE"}
    for r in results.values():
        assert r["decoded"].shape == (vae_vs_ae.N_DRAWS, 784)
        assert np.all((r["decoded"] >= 0) & (r["decoded"] <= 1))
        assert 0.0 <= r["inside"] <= 1.0 and r["reconstruction"] > 0
