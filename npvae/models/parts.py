r"""Pieces every model shares: the result type, the Gaussian head, likelihoods by name, input checks.

Plain functions and small layer-like objects, no base class: a model file composes them.

* :class:`Terms` -- what every ``forward`` returns (``loss`` plus a ``metrics`` dict).
* :class:`GaussianHead` -- splits an encoder output ``h = [mu, logvar_raw]`` and clips
  ``logvar`` to :data:`LOGVAR_MIN`, :data:`LOGVAR_MAX`, with its backward.
* :func:`make_likelihood` -- the decoder distribution p(x|z) from its name (:data:`LIKELIHOODS`).
* :func:`check_x`, :func:`check_labels`, :func:`noise` -- argument checks shared by the models.
* :func:`collect` -- the flat ``params``/``grads`` dicts of a model from its parts.
* :func:`set_common`, :func:`common_config`, :func:`build_from_config` -- the constructor
  arguments every model shares: checked and set, as a config, and back to a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import distributions as dist
from .._checks import check_array, check_choice, check_dtype, check_float, check_int, check_rng
from ..layers import ACTIVATIONS

__all__ = ["Terms", "GaussianHead", "LIKELIHOODS", "LOGVAR_MIN", "LOGVAR_MAX", "make_likelihood", "log_prob_fn",
           "check_x", "check_z", "check_labels", "check_hidden", "one_hot", "noise", "collect", "decode_sample",
           "set_common", "common_config", "build_from_config", "in_batches"]

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
LOGVAR_MIN, LOGVAR_MAX = -20.0, 10.0


@dataclass
class Terms:
    """What a model's ``forward`` returns.

    loss : float
        The training objective, nats per example, averaged over the batch (what
        ``backward`` differentiates).
    metrics : dict[str, np.ndarray]
        Per-example diagnostics, each of shape (batch,) (e.g. ``reconstruction``, ``kl``,
        ``elbo``), in nats. The trainer averages and logs every one of them. Each is also
        readable as an attribute: ``terms.kl`` is ``terms.metrics["kl"]``.
    """

    loss: float
    metrics: dict = field(default_factory=dict)

    def __getattr__(self, name):
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or metric {name!r} "
                             f"(metrics: {sorted(metrics)})")


class GaussianHead:
    r"""``h -> (mu, logvar)`` for :math:`q(z|\cdot) = N(\mu, \mathrm{diag}\,e^{\mathrm{logvar}})`.

    The encoder's last layer outputs ``h = [mu, logvar_raw]`` (batch, 2 z_dim): one
    (hidden, 2 z_dim) matmul instead of two. ``logvar = clip(logvar_raw, -20, 10)`` keeps
    :math:`\sigma` in [4.5e-5, 148], so ``exp(logvar)`` never overflows, even in float32.
    Local derivatives: :math:`\partial\mu/\partial h_{:Z} = 1`;
    :math:`\partial\,\mathrm{logvar}/\partial h_{Z:} = 1` inside the clip range, 0 outside.
    """

    def __init__(self, z_dim: int) -> None:
        self.z_dim = z_dim
        self._raw = None

    def forward(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``h`` (batch, 2 z_dim) -> ``mu``, ``logvar``, each (batch, z_dim), h's dtype."""
        mu, self._raw = h[:, :self.z_dim], h[:, self.z_dim:]
        return mu, np.clip(self._raw, LOGVAR_MIN, LOGVAR_MAX)

    def backward(self, dmu: np.ndarray, dlogvar: np.ndarray) -> np.ndarray:
        """(dL/dmu, dL/dlogvar) -> dL/dh (batch, 2 z_dim); the clip passes no gradient outside its range."""
        inside = (self._raw >= LOGVAR_MIN) & (self._raw <= LOGVAR_MAX)  # d clip / d raw
        return np.concatenate([dmu, dlogvar * inside], axis=1)


def make_likelihood(name: str, x_dim: int, *, sigma_x: float = 1.0, per_pixel_sigma: bool = False,
                    dtype=np.float32) -> dist.Likelihood:
    """The decoder distribution p(x|z) called ``name`` (one of :data:`LIKELIHOODS`).

    "bernoulli": logits; "gaussian": mean with fixed ``sigma_x``; "gaussian_learned": mean
    with a learned log sigma_x (shared, or per pixel). Raises ValueError for another name.
    """
    check_choice(name, "likelihood", LIKELIHOODS)
    if name == "bernoulli":
        return dist.Bernoulli()
    if name == "gaussian":
        return dist.Gaussian(sigma_x)
    return dist.GaussianLearned(x_dim, sigma_x=sigma_x, per_pixel=per_pixel_sigma, dtype=dtype)


