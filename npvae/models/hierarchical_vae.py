r"""A VAE with two stochastic layers: its ELBO, its importance-weighted bound and their gradient, by hand.

Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", section 5 and
appendix (the two-stochastic-layer MNIST model: 784-(200,200)-100-(100,100)-50, tanh).
Every distribution is a diagonal Gaussian given by an MLP whose last layer outputs
``[mu, logvar]`` (``logvar`` clipped to [-20, 10], :func:`npvae.distributions.split_mu_logvar`):

* inference, bottom-up: :math:`q(z_1|x) = N(\mu_1, \sigma_1^2)` (``encoder1``, x -> ``hidden[0]``),
  :math:`q(z_2|z_1) = N(\mu_2, \sigma_2^2)` (``encoder2``, z1 -> ``hidden[1]``);
* generation, top-down: :math:`p(z_2) = N(0, I)`, :math:`p(z_1|z_2) = N(\mu_p, \sigma_p^2)`
  (``decoder2``, z2 -> reversed ``hidden[1]``), :math:`p(x|z_1)` (``decoder1``, z1 ->
  reversed ``hidden[0]``; Bernoulli logits or a Gaussian mean, as in :class:`~npvae.models.VAE`).

Two reparameterizations, the second at the first's sample:
:math:`z_1 = \mu_1(x) + \sigma_1(x)\odot\epsilon_1`,
:math:`z_2 = \mu_2(z_1) + \sigma_2(z_1)\odot\epsilon_2`, :math:`\epsilon_1, \epsilon_2 \sim N(0, I)`.

The objective (per example, nats)
---------------------------------
k = 1, the ELBO with one Monte Carlo sample through both layers:

.. math::
    \mathcal L_1(x) = \log p(x|z_1)
      - \beta\,\big[\underbrace{\log q(z_1|x) - \log p(z_1|z_2)}_{\text{at the sample}}
      + \underbrace{KL(q(z_2|z_1)\,\|\,p(z_2))}_{\text{closed form at the sampled } z_1}\big].

The z2 term is in closed form (Kingma & Welling 2014, appendix B): given the sampled
:math:`z_1`, both :math:`q(z_2|z_1)` and :math:`p(z_2)` are fixed Gaussians and
:math:`E_{q(z_2|z_1)}[\log p(z_2) - \log q(z_2|z_1)] = -KL(q(z_2|z_1)\,\|\,p(z_2))` exactly.
The z1 term has no closed form and is estimated at the sample: :math:`p(z_1|z_2)` is a
Gaussian only for a *fixed* :math:`z_2`, and :math:`z_2` is drawn from
:math:`q(z_2|z_1)` with the sampled :math:`z_1`, so under q the two are dependent. The
expectation :math:`E_{q(z_1|x)q(z_2|z_1)}[\log q(z_1|x) - \log p(z_1|z_2)]` does not reduce
to :math:`E_{z_2}[KL(q(z_1|x)\,\|\,p(z_1|z_2))]`, which would need :math:`z_1` drawn from
:math:`q(z_1|x)` independently of :math:`z_2` (under q, :math:`z_1` given :math:`z_2` has
density :math:`\propto q(z_1|x)\,q(z_2|z_1)`, not :math:`q(z_1|x)`). ``beta = 1`` is the
ELBO; ``beta != 1`` weights both layers' KL (the KL warm-up that Sønderby et al. 2016,
"Ladder Variational Autoencoders", found crucial for models with several stochastic layers).

k > 1, the importance-weighted bound (Burda et al. 2016, eq. 8) with k draws
:math:`(z_1^{(i)}, z_2^{(i)})` of the same two reparameterizations:

.. math::
    \log w_i = \log p(x|z_1^{(i)}) + \log p(z_1^{(i)}|z_2^{(i)}) + \log p(z_2^{(i)})
             - \log q(z_1^{(i)}|x) - \log q(z_2^{(i)}|z_1^{(i)}), \qquad
    \mathcal L_k(x) = \mathrm{logsumexp}_i(\log w_i) - \log k,

every term at the sample (no closed form: the weights couple them). The loss is
:math:`-\frac1B\sum_n\mathcal L_k(x_n)`, nats per example (``loss_name`` "neg_elbo" at
k = 1, "neg_iwae_bound" above). Evaluation (:meth:`HierarchicalVAE.log_weights`, used by
:func:`npvae.evaluate.iwae_bound` for log p(x)) uses the same :math:`\log w`.

The gradient
------------
:meth:`HierarchicalVAE.backward` runs the chain rule back through the forward's steps.
With :math:`a = \partial\,\mathrm{loss}/\partial\log p(x|z_1)` and
:math:`c = \partial\,\mathrm{loss}/\partial\log p(z_1|z_2) = -\partial\,\mathrm{loss}/\partial\log q(z_1|x)`
per draw (k = 1: :math:`a = -1/B`, :math:`c = -\beta/B`; k > 1:
:math:`a = c = -\tilde w_i/B`, :math:`\tilde w = \mathrm{softmax}_i(\log w)` in float64 as in
:mod:`npvae.models.iwae`), :math:`\partial\,\mathrm{loss}/\partial z_1` collects four terms:

1. from the decoder :math:`p(x|z_1)`;
2. from the density :math:`\log p(z_1|z_2)`, :math:`-(z_1 - \mu_p)/\sigma_p^2`;
3. from :math:`q(z_2|z_1)`'s network: :math:`\mu_2, \mathrm{logvar}_2` are functions of
   :math:`z_1`, and through :math:`z_2 = \mu_2 + \sigma_2\epsilon_2` so is everything
   :math:`z_2` enters (:math:`p(z_1|z_2)`'s network, :math:`\log p(z_2)`) and the KL or
   :math:`\log q(z_2|z_1)` term;
4. from :math:`\log q(z_1|x)`, whose weight in the loss is :math:`-c`: its path term
   :math:`-c\,\partial\log q/\partial z_1 = c\,(z_1-\mu_1)/\sigma_1^2 = c\,\epsilon_1/\sigma_1`,
   pulled back through :math:`z_1 = \mu_1 + \sigma_1\epsilon_1`, gives :math:`c\,\epsilon_1/\sigma_1`
   in :math:`\mu_1` and :math:`c\,\epsilon_1^2/2` in :math:`\mathrm{logvar}_1`; its direct terms
   (:math:`\mu_1, \mathrm{logvar}_1` at fixed :math:`z_1`) are :math:`-c\,\epsilon_1/\sigma_1` and
   :math:`-c\,(\epsilon_1^2 - 1)/2`. The sums, 0 in :math:`\mu_1` and :math:`c/2` in
   :math:`\mathrm{logvar}_1`, are the total derivative of
   :func:`~npvae.distributions.log_q_at_sample` (as in :mod:`npvae.models.iwae`): they are
   added after the reparameterization, exactly and without dividing by a small
   :math:`\sigma_1`. The same holds for :math:`\log q(z_2|z_1)` at k > 1 (:math:`c/2` in
   :math:`\mathrm{logvar}_2`).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import logsumexp

from .. import distributions as dist
from .. import evaluate
from .._checks import check_float, check_int, check_x
from ..layers import MLP
from .parts import Terms, check_z, collect, decode_sample, in_batches, set_common

__all__ = ["HierarchicalVAE"]


def _check_pair_of_sizes(z_dims) -> tuple[int, int]:
    """``z_dims`` as a pair of ints >= 1; TypeError/ValueError naming ``z_dims`` (or ``z_dims[i]``)."""
    if isinstance(z_dims, (str, bytes)) or not hasattr(z_dims, "__len__") or len(z_dims) != 2:
        raise ValueError(f"z_dims: expected a pair of latent sizes (z1, z2), e.g. (100, 50), got {z_dims!r}")
    return tuple(check_int(z, f"z_dims[{i}]", minimum=1) for i, z in enumerate(z_dims))


def _check_pair_of_hidden(hidden) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``hidden`` as a pair of width tuples (an int is one layer); TypeError/ValueError naming ``hidden[i][j]``."""
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__len__") or len(hidden) != 2:
        raise ValueError(f"hidden: expected a pair of hidden-width sequences (q(z1|x)'s, q(z2|z1)'s), "
                         f"e.g. ((200, 200), (100, 100)), got {hidden!r}")
    out = []
    for i, widths in enumerate(hidden):
        if isinstance(widths, numbers.Integral) and not isinstance(widths, bool):
            widths = (widths,)
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
            raise TypeError(f"hidden[{i}]: expected a sequence of widths, got {type(widths).__name__} {widths!r}")
        out.append(tuple(check_int(h, f"hidden[{i}][{j}]", minimum=1) for j, h in enumerate(widths)))
    return out[0], out[1]


