r"""Gradient checking by central finite differences, in float64.

Use it to check a hand-written backward, your own layers included::

    import numpy as np
    from npvae import gradcheck
    from npvae.layers import Linear

    rng = np.random.default_rng(0)
    layer = Linear(5, 3, rng=rng, dtype=np.float64)
    x = rng.standard_normal((4, 5))
    results = gradcheck.check_layer(layer, x, rng=rng)
    for name, r in results.items():
        print(name, r.rel_error)          # each well below 1e-6

Two ways of comparing an analytic gradient ``g`` of a scalar ``f(theta)`` with the
numbers:

* **elementwise** (small arrays): every entry
  :math:`\hat g_i = (f(\theta + h e_i) - f(\theta - h e_i)) / 2h`, compared with ``g``
  by :func:`rel_error`. Costs ``2 * theta.size`` evaluations of ``f``.
* **random directions** (large arrays, after HIPS autograd's ``check_grads``): for a
  random unit vector ``v`` compare :math:`\langle g, v\rangle` with
  :math:`(f(\theta + h v) - f(\theta - h v)) / 2h`. Costs 2 evaluations per direction,
  whatever the size of ``theta``.

The central difference has truncation error :math:`O(h^2)` and round-off error
:math:`O(\epsilon_{mach} |f| / h)`; with float64 and the default ``h = 1e-6`` round-off
is about 1e-10 and truncation about 1e-13 for functions of order one. In float32
round-off alone would be ~1e-1, so every function here refuses arrays that are not
float64.

Every check returns :class:`GradCheckResult` objects carrying the measured errors, not
only a pass/fail flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ._checks import check_float, check_int, check_rng
from .layers import Layer

__all__ = [
    "rel_error",
    "GradCheckResult",
    "numerical_gradient",
    "directional_derivative",
    "check_gradient",
    "check_params",
    "check_layer",
]


def rel_error(a, b) -> float:
    r"""Largest elementwise relative error, :math:`\max_i |a_i-b_i| / \max(10^{-8}, |a_i|+|b_i|)`.

    The cs231n measure: about 1e-7 or less means a correct float64 gradient; 1e-2 or more
    means a bug. ``a`` and ``b`` are arrays (or scalars) of the same shape; returns a
    Python float. Raises ValueError if the shapes differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"b: expected shape {a.shape} (the shape of a), got shape {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


@dataclass
class GradCheckResult:
    """What one gradient check measured.

    Attributes
    ----------
    name : str
        Which array was checked (a parameter name, or ``"x"`` for a layer's input).
    mode : str
        ``"elementwise"`` or ``"directions"``.
    rel_error : float
        :func:`rel_error` between the analytic and numerical values compared.
    abs_error : float
        Largest absolute difference between them.
    analytic, numerical : np.ndarray
        The compared values: full gradients (elementwise) or one directional derivative
        per random direction (directions).
    """

    name: str
    mode: str
    rel_error: float
    abs_error: float
    analytic: np.ndarray = field(repr=False)
    numerical: np.ndarray = field(repr=False)

    def ok(self, tol: float = 1e-6) -> bool:
        """True if ``rel_error < tol``."""
        return self.rel_error < tol


def _require_float64(theta: np.ndarray, name: str) -> None:
    if not isinstance(theta, np.ndarray) or theta.dtype != np.float64:
        got = theta.dtype if isinstance(theta, np.ndarray) else type(theta).__name__
        raise TypeError(f"{name}: expected a float64 array (finite differences are meaningless in float32), got {got}")


def _stencil(order: int, h: float):
    """Pairs (o, w) of a central difference: f'(t) ~ sum over pairs of w * (f(t + o) - f(t - o)).

    Differencing symmetric pairs first makes the estimate exactly 0 when f does not
    depend on the entry (a dead ReLU unit), as the analytic gradient is.
    """
    if order == 2:   # (f(t+h) - f(t-h)) / 2h, error O(h^2)
        return ((h, 1 / (2 * h)),)
    if order == 4:   # (8 (f(t+h) - f(t-h)) - (f(t+2h) - f(t-2h))) / 12h, error O(h^4)
        return ((h, 8 / (12 * h)), (2 * h, -1 / (12 * h)))
    raise ValueError(f"order: expected 2 or 4, got {order!r}")


