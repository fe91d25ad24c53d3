"""Numerical robustness: finite losses and gradients at the extremes (float32, the training dtype)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae.models import LOGVAR_MAX, LOGVAR_MIN, VAE

X_DIM, Z_DIM, BATCH = 12, 3, 5


def _all_finite(model, terms):
    return (np.isfinite(terms.loss) and np.isfinite(terms.reconstruction).all() and np.isfinite(terms.kl).all()
            and all(np.isfinite(g).all() for g in model.backward().values()))


@given(bias=st.floats(-1e4, 1e4), seed=st.integers(0, 1000),
       x=hnp.arrays(np.float32, (BATCH, X_DIM), elements=st.sampled_from([0.0, 1.0])))
def test_bernoulli_extreme_logits(bias, seed, x):
    """Decoder logits of +-1e4 (a saturated sigmoid) give a finite loss and gradient."""
    model = VAE(X_DIM, Z_DIM, (8,), rng=np.random.default_rng(seed))
    model.params["decoder.2.b"][:] = bias
    terms = model.forward(x, rng=np.random.default_rng(seed))
    assert _all_finite(model, terms)
    if abs(bias) >= 1e3:  # nearly all logits ~ bias: the loss is about |bias| per wrong pixel
        wrong = (x == (0.0 if bias > 0 else 1.0)).sum(axis=1)
        np.testing.assert_allclose(terms.reconstruction, abs(bias) * wrong, rtol=0.05, atol=200)


@given(image=st.sampled_from(["zeros", "ones"]), seed=st.integers(0, 1000),
       likelihood=st.sampled_from(["bernoulli", "gaussian", "gaussian_learned"]))
def test_all_zero_and_all_one_images(image, seed, likelihood):
    x = np.zeros((BATCH, X_DIM), np.float32) if image == "zeros" else np.ones((BATCH, X_DIM), np.float32)
    model = VAE(X_DIM, Z_DIM, (8,), likelihood=likelihood, rng=np.random.default_rng(seed), per_pixel_sigma=True)
    assert _all_finite(model, model.forward(x, rng=np.random.default_rng(seed), n_samples=2))


@given(log10_sigma=st.floats(-4, 4), seed=st.integers(0, 1000),
       likelihood=st.sampled_from(["gaussian", "gaussian_learned"]))
def test_tiny_and_huge_sigma_x(log10_sigma, seed, likelihood):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, X_DIM), dtype=np.float32)
    model = VAE(X_DIM, Z_DIM, (8,), likelihood=likelihood, rng=rng, sigma_x=10.0 ** log10_sigma)
    assert _all_finite(model, model.forward(x, rng=rng))


@given(scale=st.floats(1.0, 1e4), seed=st.integers(0, 1000),
       activation=st.sampled_from(["relu", "tanh", "elu", "softplus", "sigmoid"]))
def test_large_inputs(scale, seed, activation):
    """Inputs of size up to 1e4 (Gaussian likelihood): huge encoder outputs are tamed by the
    logvar clip, so exp(logvar) never overflows and the loss stays finite."""
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((BATCH, X_DIM))).astype(np.float32)
    model = VAE(X_DIM, Z_DIM, (8,), activation, "gaussian", rng=rng)
    terms = model.forward(x, rng=rng)
    assert _all_finite(model, terms)
    _, logvar = model.encode(x)
    assert LOGVAR_MIN <= logvar.min() and logvar.max() <= LOGVAR_MAX


@given(head_bias=st.floats(-1e3, 1e3), seed=st.integers(0, 1000))
def test_extreme_encoder_outputs(head_bias, seed):
    """mu and logvar pushed to +-1e3 by the encoder head: the clip keeps sigma in range."""
    rng = np.random.default_rng(seed)
    model = VAE(X_DIM, Z_DIM, (8,), rng=rng)
    model.params["encoder.2.b"][:] = head_bias
    x = (rng.random((BATCH, X_DIM)) < 0.5).astype(np.float32)
    terms = model.forward(x, rng=rng)
    assert _all_finite(model, terms)
    assert np.isfinite(model.iwae_bound(x, 3, rng=rng)).all()
