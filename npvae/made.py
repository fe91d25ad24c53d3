r"""MADE: a masked autoencoder whose outputs are autoregressive in its inputs.

Germain et al. (2015), "MADE: Masked Autoencoder for Distribution Estimation", section 4
(the degree/mask rule of eq. 12-13); karpathy/pytorch-made was read for the equations.

Every unit gets a *degree*. Inputs: ``deg_in[j] = order[j]`` (a permutation of 1..D).
Hidden units: degrees in ``[min_degree, D-1]``, assigned deterministically by cycling
(unit k of a layer gets ``min_degree + k mod (D - min_degree)``; no random state). Then

    hidden mask   M[k_in, k_out] = 1[deg_out >= deg_in]
    output mask   M[k_in, i]     = 1[order[i] >  deg_in]      (strict)

so output ``i`` can only depend on inputs ``j`` with ``order[j] < order[i]``: the
Jacobian d out_i / d z_j is exactly 0 whenever ``order[j] >= order[i]``.

Context ``h`` (IAF's encoder features) enters the first hidden layer through an
unmasked Linear added to the first masked pre-activation. A unit of degree 0 receives no
``z`` at all but does receive ``h``, and output degree >= 1 > 0 lets it reach *every*
output; so with a context the hidden degrees start at 0 (``min_degree=0``). Without
degree-0 units the output of order 1 would be a constant (bias only), context or not.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_array, check_choice, check_dtype, check_int, check_rng
from .layers import ACTIVATIONS, Linear, get_activation

__all__ = ["made_degrees", "made_masks", "MaskedLinear", "MADE"]


def _check_order(order, D: int) -> np.ndarray:
    if order is None:
        return np.arange(1, D + 1)
    o = np.asarray(order)
    if o.shape != (D,) or o.dtype.kind not in "iu" or not np.array_equal(np.sort(o), np.arange(1, D + 1)):
        raise ValueError(f"order: expected a permutation of 1..{D} (length {D}), got {order!r}")
    return o.astype(np.int64)


def made_degrees(in_features: int, hidden, *, order=None, min_degree: int = 1) -> list[np.ndarray]:
    """Degrees of the input units and of every hidden layer's units (int64 arrays).

    ``hidden`` is a sequence of hidden-layer widths; ``order`` a permutation of 1..D
    (default 1..D); ``min_degree`` 1 (plain MADE) or 0 (with a context, see the module
    docstring). Returns ``[deg_in (D,), deg_h1 (H1,), ...]``. Raises ValueError for a
    bad ``order``, sizes < 1 or ``min_degree`` not in (0, 1).
    """
    D = check_int(in_features, "in_features", minimum=1)
    sizes = [check_int(h, f"hidden[{i}]", minimum=1) for i, h in enumerate(hidden)]
    check_choice(min_degree, "min_degree", (0, 1))
    lo = min(min_degree, D - 1)  # D = 1: degree 0 (no hidden unit may see z_1 anyway)
    degrees = [_check_order(order, D)]
    for H in sizes:
        degrees.append(lo + np.arange(H) % (D - lo))  # cycle through lo..D-1
    return degrees


def made_masks(in_features: int, hidden_sizes, out_multiplier: int, *, order=None,
               min_degree: int = 1) -> list[np.ndarray]:
    """Binary masks (bool, shape (in, out)) of every layer, from :func:`made_degrees`.

    The output layer has ``out_multiplier * D`` units: ``out_multiplier`` blocks of D
    (2 for ``[m, s]``), block b's unit i having degree ``order[i]``.
    """
    k = check_int(out_multiplier, "out_multiplier", minimum=1)
    degrees = made_degrees(in_features, hidden_sizes, order=order, min_degree=min_degree)
    masks = [d_out[None, :] >= d_in[:, None] for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    deg_out = np.tile(degrees[0], k)
    masks.append(deg_out[None, :] > degrees[-1][:, None])  # strict: no output sees its own input
    return masks


class MaskedLinear(Linear):
    r"""``y = x @ (W * M) + b`` with a fixed binary mask ``M`` (in_features, out_features).

    A :class:`npvae.layers.Linear` (same contract: params "W" (in, out), "b" (out,); grads
    overwritten; inputs of another dtype rejected) whose weights are multiplied by ``M``.
    Masked weights are zeroed at init and always get a zero gradient, so they stay zero
    under any optimizer. Raises ValueError for a mask of the wrong shape.
    """

    def __init__(self, in_features: int, out_features: int, mask, *, rng: np.random.Generator,
                 dtype=np.float32, init: str = "glorot_uniform") -> None:
        super().__init__(in_features, out_features, rng=rng, dtype=dtype, init=init)
        mask = np.asarray(mask)
        if mask.shape != (self.in_features, self.out_features):
            raise ValueError(f"mask: expected shape ({in_features}, {out_features}), got shape {mask.shape}")
        self.mask = (mask != 0).astype(self.dtype)
        self.params["W"] *= self.mask

    def _forward(self, x):
        check_array(x, "x", shape=(None, self.in_features), dtype=self.dtype)
        self._x = x
        return x @ (self.params["W"] * self.mask) + self.params["b"]

    def _backward(self, dy):
        # local derivatives: dy/dW = x^T (.) masked by M   dy/db = sum over batch   dy/dx = (.) (W*M)^T
        np.multiply(self._x.T @ dy, self.mask, out=self.grads["W"])  # dL/dW = (x^T dy) * M
        np.sum(dy, axis=0, out=self.grads["b"])                        # dL/db = sum_n dy_n
        if self.skip_input_grad:
            return None
        return dy @ (self.params["W"] * self.mask).T                   # dL/dx = dy (W*M)^T

    def __repr__(self) -> str:
        return f"MaskedLinear({self.in_features}, {self.out_features}, dtype={self.dtype})"


class MADE:
    r"""Autoregressive network ``z (B, D) [, h (B, C)] -> m (B, D), s (B, D)``.

    ``m_i`` and ``s_i`` depend only on ``z_j`` with ``order[j] < order[i]`` (and on all of
    ``h``). Layers: MaskedLinear -> activation -> ... -> MaskedLinear(H_L, 2D), the last
    split into ``[m, s]``. Parameters (flat dict, live arrays): "0.W", "0.b", ...,
    "<L>.W", "<L>.b" for the masked layers and "ctx.W", "ctx.b" for the context Linear
    (``ctx.b`` is redundant with ``0.b``; kept so ctx is a plain Linear).

    ``last_scale`` (default 0.01) multiplies the output layer's initial weights, so that
    m and s start near 0, so an IAF step starts close to z' = sigmoid(1) z + (1 - sigmoid(1)) m
    with m ~ 0 (Kingma et al. 2016, section 4, recommend starting with s positive, i.e. a
    gentle first update; the +1 shift inside the sigmoid does that here).

    Raises ValueError for empty ``hidden``, sizes < 1, a bad ``order`` or ``activation``;
    TypeError for a non-Generator ``rng`` or non-float ``dtype``. ``forward`` raises
    ValueError/TypeError for a bad ``z``/``h`` (``h`` required iff ``context_dim > 0``).
    """

    def __init__(self, D: int, hidden, *, context_dim: int = 0, activation: str = "relu", order=None,
                 rng: np.random.Generator, dtype=np.float32, init: str = "glorot_uniform",
                 last_scale: float = 0.01) -> None:
        self.D = check_int(D, "D", minimum=1)
        self.hidden = tuple(hidden)
        if not self.hidden:
            raise ValueError(f"hidden: expected at least one hidden layer width, got {hidden!r}")
        self.context_dim = check_int(context_dim, "context_dim", minimum=0)
        self.dtype = check_dtype(dtype)
        check_choice(activation, "activation", tuple(ACTIVATIONS))
        check_rng(rng)
        masks = made_masks(D, self.hidden, 2, order=order, min_degree=0 if self.context_dim else 1)
        self.order = _check_order(order, self.D)
        sizes = (D, *self.hidden, 2 * D)
        self.layers = [MaskedLinear(a, b, M, rng=rng, dtype=dtype, init=init)
                       for a, b, M in zip(sizes[:-1], sizes[1:], masks)]
        self.layers[-1].params["W"] *= self.dtype.type(last_scale)
        self.acts = [get_activation(activation) for _ in self.hidden]
        self.ctx = Linear(context_dim, self.hidden[0], rng=rng, dtype=dtype, init=init) if context_dim else None
        named = [(str(i), l) for i, l in enumerate(self.layers)] + ([("ctx", self.ctx)] if self.ctx else [])
        self.params = {f"{n}.{k}": v for n, l in named for k, v in l.params.items()}
        self.grads = {f"{n}.{k}": v for n, l in named for k, v in l.grads.items()}
        self._B = None

    def forward(self, z: np.ndarray, h: np.ndarray | None = None):
        """Return ``(m, s)``, each (B, D) in the parameters' dtype."""
        check_array(z, "z", shape=(None, self.D), dtype=self.dtype)
        if self.context_dim == 0 and h is not None:
            raise ValueError("h: this MADE has no context (context_dim=0), expected None, got an array")
        if self.context_dim and h is None:
            raise ValueError(f"h: expected a context of shape ({z.shape[0]}, {self.context_dim}), got None")
        if self.ctx is not None:
            check_array(h, "h", shape=(z.shape[0], self.context_dim), dtype=self.dtype)
        a = self.layers[0].forward(z)
        if self.ctx is not None:
            a = a + self.ctx.forward(h)            # first pre-activation: z (W0*M0) + b0 + h Wc + bc
        for layer, act in zip(self.layers[1:], self.acts):
            a = layer.forward(act.forward(a))
        self._B = z.shape[0]
        return a[:, :self.D], a[:, self.D:]

    def backward(self, dm: np.ndarray, ds: np.ndarray):
        """Given dL/dm, dL/ds (B, D), return ``(dL/dz, dL/dh)`` (dh None without context).

        Overwrites ``grads``. RuntimeError before any forward; TypeError/ValueError for a
        wrong dtype or shape.
        """
        if self._B is None:
            raise RuntimeError("MADE.backward called before forward: call forward(z, h) first")
        for name, d in (("dm", dm), ("ds", ds)):
            check_array(d, name, shape=(self._B, self.D), dtype=self.dtype)
        g = np.concatenate([dm, ds], axis=1)       # out = [m, s]: dL/dout = [dm, ds]
        for layer, act in zip(reversed(self.layers[1:]), reversed(self.acts)):
            g = act.backward(layer.backward(g))   # chain rule, last layer first
        dz = self.layers[0].backward(g)           # d pre0 / dz = (.) (W0*M0)^T
        dh = self.ctx.backward(g) if self.ctx is not None else None  # d pre0 / dh = (.) Wc^T
        return dz, dh

    def __repr__(self) -> str:
        return f"MADE(D={self.D}, hidden={self.hidden}, context_dim={self.context_dim}, dtype={self.dtype})"
