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
from npvae import optim
from npvae.layers import MLP, Linear


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


@pytest.mark.parametrize("kind", ["adam", "adamw"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_adam_equals_algorithm_1_line_by_line(kind, dtype, monkeypatch):
    """Adam.step's fast form (alpha_t, eps_hat, slices of BLOCK elements) against its textbook
    lines: float64 to 1e-12 relative after 50 steps; float32 one step at a time within a few
    ulp of the update. Slices smaller than a parameter, a 0-d and a strided parameter included."""
    monkeypatch.setattr(optim, "BLOCK", 7)
    rng = np.random.default_rng(5)
    base = {"W": rng.standard_normal((6, 5)), "b": rng.standard_normal(5), "s": rng.standard_normal(()),
            "T": rng.standard_normal((4, 3))}
    runs = {}
    for fast in (True, False):
        monkeypatch.setattr(optim, "FAST_ADAM", fast)
        p = {k: v.astype(dtype) for k, v in base.items()}
        p["T"] = np.ascontiguousarray(p["T"]).T  # a strided (transposed) parameter
        opt = optim.Adam(p, lr=1e-2) if kind == "adam" else optim.AdamW(p, lr=1e-2, weight_decay=0.1)
        g_rng, trace = np.random.default_rng(6), []
        for _ in range(50 if dtype == np.float64 else 1):
            before = {k: v.copy() for k, v in p.items()}
            opt.step({k: g_rng.standard_normal(v.shape).astype(dtype) for k, v in p.items()})
            trace.append({k: (p[k].copy(), p[k] - before[k]) for k in p})
        runs[fast] = trace
    for fast_t, slow_t in zip(runs[True], runs[False]):
        for k in base:
            (pf, df), (ps, ds) = fast_t[k], slow_t[k]
            assert pf.dtype == ps.dtype == dtype
            if dtype == np.float64:
                np.testing.assert_allclose(pf, ps, rtol=1e-12, atol=1e-15, err_msg=k)
            else:  # one step: the parameters agree to a few ulp, and the steps to a few ulp of the parameters
                np.testing.assert_array_max_ulp(pf, ps, maxulp=2)
                assert np.all(np.abs(df - ds) <= 2 * np.spacing(np.abs(ps))), k


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@given(seed=st.integers(0, 2**32 - 1), c_in=st.integers(1, 4), c_out=st.integers(1, 4), k=st.integers(1, 4),
       s=st.integers(1, 2), p=st.integers(0, 1), H=st.integers(4, 7), W=st.integers(4, 7))
def test_tap_major_col2im_equals_the_textbook_col2im(dtype, rtol, seed, c_in, c_out, k, s, p, H, W):
    """FAST_COL2IM: Conv2d's dL/dx and ConvTranspose2d's forward and backward, tap-major against row-per-pixel."""
    from npvae import conv

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, H, W)).astype(dtype)
    results = []
    for flag in (True, False):
        old, conv.FAST_COL2IM = conv.FAST_COL2IM, flag
        try:
            down = conv.Conv2d(c_in, c_out, k, s, p, rng=np.random.default_rng(seed), dtype=dtype)
            up = conv.ConvTranspose2d(c_in, c_out, k, s, p, rng=np.random.default_rng(seed), dtype=dtype)
            outs = []
            for layer in (down, up):
                y = layer.forward(x)
                dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
                outs += [y, layer.backward(dy), *(g.copy() for g in layer.grads.values())]
            results.append(outs)
        finally:
            conv.FAST_COL2IM = old
    for fast, slow in zip(*results):
        assert fast.dtype == slow.dtype == dtype and fast.shape == slow.shape
        np.testing.assert_allclose(fast, slow, rtol=0, atol=rtol * max(1.0, float(np.max(np.abs(slow)))))
