"""MADE: mask rule, autoregressive Jacobian (exact zeros, and not trivially empty),
float64 finite-difference checks of MaskedLinear and MADE (all params, z, h), errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae import gradcheck
from npvae.made import MADE, MaskedLinear, made_degrees, made_masks

TOL = 1e-6
FD_NET = dict(h=1e-4, order=4)  # whole networks: 4th-order stencil (see tests/test_layers.py)
MAX_REL: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nlargest FD rel_error (float64): " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(MAX_REL.items())))


def _record(name, results):
    for r in results.values():
        assert r.rel_error < TOL, (name, r.name, r.rel_error)
        MAX_REL[name] = max(MAX_REL.get(name, 0.0), r.rel_error)


def test_masks_small_example():
    # D=3, one hidden layer of 4: hidden degrees cycle 1,2,1,2
    assert [d.tolist() for d in made_degrees(3, [4])] == [[1, 2, 3], [1, 2, 1, 2]]
    M0, M1 = made_masks(3, [4], 2)
    assert M0.astype(int).tolist() == [[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]]  # hidden: deg_out >= deg_in
    assert M1.astype(int).tolist() == [[0, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 1]] * 2  # output: order > deg_in
    assert made_degrees(3, [5], min_degree=0)[1].tolist() == [0, 1, 2, 0, 1]


def _fill(model, rng, scale_last=30.0):
    """Random biases (no pre-activation sits exactly at a ReLU kink) and a last layer of usual size."""
    last = str(len(model.layers) - 1)
    for k, p in model.params.items():
        if k.endswith(".b"):
            p[...] = rng.normal(0.0, 0.5, p.shape)
        elif k == f"{last}.W":
            p *= scale_last


def _jacobians(made, z, h=None):
    """J[n, i, j] = d out_i / d z_j for out = [m, s], from backward with one-hot upstreams."""
    B, D = z.shape
    J = np.zeros((B, 2 * D, D))
    for i in range(2 * D):
        made.forward(z, h)
        g = np.zeros((B, 2 * D))
        g[:, i] = 1.0
        J[:, i, :] = made.backward(g[:, :D], g[:, D:])[0]
    return J


@given(D=st.integers(1, 6), hidden=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       context=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_autoregressive_property(D, hidden, context, seed, data):
    order = np.array(data.draw(st.permutations(range(1, D + 1))))
    rng = np.random.default_rng(seed)
    C = 2 if context else 0
    made = MADE(D, hidden, context_dim=C, activation="tanh", order=order, rng=rng, dtype=np.float64)
    _fill(made, rng)
    z = rng.standard_normal((3, D))
    h = rng.standard_normal((3, C)) if C else None
    J = _jacobians(made, z, h)
    o_out = np.tile(order, 2)
    forbidden = order[None, :] >= o_out[:, None]          # (2D, D): order[j] >= order[i]
    assert np.all(J[:, forbidden] == 0.0)
    # the same from the forward alone: moving z_j leaves every output with order <= order[j] bit for bit
    m0, s0 = (a.copy() for a in made.forward(z, h))
    for j in range(D):
        z2 = z.copy()
        z2[:, j] += 3.0
        m1, s1 = made.forward(z2, h)
        same = order <= order[j]
        assert np.array_equal(m1[:, same], m0[:, same]) and np.array_equal(s1[:, same], s0[:, same])
    # not trivially empty: every output after the first in the order depends on some earlier input
    # (with a context, unit 0 of each layer has degree 0 and sees no z: it takes a width >= 2)
    if min(hidden) >= 1 + bool(C):
        assert np.all(np.any(J[:, o_out > 1, :] != 0, axis=2))
    if min(hidden) >= D:  # every degree present in every layer: the support is exactly order[j] < order[i]
        assert np.all(J[:, ~forbidden] != 0)


def test_context_reaches_every_output(rng):
    made = MADE(4, (8,), context_dim=3, activation="tanh", order=[2, 4, 1, 3], rng=rng, dtype=np.float64)
    _fill(made, rng)
    z, h = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    for i in range(8):
        made.forward(z, h)
        g = np.zeros((2, 8))
        g[:, i] = 1.0
        dh = made.backward(g[:, :4], g[:, 4:])[1]
        assert np.all(np.any(dh != 0, axis=1)), i  # including the output of order 1


@pytest.mark.parametrize("shape", [(5, 4), (1, 1), (7, 3)])
def test_masked_linear_fd(rng, shape):
    mask = rng.random(shape) < 0.5
    layer = MaskedLinear(*shape, mask, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(shape[1])
    x = rng.standard_normal((6, shape[0]))
    _record("MaskedLinear", gradcheck.check_layer(layer, x, rng=rng))
    assert np.all(layer.grads["W"][~mask] == 0) and np.all(layer.params["W"][~mask] == 0)


def _check_made(made, z, ctx, r, **fd):
    m, s = made.forward(z, ctx)
    dm, ds = r.standard_normal(m.shape), r.standard_normal(s.shape)
    dz, dh = made.backward(dm, ds)
    grads = {k: g.copy() for k, g in made.grads.items()}
    m0, s0 = m.copy(), s.copy()

    def f():
        m1, s1 = made.forward(z, ctx)
        return float(np.sum((m1 - m0) * dm) + np.sum((s1 - s0) * ds))

    res = {"z": gradcheck.check_gradient(f, z, dz, name="z", **fd)}
    if ctx is not None:
        res["h"] = gradcheck.check_gradient(f, ctx, dh, name="h", **fd)
    res.update(gradcheck.check_params(f, made.params, grads, **fd))
    return res


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("C", [0, 3])
def test_made_fd(activation, C):
    for seed in range(100):  # ReLU: a seed whose pre-activations are all >= 1e-2 from the kink
        rng = np.random.default_rng(seed)
        made = MADE(4, (7, 6), context_dim=C, activation=activation, order=[3, 1, 4, 2], rng=rng,
                    dtype=np.float64)
        _fill(made, rng)
        z, h = rng.standard_normal((5, 4)), (rng.standard_normal((5, C)) if C else None)
        made.forward(z, h)
        if activation == "tanh" or min(np.abs(a._x).min() for a in made.acts) > 1e-2:
            break
    res = _check_made(made, z, h, rng, **FD_NET)
    assert set(res) == {"z", *(["h"] if C else []), *made.params}
    _record(f"MADE[{activation}]", res)


def test_made_float32_and_errors(rng):
    made = MADE(3, (6,), context_dim=2, rng=rng)
    z, h = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    with pytest.raises(RuntimeError, match="before forward"):
        made.backward(z, z)
    m, s = made.forward(z, h)
    dz, dh = made.backward(m, s)
    assert {m.dtype, s.dtype, dz.dtype, dh.dtype} == {np.dtype(np.float32)}
    with pytest.raises(ValueError, match="h: expected a context"):
        made.forward(z)
    with pytest.raises(TypeError, match="z: expected dtype float32"):
        made.forward(z.astype(np.float64), h)
    with pytest.raises(ValueError, match="ds: expected shape"):
        made.backward(m, s[:, :2])
    with pytest.raises(ValueError, match="h: this MADE has no context"):
        MADE(3, (6,), rng=rng).forward(z, h)
    with pytest.raises(ValueError, match=r"order: expected a permutation of 1..3"):
        MADE(3, (6,), order=[1, 1, 2], rng=rng)
    with pytest.raises(ValueError, match="hidden: expected at least one"):
        MADE(3, (), rng=rng)
    with pytest.raises(ValueError, match="mask: expected shape"):
        MaskedLinear(3, 2, np.ones((2, 3)), rng=rng)
