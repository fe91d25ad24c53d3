r"""Pieces every model shares outside its math: the result type, likelihoods by name, checks, configs.

Plain functions and small layer-like objects, no base class: a model file composes them.

* :class:`Terms` -- what every ``forward`` returns (``loss`` plus a ``metrics`` dict).
* :func:`make_likelihood` -- the decoder distribution p(x|z) from its name (:data:`LIKELIHOODS`).
* :func:`check_z`, :func:`check_labels`, :func:`one_hot` -- label and latent checks shared by the models
  (the data check, :func:`npvae._checks.check_x`, and the noise, :func:`npvae.distributions.noise`,
  live with the other checks and distributions).
* :func:`collect` -- the flat ``params``/``grads`` dicts of a model from its parts.
* :func:`set_common`, :func:`common_config`, :func:`build_from_config` -- the constructor
  arguments every model shares: checked and set, as a config, and back to a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import distributions as dist
from .._checks import check_array, check_choice, check_dtype, check_float, check_int, check_rng
from ..distributions import LOGVAR_MAX, LOGVAR_MIN
from ..layers import ACTIVATIONS

__all__ = ["Terms", "LIKELIHOODS", "LOGVAR_MIN", "LOGVAR_MAX", "make_likelihood", "check_z", "check_labels",
           "check_hidden", "one_hot", "collect", "decode_sample", "set_common", "common_config", "build_from_config",
           "in_batches"]

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")


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
    sigma = (np.exp(likelihood.log_sigma()) if likelihood.name == "gaussian_learned"
             else likelihood.sigma_x)
    return m + (sigma * rng.standard_normal(m.shape, dtype=m.dtype)).astype(m.dtype)


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


def collect(**parts) -> tuple[dict, dict]:
    """The model's ``params`` and ``grads`` dicts ("encoder.0.W", ...): its parts' live arrays under prefixed names.

    The arrays are the parts' own (no copy): an optimizer updating ``params`` in place
    updates the layers, and each layer's ``backward`` writes the arrays in ``grads``.
    """
    params, grads = {}, {}
    for prefix, part in parts.items():
        params.update({f"{prefix}.{k}": v for k, v in part.params.items()})
        grads.update({f"{prefix}.{k}": v for k, v in part.grads.items()})
    return params, grads


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
