r"""The conditional VAE: the label as a one-hot input to the encoder and the decoder.

Sohn, Lee & Yan 2015, "Learning Structured Output Representation using Deep Conditional
Generative Models", section 4 (eq. 4: the conditional ELBO), with the one-hot label
conditioning of Kingma, Rezende, Mohamed & Welling 2014 ("Semi-supervised Learning with
Deep Generative Models", M2 with y observed, eq. 6), and here the prior does not depend
on y:

* encoder :math:`q_\phi(z|x, y) = N(\mu, \mathrm{diag}\,\sigma^2)`, an MLP on
  :math:`[x, \mathrm{onehot}(y)]` whose last layer outputs ``[mu, logvar]``;
* prior :math:`p(z) = N(0, I)`;
* decoder :math:`p_\theta(x|z, y)`, an MLP on :math:`[z, \mathrm{onehot}(y)]` (Bernoulli
  logits or a Gaussian mean).

.. math::
    \log p(x|y) \ge \mathcal L(x, y) = E_{q(z|x,y)}[\log p_\theta(x|z,y)] - KL(q_\phi(z|x,y)\,\|\,p(z)),

estimated with L reparameterized draws; the loss is :math:`-\frac1B\sum_n` of it (with
``beta`` weighting the KL), nats per example. The steps are the VAE's
(:mod:`npvae.models.vae`) with the label appended to both networks' inputs: the encoder
reads :math:`[x, \mathrm{onehot}(y)]`, the decoder :math:`[z, \mathrm{onehot}(y)]`, and the
backward keeps only the z columns of the decoder's input gradient (labels are data).
"""

from __future__ import annotations

import numpy as np

from .. import distributions as dist
from .. import evaluate
from .._checks import check_float, check_int, check_x
from ..layers import MLP
from .parts import (Terms, build_from_config, check_labels, check_z, collect, common_config, decode_sample, in_batches,
                    one_hot, set_common)

__all__ = ["CVAE"]


