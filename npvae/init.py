"""Weight initializers.

Each initializer has the signature ``init(shape, *, rng, dtype=np.float32) -> np.ndarray``
and draws from the explicit ``np.random.Generator`` it is given: npvae never touches
NumPy's global random state. ``shape`` is ``(fan_in, fan_out)`` for a weight matrix, the
layout used by :class:`npvae.layers.Linear` (``y = x @ W + b``).

Sources: Glorot & Bengio (2010), "Understanding the difficulty of training deep
feedforward neural networks", eq. 16; He et al. (2015), "Delving Deep into
Rectifiers", section 2.2.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_choice, check_dtype, check_rng

__all__ = [
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "zeros",
    "get",
    "INITIALIZERS",
]


def _fans(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise ValueError(f"shape: expected a non-empty shape of positive sizes, got {shape}")
    if len(shape) == 1:
        return shape[0], shape[0]
    return shape[0], shape[1]


def glorot_uniform(shape, *, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010, eq. 16).

    Returns an array of ``shape`` and ``dtype``. Raises ValueError for an empty or
    non-positive shape and TypeError for a non-Generator ``rng`` or non-float dtype.
    """
    fan_in, fan_out = _fans(shape)
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return check_rng(rng).uniform(-a, a, size=shape).astype(check_dtype(dtype))


def glorot_normal(shape, *, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """N(0, 2 / (fan_in + fan_out)) (Glorot & Bengio 2010). Same contract as glorot_uniform."""
    fan_in, fan_out = _fans(shape)
    std = np.sqrt(2.0 / (fan_in + fan_out))
    return (std * check_rng(rng).standard_normal(size=shape)).astype(check_dtype(dtype))


def he_normal(shape, *, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """N(0, 2 / fan_in) for ReLU networks (He et al. 2015, eq. 10). Same contract as glorot_uniform."""
    fan_in, _ = _fans(shape)
    std = np.sqrt(2.0 / fan_in)
    return (std * check_rng(rng).standard_normal(size=shape)).astype(check_dtype(dtype))


def he_uniform(shape, *, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / fan_in), the uniform twin of he_normal (variance 2 / fan_in)."""
    fan_in, _ = _fans(shape)
    a = np.sqrt(6.0 / fan_in)
    return check_rng(rng).uniform(-a, a, size=shape).astype(check_dtype(dtype))


def zeros(shape, *, rng: np.random.Generator | None = None, dtype=np.float32) -> np.ndarray:
    """All zeros (used for biases). ``rng`` is accepted for a uniform signature and unused."""
    _fans(shape)
    return np.zeros(shape, dtype=check_dtype(dtype))


INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "zeros": zeros,
}


def get(name: str):
    """Look up an initializer by name; raises ValueError for an unknown name."""
    return INITIALIZERS[check_choice(name, "init", tuple(INITIALIZERS))]
