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

A fifth panel repeats the naive estimator on a 784-400-20 VAE (half the epochs), calling the
decoder (:func:`naive_estimates_decoder`), against ``VAE.iwae_bound`` at k = 5,000 as the
reference (no quadrature in 20 dimensions): there it stays tens of nats low even at k = 1e4,
the point of the question; with z_dim = 1 a few hundred prior draws suffice.

Printed: per image, the exact log p(x), the naive and importance-sampled estimates (mean ± s.d.
over repeats) at k = 1, 100, 1e5, and the table's interpolation error.
Figures: docs/figures/guide_intractable.png (estimates against k) and
docs/figures/guide_mixture.png (the continuous-mixture picture: a 2-D toy mixture along a
curve, decoder means across the latent line weighted by p(z), and p(z|x) against p(z)).
"""

from __future__ import annotations

import sys
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


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    n_train, epochs, n_img, repeats = (300, 1, 2, 5) if args.quick else (10000, 10, 4, 20)
    ks = KS[:6] if args.quick else KS
    grid_n = 4001 if args.quick else 40001
    train_x, _, test_x, _ = common.load_subset(n_train, 100, seed=args.seed)
    with common.Timer("train"):
        model32 = common.train_vae(train_x, z_dim=1, hidden=(400,), epochs=epochs, seed=args.seed)
    model = to_float64(model32)
    xs = common.binarize(test_x[:n_img], rng=rng, dtype=np.float64)
    mu, logvar = model.encode(xs)
    results = {"images": []}
    fig = Figure(figsize=(3.6 * (n_img + 1), 4))
    axes = fig.subplots(1, n_img + 1, squeeze=False)[0]
    interp_err = 0.0
    for j, x in enumerate(xs):
        with common.Timer(f"image {j}: quad + table"):
            exact = exact_log_px(model, x)
            table = LogLikTable(model, x, n=grid_n)
        zt = np.concatenate([rng.standard_normal(1000), mu[j, 0] + np.exp(0.5 * logvar[j, 0]) * rng.standard_normal(1000)])
        interp_err = max(interp_err, float(np.max(np.abs(table(zt) - log_px_given_z(model, x, zt[:, None])))))
        naive = np.array([naive_estimates(table, k, repeats, rng=rng) for k in ks])        # (K, R)
        imp = np.array([importance_estimates(table, mu[j, 0], logvar[j, 0], k, repeats, rng=rng) for k in ks])
        iwae = model.iwae_bound(np.repeat(x[None], repeats, 0), 1000 if not args.quick else 100, rng=rng)
        res = {"exact": exact, "naive_mean": naive.mean(1), "naive_sd": naive.std(1, ddof=1),
               "is_mean": imp.mean(1), "is_sd": imp.std(1, ddof=1), "iwae_lib": float(iwae.mean()), "ks": ks}
        results["images"].append(res)
        ax = axes[j]
        ax.axhline(0, color="k", lw=1.2, label="exact log p(x) (quad)")
        ax.errorbar(ks, res["naive_mean"] - exact, yerr=res["naive_sd"], fmt="o-", color="tab:red", ms=3,
                    capsize=2, label="naive: z ~ p(z)")
        ax.errorbar(ks, res["is_mean"] - exact, yerr=res["is_sd"], fmt="s-", color="tab:blue", ms=3, capsize=2,
                    label="importance: z ~ q(z|x)")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("k (samples per estimate)")
        ax.set_title(f"z_dim = 1, test image {j}: log p(x) = {exact:.2f}\nq(z|x) = N({mu[j, 0]:.2f}, "
                     f"{np.exp(0.5 * logvar[j, 0]):.3f}²)", fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.4)
        inset = ax.inset_axes([0.74, 0.04, 0.24, 0.3])
        inset.imshow(x.reshape(28, 28), cmap="gray_r")
        inset.set_axis_off()
        if j == 0:
            ax.set_ylabel("estimate − exact log p(x)  (nats; mean ± s.d.)")
            ax.legend(fontsize=7.5, loc="lower left", bbox_to_anchor=(0.25, 0.0))
    # ---- the same naive estimator with a 20-D latent: it never gets there --------------------------------------
    with common.Timer("20-D model"):
        model20 = common.train_vae(train_x, z_dim=20, hidden=(400,), epochs=max(1, epochs // 2), seed=args.seed)
        x20 = common.binarize(test_x[:1], rng=rng, dtype=np.float32)
        k_ref = 100 if args.quick else 5000
        ref = float(np.mean(model20.iwae_bound(np.repeat(x20, 5, 0), k_ref, rng=rng)))
        ks20 = [k for k in ks if k <= 10000]
        naive20 = np.array([naive_estimates_decoder(model20, x20[0], k, 5, rng=rng) for k in ks20])
        is20 = np.array([model20.iwae_bound(np.repeat(x20, 5, 0), k, rng=rng) for k in ks20 if k <= 1000])
    ax = axes[-1]
    ax.axhline(0, color="k", lw=1.2)
    ax.errorbar(ks20, naive20.mean(1) - ref, yerr=naive20.std(1, ddof=1), fmt="o-", color="tab:red", ms=3, capsize=2)
    ax.errorbar([k for k in ks20 if k <= 1000], is20.mean(1) - ref, yerr=is20.std(1, ddof=1), fmt="s-",
                color="tab:blue", ms=3, capsize=2)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("k (samples per estimate)")
    ax.set_title(f"z_dim = 20, {max(1, epochs // 2)} epochs, no quadrature:\n"
                 f"0 = IWAE bound k={k_ref} ({ref:.1f})", fontsize=9)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    results["z20"] = {"ks": ks20, "naive_mean": naive20.mean(1), "is_mean": is20.mean(1), "reference": ref}
    fig.suptitle(f"log p(x) of a 784-400-1 VAE ({n_train} MNIST train images, {epochs} epoch(s)): exact by quadrature "
                 f"vs log (1/k) Σ w_i over {repeats} repeats (symlog axis).\nThe naive estimator is biased low (Jensen) and its error grows with the latent dimension", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    common.save_figure(fig, args.out / "guide_intractable.png")
    results["interp_err"] = interp_err

    # ---- the mixture picture ----------------------------------------------------------------
    fig = Figure(figsize=(15, 4.6))
    gs = fig.add_gridspec(2, 3, width_ratios=[1, 1.6, 1], height_ratios=[1, 0.7])
    ax = fig.add_subplot(gs[:, 0])
    g = np.linspace(-3.2, 3.2, 161 if not args.quick else 61)
    X1, X2 = np.meshgrid(g, np.linspace(-1.8, 1.8, 91 if not args.quick else 41))
    ax.contourf(X1, X2, toy_mixture_density(X1, X2), levels=20, cmap="Greys")
    zc = np.linspace(-2.5, 2.5, 11)
    for zi in zc:
        ax.add_patch(__import__("matplotlib.patches", fromlist=["Circle"]).Circle(
            (zi, np.sin(2 * zi)), 2 * 0.15, fill=False, color="tab:blue", lw=0.5 + 4 * norm.pdf(zi)))
    ax.set_title("toy: p(x) = ∫ N(x; (z, sin 2z), 0.15² I) N(z; 0, 1) dz\n"
                 "circles: components at z = -2.5..2.5, line width ∝ p(z)", fontsize=9)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_aspect("equal")
    # decoder means across the latent line, weighted by p(z)
    zs = np.linspace(-3, 3, 13)
    means = model.decode(zs[:, None])
    ax_img = fig.add_subplot(gs[1, 1])
    strip = np.concatenate([np.pad(m.reshape(28, 28), ((0, 0), (1, 1)), constant_values=1) for m in means], axis=1)
    ax_img.imshow(strip, cmap="gray_r", vmin=0, vmax=1, aspect="equal")
    ax_img.set_xticks(np.arange(13) * 30 + 14.5, [f"{z:+.1f}" for z in zs], fontsize=7)
    ax_img.set_yticks([])
    ax_img.set_xlabel("z (decoder mean of p(x|z), pixel probabilities)")
    ax_p = fig.add_subplot(gs[0, 1])
    zz = np.linspace(-3.25, 3.25, 400)
    ax_p.plot(zz * 30 / 0.5 + 6 * 30 + 14.5, norm.pdf(zz), color="tab:blue")
    ax_p.vlines(zs * 60 + 6 * 30 + 14.5, 0, norm.pdf(zs), color="tab:blue", lw=3, alpha=0.5)
    ax_p.set_xlim(ax_img.get_xlim())
    ax_p.set_xticks([])
    ax_p.set_ylabel("p(z)")
    ax_p.set_title("MNIST, z_dim = 1: p(x) = ∫ p(x|z) p(z) dz, a mixture of the decoder's Bernoulli images "
                   "weighted by p(z)", fontsize=9)
    # posterior vs prior
    ax = fig.add_subplot(gs[:, 2])
    zz = np.linspace(-4, 4, 4001)
    ax.plot(zz, norm.pdf(zz), "k--", label="prior p(z)")
    for j, x in enumerate(xs[:3]):
        lp = log_px_given_z(model, x, zz[:, None]) + norm.logpdf(zz) - results["images"][j]["exact"]
        ax.plot(zz, np.exp(lp), lw=1.2, label=f"p(z|x) image {j}")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 3 * max(1.0 / np.sqrt(2 * np.pi * np.exp(logvar[:3, 0]))))
    ax.set_xlabel("z")
    ax.set_title("p(z|x) = p(x|z)p(z)/p(x) (exact p(x)):\nnarrow, so few prior draws land on it", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, args.out / "guide_mixture.png")

    for j, r in enumerate(results["images"]):
        print(f"image {j}: exact log p(x) = {r['exact']:.3f} nats")
        for i, k in enumerate(ks):
            if k in (1, 100, 1000, 100000):
                print(f"   k={k:>6}: naive {r['naive_mean'][i]:9.3f} ± {r['naive_sd'][i]:.3f}   "
                      f"importance {r['is_mean'][i]:9.3f} ± {r['is_sd'][i]:.3f}")
        print(f"   VAE.iwae_bound (decoder itself), mean over {repeats} repeats: {r['iwae_lib']:.3f}")
    z20 = results["z20"]
    print(f"z_dim = 20, one test image, reference IWAE bound = {z20['reference']:.3f}; naive estimate - reference: "
          + ", ".join(f"k={k}: {m - z20['reference']:.2f}" for k, m in zip(z20["ks"], z20["naive_mean"])))
    print(f"largest |table - decoder| interpolation error of log p(x|z): {interp_err:.2e} nats")
    return results


def main(argv=None) -> dict:
    return run(common.parse_args(common.make_parser(__doc__.split("\n\n")[0]), argv))


if __name__ == "__main__":
    main()
