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
    if data is None:  # the case: mu = 0, logvar = 1e-8 gave -5.6e-17
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
