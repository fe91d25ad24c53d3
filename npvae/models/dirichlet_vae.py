r"""The Dirichlet VAE: a latent point on the simplex, with a Laplace-approximated Dirichlet prior.

Srivastava & Sutton 2017, "Autoencoding Variational Inference for Topic Models", section
3.2 and eq. (3) (see :mod:`npvae.dirichlet`):

* encoder :math:`q_\phi(z|x) = N(\mu, \mathrm{diag}\,\sigma^2)`, :math:`z\in\mathbb R^K`
  (K = ``z_dim``), an MLP whose last layer outputs ``[mu, logvar]`` (as the VAE's);
* reparameterization :math:`z^{(l)} = \mu + \sigma\odot\epsilon^{(l)}`, then the point on the
  simplex :math:`\theta^{(l)} = \mathrm{softmax}(z^{(l)})` (the "topic proportions");
* decoder :math:`p_\theta(x|\theta)`: an MLP on :math:`\theta` (Bernoulli logits or a
  Gaussian mean);
* prior: Dirichlet(:math:`\alpha`) on :math:`\theta`, replaced by its Laplace approximation in
  the softmax basis, :math:`p(z) = N(\mu_0, \mathrm{diag}\,\sigma_0^2)` with
  :math:`\mu_{0k} = \log\alpha_k - \frac1K\sum_i\log\alpha_i` and
  :math:`\sigma_{0k}^2 = \frac1{\alpha_k}(1-\frac2K) + \frac1{K^2}\sum_i\frac1{\alpha_i}` (eq. 3).

The per-example objective is :math:`\mathcal L(x) = \frac1L\sum_l\log p(x|\mathrm{softmax}(z^{(l)}))
- \beta\,KL(N(\mu,\sigma^2)\,\|\,N(\mu_0,\sigma_0^2))`, the KL in closed form between two
diagonal Gaussians (:func:`npvae.distributions.kl_normal`, >= 0, 0 exactly at the prior);
the loss is :math:`-\mathcal L` averaged over the batch, nats per example. Every density
(KL, importance weights, ``log_likelihood``) is taken in z-space, so log p(x) here is the
marginal likelihood under the Laplace-approximated prior in the softmax basis, not under
the exact Dirichlet.
"""

from __future__ import annotations

import numpy as np

from .. import distributions as dist
from .._checks import check_float, check_int, check_x
from ..dirichlet import check_alpha, dirichlet_laplace_prior, softmax, softmax_backward
from .parts import Terms, check_z, decode_sample
from .vae import VAE

__all__ = ["DirichletVAE"]