def numerical_gradient(f: Callable[[], float], theta: np.ndarray, *, h: float = 1e-6, order: int = 2) -> np.ndarray:
    r"""Central-difference gradient of ``f`` with respect to every entry of ``theta``.

    ``theta`` (float64, any shape) is perturbed **in place** one entry at a time and
    restored exactly afterwards; ``f`` takes no arguments and must read ``theta``, e.g. a
    closure over a layer's parameter array. Returns a float64 array of ``theta.shape``
    with :math:`(f(\theta + h e_i) - f(\theta - h e_i)) / 2h` (``order=2``), or the
    fourth-order central stencil
    :math:`(-f(\theta+2he_i) + 8f(\theta+he_i) - 8f(\theta-he_i) + f(\theta-2he_i)) / 12h`
    (``order=4``), whose truncation error :math:`O(h^4)` allows a larger ``h`` (say 1e-3)
    and so a round-off error about 1000 times smaller: use it when gradient entries are
    tiny compared with ``f`` itself.

    Raises TypeError if ``theta`` is not float64 and ValueError if ``h <= 0`` or
    ``order`` is not 2 or 4.
    """
    _require_float64(theta, "theta")
    h = check_float(h, "h", minimum=0.0, strict_min=True)
    pairs = _stencil(order, h)
    grad = np.zeros(theta.shape, dtype=np.float64)
    # index theta itself: theta.reshape(-1) is a *copy* for a non-contiguous theta (e.g. W.T),
    # so the perturbations would never reach f and the gradient would come out as zeros
    for i in np.ndindex(theta.shape):
        old = theta[i]
        total = 0.0
        try:
            for o, w in pairs:
                theta[i] = old + o
                f_plus = float(f())
                theta[i] = old - o
                f_minus = float(f())
                total += w * (f_plus - f_minus)
        finally:  # restored even if f raises, as directional_derivative does
            theta[i] = old
        grad[i] = total
    return grad


def directional_derivative(f: Callable[[], float], theta: np.ndarray, v: np.ndarray, *, h: float = 1e-6,
                           order: int = 2) -> float:
    r"""Central-difference estimate of :math:`\langle \nabla f(\theta), v \rangle`.

    Perturbs ``theta`` (float64) in place to ``theta + o v`` for the stencil's offsets
    ``o`` (``±h`` for ``order=2``; ``±h, ±2h`` for ``order=4``, see
    :func:`numerical_gradient`), evaluates ``f()``, and restores it. ``v`` has
    ``theta``'s shape. Returns a float. Raises TypeError for a non-float64 ``theta`` and
    ValueError for a shape mismatch, ``h <= 0`` or a bad ``order``.
    """
    _require_float64(theta, "theta")
    h = check_float(h, "h", minimum=0.0, strict_min=True)
    if v.shape != theta.shape:
        raise ValueError(f"v: expected shape {theta.shape}, got shape {v.shape}")
    pairs = _stencil(order, h)
    old = theta.copy()
    total = 0.0
    try:
        for o, w in pairs:
            np.add(old, o * v, out=theta)
            f_plus = float(f())
            np.subtract(old, o * v, out=theta)
            f_minus = float(f())
            total += w * (f_plus - f_minus)
    finally:
        theta[...] = old
    return total


