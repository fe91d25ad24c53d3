r"""Planar flow (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows",
eq. 10-12 and appendix A.1).

One step, with parameters u, w (Z,) and b (1,):

    f(z)     = z + û tanh(wᵀz + b)                                  (eq. 10)
    ψ(z)     = (1 − tanh²(wᵀz + b)) w                               (eq. 11)
    log|det| = log|1 + ûᵀψ(z)|                                      (eq. 12)

Invertibility needs wᵀû ≥ −1 (appendix A.1). It is enforced by reparameterizing u:

    û = u + (m(wᵀu) − wᵀu) w / ‖w‖²,   m(a) = −1 + softplus(a)

so wᵀû = m(wᵀu) > −1 exactly. With a = wᵀz + b, t = tanh(a), s = 1 − t² = sech²(a):

    1 + ûᵀψ = 1 + s m(wᵀu) = t² + s softplus(wᵀu)        (> 0: a sum of non-negative terms)

The last form is what we compute: no cancellation even when m(wᵀu) is near −1 and t ≈ 0,
and s is computed as 4e^{−2|a|} / (1 + e^{−2|a|})² (never 1 − t² rounded to 0).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .._checks import check_dtype, check_int, check_rng
from ..distributions import softplus
from . import FlowStep

__all__ = ["PlanarFlow"]


class PlanarFlow(FlowStep):
    r"""One planar step ``f(z) = z + û tanh(wᵀz + b)`` (unconditional: no context).

    Parameters
    ----------
    z_dim : int
        Z >= 1.
    rng : np.random.Generator
        u, w ~ N(0, 1/Z) entrywise (so ‖w‖ ~ 1), b = 0.
    dtype : float32 or float64

    params "u" (Z,), "w" (Z,), "b" (1,). ``forward(z (N, Z), h=None)`` returns
    ``(z_new (N, Z), logdet (N,))`` in nats; ``backward(dz_new, dlogdet)`` returns
    ``(dz, None)``. ``forward`` raises ValueError if w is all zeros (û is undefined).
    """

    def __init__(self, z_dim: int, *, rng: np.random.Generator, dtype=np.float32) -> None:
        self.z_dim = check_int(z_dim, "z_dim", minimum=1)
        self.dtype = check_dtype(dtype)
        check_rng(rng)
        scale = 1.0 / np.sqrt(self.z_dim)
        self.params = {"u": (scale * rng.standard_normal(self.z_dim)).astype(self.dtype),
                       "w": (scale * rng.standard_normal(self.z_dim)).astype(self.dtype),
                       "b": np.zeros(1, dtype=self.dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def u_hat(self):
        """Return ``(û (Z,), wᵀu, ‖w‖²)``; wᵀû = −1 + softplus(wᵀu) > −1."""
        u, w = self.params["u"], self.params["w"]
        ww = w @ w
        if ww == 0:
            raise ValueError("w: expected a nonzero vector (û divides by ‖w‖²), got all zeros")
        alpha = w @ u
        return u + ((-1 + softplus(alpha)) - alpha) * w / ww, alpha, ww

    def _forward(self, z, h):
        w, b = self.params["w"], self.params["b"]
        uh, alpha, ww = self.u_hat()
        a = z @ w + b[0]                                    # (N,)
        t = np.tanh(a)
        e = np.exp(-2 * np.abs(a))
        s = 4 * e / (1 + e) ** 2                            # sech²(a) = 1 − tanh²(a), stably
        sp = softplus(alpha)
        g = t * t + s * sp                                  # 1 + ûᵀψ = 1 + s (−1 + sp)
        self._cache = (z, a, t, s, g, uh, alpha, ww, sp)
        return z + t[:, None] * uh, np.log(g)

    def _backward(self, dz_new, dlogdet):
        z, a, t, s, g, uh, alpha, ww, sp = self._cache
        u, w = self.params["u"], self.params["w"]
        m = -1 + sp
        # f = z + û t
        duh = t @ dz_new                                    # df/dû = t          -> dL/dû = Σ_n t_n G_n
        dt = dz_new @ uh                                    # df/dt = û          -> dL/dt_n = G_n·û
        # logdet = log g, g = 1 + s m
        dg = dlogdet / g                                    # d log g / dg = 1/g
        dt += dg * m * (-2 * t)                             # dg/dt = m ds/dt = m (−2t)  (tanh'' via s = 1 − t²)
        dm = dg @ s                                         # dg/dm = s
        da = dt * s                                         # dt/da = 1 − t² = s
        dz = dz_new + da[:, None] * w                       # da/dz = w ;  df/dz = I (+ through a)
        dw = da @ z                                         # da/dw = z
        db = np.sum(da)                                     # da/db = 1
        # û = u + (m − α) r,  r = w/‖w‖²,  m = −1 + softplus(α),  α = wᵀu
        r = w / ww
        dk = duh @ r                                        # dû/d(m − α) = r
        dr = (m - alpha) * duh                              # dû/dr = (m − α) I
        dm += dk                                            # d(m − α)/dm = 1
        dalpha = dm * expit(alpha) - dk                     # dm/dα = sigmoid(α) ;  d(−α)/dα = −1
        self.grads["u"][...] = duh + dalpha * w             # dû/du = I ;  dα/du = w
        dw += dalpha * u + dr / ww - 2 * w * (w @ dr) / ww ** 2  # dα/dw = u ;  dr/dw = I/‖w‖² − 2wwᵀ/‖w‖⁴
        self.grads["w"][...] = dw
        self.grads["b"][...] = db
        return dz.astype(self.dtype, copy=False), None

    def __repr__(self) -> str:
        return f"PlanarFlow(z_dim={self.z_dim}, dtype={self.dtype})"
