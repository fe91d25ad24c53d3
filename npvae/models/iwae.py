r"""The importance-weighted autoencoder (IWAE), with its gradient written out by hand.

Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", eq. (8) and
section 3. Same networks as :class:`~npvae.models.VAE` (Gaussian encoder, standard-normal
prior, Bernoulli or Gaussian decoder); only the objective differs. For k draws
:math:`z_i = \mu + \sigma\odot\epsilon_i`, :math:`\epsilon_i\sim N(0, I)`,

.. math::
    \log w_i = \log p(x|z_i) + \log p(z_i) - \log q(z_i|x), \qquad
    \mathcal L_k(x) = \log \frac1k \sum_{i=1}^k w_i
                    = \mathrm{logsumexp}_i(\log w_i) - \log k,

with :math:`\log q(z_i|x) = -\tfrac12\sum_j(\log 2\pi + \mathrm{logvar}_j + \epsilon_{ij}^2)`
evaluated at the sampled z (no closed-form KL). The loss is :math:`-\frac1B\sum_n\mathcal L_k(x_n)`,
nats per example. :math:`\mathcal L_1 \le \mathcal L_k \le \mathcal L_m \le \log p(x)` in
expectation for k <= m (Burda et al., theorem 1); :math:`\mathcal L_k\to\log p(x)` as k grows.

Gradient (Burda et al., eq. 14): :math:`\nabla\mathcal L_k = \sum_i \tilde w_i\,\nabla\log w_i`
with :math:`\tilde w = \mathrm{softmax}_i(\log w)`, computed in float64 from the log
weights (log-sum-exp: nothing overflows whatever the spread of log w), then cast to the
model dtype. Through :math:`z = \mu + \sigma\epsilon`, the total derivative of
:math:`\log q(z|x)` at the sample has a direct (score) term and a path term through z:

* :math:`\mu`: direct :math:`(z-\mu)/\sigma^2 = \epsilon/\sigma`, path
  :math:`-(z-\mu)/\sigma^2\cdot 1 = -\epsilon/\sigma`: total 0;
* logvar: direct :math:`\tfrac12(\epsilon^2 - 1)`, path
  :math:`-(\epsilon/\sigma)\cdot\sigma\epsilon/2 = -\epsilon^2/2`: total :math:`-\tfrac12`.

``estimator="dreg"`` (Tucker, Lawson, Gu & Maddison 2019, "Doubly Reparameterized
Gradient Estimators for Monte Carlo Objectives", eq. 6) keeps the decoder gradient and
replaces the encoder's by :math:`\sum_i \tilde w_i^2\,\frac{\partial\log w_i}{\partial z_i}
\frac{\partial z_i}{\partial\phi}`, with q's parameters held fixed inside
:math:`\log q` (the score term dropped): the same expectation, lower variance, and no
vanishing signal-to-noise ratio as k grows (Rainforth et al. 2018). It is not the
gradient of the returned loss, so only its decoder part is checkable by finite
differences.

IWAE vs VAE: k = 1 and the analytic-KL ELBO
-------------------------------------------
At k = 1, :math:`\mathcal L_1 = \log p(x|z) + \log p(z) - \log q(z|x)` for one
:math:`z\sim q`: the single-sample ELBO with a *Monte Carlo* KL (Kingma & Welling 2014,
eq. 6, "SGVB estimator A"). :class:`~npvae.models.VAE` computes the KL in closed form
(their eq. 10, "estimator B"): :math:`-\log p(x|z) + KL(q\|p)`. The two have the same
expectation over :math:`\epsilon` (the ELBO), and so do their gradients, but IWAE(k=1)
carries extra noise: the Monte Carlo term
:math:`\log q(z|x) - \log p(z) = \tfrac12\sum_j(z_j^2 - \epsilon_j^2 - \mathrm{logvar}_j)`
differs from the KL by a zero-mean term, and its gradient by
:math:`\sigma\epsilon` in :math:`\partial/\partial\mu` and
:math:`\tfrac12(\mu\sigma\epsilon + \sigma^2(\epsilon^2 - 1))` in
:math:`\partial/\partial\,\mathrm{logvar}` per latent unit. These do not vanish for an
inactive unit (q = p: :math:`\mu = 0, \sigma = 1` gives noise :math:`\epsilon` in the
mean's gradient) where the closed form's gradient is exactly 0. For k > 1 no closed form
exists (the weights couple the terms), hence the Monte Carlo KL throughout. At k = 1 DReG
is the "sticking the landing" estimator (Roeder et al. 2017), whose noise vanishes when q
is the exact posterior.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from .. import distributions as dist
from .._checks import check_choice, check_int, check_x
from .parts import Terms
from .vae import VAE

__all__ = ["IWAE", "ESTIMATORS"]

#: the gradient estimators of :class:`IWAE`: Burda et al. 2016 and Tucker et al. 2019.
ESTIMATORS = ("iwae", "dreg")


class IWAE(VAE):
    r"""An importance-weighted autoencoder: the :class:`~npvae.models.VAE`'s networks trained on :math:`\mathcal L_k`.

    Parameters are the :class:`~npvae.models.VAE`'s (``x_dim``, ``z_dim``, ``hidden``,
    ``activation``, ``likelihood``, ``rng``, ``dtype``, ``sigma_x``, ``per_pixel_sigma``,
    ``init``), plus

    k : int >= 1
        Importance samples per example (Burda et al.'s k; 1 = the Monte Carlo-KL ELBO).
    estimator : {"iwae", "dreg"}
        The encoder's gradient estimator (see the module docstring).

    Inherits ``encode``, ``decode``, ``sample``, ``proposal``, ``log_weights``,
    ``iwae_bound``, ``log_likelihood``, ``posterior_means`` from the VAE. Raises
    TypeError/ValueError naming a bad argument.
    """

    kind = "iwae"
    loss_name = "neg_iwae_bound"
    forward_options = ()

    def __init__(self, x_dim: int, z_dim: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, k: int = 5, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform",
                 estimator: str = "iwae") -> None:
        self.k = check_int(k, "k", minimum=1)
        self.estimator = check_choice(estimator, "estimator", ESTIMATORS)
        super().__init__(x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                         per_pixel_sigma=per_pixel_sigma, init=init)

    @property
    def config(self) -> dict:
        """The VAE's config plus ``k`` and ``estimator``, with ``kind = "iwae"``."""
        return {**super().config, "k": self.k, "estimator": self.estimator}

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, k={self.k}, estimator={self.estimator!r})"

    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None,
                eps: np.ndarray | None = None) -> Terms:
        r"""Estimate :math:`\mathcal L_k` of a batch and cache what :meth:`backward` needs.

        ``x`` (batch, x_dim), model dtype; ``eps`` (k, batch, z_dim) (or (batch, z_dim)
        when k = 1) fixes the noise, else ``rng`` draws it. Returns :class:`Terms`: loss
        :math:`-\frac1B\sum_n\mathcal L_k(x_n)` (nats per example) and per-example
        metrics, each (batch,) nats in the model dtype:

        * ``iwae_bound``: :math:`\mathcal L_k(x)` (= minus the loss, per example);
        * ``reconstruction``: :math:`-\frac1k\sum_i\log p(x|z_i)` (the VAE's, with L = k);
        * ``kl``: the closed-form :math:`KL(q(z|x)\,\|\,p(z))` (a diagnostic of the
          encoder, not part of the loss);
        * ``elbo``: ``-(reconstruction + kl)``, the VAE's analytic-KL ELBO from the same
          k draws; :math:`\mathcal L_k - \mathrm{ELBO} \ge 0` in expectation is what the
          tighter bound gains.

        Raises TypeError/ValueError for a bad ``x`` or ``eps``, ValueError with neither
        ``rng`` nor ``eps``.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)                      # (B, D)
        k, B, Z, D = self.k, x.shape[0], self.z_dim, self.x_dim
        eps = dist.noise((k, B, Z), rng=rng, eps=eps, dtype=self.dtype)                 # (k, B, Z)
        # 1. encode: h = [mu, logvar], q(z|x) = N(mu, diag exp(logvar))
        h = self.encoder.forward(x)                                                       # (B, 2Z)
        mu, logvar = dist.split_mu_logvar(h)                                              # (B, Z) each
        # 2. reparameterize: z_i = mu + sigma * eps_i, i = 1..k
        z = dist.reparameterize(mu, logvar, eps)                                          # (k, B, Z)
        # 3. decode
        out = self.decoder.forward(z.reshape(k * B, Z)).reshape(k, B, D)                 # (k, B, D)
        # 4. log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), in float64
        log_px = self.likelihood.log_prob(x, out)                                         # (k, B)
        log_pz = dist.standard_normal_log_prob(z.astype(np.float64))                      # (k, B)
        log_qz = dist.log_q_at_sample(logvar.astype(np.float64), eps.astype(np.float64))  # (k, B)
        log_w = log_px.astype(np.float64) + log_pz - log_qz                              # (k, B)
        # 5. L_k = log (1/k) sum_i w_i = logsumexp_i(log w_i) - log k; w~ = exp(log w - logsumexp)
        lse = logsumexp(log_w, axis=0)                                                    # (B,)
        w_tilde = np.exp(log_w - lse)                                                     # (k, B), sums to 1 over i
        bound = lse - np.log(k)
        reconstruction = -log_px.mean(axis=0)
        kl = dist.gaussian_kl(mu, logvar)
        self._cache = (x, h, eps, z, mu, logvar, out, w_tilde.astype(self.dtype))
        dt = self.dtype
        return Terms(float(-np.mean(bound)), {"iwae_bound": bound.astype(dt), "reconstruction": reconstruction,
                                              "kl": kl, "elbo": -(reconstruction + kl)})

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss, :math:`-\frac1B\sum_n\sum_i\tilde w_{in}\nabla\log w_{in}`.

        The chain rule, in order: (1) likelihood with per-sample weights
        :math:`s = -\tilde w/B`, (2) decoder, (3) the prior's :math:`\log p(z)`,
        (4) through :math:`z = \mu + \sigma\epsilon` and the total derivative of
        :math:`-\log q(z|x)`, (5) the logvar clip (:func:`~npvae.distributions.split_mu_logvar_backward`) and the encoder. With
        ``estimator="dreg"`` step 4 uses Tucker et al.'s weights :math:`\tilde w^2` and
        the path term only (not the gradient of the loss; see the module docstring).
        Overwrites and returns :attr:`grads` (live arrays, model dtype). Raises
        RuntimeError if there is no forward to differentiate.
        """
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x, ...) first (encode, decode, sample "
                               "and iwae_bound since the last forward overwrite what backward needs)")
        x, h, eps, z, mu, logvar, out, w_tilde = self._cache
        k, B, Z = eps.shape
        s = w_tilde * self.dtype.type(-1.0 / B)          # d loss / d log w_i = -w~_i / B      (k, B)
        # 1. likelihood: d loss / d out = s * d log p(x|z) / d out                          (k*B, x_dim)
        d_out = self.likelihood.log_prob_grad(x, out, s).reshape(k * B, self.x_dim)
        # 2. decoder: d loss / d z from log p(x|z)                                          (k, B, Z)
        dz = self.decoder.backward(d_out).reshape(k, B, Z)
        # 3. prior: d log p(z) / d z = -z
        dz -= s[..., None] * z
        if self.estimator == "dreg":
            # 4'. DReG: -log q's path term only, d(-log q)/dz at fixed (mu, sigma) = (z - mu)/sigma^2 = eps/sigma,
            #     and weights w~^2: scale the w~-weighted d loss/d z once more by w~
            dz += s[..., None] * eps * np.exp(-0.5 * logvar)
            dz *= w_tilde[..., None]
            dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
        else:
            # 4. z = mu + sigma eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2 (summed over i) ...
            dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
            #    ... + the total derivative of -log q(z|x) at the sample (direct + path):
            #    d/dmu: -eps/sigma + eps/sigma = 0;  d/dlogvar: -(eps^2 - 1)/2 + eps^2/2 = 1/2
            dlogvar = dlogvar + 0.5 * s.sum(axis=0)[:, None]
        # 5. h = [mu, logvar] (the clip) and the encoder
        self.encoder.backward(dist.split_mu_logvar_backward(h, dmu, dlogvar))
        return self.grads
