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
images (small N, so that training without a prior overfits), AdamW lr 1e-3 with λ ∈ {0, 0.01, 0.1, 1, 10, 100}
decaying every parameter (``--quick``: N = 300, 1 epoch, λ ∈ {0, 1, 100}).
:func:`log_px` estimates log p(x) by the IWAE bound at k = 100 (``VAE.iwae_bound``) on 500
test images and on the 500 training images. Printed, per λ: train and test log p(x)
(nats per image), the naive prior std :math:`1/\sqrt{\lambda N}`, the median and 10-90 % range
of the AdamW-effective :math:`s_i`, and the RMS of the trained weights.
Figure: docs/figures/guide_map.png.

Flags: ``--lambdas``, ``--n-train``, ``--epochs``. λ = 0 is no prior: it maximizes the ELBO
alone (not the likelihood, which the VAE cannot maximize directly). The figure's error bars
are two standard errors of the IWAE estimate over the evaluated images, and its title states
the verdict, computed from the numbers: whether any λ > 0 raises the test log p(x) by more
than two paired standard errors (:func:`summarize`). Numbers: docs/guide_data/map_prior.json.
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
        raise ValueError(f"opt.weight_decay: expected > 0 (λ = 0 means no prior), got {opt.weight_decay}")
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


def log_px(model: VAE, x: np.ndarray, k: int, *, rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """Mean IWAE bound :math:`\\mathcal L_k` (≤ log p(x), tight as k grows) of binary float images ``x`` (N, 784),
    its standard error over the images (s.d. / √N), and the (N,) per-image bounds; nats per image."""
    b = np.concatenate([model.iwae_bound(x[i:i + 250], k, rng=rng) for i in range(0, len(x), 250)])
    return float(np.mean(b)), float(np.std(b, ddof=1) / np.sqrt(len(b))), b


def run(args) -> dict:
    t0 = time.perf_counter()
    n_train, epochs, lams, n_eval, k = (300, 1, (0.0, 1.0, 100.0), 100, 10) if args.quick else \
        (500, 100, LAMBDAS, 500, 100)
    n_train = args.n_train or n_train
    epochs = args.epochs or epochs
    lams = tuple(args.lambdas) if args.lambdas else lams
    train_x, _, test_x, _ = common.load_subset(n_train, n_eval, seed=args.seed)
    # the same fixed binarization the Trainer uses for "static" (seed), and a fixed draw of the test set
    xtr = npdata.binarize_static(train_x, seed=args.seed)[: n_eval].astype(np.float32) / 255.0
    xte = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    rng = np.random.default_rng(args.seed + 2)
    rows, test_values = [], {}
    for lam in lams:
        with common.Timer(f"lambda = {lam:g}"):
            model, opt = train_map(train_x, lam, epochs=epochs, seed=args.seed)
            (tr, tr_se, _), (te, te_se, per_image) = log_px(model, xtr, k, rng=rng), log_px(model, xte, k, rng=rng)
            test_values[lam] = per_image
            row = {"lambda": lam, "train": tr, "train_se": tr_se, "test": te, "test_se": te_se,
                   "naive_std": naive_prior_std(lam, n_train),
                   "weight_rms": float(np.sqrt(np.mean(np.concatenate(
                       [p.ravel().astype(np.float64) ** 2 for n, p in model.params.items() if n.endswith(".W")]))))}
            if lam > 0:
                row["eff_std"] = np.percentile(effective_prior_std(opt, n_train), [10, 50, 90])
            rows.append(row)
    summary = summarize(rows, test_values)
    draw(rows, summary, args.out / "guide_map.png", n_train=n_train, epochs=epochs, k=k)
    for r in rows:
        eff = (f"AdamW-effective s_i median {r['eff_std'][1]:.3g} (10-90%: {r['eff_std'][0]:.3g}-{r['eff_std'][2]:.3g})"
               if "eff_std" in r else "no prior (maximizes the ELBO alone)")
        print(f"lambda={r['lambda']:<6g} train log p(x) {r['train']:8.2f} ± {r['train_se']:.2f}  test log p(x) "
              f"{r['test']:8.2f} ± {r['test_se']:.2f}  naive prior std 1/sqrt(lambda N) {r['naive_std']:.3g}  {eff}  "
              f"weight RMS {r['weight_rms']:.3g}")
    print(summary["verdict"])
    common.write_numbers(args, "map_prior", {"n_train": n_train, "epochs": epochs, "k": k, "n_eval": n_eval,
                                             "rows": rows, "summary": summary}, seconds=time.perf_counter() - t0)
    return {"rows": rows, "summary": summary}


def summarize(rows: list[dict], test_values: dict) -> dict:
    """The best λ on the test images, the λ = 0 numbers, and the verdict: does any λ > 0 improve the
    test log p(x) by more than two standard errors of the difference? ``test_values``: λ -> the (N,)
    per-image test bounds; the difference is paired (the same test images), its standard error is
    the s.d. of the per-image differences / √N."""
    base = next((r for r in rows if r["lambda"] == 0), None)
    best = max(rows, key=lambda r: r["test"])
    out = {"best_lambda": best["lambda"], "best_test": best["test"]}
    if base is not None:
        out.update(zero_train=base["train"], zero_test=base["test"], zero_test_se=base["test_se"],
                   zero_gap=base["train"] - base["test"])
        gains = {f"{r['lambda']:g}": r["test"] - base["test"] for r in rows if r["lambda"] > 0}
        d = {r["lambda"]: test_values[r["lambda"]] - test_values[0.0] for r in rows if r["lambda"] > 0}
        ses = {f"{lam:g}": float(np.std(v, ddof=1) / np.sqrt(len(v))) for lam, v in d.items()}
        out.update(gain_over_zero=gains, gain_se=ses)
        helps = [lam for lam, g in gains.items() if g > 2 * ses[lam]]
        out["improves"] = helps
        out["verdict"] = ("no λ improves test log p(x) here" if not helps else
                          f"λ = {', '.join(helps)} improves test log p(x) by more than two standard errors")
    else:
        out["improves"], out["verdict"] = [], "(no λ = 0 run to compare with)"
    return out


def draw(rows: list[dict], summary: dict, path, *, n_train: int, epochs: int, k: int) -> Path:
    """Left: train and test log p(x) (± standard error) at each λ, equally spaced; right: the prior widths."""
    with common.guide_style():
        fig = Figure(figsize=(11, 5.2), layout="constrained")
        ax, ax2 = fig.subplots(1, 2, width_ratios=(1, 1.05))
        pos = np.arange(len(rows))
        for key, marker, colour, label in (("train", "o", common.COLORS["train"], "training images"),
                                           ("test", "s", common.COLORS["test"], "test images")):
            ax.errorbar(pos, [r[key] for r in rows], yerr=[2 * r[f"{key}_se"] for r in rows], fmt=marker + "-",
                        color=colour, capsize=4, ms=5, label=f"{label} (± 2 s.e.)")
        for i, r in enumerate(rows):
            ax.annotate(f"{r['test']:.1f}", (i, r["test"]), textcoords="offset points", xytext=(-6, -15),
                        ha="right", fontsize=9.5, color=common.COLORS["test"])
        ax.set_xticks(pos, [("0\nno prior" if r["lambda"] == 0 else f"{r['lambda']:g}") for r in rows])
        ax.set_xlim(-0.7, len(rows) - 0.5)
        ax.set_xlabel("AdamW weight decay λ per step (θ ← θ − lr·λ·θ)")
        ax.set_ylabel(f"log p(x) ≈ IWAE bound, k = {k}\n(nats per image)")
        ax.set_title(f"{n_train} training images, {epochs} epochs, 784-400-20 VAE:\n{summary['verdict']} "
                     "(paired, 2 s.e.)")
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3, lw=0.5)
        pos_rows = [r for r in rows if r["lambda"] > 0]
        if pos_rows:
            lp = np.array([r["lambda"] for r in pos_rows])
            ax2.loglog(lp, [r["naive_std"] for r in pos_rows], "k--", label="coupled L2: s = 1/√(λN)")
            eff = np.array([r["eff_std"] for r in pos_rows])
            ax2.loglog(lp, eff[:, 1], "o-", color="tab:orange", label="AdamW: median s_i")
            ax2.fill_between(lp, eff[:, 0], eff[:, 2], color="tab:orange", alpha=0.25, label="AdamW: 10-90 % of s_i")
            ax2.loglog(lp, [r["weight_rms"] for r in pos_rows], "^-", color="tab:green",
                       label="RMS of the trained weights")
            ax2.set_ylim(1e-5, None)                     # room for the legend below the lines
        ax2.set_xlabel("λ (log scale)")
        ax2.set_ylabel("std s of the prior N(0, s²) per weight (log)")
        ax2.set_title("the Gaussian prior each λ corresponds to\n(s_i = 1/√(λN(√v̂_i + ε)) for AdamW)")
        ax2.legend(loc="lower left", fontsize=9.5)
        ax2.grid(alpha=0.3, lw=0.5)
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--lambdas", type=float, nargs="+", default=None,
                   help=f"AdamW weight decays to train (default {' '.join(f'{x:g}' for x in LAMBDAS)})")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 500; --quick 300)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 100; --quick 1)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
