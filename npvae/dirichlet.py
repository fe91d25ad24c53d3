r"""The Dirichlet prior in the softmax basis: its Laplace approximation, and the softmax with its gradient.

Srivastava & Sutton 2017, "Autoencoding Variational Inference for Topic Models" (ProdLDA),
section 3.2 and eq. (3), after MacKay 1998 ("Choice of basis for Laplace approximation").
A point on the simplex :math:`\theta\in\Delta^{K-1}` is written :math:`\theta =
\mathrm{softmax}(z)`, :math:`z\in\mathbb R^K`. In this basis the Dirichlet(:math:`\alpha`)
density, Jacobian included, is :math:`\propto\prod_k \theta_k^{\alpha_k}`, whose mode is
:math:`\theta_k = \alpha_k / \sum_i\alpha_i`; its Laplace approximation, restricted to the
centred directions (:math:`\sum_k z_k = 0`) and made diagonal, is
:math:`N(\mu_0, \mathrm{diag}\,\sigma_0^2)` with

.. math::
    \mu_{0k} = \log\alpha_k - \frac1K\sum_i \log\alpha_i,\qquad
    \sigma_{0k}^2 = \frac1{\alpha_k}\Big(1 - \frac2K\Big) + \frac1{K^2}\sum_i \frac1{\alpha_i}.

Equivalently, with the centring projection :math:`P = I - \frac1K\mathbf 1\mathbf 1^\top`,
:math:`\mu_0 = P\log\alpha` and :math:`\sigma_0^2 = \mathrm{diag}(P\,\mathrm{diag}(1/\alpha)\,P)`
(the tests check the formula against this matrix form).
"""

from __future__ import annotations

import numbers

import numpy as np

from ._checks import check_float, check_int

__all__ = ["check_alpha", "dirichlet_laplace_prior", "softmax", "softmax_backward", "ALPHA_MIN", "ALPHA_MAX"]

#: the concentrations a Dirichlet VAE accepts: the prior's log-variance is then about -log(alpha),
#: within +-70, so its sigma, its draws and exp(-logvar_p) in the KL stay finite in float32 (at 1e-300
#: the prior's draws overflowed to inf and the samples were NaN)
ALPHA_MIN, ALPHA_MAX = 1e-30, 1e30


