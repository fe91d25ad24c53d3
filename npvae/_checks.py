"""Argument validation shared by every public entry point.

Every error names the argument, the value that was expected and the value that was
received, in the form ``"<name>: expected <what>, got <what>"``, so a user can fix a
call without reading the source. Wrong types raise ``TypeError``; wrong values or
shapes raise ``ValueError``.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

__all__ = [
    "check_array",
    "check_choice",
    "check_dtype",
    "check_int",
    "check_float",
    "check_rng",
    "check_bool",
    "check_x",
    "memory_budget",
    "check_size",
]


def _shape_str(shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64; raise TypeError otherwise."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name}: expected float32 or float64, got {dt}")
    return dt


def check_array(
    x,
    name: str,
    *,
    shape: tuple | None = None,
    dtype=None,
    finite: bool = False,
    low: float | None = None,
    high: float | None = None,
) -> np.ndarray:
    """Validate a floating-point ``np.ndarray`` and return it unchanged.

    Parameters
    ----------
    x : object
        The value to check. It must already be a NumPy array with a floating dtype;
        nothing is converted, so no silent copies or upcasts happen.
    name : str
        The argument's name, used in the error message.
    shape : tuple of (int or None), optional
        Expected shape; ``None`` entries match any size. The rank must match exactly.
    dtype : dtype-like, optional
        Required dtype. If omitted any floating dtype is accepted.
    finite : bool
        If true, NaN or inf anywhere in ``x`` raises ValueError.
    low, high : float, optional
        Inclusive bounds every element must satisfy.

    Raises
    ------
    TypeError
        ``x`` is not an ndarray, is not floating point, or has the wrong dtype.
    ValueError
        Wrong rank or size, a non-finite value, or a value outside ``[low, high]``.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array (float32 or float64), got dtype {x.dtype}")
    if dtype is not None and x.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got dtype {x.dtype}")
    if shape is not None:
        wrong = x.ndim != len(shape)
        for want, got in zip(shape, x.shape):
            wrong = wrong or (want is not None and want != got)
        if wrong:
            raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got shape {x.shape}")
    if finite and x.size and not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name}: expected only finite values, got {bad} NaN or inf entries")
    if low is not None and x.size and x.min() < low:
        raise ValueError(f"{name}: expected values >= {low}, got minimum {float(x.min())!r}")
    if high is not None and x.size and x.max() > high:
        raise ValueError(f"{name}: expected values <= {high}, got maximum {float(x.max())!r}")
    return x


def check_int(value, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def check_float(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
) -> float:
    """Return ``value`` as a finite float within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if minimum is not None:
        if strict_min and value <= minimum:
            raise ValueError(f"{name}: expected a number > {minimum}, got {value}")
        if not strict_min and value < minimum:
            raise ValueError(f"{name}: expected a number >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: expected a number <= {maximum}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    """``value`` as a bool; TypeError naming ``name`` for anything but True/False (or a NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``; raise ValueError listing them otherwise."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_rng(rng, name: str = "rng") -> np.random.Generator:
    """Require an explicit ``np.random.Generator`` (never the global NumPy state)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name}: expected a numpy.random.Generator (e.g. np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )
    return rng


def check_x(x, x_dim: int, dtype, likelihood: str) -> np.ndarray:
    """A model's data batch: ``x`` (batch >= 1, x_dim), the model's dtype, finite, and in [0, 1]
    for a Bernoulli likelihood (its targets are probabilities). Returns ``x``; TypeError /
    ValueError naming ``x`` otherwise."""
    check_array(x, "x", shape=(None, x_dim), dtype=dtype, finite=True)
    if x.shape[0] == 0:
        raise ValueError(f"x: expected a batch of at least 1 example, got shape {x.shape}")
    if likelihood == "bernoulli":
        check_array(x, "x", low=0.0, high=1.0)
    return x


def memory_budget() -> int:
    """Bytes one run may plan to allocate: half of the memory left to this process.

    "Left" is the smaller of the physical memory and the address-space limit
    (``resource.RLIMIT_AS``, e.g. ``ulimit -v``), minus the address space the process
    already uses (``/proc/self/statm``). Sizes that would need more (a latent dimension of
    1e9, a checkpoint member declaring 8 TB) are refused before anything is allocated,
    with a one-line error (:func:`check_size`) instead of a MemoryError or the kernel's
    out-of-memory killer. Where the limits cannot be read, 8 GiB is assumed.
    """
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            total = min(total, soft - used)
    except (ImportError, OSError, ValueError):
        pass
    return max(total, 0) // 2


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.3g} GiB"


def check_size(value, name: str, cost, *, budget: int | None = None, what: str = "") -> int:
    """``value`` (an int >= 1) if ``cost(value)``, the bytes it needs, fits :func:`memory_budget`.

    ``cost``: a function of the size, non-decreasing (e.g. the bytes a run needs with this
    latent dimension and every other setting as given). The error names ``name``, the
    largest value that fits (found by bisection) and the budget:
    ``"--latent-dim: expected an integer <= 8812 (what fits in 3.9 GiB of memory), got 1000000000"``.
    """
    value = check_int(value, name, minimum=1)
    budget = memory_budget() if budget is None else budget
    if cost(value) <= budget:
        return value
    lo, hi = 0, value  # cost(lo) fits (or lo = 0), cost(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid)
    if lo == 0:
        raise ValueError(f"{name}: expected a value that fits in {_gib(budget)} of memory{what}, "
                         f"got {value} (even 1 does not fit)")
    raise ValueError(f"{name}: expected an integer <= {lo} (what fits in {_gib(budget)} of memory{what}), "
                     f"got {value}")
