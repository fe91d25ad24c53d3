"""Numerical properties with many examples: every KL between Gaussians is >= 0 for every finite input.

The failure these guard against is a rounding corner: ``exp(v) - v - 1`` is -5.6e-17 at
v = 1e-8 (cancellation), so the KL of a posterior that is almost the prior came out
negative. The KLs are computed with ``expm1`` now; these tests draw tiny and large
magnitudes on purpose and run 25x the profile's examples (``helpers.numeric``).
"""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import numeric
from npvae import distributions as D

# every scale matters: the cancellation lives at |v| ~ 1e-8, the overflow guard at |v| ~ 20
tiny = st.floats(-1e-6, 1e-6, allow_nan=False, allow_subnormal=True)
moderate = st.floats(-20, 10, allow_nan=False)
values = st.one_of(tiny, moderate, st.sampled_from([0.0, 1e-8, -1e-8, 1e-12, 5e-324, 1e-300]))


def arrays(dtype):
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6), elements=values)


@numeric()
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
@example(data=None, dtype=np.float64)
def test_gaussian_kl_is_never_negative(data, dtype):
    if data is None:  # the issue's case: mu = 0, logvar = 1e-8 gave -5.6e-17
        mu, logvar = np.zeros((1, 1)), np.full((1, 1), 1e-8)
    else:
        mu = data.draw(arrays(dtype), label="mu")
        logvar = data.draw(hnp.arrays(dtype, mu.shape, elements=values), label="logvar")
    kl = D.gaussian_kl(mu, logvar)
    assert kl.dtype == mu.dtype
    assert np.all(kl >= 0), (mu, logvar, kl)


def test_gaussian_kl_at_logvar_1e_8_is_accurate():
    # exact value: (e^v - 1 - v) / 2 = v^2 / 4 + O(v^3) = 2.5e-17; expm1(v) - v still loses
    # about half the digits to cancellation (rel. error ~1e-8) but keeps the sign and the size
    kl = D.gaussian_kl(np.zeros((1, 1)), np.full((1, 1), 1e-8))[0]
    assert abs(kl - 2.5e-17) < 1e-6 * 2.5e-17


@numeric()
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_kl_normal_is_never_negative_and_zero_at_equality(data, dtype):
    mu = data.draw(arrays(dtype), label="mu")
    draw = lambda label: data.draw(hnp.arrays(dtype, mu.shape, elements=values), label=label)  # noqa: E731
    logvar, mu_p, logvar_p = draw("logvar"), draw("mu_p"), draw("logvar_p")
    with np.errstate(over="ignore"):  # (mu - mu_p)^2 / var_p may overflow to +inf: still >= 0
        kl = D.kl_normal(mu, logvar, mu_p, logvar_p)
    assert kl.dtype == mu.dtype
    assert np.all(kl >= 0)
    assert np.all(D.kl_normal(mu, logvar, mu, logvar) == 0)


@numeric()
@given(mu=arrays(np.float64), seed=st.integers(0, 2 ** 32 - 1))
def test_kl_normal_against_the_standard_prior_is_gaussian_kl(mu, seed):
    logvar = np.random.default_rng(seed).uniform(-5, 5, mu.shape)
    np.testing.assert_allclose(D.kl_normal(mu, logvar, 0.0, 0.0), D.gaussian_kl(mu, logvar),
                               rtol=1e-12, atol=1e-300)


def test_kl_normal_gradient_by_finite_differences(rng):
    from npvae import gradcheck
    mu, logvar = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    mu_p, logvar_p = rng.normal(size=4), rng.normal(size=4)
    dmu, dlogvar = D.kl_normal_grad(mu, logvar, mu_p, logvar_p)
    for theta, analytic in ((mu, dmu), (logvar, dlogvar)):
        err = gradcheck.check_gradient(lambda: float(np.sum(D.kl_normal(mu, logvar, mu_p, logvar_p))), theta,
                                       analytic, h=1e-4, order=4).rel_error
        assert err < 1e-8


# ------------------------------------------------------------------------------------------------
# issue #21, item 7: every public numeric function returns a finite value or raises, for every
# finite input of the whole float range; float16 is refused
# ------------------------------------------------------------------------------------------------
import math  # noqa: E402

import pytest  # noqa: E402

from npvae import dirichlet as Dir  # noqa: E402


def whole(dtype):
    """Every finite value of ``dtype``: huge, tiny, subnormal, zero, both signs."""
    return st.floats(allow_nan=False, allow_infinity=False, width=np.dtype(dtype).itemsize * 8)


def full_arrays(dtype, shape):
    return hnp.arrays(dtype, shape, elements=whole(dtype))


def finite_or_raises(f, *args):
    """f(*args) is finite everywhere, or raises ValueError naming arguments: never NaN or inf from finite input."""
    try:
        with np.errstate(all="ignore"):
            out = f(*args)
    except ValueError as exc:
        assert ": expected " in str(exc) and ", got " in str(exc), str(exc)
        return None
    for o in out if isinstance(out, tuple) else (out,):
        assert np.all(np.isfinite(o)), (args, out)
    return out


