r"""The flow VAE: a Gaussian posterior pushed through K normalizing-flow steps, gradient by hand.

Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", section 4 and
eq. (15)-(16) (planar flows, eq. 10-12); Kingma et al. 2016, "Improved Variational
Inference with Inverse Autoregressive Flow", sections 3-4 and fig. 2 (IAF). The encoder
gives the base posterior :math:`q_0(z_0|x) = N(\mu, \mathrm{diag}\,\sigma^2)`; then

.. math::
    z_0 = \mu + \sigma\odot\epsilon,\quad z_K = f_K\circ\dots\circ f_1(z_0),\quad
    \log q(z_K|x) = \log q_0(z_0|x) - \sum_{k=1}^K \log\left|\det\frac{\partial f_k}{\partial z_{k-1}}\right|,

and the per-example objective, with L = ``n_samples`` draws and the KL by Monte Carlo
(no closed form exists once the flow bends q), is

.. math::
    \mathcal L(x) = \frac1L\sum_l\Big[\log p(x|z_K^{(l)})
      - \beta\big(\log q_0(z_0^{(l)}|x) - \textstyle\sum_k \log|\det J_k^{(l)}| - \log p(z_K^{(l)})\big)\Big].

The loss is :math:`-\mathcal L` averaged over the batch (nats per example); ``beta = 1``
is the ELBO. :math:`\log q_0` at the sample is exactly
:math:`-\tfrac12\sum_j(\log 2\pi + \mathrm{logvar}_j + \epsilon_j^2)`, and its total
derivative through :math:`z_0 = \mu + \sigma\epsilon` (direct + path term, as in
:mod:`npvae.models.iwae`) is 0 in :math:`\mu` and :math:`-\tfrac12` in logvar.

Flows (:func:`npvae.flows.make_flow`):

* ``"planar"``: :math:`f(z) = z + \hat u\tanh(w^\top z + b)`. **Not amortized**: u, w, b
  are global parameters shared by every x, learned by gradient descent with the rest.
  Rezende & Mohamed amortize them (the encoder outputs each step's u, w, b per example);
  here the flow is one fixed warp of latent space, so q(z_K|x) can only reshape the
  family of Gaussians the same way for every x. It enriches q less than the paper's
  (which can bend each posterior differently), costs 2Z+1 parameters per step, and with
  K steps adds K(2Z+1) parameters in all.
* ``"iaf"``: Kingma et al.'s steps :math:`z' = \sigma\odot z + (1-\sigma)\odot m`,
  :math:`[m, s] = \mathrm{MADE}(z, h)`, orders alternating. **Context**: with
  ``context_dim`` C > 0 (default Z) the encoder's last layer also outputs h (B, C),
  which enters every step's MADE (their fig. 2); d loss / d h from every step is summed
  and passed back into the encoder. So IAF *is* amortized through h; the MADE weights
  themselves are global. ``context_dim=0`` gives an unconditional IAF.

``posterior_means`` returns :math:`z_K(\mu) = f_K\circ\dots\circ f_1(\mu)` (with the
context for IAF): the point the decoder sees, so ``decode(posterior_means(x))`` is a
reconstruction, and x's influence through h is not lost (with IAF context, :math:`\mu`
alone can be constant while z_K still varies with x). It is the image of the base mean,
not the mean of q(z_K|x), which has no closed form; with an identity flow it is
:math:`\mu`. ``encode`` still returns the base :math:`(\mu, \mathrm{logvar})`.
"""

from __future__ import annotations

import numpy as np

from .. import distributions as dist
from .._checks import check_choice, check_float, check_int, check_x
from ..flows import FLOWS, make_flow
from ..layers import MLP
from .parts import Terms, check_hidden, collect, common_config, in_batches, set_common
from .vae import VAE

__all__ = ["FlowVAE"]


def _split_context(h, z_dim: int):
    """``h = [mu, logvar_raw, ctx]`` (B, 2Z + C) -> ``mu``, ``logvar`` (clipped), ``ctx`` (B, C) or None if C = 0."""
    mu, logvar = dist.split_mu_logvar(h[:, :2 * z_dim])
    return mu, logvar, (h[:, 2 * z_dim:] if h.shape[1] > 2 * z_dim else None)


