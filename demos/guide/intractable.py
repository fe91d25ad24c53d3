r"""Why is p(x) intractable, and why does importance sampling with q work where sampling the prior fails?

Question. The marginal likelihood of a VAE is an integral over the latent,

.. math::  p_\theta(x) = \int p_\theta(x|z)\,p(z)\,dz ,

a continuous mixture of the decoder's distributions p(x|z) weighted by the prior p(z) (the
prior appears ONCE: :math:`\int p(x,z)\,dz = \int p(x|z)p(z)\,dz`). With a neural decoder there is no
closed form; with a d-dimensional z a grid needs :math:`n^d` decoder calls, hopeless for d = 20.
Monte Carlo is the alternative, but which distribution to sample z from matters:

* naive (prior sampling): :math:`\hat p_k = \frac1k\sum_i p(x|z_i)`, :math:`z_i\sim p(z)`. Unbiased
  for p(x), but almost every z_i lands where p(x|z_i) is negligible (the posterior p(z|x) is
  narrow), so its log is biased LOW (Jensen: :math:`E\log\hat p_k \le \log E\hat p_k = \log p(x)`) by
  tens of nats until k is huge;
* importance sampling with the encoder: :math:`\hat p_k = \frac1k\sum_i p(x|z_i)p(z_i)/q(z_i|x)`,
  :math:`z_i\sim q(z|x)`; :math:`E\log\hat p_k` is the IWAE bound (Burda et al. 2016), which
  reaches log p(x) with a few samples because q ≈ p(z|x).

With a 1-D latent the integral CAN be computed: :func:`exact_log_px` integrates
:math:`\exp(\log p(x,z) - c)` by ``scipy.integrate.quad`` (c = the peak of log p(x, z) on a grid,
added back: :math:`\log p(x) = c + \log\int e^{\log p(x,z) - c}dz`), calling the real decoder.

Setup: a 784-400-1 Bernoulli VAE trained 10 epochs on 10,000 MNIST training images (dynamic
binarization; ``--quick``: 300 images, 1 epoch), evaluated in float64 (:func:`to_float64`) on 4
binarized test images. For the estimators at k up to 1e5 with 20 repeats, log p(x|z) is read
from a table of the decoder on a 40,001-point grid over z in [-8, 8] with linear interpolation
(:class:`LogLikTable`; z outside the grid is decoded directly); the largest interpolation
error against the decoder at 2,000 random z is printed, and the IWAE bound of the library
(``VAE.iwae_bound``, the decoder itself, no table) at k = 1,000 is printed beside the table's.
:func:`naive_estimates` and :func:`importance_estimates` give R independent estimates at each k.

A second model repeats the naive estimator with a 784-400-20 VAE (half the epochs), calling
the decoder (:func:`naive_estimates_decoder`), against ``VAE.iwae_bound`` at k = 5,000 as the
reference (no quadrature in 20 dimensions): there it stays tens of nats low even at k = 1e4,
the point of the question; with z_dim = 1 a few hundred prior draws suffice.

For each image the script also computes, by numerical integration on fine grids (the
decoder itself, no interpolation), the mean and s.d. of the TRUE posterior p(z|x)
(:func:`posterior_moments`) and the ELBO of the encoder's q(z|x) (:func:`exact_elbo`), so
that :math:`\log p(x) - \mathrm{ELBO} = KL(q(z|x)\,\|\,p(z|x))` is known to a few 1e-6 nats.

Flags: ``--epochs``, ``--n-train``, ``--z-high`` (the second model's latent dimension).
Printed: per image, the exact log p(x), q(z|x) against the true posterior's mean and s.d., the
ELBO and its gap, the naive and importance-sampled estimates (mean ± s.d. over repeats) at
k = 1, 10, 100, 1000, 1e5, and the table's interpolation error. Numbers:
docs/guide_data/intractable.json. Figures: docs/figures/guide_intractable.png (two rows,
linear axes: the estimates' error against k, all k and zoomed; the 20-D model; the s.d. of
the estimates) and docs/figures/guide_mixture.png (the continuous-mixture picture: a 2-D toy
mixture along a curve, the true posterior p(z|x) against q(z|x) for three test images, and
decoder means across the latent line weighted by p(z)).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure
from scipy import integrate
from scipy.special import logsumexp
from scipy.stats import norm

from demos.guide import common
from npvae import VAE
from npvae import distributions as dist

KS = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)


def to_float64(model: VAE) -> VAE:
    """A float64 copy of a trained VAE (same config, weights cast): for quadrature without float32 noise."""
    m = VAE.from_config({**model.config, "dtype": "float64"}, rng=np.random.default_rng(0))
    for name, p in model.params.items():
        m.params[name][...] = p
    return m


def log_px_given_z(model: VAE, x: np.ndarray, z: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """:math:`\\log p(x|z)` of one image ``x`` (784,) at latent points ``z`` (n, z_dim): (n,) float64 nats."""
    out = np.empty(len(z))
    for i in range(0, len(z), chunk):
        logits = model.decoder.forward(np.asarray(z[i:i + chunk], dtype=model.dtype))
        out[i:i + chunk] = model.likelihood.log_prob(x[None], logits)
    model._cache = None
    return out


def exact_log_px(model: VAE, x: np.ndarray, *, lo: float = -8.0, hi: float = 8.0, n_peak: int = 4001) -> float:
    r"""Exact :math:`\log p(x) = \log\int p(x|z)p(z)dz` of a 1-D-latent VAE by ``scipy.integrate.quad``, nats.

    Log space: c = max of :math:`\log p(x,z) = \log p(x|z) + \log N(z;0,1)` on an
    ``n_peak``-point grid; quad integrates :math:`e^{\log p(x,z) - c}` over [lo, hi] with the
    grid's argmax as a breakpoint (a narrow posterior is never stepped over), and
    :math:`\log p(x) = c + \log\int`; quad's error estimate must be below 1e-4 relative (1e-4
    nats in the log). The prior mass outside [-8, 8] is 1e-15. Raises ValueError
    for a model whose z_dim is not 1 or an integral that is not positive and finite.
    """
    if model.z_dim != 1:
        raise ValueError(f"model.z_dim: expected 1 (quadrature over a 1-D latent), got {model.z_dim}")
    grid = np.linspace(lo, hi, n_peak)
    lj = log_px_given_z(model, x, grid[:, None]) + norm.logpdf(grid)
    c, z_peak = float(lj.max()), float(grid[np.argmax(lj)])

    def integrand(z):
        return np.exp(log_px_given_z(model, x, np.array([[z]]))[0] + norm.logpdf(z) - c)

    with warnings.catch_warnings():
        # ReLU kinks make quad report "roundoff" at tight tolerances; its own error estimate is checked instead
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, err = integrate.quad(integrand, lo, hi, points=[z_peak], limit=500, epsabs=0.0, epsrel=1e-8)
    if not (np.isfinite(val) and val > 0) or err > 1e-4 * val:
        raise ValueError(f"x: the rescaled integral is {val} (error estimate {err:.1e}), "
                         "expected a positive finite number known to 1e-4 relative")
    return c + float(np.log(val))


class LogLikTable:
    r""":math:`\log p(x|z)` of one image on a fine grid of a 1-D latent, read by linear interpolation.

    ``LogLikTable(model, x, lo=-8, hi=8, n=40001)`` decodes the n grid points once;
    ``table(z)`` for z of any shape returns float64 log p(x|z) (interpolated inside [lo, hi],
    decoded exactly outside it). This is what lets the estimators use 1e5 samples x 20 repeats.
    """

    def __init__(self, model: VAE, x: np.ndarray, *, lo: float = -8.0, hi: float = 8.0, n: int = 40001) -> None:
        self.model, self.x, self.lo, self.hi = model, x, lo, hi
        self.grid = np.linspace(lo, hi, n)
        self.values = log_px_given_z(model, x, self.grid[:, None])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        out = np.interp(z, self.grid, self.values)
        outside = (z < self.lo) | (z > self.hi)
        if outside.any():
            out[outside] = log_px_given_z(self.model, self.x, z[outside][:, None])
        return out


def _log_mean_exp_blocks(logw: np.ndarray, k: int, repeats: int) -> np.ndarray:
    """``repeats`` independent :math:`\\log\\frac1k\\sum_i w_i` from a (repeats, k) array of log w."""
    return logsumexp(logw.reshape(repeats, k), axis=1) - np.log(k)


def naive_estimates(table, k: int, repeats: int, *, rng: np.random.Generator) -> np.ndarray:
    r"""``repeats`` estimates :math:`\log\frac1k\sum_i p(x|z_i)`, :math:`z_i\sim N(0,1)` (prior sampling): (repeats,) nats."""
    z = rng.standard_normal((repeats, k))
    return _log_mean_exp_blocks(table(z), k, repeats)


def importance_estimates(table, mu: float, logvar: float, k: int, repeats: int, *,
                         rng: np.random.Generator) -> np.ndarray:
    r"""``repeats`` estimates :math:`\log\frac1k\sum_i p(x|z_i)p(z_i)/q(z_i|x)`, :math:`z_i\sim q = N(\mu, e^{logvar})`.

    :math:`E` of it is the IWAE bound :math:`\mathcal L_k` (Burda et al. 2016, eq. 8), which
    ``VAE.iwae_bound`` computes with the decoder itself. (repeats,) nats.
    """
    eps = rng.standard_normal((repeats, k))
    z = mu + np.exp(0.5 * logvar) * eps
    logw = table(z) + norm.logpdf(z) - (-0.5 * (dist.LOG_2PI + logvar + eps * eps))
    return _log_mean_exp_blocks(logw, k, repeats)


def naive_estimates_decoder(model: VAE, x: np.ndarray, k: int, repeats: int, *, rng: np.random.Generator,
                            chunk: int = 5000) -> np.ndarray:
    r"""As :func:`naive_estimates` for any z_dim, calling the decoder itself: (repeats,) nats.

    ``x`` (784,); draws :math:`z_i\sim N(0, I)` of shape (repeats * k, z_dim).
    """
    z = rng.standard_normal((repeats * k, model.z_dim))
    return _log_mean_exp_blocks(log_px_given_z(model, x, z, chunk), k, repeats)


def toy_mixture_density(x1: np.ndarray, x2: np.ndarray, *, s: float = 0.15, n_z: int = 2001) -> np.ndarray:
    r"""A 2-D continuous mixture :math:`p(x) = \int N(x; g(z), s^2 I)\,N(z; 0, 1)\,dz`, :math:`g(z) = (z, \sin 2z)`.

    ``x1``, ``x2``: arrays of the same shape; returns the density there (trapezoid rule over
    z in [-5, 5], ``n_z`` nodes), float64.
    """
    z = np.linspace(-5, 5, n_z)
    w = norm.pdf(z) * (z[1] - z[0])
    w[[0, -1]] *= 0.5
    g1, g2 = z, np.sin(2 * z)
    d2 = (x1[..., None] - g1) ** 2 + (x2[..., None] - g2) ** 2
    return np.sum(w * np.exp(-0.5 * d2 / s ** 2) / (2 * np.pi * s ** 2), axis=-1)


def posterior_moments(table: "LogLikTable", log_px: float) -> tuple[float, float]:
    r"""Mean and standard deviation of the TRUE posterior :math:`p(z|x) = p(x|z)p(z)/p(x)` of a 1-D-latent VAE.

    ``table``: the :class:`LogLikTable` of the image (its grid values are the decoder's own, no
    interpolation); ``log_px``: :func:`exact_log_px` of the image (the normaliser). Both moments
    by the trapezoid rule on the table's grid (40,001 points over [-8, 8] at full size, 250 per
    unit of z: a posterior of s.d. 0.08 gets 20 points per s.d., and the trapezoid rule on a
    smooth bump that vanishes at both ends is far more accurate than that suggests). Returns
    ``(mean, sd)`` floats.
    """
    z = table.grid
    w = np.exp(table.values + norm.logpdf(z) - log_px)                # p(z|x) on the grid
    mean = float(integrate.trapezoid(z * w, z))
    return mean, float(np.sqrt(integrate.trapezoid((z - mean) ** 2 * w, z)))


def exact_elbo(model: VAE, x: np.ndarray, mu: float, logvar: float, *, n: int = 4001) -> float:
    r"""The ELBO :math:`E_{q}[\log p(x, z) - \log q(z|x)]` of a 1-D-latent VAE for q = N(μ, e^logvar), nats.

    The expectation by the trapezoid rule on ``n`` points over :math:`\mu \pm 12\sigma` (the decoder
    called once on all of them). With :func:`exact_log_px`,
    :math:`\log p(x) - \mathrm{ELBO} = KL(q(z|x)\,\|\,p(z|x))` (Kingma & Welling 2014, eq. 1).
    """
    sd = float(np.exp(0.5 * logvar))
    z = mu + sd * np.linspace(-12.0, 12.0, n)
    log_q = norm.logpdf(z, mu, sd)
    log_joint = log_px_given_z(model, x, z[:, None]) + norm.logpdf(z)
    return float(integrate.trapezoid(np.exp(log_q) * (log_joint - log_q), z))


IMAGE_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")   # one colour per test image (0-3)


def run(args) -> dict:
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n_train = args.n_train or (300 if args.quick else 10000)
    epochs = args.epochs or (1 if args.quick else 10)
    n_img, repeats = (2, 5) if args.quick else (4, 20)
    ks = KS[:6] if args.quick else KS
    grid_n = 4001 if args.quick else 40001
    train_x, _, test_x, test_y = common.load_subset(n_train, 100, seed=args.seed)
    with common.Timer("train"):
        model32 = common.train_vae(train_x, z_dim=1, hidden=(400,), epochs=epochs, seed=args.seed)
    model = to_float64(model32)
    xs = common.binarize(test_x[:n_img], rng=rng, dtype=np.float64)
    mu, logvar = model.encode(xs)
    results = {"images": []}
    interp_err = 0.0
    for j, x in enumerate(xs):
        with common.Timer(f"image {j}: quad + table"):
            exact = exact_log_px(model, x)
            table = LogLikTable(model, x, n=grid_n)
            post_mean, post_sd = posterior_moments(table, exact)
            elbo = exact_elbo(model, x, float(mu[j, 0]), float(logvar[j, 0]))
        zt = np.concatenate([rng.standard_normal(1000), mu[j, 0] + np.exp(0.5 * logvar[j, 0]) * rng.standard_normal(1000)])
        interp_err = max(interp_err, float(np.max(np.abs(table(zt) - log_px_given_z(model, x, zt[:, None])))))
        naive = np.array([naive_estimates(table, k, repeats, rng=rng) for k in ks])        # (K, R)
        imp = np.array([importance_estimates(table, mu[j, 0], logvar[j, 0], k, repeats, rng=rng) for k in ks])
        iwae = model.iwae_bound(np.repeat(x[None], repeats, 0), 1000 if not args.quick else 100, rng=rng)
        results["images"].append({
            "label": int(test_y[j]), "exact": exact, "q_mu": float(mu[j, 0]), "q_sd": float(np.exp(0.5 * logvar[j, 0])),
            "post_mean": post_mean, "post_sd": post_sd, "elbo": elbo, "gap": exact - elbo,
            "naive_mean": naive.mean(1), "naive_sd": naive.std(1, ddof=1),
            "is_mean": imp.mean(1), "is_sd": imp.std(1, ddof=1), "iwae_lib": float(iwae.mean())})
    # ---- the same naive estimator with a higher-dimensional latent: it never gets there ---------------------
    z_high = args.z_high or 20
    with common.Timer(f"{z_high}-D model"):
        model_hi = common.train_vae(train_x, z_dim=z_high, hidden=(400,), epochs=max(1, epochs // 2), seed=args.seed)
        x_hi = common.binarize(test_x[:1], rng=rng, dtype=np.float32)
        k_ref = 100 if args.quick else 5000
        ref = float(np.mean(model_hi.iwae_bound(np.repeat(x_hi, 5, 0), k_ref, rng=rng)))
        ks_hi = [k for k in ks if k <= 10000]
        naive_hi = np.array([naive_estimates_decoder(model_hi, x_hi[0], k, 5, rng=rng) for k in ks_hi])
        is_hi = np.array([model_hi.iwae_bound(np.repeat(x_hi, 5, 0), k, rng=rng) for k in ks_hi if k <= 1000])
    results["high"] = {"z_dim": z_high, "epochs": max(1, epochs // 2), "ks": ks_hi, "naive_mean": naive_hi.mean(1),
                       "naive_sd": naive_hi.std(1, ddof=1), "is_mean": is_hi.mean(1), "is_sd": is_hi.std(1, ddof=1),
                       "reference": ref, "k_ref": k_ref}
    results["ks"] = list(ks)
    results["interp_err"] = interp_err
    setup = dict(n_train=n_train, epochs=epochs, repeats=repeats)
    draw_estimates(results, args.out / "guide_intractable.png", **setup)
    draw_mixture(model, xs, results, args.out / "guide_mixture.png", quick=args.quick)

    for j, r in enumerate(results["images"]):
        print(f"image {j} (a {r['label']}): exact log p(x) = {r['exact']:.3f} nats; q(z|x) = N({r['q_mu']:.3f}, "
              f"{r['q_sd']:.3f}^2); true posterior mean {r['post_mean']:.3f}, s.d. {r['post_sd']:.3f}; "
              f"ELBO {r['elbo']:.3f}, gap KL(q || p(z|x)) {r['gap']:.3f}")
        for i, k in enumerate(ks):
            if k in (1, 10, 100, 1000, 100000):
                print(f"   k={k:>6}: naive {r['naive_mean'][i]:9.3f} ± {r['naive_sd'][i]:.3f}   "
                      f"importance {r['is_mean'][i]:9.3f} ± {r['is_sd'][i]:.3f}")
        print(f"   VAE.iwae_bound (decoder itself), mean over {repeats} repeats: {r['iwae_lib']:.3f}")
    hi = results["high"]
    print(f"z_dim = {z_high}, one test image, reference IWAE bound (k={k_ref}) = {hi['reference']:.3f}; "
          "naive estimate - reference: "
          + ", ".join(f"k={k}: {m - hi['reference']:.2f}" for k, m in zip(hi["ks"], hi["naive_mean"])))
    print(f"largest |table - decoder| interpolation error of log p(x|z): {interp_err:.2e} nats")
    results["summary"] = summarize(results)
    common.write_numbers(args, "intractable", {**setup, **results}, seconds=time.perf_counter() - t0)
    return results


def summarize(results: dict) -> dict:
    """The numbers the guide quotes, computed from ``results`` (see :func:`run`)."""
    ks = results["ks"]
    imgs = results["images"]
    err_naive = np.array([r["naive_mean"] - r["exact"] for r in imgs])         # (images, K)
    err_is = np.array([r["is_mean"] - r["exact"] for r in imgs])
    i10 = ks.index(10) if 10 in ks else len(ks) - 1
    i1000 = ks.index(1000) if 1000 in ks else len(ks) - 1
    # the first k from which the naive mean stays within 0.1 nat of log p(x) for every image
    close = np.all(np.abs(err_naive) < 0.1, axis=0)
    k_naive = next((ks[i] for i in range(len(ks)) if close[i:].all()), None)
    hi = results["high"]
    return {
        "naive_err_k1_min": float(err_naive[:, 0].min()), "naive_err_k1_max": float(err_naive[:, 0].max()),
        "is_err_k10_max": float(np.abs(err_is[:, i10]).max()), "naive_within_0.1_from_k": k_naive,
        "high_naive_err_kmax": float(hi["naive_mean"][-1] - hi["reference"]), "high_kmax": hi["ks"][-1],
        "sd_k1000_naive": [float(r["naive_sd"][i1000]) for r in imgs],
        "sd_k1000_is": [float(r["is_sd"][i1000]) for r in imgs],
    }


def draw_estimates(results: dict, path, *, n_train: int, epochs: int, repeats: int) -> Path:
    """Two rows of linear-axis panels: the estimates' error against k (all k, then a zoom), and their spread."""
    ks = np.array(results["ks"])
    imgs = results["images"]
    with common.guide_style():
        fig = Figure(figsize=(11, 7.6), layout="constrained")
        axes = fig.subplots(2, 3)
        off = np.linspace(-0.06, 0.06, len(imgs))           # small x offsets so error bars do not overlap

        def lines(ax, key, kmin=1):
            sel = ks >= kmin
            for j, r in enumerate(imgs):
                ax.errorbar(ks[sel] * 10 ** off[j], (r[f"{key}_mean"] - r["exact"])[sel], yerr=r[f"{key}_sd"][sel],
                            fmt="o-", ms=3, lw=1.3, capsize=2, color=IMAGE_COLORS[j],
                            label=f"image {j} (a {r['label']}): log p(x) = {r['exact']:.1f}")
            ax.axhline(0, color="black", lw=1)
            ax.set_xscale("log")
            ax.set_xlabel("k (samples per estimate)")
            ax.grid(alpha=0.3, lw=0.5)

        lines(axes[0, 0], "naive")
        axes[0, 0].set(title="naive: z ~ p(z)", ylabel="estimate − exact log p(x)\n(nats; mean ± s.d.)")
        lines(axes[0, 1], "is")
        axes[0, 1].set(title="importance: z ~ q(z|x)")
        axes[0, 0].set_ylim(max(axes[0, 0].get_ylim()[0], -160), None)
        axes[0, 1].set_ylim(axes[0, 0].get_ylim())
        axes[0, 0].legend(loc="lower right", fontsize=8.5)
        lines(axes[1, 0], "naive", kmin=10)
        axes[1, 0].set(title="naive, zoom: k ≥ 10", ylabel="estimate − exact log p(x)\n(nats; mean ± s.d.)",
                       ylim=(-1.5, 0.75))
        lines(axes[1, 1], "is", kmin=10)
        axes[1, 1].set(title="importance, zoom: k ≥ 10", ylim=(-1.5, 0.75))
        # spread of the estimates: where q is narrow and offset, importance weights are heavy-tailed
        ax = axes[1, 2]
        for j, r in enumerate(imgs):
            ax.plot(ks, r["naive_sd"], "o--", ms=3, lw=1.2, color=IMAGE_COLORS[j])
            ax.plot(ks, r["is_sd"], "s-", ms=3, lw=1.2, color=IMAGE_COLORS[j])
        ax.plot([], [], "o--", color="gray", label="naive")
        ax.plot([], [], "s-", color="gray", label="importance")
        ax.set(xscale="log", yscale="log", xlabel="k (samples per estimate)", ylabel="s.d. over repeats (nats)",
               title="spread of the estimates\n(log-log: a factor per step)")
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3, lw=0.5)
        hi = results["high"]
        ax = axes[0, 2]
        kh = np.array(hi["ks"])
        ax.errorbar(kh, hi["naive_mean"] - hi["reference"], yerr=hi["naive_sd"], fmt="o-", ms=3, capsize=2,
                    color=common.COLORS["naive"], label="naive: z ~ p(z)")
        ax.errorbar(kh[kh <= 1000], hi["is_mean"] - hi["reference"], yerr=hi["is_sd"], fmt="s-", ms=3, capsize=2,
                    color=common.COLORS["importance"], label="importance: z ~ q(z|x)")
        ax.axhline(0, color="black", lw=1)
        ax.set(xscale="log", xlabel="k (samples per estimate)", ylabel="estimate − reference (nats)",
               title=f"z_dim = {hi['z_dim']} (no quadrature): 0 is the\nIWAE bound at k = {hi['k_ref']} "
                     f"({hi['reference']:.1f})")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3, lw=0.5)
        fig.suptitle(f"log p(x) of test images under a 784-400-1 VAE ({n_train} MNIST images, {epochs} epochs): "
                     f"exact by quadrature\nagainst log (1/k) Σ w_i, mean ± s.d. over {repeats} repeats "
                     "(right column: the s.d., and a 784-400-20 VAE)")
        return common.save_figure(fig, path)