FUNCTIONS = {  # name -> (function, number of (2, 3) array arguments)
    "kl_normal": (D.kl_normal, 4), "kl_normal_grad": (D.kl_normal_grad, 4),
    "gaussian_log_prob": (D.gaussian_log_prob, 3), "gaussian_log_prob_grad": (D.gaussian_log_prob_grad, 3),
    "reparameterize": (D.reparameterize, 3), "gaussian_kl": (D.gaussian_kl, 2),
    "gaussian_kl_grad": (D.gaussian_kl_grad, 2), "bernoulli_log_prob_logits": (lambda l: D.bernoulli_log_prob(
        (np.arange(l.size).reshape(l.shape) % 2).astype(l.dtype), l), 1),
    "bernoulli_log_prob_grey": (lambda l: D.bernoulli_log_prob(np.full_like(l, 0.3), l), 1),
    "bernoulli_log_prob_grad": (lambda l: D.bernoulli_log_prob_grad(np.full_like(l, 0.3), l), 1),
    "softmax": (Dir.softmax, 1), "softmax_backward": (lambda t, d: Dir.softmax_backward(Dir.softmax(t), d), 2),
}


@numeric()
@given(data=st.data(), name=st.sampled_from(sorted(FUNCTIONS)), dtype=st.sampled_from([np.float32, np.float64]))
def test_finite_or_raise_over_the_whole_float_range(data, name, dtype):
    f, n = FUNCTIONS[name]
    args = [data.draw(full_arrays(dtype, (2, 3)), label=f"arg{i}") for i in range(n)]
    finite_or_raises(f, *args)


@pytest.mark.parametrize("call,expected", [
    (lambda: D.kl_normal(np.zeros((1, 1)), np.zeros((1, 1)), 0.0, -1e30), ValueError),  # was NaN
    (lambda: D.reparameterize(np.zeros((1, 1)), np.full((1, 1), 1e30), np.zeros((1, 1))), ValueError),  # was NaN
    (lambda: D.gaussian_kl(np.zeros((1, 1), np.float16), np.full((1, 1), 11.1, np.float16)), TypeError),
    (lambda: D.reparameterize(np.zeros((1, 1), np.float16), np.zeros((1, 1), np.float16),
                              np.ones((1, 1), np.float16)), TypeError),
    (lambda: D.kl_normal(np.zeros(2, np.float16), np.zeros(2, np.float16), 0.0, 0.0), TypeError),
    (lambda: D.gaussian_log_prob(np.zeros(2, np.float16), np.zeros(2, np.float16), np.zeros(2, np.float16)), TypeError),
    (lambda: D.bernoulli_log_prob(np.zeros(2, np.float16), np.zeros(2, np.float16)), TypeError),
    (lambda: D.Gaussian(1e200), ValueError),  # sigma_x ** 2 overflowed (an OverflowError traceback in the demo)
    (lambda: D.GaussianLearned(4, sigma_x=1e-300), ValueError),
    (lambda: Dir.dirichlet_laplace_prior(1e-300, 3), ValueError),  # the prior's draws overflowed: NaN samples
    (lambda: Dir.dirichlet_laplace_prior([1.0, 5e-324, 2.0], 3), ValueError),
    (lambda: Dir.softmax(np.zeros(3, np.float16)), TypeError),
])
def test_the_issues_cases_raise(call, expected):
    with pytest.raises(expected, match=": expected "):
        call()


def test_exact_values_where_the_naive_forms_gave_nan():
    # log N(mu; mu, e^-1e30) = -(log 2 pi - 1e30) / 2: finite, where (z - mu)^2 * exp(1e30) was 0 * inf = NaN
    z = np.zeros((1, 1))
    assert D.gaussian_log_prob(z, z, np.full((1, 1), -1e30))[0] == pytest.approx(-0.5 * (D.LOG_2PI - 1e30))
    gz, gmu, glv = D.gaussian_log_prob_grad(z, z, np.full((1, 1), -1e30))
    assert (gz[0, 0], gmu[0, 0], glv[0, 0]) == (0.0, 0.0, -0.5)
    dmu, dlogvar = D.kl_normal_grad(z, np.full((1, 1), -1e30), 0.0, -1e30)  # q = p: both gradients 0
    assert (dmu[0, 0], dlogvar[0, 0]) == (0.0, 0.0)
    assert D.kl_normal(z, np.full((1, 1), -1e30), 0.0, -1e30)[0] == 0.0


@given(alpha=st.floats(min_value=5e-324, allow_infinity=False), K=st.integers(2, 6))
def test_dirichlet_prior_finite_or_raises_for_every_positive_alpha(alpha, K):
    inside = Dir.ALPHA_MIN <= alpha <= Dir.ALPHA_MAX
    try:
        mu0, logvar0 = Dir.dirichlet_laplace_prior(alpha, K)
    except ValueError as exc:
        assert not inside and "alpha: expected a number" in str(exc)
        return
    assert inside and np.all(np.isfinite(mu0)) and np.all(np.abs(logvar0) < 75)


@given(log10_sigma=st.floats(math.log10(D.SIGMA_X_MIN), math.log10(D.SIGMA_X_MAX)),
       x=hnp.arrays(np.float32, (2, 4), elements=st.floats(-1e4, 1e4, width=32)),
       out=hnp.arrays(np.float32, (2, 4), elements=st.floats(-1e4, 1e4, width=32)))
def test_gaussian_likelihoods_finite_over_their_domain(log10_sigma, x, out):
    sigma = min(max(10.0 ** log10_sigma, D.SIGMA_X_MIN), D.SIGMA_X_MAX)
    for lik in (D.Gaussian(sigma), D.GaussianLearned(4, sigma_x=sigma, min_log_sigma=math.log(D.SIGMA_X_MIN))):
        assert np.all(np.isfinite(lik.log_prob(x, out))) and np.all(np.isfinite(lik.log_prob_grad(x, out)))
