r"""Optimizers, gradient clipping and learning-rate schedules, written as their papers write them.

Each update is one line of code per line of its paper's algorithm, the paper's symbols in
the comments:

* :meth:`Adam.step`: Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization",
  ICLR, Algorithm 1.
* :class:`AdamW`: Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization",
  ICLR, Algorithm 2 line 12 (the decay in ``AdamW._begin_step``, then :meth:`Adam.step`).
* :meth:`SGD.step`: (Nesterov) momentum, Sutskever, Martens, Dahl & Hinton (2013), "On the
  importance of initialization and momentum in deep learning", ICML, eqs. 1-4.
* :func:`clip_grad_norm` and ``clip_norm=``: Pascanu, Mikolov & Bengio (2013), "On the
  difficulty of training recurrent neural networks", ICML, Algorithm 1.
* ``schedule=``: :class:`StepLR`, :class:`ExponentialLR`, :class:`CosineLR` (Loshchilov &
  Hutter 2017, "SGDR", ICLR, eq. 5), :class:`LinearWarmup` (Goyal et al. 2017, "Accurate,
  Large Minibatch SGD", section 2.2).

An optimizer updates a model's ``params`` arrays **in place**, so the layers owning them
see the new values::

    opt = Adam(model.params, lr=1e-3, clip_norm=5.0, schedule=CosineLR(10_000))
    for x in batches:
        model.forward(x)
        opt.step(model.backward())     # same keys, shapes and dtypes as model.params

The one speed trick, beside the algorithms and switched by :data:`FLUSH_SUBNORMALS`: every
:data:`FLUSH_EVERY` steps, state entries about to turn subnormal are set to zero. Subnormal
floats cost ~100x a normal operation on x86 and Adam's ``m`` for rarely-on MNIST pixels
decays through that range; the flush saved 30 % of a training epoch and changes no
parameter (tested bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from ._checks import check_array, check_bool, check_dtype, check_float, check_int

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm",
           "Schedule", "StepLR", "ExponentialLR", "CosineLR", "LinearWarmup"]

#: Speed only, part of no algorithm: zero the decaying state's entries (Adam's m and v,
#: SGD's momentum) that could turn subnormal before the next flush, every FLUSH_EVERY
#: steps. Why: float32 subnormals (|x| < 1.2e-38) cost ~100x a normal operation on x86,
#: and Adam's m for rarely-on MNIST pixels decays by beta1 per step right through that
#: range: after the default demo's 10 epochs 18 % of encoder.0's m was subnormal and an
#: epoch took 3.7 s instead of 2.1 s; the flush saved that 30 %. A flushed entry's update
#: is below alpha * 1e-35 / eps ~ 1e-30, which changes no parameter of magnitude > 1e-22.
#: (XLA sets the CPU's flush-to-zero mode instead; NumPy cannot.) False: the bare algorithms.
FLUSH_SUBNORMALS = True
FLUSH_EVERY = 64  #: steps between flushes

#: Speed only: Adam.step runs the fast form written beside Algorithm 1's lines (the same
#: update, reordered as the paper's section 2 suggests, on slices of BLOCK elements); False
#: runs the literal lines. tests/test_fast_paths.py checks that both give the same numbers.
FAST_ADAM = True
BLOCK = 1 << 16  #: elements per slice of the fast Adam update (256 kB in float32)


def _flush_subnormals(state: Mapping[str, np.ndarray], decay: float) -> None:
    """Zero the entries of ``state``'s arrays below ``tiny / decay**FLUSH_EVERY``: those
    that FLUSH_EVERY steps of decay could make subnormal (see FLUSH_SUBNORMALS)."""
    for a in state.values():
        # max(., 0.5): a faster decay crosses the subnormal range in a few steps anyway,
        # and the threshold stays tiny (decay 0 would zero everything)
        below = np.finfo(a.dtype).tiny / max(decay, 0.5) ** FLUSH_EVERY
        np.copyto(a, 0, where=np.abs(a) < below)


# ---------------------------------------------------------------------------- clipping


def _global_norm(arrays: Iterable[np.ndarray]) -> float:
    """``sqrt(sum_i ||g_i||^2)``; ``np.dot`` squares and sums in one pass, in g's dtype
    (so float32 overflows for ``|g| > ~1e19``)."""
    return math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in arrays))


def _clip_coefficient(total: float, max_norm: float) -> float:
    """``min(1, max_norm / total)``; 1 when ``total`` is not finite."""
    return max_norm / total if math.isfinite(total) and total > max_norm else 1.0


def clip_grad_norm(grads, max_norm: float) -> float:
    r"""Rescale gradients in place so that their global norm is at most ``max_norm``.

    Pascanu, Mikolov & Bengio (2013), Algorithm 1, over all arrays jointly (as
    TensorFlow's ``clip_by_global_norm``): if :math:`\|g\| = \sqrt{\sum_i \|g_i\|^2} >`
    ``max_norm``, every array is multiplied by ``max_norm`` :math:`/ \|g\|` (the direction
    is kept); otherwise, or if the norm is NaN/inf, nothing changes.

    ``grads``: a Mapping or iterable of float32/float64 arrays of any shapes, modified in
    place in their own dtypes; ``max_norm``: a float > 0. Returns the norm *before*
    clipping (a float). Raises TypeError for a non-float array or non-real ``max_norm``,
    ValueError for ``max_norm`` not finite and > 0.
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
            g *= coef
    return total


# ---------------------------------------------------------------------------- base class


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


def _state_scalar(state: Mapping, key: str, kind: str):
    """``state[key]``, a 0-d array, as a Python scalar of ``kind`` ('i', 'f' or 'b')."""
    arr = np.asarray(state[key])
    if not (arr.ndim == 0 and (arr.dtype.kind == kind or (kind == "f" and arr.dtype.kind in "iu"))):
        want = {"i": "integer", "f": "float", "b": "bool"}[kind]
        raise TypeError(f"state[{key!r}]: expected a 0-d {want} array, got shape {arr.shape} dtype {arr.dtype}")
    return arr[()].item()


class Optimizer:
    r"""Base class: in-place first-order updates of a dict of live parameter arrays.

    Parameters: ``params`` (Mapping[str, np.ndarray], e.g. ``model.params``): writeable
    float32/float64 arrays of any shapes, a distinct array per name; ``self.params`` is a
    new dict holding the *same* arrays, updated in place. ``lr``: base learning rate > 0
    (a settable, validated attribute). ``clip_norm`` (optional, > 0): each step uses the
    gradients rescaled to global norm at most ``clip_norm`` (:func:`clip_grad_norm` on a
    copy; the caller's arrays are never modified). ``schedule`` (optional callable,
    ``schedule(t) -> multiplier >= 0``): step ``t`` (1 for the first) uses ``lr_t = lr *
    schedule(t)``.

    Attributes: ``t`` (steps taken, read-only), ``last_lr`` (the last step's ``lr_t``),
    ``last_grad_norm`` (with ``clip_norm``: the last step's global gradient norm before
    clipping; else None) and the arguments above.

    State (``m``, ``v``, ``momentum_buffer``): one plain array per parameter, of its shape
    and dtype. Python floats are "weak" scalars in NumPy 2 (NEP 50), so float32 parameters
    get float32 arithmetic. Each line of an update makes at most two temporaries of one
    parameter's size (peak about 4x the largest parameter, plus a gradient copy on a
    clipped step). NaN/inf gradients are not special-cased: they propagate.

    Raises TypeError for ``params`` not a Mapping, a name not a str, an array not
    float32/float64, or ``schedule`` not callable; ValueError for ``params`` empty, an
    array read-only or listed twice, ``lr`` or ``clip_norm`` not > 0.

    A subclass writes its update rule in ``step``, starting with ``grads, lr_t =
    self._begin_step(grads)``, names its state in ``_state`` and its hyperparameters in
    ``_HYPERPARAMETERS`` (validated on load by ``_check_hyperparameters``).
    """

    _HYPERPARAMETERS: tuple[str, ...] = ()

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

    def _zeros(self) -> dict[str, np.ndarray]:
        """A new zero array per parameter, of its shape and dtype."""
        return {name: np.zeros(p.shape, p.dtype) for name, p in self.params.items()}

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Take one optimization step, updating ``self.params`` in place.

        ``grads``: the gradient of the loss for each parameter, exactly the keys of
        ``params``, each of its parameter's shape and dtype; only read, never modified.
        First (``_begin_step``): the checks; ``t += 1``; ``lr_t``; with ``clip_norm``, the
        global norm ``n`` goes to ``last_grad_norm`` and if ``n > clip_norm`` the update
        uses a copy of the gradients times ``clip_norm / n``. Then the update rule.

        Raises TypeError for ``grads`` not a Mapping or an entry not an ndarray of its
        parameter's dtype; ValueError for a key missing or unexpected (named), a shape
        unlike the parameter's, ``schedule(t)`` not a finite number >= 0, or (AdamW)
        ``lr_t * weight_decay >= 1``. A rejected step changes nothing (not even ``t``).
        """
        raise NotImplementedError  # pragma: no cover - each optimizer writes its update rule

    def _begin_step(self, grads: Mapping[str, np.ndarray], weight_decay: float = 0.0):
        """What every step does before its update rule (see :meth:`step`); returns
        ``(g, lr_t)``, ``g`` being ``grads`` itself or its clipped copy. ``weight_decay``:
        AdamW's lambda, checked so that its factor ``1 - lr_t * lambda`` stays positive."""
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
            g = grads[name]
            if not (isinstance(g, np.ndarray) and g.dtype == p.dtype and g.shape == p.shape):
                check_array(g, f"grads[{name!r}]", shape=p.shape, dtype=p.dtype)  # raises, naming the difference
        t, lr_t = self._t + 1, self._lr
        if self.schedule is not None:
            lr_t *= check_float(self.schedule(t), f"schedule({t})", minimum=0.0)
        if not lr_t * weight_decay < 1.0:
            raise ValueError(f"lr * weight_decay: expected < 1 (the decay factor 1 - lr_t*weight_decay must be "
                             f"positive), got lr_t={lr_t} * weight_decay={weight_decay}")
        # all checks passed: from here on the step cannot fail half-way
        self._t, self.last_lr = t, lr_t
        if self.clip_norm is not None:
            self.last_grad_norm = _global_norm(grads.values())
            c = _clip_coefficient(self.last_grad_norm, self.clip_norm)
            if c != 1.0:  # scale a copy: the caller's arrays stay untouched
                grads = {name: g * c for name, g in grads.items()}
        return grads, lr_t

    def _state(self) -> dict[str, dict[str, np.ndarray]]:
        """The state arrays by kind, e.g. ``{"m": self.m, "v": self.v}``."""
        return {}

    def _check_hyperparameters(self, state: Mapping[str, np.ndarray]) -> dict:
        """The ``_HYPERPARAMETERS`` in ``state``, validated, as Python values."""
        return {}

    def _hyperparameters(self) -> dict[str, np.ndarray]:
        values = {k: getattr(self, k) for k in self._HYPERPARAMETERS}
        return {k: np.array(v, dtype=np.bool_ if isinstance(v, bool) else np.float64) for k, v in values.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return a snapshot of the optimizer: ``{key: np.ndarray}``, all copies.

        Keys: ``"optimizer"`` (0-d str, the class name), ``"t"`` (0-d int64), ``"lr"``
        (0-d float64), the class's hyperparameters (e.g. ``"betas"`` (2,) float64,
        ``"eps"`` 0-d float64) and ``"<kind>.<param name>"`` per state array (e.g.
        ``"m.encoder.0.W"``, its parameter's shape and dtype). No object arrays:
        ``np.savez(path, **opt.state_dict())`` / ``np.load(path, allow_pickle=False)``
        round-trip it. Not stored: ``clip_norm``, ``schedule`` (a function of ``t``) and
        AdamW's ``decay_filter`` (pass the same ones when resuming), and the parameters.
        """
        state = {"optimizer": np.array(type(self).__name__), "t": np.array(self._t, dtype=np.int64),
                 "lr": np.array(self._lr, dtype=np.float64), **self._hyperparameters()}
        for kind, arrays in self._state().items():
            state.update({f"{kind}.{name}": a.copy() for name, a in arrays.items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict` snapshot (a dict or ``np.load``'s NpzFile) in place.

        Restores ``t``, ``lr``, the hyperparameters (overriding the constructor's, as in
        PyTorch, so a resumed run continues bit for bit) and every state array (copied
        into the live arrays). Everything is validated before anything changes.

        Raises TypeError for ``state`` not a Mapping, an entry of the wrong kind (e.g. a
        float ``t``) or a state array of another dtype than its parameter's; ValueError
        for a state of another class, a key missing or unexpected (named: e.g. another
        architecture or momentum setting), a state array's shape unlike its parameter's,
        or a value out of range (``t < 0``, ``lr <= 0``, ``betas[0]`` not in [0, 1) ...).
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
        arrays = {f"{kind}.{name}": a for kind, d in self._state().items() for name, a in d.items()}
        expected = ["optimizer", "t", "lr", *self._HYPERPARAMETERS, *arrays]
        for key in expected:
            if key not in state:
                raise ValueError(f"state: expected key {key!r} (a {cls} state for these parameters), "
                                 f"got a state without it")
        for key in state:
            if key not in expected:
                raise ValueError(f"state: expected only the keys of a {cls} state for these parameters, "
                                 f"got unexpected key {key!r} (saved for a different model or setting?)")
        values = {key: state[key] for key in expected}  # read once: an NpzFile decompresses on every access
        t = _state_scalar(values, "t", "i")
        if t < 0:
            raise ValueError(f"state['t']: expected an integer >= 0, got {t}")
        lr = check_float(_state_scalar(values, "lr", "f"), "state['lr']", minimum=0.0, strict_min=True)
        hyper = self._check_hyperparameters(values)
        for key, a in arrays.items():
            check_array(values[key], f"state[{key!r}]", shape=a.shape, dtype=a.dtype)
        # everything is valid: commit
        for key, a in arrays.items():
            np.copyto(a, values[key])
        self._t, self._lr = int(t), lr
        for name, value in hyper.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v.tolist()!r}" for k, v in self._hyperparameters().items())
        return (f"{type(self).__name__}({len(self.params)} params, lr={self._lr!r}{extra}, "
                f"clip_norm={self.clip_norm!r}, schedule={self.schedule!r}, t={self._t})")


# ---------------------------------------------------------------------------- SGD


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    With ``momentum`` :math:`\mu` and the step's learning rate ``lr_t`` (PyTorch's convention):

    * plain (:math:`\mu = 0`): :math:`p \leftarrow p - \text{lr}_t\, g`
    * heavy-ball momentum (Polyak 1964; Sutskever et al. 2013, eqs. 1-2):
      :math:`v \leftarrow \mu v + g,\; p \leftarrow p - \text{lr}_t\, v`
    * Nesterov's accelerated gradient (Sutskever et al. 2013, eqs. 3-4, as reformulated
      by Bengio, Boulanger-Lewandowski & Pascanu 2013, eq. 7):
      :math:`v \leftarrow \mu v + g,\; p \leftarrow p - \text{lr}_t\,(g + \mu v)`

    Sutskever et al. put the learning rate inside the velocity (``v <- mu v - lr g``); for
    a constant rate both forms give the same iterates. ``v`` starts at zero.

    Parameters: ``params``, ``lr``, ``clip_norm``, ``schedule`` as in :class:`Optimizer`;
    ``momentum`` :math:`\mu` in [0, 1) (0: plain SGD, no velocity); ``nesterov`` (bool,
    needs ``momentum > 0``). Attribute ``momentum_buffer``: the velocity per parameter
    name, of its shape and dtype (empty if ``momentum == 0``). State dict: ``"momentum"``
    (0-d float64), ``"nesterov"`` (0-d bool), ``"momentum_buffer.<name>"`` if ``momentum > 0``.

    Raises TypeError as :class:`Optimizer` or for a non-bool ``nesterov``; ValueError as
    :class:`Optimizer`, for ``momentum`` not in [0, 1) or ``nesterov`` without momentum.
    """

    _HYPERPARAMETERS = ("momentum", "nesterov")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, *, clip_norm: float | None = None,
                 schedule: Callable[[int], float] | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, schedule=schedule)
        self.momentum, self.nesterov = self._check(momentum, nesterov, "momentum", "nesterov")
        self.momentum_buffer: dict[str, np.ndarray] = self._zeros() if self.momentum > 0 else {}

    @staticmethod
    def _check(momentum, nesterov, m_name: str, n_name: str) -> tuple[float, bool]:
        momentum = check_float(momentum, m_name, minimum=0.0)
        if not momentum < 1.0:
            raise ValueError(f"{m_name}: expected a number in [0, 1), got {momentum}")
        if check_bool(nesterov, n_name) and momentum == 0.0:
            raise ValueError(f"{n_name}: expected nesterov=False when momentum is 0 (Nesterov needs momentum "
                             f"> 0), got nesterov=True with momentum=0")
        return momentum, bool(nesterov)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One step of the update in the class docstring (Sutskever et al. 2013, eqs. 1-4).
        ``grads`` and the errors raised: as :meth:`Optimizer.step`."""
        grads, lr_t = self._begin_step(grads)  # checks; t ← t + 1; lr_t; g (clipped if clip_norm is set)
        mu = self.momentum
        for name, p in self.params.items():
            g = grads[name]
            if mu == 0.0:
                p -= lr_t * g                           # p ← p − lr_t·g
                continue
            v = self.momentum_buffer[name]
            np.add(mu * v, g, out=v)                    # v ← μ·v + g
            if self.nesterov:
                p -= lr_t * (g + mu * v)                # p ← p − lr_t·(g + μ·v)
            else:
                p -= lr_t * v                           # p ← p − lr_t·v
        if FLUSH_SUBNORMALS and self._t % FLUSH_EVERY == 0:  # speed only: see FLUSH_SUBNORMALS
            _flush_subnormals(self.momentum_buffer, mu)

    def _state(self):
        return {"momentum_buffer": self.momentum_buffer} if self.momentum > 0 else {}

    def _check_hyperparameters(self, state):
        # (momentum > 0 here iff this optimizer has velocity arrays: the key check ensured it)
        checked = self._check(_state_scalar(state, "momentum", "f"), _state_scalar(state, "nesterov", "b"),
                              "state['momentum']", "state['nesterov']")
        return dict(zip(self._HYPERPARAMETERS, checked))


# ---------------------------------------------------------------------------- Adam, AdamW


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015, Algorithm 1).

    With :math:`g_t` the gradient at step :math:`t` (1-based), :math:`\alpha` the step's
    learning rate ``lr_t`` and :math:`m_0 = v_0 = 0`, :meth:`step` is these five lines:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t) \\
        \hat v_t &= v_t / (1 - \beta_2^t) \\
        \theta_t &= \theta_{t-1} - \alpha\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    (Section 2 of the paper folds the last three into :math:`\theta_t = \theta_{t-1} -
    \alpha_t m_t / (\sqrt{v_t} + \hat\epsilon)` with :math:`\alpha_t = \alpha
    \sqrt{1-\beta_2^t} / (1-\beta_1^t)`, :math:`\hat\epsilon = \epsilon\sqrt{1-\beta_2^t}`:
    the same update in two fewer array passes.) By section 2.1 a step moves each
    coordinate by about :math:`\alpha` at most; the first step is :math:`\alpha\, g /
    (|g| + \epsilon)`.

    Parameters: ``params``, ``lr``, ``clip_norm``, ``schedule`` as in :class:`Optimizer`;
    ``betas`` :math:`(\beta_1, \beta_2)`, each in [0, 1); ``eps`` :math:`\epsilon > 0`.
    Attributes ``m``, ``v``: the raw moments :math:`m_t, v_t` (not bias-corrected) per
    parameter name, of its shape and dtype. State dict: ``"betas"`` ((2,) float64),
    ``"eps"`` (0-d float64), ``"m.<name>"``, ``"v.<name>"``.

    Raises TypeError as :class:`Optimizer` or for ``betas`` not a pair of reals;
    ValueError as :class:`Optimizer`, for ``betas[i]`` not in [0, 1) or ``eps <= 0``.
    """

    _HYPERPARAMETERS = ("betas", "eps")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                 clip_norm: float | None = None, schedule: Callable[[int], float] | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, schedule=schedule)
        self.betas = _check_betas(betas)
        self.eps = check_float(eps, "eps", minimum=0.0, strict_min=True)
        self.m = self._zeros()  # m_0 = 0 (1st moment vector)
        self.v = self._zeros()  # v_0 = 0 (2nd raw moment vector)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One step of Kingma & Ba (2015), Algorithm 1 (the class docstring's five lines).
        ``grads`` and the errors raised: as :meth:`Optimizer.step`."""
        grads, alpha = self._begin_step(grads)  # checks; t ← t + 1; α = lr_t; g_t (clipped if clip_norm is set)
        (beta1, beta2), eps, t = self.betas, self.eps, self._t
        for name, theta in self.params.items():
            g, m, v = grads[name], self.m[name], self.v[name]
            if not FAST_ADAM:
                np.add(beta1 * m, (1 - beta1) * g, out=m)        # m_t = β1·m_{t-1} + (1 - β1)·g_t
                np.add(beta2 * v, (1 - beta2) * g**2, out=v)     # v_t = β2·v_{t-1} + (1 - β2)·g_t²
                m_hat = m / (1 - beta1**t)                       # m̂_t = m_t / (1 - β1^t)
                v_hat = v / (1 - beta2**t)                       # v̂_t = v_t / (1 - β2^t)
                theta -= alpha * m_hat / (np.sqrt(v_hat) + eps)  # θ_t = θ_{t-1} - α·m̂_t / (√v̂_t + ε)
                continue
            # FAST: the same update in the order Kingma & Ba give at the end of their section 2,
            # α_t = α·√(1 - β2^t)/(1 - β1^t) and ε̂ = ε·√(1 - β2^t), so that m̂ and v̂ are never
            # formed, computed in place on slices of BLOCK elements with one small scratch array
            # (the lines above allocate a parameter-sized temporary per operation: 5.2 ms against
            # 1.2 ms a step for the 784-400-20 VAE; see benchmarks/README.md, "Speed tricks").
            alpha_t = alpha * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            eps_hat = eps * math.sqrt(1 - beta2**t)
            if theta.flags.c_contiguous:  # flat views, cut into slices of BLOCK elements
                th_f, g_f, m_f, v_f, block = theta.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), BLOCK
            else:  # a strided parameter: reshape would copy it, so it is updated whole
                th_f, g_f, m_f, v_f, block = theta, g, m, v, max(len(theta), 1)
            for i in range(0, len(th_f), block):
                th_s, g_s, m_s, v_s = th_f[i:i + block], g_f[i:i + block], m_f[i:i + block], v_f[i:i + block]
                tmp = np.empty_like(th_s)                        # one scratch slice, reused line by line
                np.multiply(g_s, 1 - beta1, out=tmp)             # (1 - β1)·g_t
                m_s *= beta1
                m_s += tmp                                       # m_t = β1·m_{t-1} + (1 - β1)·g_t
                np.multiply(g_s, g_s, out=tmp)
                tmp *= 1 - beta2                                 # (1 - β2)·g_t²
                v_s *= beta2
                v_s += tmp                                       # v_t = β2·v_{t-1} + (1 - β2)·g_t²
                np.sqrt(v_s, out=tmp)
                tmp += eps_hat                                   # √v_t + ε̂
                np.divide(m_s, tmp, out=tmp)
                tmp *= alpha_t                                   # α_t·m_t / (√v_t + ε̂)
                th_s -= tmp                                      # θ_t = θ_{t-1} - α_t·m_t / (√v_t + ε̂)
        if FLUSH_SUBNORMALS and t % FLUSH_EVERY == 0:  # speed only, not Algorithm 1: see FLUSH_SUBNORMALS
            _flush_subnormals(self.m, beta1)
            _flush_subnormals(self.v, beta2)

    def _state(self):
        return {"m": self.m, "v": self.v}

    def _check_hyperparameters(self, state):
        betas = np.asarray(state["betas"])
        if betas.shape != (2,) or betas.dtype.kind != "f":
            raise TypeError(f"state['betas']: expected a float array of shape (2,), "
                            f"got shape {betas.shape} dtype {betas.dtype}")
        return {"betas": _check_betas(betas.tolist(), "state['betas']"),
                "eps": check_float(_state_scalar(state, "eps", "f"), "state['eps']", minimum=0.0, strict_min=True)}


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2).

    Each step first shrinks the decayed parameters (in ``_begin_step``), then applies
    :meth:`Adam.step`'s update computed from the gradient of the loss alone:

    .. math::

        \theta_{t-1} \leftarrow \theta_{t-1} - \text{lr}_t \lambda\, \theta_{t-1}, \qquad
        \theta_t = \theta_{t-1} - \alpha\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    i.e. Algorithm 2 line 12 with ``weight_decay`` :math:`= \lambda`. This is PyTorch's
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

    Parameters: as :class:`Adam`, plus ``weight_decay`` :math:`\lambda \ge 0` (0 gives
    exactly Adam's iterates; ``lr_t * weight_decay`` must stay below 1, checked each step)
    and ``decay_filter``: ``decay_filter(name) -> bool``, called once per parameter at
    construction; only names for which it returns True are decayed (e.g. ``lambda n:
    n.endswith(".W")`` exempts biases; default: all). Attribute ``decayed``: the frozenset
    of decayed names. State dict: as :class:`Adam` plus ``"weight_decay"`` (0-d float64);
    the filter is not stored (pass the same one when resuming).

    Raises TypeError as :class:`Adam` or for ``decay_filter`` not callable or returning a
    non-bool; ValueError as :class:`Adam`, for ``weight_decay < 0``, and in ``step`` for
    ``lr_t * weight_decay >= 1``.
    """

    _HYPERPARAMETERS = ("betas", "eps", "weight_decay")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2, *,
                 clip_norm: float | None = None, schedule: Callable[[int], float] | None = None,
                 decay_filter: Callable[[str], bool] | None = None) -> None:
        super().__init__(params, lr, betas, eps, clip_norm=clip_norm, schedule=schedule)
        self.weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)
        if decay_filter is not None and not callable(decay_filter):
            raise TypeError(f"decay_filter: expected a callable name -> bool, got {type(decay_filter).__name__}")
        keep = {name: True if decay_filter is None else decay_filter(name) for name in self.params}
        for name, k in keep.items():
            if not isinstance(k, (bool, np.bool_)):
                raise TypeError(f"decay_filter: expected a bool from decay_filter({name!r}), "
                                f"got {type(k).__name__} {k!r}")
        self.decayed = frozenset(name for name, k in keep.items() if k)

    def _begin_step(self, grads):
        grads, lr_t = super()._begin_step(grads, self.weight_decay)  # checks; t ← t + 1; lr_t; clipping
        for name in self.decayed:
            self.params[name] *= 1 - lr_t * self.weight_decay  # θ ← θ − lr_t·λ·θ  (Algorithm 2, line 12)
        return grads, lr_t  # then Adam.step: the Adam update from the loss gradient alone

    def _check_hyperparameters(self, state):
        return {**super()._check_hyperparameters(state),
                "weight_decay": check_float(_state_scalar(state, "weight_decay", "f"), "state['weight_decay']",
                                            minimum=0.0)}


