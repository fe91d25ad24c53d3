"""Layers: finite-difference gradient checks, algebraic properties, analytic values, API and errors.

Every finite-difference check runs in float64 through ``gradcheck.check_layer`` and
requires the cs231n ``rel_error`` of every checked array (the input ``x`` and each
parameter) to be below 1e-6. The largest error seen per layer class is collected in
``MAX_REL_ERROR`` and printed as a table when the module finishes (visible with ``-s``,
and in the terminal summary otherwise).

Conditioning notes (measured, see the project report):

* Inputs of ReLU / LeakyReLU / ELU are pushed to ``|x| >= 1e-3`` and networks are only
  checked where every kinked unit's pre-activation is at least 1e-3 from 0, so a step
  ``h = 1e-6`` can never cross a kink.
* The elementwise relative error of a central difference is its round-off
  ``~ eps * |y| / h`` divided by the gradient entry. Entries that are tiny by
  cancellation (``dy @ W.T`` summing to ~1e-4), through a saturated unit or through a
  0.01 LeakyReLU slope push a *correct* network towards 1e-6 at ``h = 1e-6`` (measured:
  9.4e-7 for a 5-8-6-3 LeakyReLU MLP here, and a few percent of *random* MLPs fail).
  Hence:

  - single layers (activations, Linear) on fixed examples: the default second-order
    central difference with ``h = 1e-6``;
  - networks (Sequential, MLP): the fourth-order stencil with ``h = 1e-4`` (``FD_NET``,
    as in ``test_vae.py``), whose O(h^4) truncation error is negligible and whose
    round-off is 100 times smaller; still every kink at least 1e-3 away;
  - generated shapes (hypothesis) for single layers: activations at ``h = 1e-6``, and
    Linear, which is affine in ``x``, ``W`` and ``b`` separately (so a central difference
    has *no* truncation error at any step), with a unit step leaving only ~1e-16 relative
    round-off. Networks are not checked by finite differences over random shapes: with
    the per-entry 1e-6 criterion that would be flaky without any bug.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae import gradcheck
from npvae import init as npinit
from npvae import layers as L

TOL = 1e-6
FD_NET = dict(h=1e-4, order=4)  # finite differences for whole networks (see the module docstring)
KINKED = (L.ReLU, L.LeakyReLU, L.ELU)
INITS = sorted(npinit.INITIALIZERS)
ACTIVATION_NAMES = sorted(L.ACTIVATIONS)

# ------------------------------------------------------------------------------------------
# Recording of the largest finite-difference error per layer class
# ------------------------------------------------------------------------------------------

# class name -> {"max": largest rel_error, "checks": arrays checked, "worst": case label}
MAX_REL_ERROR: dict[str, dict] = {}
EXPECTED_CLASSES = {"Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softplus", "ELU", "Identity",
                    "Sequential", "MLP"}


def _record(layer: L.Layer, label: str, results: dict) -> None:
    entry = MAX_REL_ERROR.setdefault(type(layer).__name__, {"max": 0.0, "checks": 0, "worst": ""})
    for name, r in results.items():
        entry["checks"] += 1
        if r.rel_error >= entry["max"]:
            entry["max"], entry["worst"] = r.rel_error, f"{label} [{name}, {r.mode}]"


def _format_table() -> str:
    rows = [f"{'layer':<11} {'max rel_error':>13} {'checks':>7}  worst case"]
    for name in sorted(MAX_REL_ERROR):
        e = MAX_REL_ERROR[name]
        rows.append(f"{name:<11} {e['max']:>13.3e} {e['checks']:>7}  {e['worst']}")
    width = max(map(len, rows))
    title = "Finite-difference check (float64): largest rel_error per layer class"
    return "\n".join(["", title, "-" * width, *rows, "-" * width])


@pytest.fixture(scope="module", autouse=True)
def _print_fd_error_table(request):
    """After the module's tests, print the table past pytest's output capture."""
    yield
    if not MAX_REL_ERROR:
        return
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if capman is None:
        print(_format_table())
    else:
        with capman.global_and_fixture_disabled():
            print(_format_table())


def assert_fd_ok(layer: L.Layer, x: np.ndarray, rng: np.random.Generator, label: str, **kw) -> dict:
    """check_layer, record the errors, and require every checked array below TOL."""
    results = gradcheck.check_layer(layer, x, rng=rng, **kw)
    label = f"{label}; h={kw.get('h', 1e-6):g}" + (f", order {kw['order']}" if "order" in kw else "")
    expected = set(layer.params) | ({"x"} if not getattr(layer, "skip_input_grad", False) else set())
    assert set(results) == expected, "check_layer must check x and every parameter"
    _record(layer, label, results)
    bad = {k: r.rel_error for k, r in results.items() if not r.rel_error < TOL}
    assert not bad, f"{label}: rel_error >= {TOL}: {bad}"
    return results


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------

def push_from_zero(x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Same signs (0 counts as +), magnitudes at least eps: keeps inputs off a kink at 0."""
    sign = np.where(x < 0, -1, 1).astype(x.dtype)
    return sign * np.maximum(np.abs(x), x.dtype.type(eps))