def check_alpha(alpha, K: int) -> np.ndarray:
    """``alpha`` as a (K,) float64 array of positive finite concentrations.

    ``alpha``: a positive real (the symmetric Dirichlet) or a sequence/array of K positive
    reals; ``K`` >= 2. Raises TypeError for a non-numeric ``alpha``, ValueError for a
    wrong length, a non-finite or non-positive entry, an entry outside [:data:`ALPHA_MIN`,
    :data:`ALPHA_MAX`], or K < 2.
    """
    K = check_int(K, "K", minimum=2)
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        a = check_float(alpha, "alpha", minimum=0.0, strict_min=True)
        return np.full(K, check_float(a, "alpha", minimum=ALPHA_MIN, maximum=ALPHA_MAX))
    try:
        a = np.asarray(alpha)
    except Exception as exc:  # ragged sequences and the like
        raise TypeError(f"alpha: expected a positive number or an array of {K} positive numbers, "
                        f"got {type(alpha).__name__}") from exc
    if a.dtype.kind not in "iuf" or a.dtype == bool:
        raise TypeError(f"alpha: expected a positive number or an array of {K} positive numbers, "
                        f"got {type(alpha).__name__} of dtype {a.dtype}")
    if a.shape != (K,):
        raise ValueError(f"alpha: expected a number or shape ({K},) (one concentration per component), "
                         f"got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"alpha: expected finite values > 0, got {a.tolist()}")
    if np.any(a < ALPHA_MIN) or np.any(a > ALPHA_MAX):
        raise ValueError(f"alpha: expected values in [{ALPHA_MIN:g}, {ALPHA_MAX:g}], got minimum {a.min():g}, "
                         f"maximum {a.max():g}")
    return a


def dirichlet_laplace_prior(alpha, K: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Laplace approximation of Dirichlet(``alpha``) in the softmax basis: ``(mu0, logvar0)``.

    Srivastava & Sutton 2017, eq. (3): :math:`\mu_{0k} = \log\alpha_k - \frac1K\sum_i\log\alpha_i`,
    :math:`\sigma_{0k}^2 = \frac1{\alpha_k}(1 - \frac2K) + \frac1{K^2}\sum_i\frac1{\alpha_i}`.
    ``alpha``: a positive float (symmetric) or K positive values; ``K`` >= 2 components.
    Returns ``mu0`` and ``logvar0`` :math:`= \log\sigma_0^2`, each (K,) float64 (z-space,
    dimensionless). ``softmax(mu0)`` is the Dirichlet's mean ``alpha / sum(alpha)``, and a
    symmetric ``alpha`` gives ``mu0 = 0``. Finite for every ``alpha`` :func:`check_alpha`
    accepts (within ±70 for :data:`ALPHA_MIN` .. :data:`ALPHA_MAX`). Raises TypeError/ValueError (see
    :func:`check_alpha`).
    """
    a = check_alpha(alpha, K)
    K = a.shape[0]
    log_a = np.log(a)
    # log a_k - (1/K) sum_i log a_i written as the mean of the differences (1/K) sum_i (log a_k - log a_i):
    # each difference is exactly 0 for equal concentrations, so a symmetric alpha gives mu0 = 0 exactly
    mu0 = np.mean(log_a[:, None] - log_a[None, :], axis=1)
    inv = 1.0 / a
    # every term is >= 0 (1 - 2/K >= 0 for K >= 2) and the second is > 0: the log is finite
    var0 = inv * (1.0 - 2.0 / K) + inv.sum() / K ** 2
    return mu0, np.log(var0)


def softmax(z: np.ndarray) -> np.ndarray:
    r""":math:`\theta = \mathrm{softmax}(z)` over the last axis: any shape (..., K) -> same shape and dtype.

    Stable form: :math:`\mathrm{softmax}(z) = \mathrm{softmax}(z - \max_k z_k)`, so every
    ``exp`` is of a number <= 0 (no overflow) and the denominator is >= 1 (no division by
    0). Each row is positive (down to underflow) and sums to 1, for every finite z. TypeError
    for float16.
    """
    if z.dtype == np.float16:
        raise TypeError("z: expected float32 or float64, got float16 (convert with .astype(np.float32))")
    with np.errstate(over="ignore"):  # z - max z may be -inf for |z| near the largest float: exp gives 0
        e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def softmax_backward(theta: np.ndarray, dtheta: np.ndarray) -> np.ndarray:
    r"""Pull ``dtheta`` = dL/dθ back through :func:`softmax` to dL/dz (same shape (..., K), dtype).

    Local derivative :math:`\partial\theta_j/\partial z_k = \theta_j(\delta_{jk} - \theta_k)`, so
    :math:`dz = \theta\odot(d\theta - \sum_j\theta_j\,d\theta_j)`. ``theta`` is the forward
    output. ValueError if the result overflows for finite arguments (a ``dtheta`` near the
    largest float), TypeError for float16.
    """
    if np.result_type(theta, dtheta) == np.float16:
        raise TypeError("theta, dtheta: expected float32 or float64, got float16 (convert with .astype(np.float32))")
    with np.errstate(over="ignore", invalid="ignore"):
        dz = theta * (dtheta - np.sum(theta * dtheta, axis=-1, keepdims=True))
    if not np.isfinite(dz).all() and np.isfinite(theta).all() and np.isfinite(dtheta).all():
        raise ValueError(f"dtheta: expected values whose weighted sum is representable in {dz.dtype}, got maximum "
                         f"|dtheta| {float(np.max(np.abs(dtheta))):g}")
    return dz
