r"""The variational autoencoder, with its ELBO gradient written out by hand.

Model (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", section 3 and appendix C):

* encoder  :math:`q_\phi(z|x) = N(\mu, \mathrm{diag}\,\sigma^2)`, an MLP whose last
  layer outputs ``[mu, logvar]`` (``logvar`` :math:`= \log\sigma^2`);
* reparameterization :math:`z^{(l)} = \mu + \sigma\odot\epsilon^{(l)}`,
  :math:`\epsilon^{(l)}\sim N(0, I)`, :math:`\sigma = \exp(\mathrm{logvar}/2)`;
* prior :math:`p(z) = N(0, I)`;
* decoder :math:`p_\theta(x|z)`, an MLP whose output is the likelihood's parameter:
  Bernoulli logits, or a Gaussian mean (fixed or learned :math:`\sigma_x`).

The per-example objective is the ELBO estimated with ``L = n_samples`` draws (eq. 10,
the "SGVB estimator B"):

.. math::
    \mathcal L(x) = \frac1L \sum_{l=1}^L \log p_\theta(x|z^{(l)}) - \beta\,KL(q_\phi(z|x)\,\|\,p(z))

and the training loss is :math:`-\mathcal L` averaged over the batch, in nats per
example. ``beta = 1`` is the VAE; ``beta != 1`` the beta-VAE (Higgins et al. 2017).
All distribution conventions are in :mod:`npvae.distributions`; the derivation of every
gradient is in ``docs/derivation.md``.

Numerical safety: the encoder's raw ``logvar`` output is clipped to
``[LOGVAR_MIN, LOGVAR_MAX] = [-20, 10]`` (sigma between 4.5e-5 and 148), so
``exp(logvar)`` never overflows, even in float32 and for huge inputs. Inside that range
the clip is the identity; outside it its derivative is 0 (written out in ``backward``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from . import distributions as D
from ._checks import check_array, check_choice, check_dtype, check_float, check_int, check_rng
from .layers import ACTIVATIONS, MLP

__all__ = ["VAE", "ELBOTerms", "LIKELIHOODS", "LOGVAR_MIN", "LOGVAR_MAX"]

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
LOGVAR_MIN, LOGVAR_MAX = -20.0, 10.0


@dataclass
class ELBOTerms:
    """What :meth:`VAE.forward` returns.

    Attributes
    ----------
    loss : float
        Mean over the batch of ``reconstruction + beta * kl`` (the -ELBO when beta = 1),
        in nats per example.
    reconstruction : np.ndarray, shape (batch,), model dtype
        :math:`-\\frac1L\\sum_l \\log p(x|z^{(l)})`, the expected negative log-likelihood, nats.
    kl : np.ndarray, shape (batch,), model dtype
        Closed-form :math:`KL(q(z|x)\\,\\|\\,p(z))`, nats.
    elbo : np.ndarray, shape (batch,)
        ``-(reconstruction + kl)``, the ELBO estimate (with beta = 1), nats.
    """

    loss: float
    reconstruction: np.ndarray
    kl: np.ndarray
    elbo: np.ndarray


class VAE:
    r"""A VAE with a Gaussian encoder, a standard-normal prior and a Bernoulli or Gaussian decoder.

    Parameters
    ----------
    x_dim : int
        Data dimension (784 for MNIST).
    z_dim : int
        Latent dimension (>= 1).
    hidden : sequence of int
        Hidden widths of the encoder; the decoder mirrors them. ``(400,)`` gives the
        784-400-20 network of the PyTorch examples VAE.
    activation : str
        Hidden activation, one of :data:`npvae.layers.ACTIVATIONS`.
    likelihood : {"bernoulli", "gaussian", "gaussian_learned"}
        The decoder distribution. "gaussian" uses the fixed ``sigma_x``; "gaussian_learned"
        learns :math:`\log\sigma_x` starting from ``sigma_x``, shared or per pixel
        (``per_pixel_sigma``).
    rng : np.random.Generator
        Initializes the weights.
    dtype : float32 or float64
        Of every parameter, gradient and activation. Train in float32, check gradients
        in float64.
    sigma_x : float
        Decoder standard deviation for the Gaussian likelihoods (> 0).
    per_pixel_sigma : bool
        With "gaussian_learned": one :math:`\sigma_x` per pixel instead of one shared.
    init : str
        Weight initializer (see :mod:`npvae.init`).

    ``params`` and ``grads`` are flat dicts of live arrays named "encoder.0.W",
    "encoder.0.b", ..., "decoder.2.b" and, for "gaussian_learned", "likelihood.log_sigma".

    Raises TypeError / ValueError for arguments of the wrong type or value, naming the
    argument, the expected and the received value.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        self.x_dim = check_int(x_dim, "x_dim", minimum=1)
        self.z_dim = check_int(z_dim, "z_dim", minimum=1)
        if isinstance(hidden, (int, np.integer)):
            hidden = (hidden,)
        self.hidden = tuple(check_int(h, f"hidden[{i}]", minimum=1) for i, h in enumerate(hidden))
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.likelihood_name = check_choice(likelihood, "likelihood", LIKELIHOODS)
        self.dtype = check_dtype(dtype)
        check_rng(rng)
        self.sigma_x = check_float(sigma_x, "sigma_x", minimum=0.0, strict_min=True)
        self.per_pixel_sigma = bool(per_pixel_sigma)
        self.init = init

        kw = dict(rng=rng, dtype=self.dtype, init=init)
        # one head for [mu, logvar]: a single (h, 2 z_dim) matmul instead of two (h, z_dim) ones
        self.encoder = MLP((self.x_dim, *self.hidden, 2 * self.z_dim), self.activation, **kw)
        self.decoder = MLP((self.z_dim, *reversed(self.hidden), self.x_dim), self.activation, **kw)
        # x is data: nobody needs dL/dx, and skipping it saves a matmul as big as the first layer's
        self.encoder[0].skip_input_grad = True
        if self.likelihood_name == "bernoulli":
            self.likelihood = D.Bernoulli()
        elif self.likelihood_name == "gaussian":
            self.likelihood = D.Gaussian(self.sigma_x)
        else:
            self.likelihood = D.GaussianLearned(self.x_dim, sigma_x=self.sigma_x, per_pixel=self.per_pixel_sigma,
                                                dtype=self.dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for prefix, part in (("encoder", self.encoder), ("decoder", self.decoder), ("likelihood", self.likelihood)):
            self.params.update({f"{prefix}.{k}": v for k, v in part.params.items()})
            self.grads.update({f"{prefix}.{k}": v for k, v in part.grads.items()})
        self._cache = None

    # ----------------------------------------------------------------------------------
    # configuration (for checkpoints)
    # ----------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The constructor arguments as a JSON-serialisable dict (see :meth:`from_config`)."""
        return {
            "x_dim": self.x_dim, "z_dim": self.z_dim, "hidden": list(self.hidden),
            "activation": self.activation, "likelihood": self.likelihood_name,
            "dtype": self.dtype.name, "sigma_x": self.sigma_x,
            "per_pixel_sigma": self.per_pixel_sigma, "init": self.init,
        }

    @classmethod
    def from_config(cls, config: dict, *, rng: np.random.Generator) -> "VAE":
        """Build a VAE from :attr:`config` (weights freshly initialized from ``rng``)."""
        c = dict(config)
        return cls(c.pop("x_dim"), c.pop("z_dim"), tuple(c.pop("hidden")), c.pop("activation"),
                   c.pop("likelihood"), rng=rng, dtype=np.dtype(c.pop("dtype")), **c)

    def __repr__(self) -> str:
        sizes = "-".join(map(str, (self.x_dim, *self.hidden, self.z_dim)))
        return f"VAE({sizes}, activation={self.activation!r}, likelihood={self.likelihood_name!r}, dtype={self.dtype})"

    # ----------------------------------------------------------------------------------
    # input checks
    # ----------------------------------------------------------------------------------
    def _check_x(self, x) -> np.ndarray:
        check_array(x, "x", shape=(None, self.x_dim), dtype=self.dtype, finite=True)
        if x.shape[0] == 0:
            raise ValueError(f"x: expected a batch of at least 1 example, got shape {x.shape}")
        if self.likelihood_name == "bernoulli":
            check_array(x, "x", low=0.0, high=1.0)  # Bernoulli targets are probabilities
        return x

    def _check_z(self, z, name="z") -> np.ndarray:
        return check_array(z, name, shape=(None, self.z_dim), dtype=self.dtype, finite=True)

    # ----------------------------------------------------------------------------------
    # the pytorch-examples-style pieces
    # ----------------------------------------------------------------------------------
    def _encode(self, x):
        h = self.encoder.forward(x)                      # (B, 2 z_dim)
        mu, logvar_raw = h[:, :self.z_dim], h[:, self.z_dim:]
        logvar = np.clip(logvar_raw, LOGVAR_MIN, LOGVAR_MAX)
        return mu, logvar, logvar_raw

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The parameters of q(z|x): ``mu`` and ``logvar``, each (batch, z_dim), model dtype.

        ``x``: (batch, x_dim), model dtype, finite (in [0, 1] for Bernoulli). Raises
        TypeError/ValueError for anything else.
        """
        self._cache = None  # the layers' caches now belong to this call, not to a forward
        mu, logvar, _ = self._encode(self._check_x(x))
        return mu.copy(), logvar.copy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        """The mean of p(x|z): pixel probabilities (Bernoulli) or the Gaussian mean.

        ``z``: (batch, z_dim), model dtype -> (batch, x_dim), model dtype.
        """
        self._cache = None
        return self.likelihood.mean(self.decoder.forward(self._check_z(z)))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(mu(x))``: the mean of p(x|z) at the posterior mean. (batch, x_dim)."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def sample(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        """Draw ``z ~ N(0, I)`` and return ``decode(z)``: (n, x_dim) means of p(x|z)."""
        n = check_int(n, "n", minimum=1)
        return self.decode(D.sample_eps((n, self.z_dim), rng=rng, dtype=self.dtype))

    # ----------------------------------------------------------------------------------
    # the ELBO and its gradient
    # ----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None, eps: np.ndarray | None = None,
                n_samples: int = 1, beta: float = 1.0) -> ELBOTerms:
        r"""Estimate the ELBO of a batch and cache what :meth:`backward` needs.

        Parameters
        ----------
        x : np.ndarray, (batch, x_dim), model dtype
            Data; finite, and in [0, 1] for the Bernoulli likelihood.
        rng : np.random.Generator, optional
            Draws ``eps`` when ``eps`` is not given.
        eps : np.ndarray, optional
            The noise :math:`\epsilon`, shape (n_samples, batch, z_dim) (or (batch, z_dim)
            when n_samples = 1), model dtype. Fixing it makes the loss a deterministic
            function of the parameters, which gradient checks need.
        n_samples : int
            L, the number of reparameterized samples per example (>= 1).
        beta : float
            Weight of the KL term (>= 0; 1 gives the ELBO).

        Returns :class:`ELBOTerms` (nats per example). Raises TypeError/ValueError for bad
        arguments, e.g. neither ``rng`` nor ``eps`` given.
        """
        x = self._check_x(x)
        L = check_int(n_samples, "n_samples", minimum=1)
        beta = check_float(beta, "beta", minimum=0.0)
        B, Z = x.shape[0], self.z_dim
        if eps is None:
            if rng is None:
                raise ValueError("rng: expected a numpy.random.Generator when eps is not given, got None")
            eps = D.sample_eps((L, B, Z), rng=rng, dtype=self.dtype)
        else:
            if L == 1 and isinstance(eps, np.ndarray) and eps.ndim == 2:
                eps = eps[None]
            check_array(eps, "eps", shape=(L, B, Z), dtype=self.dtype, finite=True)

        # encoder: q(z|x) = N(mu, diag exp(logvar))
        mu, logvar, logvar_raw = self._encode(x)
        # reparameterization: z = mu + sigma * eps, sigma = exp(logvar / 2)    (L, B, Z)
        z = D.reparameterize(mu, logvar, eps)
        # decoder: the likelihood's parameter for every sample, (L * B, x_dim)
        out = self.decoder.forward(z.reshape(L * B, Z))
        # log p(x | z^(l)) for every sample, (L, B); x broadcasts over the sample axis
        log_px = self.likelihood.forward(x, out.reshape(L, B, self.x_dim))
        reconstruction = -log_px.mean(axis=0)                 # (B,)
        kl = D.kl_standard_normal(mu, logvar)                 # (B,)
        loss = float(np.mean(reconstruction + beta * kl))
        self._cache = (x, eps, mu, logvar, logvar_raw, L, beta)
        return ELBOTerms(loss, reconstruction, kl, -(reconstruction + kl))

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last :meth:`forward`'s ``loss`` with respect to every parameter.

        The chain rule, in order (B = batch size, L = n_samples,
        :math:`\text{loss} = \frac1B\sum_n [-\frac1L\sum_l \log p(x_n|z_n^{(l)}) + \beta\,KL_n]`):

        1. likelihood: :math:`\partial\text{loss}/\partial\text{out} = -\frac{1}{BL}\,\partial\log p/\partial\text{out}`;
        2. decoder layers: :math:`\partial\text{loss}/\partial z` by ``decoder.backward``;
        3. through :math:`z = \mu + \sigma\epsilon`: :math:`\partial/\partial\mu = \sum_l \partial/\partial z`,
           :math:`\partial/\partial\,\mathrm{logvar} = \sum_l \partial/\partial z \cdot \sigma\epsilon/2`,
           plus the KL's closed form :math:`\frac{\beta}{B}\mu` and :math:`\frac{\beta}{B}(\sigma^2-1)/2`;
        4. encoder layers, by ``encoder.backward``.

        Overwrites and returns :attr:`grads` (live arrays, model dtype). Raises
        RuntimeError if there is no forward to differentiate (none yet, or encode /
        decode / iwae_bound ran since and overwrote the layers' caches).
        """
        if self._cache is None:
            raise RuntimeError("VAE.backward: call forward(x, ...) first (encode, decode, sample and "
                               "iwae_bound since the last forward overwrite what backward needs)")
        x, eps, mu, logvar, logvar_raw, L, beta = self._cache
        B = x.shape[0]

        # 1. likelihood: d loss / d out = -(1 / (B L)) * d log p(x|z) / d out     (L*B, x_dim)
        #    (a learned log sigma_x gets its gradient, with the same factor, here too)
        d_out = self.likelihood.backward(-1.0 / (B * L)).reshape(L * B, self.x_dim)

        # 2. decoder: d loss / d z                                              (L, B, Z)
        dz = self.decoder.backward(d_out).reshape(L, B, self.z_dim)

        # 3. z = mu + sigma * eps:  dz/dmu = 1,  dz/dlogvar = sigma * eps / 2   (summed over l)
        dmu, dlogvar = D.reparameterize_backward(dz, logvar, eps)
        #    + beta * KL / B:  dKL/dmu = mu,  dKL/dlogvar = (sigma^2 - 1) / 2
        dkl_dmu, dkl_dlogvar = D.kl_standard_normal_grad(mu, logvar)
        dmu = dmu + (beta / B) * dkl_dmu
        dlogvar = dlogvar + (beta / B) * dkl_dlogvar
        #    logvar = clip(logvar_raw): d logvar / d logvar_raw = 1 inside the range, 0 outside
        dlogvar *= (logvar_raw >= LOGVAR_MIN) & (logvar_raw <= LOGVAR_MAX)

        # 4. encoder: its output was h = [mu, logvar_raw]
        self.encoder.backward(np.concatenate([dmu, dlogvar], axis=1))
        return self.grads

    # ----------------------------------------------------------------------------------
    # importance sampling: IWAE bound and log p(x)
    # ----------------------------------------------------------------------------------
    def _log_weights(self, x, mu, logvar, eps):
        r"""log w = log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma eps; (k, B), float64."""
        k, B, Z = eps.shape
        z = D.reparameterize(mu, logvar, eps)
        out = self.decoder.forward(z.reshape(k * B, Z)).reshape(k, B, self.x_dim)
        log_px = self.likelihood.log_prob(x, out).astype(np.float64)
        log_pz = D.standard_normal_log_prob(z.astype(np.float64))
        # log q(z|x) at z = mu + sigma eps is exactly -1/2 sum(log 2pi + logvar + eps^2)
        log_qz = -0.5 * np.sum(D.LOG_2PI + logvar.astype(np.float64) + eps.astype(np.float64) ** 2, axis=-1)
        return log_px + log_pz - log_qz

    def iwae_bound(self, x: np.ndarray, k: int, *, rng: np.random.Generator | None = None,
                   eps: np.ndarray | None = None, chunk_size: int | None = None) -> np.ndarray:
        r"""An estimate of the importance-weighted bound :math:`\mathcal L_k` per example, in nats (float64).

        .. math:: \mathcal L_k(x) = \log \frac1k \sum_{i=1}^k \frac{p(x, z_i)}{q(z_i|x)},\quad z_i \sim q(z|x)

        (Burda et al. 2016, eq. 8), computed with ``scipy.special.logsumexp`` on float64
        log-weights. Each call returns one random draw of this quantity; its expectation
        over the :math:`z_i` is the bound :math:`\mathcal L_k`. :math:`\mathcal L_1` is the single-sample ELBO (with a Monte Carlo
        KL); :math:`\mathcal L_k` grows with k towards :math:`\log p(x)`.

        Parameters: ``x`` (batch, x_dim) model dtype; ``k >= 1``; ``rng`` draws the noise
        unless ``eps`` (k, batch, z_dim) is given; ``chunk_size`` samples are decoded at
        a time (default: about 2**18 decoder outputs, 1 MB in float32, per chunk): memory
        stays bounded whatever k is, and the elementwise passes over the decoder output
        run on cache-resident arrays (2-3x faster per element than on 4 MB arrays here).
        Returns (batch,) float64. Raises TypeError/ValueError for bad arguments.
        """
        x = self._check_x(x)
        k = check_int(k, "k", minimum=1)
        B = x.shape[0]
        if eps is not None:
            check_array(eps, "eps", shape=(k, B, self.z_dim), dtype=self.dtype, finite=True)
        elif rng is None:
            raise ValueError("rng: expected a numpy.random.Generator when eps is not given, got None")
        if chunk_size is None:
            chunk_size = max(1, (1 << 18) // (B * max(self.x_dim, max(self.hidden, default=1))))
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)

        self._cache = None
        mu, logvar, _ = self._encode(x)
        log_w = np.empty((k, B), dtype=np.float64)
        for start in range(0, k, chunk_size):
            stop = min(k, start + chunk_size)
            e = eps[start:stop] if eps is not None else D.sample_eps((stop - start, B, self.z_dim), rng=rng,
                                                                     dtype=self.dtype)
            log_w[start:stop] = self._log_weights(x, mu, logvar, e)
        return logsumexp(log_w, axis=0) - np.log(k)

    def log_likelihood(self, x: np.ndarray, k: int = 5000, *, rng: np.random.Generator,
                       batch_size: int = 100) -> np.ndarray:
        r"""Importance-sampled estimate of :math:`\log p(x)` per example (nats, float64).

        :math:`\log p(x) \approx \mathcal L_k(x)` with q(z|x) as the proposal (Burda et al.
        2016, section 5; Rezende et al. 2014, appendix E). k = 5000 is the standard test
        metric. ``x`` (N, x_dim) is processed ``batch_size`` examples at a time; returns
        (N,) float64. It is a stochastic lower bound in expectation; the bias shrinks as
        k grows.
        """
        x = self._check_x(x)
        k = check_int(k, "k", minimum=1)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        check_rng(rng)
        return np.concatenate([self.iwae_bound(x[i:i + batch_size], k, rng=rng)
                               for i in range(0, x.shape[0], batch_size)])

    # ----------------------------------------------------------------------------------
    # diagnostics
    # ----------------------------------------------------------------------------------
    def latent_activity(self, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
        r"""Activity of each latent unit, :math:`A_u = \mathrm{Var}_x\, E_{q(z|x)}[z_u] = \mathrm{Var}_x\, \mu_u(x)`.

        Burda et al. 2016, section 5.2. ``x`` (N, x_dim) model dtype, N >= 2; returns
        (z_dim,) float64 variances over the data (population variance).
        """
        if isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[0] < 2:
            raise ValueError(f"x: expected at least 2 examples to measure a variance, got {x.shape[0]}")
        return self.posterior_means(x, batch_size=batch_size).astype(np.float64).var(axis=0)

    def posterior_means(self, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
        """``mu(x)``, the means of q(z|x), encoded ``batch_size`` examples at a time: (N, z_dim), model dtype."""
        x = self._check_x(x)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        return np.concatenate([self.encode(x[i:i + batch_size])[0] for i in range(0, x.shape[0], batch_size)])

    def active_units(self, x: np.ndarray, *, threshold: float = 0.01, batch_size: int = 1000) -> int:
        """Number of latent units with :meth:`latent_activity` above ``threshold`` (Burda et al. 2016: 0.01)."""
        threshold = check_float(threshold, "threshold", minimum=0.0)
        return int(np.sum(self.latent_activity(x, batch_size=batch_size) > threshold))

