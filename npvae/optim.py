r"""Gradient-based optimizers, gradient clipping and learning-rate schedules.

An optimizer is built on a model's flat ``params`` dict (``{"encoder.0.W": W, ...}``),
keeps *references* to those arrays and updates them **in place**, so the layers that own
them see the new values without any copying::

    import numpy as np
    from npvae.layers import MLP
    from npvae.optim import Adam, CosineLR

    rng = np.random.default_rng(0)
    net = MLP((784, 400, 20), rng=rng)
    opt = Adam(net.params, lr=1e-3, clip_norm=5.0, schedule=CosineLR(10_000))
    for x in batches:
        y = net.forward(x)
        net.backward(dloss_dy(y))
        opt.step(net.grads)            # same keys and shapes as net.params

Conventions shared by every optimizer
-------------------------------------
* ``t`` is the number of steps taken: 0 after construction, 1 during/after the first.
* Each ``step`` uses the learning rate ``lr_t = lr * schedule(t)`` (``lr`` if there is no
  schedule); :attr:`Optimizer.last_lr` records it.
* With ``clip_norm`` set, the gradients are rescaled by the global norm over all
  parameters before the update (Pascanu et al. 2013); the caller's gradient arrays are
  never modified (see :meth:`Optimizer.step`).
* Buffers (moments, momentum, scratch) are allocated once, in the parameters' dtype:
  float32 parameters get float32 state and float32 arithmetic (scalars are converted with
  ``param.dtype.type(...)`` so no float64 NumPy scalar upcasts anything). A step
  allocates no parameter-sized temporaries: every array operation writes into a
  preallocated buffer with ``out=`` or in place.
* Layout for speed: the state buffers (moments, momentum, scratch) are one flat array per
  dtype, with per-parameter views (``opt.m[name]`` ...). A step walks these buffers in
  chunks of 256 kB per buffer, making every pass of the update on one chunk while it is in
  cache; arithmetic that touches only the optimizer's buffers is one ufunc call per chunk.
  When a model's parameters (or gradients) are themselves views lying end to end in one
  array, the passes over them are whole-chunk calls too, otherwise one call per parameter
  piece. No BLAS level-1 calls (threaded scal/axpy were measured to slow training 4-5x
  when interleaved with matmuls); the global norm for clipping still uses ``np.dot``.
* Non-finite gradients are not special-cased: NaN/inf propagate into the parameters.
  Checking the loss or :attr:`Optimizer.last_grad_norm` is the training loop's job.

Sources: Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization", ICLR,
Algorithm 1 and section 2; Loshchilov & Hutter (2019), "Decoupled Weight Decay
Regularization", ICLR, Algorithm 2; Sutskever, Martens, Dahl & Hinton (2013), "On the
importance of initialization and momentum in deep learning", ICML, eqs. 1-4; Pascanu,
Mikolov & Bengio (2013), "On the difficulty of training recurrent neural networks",
ICML, Algorithm 1; Loshchilov & Hutter (2017), "SGDR: Stochastic Gradient Descent with
Warm Restarts", ICLR, eq. 5; Goyal et al. (2017), "Accurate, Large Minibatch SGD:
Training ImageNet in 1 Hour", section 2.2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from ._checks import check_array, check_bool, check_dtype, check_float, check_int

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "Schedule",
    "StepLR",
    "ExponentialLR",
    "CosineLR",
    "LinearWarmup",
]


# ----------------------------------------------------------------------------------------
# gradient clipping
# ----------------------------------------------------------------------------------------


def _global_norm(arrays: Iterable[np.ndarray]) -> float:
    """``sqrt(sum_i ||g_i||^2)`` over all arrays, without squaring into a temporary."""
    total = 0.0
    for g in arrays:
        flat = g.reshape(-1)  # a view for contiguous arrays (a copy only if g is strided)
        # dot(flat, flat) = ||g||^2 in one BLAS pass; g * g would allocate a g-sized array.
        # It accumulates in g's dtype, so float32 squares overflow for |g| > ~1e19.
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def _clip_coefficient(total: float, max_norm: float) -> float:
    """The factor ``min(1, max_norm / total)``; 1 when ``total`` is not finite."""
    if math.isfinite(total) and total > max_norm:
        return max_norm / total
    return 1.0


def clip_grad_norm(grads, max_norm: float) -> float:
    r"""Rescale gradients in place so that their global norm is at most ``max_norm``.

    The global norm is :math:`\|g\| = \sqrt{\sum_i \|g_i\|_2^2}` over all arrays. If
    :math:`\|g\| > \text{max\_norm}`, every array is multiplied by
    :math:`\text{max\_norm} / \|g\|`, so the direction of the full gradient is kept and
    its norm becomes ``max_norm``; otherwise nothing changes (Pascanu, Mikolov & Bengio
    2013, Algorithm 1, applied to all parameters jointly as in TensorFlow's
    ``clip_by_global_norm``). A non-finite norm (NaN or inf anywhere) leaves the arrays
    unchanged, so the caller can detect it from the return value.

    Parameters
    ----------
    grads : Mapping[str, np.ndarray] or iterable of np.ndarray
        Float32/float64 arrays of any shapes (e.g. a model's ``grads`` dict). Modified in
        place, each in its own dtype.
    max_norm : float
        The largest allowed global norm, > 0.

    Returns
    -------
    float
        The global norm *before* clipping.

    Raises
    ------
    TypeError
        An entry is not a floating-point ndarray, or ``max_norm`` is not a real number.
    ValueError
        ``max_norm`` is not a finite number > 0.
    """
    if isinstance(grads, Mapping):
        arrays = [check_array(g, f"grads[{k!r}]") for k, g in grads.items()]
    else:
        arrays = [check_array(g, f"grads[{i}]") for i, g in enumerate(grads)]
    max_norm = check_float(max_norm, "max_norm", minimum=0.0, strict_min=True)
    total = _global_norm(arrays)
    coef = _clip_coefficient(total, max_norm)
    if coef != 1.0:
        for g in arrays:
            g *= g.dtype.type(coef)
    return total


# ----------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------


def _check_betas(betas, name: str = "betas") -> tuple[float, float]:
    """``betas`` as a pair of floats in [0, 1); TypeError/ValueError naming ``name[i]``."""
    try:
        pair = tuple(betas)
    except TypeError:
        raise TypeError(f"{name}: expected a pair (beta1, beta2), got {type(betas).__name__} {betas!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name}: expected a pair (beta1, beta2), got {len(pair)} values {pair!r}")
    out = []
    for i, b in enumerate(pair):
        b = check_float(b, f"{name}[{i}]", minimum=0.0)
        if not b < 1.0:
            raise ValueError(f"{name}[{i}]: expected a number in [0, 1), got {b}")
        out.append(b)
    return out[0], out[1]


def _state_scalar(value, key: str, kind: str):
    """A 0-d array from a state dict as a Python scalar of ``kind`` ('i', 'f' or 'b')."""
    arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
    ok = arr.ndim == 0 and (arr.dtype.kind == kind or (kind == "f" and arr.dtype.kind in "iu"))
    if not ok:
        want = {"i": "integer", "f": "float", "b": "bool"}[kind]
        raise TypeError(f"state[{key!r}]: expected a 0-d {want} array, got shape {arr.shape} dtype {arr.dtype}")
    return arr[()].item()


#: Bytes per buffer in one chunk of an update (65536 float32 or 32768 float64 elements).
#: Every step makes ~12 elementwise passes (Adam); doing all of them on one chunk before
#: the next keeps the chunk's m, v, scratch, parameter and gradient (5 x 256 kB) in the L2
#: cache instead of streaming whole buffers 12 times (measured best between 128 and 512 kB
#: here). Parameters smaller than a chunk share one, so their moment arithmetic runs as a
#: single ufunc call over the contiguous flat buffers.
_CHUNK_BYTES = 1 << 18

#: Every this many steps, entries of the decaying state buffers (Adam's m and v, SGD's
#: momentum) small enough to turn subnormal before the next flush are set to 0. Why:
#: subnormal floats (|x| < 1.2e-38 in float32) cost about 100 times a normal operation on
#: x86, and Adam's m for the weights of rarely-on pixels decays by beta1 per step right
#: through that range: after the default demo's 10 epochs, 18 % of encoder.0's m was
#: subnormal and an epoch had slowed from 2.1 s to 3.7 s. The update those entries make is
#: below alpha_t * 1e-35 / eps_hat, about 1e-30: zeroing them changes no parameter. (XLA
#: sets the CPU's flush-to-zero mode instead; NumPy offers no way to.)
FLUSH_EVERY = 64


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _flat_span(arrays: list[np.ndarray]) -> np.ndarray | None:
    """A 1-D view covering ``arrays`` if they lie end to end, in this order, in one buffer.

    True when a model keeps its parameters (or gradients) as views into one contiguous
    array per dtype; then each update pass is one ufunc call over the whole span. Returns
    None otherwise (or for a read-only span).
    """
    first = arrays[0]
    dtype, root, addr = first.dtype, _root(first), _address(first)
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous or _address(a) != addr or _root(a) is not root:
            return None
        addr += a.nbytes
    if not root.flags.c_contiguous:
        return None
    start = _address(first) - _address(root)
    span = root.reshape(-1).view(np.uint8)[start:addr - _address(root)].view(dtype)
    return span if span.flags.writeable else None


class _Group:
    """The parameters of one dtype, laid end to end in the flat optimizer buffers.

    ``slots``: (name, offset, size) per parameter, in the params dict's order. ``chunks``:
    one record per chunk of about ``_CHUNK_BYTES`` bytes, ``(lo, hi, p_chunk, pieces)``: the
    chunk is elements lo..hi of the flat buffers; ``p_chunk`` is a 1-D view of the
    parameters over it when they lie end to end in memory in this order (else None);
    ``pieces`` = (name, a, b, start, shape, p_piece, s_piece) per parameter piece in the
    chunk: elements a..b of the flattened parameter, at ``start`` in the flat buffers;
    ``shape`` is the parameter's shape for a whole parameter (its pieces are then shaped
    like it) and None for a 1-D slice; ``s_piece`` is the matching scratch view. Parameters larger than a chunk are split if C-contiguous (any
    other is kept whole, and its p_piece is the parameter itself).
    """

    def __init__(self, dtype, names, params):
        self.dtype = dtype
        self.slots, off = [], 0
        for name in names:
            self.slots.append((name, off, params[name].size))
            off += params[name].size
        self.size = off
        p_flat = _flat_span([params[n] for n in names])
        chunk = max(1, _CHUNK_BYTES // np.dtype(dtype).itemsize)
        bounds, pieces, lo = [], [], 0
        for name, off, size in self.slots:
            split = params[name].flags.c_contiguous
            a = 0
            while a < size:
                if off + a - lo >= chunk and pieces:  # this chunk is full: close it
                    bounds.append((lo, off + a, pieces))
                    lo, pieces = off + a, []
                b = min(size, a + chunk - (off + a - lo)) if split else size
                pieces.append((name, a, b))
                a = b
        if pieces or not bounds:
            bounds.append((lo, self.size, pieces))
        self.scratch = np.empty(self.size, dtype)
        offset = {name: off for name, off, _ in self.slots}
        self.chunks = []
        for lo, hi, pcs in bounds:
            recs = []
            for name, a, b in pcs:
                p, start = params[name], offset[name] + a
                whole = a == 0 and b == p.size
                shape = p.shape if whole else None
                s_piece = self.scratch[start:start + b - a]
                recs.append((name, a, b, start, shape, p if whole else p.reshape(-1)[a:b],
                             s_piece if not whole else s_piece.reshape(p.shape)))
            self.chunks.append((lo, hi, None if p_flat is None else p_flat[lo:hi], recs))
        self._grads_key: tuple = ()
        self._g_flat = None

    def grads_flat(self, grads) -> np.ndarray | None:
        """A 1-D view over this group's gradients if they lie end to end (cached per arrays)."""
        arrays = [grads[name] for name, _, _ in self.slots]
        key = tuple(map(id, arrays))
        if key != self._grads_key:
            self._grads_key, self._g_flat = key, _flat_span(arrays)
            self._g_keep = arrays  # keep them alive so the ids stay theirs
        return self._g_flat