class DirichletVAE(VAE):
    r"""A VAE whose decoder reads :math:`\theta = \mathrm{softmax}(z)` and whose prior is a Laplace-approximated Dirichlet.

    Parameters as :class:`npvae.models.VAE` (``z_dim`` = K >= 2 components), plus
    ``alpha``: the Dirichlet concentration, a positive float (symmetric) or K positive
    values (default 0.3: sparse proportions). ``prior_mu``, ``prior_logvar`` (K,) model
    dtype hold :math:`\mu_0, \log\sigma_0^2`. The encoder, ``encode``, ``posterior_means``
    and the importance-sampling wrappers are the VAE's; the decoder input, the prior, the
    sampler and the weights are this model's. Raises TypeError/ValueError naming a bad
    argument (``z_dim`` < 2, ``alpha`` of another length or not positive, ...).
    """

    kind = "dirichlet"

    def __init__(self, x_dim: int, z_dim: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, alpha=0.3, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        check_int(z_dim, "z_dim", minimum=2)  # a simplex needs K >= 2 components
        super().__init__(x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                         per_pixel_sigma=per_pixel_sigma, init=init)
        a = check_alpha(alpha, self.z_dim)
        self.alpha = float(alpha) if np.ndim(alpha) == 0 else a.tolist()  # JSON-able, as given
        mu0, logvar0 = dirichlet_laplace_prior(a, self.z_dim)
        self.prior_mu, self.prior_logvar = mu0.astype(self.dtype), logvar0.astype(self.dtype)

    @property
    def config(self) -> dict:
        """The constructor arguments (``alpha`` a float or a list), ``kind`` = "dirichlet"; JSON-able."""
        return {**super().config, "alpha": self.alpha}

    def __repr__(self) -> str:
        sizes = "-".join(map(str, (self.x_dim, *self.hidden, self.z_dim)))
        return f"DirichletVAE({sizes}, alpha={self.alpha}, likelihood={self.likelihood_name!r}, dtype={self.dtype})"

    # ---- encode, decode, sample ------------------------------------------------------
    def topic_proportions(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\theta = \mathrm{softmax}(\mu(x))`: (batch, K), model dtype, rows positive and summing to 1."""
        return softmax(self.encode(x)[0])

    theta = topic_proportions

    def decode(self, z: np.ndarray) -> np.ndarray:
        """The mean of p(x|softmax(z)): ``z`` (batch, K) in z-space (NOT θ; z + c·1 gives the same θ) -> (batch, x_dim)."""
        self._cache = None
        return self.likelihood.mean(self.decoder.forward(softmax(check_z(z, self.z_dim, self.dtype))))

    def sample(self, n: int, *, rng: np.random.Generator, mean: bool = True) -> np.ndarray:
        r"""z ~ :math:`N(\mu_0, \sigma_0^2)` (the Laplace prior), θ = softmax(z), then the mean of p(x|θ) or a draw. (n, x_dim)."""
        eps = dist.sample_eps((check_int(n, "n", minimum=1), self.z_dim), rng=rng, dtype=self.dtype)
        self._cache = None
        z = dist.reparameterize(self.prior_mu, self.prior_logvar, eps)
        return decode_sample(self.likelihood, self.decoder.forward(softmax(z)), mean=mean, rng=rng)

    # ---- the ELBO and its gradient ---------------------------------------------------
    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None, eps: np.ndarray | None = None,
                n_samples: int = 1, beta: float = 1.0) -> Terms:
        r"""Estimate the ELBO of a batch and cache what :meth:`backward` needs.

        ``x`` (batch, x_dim), model dtype; ``eps`` (n_samples, batch, K) (or (batch, K))
        fixes the noise, else ``rng`` draws it; ``n_samples`` = L; ``beta`` >= 0 weights the
        KL. Metrics (batch,) nats: ``reconstruction`` :math:`-\frac1L\sum_l\log p(x|\theta^{(l)})`,
        ``kl`` (to the Laplace prior, closed form), ``elbo`` (at beta = 1).
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)                      # (B, D)
        L, beta = check_int(n_samples, "n_samples", minimum=1), check_float(beta, "beta", minimum=0.0)
        B, K, D = x.shape[0], self.z_dim, self.x_dim
        eps = dist.noise((L, B, K), rng=rng, eps=eps, dtype=self.dtype)                 # (L, B, K)
        # 1. encode: h = [mu, logvar], q(z|x) = N(mu, diag exp(logvar)) in the softmax basis
        h = self.encoder.forward(x)                                                       # (B, 2K)
        mu, logvar = dist.split_mu_logvar(h)                                              # (B, K) each
        # 2. reparameterize: z = mu + sigma * eps, then the point on the simplex theta = softmax(z)
        z = dist.reparameterize(mu, logvar, eps)                                          # (L, B, K)
        theta = softmax(z.reshape(L * B, K))                                              # (L*B, K), rows sum to 1
        # 3. decode theta
        out = self.decoder.forward(theta).reshape(L, B, D)                                # (L, B, D)
        # 4. reconstruction: -(1/L) sum_l log p(x|theta_l)
        reconstruction = -self.likelihood.log_prob(x, out).mean(axis=0)                   # (B,)
        # 5. KL(N(mu, sigma^2) || N(mu0, sigma0^2)), the Laplace prior, in closed form
        kl = dist.kl_normal(mu, logvar, self.prior_mu, self.prior_logvar)                 # (B,)
        # 6. loss = mean over the batch of reconstruction + beta KL
        self._cache = (x, h, eps, mu, logvar, theta, out, beta)
        return Terms(float(np.mean(reconstruction + beta * kl)),
                     {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)})

    def backward(self) -> dict:
        """The gradient of the last ``forward``'s loss with respect to every parameter (``grads``, in place).

        The VAE's chain rule (:meth:`npvae.models.VAE.backward`) with the softmax between z
        and the decoder and the KL to the Laplace prior. RuntimeError if there is no
        forward to differentiate (none yet, or encode / decode / sample / iwae_bound ran
        since and overwrote the layers' caches).
        """
        if self._cache is None:
            raise RuntimeError("DirichletVAE.backward: call forward(x, ...) first (encode, decode, sample "
                               "and iwae_bound since the last forward overwrite what backward needs)")
        x, h, eps, mu, logvar, theta, out, beta = self._cache
        L, B, K = eps.shape
        # 1. likelihood: d loss / d out = -(1/(B L)) d log p(x|theta) / d out                          (L, B, D)
        d_out = self.likelihood.log_prob_grad(x, out, -1.0 / (B * L))
        # 2. decoder: d loss / d theta                                                                  (L*B, K)
        dtheta = self.decoder.backward(d_out.reshape(L * B, self.x_dim))
        #    softmax: d theta_j / d z_k = theta_j (delta_jk - theta_k)                                   (L, B, K)
        dz = softmax_backward(theta, dtheta).reshape(L, B, K)
        # 3. z = mu + sigma eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2, summed over the L draws       (B, K) each
        dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
        # 4. the KL term, beta/B KL: dKL/dmu = (mu - mu0) / sigma0^2, dKL/dlogvar = (sigma^2 / sigma0^2 - 1) / 2
        dkl_dmu, dkl_dlogvar = dist.kl_normal_grad(mu, logvar, self.prior_mu, self.prior_logvar)
        dmu = dmu + (beta / B) * dkl_dmu
        dlogvar = dlogvar + (beta / B) * dkl_dlogvar
        # 5. h = [mu, logvar]: the clip of logvar                                                       (B, 2K)
        dh = dist.split_mu_logvar_backward(h, dmu, dlogvar)
        # 6. encoder
        self.encoder.backward(dh)
        return self.grads

    # ---- importance sampling: the model's side of npvae.evaluate ---------------------
    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log p(x|\mathrm{softmax}(z)) + \log N(z;\mu_0,\sigma_0^2) - \log q(z|x)` at :math:`z = \mu + \sigma\epsilon`: (k, B) float64.

        The prior density is the Laplace approximation in z-space, so the resulting log p(x)
        is the marginal likelihood under that approximate prior (see the module docstring).
        """
        x, mu, logvar = q
        k, B, K = eps.shape
        z = dist.reparameterize(mu, logvar, eps)                                          # (k, B, K)
        out = self.decoder.forward(softmax(z.reshape(k * B, K))).reshape(k, B, self.x_dim)
        log_px = self.likelihood.log_prob(x, out).astype(np.float64)                      # log p(x|softmax(z))
        z64 = z.astype(np.float64)
        log_pz = dist.gaussian_log_prob(z64, self.prior_mu.astype(np.float64), self.prior_logvar.astype(np.float64))
        log_qz = dist.log_q_at_sample(logvar.astype(np.float64), eps.astype(np.float64))  # log q(z|x)
        return log_px + log_pz - log_qz
