r"""Normalizing flows: invertible maps that enrich the posterior q(z|x) of a VAE.

Change of variables (Rezende & Mohamed 2015, eq. 6-7): if z_0 ~ q(z_0|x) and
z_k = f_k(z_{k-1}) for k = 1..K with each f_k invertible, then

    log q(z_K|x) = log q(z_0|x) - sum_k log |det d f_k / d z_{k-1}|

so the ELBO of a flow VAE is E[log p(x, z_K) - log q(z_0|x) + sum_k logdet_k].

Interface shared by every step and by :class:`Flow` (all arrays batches of row vectors):

* ``forward(z, h=None) -> (z_new, logdet)``: z (N, Z); h (N, context_dim) or None
  (required iff ``context_dim > 0``); z_new (N, Z); logdet (N,) = log|det df/dz| per
  example, in nats; both in the step's dtype.
* ``backward(dz_new, dlogdet) -> (dz, dh)``: given dL/dz_new (N, Z) and dL/dlogdet (N,),
  return dL/dz (N, Z) and dL/dh (N, context_dim) or None, and **overwrite** ``grads``
  (never accumulate). RuntimeError before any forward; TypeError for another dtype,
  ValueError for a wrong shape.
* ``params`` / ``grads``: flat dicts of live arrays with identical keys; :class:`Flow`
  prefixes each step's keys with its index ("0.u", "1.made.0.W", ...).

Steps: :class:`PlanarFlow` (Rezende & Mohamed 2015, eq. 10-12) and :class:`IAFStep`
(Kingma et al. 2016, eq. 10-14); :func:`make_flow` builds a Flow of either kind.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_array, check_choice, check_dtype, check_int, check_rng

__all__ = ["FlowStep", "PlanarFlow", "IAFStep", "Flow", "make_flow", "FLOWS"]

FLOWS = ("planar", "iaf")


class FlowStep:
    """Base class: argument checks and bookkeeping shared by every flow step.

    Subclasses set ``z_dim``, ``context_dim``, ``dtype``, ``params``, ``grads`` and
    implement ``_forward(z, h) -> (z_new, logdet)`` and ``_backward(dz_new, dlogdet)``.
    """

    z_dim: int
    context_dim: int = 0
    dtype: np.dtype
    _N: int | None = None

    def forward(self, z: np.ndarray, h: np.ndarray | None = None):
        """Return ``(z_new (N, Z), logdet (N,))``; see the module docstring."""
        check_array(z, "z", shape=(None, self.z_dim), dtype=self.dtype)
        if self.context_dim == 0 and h is not None:
            raise ValueError(f"h: {type(self).__name__} takes no context (context_dim=0), expected None, got an array")
        if self.context_dim:
            if h is None:
                raise ValueError(f"h: expected a context of shape ({z.shape[0]}, {self.context_dim}), got None")
            check_array(h, "h", shape=(z.shape[0], self.context_dim), dtype=self.dtype)
        out = self._forward(z, h)
        self._N = z.shape[0]
        return out

    def backward(self, dz_new: np.ndarray, dlogdet: np.ndarray):
        """Return ``(dL/dz (N, Z), dL/dh or None)`` and overwrite ``grads``."""
        if self._N is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: call forward(z, h) first")
        check_array(dz_new, "dz_new", shape=(self._N, self.z_dim), dtype=self.dtype)
        check_array(dlogdet, "dlogdet", shape=(self._N,), dtype=self.dtype)
        return self._backward(dz_new, dlogdet)


from .planar import PlanarFlow  # noqa: E402  (they subclass FlowStep, defined above)
from .iaf import IAFStep  # noqa: E402


class Flow(FlowStep):
    """A composition ``f_K o ... o f_1`` of steps with the same ``z_dim`` and dtype.

    ``forward`` returns z_K and the sum of the steps' logdets (N,); ``backward`` runs the
    steps in reverse and returns dL/dz_0 and dL/dh summed over the steps that use the
    context (None if none does). ``h`` is passed only to steps with ``context_dim > 0``.
    Raises ValueError for no steps or mismatched z_dim/context_dim, TypeError for mixed dtypes.
    """

    def __init__(self, steps) -> None:
        self.steps = list(steps)
        if not self.steps:
            raise ValueError("steps: expected at least one flow step, got none")
        first = self.steps[0]
        self.z_dim, self.dtype = first.z_dim, first.dtype
        ctx = {s.context_dim for s in self.steps} - {0}
        if len(ctx) > 1:
            raise ValueError(f"steps: expected one context_dim shared by the conditional steps, got {sorted(ctx)}")
        self.context_dim = ctx.pop() if ctx else 0
        for i, s in enumerate(self.steps):
            if s.z_dim != self.z_dim:
                raise ValueError(f"steps[{i}]: expected z_dim {self.z_dim}, got {s.z_dim}")
            if s.dtype != self.dtype:
                raise TypeError(f"steps[{i}]: expected dtype {self.dtype}, got {s.dtype}")
        self.params = {f"{i}.{k}": v for i, s in enumerate(self.steps) for k, v in s.params.items()}
        self.grads = {f"{i}.{k}": v for i, s in enumerate(self.steps) for k, v in s.grads.items()}

    def _forward(self, z, h):
        total = np.zeros(z.shape[0], dtype=self.dtype)
        for s in self.steps:
            z, logdet = s.forward(z, h if s.context_dim else None)
            total += logdet                       # log|det J_K...J_1| = sum_k log|det J_k|
        return z, total

    def _backward(self, dz, dlogdet):
        # d(sum_k logdet_k)/d logdet_k = 1: every step receives the same dlogdet
        dh_total = None
        for s in reversed(self.steps):           # chain rule: dL/dz_{k-1} = J_k^T dL/dz_k + d logdet_k/dz_{k-1}
            dz, dh = s.backward(dz, dlogdet)
            if dh is not None:
                dh_total = dh if dh_total is None else dh_total + dh
        return dz, dh_total

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"Flow([{', '.join(map(repr, self.steps))}])"


def make_flow(kind: str, z_dim: int, length: int, *, hidden=None, context_dim: int = 0,
              rng: np.random.Generator, dtype=np.float32, activation: str = "relu") -> Flow:
    """Build a :class:`Flow` of ``length`` steps of one ``kind`` ("planar" or "iaf").

    IAF steps alternate the variable order (1..Z, then Z..1, ...) so every variable gets
    to depend on every other across steps; ``hidden`` and ``activation`` are the MADE's
    (``hidden`` defaults to :class:`IAFStep`'s default). Planar steps are unconditional:
    ``context_dim`` must be 0 and ``hidden`` None for them. Raises ValueError naming
    ``flow`` for an unknown kind, ``length`` for length < 1, TypeError for a bad rng/dtype.
    """
    check_choice(kind, "flow", FLOWS)
    z_dim = check_int(z_dim, "z_dim", minimum=1)
    length = check_int(length, "length", minimum=1)
    context_dim = check_int(context_dim, "context_dim", minimum=0)
    check_rng(rng)
    check_dtype(dtype)
    if kind == "planar":
        if context_dim:
            raise ValueError(f"context_dim: planar flows take no context, expected 0, got {context_dim}")
        if hidden is not None:
            raise ValueError(f"hidden: planar flows have no hidden layers, expected None, got {hidden!r}")
        return Flow([PlanarFlow(z_dim, rng=rng, dtype=dtype) for _ in range(length)])
    forward_order, reverse_order = np.arange(1, z_dim + 1), np.arange(z_dim, 0, -1)
    return Flow([IAFStep(z_dim, hidden, context_dim=context_dim, activation=activation,
                         order=forward_order if k % 2 == 0 else reverse_order, rng=rng, dtype=dtype)
                 for k in range(length)])