def _at(buf: np.ndarray, start: int, size: int, shape) -> np.ndarray:
    """The piece ``buf[start:start + size]`` of a flat buffer, reshaped to ``shape`` if given."""
    piece = buf[start:start + size]
    return piece if shape is None else piece.reshape(shape)


def _make_groups(params: Mapping[str, np.ndarray]) -> list[_Group]:
    by_dtype: dict[np.dtype, list[str]] = {}
    for name, p in params.items():
        by_dtype.setdefault(p.dtype, []).append(name)
    return [_Group(dt, names, params) for dt, names in by_dtype.items()]


class Optimizer:
    r"""Base class: in-place first-order updates of a dict of live parameter arrays.

    Parameters
    ----------
    params : Mapping[str, np.ndarray]
        The arrays to optimize, e.g. ``model.params`` (``{"encoder.0.W": ..., ...}``).
        Each must be a writeable float32 or float64 ndarray of any shape; each name a
        distinct array. The optimizer keeps references (``self.params`` is a new dict
        holding the *same* arrays) and updates them in place.
    lr : float
        Base learning rate, > 0.
    clip_norm : float, optional
        If given (> 0), the gradients are rescaled to global norm at most ``clip_norm``
        before each update (see :func:`clip_grad_norm`).
    schedule : callable, optional
        ``schedule(t) -> multiplier >= 0`` with ``t`` the 1-based step count; step ``t``
        uses ``lr_t = lr * schedule(t)``. See :class:`StepLR`, :class:`CosineLR`, ...

    Attributes
    ----------
    params : dict[str, np.ndarray]
        The live parameter arrays.
    t : int
        Steps taken so far (read-only; 0 after construction).
    lr : float
        The base learning rate (settable; validated).
    last_lr : float or None
        The learning rate ``lr_t`` used by the last step.
    last_grad_norm : float or None
        With ``clip_norm`` set: the global gradient norm of the last step, before
        clipping. ``None`` when clipping is off (the norm is then not computed).

    Raises
    ------
    TypeError
        ``params`` is not a Mapping, a name is not a str, an entry is not a float32 or
        float64 ndarray, or ``schedule`` is not callable.
    ValueError
        ``params`` is empty, an array is read-only or listed twice, ``lr`` is not > 0,
        or ``clip_norm`` is not > 0.

    Subclasses implement ``_apply(grads, lr_t, grad_scale)``, which updates every
    parameter with the gradients ``grad_scale * grads[name]`` (``grad_scale`` is the
    clipping factor, 1.0 when no clipping happens); ``_hyperparameters`` /
    ``_parse_hyperparameters`` / ``_set_hyperparameters`` for :meth:`state_dict`; and
    optionally ``_check_lr_t(lr_t)`` to reject a step before anything changes.
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, *, clip_norm: float | None = None,
                 schedule: Callable[[int], float] | None = None) -> None:
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a Mapping[str, np.ndarray] such as model.params, "
                            f"got {type(params).__name__}")
        if len(params) == 0:
            raise ValueError("params: expected at least one parameter array, got an empty mapping")
        seen: dict[int, str] = {}
        for name, p in params.items():
            if not isinstance(name, str):
                raise TypeError(f"params: expected str keys, got {type(name).__name__} {name!r}")
            check_array(p, f"params[{name!r}]")
            check_dtype(p.dtype, f"params[{name!r}]")
            if not p.flags.writeable:
                raise ValueError(f"params[{name!r}]: expected a writeable array (it is updated in place), "
                                 f"got a read-only array")
            if id(p) in seen:
                raise ValueError(f"params[{name!r}]: expected a distinct array per name, "
                                 f"got the same array as params[{seen[id(p)]!r}]")
            seen[id(p)] = name
        self.params: dict[str, np.ndarray] = dict(params)
        self.lr = lr
        self.clip_norm = None if clip_norm is None else check_float(clip_norm, "clip_norm", minimum=0.0,
                                                                    strict_min=True)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule: expected a callable t -> multiplier (e.g. CosineLR(...)), "
                            f"got {type(schedule).__name__}")
        self.schedule = schedule
        self._t = 0
        self.last_lr: float | None = None
        self.last_grad_norm: float | None = None
        # Parameters of one dtype laid end to end, cut into cache-sized chunks (see _Group).
        self._groups = _make_groups(self.params)
        # Per-parameter state saved by state_dict: {kind: {param name: array}}; each array
        # is a live view into one flat buffer per dtype (self._flat[kind][dtype]).
        self._buffers: dict[str, dict[str, np.ndarray]] = {}
        self._flat: dict[str, dict[np.dtype, np.ndarray]] = {}
        # One flat scratch buffer per dtype, reused by every step for intermediate results,
        # so that steps never allocate parameter-sized temporaries.
        self._scratch_flat = {grp.dtype: grp.scratch for grp in self._groups}
        self._scratch = self._views(self._scratch_flat)

    # -- properties ----------------------------------------------------------------------

    @property
    def t(self) -> int:
        """Number of steps taken (0 after construction; the first step makes it 1)."""
        return self._t

    @property
    def lr(self) -> float:
        """Base learning rate (> 0); ``step`` multiplies it by ``schedule(t)`` if given."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_float(value, "lr", minimum=0.0, strict_min=True)

    def _views(self, flat: dict) -> dict[str, np.ndarray]:
        """Per parameter name, its view (parameter's shape) into the flat buffer of its dtype."""
        return {name: flat[grp.dtype][off:off + size].reshape(self.params[name].shape)
                for grp in self._groups for name, off, size in grp.slots}

    def _add_buffer(self, kind: str) -> dict[str, np.ndarray]:
        """Allocate a zero-initialised state array per parameter (same shape and dtype), as
        views into one flat buffer per dtype so updates can run over whole chunks."""
        self._flat[kind] = {grp.dtype: np.zeros(grp.size, grp.dtype) for grp in self._groups}
        self._buffers[kind] = self._views(self._flat[kind])
        return self._buffers[kind]

    def _chunk_pieces(self, grads):
        """Per chunk of the flat buffers: ``(dtype, lo, hi, g_pieces, p_pieces)``.

        ``g_pieces``: (g, start, shape, s) with g a piece of the gradient, ``start`` its
        position in the flat buffers, ``shape`` (None for a 1-D piece) and ``s`` the scratch
        piece of the same shape; one whole-chunk entry when the gradients lie end to end.
        ``p_pieces``: (name, p, s) likewise for the parameters (name None for a whole chunk).
        A buffer's piece matching a g piece is ``_at(buffer, start, g.size, shape)``.
        """
        for grp in self._groups:
            g_flat = grp.grads_flat(grads)
            if g_flat is None:
                g1 = {name: grads[name].reshape(-1) for name, _, _ in grp.slots}
            s = grp.scratch
            for lo, hi, p_chunk, recs in grp.chunks:
                if g_flat is not None:
                    g_pieces = [(g_flat[lo:hi], lo, None, s[lo:hi])]
                else:
                    g_pieces = [(grads[name] if shape is not None else g1[name][a:b], start, shape, s_piece)
                                for name, a, b, start, shape, _, s_piece in recs]
                if p_chunk is not None:
                    p_pieces = [(None, p_chunk, s[lo:hi])]
                else:
                    p_pieces = [(name, p_piece, s_piece) for name, _, _, _, _, p_piece, s_piece in recs]
                yield grp.dtype, lo, hi, g_pieces, p_pieces

    # -- the step ------------------------------------------------------------------------

    def _check_grads(self, grads) -> None:
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads: expected a Mapping[str, np.ndarray] with the keys of params, "
                            f"got {type(grads).__name__}")
        if grads.keys() != self.params.keys():
            for name in self.params:
                if name not in grads:
                    raise ValueError(f"grads: expected a gradient for every parameter, got none for {name!r}")
            for name in grads:
                if name not in self.params:
                    raise ValueError(f"grads: expected only the parameters' keys, got unexpected key {name!r}")
        for name, p in self.params.items():
            check_array(grads[name], f"grads[{name!r}]", shape=p.shape, dtype=p.dtype)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Take one optimization step, updating ``self.params`` in place.

        Parameters
        ----------
        grads : Mapping[str, np.ndarray]
            The gradient of the loss for each parameter: exactly the keys of ``params``,
            each with the parameter's shape and dtype. It is only read, never modified.

        Order of operations: ``t += 1``; ``lr_t = lr * schedule(t)``; with ``clip_norm``,
        the global norm ``n`` of ``grads`` is stored in ``last_grad_norm`` and the update
        uses ``min(1, clip_norm / n) * grads``. That factor is folded into the scalar
        coefficients of the update (e.g. Adam's ``(1 - beta1)``) instead of rescaling the
        arrays, which costs nothing extra and leaves the caller's arrays untouched; the
        result equals clipping a copy with :func:`clip_grad_norm` up to rounding.

        Raises
        ------
        TypeError
            ``grads`` is not a Mapping, or an entry is not a float ndarray of the
            parameter's dtype.
        ValueError
            A key is missing or unexpected (the message names it), a shape differs from
            the parameter's, ``schedule(t)`` is not a finite number >= 0, or (AdamW)
            ``lr_t * weight_decay >= 1``. A rejected step changes nothing (not even ``t``).
        """
        self._check_grads(grads)
        t = self._t + 1
        lr_t = self._lr
        if self.schedule is not None:
            lr_t *= check_float(self.schedule(t), f"schedule({t})", minimum=0.0)
        self._check_lr_t(lr_t)
        # all checks passed: from here on the step cannot fail half-way
        self._t = t
        self.last_lr = lr_t
        grad_scale = 1.0
        if self.clip_norm is not None:
            self.last_grad_norm = _global_norm(grads.values())
            grad_scale = _clip_coefficient(self.last_grad_norm, self.clip_norm)
        self._apply(grads, lr_t, grad_scale)
        if t % FLUSH_EVERY == 0:
            self._flush_subnormals()

    def _decaying_buffers(self) -> dict[str, float]:
        """Hook: the state buffers that decay geometrically, with their per-step factor."""
        return {}

    def _flush_subnormals(self) -> None:
        """Zero the entries of each decaying buffer that could become subnormal within the
        next FLUSH_EVERY steps (see FLUSH_EVERY): an entry at least ``tiny / decay**64`` is
        still at least ``tiny`` (normal) 64 steps of decay later. Runs once per 64 steps, so
        its temporary (a boolean mask) costs nothing measurable."""
        for kind, decay in self._decaying_buffers().items():
            for dtype, buf in self._flat[kind].items():
                below = np.finfo(dtype).tiny / max(decay, 0.5) ** FLUSH_EVERY
                np.copyto(buf, dtype.type(0), where=np.abs(buf) < below)

    def _check_lr_t(self, lr_t: float) -> None:
        """Hook: raise ValueError if the step's learning rate is unusable (default: accept)."""

    def _apply(self, grads, lr_t: float, grad_scale: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- saving and restoring ------------------------------------------------------------

    def _hyperparameters(self) -> dict[str, np.ndarray]:
        """The update rule's hyperparameters (besides lr) as arrays, for state_dict."""
        return {}

    def _parse_hyperparameters(self, state: Mapping[str, np.ndarray]) -> dict:
        """Validate the hyperparameters in ``state``; return them as Python values."""
        return {}

    def _set_hyperparameters(self, values: dict) -> None:
        pass

    def _state_keys(self) -> list[str]:
        keys = ["optimizer", "t", "lr", *self._hyperparameters()]
        keys += [f"{kind}.{name}" for kind, bufs in self._buffers.items() for name in bufs]
        return keys

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return a flat snapshot of the optimizer: ``{key: np.ndarray}`` (copies).

        Keys: ``"optimizer"`` (0-d str array, the class name), ``"t"`` (0-d int64),
        ``"lr"`` (0-d float64, the base rate), the class's hyperparameters (e.g.
        ``"betas"`` (2,) float64, ``"eps"``; see each class), and one entry
        ``"<kind>.<param name>"`` per state buffer and parameter (e.g. ``"m.encoder.0.W"``),
        with the parameter's shape and dtype. No object arrays, so
        ``np.savez(path, **opt.state_dict())`` and ``np.load(path, allow_pickle=False)``
        round-trip it.

        Not stored: ``clip_norm``, ``schedule`` (a callable; schedules are functions of
        ``t`` only, so restoring ``t`` resumes them) and AdamW's ``decay_filter``. Pass
        the same ones to the constructor when resuming. The parameters themselves are the
        model's to save.
        """
        state: dict[str, np.ndarray] = {
            "optimizer": np.array(type(self).__name__),
            "t": np.array(self._t, dtype=np.int64),
            "lr": np.array(self._lr, dtype=np.float64),
        }
        state.update(self._hyperparameters())
        for kind, bufs in self._buffers.items():
            for name, buf in bufs.items():
                state[f"{kind}.{name}"] = buf.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict` snapshot in place (values copied into the buffers).

        ``state`` may be the dict itself or the ``NpzFile`` from ``np.load``. Restored:
        ``t``, ``lr`` and the hyperparameters (they overwrite the constructor's, as in
        PyTorch, so a resumed run continues bit for bit), and every state buffer. The
        whole state is validated before anything is changed, so a failed load leaves the
        optimizer as it was.

        Raises
        ------
        TypeError
            ``state`` is not a Mapping; an entry has the wrong kind (e.g. a float ``t``)
            or a buffer has a dtype other than its parameter's.
        ValueError
            ``state`` was saved by another optimizer class; a key is missing or unexpected
            (the message names it; e.g. a state saved for a different architecture or with
            a different momentum setting); a buffer's shape differs from its parameter's;
            or a value is out of range (``t < 0``, ``lr <= 0``, ``betas[0]`` not in [0, 1) ...).
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a Mapping[str, np.ndarray] from state_dict() or np.load, "
                            f"got {type(state).__name__}")
        cls = type(self).__name__
        if "optimizer" not in state:
            raise ValueError(f"state: expected key 'optimizer' (the class name), got keys {sorted(state)[:5]}...")
        saved_cls = np.asarray(state["optimizer"])
        if saved_cls.ndim != 0 or saved_cls.dtype.kind != "U" or str(saved_cls) != cls:
            raise ValueError(f"state['optimizer']: expected {cls!r}, got {saved_cls.tolist()!r}")
        expected = self._state_keys()
        expected_set = set(expected)
        for key in expected:
            if key not in state:
                raise ValueError(f"state: expected key {key!r} (a {cls} state for these parameters), "
                                 f"got a state without it")
        for key in state:
            if key not in expected_set:
                raise ValueError(f"state: expected only the keys of a {cls} state for these parameters, "
                                 f"got unexpected key {key!r} (saved for a different model or setting?)")
        # Read each entry once: an NpzFile decompresses on every access.
        values = {key: state[key] for key in expected}
        t = _state_scalar(values["t"], "t", "i")
        if t < 0:
            raise ValueError(f"state['t']: expected an integer >= 0, got {t}")
        lr = check_float(_state_scalar(values["lr"], "lr", "f"), "state['lr']", minimum=0.0, strict_min=True)
        hyper = self._parse_hyperparameters(values)
        for kind, bufs in self._buffers.items():
            for name, buf in bufs.items():
                key = f"{kind}.{name}"
                check_array(values[key], f"state[{key!r}]", shape=buf.shape, dtype=buf.dtype)
        # everything is valid: commit
        for kind, bufs in self._buffers.items():
            for name, buf in bufs.items():
                np.copyto(buf, values[f"{kind}.{name}"])
        self._t = int(t)
        self._lr = lr
        self._set_hyperparameters(hyper)

    def __repr__(self) -> str:
        hp = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self._hyperparameters().items()}
        extra = "".join(f", {k}={v!r}" for k, v in hp.items())
        return (f"{type(self).__name__}({len(self.params)} params, lr={self._lr!r}{extra}, "
                f"clip_norm={self.clip_norm!r}, schedule={self.schedule!r}, t={self._t})")


# ----------------------------------------------------------------------------------------
# SGD
# ----------------------------------------------------------------------------------------


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    With ``momentum = mu`` and the step's learning rate ``lr_t`` (PyTorch's convention):

    * plain (``mu = 0``): :math:`p \leftarrow p - \text{lr}_t\, g`
    * heavy-ball momentum (Polyak 1964; Sutskever et al. 2013, eqs. 1-2):
      :math:`v \leftarrow \mu v + g,\; p \leftarrow p - \text{lr}_t\, v`
    * Nesterov's accelerated gradient (Sutskever et al. 2013, eqs. 3-4, in the
      reformulation of Bengio, Boulanger-Lewandowski & Pascanu 2013, eq. 7):
      :math:`v \leftarrow \mu v + g,\; p \leftarrow p - \text{lr}_t\,(g + \mu v)`

    Sutskever et al. put the learning rate inside the velocity (``v <- mu v - lr g``);
    for a constant learning rate the two forms produce the same iterates. The velocity
    ``v`` starts at zero, so the first momentum step equals plain SGD.

    Parameters
    ----------
    params, lr, clip_norm, schedule
        As in :class:`Optimizer`; each ``params`` array is float32 or float64 of any
        shape and its velocity has the same shape and dtype.
    momentum : float
        ``mu`` in [0, 1); 0 (the default) is plain SGD with no velocity buffer.
    nesterov : bool
        Use Nesterov momentum (requires ``momentum > 0``).

    State dict: ``"momentum"`` (0-d float64), ``"nesterov"`` (0-d bool) and, when
    ``momentum > 0``, ``"momentum_buffer.<name>"`` (the velocity ``v``).

    Raises
    ------
    TypeError
        As :class:`Optimizer`; ``nesterov`` not a bool.
    ValueError
        As :class:`Optimizer`; ``momentum`` not in [0, 1); ``nesterov=True`` with
        ``momentum == 0``.
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, *, clip_norm: float | None = None,
                 schedule: Callable[[int], float] | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, schedule=schedule)
        self.momentum, self.nesterov = self._check(momentum, nesterov, "momentum", "nesterov")
        if self.momentum > 0:
            self._add_buffer("momentum_buffer")

    @staticmethod
    def _check(momentum, nesterov, m_name: str, n_name: str) -> tuple[float, bool]:
        momentum = check_float(momentum, m_name, minimum=0.0)
        if not momentum < 1.0:
            raise ValueError(f"{m_name}: expected a number in [0, 1), got {momentum}")
        nesterov = check_bool(nesterov, n_name)
        if nesterov and momentum == 0.0:
            raise ValueError(f"{n_name}: expected nesterov=False when momentum is 0 (Nesterov needs momentum "
                             f"> 0), got nesterov=True with momentum=0")
        return momentum, bool(nesterov)

    @property
    def momentum_buffer(self) -> dict[str, np.ndarray]:
        """The live velocity arrays ``v`` by parameter name (empty if ``momentum == 0``)."""
        return self._buffers.get("momentum_buffer", {})

    def _decaying_buffers(self):
        return {"momentum_buffer": self.momentum} if self.momentum > 0 else {}

    def _apply(self, grads, lr_t, grad_scale):
        mu = self.momentum
        for dtype, lo, hi, g_pieces, p_pieces in self._chunk_pieces(grads):
            dt = dtype.type  # scalars in p's dtype: a float64 scalar would upcast float32 arrays
            if mu == 0.0:
                # p <- p - lr_t * g
                for g, _, _, s in g_pieces:
                    np.multiply(g, dt(lr_t * grad_scale), out=s)
                for _, p, s in p_pieces:
                    p -= s
                continue
            buf = self._flat["momentum_buffer"][dtype]
            v = buf[lo:hi]
            # v <- mu v + g
            v *= dt(mu)
            for g, start, shape, s in g_pieces:
                if grad_scale == 1.0:
                    _at(buf, start, g.size, shape)[...] += g  # no clipping this step: skip a multiply by 1
                else:
                    np.multiply(g, dt(grad_scale), out=s)
                    _at(buf, start, g.size, shape)[...] += s
            if self.nesterov:
                # p <- p - lr_t (g + mu v), as two in-place subtractions (no g + mu v temporary)
                for g, _, _, s in g_pieces:
                    np.multiply(g, dt(lr_t * grad_scale), out=s)
                for _, p, s in p_pieces:
                    p -= s
                np.multiply(v, dt(lr_t * mu), out=self._scratch_flat[dtype][lo:hi])
            else:
                # p <- p - lr_t v
                np.multiply(v, dt(lr_t), out=self._scratch_flat[dtype][lo:hi])
            for _, p, s in p_pieces:
                p -= s

    def _hyperparameters(self):
        return {"momentum": np.array(self.momentum, dtype=np.float64),
                "nesterov": np.array(self.nesterov, dtype=np.bool_)}

    def _parse_hyperparameters(self, state):
        momentum = _state_scalar(state["momentum"], "momentum", "f")
        nesterov = _state_scalar(state["nesterov"], "nesterov", "b")
        # (momentum > 0 here iff this optimizer has velocity buffers: the key check ensured it)
        momentum, nesterov = self._check(momentum, nesterov, "state['momentum']", "state['nesterov']")
        return {"momentum": momentum, "nesterov": nesterov}

    def _set_hyperparameters(self, values):
        self.momentum, self.nesterov = values["momentum"], values["nesterov"]


# ----------------------------------------------------------------------------------------
# Adam and AdamW
# ----------------------------------------------------------------------------------------


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015, Algorithm 1), with in-place, allocation-free steps.

    With :math:`g_t` the gradient at step :math:`t` (1-based) and :math:`m_0 = v_0 = 0`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t) \\
        \theta_t &= \theta_{t-1} - \alpha\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    where :math:`\alpha` is the step's learning rate ``lr_t``. The code computes the last
    two lines in the equivalent form of the paper's section 2 (last paragraph):
    :math:`\theta_t = \theta_{t-1} - \alpha_t\, m_t / (\sqrt{v_t} + \hat\epsilon)` with
    :math:`\alpha_t = \alpha \sqrt{1-\beta_2^t} / (1-\beta_1^t)` and
    :math:`\hat\epsilon = \epsilon \sqrt{1-\beta_2^t}` (multiply numerator and denominator
    of the original by :math:`\sqrt{1-\beta_2^t}`; with this :math:`\hat\epsilon` it is
    exactly the same update, not an approximation).

    By section 2.1 the step per coordinate is bounded by about :math:`\alpha`; in
    particular the first step is :math:`\alpha\, g / (|g| + \epsilon)`, of magnitude
    :math:`\alpha` for :math:`|g| \gg \epsilon`.

    Parameters
    ----------
    params, lr, clip_norm, schedule
        As in :class:`Optimizer`. ``m``, ``v`` and a scratch array are allocated per
        parameter with its shape and dtype (float32 parameters: float32 arithmetic).
    betas : (float, float)
        :math:`(\beta_1, \beta_2)`, each in [0, 1).
    eps : float
        :math:`\epsilon > 0`.

    State dict: ``"betas"`` ((2,) float64), ``"eps"`` (0-d float64),
    ``"m.<name>"`` and ``"v.<name>"`` (the raw moments :math:`m_t, v_t`, not bias-corrected).

    Raises
    ------
    TypeError
        As :class:`Optimizer`; ``betas`` not a pair of reals.
    ValueError
        As :class:`Optimizer` (``lr <= 0`` ...); ``betas[i]`` not in [0, 1); ``eps <= 0``.
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                 clip_norm: float | None = None, schedule: Callable[[int], float] | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, schedule=schedule)
        self.betas = _check_betas(betas)
        self.eps = check_float(eps, "eps", minimum=0.0, strict_min=True)
        self._add_buffer("m")
        self._add_buffer("v")

    @property
    def m(self) -> dict[str, np.ndarray]:
        """The live first-moment arrays :math:`m_t` by parameter name."""
        return self._buffers["m"]

    @property
    def v(self) -> dict[str, np.ndarray]:
        """The live second-moment arrays :math:`v_t` by parameter name."""
        return self._buffers["v"]

    def _decaying_buffers(self):
        return {"m": self.betas[0], "v": self.betas[1]}

    def _adam_coefficients(self, lr_t: float, grad_scale: float) -> tuple[float, ...]:
        """The step's scalars (Python floats, computed once per step)."""
        b1, b2 = self.betas
        t = self._t
        # bias corrections folded into alpha_t and eps_hat (Kingma & Ba 2015, section 2)
        bc1 = 1.0 - b1**t
        bc2_sqrt = math.sqrt(1.0 - b2**t)
        alpha_t = lr_t * bc2_sqrt / bc1
        eps_hat = self.eps * bc2_sqrt
        # clipping factor c folded into the moment coefficients: (1-b1)(c g), (1-b2)(c g)^2
        k1 = (1.0 - b1) * grad_scale
        k2 = (1.0 - b2) * grad_scale * grad_scale
        return b1, b2, k1, k2, alpha_t, eps_hat

    def _adam_chunks(self, grads, lr_t, grad_scale, shrink=1.0, decayed=frozenset()):
        """The Adam update (and AdamW's decay of the ``decayed`` names by ``shrink``), in
        place, one chunk of the flat buffers at a time. Every operation writes into m, v,
        the scratch s or p (``out=`` / in-place operators): no temporaries. Operations on
        m, v and s cover a whole chunk per ufunc call; only those reading g or writing p
        go piece by piece (unless the gradients / parameters lie end to end in memory)."""
        coefs = self._adam_coefficients(lr_t, grad_scale)
        for dtype, lo, hi, g_pieces, p_pieces in self._chunk_pieces(grads):
            # scalars in p's dtype: a float64 NumPy scalar would upcast float32 arrays (NEP 50)
            b1, b2, k1, k2, alpha_t, eps_hat = (dtype.type(c) for c in coefs)
            m, v = self._flat["m"][dtype][lo:hi], self._flat["v"][dtype][lo:hi]
            s = self._scratch_flat[dtype][lo:hi]
            # m_t = beta1 m_{t-1} + (1 - beta1) g_t
            m *= b1
            for g, _, _, sg in g_pieces:
                np.multiply(g, k1, out=sg)
            m += s
            # v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
            v *= b2
            for g, _, _, sg in g_pieces:
                np.multiply(g, g, out=sg)
            s *= k2
            v += s
            # m_hat_t = m_t / (1 - beta1^t); v_hat_t = v_t / (1 - beta2^t);
            # theta_t = theta_{t-1} - alpha m_hat_t / (sqrt(v_hat_t) + eps), computed as
            # theta_t = theta_{t-1} - alpha_t m_t / (sqrt(v_t) + eps_hat)  (same value; two fewer array passes)
            np.sqrt(v, out=s)
            s += eps_hat
            np.divide(m, s, out=s)
            s *= alpha_t
            for name, p, sp in p_pieces:
                if shrink != 1.0:
                    # theta <- (1 - lr_t lambda) theta   (AdamW, Algorithm 2 line 12, decay term; before the Adam step)
                    if name is not None:
                        if name in decayed:
                            p *= dtype.type(shrink)
                    else:
                        self._decay_chunk(p, lo, hi, dtype, shrink, decayed)
                p -= sp

    def _decay_chunk(self, p_chunk, lo, hi, dtype, shrink, decayed):
        """Shrink the decayed parameters' elements within a whole-chunk parameter view."""
        for grp in self._groups:
            if grp.dtype != dtype:
                continue
            for name, off, size in grp.slots:
                a, b = max(off, lo), min(off + size, hi)
                if a < b and name in decayed:
                    p_chunk[a - lo:b - lo] *= dtype.type(shrink)

    def _apply(self, grads, lr_t, grad_scale):
        self._adam_chunks(grads, lr_t, grad_scale)

    def _hyperparameters(self):
        return {"betas": np.array(self.betas, dtype=np.float64), "eps": np.array(self.eps, dtype=np.float64)}

    def _parse_hyperparameters(self, state):
        betas = np.asarray(state["betas"])
        if betas.shape != (2,) or betas.dtype.kind != "f":
            raise TypeError(f"state['betas']: expected a float array of shape (2,), "
                            f"got shape {betas.shape} dtype {betas.dtype}")
        return {"betas": _check_betas(betas.tolist(), "state['betas']"),
                "eps": check_float(_state_scalar(state["eps"], "eps", "f"), "state['eps']",
                                   minimum=0.0, strict_min=True)}

    def _set_hyperparameters(self, values):
        self.betas, self.eps = values["betas"], values["eps"]


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2).

    Each step first shrinks the decayed parameters, then applies the Adam update of
    :class:`Adam` computed from the gradient of the loss alone:

    .. math::

        \theta \leftarrow (1 - \text{lr}_t \lambda)\, \theta, \qquad
        \theta \leftarrow \theta - \alpha_t\, m_t / (\sqrt{v_t} + \hat\epsilon)

    i.e. :math:`\theta_t = \theta_{t-1} - \text{lr}_t \lambda \theta_{t-1} - \text{Adam step}`,
    Algorithm 2 line 12, with ``weight_decay`` :math:`= \lambda`. This is PyTorch's
    convention: the decay is scaled by the full learning rate ``lr_t``; in the paper it is
    scaled by the schedule multiplier :math:`\eta_t` only, so the paper's :math:`\lambda`
    corresponds to ``lr * weight_decay`` here.

    Why decouple (Loshchilov & Hutter 2019, section 2). For SGD, adding
    :math:`\lambda\theta` to the gradient and decaying the weights are the same update.
    For Adam they are not: a coupled L2 gradient is divided by :math:`\sqrt{\hat v_t} +
    \epsilon` like the rest, so weights with a large gradient history are regularised
    less per step. Its stationary points are still those of the MAP objective with the
    prior :math:`N(0, 1/(\lambda N))` (for a loss averaged over N examples); AdamW's
    stationary points instead satisfy :math:`\nabla = -\lambda(\sqrt{\hat v} +
    \epsilon)\theta`, MAP under a per-weight prior whose width depends on the gradient
    history. MLE vs MAP and weight decay as a Gaussian prior are worked out, with a
    measured figure, in ``docs/guide.md`` section 15 (``demos/guide/map_prior.py``).

    Parameters
    ----------
    params, lr, betas, eps, clip_norm, schedule
        As in :class:`Adam`.
    weight_decay : float
        :math:`\lambda \ge 0`; 0 gives exactly :class:`Adam`'s iterates. ``lr_t *
        weight_decay`` must stay below 1 (checked each step).
    decay_filter : callable, optional
        ``decay_filter(name) -> bool``, called once per parameter at construction; only
        names for which it returns True are decayed (e.g. ``lambda n: n.endswith(".W")``
        to exempt biases). Default: decay every parameter. The decayed names are in
        :attr:`decayed`.

    State dict: as :class:`Adam` plus ``"weight_decay"`` (0-d float64). The filter is not
    stored (pass the same one when resuming).

    Raises
    ------
    TypeError
        As :class:`Adam`; ``decay_filter`` not callable or returning a non-bool.
    ValueError
        As :class:`Adam`; ``weight_decay < 0``; in ``step``, ``lr_t * weight_decay >= 1``.
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2, *,
                 clip_norm: float | None = None, schedule: Callable[[int], float] | None = None,
                 decay_filter: Callable[[str], bool] | None = None) -> None:
        super().__init__(params, lr, betas, eps, clip_norm=clip_norm, schedule=schedule)
        self.weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)
        if decay_filter is None:
            self.decayed = frozenset(self.params)
        else:
            if not callable(decay_filter):
                raise TypeError(f"decay_filter: expected a callable name -> bool, got {type(decay_filter).__name__}")
            decayed = set()
            for name in self.params:
                keep = decay_filter(name)
                if not isinstance(keep, (bool, np.bool_)):
                    raise TypeError(f"decay_filter: expected a bool from decay_filter({name!r}), "
                                    f"got {type(keep).__name__} {keep!r}")
                if keep:
                    decayed.add(name)
            self.decayed = frozenset(decayed)

    def _check_lr_t(self, lr_t):
        if not lr_t * self.weight_decay < 1.0:
            raise ValueError(f"lr * weight_decay: expected < 1 (the decay factor 1 - lr_t*weight_decay must be "
                             f"positive), got lr_t={lr_t} * weight_decay={self.weight_decay}")

    def _apply(self, grads, lr_t, grad_scale):
        self._adam_chunks(grads, lr_t, grad_scale, 1.0 - lr_t * self.weight_decay, self.decayed)

    def _hyperparameters(self):
        return {**super()._hyperparameters(), "weight_decay": np.array(self.weight_decay, dtype=np.float64)}

    def _parse_hyperparameters(self, state):
        return {**super()._parse_hyperparameters(state),
                "weight_decay": check_float(_state_scalar(state["weight_decay"], "weight_decay", "f"),
                                            "state['weight_decay']", minimum=0.0)}

    def _set_hyperparameters(self, values):
        super()._set_hyperparameters(values)
        self.weight_decay = values["weight_decay"]


