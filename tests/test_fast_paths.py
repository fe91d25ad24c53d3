"""Every fast path npvae keeps gives the numbers of the textbook form written beside it.

npvae runs the textbook form of a computation unless a faster form saves at least 5 % of a
benchmark row (benchmarks/bench_tricks.py, benchmarks/README.md "Speed tricks"); the fast
form then sits beside the textbook one behind a flag. Each test here runs both and compares:
float64 to 1e-12 relative, float32 within a few ulp.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae import distributions as D
from npvae.layers import MLP, Linear


def _both(monkeypatch, module, flag, fn):
    """``fn()`` with ``module.flag`` True (the fast form), then False (the textbook form)."""
    monkeypatch.setattr(module, flag, True)
    fast = fn()
    monkeypatch.setattr(module, flag, False)
    slow = fn()
    monkeypatch.undo()
    return fast, slow


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 4 * np.finfo(np.float32).eps)])
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 4), B=st.integers(1, 6), D_=st.integers(1, 40),
       scale=st.sampled_from([0.1, 3.0, 30.0, 1e4]))
def test_binary_bernoulli_log_prob_equals_the_textbook_line(dtype, rtol, seed, k, B, D_, scale):
    rng = np.random.default_rng(seed)
    x = (rng.random((B, D_)) < 0.4).astype(dtype)
    logits = (rng.standard_normal((k, B, D_)) * scale).astype(dtype)
    flag = D.FAST_BINARY_LOG_PROB
    try:
        D.FAST_BINARY_LOG_PROB = True
        fast = D.bernoulli_log_prob(x, logits)
        D.FAST_BINARY_LOG_PROB = False
        slow = D.bernoulli_log_prob(x, logits)
    finally:
        D.FAST_BINARY_LOG_PROB = flag
    assert fast.dtype == slow.dtype == dtype and fast.shape == (k, B)
    # per pixel the two differ by a few ulp of each term; the sum's error is bounded by the sum of |terms|
    terms = np.sum(np.abs(x * logits) + D.softplus(logits), axis=-1)
    assert np.all(np.abs(fast - slow) <= rtol * terms)


def test_grey_levels_take_the_textbook_line(monkeypatch):
    """The fast form is only for x in {0, 1}: for grey levels the result is the textbook line's."""
    rng = np.random.default_rng(0)
    x, logits = rng.random((3, 5)), rng.standard_normal((2, 3, 5))
    fast, slow = _both(monkeypatch, D, "FAST_BINARY_LOG_PROB", lambda: D.bernoulli_log_prob(x, logits))
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_allclose(slow, np.sum(x * logits - np.logaddexp(0, logits), axis=-1), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_skipping_the_input_gradient_leaves_every_parameter_gradient_unchanged(dtype):
    """Linear(skip_input_grad=True) returns None instead of dy @ W.T and writes the same grads."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 9)).astype(dtype)
    nets = [MLP((9, 6, 4), "tanh", rng=np.random.default_rng(2), dtype=dtype, skip_input_grad=skip)
            for skip in (True, False)]
    dy = rng.standard_normal((7, 4)).astype(dtype)
    outs = [net.forward(x) for net in nets]
    np.testing.assert_array_equal(outs[0], outs[1])
    dx_fast, dx_slow = (net.backward(dy) for net in nets)
    assert dx_fast is None and dx_slow.shape == x.shape
    for name in nets[0].grads:
        np.testing.assert_array_equal(nets[0].grads[name], nets[1].grads[name], err_msg=name)
    lin = Linear(9, 6, rng=np.random.default_rng(3), dtype=dtype)  # the textbook line: dL/dx = dy W^T
    lin.forward(x)
    dy6 = rng.standard_normal((7, 6)).astype(dtype)
    np.testing.assert_array_equal(lin.backward(dy6), dy6 @ lin.params["W"].T)


@given(x=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=6),
                    elements=st.floats(-1e4, 1e4, allow_nan=False)))
def test_softplus_is_the_textbook_log_one_plus_exp(x):
    """The one softplus, max(x, 0) + log1p(exp(-|x|)), against log(1 + e^x) where that cannot overflow."""
    small = np.clip(x, -30, 30)
    np.testing.assert_allclose(D.softplus(small), np.log1p(np.exp(small)), rtol=1e-13, atol=0)
    np.testing.assert_allclose(D.softplus(x), np.logaddexp(0, x), rtol=1e-13, atol=0)
