"""The study guide's figure scripts (demos/guide: reparam, intractable, ancestral, sigma_x, map_prior) and
their shared helpers (demos/guide/common.py).

Fast real checks of what they compute (no data needed), then each script's ``main`` in
``--quick`` mode into a temporary folder, where it must write its figure and its numbers'
JSON (needs the real MNIST files: skipped with the reason when NPVAE_DATA_DIR is unset, via
the ``mnist_dir`` fixture).
"""

import json

import numpy as np
import pytest

from demos.guide import ancestral, common, intractable, map_prior, reparam, sigma_x
from npvae import VAE


# ---- reparam: exact variances against Monte Carlo, pathwise below score function ----------------
@pytest.mark.parametrize("cost", list(reparam.COSTS))
@pytest.mark.parametrize("wrt", ["mu", "sigma"])
def test_exact_variance_matches_monte_carlo(cost, wrt, rng):
    f, df, _ = reparam.COSTS[cost]
    fk, dfk = (lambda z: f(z, 0.7)), (lambda z: df(z, 0.7))
    exact = reparam.exact_variance(fk, dfk, 0.5, 1.3, wrt)
    mc = reparam.mc_variance(fk, dfk, 0.5, 1.3, wrt, 20000, rng=rng, baseline=exact["baseline"])
    means = [exact[name][0] for name in reparam.ESTIMATORS]
    np.testing.assert_allclose(means, means[0], rtol=1e-7, atol=1e-9)  # all three unbiased: one true gradient
    for name in reparam.ESTIMATORS:
        _, var, se = mc[name]
        assert abs(var - exact[name][1]) < 4 * se, (name, var, exact[name][1], se)


def test_exact_gradient_is_the_true_derivative():
    # d/dmu E[(z-k)^2] = 2(mu - k), d/dsigma = 2 sigma, for z ~ N(mu, sigma^2)
    f, df, _ = reparam.COSTS["(z - k)²"]
    ex_mu = reparam.exact_variance(lambda z: f(z, 2.0), lambda z: df(z, 2.0), 0.5, 1.3, "mu")
    ex_s = reparam.exact_variance(lambda z: f(z, 2.0), lambda z: df(z, 2.0), 0.5, 1.3, "sigma")
    assert ex_mu["pathwise"][0] == pytest.approx(2 * (0.5 - 2.0), rel=1e-8)
    assert ex_s["pathwise"][0] == pytest.approx(2 * 1.3, rel=1e-8)
    # pathwise d/dmu of (z-k)^2 is 2(z-k): variance 4 sigma^2, below both score-function variances
    assert ex_mu["pathwise"][1] == pytest.approx(4 * 1.3 ** 2, rel=1e-8)
    for wrt_ex in (ex_mu, ex_s):
        assert wrt_ex["pathwise"][1] < wrt_ex["score function + baseline"][1] < wrt_ex["score function"][1]


def test_bad_wrt():
    with pytest.raises(ValueError, match="wrt"):
        reparam.estimator_samples(np.sin, np.cos, np.zeros(3), 0.0, 1.0, "tau")


def test_encoder_gradients_pathwise_matches_vae_backward(rng):
    """The pathwise draw is VAE.backward's encoder gradient without the KL (float64, same eps)."""
    model = VAE(12, 3, (8,), rng=rng, dtype=np.float64)
    x = (rng.random((5, 12)) < 0.5).astype(np.float64)
    seed = 7
    draws = reparam.encoder_gradients(model, x, repeats=2, rng=np.random.default_rng(seed), baseline_samples=1)
    # reproduce the first pathwise draw: the same stream gives the baseline eps, then the first eps
    r = np.random.default_rng(seed)
    r.standard_normal((5, 3))
    eps = r.standard_normal((5, 3))
    eps2 = r.standard_normal((5, 3))
    g = []
    for e in (eps, eps2):
        model.forward(x, eps=e, beta=0.0)
        grads = model.backward()
        g.append(np.concatenate([v.ravel() for k, v in grads.items() if k.startswith("encoder.")]))
    mean, var = draws["pathwise"]
    np.testing.assert_allclose(mean, (g[0] + g[1]) / 2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, (g[0] - g[1]) ** 2 / 2, rtol=1e-8, atol=1e-14)
    tv = {name: reparam.total_variance(v) for name, (_, v) in draws.items()}
    assert all(np.isfinite(list(tv.values())))


