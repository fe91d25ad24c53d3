"""Flows: float64 finite-difference checks of planar, IAF and Flow (all params, z, h),
logdet against log|det| of a finite-difference Jacobian, planar invertibility, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae import gradcheck
from npvae.flows import FLOWS, Flow, IAFStep, PlanarFlow, make_flow

TOL = 1e-6
FD_NET = dict(h=1e-4, order=4)  # networks: 4th-order stencil (see tests/test_layers.py)
MAX_REL: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nlargest FD rel_error (float64): " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(MAX_REL.items())))


def _randomize(flow, rng):
    """Random biases and planar parameters; MADE output layers at a usual scale (not 0.01)."""
    for k, p in flow.params.items():
        last = k.split(".")[-1]
        if last == "b":
            p[...] = rng.normal(0.0, 0.5, p.shape)
        elif last in ("u", "w"):
            p[...] = rng.normal(0.0, 0.8, p.shape)
    steps = flow.steps if isinstance(flow, Flow) else [flow]
    for s in steps:
        if isinstance(s, IAFStep):
            s.made.layers[-1].params["W"] *= 30


def _relu_margin(flow):
    steps = flow.steps if isinstance(flow, Flow) else [flow]
    xs = [a._x for s in steps if isinstance(s, IAFStep) for a in s.made.acts if type(a).__name__ == "ReLU"]
    return min((np.abs(x).min() for x in xs), default=np.inf)


def fd_check(name, flow, z, ctx, rng, **fd):
    """Check dz, dh and every param of L = sum(z_new G) + sum(logdet g) by central differences."""
    out, ld = flow.forward(z, ctx)
    G, g = rng.standard_normal(out.shape), rng.standard_normal(ld.shape)
    dz, dh = flow.backward(G, g)
    assert (dh is None) == (ctx is None)
    grads = {k: v.copy() for k, v in flow.grads.items()}
    out0, ld0 = out.copy(), ld.copy()

    def f():
        o, l = flow.forward(z, ctx)
        return float(np.sum((o - out0) * G) + np.sum((l - ld0) * g))

    res = {"z": gradcheck.check_gradient(f, z, dz, name="z", **fd)}
    if ctx is not None:
        res["h"] = gradcheck.check_gradient(f, ctx, dh, name="h", **fd)
    res.update(gradcheck.check_params(f, flow.params, grads, **fd))
    for r in res.values():
        assert r.rel_error < TOL, (name, r.name, r.rel_error)
        MAX_REL[name] = max(MAX_REL.get(name, 0.0), r.rel_error)
    return res


def _build(kind, length, C, activation, seed, Z=4):
    """A float64 flow with random parameters, z and h; for ReLU, a seed with every unit >= 1e-2 from its kink."""
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        if kind == "planar":
            flow = PlanarFlow(Z, rng=rng, dtype=np.float64) if length == 0 else make_flow(
                "planar", Z, length, rng=rng, dtype=np.float64)
        elif length == 0:
            flow = IAFStep(Z, (9, 8), context_dim=C, order=rng.permutation(Z) + 1, activation=activation, rng=rng,
                           dtype=np.float64)
        else:
            flow = make_flow("iaf", Z, length, hidden=(9,), context_dim=C, activation=activation, rng=rng,
                             dtype=np.float64)
        _randomize(flow, rng)
        z = rng.standard_normal((5, Z))
        ctx = rng.standard_normal((5, C)) if C else None
        flow.forward(z, ctx)
        if _relu_margin(flow) > 1e-2:
            return flow, z, ctx, rng
    raise AssertionError("no seed with all ReLU pre-activations away from the kink")


@pytest.mark.parametrize("kind, length, C, activation", [
    ("planar", 0, 0, None), ("planar", 3, 0, None),
    ("iaf", 0, 0, "tanh"), ("iaf", 0, 3, "tanh"), ("iaf", 0, 3, "relu"),
    ("iaf", 3, 0, "relu"), ("iaf", 3, 2, "tanh"),
])
def test_fd(kind, length, C, activation):
    flow, z, ctx, rng = _build(kind, length, C, activation or "relu", seed=0)
    name = f"{type(flow).__name__}[{kind},{'ctx' if C else 'no ctx'},{activation or '-'}]"
    res = fd_check(name, flow, z, ctx, rng, **FD_NET)
    assert set(res) == {"z", *(["h"] if C else []), *flow.params}


def test_fd_planar_near_singular(rng):
    # wᵀu = -4‖w‖²: wᵀû = -1 + softplus(wᵀu) ~ -1 + 1e-5, so 1 + ûᵀψ is small near wᵀz + b = 0
    flow = PlanarFlow(3, rng=rng, dtype=np.float64)
    w = rng.standard_normal(3)
    flow.params["w"][...], flow.params["u"][...], flow.params["b"][...] = w, -4 * w, 0.3
    fd_check("PlanarFlow[near singular]", flow, 0.3 * rng.standard_normal((5, 3)), None, rng, **FD_NET)


@pytest.mark.parametrize("kind, length, C", [("planar", 0, 0), ("planar", 3, 0), ("iaf", 0, 0),
                                             ("iaf", 3, 2)])
def test_logdet_matches_numerical_jacobian(kind, length, C):
    flow, z, ctx, _ = _build(kind, length, C, "tanh", seed=1, Z=3)
    out, logdet = flow.forward(z, ctx)
    J = np.zeros((z.shape[0], 3, 3))
    for j in range(3):  # examples are independent: perturb column j of the whole batch at once
        e = np.zeros_like(z)
        e[:, j] = 1e-5
        J[:, :, j] = (flow.forward(z + e, ctx)[0] - flow.forward(z - e, ctx)[0]) / 2e-5
    sign, num = np.linalg.slogdet(J)
    assert np.all(sign > 0)
    err = np.max(np.abs(num - logdet))
    MAX_REL["logdet vs slogdet (abs) " + kind] = max(MAX_REL.get("logdet vs slogdet (abs) " + kind, 0.0), err)
    assert err < 1e-8


finite = st.floats(-5, 5, allow_nan=False)


@given(u=st.lists(finite, min_size=3, max_size=3), w=st.lists(finite, min_size=3, max_size=3),
       c=st.floats(0, 1e3))
def test_planar_constraint(u, w, c):
    w = np.array(w)
    if w @ w < 1e-6:
        w = w + 1.0
    flow = PlanarFlow(3, rng=np.random.default_rng(0), dtype=np.float64)
    for uu in (np.array(u), -c * w):  # drawn u, and the adversarial u = -c w (wᵀu very negative)
        flow.params["u"][...], flow.params["w"][...] = uu, w
        uh, alpha, ww = flow.u_hat()
        assert w @ uh >= -1 - 1e-12 * (1 + abs(alpha))  # exactly m(wᵀu) > -1, up to rounding of wᵀû
        z = np.random.default_rng(1).standard_normal((4, 3)) * 3
        assert np.all(np.isfinite(flow.forward(z)[1]))


@given(u=st.floats(-20, 20), w=st.floats(0.05, 5) | st.floats(-5, -0.05), b=st.floats(-3, 3))
def test_planar_monotone_in_1d(u, w, b):
    flow = PlanarFlow(1, rng=np.random.default_rng(0), dtype=np.float64)
    flow.params["u"][0], flow.params["w"][0], flow.params["b"][0] = u, w, b
    z = np.linspace(-10, 10, 2001)[:, None]
    fz, logdet = flow.forward(z)
    assert np.all(np.diff(fz[:, 0]) > 0)             # strictly increasing, hence invertible
    assert np.all(np.isfinite(logdet))


@pytest.mark.parametrize("kind, C", [("planar", 0), ("iaf", 0), ("iaf", 2)])
def test_float32_preserved(kind, C, rng):
    flow = make_flow(kind, 3, 2, context_dim=C, rng=rng)
    z = rng.standard_normal((4, 3)).astype(np.float32)
    ctx = rng.standard_normal((4, C)).astype(np.float32) if C else None
    out, ld = flow.forward(z, ctx)
    dz, dh = flow.backward(out, ld)
    assert {out.dtype, ld.dtype, dz.dtype, *(g.dtype for g in flow.grads.values())} == {np.dtype(np.float32)}
    assert dh is None if not C else dh.dtype == np.float32


def test_flow_structure_and_grads_overwritten(rng):
    flow = make_flow("iaf", 3, 3, hidden=(6,), rng=rng, dtype=np.float64)
    assert [s.order.tolist() for s in flow.steps] == [[1, 2, 3], [3, 2, 1], [1, 2, 3]]
    assert "1.made.0.W" in flow.params and set(flow.params) == set(flow.grads)
    z = rng.standard_normal((2, 3))
    out, ld = flow.forward(z)
    flow.backward(np.ones_like(out), np.ones_like(ld))
    first = {k: g.copy() for k, g in flow.grads.items()}
    flow.backward(np.ones_like(out), np.ones_like(ld))
    assert all(np.array_equal(first[k], g) for k, g in flow.grads.items())
    assert FLOWS == ("planar", "iaf") and set(make_flow("planar", 2, 2, rng=rng).params) == {
        "0.u", "0.w", "0.b", "1.u", "1.w", "1.b"}


def test_errors(rng):
    with pytest.raises(ValueError, match="flow: expected one of 'planar', 'iaf', got 'radial'"):
        make_flow("radial", 2, 1, rng=rng)
    with pytest.raises(ValueError, match="length: expected an integer >= 1"):
        make_flow("iaf", 2, 0, rng=rng)
    with pytest.raises(ValueError, match="context_dim: planar flows take no context"):
        make_flow("planar", 2, 1, context_dim=3, rng=rng)
    for step in (PlanarFlow(2, rng=rng), IAFStep(2, context_dim=1, rng=rng), make_flow("iaf", 2, 2, rng=rng)):
        with pytest.raises(RuntimeError, match="before forward"):
            step.backward(np.zeros((1, 2), np.float32), np.zeros(1, np.float32))
    iaf, z = IAFStep(2, context_dim=1, rng=rng), np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="h: expected a context of shape"):
        iaf.forward(z)
    with pytest.raises(ValueError, match="h: PlanarFlow takes no context"):
        PlanarFlow(2, rng=rng).forward(z, np.zeros((3, 1), np.float32))
    with pytest.raises(TypeError, match="z: expected dtype float32, got dtype float64"):
        iaf.forward(z.astype(np.float64), np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match=r"z: expected shape \(\*, 2\)"):
        PlanarFlow(2, rng=rng).forward(np.zeros((3, 3), np.float32))
    out, ld = iaf.forward(z, np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match=r"dlogdet: expected shape \(3,\)"):
        iaf.backward(out, ld[:2])
    planar = PlanarFlow(2, rng=rng)
    planar.params["w"][...] = 0
    with pytest.raises(ValueError, match="w: expected a nonzero vector"):
        planar.forward(z)
    with pytest.raises(ValueError, match="steps: expected at least one"):
        Flow([])
    with pytest.raises(ValueError, match="steps\\[1\\]: expected z_dim 2, got 3"):
        Flow([PlanarFlow(2, rng=rng), PlanarFlow(3, rng=rng)])