def kink_margin(layer: L.Layer, x: np.ndarray) -> float:
    """Smallest |input| to any ReLU/LeakyReLU/ELU in the forward pass of ``layer`` on ``x``."""
    if not isinstance(layer, L.Sequential):
        return float(np.min(np.abs(x))) if isinstance(layer, KINKED) else np.inf
    margin = np.inf
    for sub in layer.layers:
        margin = min(margin, kink_margin(sub, x))
        x = sub.forward(x)
    return margin


def randomize_biases(model: L.Layer, rng: np.random.Generator, scale: float = 0.5) -> None:
    """Nonzero biases (in place, keeping the live arrays): zero biases hide bias bugs and put
    every pre-activation of a zero input exactly on the ReLU kink."""
    for name, p in model.params.items():
        if name.split(".")[-1] == "b":
            p[...] = rng.uniform(-scale, scale, p.shape)


def make_activation(case: str) -> L.Layer:
    name, _, arg = case.partition("(")
    cls = getattr(L, name)
    return cls(float(arg.rstrip(")"))) if arg else cls()


ACTIVATION_CASES = ["ReLU", "LeakyReLU(0.01)", "LeakyReLU(0.3)", "Tanh", "Sigmoid", "Softplus",
                    "ELU(1.0)", "ELU(0.5)", "Identity"]