def decode_sample(likelihood: dist.Likelihood, out: np.ndarray, *, mean: bool, rng) -> np.ndarray:
    """The mean of p(x|z) (``mean=True``) or one draw x ~ p(x|z) from ``rng`` (ancestral sampling).

    ``out``: decoder output (n, x_dim); returns (n, x_dim) in out's dtype. Bernoulli draws
    are 0/1; Gaussian draws add sigma_x * N(0, I) noise to the mean.
    """
    m = likelihood.mean(out)
    if mean:
        return m
    if likelihood.name == "bernoulli":
        return (rng.random(m.shape, dtype=m.dtype) < m).astype(m.dtype)
    sigma = (np.exp(likelihood._log_sigma()) if likelihood.name == "gaussian_learned"
             else likelihood.sigma_x)
    return m + (sigma * rng.standard_normal(m.shape, dtype=m.dtype)).astype(m.dtype)


def log_prob_fn(likelihood: dist.Likelihood, x: np.ndarray):
    """``likelihood.log_prob``, or its one-pass form for binary data (the log p(x) hot loop).

    Evaluated on binarized images, the Bernoulli log-likelihood is
    -softplus(-(2x - 1) l) (:func:`npvae.distributions.bernoulli_log_prob_binary`), one
    ``exp``/``log1p`` pass instead of three; the check that x is 0/1 is one pass over x,
    paid once per batch instead of once per sample.
    """
    if likelihood.name == "bernoulli" and np.all((x == 0) | (x == 1)):
        return likelihood.log_prob_binary
    return likelihood.log_prob


def check_x(x, x_dim: int, dtype, likelihood: str) -> np.ndarray:
    """``x`` (batch >= 1, x_dim), model dtype, finite, in [0, 1] for Bernoulli; TypeError/ValueError otherwise."""
    check_array(x, "x", shape=(None, x_dim), dtype=dtype, finite=True)
    if x.shape[0] == 0:
        raise ValueError(f"x: expected a batch of at least 1 example, got shape {x.shape}")
    if likelihood == "bernoulli":
        check_array(x, "x", low=0.0, high=1.0)  # Bernoulli targets are probabilities
    return x


def check_z(z, z_dim: int, dtype, name: str = "z") -> np.ndarray:
    """``z`` (batch, z_dim), model dtype, finite; TypeError/ValueError otherwise."""
    return check_array(z, name, shape=(None, z_dim), dtype=dtype, finite=True)


