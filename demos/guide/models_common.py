r"""What the guide's scripts for the other models share (``iwae_bound``, ``flow_posteriors``, ``cvae``, ``dirichlet``).

* :func:`to_float64` - a float64 copy of any trained npvae model (quadrature without float32 noise);
* :func:`pool_log_weights` - many draws of the importance weights of q, per image;
* :func:`log_joint` and :func:`grid_posterior` - the true posterior :math:`p(z|x)` of a
  2-D-latent model with a standard-normal prior, and :math:`\log p(x)`, by quadrature on a
  grid (the sum rule :math:`p(x) = \int p(x|z)p(z)\,dz` as a Riemann sum);
* :func:`planar_inverse`, :func:`iaf_inverse` and :func:`flow_log_density` - the density
  :math:`q(z_K|x)` of a :class:`npvae.models.FlowVAE` at any point :math:`z_K`, exactly, by the change
  of variables: invert the flow to :math:`z_0`, then
  :math:`\log q(z_K|x) = \log q_0(z_0|x) - \sum_k\log|\det\partial f_k/\partial z_{k-1}|`
  (npvae's flows only run forward, so the inverses are written here);
* :func:`knn_predict` - a k-nearest-neighbour classifier on pixels (no training: the labels
  of the closest training images decide), used to read which digit a decoded image shows.

The scripts write their figures and numbers with :mod:`demos.guide.common`
(``save_figure``, ``write_numbers``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit, logsumexp

from npvae import distributions as dist
from npvae.models import from_config

__all__ = ["to_float64", "pool_log_weights", "log_joint", "grid_posterior", "gaussian_log_density",
           "planar_inverse", "iaf_inverse", "flow_log_density", "knn_predict"]


def to_float64(model):
    """A float64 copy of a trained npvae model of any kind (same config, weights cast)."""
    m = from_config({**model.config, "dtype": "float64"}, rng=np.random.default_rng(0))
    for name, p in model.params.items():
        m.params[name][...] = p
    return m


def pool_log_weights(model, x: np.ndarray, n: int, *, rng: np.random.Generator, chunk: int = 250) -> np.ndarray:
    r"""``n`` log weights :math:`\log w = \log p(x|z) + \log p(z) - \log q(z|x)`, :math:`z\sim q(z|x)`, per image.

    ``x`` (B, 784) in the model's dtype. Encodes once (``model.proposal``), then calls
    ``model.log_weights`` on ``chunk`` draws at a time. Returns (n, B) float64 nats.
    """
    q = model.proposal(x)
    out = np.empty((n, len(x)))
    for i in range(0, n, chunk):
        c = min(chunk, n - i)
        out[i:i + c] = model.log_weights(q, dist.sample_eps((c, len(x), model.noise_dim), rng=rng, dtype=model.dtype))
    return out


# ---- the true posterior of a 2-D latent, by quadrature --------------------------------------
def log_joint(model, x: np.ndarray, z: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    r""":math:`\log p(x, z) = \log p(x|z) + \log N(z; 0, I)` of one image ``x`` (x_dim,) at points ``z`` (n, Z).

    Calls the model's decoder and likelihood (``model.decoder``, ``model.likelihood``) in
    chunks of ``chunk`` points. Returns (n,) float64 nats.
    """
    z = np.asarray(z, dtype=model.dtype)
    out = np.empty(len(z))
    xb = np.asarray(x, dtype=model.dtype)[None]
    for i in range(0, len(z), chunk):
        out[i:i + chunk] = model.likelihood.log_prob(xb, model.decoder.forward(z[i:i + chunk]))
    model._cache = None  # the decoder's caches belong to no forward now
    return out + dist.standard_normal_log_prob(z.astype(np.float64))


def _grid(lo1, hi1, lo2, hi2, n):
    z1, z2 = np.linspace(lo1, hi1, n), np.linspace(lo2, hi2, n)
    g1, g2 = np.meshgrid(z1, z2, indexing="ij")
    return z1, z2, np.stack([g1.ravel(), g2.ravel()], axis=1)


def grid_posterior(model, x: np.ndarray, *, lim: float = 5.0, n_coarse: int = 81, n_fine: int = 161,
                   cut: float = 25.0, box=None, max_lim: float = 40.0) -> dict:
    r"""The true posterior :math:`p(z|x)` of a 2-D-latent model on a grid, and :math:`\log p(x)` by quadrature.

    Two passes: :math:`\log p(x,z)` on an ``n_coarse`` x ``n_coarse`` grid over
    :math:`[-\mathrm{lim}, \mathrm{lim}]^2` finds where the posterior lives (the points within
    ``cut`` nats of the peak, widened by two coarse cells); an ``n_fine`` x ``n_fine`` grid
    over that box gives

    .. math:: \log p(x) = \log\sum_{ij} p(x, z_{ij})\,\Delta z_1\Delta z_2
              = \mathrm{logsumexp}_{ij}\log p(x, z_{ij}) + \log(\Delta z_1\Delta z_2)

    (the Riemann sum; the integrand is below :math:`e^{-\mathrm{cut}}` of its peak outside the
    box) and :math:`\log p(z_{ij}|x) = \log p(x, z_{ij}) - \log p(x)` (Bayes' rule). ``box``
    ``(lo1, hi1, lo2, hi2)`` skips the coarse pass. Returns a dict: ``z1`` (n,), ``z2`` (n,)
    the axes; ``log_post`` (n, n) float64 with ``log_post[i, j]`` at ``(z1[i], z2[j])``;
    ``log_px`` (float, nats); ``box``; ``cell`` the cell area. Raises ValueError if
    ``model.z_dim`` != 2, or if the posterior still reaches the edge of the coarse grid
    after ``lim`` has been doubled up to ``max_lim``.
    """
    if model.z_dim != 2:
        raise ValueError(f"model.z_dim: expected 2 (quadrature on a 2-D grid), got {model.z_dim}")
    while box is None:
        z1, z2, pts = _grid(-lim, lim, -lim, lim, n_coarse)
        lj = log_joint(model, x, pts).reshape(n_coarse, n_coarse)
        inside = lj > lj.max() - cut
        i1, i2 = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
        if min(i1[0], i2[0]) == 0 or max(i1[-1], i2[-1]) == n_coarse - 1:
            if lim >= max_lim:
                raise ValueError(f"lim: the posterior reaches the edge of [-{lim}, {lim}]^2, expected it inside "
                                 f"(max_lim={max_lim})")
            lim *= 2  # a broad posterior: look further out
            continue
        step = z1[1] - z1[0]
        box = (z1[i1[0]] - 2 * step, z1[i1[-1]] + 2 * step, z2[i2[0]] - 2 * step, z2[i2[-1]] + 2 * step)
    z1, z2, pts = _grid(*box, n_fine)
    cell = (z1[1] - z1[0]) * (z2[1] - z2[0])
    lj = log_joint(model, x, pts).reshape(n_fine, n_fine)
    log_px = float(logsumexp(lj) + math.log(cell))
    return {"z1": z1, "z2": z2, "log_post": lj - log_px, "log_px": log_px, "box": tuple(map(float, box)),
            "cell": float(cell)}


def gaussian_log_density(mu: np.ndarray, logvar: np.ndarray, z: np.ndarray) -> np.ndarray:
    r""":math:`\log N(z; \mu, \mathrm{diag}\,e^{\mathrm{logvar}})` at ``z`` (n, Z): (n,) float64.

    ``mu``, ``logvar`` (Z,): the Gaussian of npvae's encoders, evaluated at any points (not only
    at its own samples).
    """
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    eps = (np.asarray(z, np.float64) - mu) * np.exp(-0.5 * logvar)
    return -0.5 * np.sum(dist.LOG_2PI + logvar + eps * eps, axis=-1)


# ---- the density of a flow posterior, by inverting the flow -----------------------------------
def planar_inverse(step, y: np.ndarray, *, iters: int = 80) -> np.ndarray:
    r"""Invert one :class:`npvae.flows.PlanarFlow` step: the z with :math:`z + \hat u\tanh(w^\top z + b) = y`.

    With :math:`a = w^\top z + b` and :math:`m = w^\top\hat u > -1`, taking :math:`w^\top` of
    both sides gives the scalar equation :math:`a + m\tanh a = w^\top y + b`, whose left side
    is strictly increasing (derivative :math:`1 + m\,\mathrm{sech}^2 a > 0`) and within
    :math:`|m|` of a: solved by bisection on :math:`[c - |m|, c + |m|]`, then
    :math:`z = y - \hat u\tanh a` (Rezende & Mohamed 2015, appendix A.1). ``y`` (N, Z);
    returns z (N, Z) in y's dtype (bisection to the last bit in float64).
    """
    w, b = step.params["w"].astype(np.float64), float(step.params["b"][0])
    uh, _, _ = step.u_hat()
    uh = uh.astype(np.float64)
    m = float(w @ uh)
    c = np.asarray(y, np.float64) @ w + b
    lo, hi = c - abs(m) - 1e-12, c + abs(m) + 1e-12
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        too_big = mid + m * np.tanh(mid) > c
        hi, lo = np.where(too_big, mid, hi), np.where(too_big, lo, mid)
    a = 0.5 * (lo + hi)
    return (np.asarray(y, np.float64) - np.tanh(a)[:, None] * uh).astype(np.asarray(y).dtype)


def iaf_inverse(step, y: np.ndarray, h: np.ndarray | None) -> np.ndarray:
    r"""Invert one :class:`npvae.flows.IAFStep`: the z with :math:`\sigma(z)\odot z + (1-\sigma(z))\odot m(z) = y`.

    :math:`m_i, s_i` depend only on the variables before i in the step's order, so solve in
    that order, one MADE pass per variable (Z passes: sampling an IAF is parallel, inverting
    it is sequential): :math:`z_i = (y_i - (1-\sigma_i)m_i)/\sigma_i`,
    :math:`\sigma_i = \mathrm{sigmoid}(s_i + 1)`. ``y`` (N, Z), ``h`` (N, C) or None. Returns z (N, Z).
    """
    z = np.array(y, copy=True)
    for d in range(1, step.z_dim + 1):
        i = int(np.nonzero(step.order == d)[0][0])
        m, s = step.made.forward(z, h)                 # m_i, s_i read only z_j with order[j] < d: all solved
        sig = expit(s[:, i] + 1)
        z[:, i] = (y[:, i] - (1 - sig) * m[:, i]) / sig
    return z


def flow_log_density(model, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, float]:
    r""":math:`\log q(z_K|x)` of a :class:`npvae.models.FlowVAE` at points ``z`` (n, Z), by the change of variables.

    ``x`` (x_dim,) one image. Inverts the flow step by step (:func:`planar_inverse`,
    :func:`iaf_inverse`) to :math:`z_0`, then runs it forward from :math:`z_0` for
    :math:`\sum_k\log|\det J_k|` and returns
    :math:`\log q_0(z_0|x) - \sum_k\log|\det J_k|` (n,) float64 nats, and the largest
    :math:`|f(f^{-1}(z)) - z|` (the inversion's error, float). Far out in the tails an IAF
    step's :math:`\sigma_i` can be so small that :math:`z_0` overflows: there the base density,
    and so q, is 0 in floating point, and -inf is returned.
    """
    _, mu, logvar, ctx = model.proposal(np.asarray(x, model.dtype)[None])
    z = np.asarray(z, model.dtype)
    h = None if ctx is None else np.repeat(ctx, len(z), axis=0)
    z0 = z
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for step in reversed(model.flow.steps):
            z0 = planar_inverse(step, z0) if model.flow_kind == "planar" else iaf_inverse(step, z0, h)
        ok = np.all(np.isfinite(z0), axis=1)
        out = np.full(len(z), -np.inf)
        zK, logdet = model.flow.forward(z0[ok], None if h is None else h[ok])
    err = float(np.max(np.abs(zK - z[ok]), initial=0.0))
    with np.errstate(over="ignore"):                   # a finite but huge z0: density 0 in floating point, -inf
        out[ok] = gaussian_log_density(mu[0], logvar[0], z0[ok]) - logdet.astype(np.float64)
    return out, err


# ---- reading a decoded digit: k nearest neighbours --------------------------------------------
def knn_predict(train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray, *, k: int = 5,
                n_classes: int = 10, chunk: int = 500) -> np.ndarray:
    r"""The majority label of the ``k`` nearest training images (Euclidean, pixels in [0, 1]).

    ``train_x`` (N, D) and ``query`` (M, D) float; ``train_y`` (N,) int. Ties go to the
    class of the nearest neighbour among the tied. Returns (M,) int64.
    """
    train_x = np.asarray(train_x, np.float32)
    sq = np.sum(train_x * train_x, axis=1)
    out = np.empty(len(query), dtype=np.int64)
    for i in range(0, len(query), chunk):
        qb = np.asarray(query[i:i + chunk], np.float32)
        d = sq[None, :] - 2 * qb @ train_x.T                        # |q - t|^2 - |q|^2: same order
        part = np.argpartition(d, k - 1, axis=1)[:, :k]                # the k nearest, in any order ...
        nn = np.take_along_axis(part, np.argsort(np.take_along_axis(d, part, 1), axis=1), 1)  # ... nearest first
        labels = np.asarray(train_y)[nn]
        votes = np.zeros((len(qb), n_classes))
        np.add.at(votes, (np.arange(len(qb))[:, None], labels), 1.0 + 1e-3 * (k - np.arange(k)) / k)
        out[i:i + chunk] = np.argmax(votes, axis=1)
    return out