class CVAE:
    r"""A conditional VAE: q(z|x, y), p(x|z, y) with y one-hot, prior N(0, I).

    Parameters as :class:`npvae.models.VAE` plus ``n_classes`` (int >= 2): labels are
    integers in [0, n_classes). The encoder's first layer has ``x_dim + n_classes`` inputs
    and the decoder's ``z_dim + n_classes``; rows ``x_dim + c`` of "encoder.0.W" and
    ``z_dim + c`` of "decoder.0.W" are the per-class offsets. Raises TypeError/ValueError
    naming a bad argument; every method taking ``y`` raises TypeError for non-integer
    labels and ValueError for a wrong shape or a label out of range.
    """

    kind = "cvae"
    conditional = True
    loss_name = "neg_elbo"
    forward_options = ("n_samples", "beta")

    def __init__(self, x_dim: int, z_dim: int, n_classes: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        kw = set_common(self, x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                        per_pixel_sigma=per_pixel_sigma, init=init)
        self.n_classes = check_int(n_classes, "n_classes", minimum=2)
        self.noise_dim = self.z_dim
        C = self.n_classes
        self.encoder = MLP((self.x_dim + C, *self.hidden, 2 * self.z_dim), self.activation, skip_input_grad=True, **kw)
        self.decoder = MLP((self.z_dim + C, *reversed(self.hidden), self.x_dim), self.activation, **kw)
        self.params, self.grads = collect(encoder=self.encoder, decoder=self.decoder, likelihood=self.likelihood)
        self._cache = None

    @property
    def config(self) -> dict:
        """The constructor arguments and ``kind``, JSON-serialisable (see :meth:`from_config`)."""
        return common_config(self, n_classes=self.n_classes)

    @classmethod
    def from_config(cls, config: dict, *, rng: np.random.Generator):
        """A model built from :attr:`config` (weights freshly initialized from ``rng``)."""
        return build_from_config(cls, config, rng=rng)

    def __repr__(self) -> str:
        sizes = "-".join(map(str, (self.x_dim, *self.hidden, self.z_dim)))
        return (f"CVAE({sizes}, n_classes={self.n_classes}, activation={self.activation!r}, "
                f"likelihood={self.likelihood_name!r}, dtype={self.dtype})")

    # ---- the one-hot inputs --------------------------------------------------------------
    def _onehot(self, y, batch: int) -> np.ndarray:
        return one_hot(check_labels(y, self.n_classes, batch), self.n_classes, self.dtype)

    def _decode(self, z, onehot):
        """The decoder output at [z, onehot(y)] for z (r*B, Z) in r blocks of B rows (onehot (B, C) repeated)."""
        return self.decoder.forward(np.concatenate([z, np.tile(onehot, (z.shape[0] // len(onehot), 1))], axis=1))

    # ---- encode, decode, sample ------------------------------------------------------------
    def encode(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mu``, ``logvar`` of q(z|x, y), each (batch, z_dim), model dtype. ``x`` (batch, x_dim), ``y`` (batch,) int."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        self._cache = None  # the layers' caches now belong to this call, not to a forward
        h = self.encoder.forward(np.concatenate([x, self._onehot(y, x.shape[0])], axis=1))
        mu, logvar = dist.split_mu_logvar(h)
        return mu.copy(), logvar

    def decode(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The mean of p(x|z, y): z (batch, z_dim), y (batch,) int -> (batch, x_dim), model dtype."""
        z = check_z(z, self.z_dim, self.dtype)
        self._cache = None
        return self.likelihood.mean(self._decode(z, self._onehot(y, z.shape[0])))

    def reconstruct(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``decode(mu(x, y), y)``, (batch, x_dim)."""
        return self.decode(self.encode(x, y)[0], y)

    def sample(self, n: int, y, *, rng: np.random.Generator, mean: bool = True) -> np.ndarray:
        """z ~ N(0, I), then the mean of p(x|z, y) (or a draw, ``mean=False``): (n, x_dim), model dtype.

        ``y``: one int label for all n samples, or an integer array (n,).
        """
        n = check_int(n, "n", minimum=1)
        if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
            y = np.full(n, y, dtype=np.int64)
        onehot = self._onehot(y, n)
        z = dist.sample_eps((n, self.z_dim), rng=rng, dtype=self.dtype)
        self._cache = None
        return decode_sample(self.likelihood, self._decode(z, onehot), mean=mean, rng=rng)

    def posterior_means(self, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
        """``mu(x, y)``, ``batch_size`` examples at a time: (N, z_dim), model dtype."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        check_labels(y, self.n_classes, x.shape[0])
        return in_batches(lambda xb, yb: self.encode(xb, yb)[0], x, y, batch_size=batch_size)

    # ---- the conditional ELBO and its gradient ----------------------------------------------
    def forward(self, x: np.ndarray, y: np.ndarray, *, rng: np.random.Generator | None = None,
                eps: np.ndarray | None = None, n_samples: int = 1, beta: float = 1.0) -> Terms:
        r"""Estimate the conditional ELBO of a batch and cache what :meth:`backward` needs.

        ``x`` (batch, x_dim), model dtype; ``y`` (batch,) integer labels; ``eps``
        (n_samples, batch, z_dim) (or (batch, z_dim) for one sample) fixes the noise, else
        ``rng`` draws it; ``n_samples`` = L; ``beta`` >= 0 weights the KL. Returns
        :class:`Terms` with (batch,) nats metrics ``reconstruction``
        :math:`-\frac1L\sum_l\log p(x|z^{(l)}, y)`, ``kl`` and ``elbo``. Raises
        TypeError/ValueError for bad arguments.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)                      # (B, D)
        onehot = self._onehot(y, x.shape[0])                                              # (B, C)
        L, beta = check_int(n_samples, "n_samples", minimum=1), check_float(beta, "beta", minimum=0.0)
        B, Z, D = x.shape[0], self.z_dim, self.x_dim
        eps = dist.noise((L, B, Z), rng=rng, eps=eps, dtype=self.dtype)                 # (L, B, Z)
        # 1. encode [x, onehot(y)]: h = [mu, logvar], q(z|x, y) = N(mu, diag exp(logvar))
        h = self.encoder.forward(np.concatenate([x, onehot], axis=1))                    # (B, 2Z)
        mu, logvar = dist.split_mu_logvar(h)                                              # (B, Z) each
        # 2. reparameterize: z = mu + sigma * eps
        z = dist.reparameterize(mu, logvar, eps)                                          # (L, B, Z)
        # 3. decode [z, onehot(y)], the label repeated for each of the L draws
        out = self._decode(z.reshape(L * B, Z), onehot).reshape(L, B, D)                 # (L, B, D)
        # 4. reconstruction: -(1/L) sum_l log p(x|z_l, y)
        reconstruction = -self.likelihood.log_prob(x, out).mean(axis=0)                   # (B,)
        # 5. KL(q(z|x, y) || N(0, I)) in closed form (the prior does not depend on y)
        kl = dist.gaussian_kl(mu, logvar)                                                 # (B,)
        # 6. loss = mean over the batch of reconstruction + beta KL
        self._cache = (x, h, eps, mu, logvar, out, beta)
        return Terms(float(np.mean(reconstruction + beta * kl)),
                     {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)})

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss; overwrites and returns :attr:`grads`.

        The VAE's chain rule (:meth:`npvae.models.VAE.backward`), with the decoder's input
        gradient cut to its z columns. Raises RuntimeError if there is no forward to
        differentiate.
        """
        if self._cache is None:
            raise RuntimeError("CVAE.backward: call forward(x, y, ...) first (encode, decode, sample and "
                               "iwae_bound since the last forward overwrite what backward needs)")
        x, h, eps, mu, logvar, out, beta = self._cache
        L, B, Z = eps.shape
        # 1. likelihood: d loss / d out = -(1/(B L)) d log p(x|z, y) / d out                          (L, B, D)
        d_out = self.likelihood.log_prob_grad(x, out, -1.0 / (B * L))
        # 2. decoder: d loss / d [z, onehot]; keep the z columns (the labels' gradient is unused)     (L, B, Z)
        dz = self.decoder.backward(d_out.reshape(L * B, self.x_dim))[:, :Z].reshape(L, B, Z)
        # 3. z = mu + sigma eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2, summed over the L draws      (B, Z) each
        dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
        # 4. the KL term, beta/B KL: dKL/dmu = mu, dKL/dlogvar = (sigma^2 - 1) / 2
        dkl_dmu, dkl_dlogvar = dist.gaussian_kl_grad(mu, logvar)
        dmu = dmu + (beta / B) * dkl_dmu
        dlogvar = dlogvar + (beta / B) * dkl_dlogvar
        # 5. h = [mu, logvar]: the clip of logvar                                                      (B, 2Z)
        dh = dist.split_mu_logvar_backward(h, dmu, dlogvar)
        # 6. encoder: d loss / d phi (dL/d[x, onehot] is skipped: both are data)
        self.encoder.backward(dh)
        return self.grads

    # ---- importance sampling: the model's side of npvae.evaluate -------------------------------
    def proposal(self, x: np.ndarray, y: np.ndarray):
        """Encode once for :func:`npvae.evaluate.iwae_bound`: (x, onehot(y), mu, logvar)."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        onehot = self._onehot(y, x.shape[0])
        self._cache = None
        mu, logvar = dist.split_mu_logvar(self.encoder.forward(np.concatenate([x, onehot], axis=1)))
        return x, onehot, mu.copy(), logvar

    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log p(x|z,y) + \log p(z) - \log q(z|x,y)` at :math:`z = \mu + \sigma\epsilon`: (k, B) float64."""
        x, onehot, mu, logvar = q
        k, B, Z = eps.shape
        z = dist.reparameterize(mu, logvar, eps)                                          # (k, B, Z)
        out = self._decode(z.reshape(k * B, Z), onehot).reshape(k, B, self.x_dim)        # (k, B, D)
        log_px = self.likelihood.log_prob(x, out).astype(np.float64)                      # log p(x|z, y)
        log_pz = dist.standard_normal_log_prob(z.astype(np.float64))                      # log p(z)
        log_qz = dist.log_q_at_sample(logvar.astype(np.float64), eps.astype(np.float64))  # log q(z|x, y)
        return log_px + log_pz - log_qz

    def iwae_bound(self, x, y, k: int, *, rng=None, eps=None, chunk_size=None) -> np.ndarray:
        """:func:`npvae.evaluate.iwae_bound` of log p(x|y): (batch,) float64 nats."""
        return evaluate.iwae_bound(self, x, k, y=y, rng=rng, eps=eps, chunk_size=chunk_size)

    def log_likelihood(self, x, y, k: int = 5000, *, rng, batch_size: int = 100, progress: bool = False) -> np.ndarray:
        """Importance-sampled log p(x|y) (:func:`npvae.evaluate.log_likelihood`): (N,) float64 nats."""
        check_labels(y, self.n_classes, x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else None)
        return evaluate.log_likelihood(self, x, k, y=y, rng=rng, batch_size=batch_size, progress=progress)