# ---- intractable: quadrature vs the naive estimator (Jensen) ------------------------------------
@pytest.fixture(scope="module")
def tiny_1d():
    rng = np.random.default_rng(3)
    model = VAE(30, 1, (16,), rng=rng, dtype=np.float64)
    for p in model.params.values():
        p *= 3.0  # a sharper decoder: a narrow posterior, as in a trained model
    x = (rng.random(30) < 0.5).astype(np.float64)
    return model, x


def test_naive_estimator_biased_low_then_converges(tiny_1d):
    model, x = tiny_1d
    exact = intractable.exact_log_px(model, x)
    table = intractable.LogLikTable(model, x, n=20001)
    zt = np.random.default_rng(0).standard_normal(500)
    assert np.max(np.abs(table(zt) - intractable.log_px_given_z(model, x, zt[:, None]))) < 1e-3
    rng = np.random.default_rng(1)
    small = intractable.naive_estimates(table, 1, 2000, rng=rng)
    se = small.std(ddof=1) / np.sqrt(len(small))
    assert small.mean() < exact - 5 * se  # Jensen: E log p_hat < log E p_hat = log p(x)
    big = intractable.naive_estimates(table, 20000, 20, rng=rng)
    assert abs(big.mean() - exact) < 0.05
    mu, logvar = model.encode(x[None])
    imp = intractable.importance_estimates(table, mu[0, 0], logvar[0, 0], 5000, 20, rng=rng)
    se_imp = imp.std(ddof=1) / np.sqrt(len(imp))
    assert abs(imp.mean() - exact) < 0.05
    assert imp.mean() < exact + 4 * se_imp  # the IWAE bound is below log p(x) in expectation


def test_exact_log_px_against_grid_sum(tiny_1d):
    model, x = tiny_1d
    from scipy.special import logsumexp
    from scipy.stats import norm
    z = np.linspace(-10, 10, 400001)
    lj = intractable.log_px_given_z(model, x, z[:, None]) + norm.logpdf(z)
    assert intractable.exact_log_px(model, x) == pytest.approx(logsumexp(lj) + np.log(z[1] - z[0]), abs=1e-6)
    with pytest.raises(ValueError, match="z_dim"):
        intractable.exact_log_px(VAE(30, 2, (4,), rng=np.random.default_rng(0), dtype=np.float64), x)


def test_posterior_moments_and_exact_elbo_against_a_grid(tiny_1d):
    """The true posterior's mean and s.d., and the ELBO of a Gaussian q, against a ten times finer grid;
    log p(x) - ELBO = KL(q || p(z|x)) >= 0, and 0 only for q = the posterior (not Gaussian here: > 0)."""
    from scipy.stats import norm
    model, x = tiny_1d
    log_px = intractable.exact_log_px(model, x)
    z = np.linspace(-10, 10, 400001)
    dz = z[1] - z[0]
    log_joint = intractable.log_px_given_z(model, x, z[:, None]) + norm.logpdf(z)     # log p(x, z)
    post = np.exp(log_joint - log_px)
    mean = np.sum(z * post) * dz
    sd = np.sqrt(np.sum((z - mean) ** 2 * post) * dz)
    m, s = intractable.posterior_moments(intractable.LogLikTable(model, x, n=40001), log_px)
    assert m == pytest.approx(mean, abs=1e-6) and s == pytest.approx(sd, abs=1e-6)
    mu, logvar = 0.3 * m, np.log(0.8 * s * s)                     # some q, not the posterior
    log_q = norm.logpdf(z, mu, np.exp(0.5 * logvar))
    keep = log_q > -700                                           # where q is not 0 in float64
    elbo_grid = np.sum(np.exp(log_q[keep]) * (log_joint[keep] - log_q[keep])) * dz
    elbo = intractable.exact_elbo(model, x, mu, logvar)
    assert elbo == pytest.approx(elbo_grid, abs=1e-5)
    assert log_px - elbo > 1e-3                                   # the gap is a KL: positive


