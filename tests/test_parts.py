"""Shared model pieces on their own: split_mu_logvar (the logvar clip and its backward) by float64
finite differences, and the FlowStep base class's backward contract for every step kind."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae import gradcheck
from npvae.flows import Flow, FlowStep, IAFStep, PlanarFlow, make_flow
from npvae.distributions import LOGVAR_MAX, LOGVAR_MIN, split_mu_logvar, split_mu_logvar_backward


def _head_fd(h: np.ndarray, rng: np.random.Generator):
    """FD check of split_mu_logvar: L = sum(mu G) + sum(logvar g), gradient w.r.t. h."""
    Z = h.shape[1] // 2
    G, g = rng.standard_normal((h.shape[0], Z)), rng.standard_normal((h.shape[0], Z))
    mu, logvar = split_mu_logvar(h)
    dh = split_mu_logvar_backward(h, G, g)

    mu0, logvar0 = mu.copy(), logvar.copy()

    def f():  # differenced against the unperturbed outputs, so round-off does not grow with the batch
        m, lv = split_mu_logvar(h)
        return float(np.sum((m - mu0) * G) + np.sum((lv - logvar0) * g))

    return gradcheck.check_gradient(f, h, dh, name="h"), dh, (G, g)


def test_split_mu_logvar_fd_inside_and_outside_the_clip(rng):
    # logvar_raw inside (-20, 10), and well outside on both sides (the clip passes no gradient there)
    h = rng.standard_normal((6, 8)) * 3.0
    h[0, 4:] = [-35.0, 25.0, -21.5, 12.0]
    res, dh, (G, g) = _head_fd(h, rng)
    assert res.rel_error < 1e-8, res.rel_error
    assert np.array_equal(dh[:, :4], G)                               # d mu / d h[:Z] = 1
    outside = (h[:, 4:] < LOGVAR_MIN) | (h[:, 4:] > LOGVAR_MAX)
    assert outside.sum() == 4 and np.all(dh[:, 4:][outside] == 0.0)  # flat outside the clip
    assert np.array_equal(dh[:, 4:][~outside], g[~outside])           # identity inside


@given(Z=st.integers(1, 6), B=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_split_mu_logvar_fd_property(Z, B, seed):
    rng = np.random.default_rng(seed)
    h = rng.uniform(-30.0, 20.0, (B, 2 * Z))
    # keep every entry at least 1e-3 from a clip boundary, where the derivative jumps
    for edge in (LOGVAR_MIN, LOGVAR_MAX):
        near = np.abs(h - edge) < 1e-3
        h[near] += 2e-3
    res, _, _ = _head_fd(h, rng)
    assert res.rel_error < 1e-8, res.rel_error


def test_split_mu_logvar_keeps_dtype(rng):
    h = rng.standard_normal((4, 6)).astype(np.float32)
    mu, logvar = split_mu_logvar(h)
    assert mu.dtype == logvar.dtype == np.float32
    assert split_mu_logvar_backward(h, mu, logvar).dtype == np.float32


@pytest.mark.parametrize("make", [
    lambda rng: PlanarFlow(3, rng=rng, dtype=np.float64),
    lambda rng: IAFStep(3, (5,), context_dim=2, rng=rng, dtype=np.float64),
    lambda rng: make_flow("iaf", 3, 2, hidden=(5,), context_dim=2, rng=rng, dtype=np.float64),
])
def test_flowstep_backward_contract(make, rng):
    """FlowStep.backward, which every step inherits: RuntimeError before forward; dz_new and
    dlogdet checked against the last forward's batch; grads overwritten, not accumulated; and
    the gradient it returns is the FD gradient of L = sum(z_new G) + sum(logdet g)."""
    step = make(rng)
    assert isinstance(step, FlowStep)
    with pytest.raises(RuntimeError, match=f"{type(step).__name__}.backward called before forward"):
        step.backward(np.zeros((4, 3)), np.zeros(4))
    z = rng.standard_normal((4, 3))
    ctx = rng.standard_normal((4, 2)) if step.context_dim else None
    out, ld = step.forward(z, ctx)
    G, g = rng.standard_normal(out.shape), rng.standard_normal(ld.shape)
    with pytest.raises(ValueError, match=r"dz_new: expected shape \(4, 3\)"):
        step.backward(G[:3], g)
    with pytest.raises(TypeError, match="dlogdet: expected dtype float64, got dtype float32"):
        step.backward(G, g.astype(np.float32))
    dz, dh = step.backward(G, g)
    first = {k: v.copy() for k, v in step.grads.items()}
    dz2, _ = step.backward(G, g)                                   # same upstream again: same grads
    assert all(np.array_equal(first[k], v) for k, v in step.grads.items())
    assert np.array_equal(dz, dz2)

    def f():
        o, l = step.forward(z, ctx)
        return float(np.sum((o - out) * G) + np.sum((l - ld) * g))

    assert gradcheck.check_gradient(f, z, dz, name="z", h=1e-4, order=4).rel_error < 1e-6
    if ctx is not None:
        assert gradcheck.check_gradient(f, ctx, dh, name="h", h=1e-4, order=4).rel_error < 1e-6
    else:
        assert dh is None
    assert isinstance(step, Flow) or len(step.params) > 0
