r"""The convolutional VAE: the VAE of ``vae.py`` with convolutions in its encoder and decoder.

The objective is the VAE's (Kingma & Welling 2014; ``docs/derivation.md``, "The VAE"), the
ELBO with a closed-form KL,

.. math::
    \mathcal L(x) = \frac1L\sum_{l=1}^L \log p_\theta(x|z^{(l)}) - \beta\,KL(q_\phi(z|x)\,\|\,N(0, I)),

and only the networks change. For MNIST (``image_shape=(1, 28, 28)``, ``channels=(32, 64)``,
``hidden=()``), the encoder and decoder of the Keras and PyTorch convolutional VAE examples:

* encoder: x (B, 784) -> Unflatten -> (B, 1, 28, 28) -> Conv2d(1->32, 4, stride 2, padding 1)
  -> ReLU -> (B, 32, 14, 14) -> Conv2d(32->64, 4, 2, 1) -> ReLU -> (B, 64, 7, 7) -> Flatten
  -> (B, 3136) -> Linear -> h = [mu, logvar] (B, 2 z_dim);
* decoder: z (B, z_dim) -> Linear -> ReLU -> (B, 3136) -> Unflatten -> (B, 64, 7, 7)
  -> ConvTranspose2d(64->32, 4, 2, 1) -> ReLU -> (B, 32, 14, 14)
  -> ConvTranspose2d(32->1, 4, 2, 1) -> (B, 1, 28, 28) -> Flatten -> logits (B, 784).

``hidden`` adds dense layers between the flattened features and the latent (the decoder
mirrors them): ``hidden=(400,)`` (what ``demos/train_mnist.py --model conv`` passes by
default, its ``--hidden 400``) puts Linear(3136->400) -> ReLU before the encoder's last
Linear and Linear(400->3136) -> ReLU after the decoder's first.

Data stay (batch, x_dim) row vectors, as for every model (the Trainer, the evaluation, the
checkpoints and the figures see no difference); the Unflatten and Flatten layers at the two
ends of the networks reshape them. :meth:`ConvVAE.forward` and :meth:`ConvVAE.backward` are
``VAE.forward`` and ``VAE.backward`` step for step; the convolutions' own backward passes are
in ``npvae/conv.py``. Everything else (``encode``, ``decode``, ``sample``, ``proposal``,
``log_weights``, ``log_likelihood``, ...) is the VAE's, inherited.
"""

from __future__ import annotations

import numpy as np

from .. import distributions as dist
from .._checks import check_float, check_int, check_x
from ..conv import Conv2d, ConvTranspose2d, Flatten, Unflatten, conv_transpose_output_size
from ..layers import Linear, Sequential, get_activation
from .parts import Terms, collect, common_config, set_common
from .vae import VAE

__all__ = ["ConvVAE"]

#: every convolution of the ConvVAE: kernel 4, stride 2, padding 1, so each halves the image (28 -> 14 -> 7)
KERNEL, STRIDE, PADDING = 4, 2, 1


