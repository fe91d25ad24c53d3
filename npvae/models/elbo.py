r"""The Gaussian-posterior ELBO, forward and backward, shared by every model with q(z|.) = N(mu, diag sigma^2).

Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. (10) ("SGVB estimator B")
and appendix B. Given the encoder's output ``h = [mu, logvar_raw]`` (whatever the encoder
saw: x for the VAE, [x, onehot(y)] for the CVAE) and a ``decode`` function from z to the
likelihood's parameter (z alone, or [z, onehot(y)]), the per-example objective is

.. math::
    \mathcal L(x) = \frac1L\sum_{l=1}^L \log p(x|z^{(l)}) - \beta\,KL(N(\mu, \sigma^2)\,\|\,N(0, I)),
    \qquad z^{(l)} = \mu + \sigma\odot\epsilon^{(l)},

and the loss is :math:`-\mathcal L` averaged over the batch (nats per example). The model
file keeps its own encoder call and its encoder's backward; these functions hold the part
in between, which is the same for every such model.

* :func:`forward` -> (:class:`~npvae.models.parts.Terms`, cache);
* :func:`backward` (cache) -> :math:`\partial\,\mathrm{loss}/\partial h`, the chain rule in order;
* :func:`log_weights`: the importance weights :math:`\log p(x|z) + \log p(z) - \log q(z|\cdot)`
  of :func:`npvae.evaluate.iwae_bound` (Burda et al. 2016, eq. 8).
"""

from __future__ import annotations

import numpy as np

from .. import distributions as dist
from .parts import Terms

__all__ = ["forward", "backward", "log_weights"]


def _kl(mu, logvar, prior):
    """KL(q || p) per example and its gradient (dmu, dlogvar): p = N(0, I), or N(prior[0], exp(prior[1]))."""
    if prior is None:
        return dist.kl_standard_normal(mu, logvar), dist.kl_standard_normal_grad(mu, logvar)
    return dist.kl_normal(mu, logvar, *prior), dist.kl_normal_grad(mu, logvar, *prior)


def forward(x: np.ndarray, h: np.ndarray, eps: np.ndarray, *, beta: float, head, decode, likelihood, prior=None):
    r"""The ELBO terms of a batch from the encoder output ``h``; returns ``(terms, cache)``.

    ``x`` (B, x_dim); ``h`` (B, 2 Z) the encoder output; ``eps`` (L, B, Z) the noise;
    ``beta`` the KL weight; ``head`` a :class:`~npvae.models.parts.GaussianHead`;
    ``decode`` maps z (L*B, Z) to the likelihood's parameter (L*B, x_dim) and caches for
    its backward; ``likelihood`` a :class:`npvae.distributions.Likelihood`; ``prior``
    None for :math:`p(z) = N(0, I)`, or ``(mu_p, logvar_p)`` (each (Z,)) for a diagonal
    Gaussian prior (the Dirichlet VAE's Laplace approximation). ``terms``:
    loss :math:`\frac1B\sum_n(\mathrm{rec}_n + \beta\,KL_n)` and per-example (B,) metrics
    ``reconstruction`` :math:`-\frac1L\sum_l\log p(x|z^{(l)})`, ``kl``, ``elbo`` (at
    beta = 1), nats, x's dtype. ``cache`` is what :func:`backward` needs.
    """
    L, B, Z = eps.shape
    mu, logvar = head.forward(h)                                       # q(z|.), each (B, Z)
    z = dist.reparameterize(mu, logvar, eps)                           # (L, B, Z)
    out = decode(z.reshape(L * B, Z))                                  # (L*B, x_dim)
    log_px = likelihood.forward(x, out.reshape(L, B, x.shape[1]))      # (L, B)
    reconstruction = -log_px.mean(axis=0)                              # (B,)
    kl, _ = _kl(mu, logvar, prior)                                     # (B,), closed form, >= 0
    terms = Terms(float(np.mean(reconstruction + beta * kl)),
                  {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)})
    return terms, (B, L, eps, mu, logvar, beta, prior)


def backward(cache, *, head, decode_backward, likelihood) -> np.ndarray:
    r""":math:`\partial\,\mathrm{loss}/\partial h` (B, 2 Z) for the ``cache`` of :func:`forward`.

    ``decode_backward`` maps d loss / d out (L*B, x_dim) to d loss / d z (L*B, Z) and
    writes the decoder's parameter gradients; ``likelihood.backward`` writes its own.
    The caller passes the result to its encoder's backward.
    """
    B, L, eps, mu, logvar, beta, prior = cache
    Z = mu.shape[1]
    # 1. likelihood: d loss / d out = -(1 / (B L)) d log p(x|z) / d out        (L*B, x_dim)
    d_out = likelihood.backward(-1.0 / (B * L))
    # 2. decoder: d loss / d z                                                   (L, B, Z)
    dz = decode_backward(d_out.reshape(L * B, -1)).reshape(L, B, Z)
    # 3. z = mu + sigma eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2 (summed over l) ...
    dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
    #    ... + beta KL / B: dKL/dmu = (mu - mu_p) / sigma_p^2, dKL/dlogvar = (sigma^2 / sigma_p^2 - 1) / 2
    #    (mu and (sigma^2 - 1) / 2 for the prior N(0, I))
    _, (dkl_dmu, dkl_dlogvar) = _kl(mu, logvar, prior)
    dmu, dlogvar = dmu + (beta / B) * dkl_dmu, dlogvar + (beta / B) * dkl_dlogvar
    # 4. head: d mu / d h[:Z] = 1, d logvar / d h[Z:] = 1 inside the clip, 0 outside
    return head.backward(dmu, dlogvar)


def log_weights(x, mu, logvar, log_prob, eps: np.ndarray, decode, prior=None) -> np.ndarray:
    r""":math:`\log w = \log p(x|z) + \log p(z) - \log q(z|\cdot)` at :math:`z = \mu + \sigma\epsilon`: (k, B) float64.

    ``mu``, ``logvar`` (B, Z) from the proposal; ``log_prob(x, out)`` the likelihood's log
    density; ``eps`` (k, B, Z); ``decode`` maps z (k*B, Z) to the likelihood's parameter;
    ``prior`` as in :func:`forward`.
    """
    k, B, Z = eps.shape
    z = dist.reparameterize(mu, logvar, eps)
    out = decode(z.reshape(k * B, Z)).reshape(k, B, -1)
    log_px = log_prob(x, out).astype(np.float64)
    z64 = z.astype(np.float64)
    log_pz = (dist.standard_normal_log_prob(z64) if prior is None else
              dist.gaussian_log_prob(z64, *(np.asarray(p, dtype=np.float64) for p in prior)))
    # log q(z|.) at z = mu + sigma eps is exactly -1/2 sum(log 2 pi + logvar + eps^2)
    log_qz = -0.5 * np.sum(dist.LOG_2PI + logvar.astype(np.float64) + eps.astype(np.float64) ** 2, axis=-1)
    return log_px + log_pz - log_qz
