r"""The VAE with a VampPrior: a learned prior, the mixture of the encoder's posteriors at K pseudo-inputs.

Tomczak & Welling 2018, "VAE with a VampPrior" (AISTATS), section 3. The networks are the
:class:`~npvae.models.VAE`'s (Gaussian encoder :math:`q_\phi(z|x) = N(\mu(x), \mathrm{diag}\,\sigma^2(x))`,
decoder :math:`p_\theta(x|z)`); only the prior changes. The optimal prior for the ELBO is the
aggregate posterior :math:`\frac1N\sum_n q(z|x_n)` (their section 3); the VampPrior approximates
it with K learned pseudo-inputs :math:`u_k`,

.. math::
    p_\lambda(z) = \frac1K\sum_{k=1}^K q_\phi(z|u_k), \qquad u_k = \mathrm{hardtanh}(m_k) \in [0, 1]^D,

with :math:`m_k` the rows of a learned (K, x_dim) matrix ``params["pseudo.means"]`` (their code:
a bias-free linear layer applied to the identity, then ``Hardtanh(0, 1)``;
:math:`\mathrm{hardtanh}(m) = \min(\max(m, 0), 1)`), initialised :math:`N(0.05, 0.01^2)`. (Their
code's default ``--pseudoinputs_mean`` is -0.05, which the hardtanh maps to 0 with a zero
gradient: every :math:`u_k` would stay the black image. +0.05 starts every entry inside (0, 1).)

The KL has no closed form; it is estimated at the sample, as in their code:

.. math::
    \mathcal L(x) = \log p_\theta(x|z) + \log p_\lambda(z) - \log q_\phi(z|x), \qquad
    z = \mu + \sigma\odot\epsilon,\ \epsilon\sim N(0, I),

    \log p_\lambda(z) = \log\frac1K\sum_k e^{a_k}, \qquad a_k = \log N(z; \mu_k, \mathrm{diag}\,\sigma_k^2),

with :math:`(\mu_k, \log\sigma_k^2)` the encoder's output at :math:`u_k`. The loss is
:math:`-\frac1B\sum_n \mathcal L(x_n)` in nats per example (with ``beta``, the KL term
:math:`\log q - \log p` is weighted by beta: the KL warm-up their code uses, ``--warmup``).

Gradient (written out in :meth:`VampVAE.backward`, numbered as the forward):

* :math:`\log p_\lambda(z)` is a log-mean-exp of the :math:`a_k`: :math:`\partial/\partial a_k = r_k`,
  the responsibilities :math:`r = \mathrm{softmax}_k(a)`; then
  :math:`\partial a_k/\partial z = -(z-\mu_k)/\sigma_k^2`, :math:`\partial a_k/\partial\mu_k = (z-\mu_k)/\sigma_k^2`,
  :math:`\partial a_k/\partial\log\sigma_k^2 = \tfrac12((z-\mu_k)^2/\sigma_k^2 - 1)`.
* :math:`\log q(z|x)` at its own sample: the total derivative through :math:`z = \mu + \sigma\epsilon`
  is 0 in :math:`\mu` and :math:`-\tfrac12` in logvar (see :mod:`npvae.models.iwae`).
* The encoder receives gradient twice: through :math:`(\mu, \log\sigma^2)` of the data and
  through :math:`(\mu_k, \log\sigma_k^2)` of the K pseudo-inputs. Both are passes of the same
  weights, so their gradients add; here both run as one pass over the stacked rows
  :math:`[x; u]` (B + K rows), where the layer's :math:`x^\top\,dy` sums them.
* The pseudo-inputs receive :math:`\partial L/\partial u_k` from the encoder's input gradient,
  times :math:`\partial u/\partial m = 1` on (0, 1) and 0 outside.

Cost: the encoder runs on B + K rows every step, and :math:`a` is a (B, K, z_dim) array.
"""

from __future__ import annotations

import math

import numpy as np

from .. import distributions as dist
from .._checks import check_float, check_int, check_rng, check_x
from .parts import Terms, check_z, decode_sample
from .vae import VAE

__all__ = ["VampVAE", "PseudoInputs", "PSEUDO_INIT_MEAN", "PSEUDO_INIT_STD"]

