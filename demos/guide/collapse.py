r"""Posterior collapse and KL warm-up: which latent units does the ELBO switch off, and does warm-up save them?

Question (study notes 004, "make the posterior equal to the prior?"; 002, "KL as a
regularizer"). The ELBO is :math:`E_q[\log p_\theta(x|z)] - KL(q_\phi(z|x)\,\|\,p(z))` and the KL
is a sum over units, :math:`KL = \sum_j KL_j` with
:math:`KL_j = \frac12(\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)` (Kingma & Welling 2014,
appendix B). A unit pays :math:`KL_j` nats per example for what it tells the decoder. When the
decoder can explain x about as well without that unit, the optimum is
:math:`q(z_j|x) = p(z_j) = N(0, 1)` for every x: :math:`KL_j = 0`, the unit carries no
information, and its posterior has *collapsed* to the prior. Burda et al. 2016 (section 5.2)
count the units still in use by the activity :math:`A_j = \mathrm{Var}_x E_q[z_j] > 0.01`
(:func:`npvae.evaluate.active_units`).

A decoder "strong enough to collapse" is one whose likelihood rewards information in z
little. Here that is a Gaussian decoder with a fixed :math:`\sigma_x = 1` on grey-level MNIST:
:math:`-\log p(x|z) = \frac{D}{2}\log 2\pi + \|x - \hat x\|^2/2`, and since pixels lie in
[0, 1], perfect reconstructions would gain at most about 26 nats over the mean image, so a
nat of KL is expensive (the same mechanism as a powerful autoregressive decoder: the
decoder does well without z). See ``sigma_x.py`` for the σ_x sweep.

KL warm-up (Bowman et al. 2016, "Generating Sentences from a Continuous Space", sec. 3.1;
Sønderby et al. 2016, "Ladder Variational Autoencoders", sec. 2.2) trains with
:math:`E_q[\log p(x|z)] - \beta_t\,KL`, :math:`\beta_t = \min(1, t / T)` rising linearly from 0 to
1 over T steps (``TrainConfig(warmup_epochs=...)``, :meth:`npvae.Trainer.beta_at`), so units
get used before the KL price is paid in full.

Setup: a 784-400-20 ReLU VAE, Gaussian decoder with :math:`\sigma_x = 1`, grey-level targets
(``binarize="none"``), 10,000 training images, 30 epochs, Adam 1e-3, batch 128; once with no
warm-up and once with ``warmup_epochs=10``, from the same initialization. After every epoch,
on 1,000 test images: the KL per unit (:func:`demos.guide.traversals.kl_per_dimension`), the
active units and the test -ELBO (at β = 1). ``--quick``: 300 images, 2 epochs, warm-up 1.5.
Flags: ``--sigma-x``, ``--warmup``, ``--epochs``, ``--n-train``. Numbers: docs/guide_data/collapse.json.

Printed: per epoch, for both runs, the test -ELBO, the KL and the active units.
Figure: docs/figures/guide_collapse.png (KL per unit against epochs, as heat maps, for both
runs; active units and the total KL against epochs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from demos.guide import common
from demos.guide.traversals import kl_per_dimension
from npvae import VAE, Adam, TrainConfig, Trainer, evaluate
from npvae import data as npdata

Z_DIM = 20
SIGMA_X = 1.0


def train_tracked(train_x, x_test, *, epochs: int, warmup_epochs: float, seed: int, test_images=None,
                  sigma_x: float = SIGMA_X) -> dict:
    """Train a 784-400-20 Gaussian (default σ_x = 1) VAE on grey levels, measuring after every epoch.

    ``train_x``: uint8 (N, 784); ``x_test``: float (M, 784) grey levels in [0, 1]. Returns a
    dict of arrays over epochs: ``kl_per_dim`` (epochs, Z_DIM), ``active`` (epochs,),
    ``kl``, ``loss`` (test -ELBO at β = 1), ``beta`` (the KL weight at the epoch's end),
    nats per example.
    """
    model = VAE(784, Z_DIM, (400,), "relu", "gaussian", sigma_x=sigma_x, rng=np.random.default_rng(seed))
    config = TrainConfig(epochs=1, batch_size=128, warmup_epochs=warmup_epochs, binarize="none", seed=seed)
    trainer = Trainer(model, Adam(model.params, lr=1e-3), train_x, test_images, config,
                      rng=np.random.default_rng(seed), log=None)
    out = {k: [] for k in ("kl_per_dim", "active", "kl", "loss", "beta")}
    eval_rng = np.random.default_rng(seed + 2)
    for epoch in range(1, epochs + 1):
        trainer.config.epochs = epoch
        trainer.fit()                                            # one more epoch
        mu, logvar = model.encode(x_test)
        terms = model.forward(x_test, rng=eval_rng)
        out["kl_per_dim"].append(kl_per_dimension(mu, logvar))
        out["active"].append(evaluate.active_units(model, x_test))
        out["kl"].append(float(terms.metrics["kl"].mean()))
        out["loss"].append(terms.loss)
        out["beta"].append(trainer.beta_at(trainer.step - 1))
    return {k: np.array(v) for k, v in out.items()}


def run(args) -> dict:
    """Both runs, the printout, the figure and the JSON; returns {"no warm-up": ..., "warm-up ...": ...} (see :func:`train_tracked`)."""
    t0 = time.perf_counter()
    n_train, n_test, epochs, warm = (300, 100, 2, 1.5) if args.quick else (10_000, 1_000, 30, 10.0)
    n_train = args.n_train or n_train
    epochs = args.epochs or epochs
    warm = args.warmup if args.warmup is not None else warm
    sigma_x = args.sigma_x if args.sigma_x is not None else SIGMA_X
    train_x, _, test_x, _ = common.load_subset(n_train, n_test, seed=args.seed)
    x_test = npdata.to_float(test_x)
    runs = {}
    for name, w in (("no warm-up", 0.0), (f"warm-up {warm:g} epochs", warm)):
        with common.Timer(name):
            runs[name] = train_tracked(train_x, x_test, epochs=epochs, warmup_epochs=w, seed=args.seed,
                                       sigma_x=sigma_x)
    for e in range(epochs):
        print(f"epoch {e + 1:2d}: " + "; ".join(
            f"{name}: beta {r['beta'][e]:.2f}, test -ELBO {r['loss'][e]:.2f}, KL {r['kl'][e]:.2f}, "
            f"active {r['active'][e]}" for name, r in runs.items()))
    draw(runs, args.out / "guide_collapse.png", n_train=n_train, n_test=n_test, sigma_x=sigma_x)
    none, warmed = runs.values()
    first_off = [e + 1 for e in range(epochs) if none["active"][e] < Z_DIM]
    summary = {"first_epoch_below_all_active": first_off[0] if first_off else None,
               "final_active": {"none": int(none["active"][-1]), "warmup": int(warmed["active"][-1])},
               "final_kl": {"none": float(none["kl"][-1]), "warmup": float(warmed["kl"][-1])},
               "final_neg_elbo": {"none": float(none["loss"][-1]), "warmup": float(warmed["loss"][-1])},
               "active_at_epoch_5": {"none": int(none["active"][min(5, epochs) - 1]),
                                     "warmup": int(warmed["active"][min(5, epochs) - 1])}}
    common.write_numbers(args, "collapse", {
        "n_train": n_train, "n_test": n_test, "epochs": epochs, "warmup_epochs": warm, "sigma_x": sigma_x,
        "runs": {("none" if i == 0 else "warmup"): {k: r[k] for k in ("active", "kl", "loss", "beta")}
                 for i, r in enumerate(runs.values())}, "summary": summary}, seconds=time.perf_counter() - t0)
    return runs


def draw(runs: dict, path, *, n_train: int, n_test: int, sigma_x: float = SIGMA_X) -> Path:
    """Top: KL per unit (rows, sorted by the final KL of each run) against epochs; bottom: active units, total KL."""
    with common.guide_style():
        fig = Figure(figsize=(11, 8.4), layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(f"Posterior collapse: 784-400-{Z_DIM} VAE, Gaussian decoder σ_x = {sigma_x:g}, grey-level MNIST "
                     f"({n_train} images);\nmeasured on {n_test} test images after each epoch")
        axes = fig.subplots(2, 2)
        vmax = max(float(r["kl_per_dim"].max()) for r in runs.values())
        for ax, (name, r) in zip(axes[0], runs.items()):
            kl = r["kl_per_dim"]                                    # (epochs, units)
            order = np.argsort(-kl[-1])
            im = ax.imshow(kl[:, order].T, aspect="auto", cmap=common.HEAT_CMAP, vmin=0, vmax=vmax,
                           interpolation="nearest", extent=(0.5, kl.shape[0] + 0.5, Z_DIM + 0.5, 0.5))
            ax.set(title=f"{name}: KL per unit (nats)\n{r['active'][-1]} of {Z_DIM} active at the end",
                   xlabel="epoch", ylabel="unit (sorted by final KL)")
            ax.set_yticks(range(1, Z_DIM + 1, 2))
            fig.colorbar(im, ax=ax, label="mean KL_j over test images (nats)")
        ax_au, ax_kl = axes[1]
        for (name, r), c in zip(runs.items(), (common.COLORS["kl"], common.COLORS["q"])):
            e = np.arange(1, len(r["active"]) + 1)
            ax_au.plot(e, r["active"], "o-", color=c, ms=3, label=name)
            ax_kl.plot(e, r["kl"], "o-", color=c, ms=3, label=f"{name}: KL")
            if r["beta"].min() < 1:
                ax_kl.plot(e, r["beta"] * max(r["kl"].max(), 1e-9), ":", color=c,
                           label=f"{name}: β_t (1 = top)")
        ax_au.set(title="active units (Var_x E_q[z_j] > 0.01)", xlabel="epoch",
                  ylabel="active units", ylim=(0, Z_DIM + 1))
        ax_kl.set(title="total KL(q(z|x) ‖ p(z)), test images", xlabel="epoch", ylabel="nats per example")
        for ax in (ax_au, ax_kl):
            ax.grid(alpha=0.3, lw=0.5)
            ax.legend(fontsize=9.5)
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sigma-x", type=float, default=None, help=f"the decoder's fixed σ_x (default {SIGMA_X:g})")
    p.add_argument("--warmup", type=float, default=None,
                   help="epochs of the KL warm-up of the second run (default 10; --quick 1.5)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of each run (default 30; --quick 2)")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 10000; --quick 300)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
