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
β-VAE); equivalently :math:`\beta = 2\sigma_x^2` for a loss written as :math:`\|x-\hat x\|^2 + \beta KL`
(the "MSE + KL" of many tutorials, which silently assumes :math:`\sigma_x^2 = 1/2`). Small σ_x =
small β: sharp reconstructions, large KL, and a posterior far from the prior, so prior samples
decode poorly (noisy prior samples); large σ_x = large β: blurry reconstructions and a small
KL (here σ_x = 1, i.e. β = 1 with pixels in [0, 1]: KL ≈ 5 nats, the squared error doubles;
larger σ_x moves towards posterior collapse). For a given decoder, the σ_x maximising the ELBO is
:math:`\sigma_x^{*2} = E\|x-\hat x\|^2 / d` (set the derivative in σ_x to zero), printed per model.

:func:`check_beta_equivalence` trains the σ_x = 0.1 model and a σ_x = 1 model with β = 0.01
from the same seed and prints both models' test squared error and KL (close) and the largest
parameter difference (not tiny: float32 rounding, amplified over hundreds of non-convex steps,
separates the two trajectories even though each Adam step is the same up to ε).
:func:`evaluate` measures, on 1,000 test images (grey levels in [0, 1], not binarized):
the squared error :math:`E_q\|x-\hat x\|^2` (one z per image), KL (closed form), active units.

Setup: 784-400-20 Gaussian-decoder VAEs (``likelihood="gaussian"``, ``binarize="none"``),
σ_x ∈ {0.03, 0.1, 0.3, 1}, each trained 5 epochs on 10,000 MNIST training images
(``--quick``: 300 images, 1 epoch). Printed: for each σ_x the squared error, KL, active units,
σ_x*; the equivalence check. Figure: docs/figures/guide_sigma_x.png (squared error and KL
against σ_x, and for each σ_x reconstructions and decoder means of prior draws).
"""

from __future__ import annotations

import sys
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
    n_train, epochs = (300, 1) if args.quick else (10000, 5)
    train_x, _, test_x, _ = common.load_subset(n_train, 100 if args.quick else 1000, seed=args.seed)
    x_test = test_x.astype(np.float32) / 255.0
    rng = np.random.default_rng(args.seed + 1)
    results, models = {}, {}
    for s in SIGMAS:
        with common.Timer(f"sigma_x = {s}"):
            models[s] = common.train_vae(train_x, z_dim=20, hidden=(400,), likelihood="gaussian", sigma_x=s,
                                         epochs=epochs, binarize="none", seed=args.seed)
        results[s] = evaluate(models[s], x_test, rng=rng)
    with common.Timer("beta equivalence"):
        eq = check_beta_equivalence(train_x, x_test, sigma_x=0.1, epochs=epochs, seed=args.seed)

    fig = Figure(figsize=(13, 7.8))
    gs = fig.add_gridspec(2, 4, height_ratios=[1, 1.25], hspace=0.5, wspace=0.3, left=0.07, right=0.97, top=0.86, bottom=0.02)
    ax = fig.add_subplot(gs[0, :2])
    sig = np.array(SIGMAS)
    ax.plot(sig, [results[s]["sq_err"] for s in SIGMAS], "o-", color="tab:blue", label="E‖x − x̂‖² (per image)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("σ_x  (equivalent β = σ_x² relative to σ_x = 1)")
    ax.set_ylabel("squared error", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(sig, [results[s]["kl"] for s in SIGMAS], "s-", color="tab:red", label="KL(q‖p) (nats)")
    ax2.set_ylabel("KL (nats per image)", color="tab:red")
    for s in SIGMAS:
        ax2.annotate(f"{results[s]['active']} active\nσ*={results[s]['sigma_star']:.3f}", (s, results[s]["kl"]),
                     textcoords="offset points", xytext=(6, -22), fontsize=7)
    ax.set_xticks(sig, [f"{s:g}\n(β={s * s:g})" for s in SIGMAS])
    ax.set_title("test set: reconstruction vs KL as σ_x grows\n(annotations: active units, ELBO-optimal σ_x*)",
                 fontsize=9, pad=14)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    # reconstructions
    ax = fig.add_subplot(gs[0, 2:])
    n_rec = 8
    rows = [x_test[:n_rec]] + [np.clip(models[s].reconstruct(x_test[:n_rec]), 0, 1) for s in SIGMAS]
    ax.imshow(image_grid(np.concatenate(rows), len(rows), n_rec), cmap="gray_r", vmin=0, vmax=1)
    ax.set_yticks(np.arange(len(rows)) * 30 + 15, ["data"] + [f"σ_x={s:g}" for s in SIGMAS], fontsize=8)
    ax.set_xticks([])
    ax.set_title("reconstructions: decoder mean at z = μ(x)", fontsize=10)
    for i, s in enumerate(SIGMAS):
        ax = fig.add_subplot(gs[1, i])
        samples = np.clip(models[s].sample(25, rng=np.random.default_rng(args.seed + 7), mean=True), 0, 1)
        ax.imshow(image_grid(samples, 5, 5), cmap="gray_r", vmin=0, vmax=1)
        ax.set_axis_off()
        r = results[s]
        ax.set_title(f"σ_x = {s:g} (β = {s * s:g}): decoder means\nof prior draws; "
                     f"‖x−x̂‖² {r['sq_err']:.1f}, KL {r['kl']:.1f}", fontsize=9)
    fig.suptitle(f"Gaussian decoder N(x; x̂(z), σ_x² I): 784-400-20 VAEs, {n_train} MNIST images (grey levels), "
                 f"{epochs} epoch(s) each.\nSame seed, σ_x = 0.1 vs (σ_x = 1, β = 0.01): ‖x−x̂‖² {eq['a']['sq_err']:.2f} vs "
                 f"{eq['b']['sq_err']:.2f}, KL {eq['a']['kl']:.2f} vs {eq['b']['kl']:.2f} nats", fontsize=10)
    common.save_figure(fig, args.out / "guide_sigma_x.png")
    for s in SIGMAS:
        r = results[s]
        print(f"sigma_x={s:<5g} beta-equivalent={s * s:<7g} squared error {r['sq_err']:8.2f}  KL {r['kl']:7.2f} nats  "
              f"active units {r['active']:2d}  -ELBO {r['neg_elbo']:9.2f}  ELBO-optimal sigma_x* {r['sigma_star']:.4f}")
    print(f"sigma_x=0.1 vs (sigma_x=1, beta=0.01), same seed: squared error {eq['a']['sq_err']:.3f} vs "
          f"{eq['b']['sq_err']:.3f}, KL {eq['a']['kl']:.3f} vs {eq['b']['kl']:.3f}; largest parameter difference {eq['max_abs_diff']:.2e} "
          f"(largest |parameter| {eq['max_abs_param']:.2f})")
    return {"results": results, "equivalence": eq}


def main(argv=None) -> dict:
    return run(common.parse_args(common.make_parser(__doc__.split("\n\n")[0]), argv))


if __name__ == "__main__":
    main()