class HierarchicalVAE:
    r"""Burda et al.'s VAE with two stochastic layers, trained on the ELBO (k = 1) or on :math:`\mathcal L_k`.

    Parameters
    ----------
    x_dim : int >= 1
        Data dimension (784 for MNIST).
    z_dims : pair of int >= 1
        ``(z1, z2)``, the sizes of the two stochastic layers (Burda et al.: (100, 50)).
    hidden : pair of sequences of int
        ``(hidden[0], hidden[1])``: the hidden widths of q(z1|x) and of q(z2|z1); p(x|z1)
        and p(z1|z2) mirror them (Burda et al.: ((200, 200), (100, 100))). Empty
        sequences are allowed (a linear map).
    activation : str
        One of :data:`npvae.layers.ACTIVATIONS` (Burda et al.: "tanh").
    likelihood : {"bernoulli", "gaussian", "gaussian_learned"}
        The distribution p(x|z1) (see :func:`npvae.models.parts.make_likelihood`).
    k : int >= 1
        1: the ELBO (``loss_name`` "neg_elbo", ``forward_options`` ("beta",)); > 1: the
        importance-weighted bound with k samples ("neg_iwae_bound", no options). Both are
        set on the instance; the class holds the k = 1 values.
    rng : np.random.Generator
        Initializes the weights.
    dtype : float32 or float64
        Of every parameter, gradient and activation.
    sigma_x : float > 0, per_pixel_sigma : bool, init : str
        As in :class:`~npvae.models.VAE`.

    Attributes: ``z_dim`` = z1 (the code the trainer and the figures use), ``z_dims``,
    ``hidden`` (every hidden width of the inference networks, flat: ``hidden[0] +
    hidden[1]``, what :func:`npvae.evaluate.iwae_bound` sizes its chunks by),
    ``hidden_per_layer`` (the pair as given; ``config["hidden"]`` holds it),
    ``noise_dim`` = z1 + z2 (``eps[..., :z1]`` drives z1, ``eps[..., z1:]`` z2).

    ``params``/``grads``: "encoder1.0.W", ... (q(z1|x)), "encoder2.*" (q(z2|z1)),
    "decoder2.*" (p(z1|z2)), "decoder1.*" (p(x|z1)) and, for "gaussian_learned",
    "likelihood.log_sigma". Raises TypeError/ValueError naming a bad argument.
    """

    kind = "hvae"
    conditional = False
    # the class says what the default k = 1 model does (the demo checks its flags against the class);
    # __init__ sets both on the instance from k
    loss_name = "neg_elbo"
    forward_options = ("beta",)

    def __init__(self, x_dim: int, z_dims=(100, 50), hidden=((200, 200), (100, 100)), activation: str = "tanh",
                 likelihood: str = "bernoulli", k: int = 1, *, rng: np.random.Generator, dtype=np.float32,
                 sigma_x: float = 1.0, per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        self.z_dims = _check_pair_of_sizes(z_dims)
        self.hidden_per_layer = _check_pair_of_hidden(hidden)
        self.k = check_int(k, "k", minimum=1)
        h1, h2 = self.hidden_per_layer
        kw = set_common(self, x_dim, self.z_dims[0], h1 + h2, activation, likelihood, rng=rng, dtype=dtype,
                        sigma_x=sigma_x, per_pixel_sigma=per_pixel_sigma, init=init)
        Z1, Z2 = self.z_dims
        self.noise_dim = Z1 + Z2
        self.loss_name = "neg_elbo" if self.k == 1 else "neg_iwae_bound"
        self.forward_options = ("beta",) if self.k == 1 else ()
        # x is data: the first layer of q(z1|x) skips dL/dx (see npvae.layers.Linear); the other three
        # networks take z1 or z2, whose gradient the chain rule needs
        self.encoder1 = MLP((self.x_dim, *h1, 2 * Z1), self.activation, skip_input_grad=True, **kw)
        self.encoder2 = MLP((Z1, *h2, 2 * Z2), self.activation, **kw)
        self.decoder2 = MLP((Z2, *reversed(h2), 2 * Z1), self.activation, **kw)
        self.decoder1 = MLP((Z1, *reversed(h1), self.x_dim), self.activation, **kw)
        self.params, self.grads = collect(encoder1=self.encoder1, encoder2=self.encoder2, decoder2=self.decoder2,
                                          decoder1=self.decoder1, likelihood=self.likelihood)
        self._cache = None

    @property
    def config(self) -> dict:
        """The constructor arguments and ``kind = "hvae"``, JSON-serialisable (see :meth:`from_config`)."""
        return {"kind": self.kind, "x_dim": self.x_dim, "z_dims": list(self.z_dims),
                "hidden": [list(h) for h in self.hidden_per_layer], "activation": self.activation,
                "likelihood": self.likelihood_name, "k": self.k, "dtype": self.dtype.name, "sigma_x": self.sigma_x,
                "per_pixel_sigma": self.per_pixel_sigma, "init": self.init}

    @classmethod
    def from_config(cls, config: dict, *, rng: np.random.Generator):
        """A model built from :attr:`config` (weights freshly initialized from ``rng``)."""
        c = {key: v for key, v in config.items() if key != "kind"}
        c["dtype"] = np.dtype(c["dtype"]) if "dtype" in c else np.float32
        return cls(**c, rng=rng)

    def __repr__(self) -> str:
        (h1, h2), (Z1, Z2) = self.hidden_per_layer, self.z_dims
        sizes = f"{'-'.join(map(str, (self.x_dim, *h1, Z1)))}-{'-'.join(map(str, (*h2, Z2)))}"
        return (f"{type(self).__name__}({sizes}, activation={self.activation!r}, "
                f"likelihood={self.likelihood_name!r}, k={self.k}, dtype={self.dtype})")

    # ---- encode, decode, sample ------------------------------------------------------------
    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mu1``, ``logvar1`` of q(z1|x), each (batch, z1), model dtype. ``x``: (batch, x_dim), finite."""
        self._cache = None  # the layers' caches now belong to this call, not to a forward
        mu1, logvar1 = dist.split_mu_logvar(self.encoder1.forward(check_x(x, self.x_dim, self.dtype,
                                                                          self.likelihood_name)))
        return mu1.copy(), logvar1

    def decode(self, z1: np.ndarray) -> np.ndarray:
        """The mean of p(x|z1) (pixel probabilities or Gaussian mean): (batch, z1) -> (batch, x_dim)."""
        self._cache = None
        return self.likelihood.mean(self.decoder1.forward(check_z(z1, self.z_dims[0], self.dtype, "z1")))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(mu1(x))``: the mean of p(x|z1) at the mean of q(z1|x), (batch, x_dim)."""
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, *, rng: np.random.Generator, mean: bool = True) -> np.ndarray:
        r"""Ancestral sampling, (n, x_dim): :math:`z_2\sim N(0, I)`, :math:`z_1\sim p(z_1|z_2)`, then x.

        x is the mean of p(x|z1) (``mean=True``) or a draw x ~ p(x|z1). Drawn from
        ``rng`` in this order: z2's noise (n, z2), z1's noise (n, z1), x's (if drawn).
        """
        n = check_int(n, "n", minimum=1)
        Z1, Z2 = self.z_dims
        z2 = dist.sample_eps((n, Z2), rng=rng, dtype=self.dtype)                          # (n, Z2)
        self._cache = None
        mu_p, logvar_p = dist.split_mu_logvar(self.decoder2.forward(z2))                  # (n, Z1) each
        z1 = dist.reparameterize(mu_p, logvar_p, dist.sample_eps((n, Z1), rng=rng, dtype=self.dtype))
        return decode_sample(self.likelihood, self.decoder1.forward(z1), mean=mean, rng=rng)

    # ---- the objective and its gradient ------------------------------------------------
    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None, eps: np.ndarray | None = None,
                beta: float = 1.0) -> Terms:
        r"""Estimate :math:`\mathcal L_1` (k = 1) or :math:`\mathcal L_k` of a batch; cache what :meth:`backward` needs.

        ``x`` (B, x_dim), model dtype; ``eps`` (k, B, z1 + z2) (or (B, z1 + z2) when
        k = 1) fixes the noise, ``eps[..., :z1]`` for z1 and ``eps[..., z1:]`` for z2,
        else ``rng`` draws it. ``beta`` >= 0 weights both layers' KL (k = 1 only).
        Returns :class:`Terms`: ``loss`` (nats per example, the batch mean of the
        per-example loss: :math:`\mathrm{rec} + \beta\,\mathrm{kl}` at k = 1,
        :math:`-\mathcal L_k` above) and (B,) metrics in nats, model dtype:

        * ``reconstruction``: :math:`-\frac1k\sum_i\log p(x|z_1^{(i)})`;
        * ``kl_z1``: :math:`\frac1k\sum_i[\log q(z_1^{(i)}|x) - \log p(z_1^{(i)}|z_2^{(i)})]`, at the sample;
        * ``kl_z2``: :math:`\frac1k\sum_i KL(q(z_2|z_1^{(i)})\,\|\,p(z_2))`, closed form at each sampled z1;
        * ``kl``: ``kl_z1 + kl_z2``, both layers' total;
        * ``elbo``: ``-(reconstruction + kl)`` (at beta = 1; for k > 1 the ELBO averaged
          over the k draws, whose gap to ``iwae_bound`` is what the tighter bound gains);
        * ``iwae_bound`` (k > 1 only): :math:`\mathcal L_k(x)`, minus the per-example loss.

        Raises TypeError/ValueError for a bad ``x``, ``eps`` or ``beta`` (``beta`` != 1
        with k > 1: the bound has no KL weight), ValueError with neither ``rng`` nor ``eps``.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)                       # (B, D)
        beta = check_float(beta, "beta", minimum=0.0)
        if self.k > 1 and beta != 1.0:
            raise ValueError(f"beta: expected 1 for k = {self.k} (the importance-weighted bound has no KL weight), "
                             f"got {beta}")
        k, B, D = self.k, x.shape[0], self.x_dim
        (Z1, Z2), f64 = self.z_dims, np.float64
        eps = dist.noise((k, B, Z1 + Z2), rng=rng, eps=eps, dtype=self.dtype)             # (k, B, Z1+Z2)
        eps1, eps2 = eps[..., :Z1], eps[..., Z1:].reshape(k * B, Z2)                       # (k, B, Z1), (kB, Z2)
        # 1. q(z1|x): h1 = [mu1, logvar1]
        h1 = self.encoder1.forward(x)                                                      # (B, 2Z1)
        mu1, logvar1 = dist.split_mu_logvar(h1)                                            # (B, Z1) each
        # 2. reparameterize: z1 = mu1 + sigma1 * eps1, sigma1 = exp(logvar1 / 2)
        z1 = dist.reparameterize(mu1, logvar1, eps1).reshape(k * B, Z1)                    # (kB, Z1)
        # 3. q(z2|z1) at each sampled z1: h2 = [mu2, logvar2]
        h2 = self.encoder2.forward(z1)                                                     # (kB, 2Z2)
        mu2, logvar2 = dist.split_mu_logvar(h2)                                            # (kB, Z2) each
        # 4. reparameterize: z2 = mu2 + sigma2 * eps2
        z2 = dist.reparameterize(mu2, logvar2, eps2)                                       # (kB, Z2)
        # 5. p(z1|z2): g = [mu_p, logvar_p]
        g = self.decoder2.forward(z2)                                                      # (kB, 2Z1)
        mu_p, logvar_p = dist.split_mu_logvar(g)                                           # (kB, Z1) each
        # 6. p(x|z1): the likelihood's parameter (Bernoulli logits or Gaussian mean)
        out = self.decoder1.forward(z1).reshape(k, B, D)                                   # (k, B, D)
        # 7. the log densities at the sample (those of z1 in float64), and the z2 KL in closed form at each z1
        log_px = self.likelihood.log_prob(x, out)                                          # (k, B) log p(x|z1)
        log_pz1 = dist.gaussian_log_prob(z1.astype(f64), mu_p.astype(f64),
                                         logvar_p.astype(f64)).reshape(k, B)               # (k, B) log p(z1|z2)
        log_qz1 = dist.log_q_at_sample(logvar1.astype(f64), eps1.astype(f64))              # (k, B) log q(z1|x)
        kl_z1 = log_qz1 - log_pz1                                                          # (k, B)
        kl_z2 = dist.gaussian_kl(mu2, logvar2).reshape(k, B)                               # (k, B)
        reconstruction = -log_px.mean(axis=0)                                              # (B,)
        kl1, kl2 = kl_z1.mean(axis=0), kl_z2.mean(axis=0)                                  # (B,) each
        dt = self.dtype
        metrics = {"reconstruction": reconstruction, "kl_z1": kl1.astype(dt), "kl_z2": kl2,
                   "kl": (kl1 + kl2).astype(dt), "elbo": -(reconstruction + kl1 + kl2).astype(dt)}
        if k == 1:
            # 8. loss = mean over the batch of -log p(x|z1) + beta [log q(z1|x) - log p(z1|z2) + KL(q(z2|z1) || p(z2))]
            loss = float(np.mean(reconstruction + beta * (kl1 + kl2)))
            a = np.full((1, B), -1.0 / B, dtype=dt)        # d loss / d log p(x|z1)
            c = np.full((1, B), -beta / B, dtype=dt)       # d loss / d log p(z1|z2) = -d loss / d log q(z1|x)
        else:
            # 8'. log w_i = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1), in float64
            log_pz2 = dist.standard_normal_log_prob(z2.astype(f64)).reshape(k, B)           # (k, B)
            log_qz2 = dist.log_q_at_sample(logvar2.astype(f64), eps2.astype(f64)).reshape(k, B)
            log_w = log_px.astype(f64) + log_pz1 + log_pz2 - log_qz1 - log_qz2             # (k, B)
            # L_k = logsumexp_i(log w_i) - log k; w~ = exp(log w - logsumexp), the softmax over i
            lse = logsumexp(log_w, axis=0)                                                 # (B,)
            bound = lse - np.log(k)
            loss = float(-np.mean(bound))
            a = c = (np.exp(log_w - lse) * (-1.0 / B)).astype(dt)   # d loss / d log w_i = -w~_i / B   (k, B)
            metrics["iwae_bound"] = bound.astype(dt)
        self._cache = (x, h1, eps1, logvar1, z1, h2, eps2, mu2, logvar2, z2, g, mu_p, logvar_p, out, a, c)
        return Terms(loss, metrics)

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss, through both reparameterizations.

        With :math:`a` and :math:`c` the per-draw weights of the module docstring
        (:math:`\partial\,\mathrm{loss}/\partial\log p(x|z_1)` and
        :math:`\partial\,\mathrm{loss}/\partial\log p(z_1|z_2)`), the steps run the forward
        backwards: (1) likelihood, (2) p(x|z1)'s network, (3) the density p(z1|z2), (4)
        its network, (5) the z2 terms and :math:`z_2 = \mu_2 + \sigma_2\epsilon_2`, (6)
        q(z2|z1)'s network, (7) :math:`z_1 = \mu_1 + \sigma_1\epsilon_1` and
        :math:`-\log q(z_1|x)`, (8) q(z1|x)'s network. Overwrites and returns
        :attr:`grads` (live arrays, model dtype). Raises RuntimeError if there is no
        forward to differentiate (none yet, or encode / decode / sample / proposal ran
        since and overwrote the layers' caches).
        """
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x, ...) first (encode, decode, sample "
                               "and iwae_bound since the last forward overwrite what backward needs)")
        x, h1, eps1, logvar1, z1, h2, eps2, mu2, logvar2, z2, g, mu_p, logvar_p, out, a, c = self._cache
        k, B, Z1 = eps1.shape
        cf = c.reshape(k * B, 1)                                                           # (kB, 1)
        # 1. likelihood: d loss / d out = a d log p(x|z1) / d out; Bernoulli: x - sigmoid(out)          (kB, D)
        d_out = self.likelihood.log_prob_grad(x, out, a).reshape(k * B, self.x_dim)
        # 2. p(x|z1)'s network: d loss / d z1, the decoder's term                                       (kB, Z1)
        dz1 = self.decoder1.backward(d_out)
        # 3. log N(z1; mu_p, sigma_p^2): d/dz1 = -(z1 - mu_p)/sigma_p^2, d/dmu_p = (z1 - mu_p)/sigma_p^2,
        #    d/dlogvar_p = ((z1 - mu_p)^2/sigma_p^2 - 1)/2; each times c                              (kB, Z1)
        g_z1, g_mu_p, g_logvar_p = dist.gaussian_log_prob_grad(z1, mu_p, logvar_p)
        dz1 += cf * g_z1
        # 4. p(z1|z2)'s network: g = [mu_p, logvar_p] (the clip passes nothing outside [-20, 10]) -> d loss / d z2
        dz2 = self.decoder2.backward(dist.split_mu_logvar_backward(g, cf * g_mu_p, cf * g_logvar_p))  # (kB, Z2)
        # 5. the z2 terms. k > 1 only, log p(z2) = log N(z2; 0, I): d/dz2 = -z2, times c
        if self.k > 1:
            dz2 -= cf * z2
        #    z2 = mu2 + sigma2 eps2: dz2/dmu2 = 1, dz2/dlogvar2 = sigma2 eps2 / 2                       (kB, Z2) each
        dmu2, dlogvar2 = dist.reparameterize_backward(dz2, logvar2, eps2)
        if self.k == 1:
            #    + the closed-form KL(q(z2|z1) || p(z2)), d loss / d KL = -c:
            #    dKL/dmu2 = mu2, dKL/dlogvar2 = (sigma2^2 - 1)/2
            dkl_dmu, dkl_dlogvar = dist.gaussian_kl_grad(mu2, logvar2)
            dmu2 = dmu2 - cf * dkl_dmu
            dlogvar2 = dlogvar2 - cf * dkl_dlogvar
        else:
            #    + log q(z2|z1) at the sample, d loss / d log q = -c: its total derivative (direct + path
            #    through z2) is 0 in mu2 and -1/2 in logvar2, so + c/2
            dlogvar2 = dlogvar2 + 0.5 * cf
        # 6. q(z2|z1)'s network: h2 = [mu2, logvar2] -> d loss / d z1, the third term of dz1          (kB, Z1)
        dz1 += self.encoder2.backward(dist.split_mu_logvar_backward(h2, dmu2, dlogvar2))
        # 7. z1 = mu1 + sigma1 eps1: dz1/dmu1 = 1, dz1/dlogvar1 = sigma1 eps1 / 2, summed over the k draws (B, Z1)
        dmu1, dlogvar1 = dist.reparameterize_backward(dz1.reshape(k, B, Z1), logvar1, eps1)
        #    + log q(z1|x) at the sample, d loss / d log q = -c: its path term (c eps1/sigma1 in d/dz1) and its
        #    direct terms sum to 0 in mu1 and c/2 in logvar1 (d log_q_at_sample / d logvar1 = -1/2), so + c/2
        dlogvar1 = dlogvar1 + 0.5 * c.sum(axis=0)[:, None]
        # 8. q(z1|x)'s network: h1 = [mu1, logvar1], writes d loss / d phi (dL/dx is not needed: x is data)
        self.encoder1.backward(dist.split_mu_logvar_backward(h1, dmu1, dlogvar1))
        return self.grads

    # ---- importance sampling: the model's side of npvae.evaluate -----------------------
    def proposal(self, x: np.ndarray):
        """Encode once for :func:`npvae.evaluate.iwae_bound`: ``(x, mu1, logvar1)`` of q(z1|x)."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        self._cache = None
        mu1, logvar1 = dist.split_mu_logvar(self.encoder1.forward(x))
        return x, mu1.copy(), logvar1

    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log w = \log p(x|z_1) + \log p(z_1|z_2) + \log p(z_2) - \log q(z_1|x) - \log q(z_2|z_1)`.

        ``q`` from :meth:`proposal`; ``eps`` (k, B, z1 + z2), model dtype, drives
        :math:`z_1 = \mu_1 + \sigma_1\epsilon_1` and :math:`z_2 = \mu_2(z_1) + \sigma_2(z_1)\epsilon_2`
        as in :meth:`forward`. Returns (k, B) float64 nats (Burda et al. 2016, eq. 8).
        """
        x, mu1, logvar1 = q
        k, B, _ = eps.shape
        (Z1, Z2), f64 = self.z_dims, np.float64
        eps1, eps2 = eps[..., :Z1], eps[..., Z1:].reshape(k * B, Z2)
        z1 = dist.reparameterize(mu1, logvar1, eps1).reshape(k * B, Z1)                    # (kB, Z1)
        mu2, logvar2 = dist.split_mu_logvar(self.encoder2.forward(z1))                     # (kB, Z2) each
        z2 = dist.reparameterize(mu2, logvar2, eps2)                                       # (kB, Z2)
        mu_p, logvar_p = dist.split_mu_logvar(self.decoder2.forward(z2))                   # (kB, Z1) each
        out = self.decoder1.forward(z1).reshape(k, B, self.x_dim)                          # (k, B, D)
        log_px = self.likelihood.log_prob(x, out).astype(f64)                              # log p(x|z1)
        log_pz1 = dist.gaussian_log_prob(z1.astype(f64), mu_p.astype(f64), logvar_p.astype(f64))  # log p(z1|z2)
        log_pz2 = dist.standard_normal_log_prob(z2.astype(f64))                            # log p(z2)
        log_qz1 = dist.log_q_at_sample(logvar1.astype(f64), eps1.astype(f64))              # log q(z1|x)
        log_qz2 = dist.log_q_at_sample(logvar2.astype(f64), eps2.astype(f64))              # log q(z2|z1)
        return log_px + (log_pz1 + log_pz2 - log_qz2).reshape(k, B) - log_qz1

    def iwae_bound(self, x, k: int, *, rng=None, eps=None, chunk_size=None) -> np.ndarray:
        """:func:`npvae.evaluate.iwae_bound` of this model: (batch,) float64 nats."""
        return evaluate.iwae_bound(self, x, k, rng=rng, eps=eps, chunk_size=chunk_size)

    def log_likelihood(self, x, k: int = 5000, *, rng, batch_size: int = 100, progress: bool = False) -> np.ndarray:
        """:func:`npvae.evaluate.log_likelihood` of this model: (N,) float64 nats."""
        return evaluate.log_likelihood(self, x, k, rng=rng, batch_size=batch_size, progress=progress)

    # ---- latent codes and active units, per layer ----------------------------------------
    def posterior_means(self, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
        """``mu1(x)``, the mean of q(z1|x), encoded ``batch_size`` examples at a time: (N, z1), model dtype."""
        check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        return in_batches(lambda xb: self.encode(xb)[0], x, batch_size=batch_size)

    def layer_posterior_means(self, x: np.ndarray, *, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        r"""Each layer's code: ``mu1`` (N, z1), the mean of q(z1|x), and ``mu2`` (N, z2), the mean of q(z2|z1 = mu1).

        ``mu2`` approximates :math:`E_q[z_2|x] = E_{q(z_1|x)}[\mu_2(z_1)]` by :math:`\mu_2(E_q[z_1])`
        (exact when :math:`\mu_2` is affine in z1): a deterministic code for Burda et al.'s
        activity statistic :math:`A_u = \mathrm{Var}_x E_q[u]` (section 5.2) counted per
        layer (:meth:`layer_active_units`). ``x`` (N, x_dim), model dtype; both results in
        the model dtype. Raises TypeError/ValueError for a bad ``x`` or ``batch_size``.
        """
        check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        Z1 = self.z_dims[0]

        def both(xb):
            mu1 = self.encode(xb)[0]                                                       # (b, Z1)
            mu2, _ = dist.split_mu_logvar(self.encoder2.forward(mu1))                      # (b, Z2)
            return np.concatenate([mu1, mu2], axis=1)

        means = in_batches(both, x, batch_size=batch_size)                                 # (N, Z1+Z2)
        return means[:, :Z1].copy(), means[:, Z1:].copy()

    def layer_active_units(self, x: np.ndarray, *, threshold: float = evaluate.ACTIVE_THRESHOLD,
                           batch_size: int = 1000) -> tuple[int, int]:
        """Active units of each layer, ``(n1, n2)``: the units whose activity exceeds ``threshold``.

        A unit's activity is the variance over the data of its code in
        :meth:`layer_posterior_means` (Burda et al. 2016, section 5.2; threshold 0.01).
        ``x`` (N, x_dim), N >= 2 (ValueError otherwise).
        """
        threshold = check_float(threshold, "threshold", minimum=0.0)
        if isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[0] < 2:
            raise ValueError(f"x: expected at least 2 examples to measure a variance, got {x.shape[0]}")
        mu1, mu2 = self.layer_posterior_means(x, batch_size=batch_size)
        return tuple(int(np.sum(m.astype(np.float64).var(axis=0) > threshold)) for m in (mu1, mu2))
