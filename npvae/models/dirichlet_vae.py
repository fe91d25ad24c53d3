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
from .._checks import check_float, check_int
from ..dirichlet import check_alpha, dirichlet_laplace_prior, softmax, softmax_backward
from . import elbo
from .parts import Terms, check_x, check_z, decode_sample, noise
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
        self._prior = (self.prior_mu, self.prior_logvar)

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
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        L, beta = check_int(n_samples, "n_samples", minimum=1), check_float(beta, "beta", minimum=0.0)
        eps = noise((L, x.shape[0], self.z_dim), rng=rng, eps=eps, dtype=self.dtype)
        # encoder, then the Gaussian-posterior ELBO (npvae.models.elbo) with the decoder reading
        # theta = softmax(z) and the KL to the Laplace prior N(mu0, sigma0^2) in closed form
        terms, self._cache = elbo.forward(x, self.encoder.forward(x), eps, beta=beta, head=self.head,
                                          decode=self._decode_theta, likelihood=self.likelihood, prior=self._prior)
        return terms

    def _decode_theta(self, z: np.ndarray) -> np.ndarray:
        """z (N, K) -> decoder output at theta = softmax(z); keeps theta for :meth:`_decode_theta_backward`."""
        self._theta = softmax(z)                                             # (N, K), on the simplex
        return self.decoder.forward(self._theta)

    def _decode_theta_backward(self, d_out: np.ndarray) -> np.ndarray:
        """d loss / d out -> d loss / d z: the decoder, then d theta_j / d z_k = theta_j (delta_jk - theta_k)."""
        return softmax_backward(self._theta, self.decoder.backward(d_out))

    def backward(self) -> dict:
        """The gradient of the last ``forward``'s loss with respect to every parameter (``grads``, in place).

        The chain rule in order (steps 1-4 in :func:`npvae.models.elbo.backward`): (1) the
        likelihood, (2) the decoder and the softmax (:meth:`_decode_theta_backward`), (3) z =
        mu + sigma eps plus the KL to the Laplace prior, (4) the head's clip; (5) the encoder.
        RuntimeError if there is no forward to differentiate (none yet, or encode / decode /
        sample / iwae_bound ran since and overwrote the layers' caches).
        """
        if self._cache is None:
            raise RuntimeError("DirichletVAE.backward: call forward(x, ...) first (encode, decode, sample "
                               "and iwae_bound since the last forward overwrite what backward needs)")
        dh = elbo.backward(self._cache, head=self.head, decode_backward=self._decode_theta_backward,
                           likelihood=self.likelihood)
        self.encoder.backward(dh)
        return self.grads

    # ---- importance sampling: the model's side of npvae.evaluate ---------------------
    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log p(x|\mathrm{softmax}(z)) + \log N(z;\mu_0,\sigma_0^2) - \log q(z|x)` at :math:`z = \mu + \sigma\epsilon`: (k, B) float64.

        The prior density is the Laplace approximation in z-space, so the resulting log p(x)
        is the marginal likelihood under that approximate prior (see the module docstring).
        """
        x, mu, logvar, log_prob = q
        return elbo.log_weights(x, mu, logvar, log_prob, eps, lambda z: self.decoder.forward(softmax(z)),
                                prior=self._prior)