# ----------------------------------------------------------------------------------------
# learning-rate schedules
# ----------------------------------------------------------------------------------------


class Schedule:
    """Base class: ``schedule(t) -> float`` multiplier of the base learning rate.

    ``t`` is the optimizer's step count, 1 for the first step (``t = 0`` is accepted and
    means "before training"). Schedules are pure functions of ``t`` with no state, so a
    resumed optimizer only needs its ``t`` restored. Calling with a non-int ``t`` raises
    TypeError, with ``t < 0`` ValueError.
    """

    def __call__(self, t: int) -> float:
        return self._factor(check_int(t, "t", minimum=0))

    def _factor(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_gamma(gamma) -> float:
    return check_float(gamma, "gamma", minimum=0.0, maximum=1.0, strict_min=True)


class StepLR(Schedule):
    r"""Step decay: multiply the rate by ``gamma`` every ``step_size`` steps.

    ``factor(t) = gamma ** ((t - 1) // step_size)``: steps 1..step_size use the full
    rate, the next step_size use ``gamma``, and so on (PyTorch's ``StepLR`` with one
    scheduler step per optimizer step). The classic "divide by 10 when progress stalls"
    schedule (e.g. Krizhevsky, Sutskever & Hinton 2012, section 5).

    Raises TypeError/ValueError for ``step_size`` not an int >= 1 or ``gamma`` not in (0, 1].
    """

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_int(step_size, "step_size", minimum=1)
        self.gamma = _check_gamma(gamma)

    def _factor(self, t):
        return self.gamma ** (max(t - 1, 0) // self.step_size)

    def __repr__(self) -> str:
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma})"


