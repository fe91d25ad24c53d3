"""The study guide's scripts for the other models (part D): iwae_bound, flow_posteriors, cvae, dirichlet.

What the scripts compute is checked for real on tiny float64 models (no data): the grid
posterior's log p(x) against an independent importance-sampling estimate, the flow
inversions against the forward flow, the flow density against the forward change of
variables and its integral against 1, the L_k curve and the effective sample size on weights
whose answers are known, the k-nearest-neighbour reader, the label-information bound at its
two extremes, the inverse-CDF Gamma draws against scipy's inverse CDF, and the frozen decoder
of ``fit_posterior``. Then each script's ``main`` runs in ``--quick`` mode into a temporary
folder (real MNIST through the ``mnist_dir`` fixture: skipped with the reason when
NPVAE_DATA_DIR is unset). Last, every number the guide's sections on these models quote is
checked against the JSON the scripts wrote (docs/guide.md once the sections are merged
there, else the staging text).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats
from scipy.special import logsumexp

from demos.guide import common, cvae, dirichlet, flow_posteriors, iwae_bound
from demos.guide import models_common as mc
from npvae.flows import IAFStep, PlanarFlow
from npvae.models import VAE, FlowVAE

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sharp(model, scale=3.0):
    """Scale every weight: a sharper decoder, so a narrow posterior as in a trained model."""
    for p in model.params.values():
        p *= scale
    return model


# ---- the grid posterior: log p(x) by quadrature -------------------------------------------------
def test_grid_posterior_matches_importance_sampling_and_normalizes():
    rng = np.random.default_rng(0)
    model = _sharp(VAE(30, 2, (16,), activation="tanh", rng=rng, dtype=np.float64), 2.0)
    x = (rng.random(30) < 0.5).astype(np.float64)
    post = mc.grid_posterior(model, x, n_coarse=61, n_fine=161)
    cell = post["cell"]
    assert np.exp(post["log_post"]).sum() * cell == pytest.approx(1.0, abs=1e-12)   # Bayes' rule on the grid
    # an independent estimate: p(x) = E_{z ~ N(0, I)}[p(x|z)], 200,000 prior draws (unbiased, small variance here)
    z = rng.standard_normal((200_000, 2))
    lw = mc.log_joint(model, x, z) - mc.gaussian_log_density(np.zeros(2), np.zeros(2), z)
    est = logsumexp(lw) - np.log(len(z))
    w = np.exp(lw - lw.max())
    se = w.std() / w.mean() / np.sqrt(len(z))                                    # s.e. of log p_hat (delta method)
    assert abs(post["log_px"] - est) < 5 * se + 1e-4, (post["log_px"], est, se)
    # the posterior mean on the grid = the self-normalized importance-sampling mean
    g1, g2 = np.meshgrid(post["z1"], post["z2"], indexing="ij")
    p = np.exp(post["log_post"]) * cell
    wn = w / w.sum()
    np.testing.assert_allclose([np.sum(p * g1), np.sum(p * g2)], wn @ z, atol=0.02)
    # a wider box and a finer grid give the same log p(x): the box holds all the mass
    b = post["box"]
    wide = (b[0] - 1, b[1] + 1, b[2] - 1, b[3] + 1)
    assert mc.grid_posterior(model, x, box=wide, n_fine=321)["log_px"] == pytest.approx(post["log_px"], abs=1e-6)
    with pytest.raises(ValueError, match="z_dim"):
        mc.grid_posterior(VAE(30, 3, (4,), rng=rng, dtype=np.float64), x)


# ---- inverting the flows; the flow density ----------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_planar_inverse_inverts_forward(seed):
    rng = np.random.default_rng(seed)
    step = PlanarFlow(3, rng=rng, dtype=np.float64)
    step.params["u"] *= 4.0
    if seed == 3:  # w'u very negative: w'u_hat close to its limit -1 (the step nearly folds)
        step.params["u"][...] = -8.0 * step.params["w"] / (step.params["w"] @ step.params["w"])
    z = rng.standard_normal((500, 3)) * 3
    y, _ = step.forward(z)
    np.testing.assert_allclose(mc.planar_inverse(step, y), z, atol=1e-8)


def test_iaf_inverse_inverts_forward_with_context():
    rng = np.random.default_rng(1)
    step = IAFStep(3, (8,), context_dim=2, order=np.array([2, 3, 1]), rng=rng, dtype=np.float64)
    for p in step.params.values():
        p += rng.normal(0, 0.5, p.shape)
    z, h = rng.standard_normal((400, 3)), rng.standard_normal((400, 2))
    y, _ = step.forward(z, h)
    np.testing.assert_allclose(mc.iaf_inverse(step, y, h), z, atol=1e-10)


@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_flow_density_is_the_change_of_variables_and_integrates_to_one(flow):
    rng = np.random.default_rng(2)
    model = FlowVAE(12, 2, (8,), flow=flow, flow_length=3, rng=rng, dtype=np.float64)
    for name, p in model.params.items():
        if name.startswith("flow."):
            p += rng.normal(0, 0.6, p.shape)
    x = (rng.random(12) < 0.5).astype(np.float64)
    # forward: z_K from base draws, log q(z_K|x) = log q0(z0|x) - sum log|det J| (the model's own log_weights path)
    q = model.proposal(x[None])
    _, mu, logvar, ctx = q
    eps = rng.standard_normal((300, 1, 2))
    zK, logdet, log_q0 = model._push(mu, logvar, ctx, eps)
    forward_log_q = log_q0[:, 0] - logdet
    lq, err = mc.flow_log_density(model, x, zK)
    assert err < 1e-9
    np.testing.assert_allclose(lq, forward_log_q, rtol=1e-9, atol=1e-9)
    # the density on a wide fine grid integrates to 1
    lim = np.abs(zK).max() * 2 + 4
    z1 = np.linspace(-lim, lim, 241)
    pts = np.stack(np.meshgrid(z1, z1, indexing="ij"), axis=-1).reshape(-1, 2)
    lq_grid, _ = mc.flow_log_density(model, x, pts)
    assert np.exp(lq_grid).sum() * (z1[1] - z1[0]) ** 2 == pytest.approx(1.0, abs=2e-3)


def test_fit_posterior_freezes_the_decoder():
    rng = np.random.default_rng(3)
    model = FlowVAE(16, 2, (8,), flow="iaf", flow_length=2, rng=rng, dtype=np.float64)
    before = {k: v.copy() for k, v in model.params.items()}
    images = rng.integers(0, 256, (64, 16), dtype=np.uint8)
    losses = flow_posteriors.fit_posterior(model, images, epochs=2, seed=0, batch_size=16)
    assert len(losses) == 2 and all(np.isfinite(losses))
    for k, v in model.params.items():
        changed = not np.array_equal(v, before[k])
        assert changed != k.startswith("decoder."), k                 # the decoder frozen, everything else trained


def test_display_box_and_mass_levels():
    z = np.linspace(-3, 3, 121)
    g1, g2 = np.meshgrid(z, z, indexing="ij")
    cell = (z[1] - z[0]) ** 2
    lp = -0.5 * (g1 ** 2 + g2 ** 2) / 0.25 - np.log(2 * np.pi * 0.25)           # N(0, 0.5^2 I)
    levels = flow_posteriors.mass_levels(lp, cell, masses=(0.5, 0.9))
    # for an isotropic Gaussian the 50% region is the disc of radius s sqrt(2 ln 2): density there
    expect = np.exp(-np.log(2)) / (2 * np.pi * 0.25)
    assert levels[1] == pytest.approx(expect, rel=0.05)
    box = flow_posteriors.display_box({"log_post": lp, "z1": z, "z2": z}, within=8.0, factor=1.0)
    assert box[1] - box[0] == pytest.approx(2 * 0.5 * 4.0, abs=0.1)             # within 8 nats: radius 4 s.d.


# ---- the L_k curve and the effective sample size ------------------------------------------------------
def test_bound_curve_on_lognormal_weights():
    # log w ~ N(log p - s^2/2, s^2): E w = p, L_1 = log p - s^2/2 exactly; L_k rises towards log p
    rng = np.random.default_rng(4)
    s, log_p = 0.8, -10.0
    log_w = rng.normal(log_p - s * s / 2, s, (20000, 6))
    c = iwae_bound.bound_curve(log_w, (1, 10, 100, 1000))
    assert abs(c["mean"][0] - (log_p - s * s / 2)) < 4 * c["se"][0]
    assert np.all(np.diff(c["mean"]) > 0)                                      # theorem 1: monotone in k
    # the delta method: log p - L_k ~ Var(w) / (2 k p^2) = (e^{s^2} - 1) / (2k) for large k
    for j, k in ((2, 100), (3, 1000)):
        assert abs(c["mean"][j] - (log_p - np.expm1(s * s) / (2 * k))) < 4 * c["se"][j] + 2e-3
    assert c["blocks"] == [20000, 2000, 200, 20]
    # the standard error is the Monte Carlo one: sqrt(var/b)/B with var = s^2 at k = 1
    assert c["se"][0] == pytest.approx(s / np.sqrt(20000 * 6), rel=0.05)
    with pytest.raises(ValueError, match="ks"):
        iwae_bound.bound_curve(log_w, (30000,))


def test_effective_sample_size_extremes():
    equal = np.zeros((100, 3))
    np.testing.assert_allclose(iwae_bound.effective_sample_size(equal, 50), 50.0)
    one = np.full((100, 2), -1e3)
    one[::50] = 0.0                                                              # one weight per block dominates
    np.testing.assert_allclose(iwae_bound.effective_sample_size(one, 50), 1.0)


# ---- reading digits and what z knows about y ------------------------------------------------------------
def test_knn_predict_on_separated_clusters():
    rng = np.random.default_rng(5)
    centres = rng.random((4, 10)) * 10
    y = np.repeat(np.arange(4), 30)
    xs = centres[y] + rng.normal(0, 0.1, (120, 10))
    q = centres + rng.normal(0, 0.1, (4, 10))
    np.testing.assert_array_equal(mc.knn_predict(xs, y, q, k=5, n_classes=4), np.arange(4))
    # a 1-1 tie among k = 2 goes to the nearer neighbour
    assert mc.knn_predict(np.array([[0.0], [1.0]]), np.array([1, 0]), np.array([[0.4]]), k=2, n_classes=2)[0] == 1


def test_label_information_at_its_extremes():
    rng = np.random.default_rng(6)
    y_tr, y_te = rng.integers(0, 4, 2000), rng.integers(0, 4, 1000)
    centres = np.eye(4, 3) * 6
    # z determined by y (clusters far apart): the bound reaches H(y), the classifier is always right
    info = cvae.label_information(centres[y_tr] + rng.normal(0, 1, (2000, 3)), y_tr,
                                  centres[y_te] + rng.normal(0, 1, (1000, 3)), y_te, n_classes=4)
    freq = np.bincount(y_te) / 1000
    assert info["H_y"] == pytest.approx(-np.sum(freq * np.log(freq)))
    assert info["accuracy"] > 0.99 and info["bound"] > info["H_y"] - 0.05
    # z independent of y: the bound is about 0 (a lower bound: it may dip below 0 by noise)
    info = cvae.label_information(rng.normal(0, 1, (2000, 3)), y_tr, rng.normal(0, 1, (1000, 3)), y_te, n_classes=4)
    assert -0.05 < info["bound"] < 0.02
    # in between: z = the label's centre in one coordinate plus unit noise; the bound is below the exact
    # I(z; y), computed by quadrature over the 1-D mixture
    from scipy import integrate
    y_tr, y_te = rng.integers(0, 2, 4000), rng.integers(0, 2, 4000)
    z_tr, z_te = (2.0 * y_tr + rng.normal(0, 1, 4000))[:, None], (2.0 * y_te + rng.normal(0, 1, 4000))[:, None]
    info = cvae.label_information(z_tr, y_tr, z_te, y_te, n_classes=2)
    mix = lambda z: 0.5 * stats.norm.pdf(z) + 0.5 * stats.norm.pdf(z, 2.0)          # noqa: E731
    h_z = integrate.quad(lambda z: -mix(z) * np.log(mix(z)), -12, 14)[0]
    exact = h_z - 0.5 * np.log(2 * np.pi * np.e)                                    # I = H(z) - H(z|y)
    assert exact - 0.05 < info["bound"] <= exact + 0.03, (info["bound"], exact)


# ---- the Dirichlet samplers --------------------------------------------------------------------------------
def test_inverse_cdf_draws_are_the_gamma_inverse_cdf_for_small_u():
    for a in (0.1, 0.3, 0.9):
        u = np.array([1e-8, 1e-6, 1e-4])
        approx = (u * a * special.gamma(a)) ** (1 / a)                        # Knowles 2015
        np.testing.assert_allclose(approx, special.gammaincinv(a, u), rtol=2e-3)
    # with a small alpha almost every draw is a small-u draw: theta_1 follows Beta(a, (K-1)a) closely
    th = dirichlet.inverse_cdf_draws(0.05, 5, 40000, rng=np.random.default_rng(7))
    np.testing.assert_allclose(th.sum(axis=1), 1.0, rtol=1e-12)
    assert stats.kstest(th[:, 0], stats.beta(0.05, 0.2).cdf).statistic < 0.03


def test_laplace_draws_follow_the_laplace_prior():
    from npvae.dirichlet import dirichlet_laplace_prior
    alpha = np.array([0.5, 1.0, 2.0])
    th = dirichlet.laplace_draws(alpha, 3, 20000, rng=np.random.default_rng(8))
    mu0, logvar0 = dirichlet_laplace_prior(alpha, 3)
    # log-ratios of theta are differences of the Gaussian z: log(th_k / th_1) = z_k - z_1
    d = np.log(th[:, 2] / th[:, 0])
    assert d.mean() == pytest.approx(mu0[2] - mu0[0], abs=0.05)
    assert d.var() == pytest.approx(np.exp(logvar0[2]) + np.exp(logvar0[0]), rel=0.05)


# ---- each script, --quick, on real MNIST ----------------------------------------------------------------------
@pytest.mark.parametrize("script, name, keys", [
    (iwae_bound, "iwae_bound", ("z2", "z20")),
    (flow_posteriors, "flow_posteriors", ("mean_gap", "shown")),
    (cvae, "cvae", ("follow_rate", "info_bound")),
    (dirichlet, "dirichlet", ("prior", "test_kl")),
])
def test_quick_run(script, name, keys, tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(mnist_dir))
    script.main(["--quick", "--out", str(tmp_path)])
    png = (tmp_path / f"guide_{name}.png").read_bytes()
    assert png[:8] == PNG_MAGIC and 1_000 < len(png) < 300 * 1024
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["script"] == f"demos/guide/{name}.py" and record["settings"]["quick"] is True
    assert all(k in record["numbers"] for k in keys)
    n = record["numbers"]
    if name == "iwae_bound":                                  # theorem 1 on the quick run's curves
        assert n["z2"]["monotone"] and n["z20"]["monotone"]
        assert n["z2"]["quadrature_refine_max"] < 1e-2
    elif name == "flow_posteriors":
        assert n["max_inversion_error"] < 1e-6 and 0.9 < n["min_mass_in_box"] <= 1 + 1e-6


# ---- the numbers the guide quotes are the scripts' ------------------------------------------------------------
#: The headings of the four sections (docs/guide.md numbers them: "## 21. How much ...").
TITLES = ("How much tighter is the importance-weighted bound?",
          "Can q(z|x) be richer than a Gaussian? Normalizing flows",
          "How do I generate a chosen digit? The conditional VAE",
          "What is a Dirichlet VAE?")
#: Where the sections wait until they are merged into docs/guide.md.
STAGING = Path("/work/staging/guide_models.md")
#: (JSON file under docs/guide_data, key path, format as printed; "%" = times 100): every number the four
#: sections quote from a script's run, the guide's own (iwae_bound.json, ...) or an exercise's
#: (exercises/<script>--<flags>.json).
QUOTES = [
    ('iwae_bound.json', 'numbers.n_train', ','),
    ('iwae_bound.json', 'numbers.epochs', 'd'),
    ('iwae_bound.json', 'numbers.n_images', 'd'),
    ('iwae_bound.json', 'numbers.repeats', 'd'),
    ('iwae_bound.json', 'numbers.z2.log_px', '.2f'),
    ('iwae_bound.json', 'numbers.z2.quadrature_refine_max', '.1e'),
    ('iwae_bound.json', 'numbers.z2.elbo', '.2f'),
    ('iwae_bound.json', 'numbers.z2.gap_k1', '.2f'),
    ('iwae_bound.json', 'numbers.z2.gap_k100', '.3f'),
    ('iwae_bound.json', 'numbers.z2.gap_kmax', '.3f'),
    ('iwae_bound.json', 'numbers.z2.gap_slope', '.2f'),
    ('iwae_bound.json', 'numbers.z2.worst_share', '%.0f'),
    ('iwae_bound.json', 'numbers.z2.worst_image', 'd'),
    ('iwae_bound.json', 'numbers.z2.top3_gaps.0', '.2f'),
    ('iwae_bound.json', 'numbers.z2.gap_kmax_without_worst', '.3f'),
    ('iwae_bound.json', 'numbers.z2.ess_fraction_at_kmax', '%.1f'),
    ('iwae_bound.json', 'numbers.z20.gain', '.2f'),
    ('iwae_bound.json', 'numbers.z20.ess_fraction_at_kmax', '%.1f'),
    ('exercises/iwae_bound--train-k_10.json', 'numbers.z2.log_px', '.2f'),
    ('exercises/iwae_bound--train-k_10.json', 'numbers.z2.elbo', '.2f'),
    ('exercises/iwae_bound--train-k_10.json', 'numbers.z2.gap_k1', '.2f'),
    ('exercises/iwae_bound--train-k_10.json', 'numbers.z2.gap_kmax', '.3f'),
    ('exercises/iwae_bound--train-k_10.json', 'numbers.z2.ess_fraction_at_kmax', '%.1f'),
    ('exercises/iwae_bound--train-k_10.json', 'numbers.z20.L_kmax', '.2f'),
    ('iwae_bound.json', 'numbers.z20.L_kmax', '.2f'),
    ('exercises/iwae_bound--train-k_10.json', 'numbers.z20.elbo', '.2f'),
    ('iwae_bound.json', 'numbers.z20.elbo', '.2f'),
    ('exercises/iwae_bound--train-k_10_--estimator_dreg.json', 'numbers.z20.L_kmax', '.2f'),
    ('exercises/iwae_bound--train-k_10_--estimator_dreg.json', 'numbers.z20.elbo', '.2f'),
    ('exercises/iwae_bound--train-k_10_--estimator_dreg.json', 'numbers.z2.log_px', '.2f'),
    ('exercises/iwae_bound--epochs_2.json', 'numbers.z2.gap_k1', '.2f'),
    ('exercises/iwae_bound--epochs_2.json', 'numbers.z2.log_px', '.2f'),
    ('exercises/iwae_bound--epochs_2.json', 'numbers.z2.gap_kmax', '.3f'),
    ('exercises/iwae_bound--epochs_2.json', 'numbers.z2.ess_fraction_at_kmax', '%.1f'),
    ('exercises/iwae_bound--epochs_2.json', 'numbers.z2.top3_gaps.0', '.2f'),
    ('flow_posteriors.json', 'numbers.n_train', ','),
    ('flow_posteriors.json', 'numbers.epochs', 'd'),
    ('flow_posteriors.json', 'numbers.fit_epochs', 'd'),
    ('flow_posteriors.json', 'numbers.flow_length', 'd'),
    ('flow_posteriors.json', 'numbers.max_inversion_error', '.0e'),
    ('flow_posteriors.json', 'numbers.min_mass_in_box', '%.2f'),
    ('flow_posteriors.json', 'numbers.elbo_draws', ','),
    ('flow_posteriors.json', 'numbers.n_images', 'd'),
    ('flow_posteriors.json', 'numbers.median_gap.Gaussian', '.3f'),
    ('flow_posteriors.json', 'numbers.median_gap.planar', '.3f'),
    ('flow_posteriors.json', 'numbers.median_gap.IAF', '.3f'),
    ('flow_posteriors.json', 'numbers.mean_gap.Gaussian', '.3f'),
    ('flow_posteriors.json', 'numbers.mean_gap.planar', '.3f'),
    ('flow_posteriors.json', 'numbers.mean_gap.IAF', '.3f'),
    ('flow_posteriors.json', 'numbers.mean_gap_without_worst.Gaussian', '.3f'),
    ('flow_posteriors.json', 'numbers.mean_gap_without_worst.planar', '.3f'),
    ('flow_posteriors.json', 'numbers.mean_gap_without_worst.IAF', '.3f'),
    ('flow_posteriors.json', 'numbers.images_planar_below_gaussian', 'd'),
    ('flow_posteriors.json', 'numbers.images_iaf_below_gaussian', 'd'),
    ('flow_posteriors.json', 'numbers.negentropy_max', '.2f'),
    ('flow_posteriors.json', 'numbers.negentropy_median', '.3f'),
    ('flow_posteriors.json', 'numbers.shown.0.image', 'd'),
    ('flow_posteriors.json', 'numbers.shown.0.gap.Gaussian', '.3f'),
    ('flow_posteriors.json', 'numbers.shown.0.gap.IAF', '.3f'),
    ('flow_posteriors.json', 'numbers.shown.1.gap.Gaussian', '.3f'),
    ('flow_posteriors.json', 'numbers.shown.1.gap.IAF', '.3f'),
    ('flow_posteriors.json', 'numbers.shown.2.image', 'd'),
    ('flow_posteriors.json', 'numbers.shown.2.negentropy', '.3f'),
    ('flow_posteriors.json', 'numbers.shown.2.gap.Gaussian', '.1f'),
    ('flow_posteriors.json', 'numbers.shown.2.gap.planar', '.1f'),
    ('flow_posteriors.json', 'numbers.shown.2.gap.IAF', '.1f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.negentropy_max_by_decoder.planar', '.3f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.negentropy_max_by_decoder.IAF', '.3f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.negentropy_max_by_decoder.Gaussian', '.3f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.median_gap.planar', '.3f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.median_gap.IAF', '.3f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.median_gap.Gaussian', '.3f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.mean_log_px.planar', '.2f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.mean_log_px.IAF', '.2f'),
    ('exercises/flow_posteriors--joint.json', 'numbers.mean_log_px.Gaussian', '.2f'),
    ('exercises/flow_posteriors--flow-length_16.json', 'numbers.median_gap.planar', '.3f'),
    ('exercises/flow_posteriors--flow-length_16.json', 'numbers.median_gap.IAF', '.3f'),
    ('exercises/flow_posteriors--flow-length_16.json', 'numbers.shown.2.mass_in_box.planar', '%.0f'),
    ('cvae.json', 'numbers.n_train', ','),
    ('cvae.json', 'numbers.epochs', 'd'),
    ('cvae.json', 'numbers.test_neg_elbo', '.2f'),
    ('cvae.json', 'numbers.n_draws', 'd'),
    ('cvae.json', 'numbers.knn_accuracy_test', '%.1f'),
    ('cvae.json', 'numbers.knn_accuracy_reconstructions', '%.1f'),
    ('cvae.json', 'numbers.follow_rate', '%.1f'),
    ('cvae.json', 'numbers.rows_following_at_most_half', '%.0f'),
    ('cvae.json', 'numbers.follow_rate_region', '%.0f'),
    ('cvae.json', 'numbers.follow_rate_other', '%.0f'),
    ('cvae.json', 'numbers.shows_region_when_other', '%.0f'),
    ('cvae.json', 'numbers.label_from_z_accuracy', '%.1f'),
    ('cvae.json', 'numbers.info_bound', '.2f'),
    ('cvae.json', 'numbers.H_y', '.2f'),
    ('cvae.json', 'numbers.vae_info_bound', '.2f'),
    ('cvae.json', 'numbers.vae_label_from_z_accuracy', '%.1f'),
    ('cvae.json', 'numbers.test_kl', '.2f'),
    ('exercises/cvae--beta_4.json', 'numbers.info_bound', '.2f'),
    ('exercises/cvae--beta_4.json', 'numbers.label_from_z_accuracy', '%.1f'),
    ('exercises/cvae--beta_4.json', 'numbers.follow_rate', '%.1f'),
    ('exercises/cvae--beta_4.json', 'numbers.follow_rate_region', '%.0f'),
    ('exercises/cvae--beta_4.json', 'numbers.follow_rate_other', '%.0f'),
    ('exercises/cvae--beta_4.json', 'numbers.test_kl', '.2f'),
    ('exercises/cvae--beta_4.json', 'numbers.test_neg_elbo', '.2f'),
    ('exercises/cvae--z-dim_2.json', 'numbers.follow_rate', '%.1f'),
    ('exercises/cvae--z-dim_2.json', 'numbers.info_bound', '.2f'),
    ('exercises/cvae--z-dim_2.json', 'numbers.test_kl', '.2f'),
    ('exercises/cvae--z-dim_2.json', 'numbers.vae_test_kl', '.2f'),
    ('exercises/cvae--z-dim_2.json', 'numbers.vae_info_bound', '.2f'),
    ('exercises/cvae--z-dim_2.json', 'numbers.test_neg_elbo', '.2f'),
    ('dirichlet.json', 'numbers.prior_sigma0', '.2f'),
    ('dirichlet.json', 'numbers.n_train', ','),
    ('dirichlet.json', 'numbers.epochs', 'd'),
    ('dirichlet.json', 'numbers.prior_draws', ','),
    ('dirichlet.json', 'numbers.test_neg_elbo', '.2f'),
    ('dirichlet.json', 'numbers.test_reconstruction', '.2f'),
    ('dirichlet.json', 'numbers.test_kl', '.2f'),
    ('dirichlet.json', 'numbers.active_units', 'd'),
    ('dirichlet.json', 'numbers.posterior_mean_max_theta', '.2f'),
    ('dirichlet.json', 'numbers.distinct_top_components', 'd'),
    ('dirichlet.json', 'numbers.prior.exact.ks', '.3f'),
    ('dirichlet.json', 'numbers.prior.laplace.ks', '.3f'),
    ('dirichlet.json', 'numbers.prior.inverse_cdf.ks', '.3f'),
    ('dirichlet.json', 'numbers.beta_cdf_1e4', '%.0f'),
    ('dirichlet.json', 'numbers.prior.laplace.below_1e4', '%.1f'),
    ('dirichlet.json', 'numbers.prior.laplace.mean_max', '.2f'),
    ('dirichlet.json', 'numbers.prior.exact.mean_max', '.2f'),
    ('dirichlet.json', 'numbers.prior.inverse_cdf.mean_max', '.2f'),
    ('dirichlet.json', 'numbers.inverse_cdf_max', '.2f'),
    ('exercises/dirichlet--alpha_1.json', 'numbers.posterior_mean_max_theta', '.2f'),
    ('exercises/dirichlet--alpha_1.json', 'numbers.distinct_top_components', 'd'),
    ('exercises/dirichlet--alpha_1.json', 'numbers.test_neg_elbo', '.2f'),
    ('exercises/dirichlet--alpha_1.json', 'numbers.prior.laplace.ks', '.3f'),
    ('exercises/dirichlet--alpha_1.json', 'numbers.prior.inverse_cdf.ks', '.3f'),
    ('exercises/dirichlet--alpha_1.json', 'numbers.inverse_cdf_max', '.2f'),
    ('exercises/dirichlet--alpha_3.json', 'numbers.prior.laplace.ks', '.3f'),
    ('exercises/dirichlet--alpha_3.json', 'numbers.prior.inverse_cdf.ks', '.3f'),
    ('exercises/dirichlet--alpha_3.json', 'numbers.inverse_cdf_max', '.2f'),
    ('exercises/dirichlet--alpha_3.json', 'numbers.test_neg_elbo', '.2f'),
    ('exercises/dirichlet--alpha_3.json', 'numbers.posterior_mean_max_theta', '.2f'),
]
#: Decimal numbers in the sections that are not measured: constants and settings.
CONSTANTS = {"2.30",    # log 10, the entropy of ten equally likely labels
             "0.3"}     # npvae's default Dirichlet concentration, a setting


def _sections() -> str:
    """The text of the four sections: from docs/guide.md once merged there, else from the staging file."""
    for source in (REPO / "docs" / "guide.md", STAGING):
        if not source.is_file():
            continue
        lines = source.read_text(encoding="utf-8").splitlines()
        starts = [i for i, line in enumerate(lines)
                  if any(re.fullmatch(rf"## (\d+\. )?{re.escape(t)}", line) for t in TITLES)]
        if starts:
            assert len(starts) == len(TITLES), f"{source}: found {len(starts)} of the {len(TITLES)} section headings"
            parts = []
            for i in starts:
                end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
                parts.append("\n".join(lines[i:end]))
            return "\n".join(parts)
    pytest.skip("the sections on the other models are neither in docs/guide.md nor in the staging file")


def _value(file: str, path: str):
    v = json.loads((common.DEFAULT_DATA / file).read_text(encoding="utf-8"))
    for part in path.split("."):
        v = v[int(part)] if isinstance(v, list) else v[part]
    return v


def _printed(file: str, path: str, spec: str) -> str:
    v = _value(file, path)
    if spec.startswith("%"):
        v, spec = 100 * v, spec[1:]
    return format(v, spec)


def test_quoted_numbers_equal_the_scripts_json():
    """Each quoted value is in the text as printed; no other decimal number is (unless a constant or setting)."""
    text = re.sub(r"<!--.*?-->", "", _sections(), flags=re.S)             # comments are no part of the guide
    text = text.replace("−", "-")                                         # the guide prints U+2212 minus signs
    printed = {_printed(*q) for q in QUOTES}
    missing = [f"{f} {p} = {_printed(f, p, spec)}" for f, p, spec in QUOTES if _printed(f, p, spec) not in text]
    assert not missing, "the sections do not quote these values (rerun the script or update the text):\n" + \
        "\n".join(missing)
    prose = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)                  # display equations hold no measurement
    prose = re.sub(r"\]\([^)]*\)", "]", prose)                             # link targets (arXiv numbers)
    prose = re.sub(r"(§|section |sections |derivation\.md )\d+(\.\d+)*", "", prose)
    stray = [v for v in re.findall(r"(?<![\w.])-?\d+\.\d+(?:e-?\d+)?", prose)
             if v.lstrip("-") not in printed and v not in printed and v.lstrip("-") not in CONSTANTS]
    assert not stray, f"decimal numbers in the sections that no script's JSON holds: {stray}"


def test_every_quoted_number_comes_from_a_committed_full_size_run():
    files = {f for f, _, _ in QUOTES}
    assert files and all((common.DEFAULT_DATA / f).is_file() for f in files)
    for f in files:
        assert _value(f, "settings.quick") is False, f
        script = _value(f, "script")
        assert script == f"demos/guide/{Path(f).name.split('--')[0].removesuffix('.json')}.py", (f, script)


def test_the_outlier_of_the_iwae_figure_is_the_bottom_row_of_the_flow_figure():
    """The text says the IWAE figure's outlier image is the flow figure's bottom row: the two scripts train the
    same 2-D VAE on the same images, so they must agree."""
    worst = _value("iwae_bound.json", "numbers.z2.worst_image")
    assert _value("flow_posteriors.json", "numbers.shown.2.image") == worst
    assert _value("iwae_bound.json", "numbers.z2.log_px") == pytest.approx(
        _value("flow_posteriors.json", "numbers.mean_log_px.Gaussian"), abs=1e-3)
