r"""The variational autoencoder: the ELBO and its gradient, written out by hand in this file.

Model (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", section 3 and appendices
B and C; every step is derived in ``docs/derivation.md``, section "The VAE"):

* encoder :math:`q_\phi(z|x) = N(\mu, \mathrm{diag}\,\sigma^2)`: an MLP whose last layer
  outputs ``h = [mu, logvar]`` (``logvar`` :math:`= \log\sigma^2`, clipped to [-20, 10]);
* reparameterization :math:`z^{(l)} = \mu + \sigma\odot\epsilon^{(l)}`,
  :math:`\epsilon^{(l)}\sim N(0, I)`, :math:`\sigma = \exp(\mathrm{logvar}/2)`;
* prior :math:`p(z) = N(0, I)`;
* decoder :math:`p_\theta(x|z)`: an MLP whose output is the likelihood's parameter
  (Bernoulli logits, or a Gaussian mean with a fixed or learned :math:`\sigma_x`).

The per-example objective is the ELBO with L = ``n_samples`` draws and the KL in closed
form (eq. 10, "SGVB estimator B"),

.. math::
    \mathcal L(x) = \frac1L\sum_{l=1}^L \log p_\theta(x|z^{(l)}) - \beta\,KL(q_\phi(z|x)\,\|\,p(z)),

and the loss is :math:`-\mathcal L` averaged over the batch, in nats per example.
``beta = 1`` is the VAE, ``beta != 1`` the beta-VAE (Higgins et al. 2017).
:meth:`VAE.forward` computes it in numbered steps and :meth:`VAE.backward` runs the chain
rule back through the same steps; the pieces they call are functions on arrays in
:mod:`npvae.distributions` and the layers' own ``forward``/``backward``.
"""

from __future__ import annotations

import numpy as np

from .. import distributions as dist
from .. import evaluate
from .._checks import check_float, check_int, check_x
from ..layers import MLP
from .parts import Terms, build_from_config, check_z, collect, common_config, decode_sample, in_batches, set_common

__all__ = ["VAE"]