class ExponentialLR(Schedule):
    r"""Exponential decay ``factor(t) = gamma ** (t - 1)`` (the first step uses the full rate).

    Raises TypeError/ValueError for ``gamma`` not a number in (0, 1].
    """

    def __init__(self, gamma: float) -> None:
        self.gamma = _check_gamma(gamma)

    def _factor(self, t):
        return self.gamma ** max(t - 1, 0)

    def __repr__(self) -> str:
        return f"ExponentialLR(gamma={self.gamma})"


class CosineLR(Schedule):
    r"""Cosine annealing (Loshchilov & Hutter 2017, SGDR eq. 5, a single cycle, no restarts).

    .. math::

        \text{factor}(t) = f_{min} + \tfrac12 (1 - f_{min})\,
        \bigl(1 + \cos(\pi \min(t, T) / T)\bigr)

    with :math:`T` = ``total_steps`` and :math:`f_{min}` = ``min_factor``: 1 at
    ``t = 0``, falling smoothly to exactly ``min_factor`` at ``t = total_steps``, and
    held there afterwards.

    Raises TypeError/ValueError for ``total_steps`` not an int >= 1 or ``min_factor`` not
    in [0, 1].
    """

    def __init__(self, total_steps: int, min_factor: float = 0.0) -> None:
        self.total_steps = check_int(total_steps, "total_steps", minimum=1)
        self.min_factor = check_float(min_factor, "min_factor", minimum=0.0, maximum=1.0)

    def _factor(self, t):
        if t >= self.total_steps:
            return self.min_factor  # exact, and constant after the end
        cos = 0.5 * (1.0 + math.cos(math.pi * t / self.total_steps))
        return self.min_factor + (1.0 - self.min_factor) * cos

    def __repr__(self) -> str:
        return f"CosineLR(total_steps={self.total_steps}, min_factor={self.min_factor})"


class LinearWarmup(Schedule):
    r"""Linear warm-up (Goyal et al. 2017, section 2.2), optionally followed by another schedule.

    ``factor(t) = t / warmup_steps`` for ``t <= warmup_steps`` (reaching 1 at
    ``warmup_steps``), then ``then(t - warmup_steps)`` if ``then`` is given, else 1. For
    example ``LinearWarmup(500, then=CosineLR(9_500))`` warms up for 500 steps and then
    anneals over the remaining 9,500.

    Raises TypeError/ValueError for ``warmup_steps`` not an int >= 1 and TypeError for a
    non-callable ``then``.
    """

    def __init__(self, warmup_steps: int, then: Callable[[int], float] | None = None) -> None:
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=1)
        if then is not None and not callable(then):
            raise TypeError(f"then: expected a schedule (callable t -> multiplier) or None, got {type(then).__name__}")
        self.then = then

    def _factor(self, t):
        if t <= self.warmup_steps:
            return t / self.warmup_steps
        return 1.0 if self.then is None else float(self.then(t - self.warmup_steps))

    def __repr__(self) -> str:
        return f"LinearWarmup(warmup_steps={self.warmup_steps}, then={self.then!r})"
