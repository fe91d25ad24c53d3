r"""VAE vs AE: is an autoencoder a generative model? Prior draws through each decoder, and both latent spaces.

Question (study notes 003, "vs AE", "is it a generative model", "why is it better than an
AE"; 001, "why not just pair random z with x"). Both models have the same encoder and
decoder MLPs and the same Bernoulli decoder :math:`p_\theta(x|z)`; they differ in the loss:

* AE (:class:`npvae.models.AE`): :math:`z = f_\phi(x)`, a point; loss
  :math:`-\log p_\theta(x\,|\,f_\phi(x))`. Nothing says where the codes of the data lie.
* VAE (:class:`npvae.models.VAE`): :math:`q_\phi(z|x) = N(\mu(x), \mathrm{diag}\,\sigma^2(x))`;
  loss :math:`-E_q[\log p_\theta(x|z)] + KL(q_\phi(z|x)\,\|\,N(0, I))` (the negative ELBO).
  The KL pulls every posterior towards the prior, so the *aggregate posterior*
  :math:`q(z) = \frac1N\sum_n q(z|x_n)` roughly fills N(0, I), and the decoder is trained on
  z drawn from it.

A generative model is one you can draw new x from: ancestral sampling
:math:`z\sim p(z)`, then :math:`x\sim p_\theta(x|z)` (``VAE.sample``), with a likelihood
:math:`p(x) = \int p_\theta(x|z)p(z)\,dz` that can be evaluated (``VAE.log_likelihood``). The AE
has no p(z): decoding N(0, I) draws through it (``AE.decode``) is possible, but those z fall
where no training code lies, and the decodings are mostly not digits.

Setup: a 784-400-2 ReLU AE and VAE (z_dim 2, so the latent spaces can be drawn as they
are), Bernoulli decoders, each trained 15 epochs on 10,000 MNIST training images
(dynamically binarized, Adam 1e-3, batch 128, the same initialization seed). The same 64
draws :math:`z\sim N(0, I)` are decoded by both decoders (means of p(x|z)); the codes of
2,000 test images (the AE's z, the VAE's posterior means) are scattered, coloured by digit,
with the prior's 1σ and 2σ circles. ``--quick``: 300 images, 1 epoch, 200 test images.
Flags: ``--epochs``, ``--n-train``. Numbers: docs/guide_data/vae_vs_ae.json.

Printed: each model's test reconstruction term :math:`-\log p(x|z)` (at the code / posterior
mean), the spread of its codes (std per dimension) and the fraction of test codes within
radius 2 of the origin, where 86.5% of the prior's draws fall (:func:`inside_prior_fraction`):
the part of the data that sampling the prior can ever reach.
Figure: docs/figures/guide_vae_vs_ae.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import matplotlib
import matplotlib.colors
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from demos.guide import common
from npvae import distributions as dist
from npvae.models import AE, VAE
from npvae.plots import image_grid

Z_DIM = 2
N_DRAWS = 64


def inside_prior_fraction(codes: np.ndarray, radius: float = 2.0) -> float:
    """Fraction of the rows of ``codes`` (N, Z) within ``radius`` of 0: the region where prior draws
    fall (for Z = 2, a N(0, I) draw lies within radius 2 with probability 1 - exp(-2) = 86.5%).
    Returns a float in [0, 1]."""
    return float(np.mean(np.linalg.norm(codes.astype(np.float64), axis=1) < radius))


def run(args) -> dict:
    """Train both models, decode the same prior draws, measure, draw, write the JSON; returns the numbers."""
    t0 = time.perf_counter()
    n_train, n_test, epochs = (300, 200, 1) if args.quick else (10_000, 2_000, 15)
    epochs = args.epochs or epochs
    n_train = args.n_train or n_train
    train_x, _, test_x, test_y = common.load_subset(n_train, n_test, seed=args.seed)
    x_test = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    models = {"AE": AE(784, Z_DIM, (400,), rng=np.random.default_rng(args.seed)),
              "VAE": VAE(784, Z_DIM, (400,), rng=np.random.default_rng(args.seed))}
    z_prior = dist.sample_eps((N_DRAWS, Z_DIM), rng=np.random.default_rng(args.seed + 3))   # the same draws for both
    results = {}
    for name, model in models.items():
        with common.Timer(f"{name}: train"):
            common.train_model(model, train_x, epochs=epochs, seed=args.seed)
        codes = model.posterior_means(x_test)                    # AE: z = f(x); VAE: mu(x)
        rec = -model.likelihood.log_prob(x_test, model.decoder.forward(codes))  # -log p(x | code), (N,)
        results[name] = dict(codes=codes, decoded=model.decode(z_prior), reconstruction=float(rec.mean()),
                             code_std=codes.std(0), code_mean=codes.mean(0), inside=inside_prior_fraction(codes),
                             code_max=float(np.abs(codes).max()))
        r = results[name]
        print(f"{name}: test -log p(x|z at the code) {r['reconstruction']:.2f} nats; code std per dim "
              f"{[round(float(s), 2) for s in r['code_std']]}, mean {[round(float(m), 2) for m in r['code_mean']]}; "
              f"largest |code| {r['code_max']:.1f}; test codes within "
              f"radius 2 (where 86.5% of prior draws fall): {100 * r['inside']:.0f}%")
    draw(results, z_prior, test_y, args.out / "guide_vae_vs_ae.png", n_train=n_train, epochs=epochs)
    common.write_numbers(args, "vae_vs_ae", {
        "n_train": n_train, "n_test": n_test, "epochs": epochs, "prior_inside": 1 - float(np.exp(-2.0)),
        **{name: {k: r[k] for k in ("reconstruction", "code_std", "code_mean", "inside", "code_max")}
           for name, r in results.items()}}, seconds=time.perf_counter() - t0)
    return results


def draw(results: dict, z_prior, labels, path, *, n_train: int, epochs: int) -> Path:
    """Top: each decoder's means for the same 64 prior draws; bottom: each model's test codes by digit."""
    with common.guide_style():
        fig = Figure(figsize=(11, 10.6), layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(f"AE vs VAE: the same 784-400-{Z_DIM} networks and Bernoulli decoder ({n_train} images, "
                     f"{epochs} epochs).\nTop: decoder means E[x|z] (pixel probabilities, not draws) for the SAME 64 "
                     "z ~ N(0, I).\nBottom: the codes of test images, one colour per digit, and the prior's 1σ, 2σ "
                     "circles.")
        axes = fig.subplots(2, 2, height_ratios=(1, 1.08))
        palette = np.array([matplotlib.colors.to_rgb(c) for c in common.DIGIT_COLORS])
        for j, (name, r) in enumerate(results.items()):
            ax = axes[0, j]
            ax.imshow(image_grid(r["decoded"], 8, 8, pad=2, pad_value=0.3), cmap=common.IMAGE_CMAP, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_axis_off()
            how = "no prior: N(0, I) is a guess" if name == "AE" else "z ~ p(z) = N(0, I)"
            ax.set_title(f"{name}: decoder means of p(x|z), {how};\n"
                         f"{100 * r['inside']:.0f}% of the test codes lie where these draws fall (|z| < 2)")
            ax = axes[1, j]
            codes = r["codes"].astype(np.float64)
            order = np.random.default_rng(0).permutation(len(codes))
            ax.scatter(codes[order, 0], codes[order, 1], c=palette[labels[order]], s=7, linewidths=0,
                       antialiased=False)
            ax.scatter(z_prior[:, 0], z_prior[:, 1], marker="x", c="black", s=22, lw=1.2)
            for radius in (1, 2):
                ax.add_patch(Circle((0, 0), radius, fill=False, ls="--", color="black", lw=1))
            code_name = "z = encoder(x)" if name == "AE" else "mean of q(z|x)"
            ax.set(title=f"{name}: test codes ({code_name})\ns.d. per axis "
                         f"{', '.join(f'{s:.2f}' for s in r['code_std'])}; "
                         f"−log p(x|z at the code) = {r['reconstruction']:.1f} nats",
                   xlabel="z₁", ylabel="z₂", aspect="equal")
            ax.grid(alpha=0.3, lw=0.5)
            if j == 1:
                handles = [Line2D([], [], marker="o", ls="", color=palette[d], label=str(d)) for d in range(10)]
                handles.append(Line2D([], [], marker="x", ls="", color="black", label="the 64\nprior draws"))
                ax.legend(handles=handles, title="digit", loc="center left", bbox_to_anchor=(1.01, 0.5),
                          frameon=False)
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None, help="training epochs of each model (default 15; --quick 1)")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 10000; --quick 300)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
