r"""How much tighter is the importance-weighted bound, and does it reach log p(x)?

Question (guide: "How much tighter is the importance-weighted bound?"). The IWAE bound
(Burda, Grosse & Salakhutdinov 2016, eq. 8) averages k importance weights inside the log,

.. math::  \mathcal L_k(x) = E_{z_1..z_k\sim q(z|x)}\Big[\log\frac1k\sum_{i=1}^k w_i\Big],\qquad
           w_i = \frac{p_\theta(x, z_i)}{q_\phi(z_i|x)},

with :math:`\mathcal L_1` the ELBO, :math:`\mathcal L_k\le\mathcal L_{k+1}\le\log p(x)` (their
theorem 1) and :math:`\mathcal L_k\to\log p(x)` when the weights are bounded. This script
measures the curve :math:`k\mapsto\mathcal L_k` on trained models:

* a 784-400-2 model, where :math:`\log p(x)` is known exactly (quadrature on a grid,
  :func:`demos.guide.models_common.grid_posterior`): the curve should rise to that line;
* a 784-400-20 model, where no quadrature is possible: the curve still rises at k = 5,000.

For each model and each of ``--images`` binarized test images, a pool of
``--repeats`` x ``--k-max`` log weights (``VAE.log_weights``, the same function
``npvae.evaluate.iwae_bound`` uses) is cut into blocks of k: each block gives one draw of
:math:`\log\frac1k\sum_i w_i` (:func:`bound_curve`). The plotted value is the mean over the
images of the mean over blocks; its standard error is the Monte Carlo one (over blocks, the
images fixed). Also measured: the effective sample size :math:`(\sum w)^2/\sum w^2` of a block
of k = ``--k-max`` weights, as a fraction of k (:func:`effective_sample_size`), and the
quadrature's own accuracy (the grid refined on three images).

Setup: Bernoulli decoders, 10,000 training images (dynamic binarization), ``--epochs``
epochs, Adam 1e-3, batch 128; trained on the ELBO (``--train-k 1``, the default) or on
:math:`\mathcal L_k` with :class:`npvae.IWAE` (``--train-k K``, gradient ``--estimator``
"iwae" or "dreg"). ``--quick``: 300 images, 1 epoch, k up to 100, 4 test images.

Printed: per model, :math:`\mathcal L_k` at every k with its standard error, the exact
:math:`\log p(x)` (2-D), the effective sample size. Figure:
docs/figures/guide_iwae_bound.png; numbers: docs/guide_data/iwae_bound.json (a run with any
flag changed writes both to the scratch folder instead, see :func:`demos.guide.common.parse_args`).
Exercises: ``--train-k``, ``--estimator``, ``--epochs``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure
from scipy.special import logsumexp

from demos.guide import common
from demos.guide import models_common as mc
from npvae import IWAE, VAE

KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def bound_curve(log_w: np.ndarray, ks) -> dict:
    r""":math:`\mathcal L_k` for each k from a pool of log weights ``log_w`` (M, B) (M draws for each of B images).

    The first :math:`b\,k` draws (:math:`b = \lfloor M/k\rfloor` blocks) give b independent
    estimates :math:`\log\frac1k\sum_{i\in\text{block}}w_i` per image. Returns a dict of arrays
    over ``ks``: ``mean`` (the mean over images of the per-image mean, nats), ``se`` (its Monte
    Carlo standard error, :math:`\sqrt{\sum_n s_n^2/b}/B` with :math:`s_n^2` the variance over
    blocks of image n; NaN when b = 1), ``per_image`` (len(ks), B) and ``blocks`` (b per k).
    Raises ValueError for a k larger than M.
    """
    M, B = log_w.shape
    mean, se, per_image, blocks = [], [], [], []
    for k in ks:
        b = M // k
        if b < 1:
            raise ValueError(f"ks: expected every k <= {M} (the pool's draws per image), got {k}")
        est = logsumexp(log_w[:b * k].reshape(b, k, B), axis=1) - np.log(k)      # (b, B)
        per_image.append(est.mean(axis=0))
        mean.append(est.mean())
        se.append(np.sqrt(np.sum(est.var(axis=0, ddof=1)) / b) / B if b > 1 else np.nan)
        blocks.append(b)
    return {"ks": list(ks), "mean": np.array(mean), "se": np.array(se), "per_image": np.array(per_image),
            "blocks": blocks}


def effective_sample_size(log_w: np.ndarray, k: int) -> np.ndarray:
    r"""Kish's effective sample size :math:`(\sum_i w_i)^2/\sum_i w_i^2` of blocks of ``k`` weights, per image.

    From log weights (M, B), in log space: :math:`\exp(2\,\mathrm{lse}(\log w) - \mathrm{lse}(2\log w))`;
    averaged over the :math:`\lfloor M/k\rfloor` blocks. Between 1 (one weight dominates) and k
    (equal weights). Returns (B,) float64.
    """
    M, B = log_w.shape
    b = M // k
    lw = log_w[:b * k].reshape(b, k, B)
    return np.exp(2 * logsumexp(lw, axis=1) - logsumexp(2 * lw, axis=1)).mean(axis=0)


def train(args, z_dim: int, train_x: np.ndarray, epochs: int):
    """A 784-400-z_dim VAE (``--train-k 1``) or IWAE (``--train-k K``), trained on ``train_x``."""
    rng = np.random.default_rng(args.seed)
    if args.train_k == 1:
        model = VAE(784, z_dim, (400,), rng=rng)
    else:
        model = IWAE(784, z_dim, (400,), k=args.train_k, estimator=args.estimator, rng=rng)
    with common.Timer(f"train z_dim={z_dim}"):
        hist = common.train_model(model, train_x, epochs=epochs, seed=args.seed)
    print(f"  z_dim={z_dim}: final train loss {hist[-1]['train_loss']:.2f}")
    return model


def run(args) -> dict:
    t0 = time.perf_counter()
    n_train, epochs, n_img, k_max = (300, 1, 4, 100) if args.quick else (10_000, args.epochs, args.images, args.k_max)
    ks = [k for k in KS if k <= k_max]
    grid = {"n_coarse": 41, "n_fine": 61} if args.quick else {"n_coarse": 81, "n_fine": 161}
    train_x, _, test_x, _ = common.load_subset(n_train, max(n_img, 10), seed=args.seed)
    x = common.binarize(test_x[:n_img], rng=np.random.default_rng(args.seed + 1))
    results = {}
    for z_dim in (2, 20):
        model = train(args, z_dim, train_x, epochs)
        with common.Timer(f"z_dim={z_dim}: pool of {args.repeats} x {k_max} log weights per image"):
            log_w = mc.pool_log_weights(model, x, args.repeats * k_max, rng=np.random.default_rng(args.seed + 2))
        curve = bound_curve(log_w, ks)
        ess = effective_sample_size(log_w, k_max)
        r = {"ks": ks, "L_k": curve["mean"], "se": curve["se"], "blocks": curve["blocks"],
             "ess_fraction_at_kmax": float(np.mean(ess) / k_max),
             "elbo": float(curve["mean"][0]), "L_kmax": float(curve["mean"][-1]),
             "gain": float(curve["mean"][-1] - curve["mean"][0]),
             "monotone": bool(np.all(np.diff(curve["mean"]) > -2 * np.nan_to_num(curve["se"][1:], nan=0.0)))}
        if z_dim == 2:
            # the decoder the weights used (float32), on a grid; a finer grid on 3 images measures the grid's error
            with common.Timer("z_dim=2: quadrature"):
                grids = [mc.grid_posterior(model, xi, **grid) for xi in x]
            log_px = np.array([g["log_px"] for g in grids])
            refine = [abs(mc.grid_posterior(model, xi, box=g["box"], n_fine=2 * grid["n_fine"] - 1)["log_px"]
                          - g["log_px"]) for xi, g in zip(x[:3], grids[:3])]
            gaps = log_px.mean() - curve["mean"]
            per_image_gap = log_px - curve["per_image"][-1]                 # log p(x) - L_kmax, per image
            top = np.sort(per_image_gap)[::-1]
            big = ks.index(100) if ks[-1] > 100 else 0                       # fit the slope from k = 100 on
            rest = np.delete(np.arange(len(x)), np.argmax(per_image_gap))
            r.update(log_px=float(log_px.mean()), gap=gaps,
                     gap_without_worst=(log_px[rest, None] - curve["per_image"][:, rest].T).mean(axis=0),
                     quadrature_refine_max=float(max(refine)),
                     gap_k1=float(gaps[0]), gap_kmax=float(gaps[-1]), gap_k100=float(gaps[big]),
                     # the rate: slope of log(gap) against log(k) from k = 100 to k_max (-1 for finite-variance weights)
                     gap_slope=float(np.polyfit(np.log(ks[big:]), np.log(np.maximum(gaps[big:], 1e-12)), 1)[0]),
                     top3_share=float(top[:3].sum() / per_image_gap.sum()), top3_gaps=top[:3],
                     per_image_gap_k1=log_px - curve["per_image"][0], per_image_gap_kmax=per_image_gap,
                     worst_image=int(np.argmax(per_image_gap)), worst_share=float(top[0] / per_image_gap.sum()),
                     gap_kmax_without_worst=float(np.delete(per_image_gap, np.argmax(per_image_gap)).mean()))
            print(f"  exact log p(x), mean over {n_img} images: {log_px.mean():.3f} nats (the grid refined to "
                  f"{2 * grid['n_fine'] - 1}^2 moves it by at most {max(refine):.1e} nats on 3 images)")
        for k, m, s in zip(ks, curve["mean"], curve["se"]):
            print(f"  z_dim={z_dim}: L_{k:<5d} = {m:9.3f} ± {s:.3f}")
        if z_dim == 2:
            print(f"  log p(x) - L_k: {r['gap_k100']:.3f} at k = {ks[big]}, {r['gap_kmax']:.3f} at k = {k_max}; "
                  f"slope of "
                  f"log gap vs log k {r['gap_slope']:.2f}; the 3 largest per-image gaps at k = {k_max} "
                  f"({', '.join(f'{g:.2f}' for g in r['top3_gaps'])}) are {100 * r['top3_share']:.0f}% of the total")
        print(f"  effective sample size at k = {k_max}: {100 * r['ess_fraction_at_kmax']:.1f}% of k; "
              f"L_kmax - L_1 = {r['gain']:.2f} nats; monotone within 2 s.e.: {r['monotone']}")
        results[f"z{z_dim}"] = r
    numbers = {"n_train": n_train, "epochs": epochs, "n_images": n_img, "k_max": k_max, "repeats": args.repeats,
               **results}
    draw(results, args.out / "guide_iwae_bound.png", n_img=n_img, n_train=n_train, epochs=epochs,
         train_k=args.train_k, estimator=args.estimator)
    common.write_numbers(args, "iwae_bound", numbers, seconds=time.perf_counter() - t0)
    return numbers


def draw(results: dict, path, *, n_img: int, n_train: int, epochs: int, train_k: int, estimator: str) -> Path:
    """L_k against k with 2-s.e. bars (2-D with the exact log p(x), 20-D); the 2-D gap against k; the gap per image."""
    how = "the ELBO (VAEs)" if train_k == 1 else f"L_{train_k} (IWAEs, {estimator} gradient)"
    with common.guide_style():
        fig = Figure(figsize=(11, 8.6), dpi=100, layout="constrained")
        fig.suptitle(f"The IWAE bound L_k against k, mean over {n_img} binarized test images (bars: ±2 Monte Carlo "
                     f"s.e.)\n784-400-Z Bernoulli models trained on {how}, {n_train} images, {epochs} epochs")
        (a, b), (c, d) = fig.subplots(2, 2)
        for ax, (key, r) in zip((a, b), results.items()):
            ks = np.array(r["ks"])
            se = np.nan_to_num(np.asarray(r["se"], float), nan=0.0)
            ax.errorbar(ks, r["L_k"], yerr=2 * se, fmt="o-", color=common.COLORS["importance"], ms=4, capsize=3,
                        label="L_k")
            if "log_px" in r:
                ax.axhline(r["log_px"], color=common.COLORS["posterior"], ls="--",
                           label=f"log p(x) by quadrature: {r['log_px']:.2f}")
                title = (f"2-D latent: log p(x) − L_1 = {r['gap_k1']:.2f} nats,\n"
                         f"log p(x) − L_{ks[-1]} = {r['gap_kmax']:.3f}")
            else:
                ax.axhline(r["L_kmax"], color="0.4", ls=":",
                           label=f"L_{ks[-1]} = {r['L_kmax']:.2f} (log p(x) is above)")
                title = f"20-D latent: L_{ks[-1]} − L_1 = {r['gain']:.2f} nats,\nstill rising"
            ax.set_xscale("log")
            ax.set(xlabel="k (importance samples, log scale)", ylabel="L_k, nats (mean over images)", title=title)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
            ax.text(0.3, 0.32, f"effective sample size\nat k = {ks[-1]}: {100 * r['ess_fraction_at_kmax']:.1f}% of k",
                    transform=ax.transAxes, va="center")
        r = results["z2"]
        ks = np.array(r["ks"], float)
        c.loglog(ks, r["gap"], "o-", color=common.COLORS["importance"], ms=4, label=f"all {n_img} images")
        c.loglog(ks, np.maximum(r["gap_without_worst"], 1e-4), "s--", color="#ff7f0e", ms=4,
                 label=f"without image {r['worst_image']}")
        k0 = 100 if ks[-1] > 100 else ks[0]                      # where iwae_bound's slope fit starts
        tail = ks >= k0
        j0 = int(np.argmax(tail))
        c.loglog(ks[tail], r["gap"][j0] * k0 / ks[tail], ":", color="black", lw=2,
                 label="a 1/k decay (finite-variance weights)")
        c.set(xlabel="k (log scale)", ylabel="log p(x) − L_k, nats (log scale)",
              title=f"2-D latent: the gap shrinks like k^{r['gap_slope']:.2f} from k = {k0:.0f} on")
        c.grid(alpha=0.3, which="both")
        c.legend(loc="lower left")
        kmax = r["ks"][-1]
        d.scatter(r["per_image_gap_k1"], r["per_image_gap_kmax"], s=25, color=common.COLORS["importance"])
        w = r["worst_image"]
        d.annotate(f"test image {w}", (r["per_image_gap_k1"][w], r["per_image_gap_kmax"][w]), xytext=(-10, -18),
                   textcoords="offset points", ha="right")
        d.set(xlabel="log p(x) − L_1, nats", ylabel=f"log p(x) − L_{kmax}, nats",
              title=f"2-D latent, per image: {100 * r['worst_share']:.0f}% of the gap\n"
                    f"left at k = {kmax} is one image's")
        d.grid(alpha=0.3)
    return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--train-k", type=int, default=1,
                   help="1: train a VAE on the ELBO (default); K > 1: train an IWAE on L_K")
    p.add_argument("--estimator", choices=("iwae", "dreg"), default="iwae",
                   help="the IWAE's encoder gradient with --train-k > 1 (default iwae)")
    p.add_argument("--k-max", type=int, default=5000, help="largest k (default 5000)")
    p.add_argument("--repeats", type=int, default=4, help="blocks of k-max draws per image (default 4)")
    p.add_argument("--images", type=int, default=40, help="test images (default 40)")
    args = common.parse_args(p, argv)
    for name in ("epochs", "train_k", "k_max", "images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")
    if args.repeats < 2:
        p.error(f"--repeats: expected an integer >= 2 (a standard error needs two blocks), got {args.repeats}")
    return run(args)


if __name__ == "__main__":
    main()
