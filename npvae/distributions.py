r"""The distributions of a VAE as plain functions on arrays, each with its gradient.

Conventions (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", sections 2.4, 3
and appendices B and C), used everywhere in npvae:

* Encoder :math:`q(z|x) = N(\mu, \mathrm{diag}\,\sigma^2)`. The network outputs ``mu`` and
  ``logvar`` :math:`= \log\sigma^2`, so :math:`\sigma = \exp(\mathrm{logvar}/2)` is the
  standard deviation and :math:`\exp(\mathrm{logvar})` the variance. (A common bug uses
  ``exp(logvar)`` as :math:`\sigma` in the sampler while the KL treats it as the variance.)
* Reparameterization: :math:`z = \mu + \sigma \odot \epsilon`, :math:`\epsilon \sim N(0, I)`;
  :math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial\,\mathrm{logvar} = \sigma\epsilon/2`.
* Prior :math:`p(z) = N(0, I)`; :math:`KL(q\,\|\,p) = \tfrac12\sum_j (\mu_j^2 + \sigma_j^2 - \mathrm{logvar}_j - 1)`
  (appendix B), so :math:`\partial KL/\partial\mu = \mu`,
  :math:`\partial KL/\partial\,\mathrm{logvar} = (\sigma^2 - 1)/2`.
* Decoder :math:`p(x|z)`: Bernoulli with logits :math:`l`
  (:math:`\log p = \sum_d x_d l_d - \mathrm{softplus}(l_d)`, gradient :math:`x - \mathrm{sigmoid}(l)`),
  or Gaussian :math:`N(\hat x, \sigma_x^2 I)` with a fixed or a learned
  :math:`\log\sigma_x` (appendix C.2).

Shapes: the last axis is the event axis (latent units ``z_dim`` or pixels ``x_dim``);
every ``log_prob`` and ``kl`` sums over it and returns an array of the leading (batch or
sample) shape, in **nats**. Arguments broadcast like NumPy arrays. Results keep the
inputs' dtype (float32 stays float32).

Domain: every public function here returns finite values or raises for finite inputs
(float32 or float64; float16 is refused with TypeError: its range ends at 65504, so
``exp(logvar)`` overflows from logvar 11.1). Where the exact result is not representable
in the dtype (a KL of :math:`e^{10^{30}}`), ValueError names the argument. NaN or inf
*inputs* propagate (a diverged training step is reported by the trainer, with its epoch
and batch). The checks look at the (small) results, never at the inputs, in the step's
functions.

The model files (``npvae/models/*.py``) call these functions on arrays; nothing here
receives a model or a callback.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from ._checks import check_array, check_float, check_rng

__all__ = [
    "LOG_2PI", "SIGMA_X_MIN", "SIGMA_X_MAX", "LOGVAR_MIN", "LOGVAR_MAX", "softplus", "sample_eps", "noise", "split_mu_logvar",
    "split_mu_logvar_backward", "reparameterize", "reparameterize_backward", "log_q_at_sample",
    "gaussian_log_prob", "gaussian_log_prob_grad", "standard_normal_log_prob", "gaussian_kl", "gaussian_kl_grad",
    "kl_normal", "kl_normal_grad", "bernoulli_log_prob", "bernoulli_log_prob_grad",
    "Likelihood", "Bernoulli", "Gaussian", "GaussianLearned",
]

LOG_2PI = math.log(2.0 * math.pi)
#: the decoder std sigma_x of the Gaussian likelihoods: in [SIGMA_X_MIN, SIGMA_X_MAX], so sigma_x^2
#: and 1/sigma_x^2 are representable and log p stays finite in float32 for data of size up to 1e4
SIGMA_X_MIN, SIGMA_X_MAX = 1e-6, 1e6


def _half(*arrays) -> None:
    """TypeError for float16 arguments (a range too small for exp(logvar); pass float32 or float64)."""
    for a in arrays:
        if getattr(a, "dtype", None) == np.float16:
            raise TypeError("dtype: expected float32 or float64 arrays, got float16 (its range ends at 65504: "
                            "convert with .astype(np.float32))")


def _finite(result, names: str, what: str, *inputs):
    """``result`` unless it is not finite while every input is: then ValueError (an overflow in ``what``)."""
    if np.isfinite(result).all() if not isinstance(result, tuple) else all(np.isfinite(r).all() for r in result):
        return result
    if all(np.isfinite(a).all() for a in inputs):
        raise ValueError(f"{names}: expected values whose {what} is representable in "
                         f"{np.result_type(*inputs)}, got values for which it overflows")
    return result  # NaN or inf came in: it propagates


def softplus(x: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{softplus}(x) = \log(1 + e^x)`, elementwise, finite for every finite x; x's shape and dtype.

    Identity: :math:`\log(1 + e^x) = \max(x, 0) + \log(1 + e^{-|x|})`. The exponent is
    never positive, so nothing overflows, and ``log1p`` keeps full relative accuracy where
    :math:`e^{-|x|}` is tiny. Derivative: :math:`\mathrm{sigmoid}(x)`. The one softplus of
    npvae: the Bernoulli likelihood, :class:`npvae.layers.Softplus` and the flows use it.
    """
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# --------------------------------------------------------------------------------------
# The diagonal Gaussian q(z|x) = N(mu, diag exp(logvar)) and the prior N(0, I)
# --------------------------------------------------------------------------------------

