r"""Inverse autoregressive flow step (Kingma et al. 2016, "Improved Variational Inference
with Inverse Autoregressive Flow", section 4, eq. 10-14, the "LSTM-type" update).

An autoregressive network (a :class:`npvae.made.MADE`) maps z and the context h to

    [m, s] = MADE(z, h)            m_i, s_i depend only on z_j with order[j] < order[i]
    σ      = sigmoid(s + 1)
    z'     = σ ⊙ z + (1 − σ) ⊙ m                                      (eq. 14)

Because m_i, s_i do not depend on z_i or on later variables, dz'/dz is triangular (in
the variables' order) with diagonal σ, hence

    log|det dz'/dz| = Σ_i log σ_i = −Σ_i softplus(−(s_i + 1))         (log-sigmoid, stable)

(the identity log sigmoid(x) = −log(1 + e^{−x}) = −softplus(−x), with softplus computed
by :func:`npvae.distributions.softplus`, which never overflows). The +1 shift makes σ ≈ 0.73 at s = 0: every step
starts as a gentle update of z (section 4). Alternate the order between steps
(:func:`npvae.flows.make_flow` does) so every variable can depend on every other.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .._checks import check_dtype, check_int
from ..distributions import softplus
from ..made import MADE
from . import FlowStep

__all__ = ["IAFStep"]


class IAFStep(FlowStep):
    r"""One IAF step ``z' = σ ⊙ z + (1 − σ) ⊙ m`` with ``[m, s] = MADE(z, h)``.

    Parameters
    ----------
    z_dim : int
        Z >= 1.
    hidden : sequence of int, optional
        The MADE's hidden widths (default ``(max(2 Z, 8),)``: at least Z units so every
        degree occurs).
    context_dim : int
        Size of the context h (0: none; then ``forward`` requires ``h=None``).
    order : permutation of 1..Z, optional
        The MADE's variable order (default 1..Z).
    activation : str
        The MADE's hidden activation (default "relu").
    rng : np.random.Generator
    dtype : float32 or float64

    params: the MADE's, prefixed "made." ("made.0.W", "made.ctx.W", ...). ``forward(z
    (N, Z), h (N, C) or None)`` returns ``(z_new (N, Z), logdet (N,))`` in nats;
    ``backward(dz_new, dlogdet)`` returns ``(dz (N, Z), dh (N, C) or None)``.
    """

    def __init__(self, z_dim: int, hidden=None, *, context_dim: int = 0, order=None, activation: str = "relu",
                 rng: np.random.Generator, dtype=np.float32) -> None:
        self.z_dim = check_int(z_dim, "z_dim", minimum=1)
        self.context_dim = check_int(context_dim, "context_dim", minimum=0)
        self.dtype = check_dtype(dtype)
        hidden = (max(2 * self.z_dim, 8),) if hidden is None else tuple(hidden)
        self.made = MADE(self.z_dim, hidden, context_dim=self.context_dim, activation=activation, order=order,
                         rng=rng, dtype=self.dtype)
        self.order = self.made.order
        self.params = {f"made.{k}": v for k, v in self.made.params.items()}
        self.grads = {f"made.{k}": v for k, v in self.made.grads.items()}

    def _forward(self, z, h):
        m, s = self.made.forward(z, h)
        x = s + 1
        sig = expit(x)                                      # σ = sigmoid(s + 1)
        logdet = -np.sum(softplus(-x), axis=1)              # Σ log σ = −Σ softplus(−(s + 1))
        self._cache = (z, m, sig)
        return sig * z + (1 - sig) * m, logdet

    def _backward(self, dz_new, dlogdet):
        z, m, sig = self._cache
        dsig = dz_new * (z - m)                             # dz'/dσ = z − m
        dm = dz_new * (1 - sig)                             # dz'/dm = 1 − σ
        ds = dsig * sig * (1 - sig)                         # dσ/ds = σ (1 − σ)
        ds += dlogdet[:, None] * (1 - sig)                  # d log σ / ds = 1 − σ
        dz_made, dh = self.made.backward(dm, ds)            # through m(z, h), s(z, h)
        return dz_new * sig + dz_made, dh                   # dz'/dz (direct) = σ

    def __repr__(self) -> str:
        return (f"IAFStep(z_dim={self.z_dim}, hidden={self.made.hidden}, context_dim={self.context_dim}, "
                f"dtype={self.dtype})")
