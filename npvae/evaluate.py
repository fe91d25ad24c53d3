r"""Evaluation for any model that follows the contract: the IWAE bound, log p(x), latent activity.

Importance sampling (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted
Autoencoders", eq. 8 and section 5):

.. math::
    \mathcal L_k(x) = \log \frac1k \sum_{i=1}^k w_i,\qquad
    w_i = \frac{p(x, z_i)}{q(z_i|x)},\quad z_i \sim q(z|x),

a lower bound on :math:`\log p(x)` in expectation that tightens as k grows
(:math:`\mathcal L_1` is the single-sample ELBO). With q as the proposal it is the
standard estimate of the test log-likelihood (k = 5000).

A model provides two methods (see :mod:`npvae.models`):

* ``proposal(x[, y]) -> q``: encodes the batch once; ``q`` holds what the weights need;
* ``log_weights(q, eps) -> (k, batch) float64``: :math:`\log w_i` for the noise ``eps``
  (k, batch, ``model.noise_dim``), model dtype.

The functions here draw the noise in chunks (bounded memory whatever k is), combine the
log-weights with a float64 ``logsumexp`` and report progress on long runs.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ._checks import check_array, check_float, check_int, check_rng
from .distributions import sample_eps
from .progress import Progress

__all__ = ["iwae_bound", "log_likelihood", "posterior_means", "latent_activity", "active_units",
           "ACTIVE_THRESHOLD", "CHUNK_ELEMENTS"]

#: Decoder outputs per chunk of :func:`iwae_bound` (k_chunk * batch * widest layer). Any
#: size gives the same numbers; the textbook choice only bounds the memory, e.g.
#: ``1 << 24`` (64 MB in float32). FAST: ``1 << 18`` (1 MB) keeps every elementwise pass
#: over a chunk in the CPU cache, which shortens the log p(x) pass (measured in
#: benchmarks/README.md, "Speed tricks").
CHUNK_ELEMENTS = 1 << 18

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016, section 5.2: a unit is active if Var_x E_q[z_u] > 0.01


def _labels(y):
    return () if y is None else (y,)


def iwae_bound(model, x: np.ndarray, k: int, *, y=None, rng=None, eps=None, chunk_size: int | None = None) -> np.ndarray:
    r"""One draw of :math:`\mathcal L_k(x)` per example, in nats (float64), shape (batch,).

    ``x`` (batch, x_dim) in the model's dtype; ``y`` the labels for a conditional model;
    ``rng`` draws the noise unless ``eps`` (k, batch, noise_dim) is given. ``chunk_size``
    samples are decoded at a time (default: :data:`CHUNK_ELEMENTS` decoder outputs, see
    there); the result does not depend on it. Raises TypeError/ValueError for bad
    arguments (naming them).
    """
    k = check_int(k, "k", minimum=1)
    q = model.proposal(x, *_labels(y))
    B = x.shape[0]
    shape = (k, B, model.noise_dim)
    if eps is not None:
        check_array(eps, "eps", shape=shape, dtype=model.dtype, finite=True)
    elif rng is None:
        raise ValueError("rng: expected a numpy.random.Generator when eps is not given, got None")
    if chunk_size is None:
        width = max(model.x_dim, *model.hidden) if model.hidden else model.x_dim
        chunk_size = max(1, CHUNK_ELEMENTS // (B * width))
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    log_w = np.empty((k, B), dtype=np.float64)
    for start in range(0, k, chunk_size):
        stop = min(k, start + chunk_size)
        e = eps[start:stop] if eps is not None else sample_eps((stop - start,) + shape[1:], rng=rng, dtype=model.dtype)
        log_w[start:stop] = model.log_weights(q, e)
    # log (1/k) sum_i w_i, in float64: the weights span hundreds of nats
    return logsumexp(log_w, axis=0) - np.log(k)


def log_likelihood(model, x: np.ndarray, k: int = 5000, *, y=None, rng: np.random.Generator,
                   batch_size: int = 100, progress: bool = False, stream=None) -> np.ndarray:
    r"""Importance-sampled :math:`\log p(x)` (or :math:`\log p(x|y)`) per example, nats, float64, shape (N,).

    :math:`\log p(x) \approx \mathcal L_k(x)` with the model's q as the proposal (Burda et
    al. 2016, section 5; Rezende et al. 2014, appendix E); k = 5000 is the standard test
    metric. ``x`` (N, x_dim) is processed ``batch_size`` examples at a time. A stochastic
    lower bound in expectation; the bias shrinks as k grows. ``progress=True`` writes a
    progress line (images done, images/s, time left) to ``stream`` (default stderr).
    """
    k = check_int(k, "k", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    check_rng(rng)
    N = x.shape[0] if isinstance(x, np.ndarray) and x.ndim >= 1 else 0
    out = []
    with Progress(N, f"log p(x), k={k}", quiet=not progress, stream=stream) as bar:
        for i in range(0, max(N, 1), batch_size):
            yi = None if y is None else y[i:i + batch_size]
            out.append(iwae_bound(model, x[i:i + batch_size], k, y=yi, rng=rng))
            bar.update(len(out[-1]))
    return np.concatenate(out)


def posterior_means(model, x: np.ndarray, *, y=None, batch_size: int = 1000) -> np.ndarray:
    """The model's latent code of each example (``model.posterior_means``), (N, z_dim)."""
    return model.posterior_means(x, *_labels(y), batch_size=batch_size)


def latent_activity(model, x: np.ndarray, *, y=None, batch_size: int = 1000) -> np.ndarray:
    r"""Activity of each latent unit, :math:`A_u = \mathrm{Var}_x\, E_{q(z|x)}[z_u]`, (z_dim,) float64.

    Burda et al. 2016, section 5.2. ``x`` (N, x_dim), N >= 2 (ValueError otherwise);
    population variance over the data of the posterior means.
    """
    if isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[0] < 2:
        raise ValueError(f"x: expected at least 2 examples to measure a variance, got {x.shape[0]}")
    return posterior_means(model, x, y=y, batch_size=batch_size).astype(np.float64).var(axis=0)


def active_units(model, x: np.ndarray, *, y=None, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000) -> int:
    """Number of latent units whose :func:`latent_activity` exceeds ``threshold`` (default 0.01)."""
    threshold = check_float(threshold, "threshold", minimum=0.0)
    return int(np.sum(latent_activity(model, x, y=y, batch_size=batch_size) > threshold))
