r"""The deterministic autoencoder, on the VAE's layers, with its gradient written out by hand.

The study notes' "VAE vs AE": the same encoder and decoder MLPs and the same decoder
likelihoods as :class:`~npvae.models.VAE`, but the code is a point, not a distribution:

* encoder :math:`z = f_\phi(x)`: an MLP whose last layer outputs ``z_dim`` numbers (not the
  VAE's ``2 z_dim``: there is no variance);
* decoder :math:`p_\theta(x|z)`: Bernoulli logits or a Gaussian mean (fixed or learned
  :math:`\sigma_x`), exactly as the VAE's;
* loss :math:`\frac1B\sum_n -\log p_\theta(x_n | f_\phi(x_n))`, nats per example: the VAE's
  reconstruction term at :math:`\sigma \to 0`, without sampling and without a KL.

With the Bernoulli likelihood this is the cross-entropy autoencoder, with the Gaussian
the squared error (scaled by :math:`1/2\sigma_x^2`, plus a constant). Gradient (chain rule,
in order): :math:`\partial\,\mathrm{loss}/\partial\,\mathrm{out} = -\frac1B\,\partial\log p/\partial\,\mathrm{out}`,
then the decoder's backward to :math:`\partial/\partial z`, then the encoder's.

**Not a generative model** (the study notes, "is it a generative model"): nothing makes
the codes of the training data fill a known density, so there is no prior p(z) to draw
from, no ``sample`` and no ``log_likelihood`` (p(x) is not defined). Decoding N(0, I)
draws through :meth:`AE.decode` is possible and is what the demo shows, to make the point:
those z fall where no training code lies, and the images are mostly not digits.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_rng, check_x
from ..layers import MLP
from .parts import Terms, build_from_config, check_z, collect, common_config, in_batches, set_common

__all__ = ["AE"]


class AE:
    r"""A deterministic autoencoder ``z = encoder(x)``, trained on :math:`-\log p(x|z)`.

    Parameters are the VAE's (see :class:`npvae.models.VAE`): ``x_dim``, ``z_dim``,
    ``hidden`` (the decoder mirrors it), ``activation``, ``likelihood`` ("bernoulli",
    "gaussian", "gaussian_learned"), ``rng`` (initializes the weights), ``dtype`` (float32
    or float64), ``sigma_x``, ``per_pixel_sigma``, ``init``. Its encoder's last layer
    outputs ``z_dim`` values.

    ``params``/``grads``: "encoder.0.W", ..., "decoder.2.b" and, for "gaussian_learned",
    "likelihood.log_sigma". Raises TypeError/ValueError naming a bad argument.

    No ``sample``, ``log_likelihood``, ``beta`` or ``n_samples``: see the module docstring
    (the Trainer refuses ``beta != 1`` and ``n_samples != 1`` for this model).
    """

    kind = "ae"
    conditional = False
    loss_name = "neg_log_likelihood"
    forward_options = ()

    def __init__(self, x_dim: int, z_dim: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        kw = set_common(self, x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                        per_pixel_sigma=per_pixel_sigma, init=init)
        self.encoder = MLP((self.x_dim, *self.hidden, self.z_dim), self.activation, skip_input_grad=True, **kw)
        self.decoder = MLP((self.z_dim, *reversed(self.hidden), self.x_dim), self.activation, **kw)
        self.params, self.grads = collect(encoder=self.encoder, decoder=self.decoder, likelihood=self.likelihood)
        self._cache = None  # (x, decoder output) of the last forward; None when there is nothing to differentiate

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
        return f"AE({sizes}, activation={self.activation!r}, likelihood={self.likelihood_name!r}, dtype={self.dtype})"

    # ---- encode, decode ------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """The code ``z = encoder(x)``: (batch, x_dim) -> (batch, z_dim), model dtype. ``x`` finite (in [0, 1] for Bernoulli)."""
        self._cache = None  # the layers' caches now belong to this call, not to a forward
        return self.encoder.forward(check_x(x, self.x_dim, self.dtype, self.likelihood_name)).copy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        """The mean of p(x|z) (pixel probabilities or Gaussian mean): (batch, z_dim) -> (batch, x_dim), model dtype."""
        self._cache = None
        return self.likelihood.mean(self.decoder.forward(check_z(z, self.z_dim, self.dtype)))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(encode(x))``, (batch, x_dim)."""
        return self.decode(self.encode(x))

    def posterior_means(self, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
        """The codes ``encode(x)``, ``batch_size`` examples at a time: (N, z_dim), model dtype."""
        check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        return in_batches(self.encode, x, batch_size=batch_size)

    # ---- the loss and its gradient -------------------------------------------------------
    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None) -> Terms:
        r"""The reconstruction loss of a batch, caching what :meth:`backward` needs.

        ``x`` (batch, x_dim), model dtype. The model has no noise: ``rng`` is accepted
        only for the contract's uniformity (the Trainer always passes one), checked to be
        a Generator or None, and never drawn from. Returns :class:`Terms` with loss
        :math:`\frac1B\sum_n -\log p(x_n|z_n)` and metric ``reconstruction``
        :math:`-\log p(x_n|z_n)`, (batch,) nats in the model dtype. Raises
        TypeError/ValueError for bad arguments.
        """
        if rng is not None:
            check_rng(rng)
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        z = self.encoder.forward(x)                                   # (B, Z)
        out = self.decoder.forward(z)                                 # (B, x_dim)
        reconstruction = -self.likelihood.log_prob(x, out)            # (B,)
        self._cache = (x, out)
        return Terms(float(np.mean(reconstruction)), {"reconstruction": reconstruction})

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss :math:`-\frac1B\sum_n\log p(x_n|z_n)`; overwrites and returns :attr:`grads`.

        Raises RuntimeError if there is no forward to differentiate (none yet, or encode /
        decode ran since and overwrote the layers' caches).
        """
        if self._cache is None:
            raise RuntimeError("AE.backward: call forward(x, ...) first (encode and decode since the last "
                               "forward overwrite what backward needs)")
        # 1. likelihood: d loss / d out = -(1/B) d log p(x|z) / d out               (B, x_dim)
        x, out = self._cache
        d_out = self.likelihood.log_prob_grad(x, out, -1.0 / x.shape[0])
        # 2. decoder: d loss / d z = d_out @ (d out / d z)                          (B, Z)
        dz = self.decoder.backward(d_out)
        # 3. encoder: writes d loss / d phi (dL/dx is skipped)
        self.encoder.backward(dz)
        return self.grads
