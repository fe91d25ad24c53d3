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
``beta`` weighting the KL), nats per example. Given the encoder output, the ELBO and its
gradient are the VAE's (:mod:`npvae.models.elbo`); this file adds the one-hot input and
drops the gradient with respect to the decoder's one-hot columns (labels are data).
"""

from __future__ import annotations

import numpy as np

from .. import distributions as dist
from .. import evaluate
from .._checks import check_float, check_int
from ..layers import MLP
from . import elbo
from .parts import (GaussianHead, Terms, build_from_config, check_labels, check_x, check_z, collect,
                    common_config, decode_sample, in_batches, log_prob_fn, noise, one_hot, set_common)

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

    def __init__(self, x_dim: int, z_dim: int, n_classes: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        kw = set_common(self, x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                        per_pixel_sigma=per_pixel_sigma, init=init)
        self.n_classes = check_int(n_classes, "n_classes", minimum=2)
        self.noise_dim = self.z_dim
        C = self.n_classes
        self.encoder = MLP((self.x_dim + C, *self.hidden, 2 * self.z_dim), self.activation, skip_input_grad=True, **kw)
        self.head = GaussianHead(self.z_dim)
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

    def _encode(self, x, onehot):
        """h = encoder([x, onehot(y)]): (B, 2 Z)."""
        return self.encoder.forward(np.concatenate([x, onehot], axis=1))

    def _decoder(self, onehot):
        """decode(z) = decoder([z, onehot(y)]) for z (r*B, Z) in r blocks of B, and its backward to z only."""
        def decode(z):
            return self.decoder.forward(np.concatenate([z, np.tile(onehot, (z.shape[0] // len(onehot), 1))], axis=1))

        def decode_backward(d_out):
            # d [z, onehot] = d_out @ W0^T ...; keep the z columns (the labels' gradient is unused)
            return self.decoder.backward(d_out)[:, :self.z_dim]
        return decode, decode_backward

    # ---- encode, decode, sample ------------------------------------------------------------
    def encode(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mu``, ``logvar`` of q(z|x, y), each (batch, z_dim), model dtype. ``x`` (batch, x_dim), ``y`` (batch,) int."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        self._cache = None  # the layers' caches now belong to this call, not to a forward
        mu, logvar = self.head.forward(self._encode(x, self._onehot(y, x.shape[0])))
        return mu.copy(), logvar.copy()

    def decode(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The mean of p(x|z, y): z (batch, z_dim), y (batch,) int -> (batch, x_dim), model dtype."""
        z = check_z(z, self.z_dim, self.dtype)
        self._cache = None
        return self.likelihood.mean(self._decoder(self._onehot(y, z.shape[0]))[0](z))

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
        return decode_sample(self.likelihood, self._decoder(onehot)[0](z), mean=mean, rng=rng)

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
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        onehot = self._onehot(y, x.shape[0])
        L, beta = check_int(n_samples, "n_samples", minimum=1), check_float(beta, "beta", minimum=0.0)
        eps = noise((L, x.shape[0], self.z_dim), rng=rng, eps=eps, dtype=self.dtype)
        decode, decode_backward = self._decoder(onehot)
        terms, cache = elbo.forward(x, self._encode(x, onehot), eps, beta=beta, head=self.head, decode=decode,
                                    likelihood=self.likelihood)
        self._cache = (cache, decode_backward)
        return terms

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss; overwrites and returns :attr:`grads`.

        (1)-(4) the ELBO's chain rule from the likelihood back to the encoder output
        (:func:`npvae.models.elbo.backward`, the decoder's backward keeping dL/dz only),
        (5) the encoder. Raises RuntimeError if there is no forward to differentiate.
        """
        if self._cache is None:
            raise RuntimeError("CVAE.backward: call forward(x, y, ...) first (encode, decode, sample and "
                               "iwae_bound since the last forward overwrite what backward needs)")
        cache, decode_backward = self._cache
        dh = elbo.backward(cache, head=self.head, decode_backward=decode_backward, likelihood=self.likelihood)
        self.encoder.backward(dh)  # 5. encoder: dL/dphi (dL/d[x, onehot] skipped)
        return self.grads

    # ---- importance sampling: the model's side of npvae.evaluate -------------------------------
    def proposal(self, x: np.ndarray, y: np.ndarray):
        """Encode once for :func:`npvae.evaluate.iwae_bound`: (x, onehot(y), mu, logvar, log p(x|.) function)."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        onehot = self._onehot(y, x.shape[0])
        self._cache = None
        mu, logvar = self.head.forward(self._encode(x, onehot))
        return x, onehot, mu.copy(), logvar.copy(), log_prob_fn(self.likelihood, x)

    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log p(x|z,y) + \log p(z) - \log q(z|x,y)` at :math:`z = \mu + \sigma\epsilon`: (k, B) float64."""
        x, onehot, mu, logvar, log_prob = q
        return elbo.log_weights(x, mu, logvar, log_prob, eps, self._decoder(onehot)[0])

    def iwae_bound(self, x, y, k: int, *, rng=None, eps=None, chunk_size=None) -> np.ndarray:
        """:func:`npvae.evaluate.iwae_bound` of log p(x|y): (batch,) float64 nats."""
        return evaluate.iwae_bound(self, x, k, y=y, rng=rng, eps=eps, chunk_size=chunk_size)

    def log_likelihood(self, x, y, k: int = 5000, *, rng, batch_size: int = 100, progress: bool = False) -> np.ndarray:
        """Importance-sampled log p(x|y) (:func:`npvae.evaluate.log_likelihood`): (N,) float64 nats."""
        check_labels(y, self.n_classes, x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else None)
        return evaluate.log_likelihood(self, x, k, y=y, rng=rng, batch_size=batch_size, progress=progress)