def test_map_summary_verdict_is_computed_from_the_numbers():
    rng = np.random.default_rng(0)
    base = rng.normal(-100, 5, 400)
    rows = [{"lambda": lam, "train": -90.0, "test": float(np.mean(base + shift)), "test_se": 0.25}
            for lam, shift in ((0.0, 0.0), (0.1, -0.1), (1.0, -3.0))]
    values = {0.0: base, 0.1: base - 0.1 + rng.normal(0, 0.5, 400), 1.0: base - 3.0}
    out = map_prior.summarize(rows, values)
    assert out["improves"] == [] and out["verdict"] == "no λ improves test log p(x) here"
    assert out["best_lambda"] == 0.0 and out["zero_gap"] == pytest.approx(-90.0 - rows[0]["test"])
    values[0.1] = base + 1.0 + rng.normal(0, 0.5, 400)             # a clear paired improvement
    rows[1]["test"] = float(np.mean(values[0.1]))
    out = map_prior.summarize(rows, values)
    assert out["improves"] == ["0.1"] and "λ = 0.1 improves" in out["verdict"]
    assert out["gain_se"]["0.1"] == pytest.approx(np.std(values[0.1] - base, ddof=1) / 20)


# ---- common: where a run writes, what it writes ---------------------------------------------------
def test_parse_args_writes_the_guides_numbers_only_for_the_guides_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "SCRATCH_OUT", tmp_path / "scratch")
    parser = common.make_parser("x")
    parser.add_argument("--epochs", type=int, default=None)
    args = common.parse_args(parser, [])
    assert args.guide_run and args.out == common.DEFAULT_OUT and args.data == common.DEFAULT_DATA
    for argv in (["--quick"], ["--epochs", "3"], ["--seed", "1"]):
        args = common.parse_args(parser, argv)
        assert not args.guide_run and args.out == args.data == tmp_path / "scratch", argv
    args = common.parse_args(parser, ["--epochs", "3", "--out", str(tmp_path / "mine")])
    assert args.out == args.data == tmp_path / "mine" and args.out.is_dir()
    with pytest.raises(SystemExit):
        common.parse_args(parser, ["--seed", "-1"])


def test_write_numbers_is_plain_json(tmp_path):
    parser = common.make_parser("x")
    args = common.parse_args(parser, ["--out", str(tmp_path)])
    path = common.write_numbers(args, "demo", {"a": np.float32(1.5), "b": np.arange(3), "c": float("inf"),
                                              "d": {"e": np.int64(4)}}, seconds=12.34)
    record = json.loads(path.read_text())
    assert record["script"] == "demos/guide/demo.py" and record["seconds"] == 12.3
    assert record["numbers"] == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": {"e": 4}}
    assert record["settings"]["seed"] == 0 and record["cpu_seconds"] > 0


def test_save_figure_keeps_the_digit_colours_exact(tmp_path):
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure
    from PIL import Image
    fig = Figure(figsize=(3, 2), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for d, c in enumerate(common.DIGIT_COLORS):
        ax.add_patch(__import__("matplotlib.patches", fromlist=["Rectangle"]).Rectangle(
            (d / 10, 0), 0.1, 1, color=c, antialiased=False))
    path = common.save_figure(fig, tmp_path / "colours.png")
    pixels = {tuple(c) for c in np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)}
    for c in common.DIGIT_COLORS:
        assert tuple(round(255 * v) for v in to_rgb(c)) in pixels, c
    with pytest.raises(ValueError, match="png"):
        common.save_figure(fig, tmp_path / "colours.jpg")