#: the pseudo-inputs' pre-hardtanh values start N(PSEUDO_INIT_MEAN, PSEUDO_INIT_STD^2) (Tomczak & Welling's code)
PSEUDO_INIT_MEAN, PSEUDO_INIT_STD = 0.05, 0.01
#: (rows, K, z_dim) elements per block of :func:`_log_vamp_prior` (evaluation only): bounds its memory
_PRIOR_BLOCK = 1 << 20


class PseudoInputs:
    r"""K learned pseudo-inputs :math:`u_k = \mathrm{hardtanh}(m_k) = \min(\max(m_k, 0), 1) \in [0, 1]^D`.

    ``params["means"]``, ``grads["means"]``: the (K, D) matrix m, model dtype, drawn
    :math:`N(0.05, 0.01^2)` from ``rng``. ``forward() -> u`` (K, D) caches where
    :math:`0 < m < 1`; ``backward(du)`` writes :math:`\partial L/\partial m` into ``grads`` (no
    input, so nothing is returned). Tomczak & Welling's code: a bias-free linear layer applied
    to the K x K identity, then ``Hardtanh(0, 1)``; the product with the identity is m itself.
    """

    def __init__(self, n_pseudo: int, x_dim: int, *, rng: np.random.Generator, dtype) -> None:
        means = PSEUDO_INIT_MEAN + PSEUDO_INIT_STD * rng.standard_normal((n_pseudo, x_dim), dtype=dtype)
        self.params = {"means": means}
        self.grads = {"means": np.zeros_like(means)}
        self._inside = None

    def forward(self) -> np.ndarray:
        """``u = hardtanh(m)``: (K, D), a new array."""
        m = self.params["means"]
        self._inside = (m > 0) & (m < 1)                  # where du/dm = 1
        return np.clip(m, 0, 1)

    def backward(self, du: np.ndarray) -> None:
        """``du`` = dL/du (K, D) -> ``grads["means"]`` = dL/dm, overwritten. RuntimeError before a forward."""
        if self._inside is None:
            raise RuntimeError("PseudoInputs.backward called before forward: call forward() first")
        # du/dm = 1 on (0, 1), 0 outside (a pixel held at the clip, 0 or 1, passes no gradient)
        np.multiply(du, self._inside, out=self.grads["means"])