class VAE:
    r"""A VAE with a Gaussian encoder, a standard-normal prior and a Bernoulli or Gaussian decoder.

    Parameters
    ----------
    x_dim, z_dim : int >= 1
        Data dimension (784 for MNIST) and latent dimension.
    hidden : sequence of int
        Encoder hidden widths; the decoder mirrors them. ``(400,)`` is the 784-400-20 network
        of the PyTorch examples VAE.
    activation : str
        One of :data:`npvae.layers.ACTIVATIONS`.
    likelihood : {"bernoulli", "gaussian", "gaussian_learned"}
        The decoder distribution (see :func:`npvae.models.parts.make_likelihood`).
    rng : np.random.Generator
        Initializes the weights.
    dtype : float32 or float64
        Of every parameter, gradient and activation.
    sigma_x : float > 0, per_pixel_sigma : bool, init : str
        Gaussian decoder scale (initial value when learned), one learned sigma_x per pixel,
        weight initializer (:mod:`npvae.init`).

    ``params``/``grads``: "encoder.0.W", ..., "decoder.2.b" and, for "gaussian_learned",
    "likelihood.log_sigma". Raises TypeError/ValueError naming a bad argument.
    """

    kind = "vae"
    conditional = False
    loss_name = "neg_elbo"
    forward_options = ("n_samples", "beta")

    def __init__(self, x_dim: int, z_dim: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        kw = set_common(self, x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                        per_pixel_sigma=per_pixel_sigma, init=init)
        self.noise_dim = self.z_dim
        # x is data: its first layer skips dL/dx (see npvae.layers.Linear)
        self.encoder = MLP((self.x_dim, *self.hidden, 2 * self.z_dim), self.activation, skip_input_grad=True, **kw)
        self.decoder = MLP((self.z_dim, *reversed(self.hidden), self.x_dim), self.activation, **kw)
        self.params, self.grads = collect(encoder=self.encoder, decoder=self.decoder, likelihood=self.likelihood)
        self._cache = None

    @property
    def config(self) -> dict:
        """The constructor arguments and ``kind``, JSON-serialisable (see :meth:`from_config`)."""
        return common_config(self)

    @classmethod
    def from_config(cls, config: dict, *, rng: np.random.Generator):
        """A model built from :attr:`config` (weights freshly initialized from ``rng``)."""
        return build_from_config(cls, config, rng=rng)

    def __repr__(self) -> str:
        sizes = "-".join(map(str, (self.x_dim, *self.hidden, self.z_dim)))
        return f"{type(self).__name__}({sizes}, activation={self.activation!r}, likelihood={self.likelihood_name!r}, dtype={self.dtype})"

    # ---- encode, reparameterize, decode (the pytorch-examples pieces) -------------------
    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mu``, ``logvar`` of q(z|x), each (batch, z_dim), model dtype. ``x``: (batch, x_dim), finite."""
        self._cache = None  # the layers' caches now belong to this call, not to a forward
        mu, logvar = dist.split_mu_logvar(self.encoder.forward(check_x(x, self.x_dim, self.dtype, self.likelihood_name)))
        return mu.copy(), logvar

    def decode(self, z: np.ndarray) -> np.ndarray:
        """The mean of p(x|z) (pixel probabilities or Gaussian mean): (batch, z_dim) -> (batch, x_dim)."""
        self._cache = None
        return self.likelihood.mean(self.decoder.forward(check_z(z, self.z_dim, self.dtype)))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(mu(x))``: the mean of p(x|z) at the posterior mean, (batch, x_dim)."""
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, *, rng: np.random.Generator, mean: bool = True) -> np.ndarray:
        """Ancestral sampling: z ~ N(0, I), then the mean of p(x|z) (``mean=True``) or a draw x ~ p(x|z). (n, x_dim)."""
        z = dist.sample_eps((check_int(n, "n", minimum=1), self.z_dim), rng=rng, dtype=self.dtype)
        self._cache = None
        return decode_sample(self.likelihood, self.decoder.forward(z), mean=mean, rng=rng)

    # ---- the ELBO and its gradient ------------------------------------------------------
    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None, eps: np.ndarray | None = None,
                n_samples: int = 1, beta: float = 1.0) -> Terms:
        r"""Estimate the ELBO of a batch and cache what :meth:`backward` needs.

        ``x`` (B, x_dim), model dtype; ``eps`` (L, B, z_dim) (or (B, z_dim) for one sample)
        fixes the noise, else ``rng`` draws it; ``n_samples`` = L; ``beta`` >= 0 weights the
        KL. Returns :class:`Terms`: ``loss`` :math:`\frac1B\sum_n(\mathrm{rec}_n + \beta\,KL_n)`
        and (B,) metrics in nats, ``reconstruction`` :math:`-\frac1L\sum_l\log p(x|z^{(l)})`,
        ``kl`` (closed form) and ``elbo`` (at beta = 1). Raises TypeError/ValueError for bad
        arguments.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)                      # (B, D)
        L, beta = check_int(n_samples, "n_samples", minimum=1), check_float(beta, "beta", minimum=0.0)
        B, Z, D = x.shape[0], self.z_dim, self.x_dim
        eps = dist.noise((L, B, Z), rng=rng, eps=eps, dtype=self.dtype)                 # (L, B, Z)
        # 1. encode: h = [mu, logvar], q(z|x) = N(mu, diag exp(logvar))
        h = self.encoder.forward(x)                                                       # (B, 2Z)
        mu, logvar = dist.split_mu_logvar(h)                                              # (B, Z) each
        # 2. reparameterize: z = mu + sigma * eps, sigma = exp(logvar / 2)
        z = dist.reparameterize(mu, logvar, eps)                                          # (L, B, Z)
        # 3. decode: the likelihood's parameter (Bernoulli logits or Gaussian mean)
        out = self.decoder.forward(z.reshape(L * B, Z)).reshape(L, B, D)                 # (L, B, D)
        # 4. reconstruction: -(1/L) sum_l log p(x|z_l)
        reconstruction = -self.likelihood.log_prob(x, out).mean(axis=0)                   # (B,)
        # 5. KL(q(z|x) || N(0, I)) in closed form: 1/2 sum_j (mu^2 + sigma^2 - logvar - 1)
        kl = dist.gaussian_kl(mu, logvar)                                                 # (B,)
        # 6. loss = mean over the batch of reconstruction + beta KL (the -ELBO at beta = 1)
        self._cache = (x, h, eps, mu, logvar, out, beta)
        return Terms(float(np.mean(reconstruction + beta * kl)),
                     {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)})

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss, :math:`\frac1B\sum_n[-\frac1L\sum_l\log p(x_n|z^{(l)}_n) + \beta KL_n]`.

        The chain rule through the forward's steps in reverse, numbered as in
        ``docs/derivation.md``. Overwrites and returns :attr:`grads` (live arrays, model
        dtype). Raises RuntimeError if there is no forward to differentiate (none yet, or
        encode / decode / sample / iwae_bound ran since and overwrote the layers' caches).
        """
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x, ...) first (encode, decode, sample "
                               "and iwae_bound since the last forward overwrite what backward needs)")
        x, h, eps, mu, logvar, out, beta = self._cache
        L, B, Z = eps.shape
        # 1. likelihood: d loss / d out = -(1/(B L)) d log p(x|z) / d out; Bernoulli: x - sigmoid(out)   (L, B, D)
        d_out = self.likelihood.log_prob_grad(x, out, -1.0 / (B * L))
        # 2. decoder: d loss / d z                                                                       (L, B, Z)
        dz = self.decoder.backward(d_out.reshape(L * B, self.x_dim)).reshape(L, B, Z)
        # 3. z = mu + sigma eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2, summed over the L draws        (B, Z) each
        dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
        # 4. the KL term, beta/B KL: dKL/dmu = mu, dKL/dlogvar = (sigma^2 - 1) / 2
        dkl_dmu, dkl_dlogvar = dist.gaussian_kl_grad(mu, logvar)
        dmu = dmu + (beta / B) * dkl_dmu
        dlogvar = dlogvar + (beta / B) * dkl_dlogvar
        # 5. h = [mu, logvar]: the clip of logvar passes no gradient outside [-20, 10]                  (B, 2Z)
        dh = dist.split_mu_logvar_backward(h, dmu, dlogvar)
        # 6. encoder: writes d loss / d phi (dL/dx is not needed: x is data)
        self.encoder.backward(dh)
        return self.grads

    # ---- importance sampling: the model's side of npvae.evaluate -----------------------
    def proposal(self, x: np.ndarray):
        """Encode once for :func:`npvae.evaluate.iwae_bound`: ``(x, mu, logvar)`` of q(z|x)."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        self._cache = None
        mu, logvar = dist.split_mu_logvar(self.encoder.forward(x))
        return x, mu.copy(), logvar

    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log w = \log p(x|z) + \log p(z) - \log q(z|x)` at :math:`z = \mu + \sigma\epsilon`.

        ``q`` from :meth:`proposal`; ``eps`` (k, B, z_dim), model dtype. Returns (k, B)
        float64 nats (Burda et al. 2016, eq. 8).
        """
        x, mu, logvar = q
        k, B, Z = eps.shape
        z = dist.reparameterize(mu, logvar, eps)                                          # (k, B, Z)
        out = self.decoder.forward(z.reshape(k * B, Z)).reshape(k, B, self.x_dim)        # (k, B, D)
        log_px = self.likelihood.log_prob(x, out).astype(np.float64)                      # log p(x|z)
        log_pz = dist.standard_normal_log_prob(z.astype(np.float64))                      # log p(z)
        log_qz = dist.log_q_at_sample(logvar.astype(np.float64), eps.astype(np.float64))  # log q(z|x)
        return log_px + log_pz - log_qz

    def iwae_bound(self, x, k: int, *, rng=None, eps=None, chunk_size=None) -> np.ndarray:
        """:func:`npvae.evaluate.iwae_bound` of this model: (batch,) float64 nats."""
        return evaluate.iwae_bound(self, x, k, rng=rng, eps=eps, chunk_size=chunk_size)

    def log_likelihood(self, x, k: int = 5000, *, rng, batch_size: int = 100, progress: bool = False) -> np.ndarray:
        """:func:`npvae.evaluate.log_likelihood` of this model: (N,) float64 nats."""
        return evaluate.log_likelihood(self, x, k, rng=rng, batch_size=batch_size, progress=progress)

    def posterior_means(self, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
        """``mu(x)``, encoded ``batch_size`` examples at a time: (N, z_dim), model dtype."""
        check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        return in_batches(lambda xb: self.encode(xb)[0], x, batch_size=batch_size)

    def latent_activity(self, x, *, batch_size: int = 1000) -> np.ndarray:
        """:func:`npvae.evaluate.latent_activity`: (z_dim,) float64."""
        return evaluate.latent_activity(self, x, batch_size=batch_size)

    def active_units(self, x, *, threshold: float = evaluate.ACTIVE_THRESHOLD, batch_size: int = 1000) -> int:
        """:func:`npvae.evaluate.active_units`: units with activity above ``threshold``."""
        return evaluate.active_units(self, x, threshold=threshold, batch_size=batch_size)