def test_toy_mixture_density_integrates_to_one():
    g1, g2 = np.meshgrid(np.linspace(-6, 6, 121), np.linspace(-3, 3, 61))
    d = intractable.toy_mixture_density(g1, g2, n_z=401)
    assert np.sum(d) * 0.1 * 0.1 == pytest.approx(1.0, abs=5e-3)


# ---- ancestral, sigma_x, map_prior: small pure checks ----------------------------------------------
def test_mean_and_draw_share_z(rng):
    model = VAE(20, 2, (8,), rng=rng)
    z, mean, draw = ancestral.mean_and_draw(model, 6, seed=4)
    np.testing.assert_allclose(mean, model.decode(z), rtol=1e-6)
    assert set(np.unique(draw)) <= {0.0, 1.0}
    d = ancestral.more_draws(model, z, 3, rng=rng)
    assert d.shape == (3, 6, 20)
    assert ancestral.bernoulli_entropy(np.array([[0.5, 0.0, 1.0]]))[0] == pytest.approx(np.log(2))


def test_effective_prior_std(rng):
    from npvae import AdamW
    params = {"w": np.ones(3)}
    opt = AdamW(params, lr=1e-2, weight_decay=0.5)
    opt.step({"w": np.array([1.0, 2.0, 4.0])})
    s = map_prior.effective_prior_std(opt, 100)
    # after one step v_hat = g^2 exactly: s = 1/sqrt(lambda N (|g| + eps))
    np.testing.assert_allclose(s, 1 / np.sqrt(0.5 * 100 * (np.array([1.0, 2.0, 4.0]) + 1e-8)), rtol=1e-6)
    assert map_prior.naive_prior_std(0.5, 100) == pytest.approx(1 / np.sqrt(50))
    with pytest.raises(ValueError, match="weight_decay"):
        map_prior.effective_prior_std(AdamW(params, weight_decay=0.0), 100)


def test_common_binarize_is_the_library_draw():
    from demos.guide import common
    from npvae import data
    images = np.random.default_rng(0).integers(0, 256, (7, 784), dtype=np.uint8)
    images[0, :5], images[0, 5:10] = 0, 255
    for dtype in (np.float32, np.float64):
        x = common.binarize(images, rng=np.random.default_rng(3), dtype=dtype)
        assert x.dtype == dtype and x.shape == images.shape
        np.testing.assert_array_equal(x, data.binarize(images, rng=np.random.default_rng(3), dtype=dtype))
        np.testing.assert_array_equal(x[0, :10], [0] * 5 + [1] * 5)
        # any shape: the same stream and values, in the images' shape
        np.testing.assert_array_equal(common.binarize(images.reshape(7, 28, 28), rng=np.random.default_rng(3),
                                                      dtype=dtype), x.reshape(7, 28, 28))
        np.testing.assert_array_equal(common.binarize(images[0], rng=np.random.default_rng(3), dtype=dtype),
                                      x[0])


# ---- every script end to end, --quick ------------------------------------------------------------
@pytest.mark.parametrize("script, figures", [
    (reparam, ["guide_reparam_variance.png"]),
    (intractable, ["guide_intractable.png", "guide_mixture.png"]),
    (ancestral, ["guide_ancestral.png"]),
    (sigma_x, ["guide_sigma_x.png"]),
    (map_prior, ["guide_map.png"]),
])
def test_script_quick(script, figures, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(mnist_dir))
    script.main(["--quick", "--out", str(tmp_path)])
    for name in figures:
        path = tmp_path / name
        assert path.is_file() and 0 < path.stat().st_size < 300 * 1024
    record = json.loads((tmp_path / f"{script.__name__.rsplit('.', 1)[1]}.json").read_text())
    assert record["settings"]["quick"] is True and record["numbers"]