def draw_mixture(model: VAE, xs: np.ndarray, results: dict, path, *, quick: bool) -> Path:
    """The continuous-mixture picture: a 2-D toy, decoder means along the 1-D latent weighted by p(z),
    and, for test images, the true posterior p(z|x) (quadrature) against the encoder's q(z|x)."""
    with common.guide_style():
        fig = Figure(figsize=(11, 8.4), layout="constrained")
        gs = fig.add_gridspec(3, 2, width_ratios=[1, 1.25], height_ratios=[1.5, 0.55, 0.5])
        ax = fig.add_subplot(gs[0, 0])
        g = np.linspace(-3.2, 3.2, 161 if not quick else 61)
        X1, X2 = np.meshgrid(g, np.linspace(-1.8, 1.8, 91 if not quick else 41))
        ax.contourf(X1, X2, toy_mixture_density(X1, X2), levels=20, cmap=common.IMAGE_CMAP)
        from matplotlib.patches import Circle
        for zi in np.linspace(-2.5, 2.5, 11):
            ax.add_patch(Circle((zi, np.sin(2 * zi)), 2 * 0.15, fill=False, color=common.COLORS["q"],
                                lw=0.5 + 5 * norm.pdf(zi)))
        ax.set(title="toy: p(x) = ∫ N(x; (z, sin 2z), 0.15² I) N(z; 0, 1) dz\n"
                     "circles: components at z = −2.5 … 2.5,\nline width ∝ p(z)", xlabel="x₁", ylabel="x₂",
               aspect="equal")
        # true posterior vs q
        ax = fig.add_subplot(gs[0, 1])
        imgs = results["images"][:3]
        lo = min(r["post_mean"] - 5 * r["post_sd"] for r in imgs)
        hi = max(r["post_mean"] + 5 * r["post_sd"] for r in imgs)
        lo, hi = min(lo, min(r["q_mu"] - 5 * r["q_sd"] for r in imgs)), max(hi, max(r["q_mu"] + 5 * r["q_sd"] for r in imgs))
        zz = np.linspace(lo, hi, 2001)
        ax.plot(zz, norm.pdf(zz), color=common.COLORS["prior"], ls=":", lw=1.5, label="prior p(z) = N(0, 1)")
        top = 0.0
        for j, (x, r) in enumerate(zip(xs, imgs)):
            lp = log_px_given_z(model, x, zz[:, None]) + norm.logpdf(zz) - r["exact"]
            ax.plot(zz, np.exp(lp), color=IMAGE_COLORS[j], lw=2,
                    label=f"image {j} (a {r['label']}): p(z|x), mean {r['post_mean']:.2f}, s.d. {r['post_sd']:.3f}")
            ax.plot(zz, norm.pdf(zz, r["q_mu"], r["q_sd"]), color=IMAGE_COLORS[j], lw=1.5, ls="--",
                    label=f"image {j} (a {r['label']}): q(z|x) = N({r['q_mu']:.2f}, {r['q_sd']:.3f}²)")
            top = max(top, float(np.exp(lp).max()), 1 / (np.sqrt(2 * np.pi) * r["q_sd"]))
        ax.set(xlabel="z", ylabel="density", xlim=(lo, hi), ylim=(0, 1.65 * top),
               title="the true posterior p(z|x) = p(x|z)p(z)/p(x) (solid, quadrature)\n"
                     "against the encoder's q(z|x) (dashed), three test images")
        ax.legend(fontsize=8.5, loc="upper left")
        ax.grid(alpha=0.3, lw=0.5)
        # decoder means across the latent line, weighted by p(z)
        zs = np.linspace(-3, 3, 13)
        means = model.decode(zs[:, None])
        ax_p = fig.add_subplot(gs[1, :])
        ax_img = fig.add_subplot(gs[2, :])
        strip = np.concatenate([np.pad(m.reshape(28, 28), ((1, 1), (1, 1)), constant_values=0.25) for m in means], axis=1)
        ax_img.imshow(strip, cmap=common.IMAGE_CMAP, vmin=0, vmax=1, aspect="equal")
        ax_img.set_xticks(np.arange(13) * 30 + 14.5, [f"{z:+.1f}" for z in zs])
        ax_img.set_yticks([])
        ax_img.set_xlabel("z: the decoder mean of p(x|z) (pixel probabilities) at each z")
        zz = np.linspace(-3.25, 3.25, 400)
        ax_p.plot(zz * 60 + 6 * 30 + 14.5, norm.pdf(zz), color=common.COLORS["q"])
        ax_p.vlines(zs * 60 + 6 * 30 + 14.5, 0, norm.pdf(zs), color=common.COLORS["q"], lw=3, alpha=0.5)
        ax_p.set_xlim(ax_img.get_xlim())
        ax_p.set_xticks([])
        ax_p.set_ylabel("p(z)")
        ax_p.set_title("MNIST, z_dim = 1: p(x) = ∫ p(x|z) p(z) dz, a mixture of the decoder's Bernoulli images "
                       "weighted by p(z)")
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None, help="training epochs of both models (default 10; --quick 1)")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 10000; --quick 300)")
    p.add_argument("--z-high", type=int, default=None,
                   help="latent dimension of the second model, for the naive estimator (default 20)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
