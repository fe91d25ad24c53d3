"""The gradient-checking toolkit: rel_error, finite differences, and that the checks can fail."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae import gradcheck as G
from npvae import layers as L

finite64 = st.floats(-10, 10, width=64)


def quadratic(theta_shape, rng):
    """f(t) = 1/2 t.A.t + c.t (A symmetric) and its gradient A t + c, for t of any shape."""
    n = int(np.prod(theta_shape))
    M = rng.standard_normal((n, n))
    A, c = (M + M.T) / 2, rng.standard_normal(n)

    def f_of(theta):
        t = theta.reshape(-1)
        return lambda: 0.5 * t @ A @ t + c @ t

    def grad(theta):
        return (A @ theta.reshape(-1) + c).reshape(theta.shape)

    return f_of, grad


class Counter:
    """Wraps f and counts the calls."""

    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self):
        self.calls += 1
        return self.f()


# ==========================================================================================
# rel_error
# ==========================================================================================

def test_rel_error_identical_is_zero():
    a = np.array([[1.5, -2.0], [0.0, 1e-300]])
    assert G.rel_error(a, a.copy()) == 0.0
    assert G.rel_error(np.zeros(4), np.zeros(4)) == 0.0
    assert type(G.rel_error(a, a)) is float


def test_rel_error_hand_examples():
    # max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|)
    assert G.rel_error(np.array([3.0]), np.array([1.0])) == pytest.approx(0.5)          # 2 / 4
    assert G.rel_error(np.array([1.0]), np.array([-1.0])) == pytest.approx(1.0)         # opposite signs
    a, b = np.array([1.0, -2.0, 4.0]), np.array([1.1, -2.0, 4.0])
    assert G.rel_error(a, b) == pytest.approx(0.1 / 2.1, rel=1e-12)
    # the 1e-8 floor: differences among values far below 1e-8 count relative to 1e-8
    assert G.rel_error(np.array([0.0]), np.array([1e-9])) == pytest.approx(0.1, rel=1e-12)
    assert G.rel_error(np.array([0.0, 1.0]), np.array([1e-12, 1.0])) == pytest.approx(1e-4, rel=1e-9)
    # the largest entry wins, not the mean
    assert G.rel_error(np.array([1.0, 1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 3.0])) == pytest.approx(0.5)
    # scalars and lists are accepted
    assert G.rel_error(1.0, 1.0 + 2e-7) == pytest.approx(1e-7, rel=1e-6)
    assert G.rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert G.rel_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


@pytest.mark.parametrize("shape_a,shape_b", [((2,), (3,)), ((2, 1), (2,)), ((2, 3), (3, 2)), ((), (1,))])
def test_rel_error_shape_mismatch_raises(shape_a, shape_b):
    with pytest.raises(ValueError, match=re.escape(f"b: expected shape {shape_a} (the shape of a), "
                                                   f"got shape {shape_b}")):
        G.rel_error(np.ones(shape_a), np.ones(shape_b))


@given(data=st.data())
def test_rel_error_properties(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=6))
    a = data.draw(hnp.arrays(np.float64, shape, elements=finite64))
    b = data.draw(hnp.arrays(np.float64, shape, elements=finite64))
    e = G.rel_error(a, b)
    assert 0.0 <= e <= 1.0
    assert e == G.rel_error(b, a)
    assert (e == 0.0) == bool(np.all(a == b))
    expected = np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))
    assert e == pytest.approx(expected, rel=1e-12, abs=0)


# ==========================================================================================
# numerical_gradient and directional_derivative
# ==========================================================================================

@pytest.mark.parametrize("shape", [(1,), (6,), (2, 3), (2, 2, 2)])
def test_numerical_gradient_quadratic(shape, rng):
    f_of, grad = quadratic(shape, rng)
    theta = rng.standard_normal(shape)
    num = G.numerical_gradient(f_of(theta), theta)
    assert num.shape == shape and num.dtype == np.float64
    np.testing.assert_allclose(num, grad(theta), rtol=0, atol=1e-8)
    assert G.rel_error(num, grad(theta)) < 1e-7


def test_numerical_gradient_sin(rng):
    theta = rng.uniform(-3, 3, (3, 4))
    f = lambda: float(np.sum(np.sin(theta)))  # noqa: E731
    np.testing.assert_allclose(G.numerical_gradient(f, theta), np.cos(theta), rtol=0, atol=1e-8)
    # fourth order with a larger step: truncation O(h^4), round-off eps/h
    np.testing.assert_allclose(G.numerical_gradient(f, theta, h=1e-3, order=4), np.cos(theta), rtol=0, atol=1e-11)
    # and the second-order stencil at that step really is worse (h^2/6 ~ 1.7e-7): order matters
    err2 = np.max(np.abs(G.numerical_gradient(f, theta, h=1e-3) - np.cos(theta)))
    assert 1e-9 < err2 < 1e-6


@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_numerical_gradient_random_quadratics(data, seed):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    theta = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)))
    before = theta.tobytes()
    f_of, grad = quadratic(shape, np.random.default_rng(seed))
    num = G.numerical_gradient(f_of(theta), theta)
    assert theta.tobytes() == before
    np.testing.assert_allclose(num, grad(theta), rtol=0, atol=1e-7)


def test_numerical_gradient_restores_theta_bitwise(rng):
    theta = np.array([0.1, -0.0, 1 / 3, 1e-300, 5e-324, -7.25, 1e10, np.pi])
    before = theta.tobytes()
    seen = []
    f = lambda: seen.append(theta.copy()) or float(np.sum(theta ** 2))  # noqa: E731
    G.numerical_gradient(f, theta)
    assert theta.tobytes() == before
    # f saw theta perturbed in place, one entry at a time, by +h then -h
    assert len(seen) == 2 * theta.size
    diff = seen[0] - np.frombuffer(before)
    assert np.count_nonzero(diff) == 1 and diff[0] == pytest.approx(1e-6, rel=1e-9)
    G.numerical_gradient(f, theta, order=4)
    assert theta.tobytes() == before


def test_numerical_gradient_restores_theta_when_f_raises():
    theta = np.array([0.1, 0.2, 0.3])
    before = theta.tobytes()
    calls = []

    def f():
        calls.append(1)
        if len(calls) == 4:  # during the second entry
            raise FloatingPointError("boom")
        return float(np.sum(theta))

    with pytest.raises(FloatingPointError):
        G.numerical_gradient(f, theta)
    assert theta.tobytes() == before


def test_numerical_gradient_of_a_non_contiguous_view(rng):
    """theta may be a strided view (W.T): the perturbations must reach the underlying array."""
    W = rng.standard_normal((3, 5))
    A = rng.standard_normal((5, 3))
    theta = W.T
    assert not theta.flags.c_contiguous
    f = lambda: float(np.sum(A * W.T))  # noqa: E731
    before = W.tobytes()
    np.testing.assert_allclose(G.numerical_gradient(f, theta), A, rtol=0, atol=1e-8)
    assert W.tobytes() == before
    strided = np.zeros(12)[::3]
    strided[...] = [1.0, 2.0, 3.0, 4.0]
    g = G.numerical_gradient(lambda: float(np.sum(strided ** 3)), strided)
    np.testing.assert_allclose(g, 3 * strided ** 2, rtol=1e-7)


def test_numerical_gradient_costs_two_calls_per_entry(rng):
    theta = rng.standard_normal((3, 4))
    f = Counter(lambda: float(np.sum(theta ** 2)))
    G.numerical_gradient(f, theta)
    assert f.calls == 2 * 12
    f.calls = 0
    G.numerical_gradient(f, theta, order=4)
    assert f.calls == 4 * 12


@pytest.mark.parametrize("theta,got", [(np.ones(3, dtype=np.float32), "float32"),
                                       (np.ones(3, dtype=np.float16), "float16"),
                                       (np.arange(3), "int64"),
                                       ([1.0, 2.0], "list"),
                                       (1.0, "float")])
def test_numerical_gradient_requires_float64(theta, got):
    with pytest.raises(TypeError, match=f"theta: expected a float64 array .*got {got}"):
        G.numerical_gradient(lambda: 0.0, theta)
    with pytest.raises(TypeError, match=f"theta: expected a float64 array .*got {got}"):
        G.directional_derivative(lambda: 0.0, theta, np.ones(3))


def test_numerical_gradient_bad_h_and_order():
    theta = np.ones(2)
    for h in (0.0, -1e-6):
        with pytest.raises(ValueError, match=r"h: expected a number > 0"):
            G.numerical_gradient(lambda: 0.0, theta, h=h)
    with pytest.raises(ValueError, match="h: expected a finite number"):
        G.numerical_gradient(lambda: 0.0, theta, h=float("nan"))
    with pytest.raises(ValueError, match="order: expected 2 or 4, got 3"):
        G.numerical_gradient(lambda: 0.0, theta, order=3)


def test_directional_derivative_quadratic(rng):
    f_of, grad = quadratic((4, 3), rng)
    theta = rng.standard_normal((4, 3))
    before = theta.tobytes()
    for _ in range(5):
        v = rng.standard_normal((4, 3))
        d = G.directional_derivative(f_of(theta), theta, v)
        assert isinstance(d, float)
        assert d == pytest.approx(float(np.sum(grad(theta) * v)), abs=1e-8)
        assert G.directional_derivative(f_of(theta), theta, v, h=1e-3, order=4) == pytest.approx(
            float(np.sum(grad(theta) * v)), abs=1e-9)
        assert theta.tobytes() == before


def test_directional_derivative_errors_and_restore():
    theta = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match=re.escape("v: expected shape (2,), got shape (3,)")):
        G.directional_derivative(lambda: 0.0, theta, np.ones(3))
    before = theta.tobytes()

    def f():
        raise ArithmeticError("boom")

    with pytest.raises(ArithmeticError):
        G.directional_derivative(f, theta, np.ones(2))
    assert theta.tobytes() == before


# ==========================================================================================
# check_gradient: it passes right gradients and fails wrong ones, in both modes
# ==========================================================================================

@pytest.fixture
def linear_problem(rng):
    """f(T) = sum(A * T) + 1/2 |T|^2 on a square non-symmetric T: gradient A + T.

    |A| in [1, 2] and |T| < 1/2 keep every gradient entry above 1/2 in magnitude, so the
    round-off of the central difference (~1e-9 here) stays far below 1e-7 relative.
    """
    A = rng.choice([-1.0, 1.0], (6, 6)) * rng.uniform(1, 2, (6, 6))
    theta = rng.uniform(-0.5, 0.5, (6, 6))
    f = lambda: float(np.sum(A * theta) + 0.5 * np.sum(theta ** 2))  # noqa: E731
    return f, theta, A + theta


@pytest.mark.parametrize("mode", ["elementwise", "directions"])
def test_check_gradient_passes_the_right_gradient(mode, linear_problem, rng):
    f, theta, g = linear_problem
    before = theta.tobytes()
    n_dir = None if mode == "elementwise" else 7
    r = G.check_gradient(f, theta, g, name="T", n_directions=n_dir, rng=rng)
    assert r.name == "T" and r.mode == mode
    assert r.rel_error < 1e-7 and r.ok() and r.ok(1e-7)
    assert r.analytic.shape == r.numerical.shape == (theta.shape if mode == "elementwise" else (7,))
    assert r.abs_error == pytest.approx(float(np.max(np.abs(r.analytic - r.numerical))), rel=0, abs=0)
    assert r.rel_error == G.rel_error(r.analytic, r.numerical)
    assert theta.tobytes() == before


@pytest.mark.parametrize("mode", ["elementwise", "directions"])
@pytest.mark.parametrize("bug", ["scaled by 1.01", "transposed", "zero", "sign flipped", "one entry off"])
def test_check_gradient_detects_a_wrong_gradient(mode, bug, linear_problem, rng):
    f, theta, g = linear_problem
    wrong = {"scaled by 1.01": 1.01 * g, "transposed": g.T.copy(), "zero": np.zeros_like(g),
             "sign flipped": -g, "one entry off": g + 0.5 * (np.arange(36) == 0).reshape(6, 6)}[bug]
    if mode == "directions" and bug == "one entry off":
        # a random direction sees one wrong entry only through its component on it
        r = G.check_gradient(f, theta, wrong, n_directions=20, rng=rng)
        assert r.rel_error > 1e-3
        return
    r = G.check_gradient(f, theta, wrong, n_directions=None if mode == "elementwise" else 10, rng=rng)
    assert r.rel_error > 1e-3 and not r.ok()
    if bug == "scaled by 1.01":  # |0.01 g| / |2.01 g| for every entry / every direction
        assert r.rel_error == pytest.approx(0.01 / 2.01, rel=1e-4)
    if bug in ("zero", "sign flipped"):
        assert r.rel_error == pytest.approx(1.0, rel=1e-6)


def test_check_gradient_directions_are_unit_vectors(linear_problem, rng):
    f, theta, g = linear_problem
    r = G.check_gradient(f, theta, g, n_directions=200, rng=rng)
    # <g, v> <= |g| for unit v (Cauchy-Schwarz), and random unit v give about |g| / sqrt(n)
    assert np.all(np.abs(r.analytic) <= np.linalg.norm(g) * (1 + 1e-12))
    assert np.sqrt(np.mean(r.analytic ** 2)) == pytest.approx(np.linalg.norm(g) / 6, rel=0.3)


def test_check_gradient_argument_errors(linear_problem):
    f, theta, g = linear_problem
    with pytest.raises(ValueError, match=re.escape("analytic: expected shape (6, 6) (the shape of W), "
                                                   "got shape (36,)")):
        G.check_gradient(f, theta, g.ravel(), name="W")
    with pytest.raises(TypeError, match="W: expected a float64 array"):
        G.check_gradient(f, theta.astype(np.float32), g, name="W")
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        G.check_gradient(f, theta, g, n_directions=3)
    with pytest.raises(ValueError, match="n_directions: expected an integer >= 1, got 0"):
        G.check_gradient(f, theta, g, n_directions=0, rng=np.random.default_rng(0))


def test_grad_check_result_ok_threshold():
    r = G.GradCheckResult("x", "elementwise", 5e-7, 1e-9, np.zeros(1), np.zeros(1))
    assert r.ok() and not r.ok(1e-7) and r.ok(1e-6)
    assert not G.GradCheckResult("x", "elementwise", 1e-6, 0.0, np.zeros(1), np.zeros(1)).ok()  # strict


# ==========================================================================================
# check_params: elementwise for small arrays, directions for large ones
# ==========================================================================================

def _two_params(rng, big_shape=(50, 50)):
    # |A| in [1, 2], |p| < 1/2: every gradient entry A + p^3 is at least 7/8 in magnitude
    params = {"small": rng.uniform(-0.5, 0.5, (3, 4)), "big": rng.uniform(-0.5, 0.5, big_shape)}
    A = {k: rng.choice([-1.0, 1.0], v.shape) * rng.uniform(1, 2, v.shape) for k, v in params.items()}

    def f():
        return float(sum(np.sum(A[k] * p) + 0.25 * np.sum(p ** 4) for k, p in params.items()))

    grads = {k: A[k] + p ** 3 for k, p in params.items()}
    return f, params, grads


def test_check_params_mixed_sizes_modes_and_cost(rng):
    f, params, grads = _two_params(rng)
    counter = Counter(f)
    before = {k: v.tobytes() for k, v in params.items()}
    results = G.check_params(counter, params, grads, n_directions=6, rng=rng)
    assert set(results) == {"small", "big"}
    assert results["small"].mode == "elementwise" and results["small"].analytic.shape == (3, 4)
    assert results["big"].mode == "directions" and results["big"].analytic.shape == (6,)
    assert all(r.rel_error < 1e-7 for r in results.values()), {k: r.rel_error for k, r in results.items()}
    assert counter.calls == 2 * 12 + 2 * 6  # 2 per entry, 2 per direction: never 2 * 2500
    assert {k: v.tobytes() for k, v in params.items()} == before


@pytest.mark.parametrize("size,mode", [(20, "elementwise"), (21, "directions")])
def test_check_params_threshold_is_max_elementwise(size, mode, rng):
    theta = rng.uniform(-1, 1, size)  # cos(theta) > 0.5: no tiny gradient entries
    results = G.check_params(lambda: float(np.sum(np.sin(theta))), {"t": theta}, {"t": np.cos(theta)},
                             max_elementwise=20, n_directions=3, rng=rng)
    assert results["t"].mode == mode and results["t"].rel_error < 1e-7


def test_check_params_default_threshold_2000(rng):
    for size, mode in [(2000, "elementwise"), (2001, "directions")]:
        theta = rng.uniform(-1, 1, size)
        r = G.check_params(lambda: float(np.sum(np.sin(theta))), {"t": theta}, {"t": np.cos(theta)}, rng=rng)["t"]
        assert r.mode == mode and r.rel_error < 1e-6


def test_check_params_detects_wrong_gradients_in_both_modes(rng):
    f, params, grads = _two_params(rng)
    wrong = {k: 1.01 * g for k, g in grads.items()}
    results = G.check_params(f, params, wrong, rng=rng)
    assert results["small"].mode == "elementwise" and results["big"].mode == "directions"
    for r in results.values():
        assert r.rel_error > 1e-3 and not r.ok()


def test_check_params_copies_grads_before_evaluating(rng):
    """f may overwrite the live grads arrays (a forward/backward does); the check uses the originals."""
    f, params, grads = _two_params(rng, big_shape=(5, 5))
    live = {k: g.copy() for k, g in grads.items()}

    def clobbering_f():
        for g in live.values():
            g[...] = 123.0
        return f()

    results = G.check_params(clobbering_f, params, live, rng=rng)
    assert all(r.rel_error < 1e-7 for r in results.values())


def test_check_params_errors(rng):
    f, params, grads = _two_params(rng)
    with pytest.raises(ValueError, match=re.escape("grads: expected the keys of params ['big', 'small'], "
                                                   "got ['small']")):
        G.check_params(f, params, {"small": grads["small"]}, rng=rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        G.check_params(f, params, grads)  # "big" needs random directions, hence an rng
    small_only = {"small": params["small"]}
    assert G.check_params(f, small_only, {"small": grads["small"]})["small"].ok()  # no rng needed


# ==========================================================================================
# check_layer: catches deliberately broken layers, and only where they are broken
# ==========================================================================================

class SigmoidUsesY(L.Sigmoid):
    def _backward(self, dy):
        return dy * self._y  # wrong: should be y (1 - y)


class TanhMissingSquare(L.Tanh):
    def _backward(self, dy):
        return dy * (1 - self._y)  # wrong: should be 1 - y^2


class LinearNoTranspose(L.Linear):
    def _backward(self, dy):
        super()._backward(dy)
        return dy @ self.params["W"]  # wrong: dy W (square layers only), should be dy W^T


class LinearMeanBias(L.Linear):
    def _backward(self, dy):
        dx = super()._backward(dy)
        self.grads["b"] /= dy.shape[0]  # wrong: mean instead of sum over the batch
        return dx


class LinearScaledW(L.Linear):
    def _backward(self, dy):
        dx = super()._backward(dy)
        self.grads["W"] *= 1.01  # wrong by 1%
        return dx


class LinearForgetsW(L.Linear):
    def _backward(self, dy):
        np.sum(dy, axis=0, out=self.grads["b"])
        return dy @ self.params["W"].T  # wrong: grads["W"] never written (stays 0)


def _lin(cls, n_in, n_out, rng):
    layer = cls(n_in, n_out, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.uniform(-0.5, 0.5, n_out)
    return layer


@pytest.mark.parametrize("cls", [SigmoidUsesY, TanhMissingSquare])
def test_check_layer_catches_broken_activation(cls, rng):
    results = G.check_layer(cls(), rng.uniform(-3, 3, (4, 5)), rng=rng)
    assert results["x"].rel_error > 1e-2 and not results["x"].ok()
    # the unbroken parent passes on the same input
    assert G.check_layer(cls.__mro__[1](), rng.uniform(-3, 3, (4, 5)), rng=rng)["x"].rel_error < 1e-6


@pytest.mark.parametrize("cls,bad", [(LinearNoTranspose, {"x"}), (LinearMeanBias, {"b"}),
                                     (LinearScaledW, {"W"}), (LinearForgetsW, {"W"})])
def test_check_layer_catches_broken_linear_and_localizes_it(cls, bad, rng):
    layer = _lin(cls, 5, 5, rng)
    results = G.check_layer(layer, rng.standard_normal((4, 5)), rng=rng)
    assert set(results) == {"x", "W", "b"}
    for name, r in results.items():
        if name in bad:
            assert r.rel_error > 1e-3, (name, r.rel_error)
        else:
            assert r.rel_error < 1e-6, (name, r.rel_error)
    if cls is LinearForgetsW:
        assert results["W"].rel_error == pytest.approx(1.0)


def test_check_layer_catches_broken_large_linear_in_directions_mode(rng):
    layer = _lin(LinearScaledW, 300, 200, rng)
    results = G.check_layer(layer, rng.standard_normal((8, 300)), rng=rng, n_directions=5)
    assert results["W"].mode == "directions" and results["x"].mode == "directions"
    assert results["W"].rel_error > 1e-3
    assert results["x"].rel_error < 1e-6 and results["b"].rel_error < 1e-6


def test_check_layer_catches_a_broken_layer_inside_a_sequential(rng):
    seq = L.Sequential(_lin(L.Linear, 4, 6, rng), SigmoidUsesY(), _lin(L.Linear, 6, 3, rng))
    results = G.check_layer(seq, rng.standard_normal((5, 4)), rng=rng)
    # everything upstream of the broken backward is wrong, everything downstream is right
    for name in ("x", "0.W", "0.b"):
        assert results[name].rel_error > 1e-2, name
    for name in ("2.W", "2.b"):
        assert results[name].rel_error < 1e-6, name


def test_check_layer_leaves_inputs_and_params_intact(rng):
    layer = _lin(L.Linear, 4, 3, rng)
    x = rng.standard_normal((5, 4))
    x_before = x.tobytes()
    p_before = {k: v.tobytes() for k, v in layer.params.items()}
    results = G.check_layer(layer, x, rng=rng)
    assert x.tobytes() == x_before
    assert {k: v.tobytes() for k, v in layer.params.items()} == p_before
    assert set(results) == {"x", "W", "b"} and all(r.ok() for r in results.values())


def test_check_layer_identity_returning_its_input(rng):
    """Identity.forward returns x itself, which check_layer perturbs: still checked correctly."""
    r = G.check_layer(L.Identity(), rng.standard_normal((3, 4)), rng=rng)["x"]
    assert r.rel_error < 1e-9
    assert np.all(r.numerical != 0)


def test_check_layer_skip_input_grad_has_no_x(rng):
    layer = _lin(L.Linear, 4, 3, rng)
    layer.skip_input_grad = True
    results = G.check_layer(layer, rng.standard_normal((2, 4)), rng=rng)
    assert set(results) == {"W", "b"} and all(r.ok() for r in results.values())


def test_check_layer_argument_errors(rng):
    with pytest.raises(TypeError, match="x: expected a float64 array"):
        G.check_layer(L.Tanh(), np.ones((2, 3), dtype=np.float32), rng=rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        G.check_layer(L.Tanh(), np.ones((2, 3)), rng=0)
    with pytest.raises(TypeError, match="x: expected dtype float32, got dtype float64"):
        G.check_layer(L.Linear(3, 2, rng=rng, dtype=np.float32), np.ones((2, 3)), rng=rng)


@pytest.mark.parametrize("case", ["Tanh", "ReLU"])
def test_check_layer_round_off_does_not_grow_with_the_batch(case, rng):
    """check_layer differences f = sum((y - y0) dy), whose unchanged entries are exact zeros.

    The plain f = sum(y dy) carries round-off ~ eps |f| / h into every entry, which grows
    with the batch: on a correct 64x64 layer it reports errors far above 1e-6 (measured
    ~1e-3 for Tanh), while check_layer stays below 1e-6.
    """
    layer = getattr(L, case)()
    x = rng.uniform(-5, 5, (64, 64))
    x = np.where(x < 0, -1, 1) * np.maximum(np.abs(x), 1e-3)
    results = G.check_layer(layer, x, rng=rng, max_elementwise=64 * 64)
    assert results["x"].mode == "elementwise" and results["x"].rel_error < 1e-6

    dy = rng.standard_normal(x.shape)
    y = layer.forward(x)
    dx = layer.backward(dy).copy()
    xp = x.copy()
    naive = G.check_gradient(lambda: float(np.sum(layer.forward(xp) * dy)), xp, dx)
    assert naive.rel_error > 1e-6  # the reason for the y0 baseline
    assert np.all(np.isfinite(y))