def check_gradient(f: Callable[[], float], theta: np.ndarray, analytic: np.ndarray, *, name: str = "theta",
                   h: float = 1e-6, order: int = 2, n_directions: int | None = None,
                   rng: np.random.Generator | None = None) -> GradCheckResult:
    """Compare an analytic gradient of ``f`` at ``theta`` with finite differences.

    Parameters
    ----------
    f : callable () -> float
        The scalar function; reads ``theta`` (which is perturbed in place and restored).
    theta : np.ndarray, float64
    analytic : np.ndarray
        The gradient to check, same shape as ``theta``, computed *before* the call.
    n_directions : int, optional
        If given, compare along that many random unit directions (``rng`` required);
        otherwise compare every entry.

    Returns a :class:`GradCheckResult`. Raises TypeError for non-float64 ``theta`` and
    ValueError for a shape mismatch.
    """
    _require_float64(theta, name)
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != theta.shape:
        raise ValueError(f"analytic: expected shape {theta.shape} (the shape of {name}), got shape {analytic.shape}")
    if n_directions is None:
        num = numerical_gradient(f, theta, h=h, order=order)
        return GradCheckResult(name, "elementwise", rel_error(analytic, num),
                               float(np.max(np.abs(analytic - num), initial=0.0)), analytic.copy(), num)
    n_directions = check_int(n_directions, "n_directions", minimum=1)
    rng = check_rng(rng)
    a_vals, n_vals = [], []
    for _ in range(n_directions):
        v = rng.standard_normal(theta.shape)
        v /= np.linalg.norm(v)
        a_vals.append(float(np.sum(analytic * v)))
        n_vals.append(directional_derivative(f, theta, v, h=h, order=order))
    a_vals, n_vals = np.array(a_vals), np.array(n_vals)
    return GradCheckResult(name, "directions", rel_error(a_vals, n_vals),
                           float(np.max(np.abs(a_vals - n_vals))), a_vals, n_vals)


def check_params(f: Callable[[], float], params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], *,
                 h: float = 1e-6, order: int = 2, max_elementwise: int = 2000, n_directions: int = 10,
                 rng: np.random.Generator | None = None) -> dict[str, GradCheckResult]:
    """Check the gradient of ``f`` with respect to every array in ``params``.

    ``grads`` must hold the analytic gradients at the current ``params`` (they are
    copied first, since ``f`` may overwrite them). Arrays with at most
    ``max_elementwise`` entries are checked entry by entry, larger ones along
    ``n_directions`` random directions (``rng`` required then). Returns a dict
    name -> :class:`GradCheckResult`. Raises ValueError if the keys differ.
    """
    if set(params) != set(grads):
        raise ValueError(f"grads: expected the keys of params {sorted(params)}, got {sorted(grads)}")
    analytic = {k: np.array(g, dtype=np.float64, copy=True) for k, g in grads.items()}
    results = {}
    for name, theta in params.items():
        big = theta.size > max_elementwise
        results[name] = check_gradient(f, theta, analytic[name], name=name, h=h, order=order,
                                       n_directions=n_directions if big else None, rng=rng)
    return results


def check_layer(layer: Layer, x: np.ndarray, *, rng: np.random.Generator, h: float = 1e-6, order: int = 2,
                max_elementwise: int = 2000, n_directions: int = 10) -> dict[str, GradCheckResult]:
    r"""Check a layer's input gradient and every parameter gradient.

    Uses the scalar :math:`f = \sum_{ij} \mathrm{layer}(x)_{ij}\, dy_{ij}` with a random
    upstream ``dy`` drawn from ``rng``, whose exact gradient is what ``backward(dy)``
    must return (for ``x``) and store (in ``grads``). ``x`` and the layer's parameters
    must be float64. Returns a dict with key ``"x"`` and one key per parameter.
    """
    check_rng(rng)
    _require_float64(x, "x")
    x = x.copy()  # perturbed in place below; keep the caller's array intact
    y0 = np.array(layer.forward(x), copy=True)  # a copy: Identity returns x itself, perturbed below
    dy = rng.standard_normal(y0.shape)
    dx = layer.backward(dy)
    grads = {k: g.copy() for k, g in layer.grads.items()}

    def f() -> float:
        # sum((y - y0) dy) has the same gradient as sum(y dy), but the entries a perturbation
        # leaves unchanged contribute exact zeros, so the round-off of the sum scales with the
        # few changed outputs instead of with |sum(y dy)| (which grows with the batch and
        # produced errors ~1e-4 for a correct 16x32 Linear at h=1e-6)
        return float(np.sum((layer.forward(x) - y0) * dy))

    results = {}
    if dx is not None:
        results["x"] = check_gradient(f, x, dx, name="x", h=h, order=order,
                                      n_directions=n_directions if x.size > max_elementwise else None, rng=rng)
    results.update(check_params(f, layer.params, grads, h=h, order=order, max_elementwise=max_elementwise,
                                n_directions=n_directions, rng=rng))
    return results
