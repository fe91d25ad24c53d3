r"""Exact log p(x) by numerical integration over a 1-D or 2-D latent, for the log_likelihood tests.

Every model's importance-sampled ``log_likelihood`` is checked against
:math:`\log p(x) = \log\int p(x, z)\,dz` computed here. The caller gives the joint in log
space, ``log_joint(z) = log p(x|z) + log p(z)``; the integrand is rescaled by its peak,
:math:`\log p(x) = m + \log\int e^{\log p(x,z) - m}\,dz`, so it is O(1) at the mode and
neither under- nor overflows whatever the size of log p(x) (hundreds of nats).

* :func:`log_px_1d` -- adaptive Gauss-Kronrod (``scipy.integrate.quad``) over [lo, hi],
  with the grid's peak passed as a breakpoint (a narrow posterior is never stepped over).
  Its ``epsrel=1e-11`` is the stated relative tolerance of the integral, so the log's
  absolute error is about 1e-11 plus the tail outside [lo, hi].
* :func:`log_px_2d_grid` -- tensor-product trapezoid rule on an n x n grid over
  [lo, hi]^2, vectorised (``log_joint`` takes (m, 2) arrays). For a smooth integrand
  that vanishes at the box edge the rule converges geometrically, so the difference to
  the same rule on the (n+1)/2 x (n+1)/2 sub-grid (every other point) bounds the error
  of the fine one; it is returned as ``err`` (nats, in log space). A ValueError is raised
  if the integrand at the edge of the box is not below ``edge_tol`` times its peak: then
  the box cuts off mass and no bound holds.
* :func:`log_px_2d_dblquad` -- ``scipy.integrate.dblquad`` (nested adaptive quadrature)
  with a scalar ``log_joint(z1, z2)``; slower, tolerance ``epsrel``.

Tails: outside the box the integrand is bounded by the prior's mass there times the
likelihood's maximum; with the defaults ([-10, 10] for a standard-normal prior) that mass
is below 2e-23 per dimension, negligible against any tolerance used in the tests.
"""

from __future__ import annotations

import numpy as np
from scipy import integrate
from scipy.special import logsumexp

__all__ = ["log_px_1d", "log_px_2d_grid", "log_px_2d_dblquad"]


def log_px_1d(log_joint, *, lo: float = -10.0, hi: float = 10.0, epsrel: float = 1e-11,
              n_peak: int = 2001) -> float:
    r""":math:`\log\int_{lo}^{hi} \exp(\mathrm{log\_joint}(z))\,dz` for a scalar function ``log_joint(z: float) -> float``.

    The peak m is located on an ``n_peak``-point grid; ``quad`` then integrates
    ``exp(log_joint(z) - m)`` with the grid's argmax as a breakpoint. Returns a float
    (nats). Raises ValueError if the integral is not positive and finite.
    """
    grid = np.linspace(lo, hi, n_peak)
    values = np.array([log_joint(float(z)) for z in grid])
    m = float(np.max(values))
    z_peak = float(grid[int(np.argmax(values))])
    points = [z_peak] if lo < z_peak < hi else None
    val, _ = integrate.quad(lambda z: np.exp(log_joint(z) - m), lo, hi, points=points, limit=500,
                            epsabs=0.0, epsrel=epsrel)
    if not (np.isfinite(val) and val > 0):
        raise ValueError(f"log_joint: the rescaled integral is {val}, expected a positive finite number")
    return m + float(np.log(val))


def log_px_2d_grid(log_joint, *, lo=(-10.0, -10.0), hi=(10.0, 10.0), n: int = 801,
                   edge_tol: float = 1e-12) -> tuple[float, float]:
    r"""Trapezoid rule over [lo, hi] (a 2-D box) on an n x n grid: ``(log_px, err)``, nats.

    ``log_joint`` is vectorised: an (m, 2) array of latent points -> (m,) log p(x, z).
    ``n`` must be odd, so that every other point is the coarse grid whose difference to the
    fine estimate is ``err`` (an a-posteriori bound, see the module docstring). Raises
    ValueError for an even ``n`` or if the integrand on the box edge exceeds ``edge_tol``
    times its peak (the box is too small).
    """
    if n % 2 == 0 or n < 5:
        raise ValueError(f"n: expected an odd number >= 5 (the coarse grid is every other point), got {n}")
    lo, hi = np.broadcast_to(np.asarray(lo, float), (2,)), np.broadcast_to(np.asarray(hi, float), (2,))
    a, b = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    A, B = np.meshgrid(a, b, indexing="ij")
    f = np.asarray(log_joint(np.stack([A.ravel(), B.ravel()], axis=1)), dtype=np.float64).reshape(n, n)
    m = float(np.max(f))
    edge = max(f[0].max(), f[-1].max(), f[:, 0].max(), f[:, -1].max())
    if edge - m > np.log(edge_tol):
        raise ValueError(f"lo, hi: the integrand on the box edge is exp({edge - m:.1f}) times its peak, "
                         f"expected below {edge_tol:g}: widen the box")

    def trapezoid_log(values, da, db):
        w = np.ones(values.shape)
        w[0, :] *= 0.5
        w[-1, :] *= 0.5
        w[:, 0] *= 0.5
        w[:, -1] *= 0.5
        # log sum_ij w_ij exp(f_ij) da db, with the peak factored out by logsumexp
        return float(logsumexp(values, b=w) + np.log(da * db))

    da, db = a[1] - a[0], b[1] - b[0]
    fine = trapezoid_log(f, da, db)
    coarse = trapezoid_log(f[::2, ::2], 2 * da, 2 * db)
    return fine, abs(fine - coarse)


def log_px_2d_dblquad(log_joint, *, lo=(-10.0, -10.0), hi=(10.0, 10.0), epsrel: float = 1e-8,
                      n_peak: int = 101) -> float:
    r""":math:`\log\iint \exp(\mathrm{log\_joint}(z_1, z_2))\,dz_1 dz_2` by ``scipy.integrate.dblquad``.

    ``log_joint(z1: float, z2: float) -> float``. The peak is found on an
    ``n_peak`` x ``n_peak`` grid and factored out. Returns a float (nats); relative
    tolerance ``epsrel`` on the integral. Raises ValueError if the integral is not
    positive and finite.
    """
    lo, hi = np.broadcast_to(np.asarray(lo, float), (2,)), np.broadcast_to(np.asarray(hi, float), (2,))
    m = max(log_joint(float(u), float(v)) for u in np.linspace(lo[0], hi[0], n_peak)
            for v in np.linspace(lo[1], hi[1], n_peak))
    # dblquad integrates func(y, x) with x the outer variable: here x = z1, y = z2
    val, _ = integrate.dblquad(lambda z2, z1: np.exp(log_joint(z1, z2) - m), lo[0], hi[0], lo[1], hi[1],
                               epsabs=0.0, epsrel=epsrel)
    if not (np.isfinite(val) and val > 0):
        raise ValueError(f"log_joint: the rescaled integral is {val}, expected a positive finite number")
    return m + float(np.log(val))
