r"""What does σ_x of the Gaussian decoder do? A trade-off between reconstruction and KL, i.e. a β.

Question. With a Gaussian decoder :math:`p(x|z) = N(x; \hat x(z), \sigma_x^2 I)` on d pixels,
:math:`-\log p(x|z) = \|x - \hat x\|^2 / (2\sigma_x^2) + \tfrac d2\log(2\pi\sigma_x^2)`, so the loss (the
negative ELBO) for a FIXED σ_x is

.. math::  -\mathcal L = \frac{1}{2\sigma_x^2} E_q\|x - \hat x\|^2 + KL(q(z|x)\,\|\,p(z)) + \tfrac d2\log(2\pi\sigma_x^2).

The last term is a constant. Multiplying the loss by the positive constant :math:`\sigma_x^2`
changes neither its minimisers over the network weights nor (up to Adam's ε) Adam's
trajectory, because Adam's step is invariant to a constant rescaling of the gradient:

.. math::  \sigma_x^2\,(-\mathcal L) = \tfrac12 E_q\|x - \hat x\|^2 + \sigma_x^2\, KL + \text{const},

which is the σ_x = 1 Gaussian VAE with KL weight :math:`\beta = \sigma_x^2` (Higgins et al. 2017's
β-VAE); equivalently :math:`\beta = 2\sigma_x^2` for a loss written with the squared error SUMMED
over the d pixels, :math:`\|x-\hat x\|^2 + \beta KL` (which silently assumes :math:`\sigma_x^2 = 1/2`),
and :math:`\beta = 2\sigma_x^2/d` for the per-pixel MEAN squared error of many tutorials,
:math:`\frac1d\|x-\hat x\|^2 + \beta KL`. Small σ_x =
small β: sharp reconstructions, large KL, and a posterior far from the prior, so prior samples
decode poorly (noisy prior samples); large σ_x = large β: blurry reconstructions and a small
KL (σ_x = 1 with pixels in [0, 1] is already a heavy β; larger σ_x moves towards posterior
collapse, see ``collapse.py``). For a given decoder, the σ_x maximising the ELBO is
:math:`\sigma_x^{*2} = E\|x-\hat x\|^2 / d` (set the derivative in σ_x to zero), printed per model.

:func:`check_beta_equivalence` trains the σ_x = 0.1 model and a σ_x = 1 model with β = 0.01
from the same seed and prints both models' test squared error and KL (close) and the largest
parameter difference (not tiny: float32 rounding, amplified over hundreds of non-convex steps,
separates the two trajectories even though each Adam step is the same up to ε).
:func:`evaluate` measures, on 1,000 test images (grey levels in [0, 1], not binarized):
the squared error :math:`E_q\|x-\hat x\|^2` (one z per image), KL (closed form), active units.

Setup: 784-400-20 Gaussian-decoder VAEs (``likelihood="gaussian"``, ``binarize="none"``),
σ_x ∈ {0.03, 0.1, 0.3, 1} (``--sigmas``), each trained 5 epochs (``--epochs``) on 10,000 MNIST
training images (``--quick``: 300 images, 1 epoch). Numbers: docs/guide_data/sigma_x.json. Printed: for each σ_x the squared error, KL, active units,
σ_x*; the equivalence check. Figure: docs/figures/guide_sigma_x.png (squared error and KL
against σ_x, and for each σ_x reconstructions and decoder means of prior draws).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure

from demos.guide import common
from npvae import distributions as dist
from npvae.plots import image_grid

SIGMAS = (0.03, 0.1, 0.3, 1.0)


def evaluate(model, x: np.ndarray, *, rng: np.random.Generator) -> dict:
    r"""Squared error :math:`\|x - \hat x(z)\|^2` with one z ~ q(z|x) per image, KL, active units, σ_x*.

    ``x``: (N, 784) floats in [0, 1]. Returns floats: ``sq_err`` (mean over images, per image
    summed over pixels), ``kl`` (nats per image), ``active`` (units with Var_x E_q[z] > 0.01),
    ``sigma_star`` :math:`=\sqrt{\text{sq\_err}/d}` (the ELBO-optimal σ_x for this decoder),
    ``neg_elbo`` (nats per image, at the model's σ_x).
    """
    mu, logvar = model.encode(x)
    z = dist.reparameterize(mu, logvar, dist.sample_eps(mu.shape, rng=rng, dtype=model.dtype))
    sq = np.sum((x - model.decode(z)).astype(np.float64) ** 2, axis=1)
    kl = dist.gaussian_kl(mu, logvar).astype(np.float64)
    d, s2 = x.shape[1], model.sigma_x ** 2
    neg_elbo = sq / (2 * s2) + 0.5 * d * np.log(2 * np.pi * s2) + kl
    return {"sq_err": float(sq.mean()), "kl": float(kl.mean()), "active": int(model.active_units(x)),
            "sigma_star": float(np.sqrt(sq.mean() / d)), "neg_elbo": float(neg_elbo.mean())}


def check_beta_equivalence(train_x, test_x, *, sigma_x: float, epochs: int, seed: int) -> dict:
    r"""Train σ_x (β = 1) and σ_x = 1 with β = σ_x² from the same seed; compare the weights.

    Returns ``max_abs_diff`` (largest |θ_a − θ_b| over all parameters), ``max_abs_param``
    (largest |θ| for scale), and ``a``, ``b``: :func:`evaluate` of each model on ``test_x``
    (floats in [0, 1]) with the same noise. Adam's update :math:`m/(\sqrt v + \epsilon)` is unchanged when every
    gradient is multiplied by the constant :math:`1/\sigma_x^2`, except through ε = 1e-8.
    """
    kw = dict(z_dim=20, hidden=(400,), likelihood="gaussian", epochs=epochs, binarize="none", seed=seed)
    a = common.train_vae(train_x, sigma_x=sigma_x, **kw)
    b = common.train_vae(train_x, sigma_x=1.0, beta=sigma_x ** 2, **kw)
    diff = max(float(np.max(np.abs(a.params[n].astype(np.float64) - b.params[n]))) for n in a.params)
    return {"max_abs_diff": diff, "max_abs_param": max(float(np.max(np.abs(p))) for p in a.params.values()),
            "a": evaluate(a, test_x, rng=np.random.default_rng(seed)),
            "b": evaluate(b, test_x, rng=np.random.default_rng(seed))}


def run(args) -> dict:
    t0 = time.perf_counter()
    n_train = 300 if args.quick else 10000
    epochs = args.epochs or (1 if args.quick else 5)
    sigmas = tuple(args.sigmas) if args.sigmas else SIGMAS
    train_x, _, test_x, _ = common.load_subset(n_train, 100 if args.quick else 1000, seed=args.seed)
    x_test = test_x.astype(np.float32) / 255.0
    rng = np.random.default_rng(args.seed + 1)
    results, models = {}, {}
    for s in sigmas:
        with common.Timer(f"sigma_x = {s}"):
            models[s] = common.train_vae(train_x, z_dim=20, hidden=(400,), likelihood="gaussian", sigma_x=s,
                                         epochs=epochs, binarize="none", seed=args.seed)
        results[s] = evaluate(models[s], x_test, rng=rng)
    with common.Timer("beta equivalence"):
        eq = check_beta_equivalence(train_x, x_test, sigma_x=0.1, epochs=epochs, seed=args.seed)
    draw(results, models, eq, x_test, args.out / "guide_sigma_x.png", n_train=n_train, epochs=epochs, seed=args.seed)
    for s in sigmas:
        r = results[s]
        print(f"sigma_x={s:<5g} beta-equivalent={s * s:<7g} squared error {r['sq_err']:8.2f}  KL {r['kl']:7.2f} nats  "
              f"active units {r['active']:2d}  -ELBO {r['neg_elbo']:9.2f}  ELBO-optimal sigma_x* {r['sigma_star']:.4f}")
    print(f"sigma_x=0.1 vs (sigma_x=1, beta=0.01), same seed: squared error {eq['a']['sq_err']:.3f} vs "
          f"{eq['b']['sq_err']:.3f}, KL {eq['a']['kl']:.3f} vs {eq['b']['kl']:.3f}; largest parameter difference {eq['max_abs_diff']:.2e} "
          f"(largest |parameter| {eq['max_abs_param']:.2f})")
    out = {"results": results, "equivalence": eq}
    common.write_numbers(args, "sigma_x", {"n_train": n_train, "epochs": epochs,
                                           "sigmas": {f"{s:g}": r for s, r in results.items()}, "equivalence": eq},
                         seconds=time.perf_counter() - t0)
    return out


def draw(results: dict, models: dict, eq: dict, x_test, path, *, n_train: int, epochs: int, seed: int) -> Path:
    """Top: squared error and KL against σ_x (linear axes), reconstructions; bottom: decoder means of prior draws."""
    sigmas = list(results)
    with common.guide_style():
        fig = Figure(figsize=(11, 7.3), layout="constrained")
        gs = fig.add_gridspec(2, len(sigmas), height_ratios=[1, 1.05])
        top = gs[0, :].subgridspec(1, 3, width_ratios=[1, 1, 1.45])
        pos = np.arange(len(sigmas))
        labels = [f"{s:g}" for s in sigmas]
        xlabel = "σ_x\n(β = σ_x² = " + ", ".join(f"{s * s:g}" for s in sigmas) + ")"
        ax = fig.add_subplot(top[0])
        ax.plot(pos, [results[s]["sq_err"] for s in sigmas], "o-", color=common.COLORS["reconstruction"])
        for i, s in enumerate(sigmas):
            ax.annotate(f"{results[s]['sq_err']:.1f}", (i, results[s]["sq_err"]), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=9.5)
        ax.set(xticks=pos, xlabel=xlabel, ylabel="E‖x − x̂‖² (per image)",
               title="reconstruction error", ylim=(0, 1.2 * max(r["sq_err"] for r in results.values())))
        ax.set_xticklabels(labels)
        ax.margins(x=0.15)
        ax.grid(alpha=0.3, lw=0.5)
        ax = fig.add_subplot(top[1])
        ax.plot(pos, [results[s]["kl"] for s in sigmas], "s-", color=common.COLORS["kl"])
        for i, s in enumerate(sigmas):
            ax.annotate(f"{results[s]['kl']:.1f} nats\n{results[s]['active']} active", (i, results[s]["kl"]),
                        textcoords="offset points", xytext=(6, 3), ha="left", va="bottom", fontsize=9.5)
        ax.set(xticks=pos, xlabel=xlabel, ylabel="KL(q(z|x) ‖ p(z)) (nats)",
               title="KL and active units", ylim=(0, 1.3 * max(r["kl"] for r in results.values())))
        ax.set_xticklabels(labels)
        ax.set_xlim(-0.35, len(sigmas) + 0.1)
        ax.grid(alpha=0.3, lw=0.5)
        ax = fig.add_subplot(top[2])
        n_rec = 8
        rows = [x_test[:n_rec]] + [np.clip(models[s].reconstruct(x_test[:n_rec]), 0, 1) for s in sigmas]
        ax.imshow(image_grid(np.concatenate(rows), len(rows), n_rec, pad=2, pad_value=0.3), cmap=common.IMAGE_CMAP,
                  vmin=0, vmax=1)
        ax.set_yticks(np.arange(len(rows)) * 30 + 16, ["data"] + [f"σ_x={s:g}" for s in sigmas], fontsize=10)
        ax.set_xticks([])
        ax.set_title("reconstructions: decoder mean at z = μ(x)")
        for i, s in enumerate(sigmas):
            ax = fig.add_subplot(gs[1, i])
            samples = np.clip(models[s].sample(25, rng=np.random.default_rng(seed + 7), mean=True), 0, 1)
            ax.imshow(image_grid(samples, 5, 5, pad=2, pad_value=0.3), cmap=common.IMAGE_CMAP, vmin=0, vmax=1)
            ax.set_axis_off()
            ax.set_title(f"σ_x = {s:g} (β = {s * s:g}):\ndecoder means of\nprior draws z ~ N(0, I)")
        fig.suptitle(f"Gaussian decoder N(x; x̂(z), σ_x² I): 784-400-20 VAEs, {n_train} MNIST images (grey levels), "
                     f"{epochs} epochs each.\nSame seed, σ_x = 0.1 against (σ_x = 1, β = 0.01): ‖x−x̂‖² "
                     f"{eq['a']['sq_err']:.2f} vs {eq['b']['sq_err']:.2f}, KL {eq['a']['kl']:.2f} vs "
                     f"{eq['b']['kl']:.2f} nats")
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sigmas", type=float, nargs="+", default=None,
                   help=f"the decoder standard deviations to train (default {' '.join(map(str, SIGMAS))})")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of each model (default 5; --quick 1)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