def _log_mean_exp(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""``(log (1/K) sum_k exp(a_k), softmax_k(a))`` over the last axis of ``a`` (..., K): (...), (..., K).

    Identity: :math:`\log\frac1K\sum_k e^{a_k} = m + \log\sum_k e^{a_k - m} - \log K` with
    :math:`m = \max_k a_k`: every exponent is <= 0 (nothing overflows) and the largest term
    is exactly 1 (the sum never underflows to 0). The softmax
    :math:`r_k = e^{a_k - \mathrm{lse}}` is the derivative of the log-sum-exp. a's dtype.
    """
    m = a.max(axis=-1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(a - m), axis=-1, keepdims=True))       # log sum_k exp(a_k)
    return lse[..., 0] - a.dtype.type(math.log(a.shape[-1])), np.exp(a - lse)


def _log_vamp_prior(z: np.ndarray, mu_p: np.ndarray, logvar_p: np.ndarray) -> np.ndarray:
    r""":math:`\log\frac1K\sum_k N(z; \mu_k, \mathrm{diag}\,e^{\mathrm{logvar}_k})`, float64 nats: z (..., Z) -> (...).

    ``mu_p``, ``logvar_p``: (K, Z). The rows of z are taken in blocks of at most
    :data:`_PRIOR_BLOCK` / (K Z), so the (rows, K, Z) temporary stays small whatever the
    number of importance samples.
    """
    Z, K = z.shape[-1], mu_p.shape[0]
    flat = z.reshape(-1, Z).astype(np.float64)
    mu_p, logvar_p = mu_p.astype(np.float64), logvar_p.astype(np.float64)
    rows = max(1, _PRIOR_BLOCK // (K * Z))
    out = np.empty(flat.shape[0], dtype=np.float64)
    for i in range(0, flat.shape[0], rows):
        a = dist.gaussian_log_prob(flat[i:i + rows, None, :], mu_p[None], logvar_p[None])   # (rows, K)
        out[i:i + rows] = _log_mean_exp(a)[0]
    return out.reshape(z.shape[:-1])


class VampVAE(VAE):
    r"""A VAE whose prior is the VampPrior :math:`p(z) = \frac1K\sum_k q(z|u_k)`, with K learned pseudo-inputs.

    Parameters are the :class:`~npvae.models.VAE`'s (``x_dim``, ``z_dim``, ``hidden``,
    ``activation``, ``likelihood``, ``rng``, ``dtype``, ``sigma_x``, ``per_pixel_sigma``,
    ``init``), plus

    n_pseudo : int >= 1
        K, the number of pseudo-inputs (mixture components); Tomczak & Welling use 500.

    ``params``/``grads``: the VAE's ("encoder.0.W", ..., "decoder.*", "likelihood.log_sigma"
    if learned) plus "pseudo.means" (K, x_dim), the pre-hardtanh pseudo-inputs
    (:class:`PseudoInputs`, ``model.pseudo``), drawn from ``rng`` after the networks' weights.
    Inherits ``encode``, ``decode``, ``reconstruct``, ``posterior_means``, ``latent_activity``,
    ``active_units``, ``iwae_bound`` and ``log_likelihood`` from the VAE (the last two call
    :meth:`proposal` and :meth:`log_weights`, so they use this prior). Raises
    TypeError/ValueError naming a bad argument.
    """

    kind = "vamp"
    loss_name = "neg_elbo"
    forward_options = ("beta",)

    def __init__(self, x_dim: int, z_dim: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, n_pseudo: int = 500, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        self.n_pseudo = check_int(n_pseudo, "n_pseudo", minimum=1)
        super().__init__(x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                         per_pixel_sigma=per_pixel_sigma, init=init)
        # the encoder's input now includes the pseudo-inputs, which are parameters: dL/du is needed
        self.encoder[0].skip_input_grad = False
        self.pseudo = PseudoInputs(self.n_pseudo, self.x_dim, rng=rng, dtype=self.dtype)
        self.params["pseudo.means"] = self.pseudo.params["means"]
        self.grads["pseudo.means"] = self.pseudo.grads["means"]

    @property
    def config(self) -> dict:
        """The VAE's config plus ``n_pseudo``, with ``kind = "vamp"``."""
        return {**super().config, "n_pseudo": self.n_pseudo}

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, n_pseudo={self.n_pseudo})"

    # ---- the prior -----------------------------------------------------------------------
    @property
    def pseudo_inputs(self) -> np.ndarray:
        r"""The current pseudo-inputs :math:`u_k = \mathrm{hardtanh}(m_k) = \min(\max(m_k, 0), 1)`.

        (K, x_dim), model dtype, a new array (changing it changes nothing in the model).
        """
        return np.clip(self.pseudo.params["means"], 0, 1)

    def _prior_components(self) -> tuple[np.ndarray, np.ndarray]:
        """``mu_k``, ``logvar_k`` of q(z|u_k), (K, z_dim) each, model dtype (overwrites the layers' caches)."""
        self._cache = None
        mu_p, logvar_p = dist.split_mu_logvar(self.encoder.forward(self.pseudo_inputs))
        return mu_p.copy(), logvar_p

    def log_prior(self, z: np.ndarray) -> np.ndarray:
        r""":math:`\log p_\lambda(z) = \log\frac1K\sum_k q(z|u_k)` per row, nats, float64: z (B, z_dim) -> (B,).

        ``z`` in the model dtype, finite (TypeError/ValueError otherwise). Computed in float64
        as a log-mean-exp over the K components (Tomczak & Welling 2018, section 3).
        """
        z = check_z(z, self.z_dim, self.dtype)
        return _log_vamp_prior(z, *self._prior_components())

    def sample(self, n: int, *, rng: np.random.Generator, mean: bool = True) -> np.ndarray:
        """Ancestral sampling from the VampPrior, (n, x_dim) in the model dtype.

        In this order from ``rng``: a component k uniformly from 0..K-1 per draw, then
        :math:`\\epsilon\\sim N(0, I)` and :math:`z = \\mu_k + \\sigma_k\\epsilon` (a draw of
        q(z|u_k)), then the mean of p(x|z) (``mean=True``) or a draw x ~ p(x|z).
        """
        n = check_int(n, "n", minimum=1)
        check_rng(rng)
        mu_p, logvar_p = self._prior_components()                                  # (K, Z) each
        k = rng.integers(0, self.n_pseudo, size=n)                                # (n,) uniform components
        eps = dist.sample_eps((n, self.z_dim), rng=rng, dtype=self.dtype)         # (n, Z)
        z = dist.reparameterize(mu_p[k], logvar_p[k], eps)                         # z ~ q(z|u_k)
        return decode_sample(self.likelihood, self.decoder.forward(z), mean=mean, rng=rng)

    # ---- the ELBO and its gradient ------------------------------------------------------
    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None, eps: np.ndarray | None = None,
                beta: float = 1.0) -> Terms:
        r"""Estimate the ELBO of a batch with the VampPrior and cache what :meth:`backward` needs.

        ``x`` (B, x_dim), model dtype; ``eps`` (B, z_dim) or (1, B, z_dim) fixes the noise,
        else ``rng`` draws it; ``beta`` >= 0 weights the KL term (1: the ELBO). Returns
        :class:`Terms`: ``loss`` :math:`\frac1B\sum_n(\mathrm{rec}_n + \beta\,\mathrm{kl}_n)` and
        (B,) metrics in nats, model dtype: ``reconstruction`` :math:`-\log p(x|z)`, ``kl``
        :math:`\log q(z|x) - \log p_\lambda(z)` at the sample (a one-sample estimate of the KL:
        it can be negative), ``elbo`` :math:`-(\mathrm{rec} + \mathrm{kl})`. Raises
        TypeError/ValueError for bad arguments, ValueError with neither ``rng`` nor ``eps``.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)                      # (B, D)
        beta = check_float(beta, "beta", minimum=0.0)
        B, Z = x.shape[0], self.z_dim                                                    # D = x_dim, K = n_pseudo
        eps = dist.noise((1, B, Z), rng=rng, eps=eps, dtype=self.dtype)[0]              # (B, Z)
        # 1. pseudo-inputs: u_k = hardtanh(m_k) = min(max(m_k, 0), 1)                      (K, D)
        u = self.pseudo.forward()
        # 2. encode the batch and the K pseudo-inputs with the same encoder, one pass over [x; u]
        h = self.encoder.forward(np.concatenate([x, u]))                                   # (B + K, 2Z)
        mu_all, logvar_all = dist.split_mu_logvar(h)                                      # (B + K, Z) each
        mu, logvar = mu_all[:B], logvar_all[:B]                                           # q(z|x)      (B, Z)
        mu_p, logvar_p = mu_all[B:], logvar_all[B:]                                       # q(z|u_k)    (K, Z)
        # 3. reparameterize: z = mu + sigma * eps
        z = dist.reparameterize(mu, logvar, eps)                                          # (B, Z)
        # 4. decode, and the reconstruction term -log p(x|z)
        out = self.decoder.forward(z)                                                     # (B, D)
        reconstruction = -self.likelihood.log_prob(x, out)                                # (B,)
        # 5. log q(z|x) at its own sample: -1/2 sum_j (log 2 pi + logvar_j + eps_j^2)
        log_qz = dist.log_q_at_sample(logvar, eps)                                        # (B,)
        # 6. log p(z) = log (1/K) sum_k exp(a_k), a_k = log N(z; mu_k, sigma_k^2); r = softmax_k(a)
        a = dist.gaussian_log_prob(z[:, None, :], mu_p[None], logvar_p[None])             # (B, K)
        log_pz, r = _log_mean_exp(a)                                                      # (B,), (B, K)
        # 7. the KL at the sample, and the loss: mean over the batch of rec + beta kl
        kl = log_qz - log_pz                                                              # (B,)
        self._cache = (x, h, eps, z, logvar, mu_p, logvar_p, r, out, beta)
        return Terms(float(np.mean(reconstruction + beta * kl)),
                     {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)})

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss.

        The loss is :math:`\frac1B\sum_n[-\log p(x_n|z_n) + \beta(\log q(z_n|x_n) - \log p_\lambda(z_n))]`.

        The chain rule through the forward's steps in reverse (the forward's step numbers in
        parentheses), the local derivative beside each step. Overwrites
        and returns :attr:`grads` (live arrays, model dtype), "pseudo.means" included.
        Raises RuntimeError if there is no forward to differentiate (none yet, or encode /
        decode / sample / log_prior / iwae_bound ran since and overwrote the layers' caches).
        """
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x, ...) first (encode, decode, sample, "
                               "log_prior and iwae_bound since the last forward overwrite what backward needs)")
        x, h, eps, z, logvar, mu_p, logvar_p, r, out, beta = self._cache
        B = x.shape[0]
        c = self.dtype.type(beta / B)                    # d loss / d kl_n = beta / B
        # 1. likelihood (forward step 4): d loss / d out = -(1/B) d log p(x|z) / d out; Bernoulli: x - sigmoid(out)
        d_out = self.likelihood.log_prob_grad(x, out, -1.0 / B)                          # (B, D)
        # 2. decoder: d loss / d z from the reconstruction term                                (B, Z)
        dz = self.decoder.backward(d_out)
        # 3. the prior (step 6), -c log p(z): d log p / d a_k = r_k (softmax), so d loss / d a_bk = -c r_bk ...
        w = -c * r[..., None]                                                             # (B, K, 1)
        #    ... times d a_k/dz = -(z - mu_k)/sigma_k^2, d a_k/dmu_k = (z - mu_k)/sigma_k^2,
        #    d a_k/dlogvar_k = ((z - mu_k)^2/sigma_k^2 - 1)/2                              (B, K, Z) each
        da_dz, da_dmu, da_dlogvar = dist.gaussian_log_prob_grad(z[:, None, :], mu_p[None], logvar_p[None])
        dz += np.sum(w * da_dz, axis=1)                  # summed over the K components   (B, Z)
        dmu_p = np.sum(w * da_dmu, axis=0)               # summed over the batch          (K, Z)
        dlogvar_p = np.sum(w * da_dlogvar, axis=0)       #                                 (K, Z)
        # 4. z = mu + sigma eps (step 3): dz/dmu = 1, dz/dlogvar = sigma eps / 2             (B, Z) each
        dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
        # 5. +c log q(z|x) (step 5), its total derivative at the sample (direct + path through z):
        #    d/dmu: eps/sigma - eps/sigma = 0;  d/dlogvar: (eps^2 - 1)/2 - eps^2/2 = -1/2
        dlogvar = dlogvar - c / 2
        # 6. h = [mu, logvar] of the B + K rows (step 2): the clip passes no gradient outside [-20, 10]
        dh = dist.split_mu_logvar_backward(h, np.concatenate([dmu, dmu_p]), np.concatenate([dlogvar, dlogvar_p]))
        # 7. the encoder: one backward over the B + K rows, so each weight's gradient is the sum of
        #    the data pass's and the pseudo-input pass's (x^T dy sums the rows); returns d loss / d [x; u]
        d_in = self.encoder.backward(dh)                                                  # (B + K, D)
        # 8. u = hardtanh(m) (step 1): du/dm = 1 on (0, 1), 0 outside (a pixel held at 0 or 1)
        self.pseudo.backward(d_in[B:])
        return self.grads

    # ---- importance sampling: the model's side of npvae.evaluate -----------------------
    def proposal(self, x: np.ndarray):
        """Encode once for :func:`npvae.evaluate.iwae_bound`: ``(x, mu, logvar, mu_p, logvar_p)``.

        ``mu``, ``logvar``: q(z|x), (B, z_dim) each; ``mu_p``, ``logvar_p``: the prior's K
        components q(z|u_k), (K, z_dim) each; model dtype.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        mu_p, logvar_p = self._prior_components()
        mu, logvar = dist.split_mu_logvar(self.encoder.forward(x))
        return x, mu.copy(), logvar, mu_p, logvar_p

    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log w = \log p(x|z) + \log p_\lambda(z) - \log q(z|x)` at :math:`z = \mu + \sigma\epsilon`.

        :math:`p_\lambda` is the VampPrior, evaluated in float64 (:func:`_log_vamp_prior`).

        ``q`` from :meth:`proposal`; ``eps`` (k, B, z_dim), model dtype. Returns (k, B)
        float64 nats (Burda et al. 2016, eq. 8; Tomczak & Welling's code estimates log p(x) so, S = 5000).
        """
        x, mu, logvar, mu_p, logvar_p = q
        k, B, Z = eps.shape
        z = dist.reparameterize(mu, logvar, eps)                                          # (k, B, Z)
        out = self.decoder.forward(z.reshape(k * B, Z)).reshape(k, B, self.x_dim)        # (k, B, D)
        log_px = self.likelihood.log_prob(x, out).astype(np.float64)                      # log p(x|z)
        log_pz = _log_vamp_prior(z, mu_p, logvar_p)                                       # log p(z), the VampPrior
        log_qz = dist.log_q_at_sample(logvar.astype(np.float64), eps.astype(np.float64))  # log q(z|x)
        return log_px + log_pz - log_qz