# ---------------------------------------------------------------------------- schedules


class Schedule:
    """Base class: ``schedule(t) -> float``, the multiplier of the base learning rate.

    ``t`` is the optimizer's step count, 1 for the first step (0 means "before
    training"). Schedules are pure functions of ``t``, so a resumed optimizer only needs
    its ``t``. A non-int ``t`` raises TypeError, ``t < 0`` ValueError.
    """

    def __call__(self, t: int) -> float:
        return self._factor(check_int(t, "t", minimum=0))

    def _factor(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _check_gamma(gamma) -> float:
    return check_float(gamma, "gamma", minimum=0.0, maximum=1.0, strict_min=True)


class StepLR(Schedule):
    """Step decay ``factor(t) = gamma ** ((t - 1) // step_size)``: steps 1..step_size use
    the full rate, the next step_size ``gamma`` times it, ... (PyTorch's ``StepLR`` with
    one scheduler step per optimizer step; "divide by 10 when progress stalls", e.g.
    Krizhevsky, Sutskever & Hinton 2012, section 5). Raises TypeError/ValueError for
    ``step_size`` not an int >= 1 or ``gamma`` not in (0, 1]."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_int(step_size, "step_size", minimum=1)
        self.gamma = _check_gamma(gamma)

    def _factor(self, t):
        return self.gamma ** (max(t - 1, 0) // self.step_size)


class ExponentialLR(Schedule):
    """Exponential decay ``factor(t) = gamma ** (t - 1)`` (the first step uses the full
    rate). Raises TypeError/ValueError for ``gamma`` not a number in (0, 1]."""

    def __init__(self, gamma: float) -> None:
        self.gamma = _check_gamma(gamma)

    def _factor(self, t):
        return self.gamma ** max(t - 1, 0)


class CosineLR(Schedule):
    r"""Cosine annealing (Loshchilov & Hutter 2017, SGDR eq. 5; one cycle, no restarts):

    .. math:: \text{factor}(t) = f_{min} + \tfrac12 (1 - f_{min})\,(1 + \cos(\pi \min(t, T) / T))

    with :math:`T` = ``total_steps``, :math:`f_{min}` = ``min_factor``: 1 at ``t = 0``,
    exactly ``min_factor`` from ``t = total_steps`` on. Raises TypeError/ValueError for
    ``total_steps`` not an int >= 1 or ``min_factor`` not in [0, 1].
    """

    def __init__(self, total_steps: int, min_factor: float = 0.0) -> None:
        self.total_steps = check_int(total_steps, "total_steps", minimum=1)
        self.min_factor = check_float(min_factor, "min_factor", minimum=0.0, maximum=1.0)

    def _factor(self, t):
        if t >= self.total_steps:
            return self.min_factor  # exact, and constant after the end
        cos = 0.5 * (1.0 + math.cos(math.pi * t / self.total_steps))
        return self.min_factor + (1.0 - self.min_factor) * cos


class LinearWarmup(Schedule):
    """Linear warm-up (Goyal et al. 2017, section 2.2), optionally followed by another schedule:
    ``factor(t) = t / warmup_steps`` up to ``warmup_steps``, then ``then(t - warmup_steps)``
    (1 if ``then`` is None); e.g. ``LinearWarmup(500, then=CosineLR(9_500))``. Raises
    TypeError/ValueError for ``warmup_steps`` not an int >= 1, TypeError for a
    non-callable ``then``."""

    def __init__(self, warmup_steps: int, then: Callable[[int], float] | None = None) -> None:
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=1)
        if then is not None and not callable(then):
            raise TypeError(f"then: expected a schedule (callable t -> multiplier) or None, got {type(then).__name__}")
        self.then = then

    def _factor(self, t):
        if t <= self.warmup_steps:
            return t / self.warmup_steps
        return 1.0 if self.then is None else float(self.then(t - self.warmup_steps))
