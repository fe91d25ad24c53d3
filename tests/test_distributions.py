"""Distributions: finite-difference checks of every gradient, and hypothesis properties."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae import distributions as D
from npvae import gradcheck

FD = dict(h=1e-4, order=4)


def _fd(f, theta, analytic):
    return gradcheck.check_gradient(f, theta, analytic, **FD).rel_error


def test_reparameterize_and_its_backward(rng):
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    eps = rng.standard_normal((2, 4, 3))
    z = D.reparameterize(mu, logvar, eps)
    np.testing.assert_allclose(z, mu + np.exp(logvar / 2) * eps)  # sigma = exp(logvar / 2)
    dz = rng.standard_normal(z.shape)
    dmu, dlogvar = D.reparameterize_backward(dz, logvar, eps)

    def f():
        return float(np.sum(D.reparameterize(mu, logvar, eps) * dz))

    assert _fd(f, mu, dmu) < 1e-6
    assert _fd(f, logvar, dlogvar) < 1e-6
    # (batch, z) eps without a sample axis
    dmu1, dlogvar1 = D.reparameterize_backward(dz[0], logvar, eps[0])
    np.testing.assert_allclose(dlogvar1, dz[0] * np.exp(logvar / 2) * eps[0] / 2)


def test_gaussian_log_prob_and_grads(rng):
    z, mu, logvar = (rng.standard_normal((5, 3)) for _ in range(3))
    from scipy.stats import norm
    ref = norm.logpdf(z, mu, np.exp(logvar / 2)).sum(axis=-1)
    np.testing.assert_allclose(D.gaussian_log_prob(z, mu, logvar), ref, rtol=1e-12)
    gz, gmu, glv = D.gaussian_log_prob_grad(z, mu, logvar)

    def f():
        return float(np.sum(D.gaussian_log_prob(z, mu, logvar)))

    assert _fd(f, z, gz) < 1e-6
    assert _fd(f, mu, gmu) < 1e-6
    assert _fd(f, logvar, glv) < 1e-6
    np.testing.assert_allclose(D.standard_normal_log_prob(z), norm.logpdf(z).sum(axis=-1), rtol=1e-12)


def test_kl_and_grad(rng):
    mu, logvar = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    dmu, dlogvar = D.gaussian_kl_grad(mu, logvar)

    def f():
        return float(np.sum(D.gaussian_kl(mu, logvar)))

    assert _fd(f, mu, dmu) < 1e-6
    assert _fd(f, logvar, dlogvar) < 1e-6
    np.testing.assert_array_equal(dmu, mu)
    np.testing.assert_allclose(dlogvar, (np.exp(logvar) - 1) / 2)


def test_bernoulli_log_prob_and_grad(rng):
    x = rng.random((5, 7))
    logits = 3 * rng.standard_normal((5, 7))
    p = 1 / (1 + np.exp(-logits))
    naive = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=-1)
    np.testing.assert_allclose(D.bernoulli_log_prob(x, logits), naive, rtol=1e-12)
    g = D.bernoulli_log_prob_grad(x, logits)
    assert _fd(lambda: float(np.sum(D.bernoulli_log_prob(x, logits))), logits, g) < 1e-6
    np.testing.assert_allclose(g, x - p, rtol=1e-12)


def _scaled_log_prob(lik, x, out, scale):
    """sum(scale * log p(x|out)), the function whose gradient ``log_prob_grad(x, out, scale)`` is.

    Each example's log p is differenced against its value at the unperturbed point (a constant:
    the gradient is the same), so the round-off of a large normalizing constant does not swamp
    the finite differences.
    """
    lp0 = lik.log_prob(x, out).copy()
    return lambda: float(np.sum(np.asarray(scale) * (lik.log_prob(x, out) - lp0)))


@pytest.mark.parametrize("logit_scale", [1.0, 30.0, 1e4])
def test_bernoulli_likelihood_log_prob_and_grad(rng, logit_scale):
    lik = D.Bernoulli()
    x = (rng.random((2, 5, 7)) < 0.5).astype(np.float64)
    x[0, 0] = 0.3  # grey levels too
    out = logit_scale * rng.standard_normal((2, 5, 7))
    x0, out0 = x.copy(), out.copy()
    np.testing.assert_array_equal(lik.log_prob(x, out), D.bernoulli_log_prob(x, out))
    g = lik.log_prob_grad(x, out)
    with np.errstate(over="ignore"):  # exp(1e4) = inf in the naive reference is fine: 1 / inf = 0
        reference = x - 1 / (1 + np.exp(-out))
    np.testing.assert_allclose(g, reference, rtol=1e-12, atol=1e-15)  # 1 - s: absolute error 1e-16
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(lik.mean(out), 1 / (1 + np.exp(-out)), rtol=1e-12, atol=1e-300)
    # a float scale multiplies the gradient; a per-sample (2, 5) scale weights each example's pixels
    np.testing.assert_allclose(lik.log_prob_grad(x, out, -0.25), -0.25 * g, rtol=1e-15, atol=0)
    w = rng.uniform(-2.0, 2.0, (2, 5))
    np.testing.assert_allclose(lik.log_prob_grad(x, out, w), w[..., None] * g, rtol=1e-15, atol=0)
    if logit_scale == 1.0:  # float64 finite differences of scale * log p, with respect to the logits
        assert _fd(_scaled_log_prob(lik, x, out, 1.0), out, g) < 1e-6
        assert _fd(_scaled_log_prob(lik, x, out, -0.25), out, lik.log_prob_grad(x, out, -0.25)) < 1e-6
        assert _fd(_scaled_log_prob(lik, x, out, w), out, lik.log_prob_grad(x, out, w)) < 1e-6
    # stateless: no cache, the inputs untouched, the same answer every call
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(out, out0)
    np.testing.assert_array_equal(lik.log_prob_grad(x, out), g)
    # float32 in, float32 out, even with float64 per-sample weights
    g32 = lik.log_prob_grad(x.astype(np.float32), out.astype(np.float32), w)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, w[..., None] * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma_x", [0.05, 1.0, 30.0])
def test_gaussian_fixed_likelihood(rng, sigma_x):
    lik = D.Gaussian(sigma_x)
    x, out = rng.standard_normal((3, 4, 6)), rng.standard_normal((3, 4, 6))
    d = x.shape[-1]
    expected = -(d / 2 * np.log(2 * np.pi * sigma_x ** 2) + np.sum((x - out) ** 2, -1) / (2 * sigma_x ** 2))
    np.testing.assert_allclose(lik.log_prob(x, out), expected, rtol=1e-12)
    g = lik.log_prob_grad(x, out)
    np.testing.assert_allclose(g, (x - out) / sigma_x ** 2, rtol=1e-13)  # d log p / d x_hat
    assert _fd(_scaled_log_prob(lik, x, out, 1.0), out, g) < 1e-6
    w = rng.uniform(-2.0, 2.0, (3, 4))  # per-sample weights of the leading shape (k, B)
    for scale in (-0.5, w):
        gs = lik.log_prob_grad(x, out, scale)
        np.testing.assert_allclose(gs, np.asarray(scale)[..., None] * g if np.ndim(scale) else scale * g,
                                   rtol=1e-13)
        assert _fd(_scaled_log_prob(lik, x, out, scale), out, gs) < 1e-6
    np.testing.assert_array_equal(lik.mean(out), out)
    assert lik.params == {} and lik.grads == {}


@pytest.mark.parametrize("per_pixel", [False, True])
def test_gaussian_learned_likelihood(rng, per_pixel):
    lik = D.GaussianLearned(6, sigma_x=0.8, per_pixel=per_pixel, dtype=np.float64)
    lik.params["log_sigma"][...] = rng.normal(-0.3, 0.3, lik.params["log_sigma"].shape)
    np.testing.assert_array_equal(lik.log_sigma(), lik.params["log_sigma"])  # above the floor: unclipped
    x, out = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4, 6))
    from scipy.stats import norm
    ref = norm.logpdf(x, out, np.exp(lik.params["log_sigma"])).sum(-1)
    np.testing.assert_allclose(lik.log_prob(x, out), ref, rtol=1e-12)
    grads_array = lik.grads["log_sigma"]
    w = rng.uniform(-2.0, 2.0, (2, 4))  # per-sample weights of the leading shape (k, B)
    for scale in (1.0, -0.5, w):
        f = _scaled_log_prob(lik, x, out, scale)
        lik.grads["log_sigma"][...] = 123.0  # overwritten, not accumulated
        g_out = lik.log_prob_grad(x, out, scale)
        g_log_sigma = lik.grads["log_sigma"].copy()
        assert lik.grads["log_sigma"] is grads_array  # written in place: a model's grads dict holds this array
        # float64 finite differences of scale * log p, in out and in log_sigma
        assert _fd(f, out, g_out) < 1e-6
        assert _fd(f, lik.params["log_sigma"], g_log_sigma) < 1e-6
        np.testing.assert_allclose(g_out, np.asarray(scale)[..., None] * (x - out) * np.exp(-2 * lik.log_sigma())
                                   if np.ndim(scale) else scale * (x - out) * np.exp(-2 * lik.log_sigma()),
                                   rtol=1e-12)
    np.testing.assert_array_equal(lik.mean(out), out)


def test_gaussian_learned_floor_has_zero_gradient(rng):
    lik = D.GaussianLearned(3, sigma_x=1e-6, dtype=np.float64)  # below the 1e-3 floor
    x, out = rng.random((2, 3)), rng.random((2, 3))
    assert lik.log_sigma()[0] == np.log(1e-3)
    np.testing.assert_allclose(lik.log_prob(x, out),
                               D.GaussianLearned(3, sigma_x=1e-3, dtype=np.float64).log_prob(x, out))
    lik.grads["log_sigma"][...] = 5.0
    g_out = lik.log_prob_grad(x, out, np.array([0.5, -2.0]))
    assert lik.grads["log_sigma"][0] == 0  # the clip passes no gradient, whatever was there before
    # the out gradient uses the floored sigma = 1e-3, and is the finite difference of the clipped log p
    np.testing.assert_allclose(g_out, np.array([0.5, -2.0])[:, None] * (x - out) / 1e-6, rtol=1e-9)
    assert _fd(_scaled_log_prob(lik, x, out, np.array([0.5, -2.0])), out, g_out) < 1e-6


def test_likelihood_argument_errors():
    with pytest.raises(ValueError, match="sigma_x: expected a number > 0"):
        D.Gaussian(0.0)
    with pytest.raises(ValueError, match="sigma_x: expected a number > 0"):
        D.GaussianLearned(4, sigma_x=-1.0)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        D.sample_eps((2, 2), rng=None)


# ----------------------------------------------------------------------------------------
# hypothesis properties
# ----------------------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8)
finite = st.floats(-8, 8, allow_nan=False, allow_infinity=False)


@given(data=st.data(), shape=shapes)
def test_kl_nonnegative_and_zero_only_at_the_prior(data, shape):
    mu = data.draw(hnp.arrays(np.float64, shape, elements=finite))
    logvar = data.draw(hnp.arrays(np.float64, shape, elements=finite))
    kl = D.gaussian_kl(mu, logvar)
    assert kl.shape == shape[:1]
    assert np.all(kl >= 0)
    # KL = 0 exactly at mu = 0, logvar = 0 ...
    assert np.all(D.gaussian_kl(np.zeros(shape), np.zeros(shape)) == 0)
    # ... and strictly positive anywhere clearly away from it (each unit's term is >= 0 and
    # 0 only there; closer than this, mu^2 and exp(lv) - lv - 1 ~ lv^2 / 2 round to 0)
    away = (np.abs(mu) > 1e-6) | (np.abs(logvar) > 1e-4)
    per_unit = 0.5 * (mu ** 2 + np.exp(logvar) - logvar - 1)
    assert np.all(per_unit[away] > 0)
    assert np.all(kl[away.any(axis=1)] > 0)


@given(mu=st.floats(-3, 3), logvar=st.floats(-3, 2), seed=st.integers(0, 2 ** 32 - 1))
def test_closed_form_kl_matches_monte_carlo(mu, logvar, seed):
    """KL(q || p) = E_q[log q(z) - log p(z)], within a few standard errors."""
    rng = np.random.default_rng(seed)
    m, lv = np.full((1, 2), mu), np.full((1, 2), logvar)
    eps = rng.standard_normal((20000, 1, 2))
    z = D.reparameterize(m, lv, eps)
    diff = D.gaussian_log_prob(z, m, lv) - D.standard_normal_log_prob(z)  # (20000, 1)
    se = diff.std() / np.sqrt(diff.size)
    assert abs(diff.mean() - D.gaussian_kl(m, lv)[0]) < 5 * se + 1e-9


@given(x=hnp.arrays(np.float64, (3, 5), elements=st.floats(0, 1)),
       logits=hnp.arrays(np.float64, (3, 5), elements=st.floats(-1e4, 1e4)))
def test_bernoulli_finite_for_extreme_logits_and_matches_naive(x, logits):
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        lp = D.bernoulli_log_prob(x, logits)
        g = D.bernoulli_log_prob_grad(x, logits)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(g))
    assert np.all(lp <= 1e-9 * np.abs(logits).sum())  # a log-probability of binary x is <= 0
    safe = np.abs(logits) < 30  # where sigmoid is not 0 or 1 in float64 the naive formula is fine
    p = 1 / (1 + np.exp(-np.where(safe, logits, 0)))
    naive = np.where(safe, x * np.log(p) + (1 - x) * np.log1p(-p), 0).sum(-1)
    rows = safe.all(axis=1)
    np.testing.assert_allclose(lp[rows], naive[rows], rtol=1e-9, atol=1e-9)


@given(dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 32 - 1),
       mu=st.floats(-5, 5), logvar=st.floats(-4, 3))
def test_sampler_mean_and_variance_std_vs_variance(dtype, seed, mu, logvar):
    """Samples z = mu + sigma eps have mean mu and variance exp(logvar), not exp(2 logvar).

    This is the std-vs-variance check: a sampler that used exp(logvar) as sigma would
    give variance exp(2 logvar), off by a factor exp(logvar): at least e ~ 2.7x whenever |logvar| >= 1.
    """
    rng = np.random.default_rng(seed)
    n = 40000
    m = np.full((n, 1), mu, dtype=dtype)
    lv = np.full((n, 1), logvar, dtype=dtype)
    z = D.reparameterize(m, lv, D.sample_eps((n, 1), rng=rng, dtype=dtype))
    assert z.dtype == dtype
    var = np.exp(logvar)
    # mean: standard error sqrt(var / n); variance: standard error ~ var * sqrt(2 / n)
    assert abs(z.mean(dtype=np.float64) - mu) < 5 * np.sqrt(var / n) + 1e-5 * abs(mu)
    assert abs(z.var(dtype=np.float64) / var - 1) < 5 * np.sqrt(2 / n) + 1e-5