def _repeat(ctx, L):
    """(B, C) -> (L*B, C), row l*B + b = ctx[b]: the layout of z.reshape(L*B, Z) for z (L, B, Z)."""
    return None if ctx is None else np.broadcast_to(ctx, (L, *ctx.shape)).reshape(L * ctx.shape[0], -1)


class FlowVAE(VAE):
    r"""A VAE whose posterior is a Gaussian followed by a planar or IAF normalizing flow.

    Parameters are the :class:`~npvae.models.VAE`'s (``x_dim``, ``z_dim``, ``hidden``,
    ``activation``, ``likelihood``, ``rng``, ``dtype``, ``sigma_x``, ``per_pixel_sigma``,
    ``init``), plus

    flow : {"planar", "iaf"}
        The flow's kind (see the module docstring).
    flow_length : int >= 1
        K, the number of steps.
    flow_hidden : sequence of int, optional
        IAF only: each MADE's hidden widths (default :class:`npvae.flows.IAFStep`'s,
        ``(max(2Z, 8),)``); the MADE uses ``activation``.
    context_dim : int >= 0, optional
        IAF only: size of the encoder's context h fed to every step (default Z; 0 = none).

    ``params``/``grads``: the VAE's plus "flow.0.u", ... (planar) or "flow.0.made.0.W",
    ... (IAF). The encoder's last layer has 2Z + C outputs. Inherits ``sample`` (prior
    draws), ``encode`` (base mu, logvar), ``decode``, ``iwae_bound``, ``log_likelihood``.
    Raises TypeError/ValueError naming a bad argument.
    """

    kind = "flow"
    loss_name = "neg_elbo"

    def __init__(self, x_dim: int, z_dim: int, hidden=(400,), activation: str = "relu",
                 likelihood: str = "bernoulli", *, flow: str = "planar", flow_length: int = 4, flow_hidden=None,
                 context_dim: int | None = None, rng: np.random.Generator, dtype=np.float32, sigma_x: float = 1.0,
                 per_pixel_sigma: bool = False, init: str = "glorot_uniform") -> None:
        kw = set_common(self, x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=dtype, sigma_x=sigma_x,
                        per_pixel_sigma=per_pixel_sigma, init=init)
        self.flow_kind = check_choice(flow, "flow", FLOWS)
        self.flow_length = check_int(flow_length, "flow_length", minimum=1)
        self.flow_hidden = None if flow_hidden is None else check_hidden(flow_hidden)
        if flow == "planar" and (context_dim or flow_hidden is not None):
            bad = "context_dim" if context_dim else "flow_hidden"
            raise ValueError(f"{bad}: planar flows take no context and no hidden layers, expected None, "
                             f"got {context_dim if context_dim else flow_hidden!r}")
        default_ctx = self.z_dim if flow == "iaf" else 0
        self.context_dim = default_ctx if context_dim is None else check_int(context_dim, "context_dim", minimum=0)
        self.noise_dim, C = self.z_dim, self.context_dim
        self.encoder = MLP((self.x_dim, *self.hidden, 2 * self.z_dim + C), self.activation, skip_input_grad=True, **kw)
        self.decoder = MLP((self.z_dim, *reversed(self.hidden), self.x_dim), self.activation, **kw)
        self.flow = make_flow(flow, self.z_dim, self.flow_length, hidden=self.flow_hidden, context_dim=C,
                              activation=self.activation, rng=rng, dtype=self.dtype)
        self.params, self.grads = collect(encoder=self.encoder, decoder=self.decoder, flow=self.flow,
                                          likelihood=self.likelihood)
        self._cache = None

    @property
    def config(self) -> dict:
        """The VAE's config plus ``flow``, ``flow_length``, ``flow_hidden``, ``context_dim``; ``kind = "flow"``."""
        return common_config(self, flow=self.flow_kind, flow_length=self.flow_length, context_dim=self.context_dim,
                             flow_hidden=None if self.flow_hidden is None else list(self.flow_hidden))

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, flow={self.flow_kind!r}, flow_length={self.flow_length})"

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mu``, ``logvar`` of the base posterior q_0(z_0|x), each (batch, z_dim), model dtype (the context is dropped)."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        self._cache = None  # the layers' caches now belong to this call, not to a forward
        mu, logvar, _ = _split_context(self.encoder.forward(x), self.z_dim)
        return mu.copy(), logvar

    # ---- the flow posterior: z_0 -> z_K and log q(z_K|x) at the sample -------------------
    def _push(self, mu, logvar, ctx, eps):
        r"""``eps`` (L, B, Z) -> ``z_K`` (L*B, Z), ``logdet`` (L*B,), :math:`\log q_0(z_0|x)` (L, B); caches the flow."""
        L, B, Z = eps.shape
        z0 = dist.reparameterize(mu, logvar, eps)                             # (L, B, Z)
        zK, logdet = self.flow.forward(z0.reshape(L * B, Z), _repeat(ctx, L))  # f_K o ... o f_1
        log_q0 = dist.log_q_at_sample(logvar, eps)                           # log q_0(z_0|x), (L, B)
        return zK, logdet, log_q0

    def forward(self, x: np.ndarray, *, rng: np.random.Generator | None = None, eps: np.ndarray | None = None,
                n_samples: int = 1, beta: float = 1.0) -> Terms:
        r"""Estimate the flow ELBO of a batch and cache what :meth:`backward` needs.

        ``x`` (batch, x_dim), model dtype; ``eps`` (n_samples, batch, z_dim) (or (batch,
        z_dim) for one sample) fixes the base noise, else ``rng`` draws it; ``n_samples``
        = L; ``beta`` >= 0 weights the Monte Carlo KL. Returns :class:`Terms`: loss
        :math:`\frac1B\sum_n(\mathrm{rec}_n + \beta\,\mathrm{kl}_n)` and per-example
        metrics, (batch,) nats in the model dtype: ``reconstruction``
        :math:`-\frac1L\sum_l\log p(x|z_K^{(l)})`; ``kl`` the Monte Carlo
        :math:`\frac1L\sum_l[\log q(z_K^{(l)}|x) - \log p(z_K^{(l)})]` (can be negative for
        one draw); ``elbo`` = -(reconstruction + kl); ``logdet``
        :math:`\frac1L\sum_l\sum_k\log|\det J_k|`. Raises TypeError/ValueError for bad
        arguments, ValueError with neither ``rng`` nor ``eps``.
        """
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        L, beta = check_int(n_samples, "n_samples", minimum=1), check_float(beta, "beta", minimum=0.0)
        B, Z = x.shape[0], self.z_dim
        eps = dist.noise((L, B, Z), rng=rng, eps=eps, dtype=self.dtype)
        h = self.encoder.forward(x)                                          # (B, 2Z + C)
        mu, logvar, ctx = _split_context(h, Z)                               # q_0(z_0|x), each (B, Z); context
        zK, logdet, log_q0 = self._push(mu, logvar, ctx, eps)
        out = self.decoder.forward(zK).reshape(L, B, self.x_dim)            # (L, B, x_dim)
        log_px = self.likelihood.log_prob(x, out)                            # (L, B)
        log_pz = dist.standard_normal_log_prob(zK).reshape(L, B)
        logdet = logdet.reshape(L, B)
        reconstruction = -log_px.mean(axis=0)
        kl = (log_q0 - logdet - log_pz).mean(axis=0)                         # log q(z_K|x) - log p(z_K)
        self._cache = (x, h, out, beta, eps, zK, logvar)
        return Terms(float(np.mean(reconstruction + beta * kl)),
                     {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl),
                      "logdet": logdet.mean(axis=0)})

    def backward(self) -> dict[str, np.ndarray]:
        r"""Gradient of the last ``forward``'s loss (see the module docstring), in place in :attr:`grads`.

        The chain rule, in order: (1) likelihood, (2) decoder to d loss / d z_K, (3) plus
        the prior's :math:`-\beta\log p(z_K)`, (4) the flow's logdet weight and
        ``flow.backward`` to d loss / d z_0 and d loss / d h, (5) through
        :math:`z_0 = \mu + \sigma\epsilon` plus the total derivative of
        :math:`\beta\log q_0(z_0|x)`, (6) h = [mu, logvar, ctx] (the logvar clip; the context's gradient summed over the draws), (7)
        the encoder. Returns :attr:`grads` (live arrays, model dtype). Raises
        RuntimeError if there is no forward to differentiate.
        """
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x, ...) first (encode, decode, sample, "
                               "posterior_means and iwae_bound since the last forward overwrite what backward needs)")
        x, h, out, beta, eps, zK, logvar = self._cache
        L, B, Z = eps.shape
        c = 1.0 / (B * L)
        # 1. likelihood: d loss / d out = -(1 / (B L)) d log p(x|z_K) / d out          (L, B, x_dim)
        d_out = self.likelihood.log_prob_grad(x, out, -c)
        # 2. decoder: d loss / d z_K                                                     (L*B, Z)
        dzK = self.decoder.backward(d_out.reshape(L * B, self.x_dim))
        # 3. prior: loss has -(beta / (B L)) log p(z_K); d(-log p(z_K)) / d z_K = z_K
        dzK = dzK + (beta * c) * zK
        # 4. flow: loss has -(beta / (B L)) sum_k logdet_k, so d loss / d logdet = -beta / (B L)
        dlogdet = np.full(L * B, -beta * c, dtype=self.dtype)
        dz0, dctx = self.flow.backward(dzK, dlogdet)
        # 5. z_0 = mu + sigma eps: dz_0/dmu = 1, dz_0/dlogvar = sigma eps / 2 (summed over l) ...
        dmu, dlogvar = dist.reparameterize_backward(dz0.reshape(L, B, Z), logvar, eps)
        #    ... + (beta / (B L)) d log q_0(z_0|x) at the sample, direct + path:
        #    d/dmu: eps/sigma - eps/sigma = 0;  d/dlogvar: (eps^2 - 1)/2 - eps^2/2 = -1/2 (times L draws)
        dlogvar = dlogvar - self.dtype.type(0.5 * beta / B)
        # 6. h = [mu, logvar, ctx]: the clip on logvar; the context feeds all L draws: sum its gradient over l
        dh = dist.split_mu_logvar_backward(h[:, :2 * Z], dmu, dlogvar)
        if dctx is not None:
            dh = np.concatenate([dh, dctx.reshape(L, B, -1).sum(axis=0)], axis=1)
        # 7. encoder
        self.encoder.backward(dh)
        return self.grads

    # ---- importance sampling with the flow posterior as the proposal --------------------
    def proposal(self, x: np.ndarray):
        """Encode once for :func:`npvae.evaluate.iwae_bound`: (x, mu, logvar, context or None)."""
        x = check_x(x, self.x_dim, self.dtype, self.likelihood_name)
        self._cache = None
        mu, logvar, ctx = _split_context(self.encoder.forward(x), self.z_dim)
        return x, mu.copy(), logvar, None if ctx is None else ctx.copy()

    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        r""":math:`\log p(x|z_K) + \log p(z_K) - [\log q_0(z_0|x) - \sum_k\log|\det J_k|]`, :math:`z_0 = \mu + \sigma\epsilon`.

        ``q`` from :meth:`proposal`; ``eps`` (k, B, Z) model dtype (any k: the context is
        repeated to (k*B, C)). Returns (k, B) float64 (the terms combined in float64).
        """
        x, mu, logvar, ctx = q
        k, B, _ = eps.shape
        self._cache = None
        zK, logdet, log_q0 = self._push(mu, logvar, ctx, eps)
        log_px = self.likelihood.log_prob(x, self.decoder.forward(zK).reshape(k, B, -1)).astype(np.float64)
        log_pz = dist.standard_normal_log_prob(zK.astype(np.float64)).reshape(k, B)
        return log_px + log_pz - (log_q0.astype(np.float64) - logdet.astype(np.float64).reshape(k, B))

    def posterior_means(self, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
        """``z_K(mu(x))``, the flow applied to the base mean (see the module docstring): (N, z_dim), model dtype."""
        check_x(x, self.x_dim, self.dtype, self.likelihood_name)

        def flowed_mean(xb):
            _, mu, _, ctx = self.proposal(xb)
            return self.flow.forward(mu, ctx)[0]

        return in_batches(flowed_mean, x, batch_size=batch_size)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(posterior_means(x))``: the mean of p(x|z) at the flow image of the base mean, (batch, x_dim)."""
        return self.decode(self.posterior_means(x))