def assert_close(actual, desired, *, rtol, scale=None, err_msg=""):
    """|actual - desired| <= rtol * scale elementwise; scale defaults to max |desired|."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape
    if scale is None:
        scale = np.max(np.abs(desired), initial=0.0)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * max(float(np.max(scale)), 1e-30),
                               err_msg=err_msg)


RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-11}

# ------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------

dtypes = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])
seeds = st.integers(0, 2**32 - 1)


def float_arrays(dtype, shape, lo=-5.0, hi=5.0):
    dtype = np.dtype(dtype)
    width = 32 if dtype == np.float32 else 64
    return hnp.arrays(dtype, shape, elements=st.floats(lo, hi, width=width))


@st.composite
def batches(draw, dtype=np.float64, features=None, max_batch=16, max_features=32, away_from_zero=False):
    n = draw(st.integers(1, max_batch))
    d = features if features is not None else draw(st.integers(1, max_features))
    x = draw(float_arrays(dtype, (n, d)))
    return push_from_zero(x) if away_from_zero else x


LAYER_KINDS = ["Linear", *ACTIVATION_CASES, "Sequential", "MLP"]


def build(kind: str, in_features: int, rng: np.random.Generator, dtype, out_features: int = 5) -> L.Layer:
    """A layer of the given kind taking ``in_features`` inputs, with nonzero biases."""
    if kind == "Linear":
        layer = L.Linear(in_features, out_features, rng=rng, dtype=dtype)
    elif kind == "Sequential":
        layer = L.Sequential(L.Linear(in_features, 6, rng=rng, dtype=dtype), L.Tanh(),
                             L.Linear(6, out_features, rng=rng, dtype=dtype), L.Softplus(), L.Identity())
    elif kind == "MLP":
        layer = L.MLP((in_features, 7, out_features), "elu", rng=rng, dtype=dtype, output_activation="sigmoid")
    else:
        layer = make_activation(kind)
    randomize_biases(layer, rng)
    return layer


def param_arrays(layer: L.Layer) -> dict:
    return {k: v.copy() for k, v in layer.grads.items()}


# ==========================================================================================
# Finite differences on fixed examples (default h = 1e-6)
# ==========================================================================================

@pytest.mark.parametrize("init_name", INITS)
def test_fd_linear_each_init(init_name, rng):
    layer = L.Linear(7, 5, rng=rng, dtype=np.float64, init=init_name)
    randomize_biases(layer, rng)
    x = 2.0 * rng.standard_normal((6, 7))
    assert_fd_ok(layer, x, rng, f"Linear(7,5,{init_name}) batch 6")


@pytest.mark.parametrize("case", ACTIVATION_CASES)
def test_fd_activation(case, rng):
    layer = make_activation(case)
    x = rng.uniform(-5, 5, (8, 12))
    if isinstance(layer, KINKED):
        x = push_from_zero(x)
    assert_fd_ok(layer, x, rng, f"{case} (8,12) U(-5,5)")


@pytest.mark.parametrize("case", ACTIVATION_CASES)
def test_fd_activation_special_points(case, rng):
    """Just beside the kink (|x| = 1e-3 > h), at 0 for the smooth ones, and in saturation."""
    layer = make_activation(case)
    pts = [-5.0, -2.0, -1e-3, 1e-3, 0.5, 2.0, 5.0] + ([] if isinstance(layer, KINKED) else [0.0])
    x = np.array([pts, [-p for p in pts]])
    assert_fd_ok(layer, x, rng, f"{case} special points")


def test_fd_linear_random_directions_large(rng):
    """A 300x200 Linear: W (60000 entries) and x (8x300) in random-direction mode, b elementwise."""
    layer = L.Linear(300, 200, rng=rng, dtype=np.float64, init="he_normal")
    randomize_biases(layer, rng)
    x = rng.standard_normal((8, 300))
    results = assert_fd_ok(layer, x, rng, "Linear(300,200) batch 8, 10 directions", n_directions=10)
    assert {k: r.mode for k, r in results.items()} == {"x": "directions", "W": "directions", "b": "elementwise"}
    assert results["W"].analytic.shape == (10,)  # one directional derivative per direction


def _mixed_sequential(rng):
    return L.Sequential(
        L.Linear(6, 9, rng=rng, dtype=np.float64, init="glorot_normal"), L.Tanh(),
        L.Linear(9, 8, rng=rng, dtype=np.float64, init="he_normal"), L.ReLU(),
        L.Linear(8, 7, rng=rng, dtype=np.float64, init="he_uniform"), L.LeakyReLU(0.1),
        L.Linear(7, 6, rng=rng, dtype=np.float64), L.ELU(0.7),
        L.Linear(6, 5, rng=rng, dtype=np.float64), L.Softplus(),
        L.Linear(5, 4, rng=rng, dtype=np.float64), L.Sigmoid(), L.Identity(),
    )


def test_fd_sequential_mixed(rng):
    seq = _mixed_sequential(rng)
    randomize_biases(seq, rng)
    x = rng.standard_normal((5, 6))
    assert kink_margin(seq, x) > 1e-3, "precondition: no kinked unit within 1e-3 of 0"
    results = assert_fd_ok(seq, x, rng, "Linear/Tanh/ReLU/LeakyReLU/ELU/Softplus/Sigmoid/Identity, batch 5",
                           **FD_NET)
    assert len(results) == 1 + 2 * 6


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("sizes,batch", [((5, 8, 6, 3), 4), ((10, 16, 4), 7)])
def test_fd_mlp_each_activation(activation, sizes, batch, rng):
    mlp = L.MLP(sizes, activation, rng=rng, dtype=np.float64)
    randomize_biases(mlp, rng)
    x = rng.standard_normal((batch, sizes[0]))
    assert kink_margin(mlp, x) > 1e-3, "precondition: no kinked unit within 1e-3 of 0"
    assert_fd_ok(mlp, x, rng, f"MLP{sizes} {activation} batch {batch}", **FD_NET)


def test_fd_mlp_output_activation(rng):
    mlp = L.MLP((4, 6, 3), "softplus", rng=rng, dtype=np.float64, output_activation="sigmoid")
    randomize_biases(mlp, rng)
    assert isinstance(mlp.layers[-1], L.Sigmoid)
    x = rng.standard_normal((5, 4))
    assert_fd_ok(mlp, x, rng, "MLP(4,6,3) softplus + sigmoid output", **FD_NET)


def test_fd_linear_skip_input_grad(rng):
    layer = L.Linear(4, 3, rng=rng, dtype=np.float64)
    layer.skip_input_grad = True
    results = assert_fd_ok(layer, rng.standard_normal((5, 4)), rng, "Linear(4,3) skip_input_grad")
    assert set(results) == {"W", "b"}


# ==========================================================================================
# Finite differences over generated shapes (hypothesis)
# ==========================================================================================

@pytest.mark.parametrize("case", ACTIVATION_CASES)
@given(data=st.data(), seed=seeds)
def test_fd_activation_generated(case, data, seed):
    layer = make_activation(case)
    x = data.draw(batches(np.float64, away_from_zero=isinstance(layer, KINKED)), label="x")
    assert_fd_ok(layer, x, np.random.default_rng(seed), f"{case} generated {x.shape}")


@given(data=st.data(), seed=seeds, init_name=st.sampled_from(INITS))
def test_fd_linear_generated(data, seed, init_name):
    """Linear over generated shapes and inputs, with a unit step (exact for an affine map)."""
    rng = np.random.default_rng(seed)
    x = data.draw(batches(np.float64), label="x")
    out_features = data.draw(st.integers(1, 32), label="out_features")
    layer = L.Linear(x.shape[1], out_features, rng=rng, dtype=np.float64, init=init_name)
    randomize_biases(layer, rng)
    assert_fd_ok(layer, x, rng, f"Linear({x.shape[1]},{out_features},{init_name}) batch {x.shape[0]}", h=1.0)


# ==========================================================================================
# Algebraic properties (hypothesis, float32 and float64)
# ==========================================================================================

@st.composite
def layer_and_input(draw, kind, dtype=None):
    dtype = draw(dtypes) if dtype is None else np.dtype(dtype)
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    x = draw(batches(dtype, away_from_zero=kind in ("ReLU", "LeakyReLU(0.01)", "LeakyReLU(0.3)",
                                                      "ELU(1.0)", "ELU(0.5)")), label="x")
    out_features = draw(st.integers(1, 32), label="out_features")
    layer = build(kind, x.shape[1], rng, dtype, out_features)
    return layer, x


@pytest.mark.parametrize("kind", LAYER_KINDS)
@given(data=st.data())
def test_backward_is_linear_in_dy(kind, data):
    layer, x = data.draw(layer_and_input(kind))
    dt = x.dtype
    y = layer.forward(x)
    dy1 = data.draw(float_arrays(dt, y.shape), label="dy1")
    dy2 = data.draw(float_arrays(dt, y.shape), label="dy2")
    a = data.draw(st.floats(-3, 3), label="a")
    b = data.draw(st.floats(-3, 3), label="b")
    dx1, g1 = layer.backward(dy1).copy(), param_arrays(layer)
    dx2, g2 = layer.backward(dy2).copy(), param_arrays(layer)
    dy = (a * dy1 + b * dy2).astype(dt)
    dx = layer.backward(dy)
    g = param_arrays(layer)
    rtol = RTOL[dt]
    scale = max(abs(a) * np.max(np.abs(dx1)), abs(b) * np.max(np.abs(dx2)))
    assert_close(dx, a * dx1.astype(np.float64) + b * dx2, rtol=rtol, scale=scale, err_msg="dx")
    assert set(g) == set(layer.params)
    for k in g:
        scale = max(abs(a) * np.max(np.abs(g1[k])), abs(b) * np.max(np.abs(g2[k])))
        assert_close(g[k], a * g1[k].astype(np.float64) + b * g2[k], rtol=rtol, scale=scale, err_msg=k)


@pytest.mark.parametrize("kind", ["Linear", "MLP"])
@given(data=st.data())
def test_batch_gradient_is_sum_of_per_example_gradients(kind, data):
    dtype = data.draw(dtypes, label="dtype")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    x = data.draw(batches(dtype), label="x")
    if kind == "Linear":
        layer = L.Linear(x.shape[1], data.draw(st.integers(1, 32), label="out"), rng=rng, dtype=dtype)
    else:
        hidden = data.draw(st.integers(1, 32), label="hidden")
        act = data.draw(st.sampled_from(ACTIVATION_NAMES), label="activation")
        layer = L.MLP((x.shape[1], hidden, 3), act, rng=rng, dtype=dtype)
    randomize_biases(layer, rng)
    # a unit within rounding of its kink could switch sides between the batched and the
    # single-row matmul; away from the kink both must give the same gradient
    assume(kink_margin(layer, x) > 1e-3)
    y = layer.forward(x)
    dy = data.draw(float_arrays(dtype, y.shape), label="dy")
    layer.backward(dy)
    batch_grads = param_arrays(layer)
    total = {k: np.zeros(v.shape) for k, v in batch_grads.items()}
    abs_total = {k: np.zeros(v.shape) for k, v in batch_grads.items()}
    for n in range(x.shape[0]):
        layer.forward(x[n:n + 1])
        layer.backward(dy[n:n + 1])
        for k, g in layer.grads.items():
            total[k] += g
            abs_total[k] += np.abs(g)
    for k in batch_grads:
        assert_close(batch_grads[k], total[k], rtol=RTOL[np.dtype(dtype)] * 10, scale=abs_total[k], err_msg=k)


@pytest.mark.parametrize("kind", LAYER_KINDS)
@given(data=st.data())
def test_dtype_is_preserved(kind, data):
    layer, x = data.draw(layer_and_input(kind))
    y = layer.forward(x)
    assert y.dtype == x.dtype
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == x.dtype
    for k in layer.params:
        assert layer.params[k].dtype == x.dtype, k
        assert layer.grads[k].dtype == x.dtype, k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_dtype_and_mlp_dtype_attribute(dtype, rng):
    lin = L.Linear(3, 2, rng=rng, dtype=dtype)
    mlp = L.MLP((3, 4, 2), rng=rng, dtype=dtype)
    assert lin.dtype == np.dtype(dtype) and mlp.dtype == np.dtype(dtype)
    for arr in [*lin.params.values(), *lin.grads.values(), *mlp.params.values(), *mlp.grads.values()]:
        assert arr.dtype == np.dtype(dtype)


@given(data=st.data(), n_layers=st.integers(1, 4), seed=seeds)
def test_sequential_backward_equals_composed_backwards(data, n_layers, seed):
    dtype = data.draw(dtypes, label="dtype")
    x = data.draw(batches(dtype, away_from_zero=True), label="x")
    widths = [x.shape[1]] + data.draw(st.lists(st.integers(1, 12), min_size=n_layers, max_size=n_layers))
    acts = data.draw(st.lists(st.sampled_from(ACTIVATION_CASES), min_size=n_layers, max_size=n_layers))

    def make():  # the same layers (same seed) twice: once inside a Sequential, once loose
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n_layers):
            out += [L.Linear(widths[i], widths[i + 1], rng=rng, dtype=dtype), make_activation(acts[i])]
        for layer in out:
            randomize_biases(layer, rng)
        return out

    seq, loose = L.Sequential(*make()), make()
    y = seq.forward(x)
    h = x
    for layer in loose:
        h = layer.forward(h)
    np.testing.assert_array_equal(y, h)
    dy = data.draw(float_arrays(dtype, y.shape), label="dy")
    dx = seq.backward(dy)
    g = dy
    for layer in reversed(loose):  # the chain rule by hand, last layer first
        g = layer.backward(g)
    np.testing.assert_array_equal(dx, g)
    for i, layer in enumerate(loose):
        for k, v in layer.grads.items():
            np.testing.assert_array_equal(seq.grads[f"{i}.{k}"], v, err_msg=f"{i}.{k}")


# ==========================================================================================
# Errors (hypothesis over shapes; messages name argument, expected and received shape)
# ==========================================================================================

@given(in_features=st.integers(1, 32), wrong=st.integers(1, 32), n=st.integers(1, 16), dtype=dtypes)
def test_linear_wrong_feature_size_raises(in_features, wrong, n, dtype):
    assume(wrong != in_features)
    layer = L.Linear(in_features, 3, rng=np.random.default_rng(0), dtype=dtype)
    msg = re.escape(f"x: expected shape (*, {in_features}), got shape ({n}, {wrong})")
    with pytest.raises(ValueError, match=msg):
        layer.forward(np.zeros((n, wrong), dtype=dtype))


@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5), dtype=dtypes)
def test_linear_wrong_rank_raises(shape, dtype):
    assume(len(shape) != 2)
    layer = L.Linear(shape[-1] if shape else 3, 2, rng=np.random.default_rng(0), dtype=dtype)
    with pytest.raises(ValueError, match=re.escape(f"x: expected shape (*, {layer.in_features}), got shape {shape}")):
        layer.forward(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("kind", LAYER_KINDS)
@given(data=st.data())
def test_dy_of_another_shape_raises(kind, data):
    layer, x = data.draw(layer_and_input(kind))
    y = layer.forward(x)
    bad = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=33), label="dy shape")
    assume(bad != y.shape)
    msg = re.escape(f"dy: expected shape {y.shape} (the last output's), got shape {bad}")
    with pytest.raises(ValueError, match=msg):
        layer.backward(np.zeros(bad, dtype=x.dtype))


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("bad", [np.arange(12).reshape(3, 4), np.ones((3, 4), dtype=np.int32),
                                 np.ones((3, 4), dtype=bool), np.ones((3, 4), dtype=object),
                                 np.ones((3, 4), dtype=np.complex128)], ids=["int64", "int32", "bool", "object",
                                                                               "complex"])
def test_non_float_input_raises_type_error(kind, bad, rng):
    layer = build(kind, 4, rng, np.float64)
    with pytest.raises(TypeError, match=re.escape(f"x: expected a floating-point array (float32 or float64), "
                                                  f"got dtype {bad.dtype}")):
        layer.forward(bad)
    y_shape = layer.forward(np.ones((3, 4))).shape
    with pytest.raises(TypeError, match="dy: expected a floating-point array"):
        layer.backward(np.ones(y_shape, dtype=bad.dtype))


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_non_array_input_raises_type_error(kind, rng):
    layer = build(kind, 2, rng, np.float64)
    with pytest.raises(TypeError, match="x: expected a numpy.ndarray, got list"):
        layer.forward([[1.0, 2.0]])


@pytest.mark.parametrize("kind", ["Linear", "Sequential", "MLP"])
@pytest.mark.parametrize("dtype,other", [(np.float32, np.float64), (np.float64, np.float32)])
def test_layer_rejects_the_other_float_dtype(kind, dtype, other, rng):
    layer = build(kind, 4, rng, dtype)
    with pytest.raises(TypeError, match=f"x: expected dtype {np.dtype(dtype)}, got dtype {np.dtype(other)}"):
        layer.forward(np.ones((2, 4), dtype=other))


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_backward_before_forward_raises(kind, rng):
    layer = build(kind, 4, rng, np.float64)
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=f"{name}.backward called before forward: call forward"):
        layer.backward(np.ones((2, 5)))


# ==========================================================================================
# Analytic values
# ==========================================================================================

def _no_fp_trouble():
    """Overflow, invalid and divide raise; warnings (RuntimeWarning) are errors. Underflow to 0
    (exp(-1e4) inside logaddexp) is the correctly rounded result, so it is allowed."""
    return np.errstate(over="raise", invalid="raise", divide="raise", under="ignore")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_analytic_values_forward_and_backward(dtype):
    x = np.array([[-1e4, -2.0, -0.0, 0.0, 1.0, 1e4]], dtype=dtype)
    e = np.e
    expected = {
        L.ReLU(): ([0, 0, 0, 0, 1, 1e4], [0, 0, 0, 0, 1, 1]),  # derivative at 0 taken as 0
        L.LeakyReLU(0.1): ([-1e3, -0.2, 0, 0, 1, 1e4], [0.1, 0.1, 0.1, 0.1, 1, 1]),
        L.Tanh(): ([-1, np.tanh(-2.0), 0, 0, np.tanh(1.0), 1],
                   [0, 1 - np.tanh(2.0) ** 2, 1, 1, 1 - np.tanh(1.0) ** 2, 0]),
        L.Sigmoid(): ([0, 1 / (1 + e ** 2), 0.5, 0.5, 1 / (1 + 1 / e), 1],
                      [0, e ** 2 / (1 + e ** 2) ** 2, 0.25, 0.25, (1 / e) / (1 + 1 / e) ** 2, 0]),
        L.Softplus(): ([0, np.log1p(e ** -2), np.log(2), np.log(2), np.log1p(e), 1e4],
                       [0, 1 / (1 + e ** 2), 0.5, 0.5, 1 / (1 + 1 / e), 1]),
        L.ELU(2.0): ([-2, 2 * (e ** -2 - 1), 0, 0, 1, 1e4], [0, 2 * e ** -2, 2, 2, 1, 1]),
        L.Identity(): ([-1e4, -2, 0, 0, 1, 1e4], [1, 1, 1, 1, 1, 1]),
    }
    rtol = 1e-5 if dtype == np.float32 else 1e-14  # float32: 1 - y^2 near |y| = 1 loses digits
    for layer, (y_exp, d_exp) in expected.items():
        with _no_fp_trouble(), warnings.catch_warnings():
            warnings.simplefilter("error")
            y = layer.forward(x)
            dx = layer.backward(np.full_like(x, 3.0))
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), layer
        np.testing.assert_allclose(y[0], y_exp, rtol=rtol, atol=0, err_msg=repr(layer))
        np.testing.assert_allclose(dx[0], 3.0 * np.array(d_exp), rtol=rtol, atol=0, err_msg=repr(layer))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_extremes_no_overflow(dtype):
    x = np.array([[-1e4, -800.0, -30.0, 30.0, 88.0, 100.0, 800.0, 1e4]], dtype=dtype)
    layer = L.Softplus()
    with _no_fp_trouble(), warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(x))
    assert y.dtype == dtype and np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0, -1] == dtype(1e4) and y[0, -2] == dtype(800.0)  # exactly x, no overflow to inf
    assert y[0, 0] == 0.0 and y[0, 1] == 0.0                      # exactly 0, no log(0) or nan
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    # log(1 + e^-30) = e^-30 (1 - e^-30/2 ...): relative accuracy kept for the tiny value
    np.testing.assert_allclose(y[0, 2], np.exp(-30.0), rtol=rtol)
    np.testing.assert_allclose(y[0, 3:6], x[0, 3:6], rtol=rtol)  # x + log1p(e^-x), e^-x negligible
    np.testing.assert_array_equal(dx[0, [0, 1, -2, -1]], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(dx[0, 2], np.exp(-30.0), rtol=rtol)  # sigmoid(-30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_tanh_elu_extremes_no_overflow(dtype):
    x = np.array([[-1e4, -100.0, 100.0, 1e4]], dtype=dtype)
    for layer in (L.Sigmoid(), L.Tanh(), L.ELU()):
        with _no_fp_trouble(), warnings.catch_warnings():
            warnings.simplefilter("error")
            y = layer.forward(x)
            dx = layer.backward(np.ones_like(x))
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), layer
        assert np.all(dx >= 0), layer
    np.testing.assert_array_equal(L.Sigmoid().forward(x)[0, [0, 3]], [0.0, 1.0])
    np.testing.assert_array_equal(L.Tanh().forward(x)[0], [-1, -1, 1, 1])
    np.testing.assert_array_equal(L.ELU(1.5).forward(x)[0, [0, 2, 3]], [-1.5, 100, 1e4])


def test_activations_any_shape(rng):
    """Elementwise layers accept any shape and keep it (the docstrings say so)."""
    x = rng.standard_normal((2, 3, 4))
    for case in ACTIVATION_CASES:
        layer = make_activation(case)
        y = layer.forward(x)
        assert y.shape == x.shape
        assert layer.backward(np.ones_like(y)).shape == x.shape


def test_linear_forward_and_backward_by_hand():
    layer = L.Linear(2, 3, rng=np.random.default_rng(0), dtype=np.float64)
    layer.params["W"][...] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    layer.params["b"][...] = [0.5, -1.0, 2.0]
    x = np.array([[1.0, -1.0], [2.0, 0.5]])
    np.testing.assert_array_equal(layer.forward(x), [[-2.5, -4.0, -1.0], [4.5, 5.5, 11.0]])
    dy = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx, [[-2.0, -2.0], [4.0, 13.0]])             # dy W^T
    np.testing.assert_array_equal(layer.grads["W"], [[5.0, 2.0, -1.0], [0.0, 0.5, 1.0]])  # x^T dy
    np.testing.assert_array_equal(layer.grads["b"], [3.0, 1.0, -1.0])          # sum over batch


# ==========================================================================================
# Live arrays, overwriting, params naming, skip_input_grad
# ==========================================================================================

@pytest.mark.parametrize("kind", ["Linear", "Sequential", "MLP"])
def test_grads_are_overwritten_not_accumulated(kind, rng):
    layer = build(kind, 4, rng, np.float64)
    x = rng.standard_normal((3, 4))
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    layer.backward(dy)
    first = param_arrays(layer)
    assert any(np.any(v != 0) for v in first.values())
    layer.backward(dy)
    for k, v in first.items():
        np.testing.assert_array_equal(layer.grads[k], v, err_msg=f"{k}: accumulated")
    layer.backward(2 * dy)  # 2x, not 3x (scaling by 2 is exact in floating point)
    for k, v in first.items():
        np.testing.assert_array_equal(layer.grads[k], 2 * v, err_msg=k)
    layer.backward(np.zeros_like(dy))
    for k in first:
        assert not np.any(layer.grads[k]), k


@pytest.mark.parametrize("kind", ["Linear", "Sequential", "MLP"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_and_grads_are_live_arrays(kind, dtype, rng):
    layer = build(kind, 4, rng, dtype)
    params_before = dict(layer.params)
    grads_before = dict(layer.grads)
    assert set(layer.params) == set(layer.grads)
    for k in layer.params:
        assert layer.params[k].shape == layer.grads[k].shape
    for _ in range(2):
        y = layer.forward(rng.standard_normal((3, 4)).astype(dtype))
        layer.backward(rng.standard_normal(y.shape).astype(dtype))
        for k in layer.grads:
            assert layer.grads[k] is grads_before[k], k
            assert layer.params[k] is params_before[k], k
    # an in-place update of params is what the next forward uses
    x = np.ones((1, 4), dtype=dtype)
    y0 = layer.forward(x).copy()
    for p in layer.params.values():
        p *= 0
    y1 = layer.forward(x)
    assert not np.array_equal(y0, y1)


def test_sequential_and_mlp_param_names_and_identity(rng):
    mlp = L.MLP((5, 4, 3, 2), "tanh", rng=rng, dtype=np.float64)
    assert [type(layer).__name__ for layer in mlp] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert list(mlp.params) == ["0.W", "0.b", "2.W", "2.b", "4.W", "4.b"]
    assert list(mlp.grads) == list(mlp.params)
    for key in mlp.params:
        i, name = key.split(".")
        assert mlp.params[key] is mlp[int(i)].params[name]
        assert mlp.grads[key] is mlp[int(i)].grads[name]
    assert mlp.params["2.W"].shape == (4, 3) and mlp.params["4.b"].shape == (2,)
    seq = L.Sequential(L.ReLU(), L.Linear(3, 2, rng=rng), L.Tanh(), L.Linear(2, 2, rng=rng))
    assert list(seq.params) == ["1.W", "1.b", "3.W", "3.b"]
    assert seq.params["3.W"] is seq.layers[3].params["W"]
    assert len(seq) == 4 and list(seq) == seq.layers


def test_sequential_rejects_non_layers(rng):
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a npvae Layer, got function"):
        L.Sequential(L.ReLU(), lambda x: x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_skip_input_grad_returns_none_but_fills_grads(dtype, rng):
    a = L.Linear(4, 3, rng=np.random.default_rng(7), dtype=dtype)
    b = L.Linear(4, 3, rng=np.random.default_rng(7), dtype=dtype)
    b.skip_input_grad = True
    x = rng.standard_normal((5, 4)).astype(dtype)
    dy = rng.standard_normal((5, 3)).astype(dtype)
    a.forward(x)
    b.forward(x)
    assert a.backward(dy) is not None
    assert b.backward(dy) is None
    for k in a.grads:
        np.testing.assert_array_equal(b.grads[k], a.grads[k])
        assert np.any(b.grads[k] != 0)


def test_mlp_first_layer_skip_input_grad(rng):
    mlp = L.MLP((4, 5, 2), rng=rng, dtype=np.float64)
    randomize_biases(mlp, rng)
    x = rng.standard_normal((3, 4))
    mlp.forward(x)
    dy = rng.standard_normal((3, 2))
    mlp.backward(dy)
    full = param_arrays(mlp)
    mlp[0].skip_input_grad = True
    assert mlp.backward(dy) is None
    for k in full:
        np.testing.assert_array_equal(mlp.grads[k], full[k])


# ==========================================================================================
# Constructor validation
# ==========================================================================================

@pytest.mark.parametrize("sizes", [(), (5,), [3]])
def test_mlp_too_few_sizes(sizes, rng):
    with pytest.raises(ValueError, match=r"sizes: expected at least 2 layer sizes"):
        L.MLP(sizes, rng=rng)


@pytest.mark.parametrize("sizes,bad", [((4, 0, 2), 1), ((-1, 3), 0), ((3, 4, -2), 2)])
def test_mlp_non_positive_sizes(sizes, bad, rng):
    with pytest.raises(ValueError, match=rf"sizes\[{bad}\]: expected an integer >= 1, got {sizes[bad]}"):
        L.MLP(sizes, rng=rng)


def test_mlp_unknown_activation(rng):
    with pytest.raises(ValueError, match=r"activation: expected one of .*'relu'.*, got 'swish'"):
        L.MLP((3, 2), "swish", rng=rng)
    with pytest.raises(ValueError, match=r"^output_activation: expected one of .*, got 'softmax'"):
        L.MLP((3, 2), rng=rng, output_activation="softmax")


def test_mlp_other_bad_arguments(rng):
    with pytest.raises(TypeError, match=r"sizes\[1\]: expected an integer, got float"):
        L.MLP((3, 2.5), rng=rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        L.MLP((3, 2), rng=0)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        L.MLP((3, 2), rng=rng, dtype=np.int64)
    with pytest.raises(ValueError, match="init: expected one of"):
        L.MLP((3, 2), rng=rng, init="orthogonal")


def test_linear_bad_arguments(rng):
    with pytest.raises(ValueError, match="in_features: expected an integer >= 1, got 0"):
        L.Linear(0, 3, rng=rng)
    with pytest.raises(ValueError, match="out_features: expected an integer >= 1, got -2"):
        L.Linear(3, -2, rng=rng)
    with pytest.raises(TypeError, match="in_features: expected an integer, got bool"):
        L.Linear(True, 3, rng=rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator .*got RandomState"):
        L.Linear(3, 2, rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got float16"):
        L.Linear(3, 2, rng=rng, dtype=np.float16)
    with pytest.raises(ValueError, match="init: expected one of .*, got 'nope'"):
        L.Linear(3, 2, rng=rng, init="nope")


def test_activation_bad_arguments():
    with pytest.raises(ValueError, match="negative_slope: expected a finite number, got nan"):
        L.LeakyReLU(float("nan"))
    with pytest.raises(TypeError, match="alpha: expected a real number, got str"):
        L.ELU("1")
    with pytest.raises(ValueError, match="activation: expected one of"):
        L.get_activation("gelu")
    for name, cls in L.ACTIVATIONS.items():
        assert type(L.get_activation(name)) is cls
        assert L.get_activation(name) is not L.get_activation(name)  # a new layer each time


# ==========================================================================================
# The summary: runs last in this module
# ==========================================================================================

def test_zz_max_rel_error_summary(request):
    """Every layer class was finite-difference checked and stayed below 1e-6 (prints the table)."""
    fd_tests = [item for item in request.session.items
                if item.module is request.module and item.name.startswith("test_fd_")]
    if not fd_tests:
        pytest.skip("no finite-difference test of this module was selected")
    all_selected = ({item.originalname for item in fd_tests}
                    == {n for n in dir(request.module) if n.startswith("test_fd_")}
                    and not request.config.getoption("keyword") and not request.config.getoption("markexpr"))
    if all_selected:
        assert set(MAX_REL_ERROR) == EXPECTED_CLASSES
    for name, entry in MAX_REL_ERROR.items():
        assert entry["checks"] > 0 and entry["max"] < TOL, (name, entry)


def test_backward_rejects_dy_of_another_dtype():
    """A float64 dy into a float32 layer would silently upcast dx; it is refused instead."""
    layer = L.Linear(3, 2, rng=np.random.default_rng(0))
    y = layer.forward(np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="dy: expected dtype float32, got dtype float64"):
        layer.backward(y.astype(np.float64))
    relu = L.ReLU()
    relu.forward(np.ones((2, 2), np.float64))
    with pytest.raises(TypeError, match="dy: expected dtype float64, got dtype float32"):
        relu.backward(np.ones((2, 2), np.float32))


def test_mlp_can_skip_its_input_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    grads = {}
    for skip in (False, True):
        mlp = L.MLP((4, 5, 2), "tanh", rng=np.random.default_rng(1), dtype=np.float64, skip_input_grad=skip)
        y = mlp.forward(x)
        dx = mlp.backward(np.ones_like(y))
        assert (dx is None) == skip
        grads[skip] = mlp.grads["0.W"].copy()
    np.testing.assert_array_equal(grads[True], grads[False])  # the parameter gradients are the same either way
    with pytest.raises(TypeError, match="skip_input_grad: expected True or False, got str 'yes'"):
        L.MLP((4, 2), rng=rng, skip_input_grad="yes")