def check_labels(y, n_classes: int, batch: int | None = None) -> np.ndarray:
    """``y``: integer labels, shape (batch,), each in [0, n_classes). TypeError/ValueError otherwise."""
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu":
        got = y.dtype if isinstance(y, np.ndarray) else type(y).__name__
        raise TypeError(f"y: expected an integer array of class labels, got {got}")
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(batch,)"
        raise ValueError(f"y: expected shape {want} (one label per example), got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"y: expected labels in [0, {n_classes - 1}], got values from {y.min()} to {y.max()}")
    return y


def one_hot(y: np.ndarray, n_classes: int, dtype) -> np.ndarray:
    """Integer labels (batch,) -> one-hot rows (batch, n_classes) of ``dtype``."""
    out = np.zeros((y.shape[0], n_classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def noise(shape, *, rng, eps, dtype) -> np.ndarray:
    """``eps`` if given (checked against ``shape`` and ``dtype``), else a fresh N(0, I) draw from ``rng``.

    Raises ValueError if neither is given, TypeError/ValueError for an ``eps`` of another
    shape or dtype.
    """
    if eps is None:
        if rng is None:
            raise ValueError("rng: expected a numpy.random.Generator when eps is not given, got None")
        return dist.sample_eps(shape, rng=rng, dtype=dtype)
    if isinstance(eps, np.ndarray) and eps.ndim == len(shape) - 1 and shape[0] == 1:
        eps = eps[None]  # (batch, z_dim) for a single sample
    return check_array(eps, "eps", shape=tuple(shape), dtype=dtype, finite=True)


def collect(**parts) -> tuple[dict, dict]:
    """Flat ``params`` and ``grads`` dicts ("encoder.0.W", ...) of the named parts' live arrays.

    The arrays are moved into one contiguous buffer per dict (in the dicts' order, values
    copied) and every layer's own dicts are pointed at the views, so each layer keeps
    reading and writing its arrays by name while the optimizer can update the whole model
    in a few passes over one flat span (:mod:`npvae.optim` detects it). Raises nothing of
    its own; parts of mixed dtypes keep their separate arrays.
    """
    params, grads = {}, {}
    for prefix, part in parts.items():
        params.update({f"{prefix}.{k}": v for k, v in part.params.items()})
        grads.update({f"{prefix}.{k}": v for k, v in part.grads.items()})
    for name, arrays in (("params", params), ("grads", grads)):
        _one_buffer(arrays, list(parts.values()), name)
    return params, grads


def _one_buffer(arrays: dict, parts: list, attr: str) -> None:
    """Copy ``arrays`` end to end into one new buffer and rebind every ``attr`` dict under ``parts`` to the views."""
    if not arrays or len({a.dtype for a in arrays.values()}) != 1:
        return
    buffer = np.empty(sum(a.size for a in arrays.values()), dtype=next(iter(arrays.values())).dtype)
    views, start = {}, 0
    for key, a in arrays.items():
        view = buffer[start:start + a.size].reshape(a.shape)
        view[...] = a
        views[id(a)] = view  # the old arrays stay alive (in the layers' dicts) until rebound
        arrays[key], start = view, start + a.size
    _rebind(parts, views, attr, set())


def _rebind(objects, views: dict, attr: str, seen: set) -> None:
    """Point every entry of the ``attr`` dicts of ``objects`` and of their sub-objects at ``views`` (by identity)."""
    for obj in objects:
        if id(obj) in seen or not isinstance(getattr(obj, attr, None), dict):
            continue
        seen.add(id(obj))
        d = getattr(obj, attr)
        for key, value in d.items():
            if id(value) in views:
                d[key] = views[id(value)]
        children = []
        for value in vars(obj).values():
            children.extend(value if isinstance(value, (list, tuple)) else [value])
        _rebind(children, views, attr, seen)


def in_batches(code, x: np.ndarray, *labels, batch_size: int) -> np.ndarray:
    """``code(x[i:j], *labels[i:j])`` for consecutive batches of ``batch_size`` rows, concatenated.

    What every model's ``posterior_means`` does: encode a data set without holding every
    layer's activations for all of it at once. ValueError for ``batch_size`` < 1.
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return np.concatenate([code(x[i:i + batch_size], *(y[i:i + batch_size] for y in labels))
                           for i in range(0, x.shape[0], batch_size)])


def check_hidden(hidden) -> tuple[int, ...]:
    """``hidden`` as a tuple of widths >= 1 (an int is one layer)."""
    if isinstance(hidden, (int, np.integer)):
        hidden = (hidden,)
    return tuple(check_int(h, f"hidden[{i}]", minimum=1) for i, h in enumerate(hidden))


def set_common(model, x_dim, z_dim, hidden, activation, likelihood, *, rng, dtype, sigma_x, per_pixel_sigma,
               init) -> dict:
    """Check the constructor arguments every model shares, set them on ``model``, build its likelihood.

    Sets ``x_dim``, ``z_dim``, ``hidden``, ``activation``, ``likelihood_name``, ``dtype``,
    ``sigma_x``, ``per_pixel_sigma``, ``init`` and ``likelihood``; returns the keywords of
    the model's :class:`npvae.layers.MLP` layers (rng, dtype, init). Raises TypeError /
    ValueError naming a bad argument.
    """
    model.x_dim = check_int(x_dim, "x_dim", minimum=1)
    model.z_dim = check_int(z_dim, "z_dim", minimum=1)
    model.hidden = check_hidden(hidden)
    model.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
    model.likelihood_name = check_choice(likelihood, "likelihood", LIKELIHOODS)
    model.dtype = check_dtype(dtype)
    check_rng(rng)
    model.sigma_x = check_float(sigma_x, "sigma_x", minimum=0.0, strict_min=True)
    model.per_pixel_sigma, model.init = bool(per_pixel_sigma), init
    model.likelihood = make_likelihood(model.likelihood_name, model.x_dim, sigma_x=model.sigma_x,
                                       per_pixel_sigma=model.per_pixel_sigma, dtype=model.dtype)
    return dict(rng=rng, dtype=model.dtype, init=init)


def common_config(model, **extra) -> dict:
    """The shared constructor arguments of ``model`` (set by :func:`set_common`), its ``kind`` and ``extra``: JSON-able."""
    return {"kind": model.kind, "x_dim": model.x_dim, "z_dim": model.z_dim, "hidden": list(model.hidden),
            "activation": model.activation, "likelihood": model.likelihood_name, "dtype": model.dtype.name,
            "sigma_x": model.sigma_x, "per_pixel_sigma": model.per_pixel_sigma, "init": model.init, **extra}


def build_from_config(cls, config: dict, *, rng):
    """``cls(**config)`` without ``kind``, with ``hidden`` as a tuple and ``dtype`` as a dtype (weights from ``rng``)."""
    c = {k: v for k, v in config.items() if k != "kind"}
    c["hidden"], c["dtype"] = tuple(c["hidden"]), np.dtype(c["dtype"])
    return cls(**c, rng=rng)