def sample_eps(shape, *, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """Draw ``eps ~ N(0, I)`` of ``shape`` and ``dtype`` from the explicit Generator ``rng``.

    Raises TypeError if ``rng`` is not a ``np.random.Generator``.
    """
    _half(np.empty(0, dtype=dtype))
    return check_rng(rng).standard_normal(shape, dtype=dtype)


def noise(shape, *, rng, eps, dtype) -> np.ndarray:
    """``eps`` if given (checked against ``shape`` and ``dtype``), else a fresh N(0, I) draw from ``rng``.

    What every model's ``forward`` does with its ``rng=`` / ``eps=`` arguments. A (batch,
    z_dim) ``eps`` is accepted for one sample (``shape[0] == 1``). Raises ValueError if
    neither is given, TypeError/ValueError for an ``eps`` of another shape or dtype.
    """
    if eps is None:
        if rng is None:
            raise ValueError("rng: expected a numpy.random.Generator when eps is not given, got None")
        return check_rng(rng).standard_normal(shape, dtype=dtype)
    if isinstance(eps, np.ndarray) and eps.ndim == len(shape) - 1 and shape[0] == 1:
        eps = eps[None]  # (batch, z_dim) for a single sample
    return check_array(eps, "eps", shape=tuple(shape), dtype=dtype, finite=True)


#: logvar is clipped to [LOGVAR_MIN, LOGVAR_MAX]: sigma in [4.5e-5, 148], so exp(logvar) never
#: overflows, even in float32.
LOGVAR_MIN, LOGVAR_MAX = -20.0, 10.0


def split_mu_logvar(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The encoder's last layer ``h = [mu, logvar_raw]`` (batch, 2 z_dim) -> ``mu``, ``logvar`` (batch, z_dim) each.

    One (hidden, 2 z_dim) matmul gives both halves; ``logvar = clip(logvar_raw, -20, 10)``
    (:data:`LOGVAR_MIN`, :data:`LOGVAR_MAX`). ``mu`` is a view into ``h``; h's dtype.
    Raises ValueError for an ``h`` that is not 2-D with an even width.
    """
    if h.ndim != 2 or h.shape[1] % 2:
        raise ValueError(f"h: expected shape (batch, 2 z_dim), an even width [mu, logvar], got shape {h.shape}")
    z_dim = h.shape[1] // 2
    return h[:, :z_dim], np.clip(h[:, z_dim:], LOGVAR_MIN, LOGVAR_MAX)


def split_mu_logvar_backward(h: np.ndarray, dmu: np.ndarray, dlogvar: np.ndarray) -> np.ndarray:
    r"""(dL/dmu, dL/dlogvar) -> dL/dh (batch, 2 z_dim) for :func:`split_mu_logvar` of this ``h``.

    Local derivatives: :math:`\partial\mu/\partial h_{:Z} = 1`;
    :math:`\partial\,\mathrm{logvar}/\partial h_{Z:} = 1` inside the clip range, 0 outside.
    """
    raw = h[:, dmu.shape[1]:]
    inside = (raw >= LOGVAR_MIN) & (raw <= LOGVAR_MAX)                   # d clip / d raw
    return np.concatenate([dmu, dlogvar * inside], axis=1)


def reparameterize(mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    r"""The reparameterization trick, :math:`z = \mu + \exp(\mathrm{logvar}/2) \odot \epsilon`.

    Kingma & Welling 2014, section 2.4 and eq. (10). ``mu`` and ``logvar`` (batch, z_dim);
    ``eps`` (batch, z_dim) or (n_samples, batch, z_dim), broadcasting against them. Returns
    ``z`` with ``eps``'s shape and the inputs' dtype. :math:`\sigma = \exp(\mathrm{logvar}/2)`
    is the standard deviation. Raises ValueError where sigma or z overflows (logvar above
    1419 in float64, 177 in float32; the models' logvar is clipped to [-20, 10]), TypeError
    for float16.
    """
    std = np.exp(0.5 * logvar)
    z = mu + std * eps
    if z.dtype == np.float16 or np.isinf(std).any() or np.isinf(z).any():  # inline: no call on the step's path
        if z.dtype == np.float16:
            raise TypeError("dtype: expected float32 or float64 arrays, got float16 (convert with .astype(np.float32))")
        raise ValueError(f"logvar: expected values for which z = mu + exp(logvar/2) eps is finite in {z.dtype}, "
                         f"got maximum logvar {float(np.max(logvar)):g} (sigma {float(np.max(std)):g})")
    return z


def reparameterize_backward(dz: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Pull ``dz`` = dL/dz back through :func:`reparameterize` to (dL/dmu, dL/dlogvar).

    Local derivatives: :math:`\partial z/\partial\mu = 1`,
    :math:`\partial z/\partial\,\mathrm{logvar} = \sigma\epsilon/2`. ``dz`` and ``eps``
    (n_samples, batch, z_dim) (or (batch, z_dim)); the sample axis is summed, so both
    results have ``logvar``'s shape (batch, z_dim). ``eps`` must be the forward pass's:
    drawing a new one here would differentiate a different function.
    """
    dmu = dz if dz.ndim == logvar.ndim else dz.sum(axis=0)
    dlogvar = dz * eps * (0.5 * np.exp(0.5 * logvar))                 # dz/dlogvar = sigma eps / 2
    if dlogvar.ndim != logvar.ndim:
        dlogvar = dlogvar.sum(axis=0)
    return dmu, dlogvar


def log_q_at_sample(logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    r""":math:`\log N(z; \mu, \mathrm{diag}\,\sigma^2)` at its own sample :math:`z = \mu + \sigma\epsilon`, nats.

    There :math:`(z - \mu)^2/\sigma^2 = \epsilon^2` exactly, so
    :math:`\log q(z|x) = -\tfrac12\sum_j(\log 2\pi + \mathrm{logvar}_j + \epsilon_j^2)`:
    no division by a tiny :math:`\sigma^2`. ``logvar`` (batch, z_dim), ``eps`` (k, batch,
    z_dim) or (batch, z_dim); returns eps's leading shape in the inputs' dtype (pass
    float64 arrays for float64 results). Its total derivative through z, used by the
    Monte Carlo-KL models (IWAE, flows): 0 in :math:`\mu`, :math:`-\tfrac12` in logvar
    (Burda et al. 2016; see ``docs/derivation.md``).
    """
    return -0.5 * np.sum(LOG_2PI + logvar + eps * eps, axis=-1)


def gaussian_log_prob(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    r""":math:`\log N(z; \mu, \mathrm{diag}\,\exp(\mathrm{logvar}))`, summed over the last axis, nats.

    :math:`-\tfrac12\sum_j [\log 2\pi + \mathrm{logvar}_j + (z_j-\mu_j)^2 e^{-\mathrm{logvar}_j}]`.
    Arguments broadcast; returns the leading shape. At :math:`z = \mu` the quadratic term
    is exactly 0 whatever the variance (``0 * exp(1e30)`` would be NaN); ValueError where
    the density is not representable (a point far outside a tiny variance), TypeError for
    float16.
    """
    _half(z, mu, logvar)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = (z - mu) ** 2
        quad = np.where(sq == 0, 0, sq * np.exp(-logvar))        # (z - mu)^2 / sigma^2, 0 at z = mu
        out = -0.5 * np.sum(LOG_2PI + logvar + quad, axis=-1)
    return _finite(out, "z, mu, logvar", "log density", z, mu, logvar)


def gaussian_log_prob_grad(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray):
    r"""Gradients of :func:`gaussian_log_prob` with respect to (z, mu, logvar), elementwise.

    :math:`\partial/\partial z = -(z-\mu)/\sigma^2`, :math:`\partial/\partial\mu = (z-\mu)/\sigma^2`,
    :math:`\partial/\partial\,\mathrm{logvar} = \tfrac12((z-\mu)^2/\sigma^2 - 1)`.
    Returns three arrays of the arguments' broadcast shape (0, 0, -1/2 at z = mu whatever
    the variance). ValueError where a gradient is not representable, TypeError for float16.
    """
    _half(z, mu, logvar)
    with np.errstate(over="ignore", invalid="ignore"):
        d = z - mu
        r = np.where(d == 0, 0, d * np.exp(-logvar))             # (z - mu) / sigma^2, 0 at z = mu
        out = -r, r, 0.5 * (d * r - 1)
    return _finite(out, "z, mu, logvar", "gradient", z, mu, logvar)


def standard_normal_log_prob(z: np.ndarray) -> np.ndarray:
    r"""The prior's density :math:`\log N(z; 0, I) = -\tfrac12 \sum_j (\log 2\pi + z_j^2)`, nats; leading shape."""
    return -0.5 * np.sum(LOG_2PI + z * z, axis=-1)


def gaussian_kl(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    r"""Closed-form :math:`KL(N(\mu, \mathrm{diag}\,\sigma^2)\,\|\,N(0, I))` per example, nats.

    :math:`\tfrac12 \sum_j (\mu_j^2 + \sigma_j^2 - \mathrm{logvar}_j - 1)` (Kingma & Welling
    2014, appendix B), computed as :math:`\tfrac12 \sum_j (\mu_j^2 + [\mathrm{expm1}(\mathrm{logvar}_j)
    - \mathrm{logvar}_j])`: :math:`e^v - 1 - v` written with ``expm1`` has no cancellation
    near v = 0, and since ``expm1(v) >= v`` for every v and rounding is monotone, each
    bracket is >= 0 in floating point too (``exp(v) - v - 1`` gives -5.6e-17 at v = 1e-8).
    ``mu``, ``logvar``: (batch, z_dim) -> (batch,), their dtype. Exactly 0 at mu = 0,
    logvar = 0. The special case p = N(0, I) of :func:`kl_normal`. Every term is >= 0, so
    finite inputs give a finite KL or +inf: ValueError then (mu above 1e154 or logvar above
    709 in float64), TypeError for float16.
    """
    kl = 0.5 * np.sum(mu * mu + (np.expm1(logvar) - logvar), axis=-1)
    if kl.dtype == np.float16 or np.isinf(kl).any():  # inline: no call on the step's path
        if kl.dtype == np.float16:
            raise TypeError("dtype: expected float32 or float64 arrays, got float16 (convert with .astype(np.float32))")
        raise ValueError(f"mu, logvar: expected values whose KL is representable in {kl.dtype}, got maximum |mu| "
                         f"{float(np.max(np.abs(mu))):g}, maximum logvar {float(np.max(logvar)):g}")
    return kl


def gaussian_kl_grad(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradient of :func:`gaussian_kl`: :math:`\partial KL/\partial\mu = \mu`,
    :math:`\partial KL/\partial\,\mathrm{logvar} = (\sigma^2 - 1)/2 = \mathrm{expm1}(\mathrm{logvar})/2`.
    Two arrays of the inputs' shape (batch, z_dim). ValueError where expm1(logvar) overflows
    (logvar above 709 in float64, 88 in float32)."""
    dlogvar = 0.5 * np.expm1(logvar)
    if np.isinf(dlogvar).any():  # inline: no call on the step's path
        raise ValueError(f"logvar: expected values whose exp is representable in {dlogvar.dtype}, got maximum "
                         f"{float(np.max(logvar)):g}")
    return mu, dlogvar


def kl_normal(mu: np.ndarray, logvar: np.ndarray, mu_p: np.ndarray, logvar_p: np.ndarray) -> np.ndarray:
    r"""Closed-form KL between two diagonal Gaussians, :math:`KL(N(\mu, \sigma^2)\,\|\,N(\mu_p, \sigma_p^2))`, nats.

    .. math::
        \tfrac12 \sum_j \Big[\frac{\sigma_j^2}{\sigma_{p,j}^2} + \frac{(\mu_j-\mu_{p,j})^2}{\sigma_{p,j}^2}
        - 1 + \log\sigma_{p,j}^2 - \log\sigma_j^2\Big]
        = \tfrac12 \sum_j \Big[\mathrm{expm1}(d_j) - d_j + (\mu_j-\mu_{p,j})^2 e^{-\mathrm{logvar}_{p,j}}\Big],

    with :math:`d = \mathrm{logvar} - \mathrm{logvar}_p` (Kingma & Welling 2014, appendix B,
    generalised; Srivastava & Sutton 2017, eq. 3 use it with the Laplace approximation of
    a Dirichlet prior). >= 0 for every finite input, exactly 0 when the Gaussians are
    equal. All four arguments broadcast (the prior's are typically (z_dim,)); sums the
    last axis; returns the leading shape in the inputs' dtype. At :math:`\mu = \mu_p` the
    mean term is exactly 0 whatever :math:`\sigma_p` (``0 * exp(1e30)`` would be NaN);
    ValueError where the KL is not representable, TypeError for float16.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        d = logvar - logvar_p
        sq = (mu - mu_p) ** 2
        mean_term = np.where(sq == 0, 0, sq * np.exp(-logvar_p))  # (mu - mu_p)^2 / sigma_p^2, 0 at mu = mu_p
        kl = 0.5 * np.sum((np.expm1(d) - d) + mean_term, axis=-1)
    # checks written inline (the Dirichlet VAE's step calls this): float16, then an overflow from finite inputs
    if np.result_type(mu, logvar, mu_p, logvar_p) == np.float16:
        raise TypeError("dtype: expected float32 or float64 arrays, got float16 (convert with .astype(np.float32))")
    if not np.isfinite(kl).all() and all(np.isfinite(a).all() for a in (mu, logvar, mu_p, logvar_p)):
        raise ValueError(f"mu, logvar, mu_p, logvar_p: expected values whose KL is representable in {kl.dtype}, "
                         f"got values for which it overflows")
    return kl


def kl_normal_grad(mu: np.ndarray, logvar: np.ndarray, mu_p: np.ndarray, logvar_p: np.ndarray):
    r"""Gradient of :func:`kl_normal` with respect to the first Gaussian's (mu, logvar), elementwise.

    :math:`\partial KL/\partial\mu = (\mu - \mu_p)/\sigma_p^2`,
    :math:`\partial KL/\partial\,\mathrm{logvar} = \tfrac12(\sigma^2/\sigma_p^2 - 1) = \tfrac12\,\mathrm{expm1}(\mathrm{logvar}-\mathrm{logvar}_p)`.
    ValueError where a gradient is not representable, TypeError for float16.
    """
    _half(mu, logvar, mu_p, logvar_p)
    with np.errstate(over="ignore", invalid="ignore"):
        diff = mu - mu_p
        out = np.where(diff == 0, 0, diff * np.exp(-logvar_p)), 0.5 * np.expm1(logvar - logvar_p)
    return _finite(out, "mu, logvar, mu_p, logvar_p", "gradient", mu, logvar, mu_p, logvar_p)


# --------------------------------------------------------------------------------------
# Likelihoods p(x|z): functions of the decoder output
# --------------------------------------------------------------------------------------

def _per_pixel(scale):
    """A float stays a float; per-sample weights (the leading shape, e.g. (k, B)) get a pixel axis."""
    return scale if np.ndim(scale) == 0 else np.asarray(scale)[..., None]


def bernoulli_log_prob(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    r"""Bernoulli log-likelihood from logits, :math:`\sum_d x_d l_d - \mathrm{softplus}(l_d)`, nats.

    Equal to :math:`x\log\mathrm{sigmoid}(l) + (1-x)\log(1-\mathrm{sigmoid}(l))` (the
    negative binary cross-entropy) but never computed as ``log(sigmoid(l))``: with
    :func:`softplus` it is finite and accurate for any finite logit (even
    :math:`|l| = 10^4`, where the naive formula gives log 0). ``x`` in [0, 1] (grey levels
    allowed: then it is the cross-entropy) broadcasts against ``logits`` (e.g. x (B, D),
    logits (L, B, D)); sums the last axis; returns the leading shape.
    """
    out = np.sum(x * logits - softplus(logits), axis=-1)
    if out.dtype == np.float16 or np.isinf(out).any():  # inline: no call on the step's path; (batch,) only
        if out.dtype == np.float16:
            raise TypeError("dtype: expected float32 or float64 arrays, got float16 (convert with .astype(np.float32))")
        raise ValueError(f"logits: expected values whose log-likelihood sum is representable in {out.dtype}, got "
                         f"minimum {float(np.min(logits)):g}, maximum {float(np.max(logits)):g}")
    return out


def bernoulli_log_prob_grad(x: np.ndarray, logits: np.ndarray, scale=1.0) -> np.ndarray:
    r""":math:`\partial(s \log p(x|l))/\partial l = s\,(x - \mathrm{sigmoid}(l))`, elementwise; logits' shape and dtype.

    ``scale`` :math:`s`: a float (e.g. -1/(B L), the loss's weight) or an array of the
    leading shape (e.g. (k, B), the IWAE's per-sample weights), broadcast over the pixels.
    """
    # d log p / d l = x - sigmoid(l), with sigmoid(l) = (1 + tanh(l/2)) / 2: tanh never overflows
    # and NumPy's tanh is a SIMD ufunc, four times faster than scipy.special.expit here
    d = x - (0.5 + 0.5 * np.tanh(0.5 * logits))
    d *= scale if np.ndim(scale) == 0 else np.asarray(scale)[..., None]  # per-sample weights over the pixels
    return d


class Likelihood:
    r"""A decoder distribution :math:`p(x|z)` whose parameter is the decoder output ``out``.

    * ``log_prob(x, out)``: :math:`\log p(x|\mathrm{out})` summed over the last axis, nats
      (``x`` broadcasts against ``out``: the VAE passes x (B, D) and out (L, B, D));
    * ``log_prob_grad(x, out, scale)``: :math:`\partial(\text{scale}\cdot\log p)/\partial\,\mathrm{out}`
      (``out``'s shape), and, for a likelihood with parameters of its own (a learned
      :math:`\sigma_x`), the gradient of the same weighted sum, summed over every example,
      written into ``grads``. ``scale``: a float or an array of the leading shape;
    * ``mean(out)``: the mean of p(x|z), what ``decode`` returns.

    ``params``/``grads``: the likelihood's own parameters (empty unless learned).
    """

    name = ""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}


class Bernoulli(Likelihood):
    r"""Bernoulli likelihood whose parameter is the logits :math:`l`: :func:`bernoulli_log_prob`,
    :func:`bernoulli_log_prob_grad`; ``mean(l)`` = sigmoid(l), the pixel probabilities. No parameters."""

    name = "bernoulli"
    log_prob = staticmethod(bernoulli_log_prob)
    log_prob_grad = staticmethod(bernoulli_log_prob_grad)
    mean = staticmethod(expit)


class Gaussian(Likelihood):
    r"""Gaussian likelihood :math:`N(x; \hat x, \sigma_x^2 I)` with a fixed :math:`\sigma_x > 0`.

    The decoder output is the mean :math:`\hat x`. Per example,
    :math:`\log p = -\tfrac{D}{2}\log(2\pi\sigma_x^2) - \|x-\hat x\|^2 / (2\sigma_x^2)`, and
    :math:`\partial\log p/\partial\hat x = (x - \hat x)/\sigma_x^2`. Raises ValueError for
    ``sigma_x <= 0``.
    """

    name = "gaussian"

    def __init__(self, sigma_x: float = 1.0) -> None:
        super().__init__()
        self.sigma_x = check_float(sigma_x, "sigma_x", minimum=0.0, strict_min=True)
        check_float(sigma_x, "sigma_x", minimum=SIGMA_X_MIN, maximum=SIGMA_X_MAX)

    def log_prob(self, x, out):
        r = x - out
        var = self.sigma_x ** 2
        lp = -0.5 * r.shape[-1] * math.log(2 * math.pi * var) - np.sum(r * r, axis=-1) / (2 * var)
        return _finite(lp, "x, out", "log-likelihood", x, out)

    def log_prob_grad(self, x, out, scale=1.0):
        # d log p / d x_hat = (x - x_hat) / sigma_x^2
        d = x - out
        d *= _per_pixel(scale) / self.sigma_x ** 2
        return d

    @staticmethod
    def mean(out):
        return out


class GaussianLearned(Likelihood):
    r"""Gaussian likelihood :math:`N(x; \hat x, \mathrm{diag}\,\sigma_x^2)` with a learned :math:`\log\sigma_x`.

    ``params["log_sigma"]`` has shape (1,) (one :math:`\sigma_x` shared by all pixels,
    ``per_pixel=False``) or (x_dim,) (one per pixel). Per example,
    :math:`\log p = -\sum_d [\tfrac12\log 2\pi + \log\sigma_d + (x_d-\hat x_d)^2/(2\sigma_d^2)]`,
    so :math:`\partial\log p/\partial\hat x_d = (x_d-\hat x_d)/\sigma_d^2` and
    :math:`\partial\log p/\partial\log\sigma_d = (x_d-\hat x_d)^2/\sigma_d^2 - 1`.

    Stability: on data with constant pixels (MNIST's zero border) the maximum-likelihood
    :math:`\sigma_d` is 0 and the likelihood unbounded, so :math:`\log\sigma_x` is used
    clipped below at ``min_log_sigma`` (gradient 0 beyond the clip).
    """

    name = "gaussian_learned"

    def __init__(self, x_dim: int, *, sigma_x: float = 1.0, per_pixel: bool = False, dtype=np.float32,
                 min_log_sigma: float = math.log(1e-3)) -> None:
        super().__init__()
        sigma_x = check_float(sigma_x, "sigma_x", minimum=0.0, strict_min=True)
        check_float(sigma_x, "sigma_x", minimum=SIGMA_X_MIN, maximum=SIGMA_X_MAX)
        self.min_log_sigma = check_float(min_log_sigma, "min_log_sigma",
                                         minimum=math.log(SIGMA_X_MIN), maximum=math.log(SIGMA_X_MAX))
        shape = (x_dim,) if per_pixel else (1,)
        self.params = {"log_sigma": np.full(shape, math.log(sigma_x), dtype=dtype)}
        self.grads = {"log_sigma": np.zeros(shape, dtype=dtype)}

    def log_sigma(self) -> np.ndarray:
        """The log sigma_x in use: ``params["log_sigma"]`` clipped below at ``min_log_sigma``; (1,) or (x_dim,)."""
        return np.maximum(self.params["log_sigma"], self.params["log_sigma"].dtype.type(self.min_log_sigma))

    def log_prob(self, x, out):
        log_sigma = self.log_sigma()
        r = x - out
        lp = -np.sum(0.5 * LOG_2PI + log_sigma + 0.5 * r * r * np.exp(-2 * log_sigma), axis=-1)
        return _finite(lp, "x, out", "log-likelihood", x, out)

    def log_prob_grad(self, x, out, scale=1.0):
        log_sigma = self.params["log_sigma"]
        r, inv_var = x - out, np.exp(-2 * self.log_sigma())               # x - x_hat, 1 / sigma^2
        s = _per_pixel(scale)
        # d log p / d log sigma_d = (x_d - x_hat_d)^2 / sigma_d^2 - 1, summed over every leading axis
        # (and over the pixels when sigma_x is shared) ...
        g = ((r * r * inv_var - 1) * s).reshape(-1, r.shape[-1]).sum(axis=0)
        if log_sigma.shape == (1,):
            g = g.sum(keepdims=True)
        # ... times d clip / d log_sigma: 0 where the floor min_log_sigma is active
        g *= log_sigma > log_sigma.dtype.type(self.min_log_sigma)
        self.grads["log_sigma"][...] = g
        # d log p / d x_hat = (x - x_hat) / sigma^2
        return (r * (inv_var * s)).astype(r.dtype, copy=False)

    @staticmethod
    def mean(out):
        return out