def _sizes(value, name: str, length: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence of ints >= 1 (of ``length`` if given) as a tuple; TypeError/ValueError naming ``name``."""
    if isinstance(value, (int, np.integer)):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value or (length is not None and len(value) != length):
        want = f"{length} integers" if length else "a non-empty sequence of integers"
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return tuple(check_int(v, f"{name}[{i}]", minimum=1) for i, v in enumerate(value))


class ConvVAE(VAE):
    r"""A VAE whose encoder and decoder are convolutional (Gaussian q(z|x), N(0, I) prior).

    Parameters
    ----------
    x_dim, z_dim : int >= 1
        Data dimension (must equal ``prod(image_shape)``) and latent dimension.
    hidden : sequence of int
        Dense layers between the flattened convolutional features and the latent (the
        decoder mirrors them); ``()`` for none.
    activation, likelihood, rng, dtype, sigma_x, per_pixel_sigma, init
        As for :class:`npvae.models.VAE` (``init`` is the Linear layers' initializer; the
        convolutions use PyTorch's default, see :class:`npvae.layers.Conv2d`).
    image_shape : (channels, height, width)
        How a row of x is laid out as an image; (1, 28, 28) for MNIST.
    channels : sequence of int
        Output channels of each Conv2d (kernel 4, stride 2, padding 1) of the encoder; the
        decoder's ConvTranspose2d layers go back through them in reverse, to image_shape[0].

    ``params``/``grads``: "encoder.1.W" (the first Conv2d), ..., "decoder.<i>.b". Raises
    TypeError/ValueError naming a bad argument (``image_shape`` whose size is not x_dim, or
    an image too small for ``len(channels)`` halvings).
    """

    kind = "conv"
    conditional = False
    loss_name = "neg_elbo"
    forward_options = ("n_samples", "beta")

    def __init__(self, x_dim: int, z_dim: int, hidden=(), activation: str = "relu", likelihood: str = "bernoulli",
                 *, rng: np.random.Generator, dtype=np.float32, sigma_x: float = 1.0, per_pixel_sigma: bool = False,
                 init: str = "glorot_uniform", image_shape=(1, 28, 28), channels=(32, 64)) -> None:
        kw = set_common(self, x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                        per_pixel_sigma=per_pixel_sigma, init=init)
        self.noise_dim = self.z_dim
        self.image_shape = _sizes(image_shape, "image_shape", 3)
        self.channels = _sizes(channels, "channels")
        if int(np.prod(self.image_shape)) != self.x_dim:
            raise ValueError(f"image_shape: expected (channels, height, width) with {self.x_dim} = x_dim entries, "
                             f"got {self.image_shape} ({int(np.prod(self.image_shape))} entries)")
        conv = dict(rng=rng, dtype=self.dtype)
        # encoder: image -> [Conv2d, activation] per entry of channels -> Flatten -> [Linear, activation]... -> Linear
        enc, sizes, c_in = [Unflatten(self.image_shape)], [self.image_shape[1:]], self.image_shape[0]
        for c_out in self.channels:
            layer = Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING, **conv)
            h, w = sizes[-1]
            if h + 2 * PADDING < KERNEL or w + 2 * PADDING < KERNEL:
                raise ValueError(f"image_shape: expected an image that survives {len(self.channels)} halvings "
                                 f"(kernel {KERNEL}, stride {STRIDE}, padding {PADDING}), got {self.image_shape}")
            enc += [layer, get_activation(self.activation)]
            sizes.append(layer.output_shape(h, w)[1:])
            c_in = c_out
        self.feature_shape = (c_in, *sizes[-1])                          # (64, 7, 7) for MNIST
        features = int(np.prod(self.feature_shape))
        widths = (features, *self.hidden, 2 * self.z_dim)
        enc.append(Flatten())
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            enc.append(Linear(n_in, n_out, **kw))
            if i < len(widths) - 2:
                enc.append(get_activation(self.activation))
        # decoder: the mirror image, with ConvTranspose2d layers back up to image_shape
        dec, widths = [], (self.z_dim, *reversed(self.hidden), features)
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            dec += [Linear(n_in, n_out, **kw), get_activation(self.activation)]
        dec.append(Unflatten(self.feature_shape))
        c_outs = (*reversed(self.channels[:-1]), self.image_shape[0])
        for i, c_out in enumerate(c_outs):
            (h, w), (H, W) = sizes[-1 - i], sizes[-2 - i]
            # output_padding picks, of the sizes that Conv2d maps to (h, w), the encoder's (H, W)
            extra = [target - conv_transpose_output_size(s, KERNEL, STRIDE, PADDING) for s, target in ((h, H), (w, W))]
            dec.append(ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PADDING, extra, **conv))
            if i < len(c_outs) - 1:
                dec.append(get_activation(self.activation))
            c_in = c_out
        dec.append(Flatten())
        self.encoder, self.decoder = Sequential(*enc), Sequential(*dec)
        self.params, self.grads = collect(encoder=self.encoder, decoder=self.decoder, likelihood=self.likelihood)
        self._cache = None

    @property
    def config(self) -> dict:
        """The constructor arguments and ``kind``, JSON-serialisable (see :meth:`from_config`)."""
        return common_config(self, image_shape=list(self.image_shape), channels=list(self.channels))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image {self.image_shape}, channels {self.channels}, hidden {self.hidden}, "
                f"z_dim {self.z_dim}, activation={self.activation!r}, likelihood={self.likelihood_name!r}, "
                f"dtype={self.dtype})")

    # ---- the ELBO and its gradient: VAE.forward and VAE.backward, with convolutional networks -------------
    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None, eps: np.ndarray | None = None,
                n_samples: int = 1, beta: float = 1.0) -> Terms:
        r"""Estimate the ELBO of a batch and cache what :meth:`backward` needs (as ``VAE.forward``).

        ``x`` (B, x_dim), model dtype; ``eps`` (L, B, z_dim) (or (B, z_dim)) fixes the
        noise, else ``rng`` draws it; ``n_samples`` = L; ``beta`` >= 0 weights the KL.
        Returns :class:`Terms` (``loss``; ``reconstruction``, ``kl``, ``elbo`` per example,
        nats). Raises TypeError/ValueError for bad arguments.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)                      # (B, D)
        L, beta = check_int(n_samples, "n_samples", minimum=1), check_float(beta, "beta", minimum=0.0)
        B, Z, D = x.shape[0], self.z_dim, self.x_dim
        eps = dist.noise((L, B, Z), rng=rng, eps=eps, dtype=self.dtype)                 # (L, B, Z)
        # 1. encode: x as images (B, C, H, W), the convolutions, flattened features, h = [mu, logvar]
        h = self.encoder.forward(x)                                                       # (B, 2Z)
        mu, logvar = dist.split_mu_logvar(h)                                              # (B, Z) each
        # 2. reparameterize: z = mu + sigma * eps, sigma = exp(logvar / 2)
        z = dist.reparameterize(mu, logvar, eps)                                          # (L, B, Z)
        # 3. decode: features (LB, C', H', W'), the transposed convolutions, flattened: logits or means
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
        r"""Gradient of the last ``forward``'s loss: the chain rule through its six steps in reverse (as ``VAE.backward``).

        Overwrites and returns :attr:`grads` (live arrays, model dtype). Raises
        RuntimeError if there is no forward to differentiate.
        """
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x, ...) first (encode, decode, sample "
                               "and iwae_bound since the last forward overwrite what backward needs)")
        x, h, eps, mu, logvar, out, beta = self._cache
        L, B, Z = eps.shape
        # 1. likelihood: d loss / d out = -(1/(B L)) d log p(x|z) / d out; Bernoulli: x - sigmoid(out)   (L, B, D)
        d_out = self.likelihood.log_prob_grad(x, out, -1.0 / (B * L))
        # 2. decoder: ConvTranspose2d backward is an im2col and two matmuls; then the Linear layers     (L, B, Z)
        dz = self.decoder.backward(d_out.reshape(L * B, self.x_dim)).reshape(L, B, Z)
        # 3. z = mu + sigma eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2, summed over the L draws        (B, Z) each
        dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
        # 4. the KL term, beta/B KL: dKL/dmu = mu, dKL/dlogvar = (sigma^2 - 1) / 2
        dkl_dmu, dkl_dlogvar = dist.gaussian_kl_grad(mu, logvar)
        dmu = dmu + (beta / B) * dkl_dmu
        dlogvar = dlogvar + (beta / B) * dkl_dlogvar
        # 5. h = [mu, logvar]: the clip of logvar passes no gradient outside [-20, 10]                  (B, 2Z)
        dh = dist.split_mu_logvar_backward(h, dmu, dlogvar)
        # 6. encoder: the Linear layers, then Conv2d backward (two matmuls and a col2im) per convolution
        self.encoder.backward(dh)
        return self.grads
