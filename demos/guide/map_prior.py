r"""MLE or MAP? Weight decay as a Gaussian prior on the weights, and test log p(x) against it.

Question. Maximum likelihood picks :math:`\theta` maximising :math:`\sum_{n=1}^N \log p_\theta(x_n)`
(for a VAE, its lower bound, the ELBO); MAP adds a prior, :math:`\sum_n \log p_\theta(x_n) + \log p(\theta)`
(Kingma & Welling 2014, section 2.1 "ML or MAP"; section 5 uses "a small weight decay term
corresponding to a prior p(θ) = N(0, I)"). With :math:`p(\theta) = N(0, s^2 I)`,
:math:`\log p(\theta) = -\|\theta\|^2/(2s^2) + \text{const}`. The Trainer minimises the MEAN loss over
the N training examples, so dividing the MAP objective by N:

.. math::  \frac1N\sum_n(-\mathcal L_n) + \frac{\|\theta\|^2}{2 s^2 N}, \qquad
           \text{gradient of the penalty} = \frac{\theta}{s^2 N}.

* L2 added to the gradient (coupled; SGD weight decay, or Adam with L2): a penalty gradient
  :math:`\lambda\theta` is exactly this prior with :math:`\lambda = 1/(s^2 N)`, i.e.
  :math:`p(\theta) = N(0, 1/(\lambda N))`, and the stationary points are those of the MAP
  objective (whatever the optimizer's preconditioning, since the gradient is zero there).
* AdamW (decoupled, Loshchilov & Hutter 2019; ``npvae.AdamW``, PyTorch's convention):
  :math:`\theta \leftarrow (1 - \text{lr}\,\lambda)\theta - \text{lr}\,\hat m/(\sqrt{\hat v} + \epsilon)`.
  A stationary point has :math:`\hat m = \nabla = -\lambda(\sqrt{\hat v} + \epsilon)\odot\theta`: the
  stationary point of the MAP objective with a per-weight prior
  :math:`N(0, s_i^2)`, :math:`s_i^2 = 1/(\lambda N(\sqrt{\hat v_i} + \epsilon))`, whose width depends
  on each weight's gradient scale :math:`\sqrt{\hat v_i}` (and lr cancels). So AdamW is MAP with a
  Gaussian prior only in this data-dependent sense; the naive reading "N(0, 1/(λN))" is off by
  the factor :math:`\sqrt{\hat v_i}` (:func:`effective_prior_std` computes :math:`s_i` from the
  trained optimizer's :math:`\hat v = v / (1 - \beta_2^t)`).

Setup: 784-400-20 Bernoulli VAEs trained 100 epochs on N = 500 statically binarized MNIST
images (small N, so that MLE overfits), AdamW lr 1e-3 with λ ∈ {0, 0.01, 0.1, 1, 10, 100}
decaying every parameter (``--quick``: N = 300, 1 epoch, λ ∈ {0, 1, 100}).
:func:`log_px` estimates log p(x) by the IWAE bound at k = 100 (``VAE.iwae_bound``) on 500
test images and on the 500 training images. Printed, per λ: train and test log p(x)
(nats per image), the naive prior std :math:`1/\sqrt{\lambda N}`, the median and 10-90 % range
of the AdamW-effective :math:`s_i`, and the RMS of the trained weights.
Figure: docs/figures/guide_map.png.

Result at full size (seed 0): MLE overfits (train ≈ -108, test ≈ -131 nats), yet no λ improves
the test log p(x) (λ ≤ 0.1 within 0.2 nats of MLE, λ = 1 is 4 nats worse, λ ≥ 10 underfits badly):
a Gaussian prior on every weight is not the regulariser this overfitting needs here.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure

from demos.guide import common
from npvae import VAE, AdamW, TrainConfig, Trainer
from npvae import data as npdata

LAMBDAS = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)


def naive_prior_std(lam: float, n: int) -> float:
    r"""The std of the prior N(0, s²) that a coupled L2 gradient λθ on the mean loss over n examples means: :math:`s = 1/\sqrt{\lambda n}` (inf for λ = 0)."""
    return float("inf") if lam == 0 else 1.0 / np.sqrt(lam * n)


def effective_prior_std(opt: AdamW, n: int) -> np.ndarray:
    r"""Per-weight std :math:`s_i = 1/\sqrt{\lambda n(\sqrt{\hat v_i} + \epsilon)}` of the prior whose MAP stationary point AdamW's is.

    ``opt``: a trained :class:`npvae.AdamW` (λ = ``opt.weight_decay`` > 0); ``n``: training
    set size. :math:`\hat v = v/(1-\beta_2^t)` is Adam's bias-corrected second moment. Returns a
    flat float64 array over every decayed parameter. Raises ValueError if λ = 0 (no prior).
    """
    if opt.weight_decay <= 0:
        raise ValueError(f"opt.weight_decay: expected > 0 (λ = 0 is MLE, no prior), got {opt.weight_decay}")
    b2 = opt.betas[1]
    v_hat = np.concatenate([opt.v[k].ravel().astype(np.float64) for k in sorted(opt.decayed)]) / (1 - b2 ** opt.t)
    return 1.0 / np.sqrt(opt.weight_decay * n * (np.sqrt(v_hat) + opt.eps))


def train_map(train_x, lam: float, *, epochs: int, seed: int) -> tuple[VAE, AdamW]:
    """A 784-400-20 Bernoulli VAE trained with AdamW(lr=1e-3, weight_decay=lam) on statically binarized uint8 ``train_x``."""
    model = VAE(784, 20, (400,), rng=np.random.default_rng(seed))
    opt = AdamW(model.params, lr=1e-3, weight_decay=lam)
    Trainer(model, opt, train_x, None, TrainConfig(epochs=epochs, binarize="static", seed=seed),
            rng=np.random.default_rng(seed), log=None).fit()
    return model, opt


def log_px(model: VAE, x: np.ndarray, k: int, *, rng: np.random.Generator) -> float:
    """Mean IWAE bound :math:`\\mathcal L_k` (≤ log p(x), tight as k grows) of binary float images ``x`` (N, 784), nats per image."""
    return float(np.mean(np.concatenate([model.iwae_bound(x[i:i + 250], k, rng=rng) for i in range(0, len(x), 250)])))


def run(args) -> dict:
    n_train, epochs, lams, n_eval, k = (300, 1, (0.0, 1.0, 100.0), 100, 10) if args.quick else \
        (500, 100, LAMBDAS, 500, 100)
    train_x, _, test_x, _ = common.load_subset(n_train, n_eval, seed=args.seed)
    # the same fixed binarization the Trainer uses for "static" (seed), and a fixed draw of the test set
    xtr = npdata.binarize_static(train_x, seed=args.seed)[: n_eval].astype(np.float32) / 255.0
    xte = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    rng = np.random.default_rng(args.seed + 2)
    rows = []
    for lam in lams:
        with common.Timer(f"lambda = {lam:g}"):
            model, opt = train_map(train_x, lam, epochs=epochs, seed=args.seed)
            row = {"lambda": lam, "train": log_px(model, xtr, k, rng=rng), "test": log_px(model, xte, k, rng=rng),
                   "naive_std": naive_prior_std(lam, n_train),
                   "weight_rms": float(np.sqrt(np.mean(np.concatenate(
                       [p.ravel().astype(np.float64) ** 2 for n, p in model.params.items() if n.endswith(".W")]))))}
            if lam > 0:
                s = effective_prior_std(opt, n_train)
                row["eff_std"] = np.percentile(s, [10, 50, 90])
            rows.append(row)

    lam_plot = np.array([r["lambda"] for r in rows])
    fig = Figure(figsize=(13, 4.8))
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(lam_plot, [r["train"] for r in rows], "o-", color="tab:gray", label="training images")
    ax.plot(lam_plot, [r["test"] for r in rows], "s-", color="tab:blue", label="test images")
    best = max(rows, key=lambda r: r["test"])
    ax.annotate(f"best test {best['test']:.1f}\nλ = {best['lambda']:g}", (best["lambda"], best["test"]),
                textcoords="offset points", xytext=(0, -38), ha="center", fontsize=8,
                arrowprops=dict(arrowstyle="->", lw=0.6))
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("AdamW weight decay λ  (0 = MLE)")
    ax.set_ylabel(f"log p(x) ≈ IWAE bound, k = {k} (nats per image)")
    ax.set_title(f"MLE vs MAP: {n_train} training images, {epochs} epochs, 784-400-20 VAE", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    pos = [r for r in rows if r["lambda"] > 0]
    lp = np.array([r["lambda"] for r in pos])
    ax2.loglog(lp, [r["naive_std"] for r in pos], "k--", label="coupled L2: s = 1/√(λN)")
    eff = np.array([r["eff_std"] for r in pos])
    ax2.loglog(lp, eff[:, 1], "o-", color="tab:orange", label="AdamW: median s_i = 1/√(λN(√v̂_i+ε))")
    ax2.fill_between(lp, eff[:, 0], eff[:, 2], color="tab:orange", alpha=0.25, label="AdamW: 10-90 % of s_i")
    ax2.loglog(lp, [r["weight_rms"] for r in pos], "^-", color="tab:green", label="RMS of the trained weights")
    ax2.set_xlabel("λ")
    ax2.set_ylabel("prior std s of N(0, s²) per weight")
    ax2.set_title("the Gaussian prior each λ corresponds to (MAP stationary point)", fontsize=10)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both", lw=0.4)
    fig.tight_layout()
    common.save_figure(fig, args.out / "guide_map.png")
    for r in rows:
        eff = (f"AdamW-effective s_i median {r['eff_std'][1]:.3g} (10-90%: {r['eff_std'][0]:.3g}-{r['eff_std'][2]:.3g})"
               if "eff_std" in r else "no prior (MLE)")
        print(f"lambda={r['lambda']:<6g} train log p(x) {r['train']:8.2f}  test log p(x) {r['test']:8.2f}  "
              f"naive prior std 1/sqrt(lambda N) {r['naive_std']:.3g}  {eff}  weight RMS {r['weight_rms']:.3g}")
    return {"rows": rows}


def main(argv=None) -> dict:
    return run(common.parse_args(common.make_parser(__doc__.split("\n\n")[0]), argv))


if __name__ == "__main__":
    main()
