r"""A learned prior: the VampPrior against N(0, I) on a 2-D latent space, its pseudo-inputs and the aggregate posterior.

Question. The ELBO averaged over the data, :math:`\frac1N\sum_n E_{q(z|x_n)}[\log p(x_n|z)] - KL`, is
largest, for fixed encoder and decoder, when the prior equals the *aggregate posterior*
:math:`q(z) = \frac1N\sum_n q(z|x_n)` (Hoffman & Johnson 2016; Tomczak & Welling 2018, section 3).
With p(z) = N(0, I) the two differ: q(z) has *holes*, regions where the prior puts mass and
no data's posterior does, and ancestral samples drawn there decode to non-digits. The
VampPrior (:class:`npvae.models.vamp_vae.VampVAE`) sets the prior to a mixture of the
encoder's own posteriors, :math:`p(z) = \frac1K\sum_k q(z|u_k)`, at K learned pseudo-inputs
:math:`u_k\in[0,1]^{784}`: a prior that can follow q(z).

Setup: two 784-400-2 ReLU models with Bernoulli decoders and the same initial networks,
each trained 20 epochs on 10,000 MNIST training images (dynamically binarized, Adam 1e-3,
batch 128): a :class:`npvae.models.VAE` (prior N(0, I)) and a VampVAE with K = 50
pseudo-inputs. ``--quick``: 300 images, 1 epoch, 200 test images, K = 10. Flags for
exercises: ``--n-pseudo``, ``--epochs`` (any flag changed writes to the scratch folder, see
:func:`demos.guide.common.parse_args`).

Measured on 2,000 test images (one fixed binarization):

* the test ELBO, nats per image (averaged over 10 draws of eps; the VAE's KL in closed form,
  the VampVAE's at the sample), with its standard error over the images, and the difference
  VampVAE - VAE paired over the same images (``vamp_minus_vae_elbo``);
* ``aggregate_inside_prior``: the fraction of draws from q(z) (one z ~ q(z|x_n) per test
  image) inside the prior's 90 % highest-density region (the region {z : p(z) > t} holding
  90 % of the prior's mass, t found from 20,000 prior draws): 0.9 if q(z) = p(z);
* ``prior_in_holes``: the fraction of 5,000 prior draws *outside* the aggregate posterior's
  90 % highest-density region (q(z) evaluated exactly as the mixture of the 2,000 test
  posteriors): 0.1 if q(z) = p(z), more when the prior puts mass where no data lies.

Figure: docs/figures/guide_vampprior.png. (a) The VampVAE's pseudo-inputs :math:`u_k` and
their decodings (the mean of p(x|z) at the mean of :math:`q(z|u_k)`). (b) For each model the
posterior means of the test images, coloured by digit, over the contours of its prior's
density, with the prior's 90 % region dashed. Numbers: docs/guide_data/vampprior.json
(:func:`demos.guide.common.write_numbers`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import matplotlib.colors
import matplotlib.patches
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.special import logsumexp

from demos.guide import common
from npvae import distributions as dist
from npvae.models import VAE
from npvae.models.vamp_vae import VampVAE
from npvae.plots import image_grid

Z_DIM = 2
HIDDEN = (400,)
MASS = 0.9                      # the highest-density regions hold this much of their distribution's mass
N_PRIOR_THRESHOLD = 20_000      # prior draws that locate the prior's 90 % region
N_PRIOR_HOLES = 5_000           # prior draws tested against the aggregate posterior's region
N_ELBO_DRAWS = 10


def log_gaussian_mixture(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray, *, block: int = 500) -> np.ndarray:
    r""":math:`\log\frac1M\sum_m N(z; \mu_m, \mathrm{diag}\,e^{\mathrm{logvar}_m})`: z (n, Z) -> (n,) float64.

    ``mu``, ``logvar``: the M components, (M, Z) each.

    scipy's logsumexp over the components, ``block`` rows of z at a time (an (block, M, Z) temporary).
    """
    z, mu, logvar = (np.asarray(a, dtype=np.float64) for a in (z, mu, logvar))
    out = [logsumexp(dist.gaussian_log_prob(z[i:i + block, None], mu[None], logvar[None]), axis=1)
           for i in range(0, len(z), block)]
    return np.concatenate(out) - np.log(len(mu))


def hpd_threshold(log_density_at_own_draws: np.ndarray, mass: float = MASS) -> float:
    """The log density t with P(log p(z) > t) = ``mass`` under p, from draws of p itself (a quantile)."""
    return float(np.quantile(log_density_at_own_draws, 1.0 - mass))


class PriorView:
    """A model's prior as the figure needs it: ``log_density(z)`` (n, 2) -> (n,) float64, ``draw(n, rng)`` -> (n, 2)."""

    def __init__(self, model) -> None:
        self.model = model
        if isinstance(model, VampVAE):
            mu, logvar = model.encode(model.pseudo_inputs)            # the K components q(z|u_k)
            self.mu, self.logvar = mu.astype(np.float64), logvar.astype(np.float64)

    def log_density(self, z: np.ndarray) -> np.ndarray:
        if isinstance(self.model, VampVAE):
            return log_gaussian_mixture(z, self.mu, self.logvar)
        return dist.standard_normal_log_prob(np.asarray(z, dtype=np.float64))

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if isinstance(self.model, VampVAE):
            k = rng.integers(0, len(self.mu), size=n)
            return self.mu[k] + np.exp(0.5 * self.logvar[k]) * rng.standard_normal((n, Z_DIM))
        return rng.standard_normal((n, Z_DIM))


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """The mean of ``values`` (n,) and its standard error, std / sqrt(n)."""
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def image_elbos(model, x: np.ndarray, *, draws: int, rng: np.random.Generator) -> np.ndarray:
    """The ELBO of each image averaged over ``draws`` draws of eps: (N,) float64 nats."""
    return np.mean([model.forward(x, rng=rng).elbo.astype(np.float64) for _ in range(draws)], axis=0)


def measure(model, x_test: np.ndarray, *, rng: np.random.Generator) -> dict:
    """The numbers of one trained model: test ELBO, the two mass fractions, and what the figure draws."""
    elbos = image_elbos(model, x_test, draws=N_ELBO_DRAWS, rng=rng)
    elbo, elbo_se = mean_and_se(elbos)
    prior = PriorView(model)
    mu, logvar = (a.astype(np.float64) for a in model.encode(x_test))        # q(z|x_n), (N, 2) each
    z_agg = mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape)         # one draw of q(z) per image
    t_prior = hpd_threshold(prior.log_density(prior.draw(N_PRIOR_THRESHOLD, rng)))
    t_agg = hpd_threshold(log_gaussian_mixture(z_agg, mu, logvar))
    z_prior = prior.draw(N_PRIOR_HOLES, rng)
    return dict(test_elbo=elbo, test_elbo_se=elbo_se,
                aggregate_inside_prior=float(np.mean(prior.log_density(z_agg) > t_prior)),
                prior_in_holes=float(np.mean(log_gaussian_mixture(z_prior, mu, logvar) <= t_agg)),
                log_prior_threshold=t_prior, means=mu, prior=prior, elbos=elbos)


def run(args) -> dict:
    """Train both models, measure, draw, write the JSON (:func:`demos.guide.common.write_numbers`); the numbers."""
    t0 = time.perf_counter()
    n_train, n_test, epochs, n_pseudo = (300, 200, 1, 10) if args.quick else (10_000, 2_000, 20, 50)
    epochs, n_pseudo = args.epochs or epochs, args.n_pseudo or n_pseudo
    train_x, _, test_x, test_y = common.load_subset(n_train, n_test, seed=args.seed)
    x_test = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    # the same seed: the VampVAE draws its networks' weights first, so both start from the same networks
    models = {"VAE": VAE(784, Z_DIM, HIDDEN, rng=np.random.default_rng(args.seed)),
              "VampVAE": VampVAE(784, Z_DIM, HIDDEN, n_pseudo=n_pseudo, rng=np.random.default_rng(args.seed))}
    results = {}
    for name, model in models.items():
        with common.Timer(f"{name}: train"):
            common.train_model(model, train_x, epochs=epochs, seed=args.seed)
        results[name] = measure(model, x_test, rng=np.random.default_rng(args.seed + 2))
        r = results[name]
        print(f"{name}: test ELBO {r['test_elbo']:.2f} +- {r['test_elbo_se']:.2f} nats; draws of q(z) inside the "
              f"prior's 90% region: {100 * r['aggregate_inside_prior']:.1f}%; prior draws in the holes of q(z) "
              f"(outside its 90% region): {100 * r['prior_in_holes']:.1f}%")
    # the same test images under both models: the paired difference is far more precise than either ELBO
    gain, gain_se = mean_and_se(results["VampVAE"]["elbos"] - results["VAE"]["elbos"])
    print(f"VampVAE - VAE test ELBO, paired over the images: {gain:.2f} +- {gain_se:.2f} nats")
    vamp = models["VampVAE"]
    u = vamp.pseudo_inputs
    decoded = vamp.decode(vamp.encode(u)[0])                                      # mean of p(x|z) at mean of q(z|u_k)
    numbers = {"n_train": n_train, "n_test": n_test, "epochs": epochs, "n_pseudo": n_pseudo,
               "architecture": f"784-{'-'.join(map(str, HIDDEN))}-{Z_DIM} relu, bernoulli", "hpd_mass": MASS,
               "vamp_minus_vae_elbo": gain, "vamp_minus_vae_elbo_se": gain_se,
               "pseudo_input_max": float(u.max()),
               **{name: {k: r[k] for k in ("test_elbo", "test_elbo_se", "aggregate_inside_prior", "prior_in_holes")}
                  for name, r in results.items()}}
    path = draw(results, u, decoded, test_y, args.out / "guide_vampprior.png", numbers=numbers,
                dpi=40 if args.quick else 100)           # --quick: a sixth of the pixels to render and encode
    json_path = common.write_numbers(args, "vampprior", numbers, seconds=time.perf_counter() - t0)
    return {"numbers": numbers, "path": path, "json_path": json_path, "results": results}


def _square_limits(points: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A padded square box (lo, hi) around the 0.5-99.5 percentiles of ``points`` and all of ``extra``, (n, 2) each."""
    both = np.concatenate([np.percentile(points, [0.5, 99.5], axis=0), extra])
    lo, hi = both.min(axis=0), both.max(axis=0)
    center, half = (lo + hi) / 2, 0.55 * np.max(hi - lo)
    return center - half, center + half


def draw(results: dict, u: np.ndarray, decoded: np.ndarray, labels: np.ndarray, path, *, numbers: dict,
         dpi: int = 100) -> Path:
    """(a) pseudo-inputs and their decodings; (b) each model's posterior means over its prior's log density."""
    K = len(u)
    ncol = 10
    nrow = -(-K // ncol)
    with common.guide_style():
        fig = Figure(figsize=(11, 9.2), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(f"A learned prior: N(0, I) against the VampPrior, the same 784-{HIDDEN[0]}-2 networks "
                     f"({numbers['n_train']} training images, {numbers['epochs']} epochs)")
        axes = fig.subplots(2, 2, height_ratios=(0.5, 1))
        u_max = float(u.max())
        for ax, images, vmax, title in (
                (axes[0, 0], u, u_max, f"(a) the VampVAE's K = {K} pseudo-inputs u_k = hardtanh(m_k),\n"
                                       f"learned (they start at 0.05); black = {u_max:.2f}, their largest pixel"),
                (axes[0, 1], decoded, 1.0, "(a) their decodings: the mean of p(x|z)\nat z = the mean of q(z|u_k)")):
            ax.imshow(image_grid(images.astype(np.float64), nrow, ncol, pad=2, pad_value=0.3 * vmax),
                      cmap=common.IMAGE_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(title)
        palette = np.array([matplotlib.colors.to_rgb(c) for c in common.DIGIT_COLORS])
        for ax, (name, r) in zip(axes[1], results.items()):
            prior = r["prior"]
            extra = prior.draw(2000, np.random.default_rng(0))
            extra = extra[prior.log_density(extra) > r["log_prior_threshold"]]     # the prior's 90 % region
            lo, hi = _square_limits(r["means"], extra)
            g1, g2 = np.meshgrid(np.linspace(lo[0], hi[0], 250), np.linspace(lo[1], hi[1], 250))
            log_p = prior.log_density(np.stack([g1.ravel(), g2.ravel()], axis=1)).reshape(g1.shape)
            top = log_p.max()
            ax.contourf(g1, g2, np.maximum(log_p, top - 12), levels=np.linspace(top - 12, top, 7), cmap="Greys",
                        alpha=0.45)
            ax.contour(g1, g2, log_p, levels=[r["log_prior_threshold"]], colors=common.COLORS["prior"],
                       linestyles="--", linewidths=1.4)
            order = np.random.default_rng(0).permutation(len(r["means"]))
            ax.scatter(r["means"][order, 0], r["means"][order, 1], c=palette[labels[order]], s=7, linewidths=0,
                       antialiased=False)
            if name == "VampVAE":
                ax.scatter(prior.mu[:, 0], prior.mu[:, 1], marker="+", c="black", s=45, lw=1.3)
            prior_name = "N(0, I)" if name == "VAE" else f"VampPrior (1/{K}) Σ_k q(z|u_k)"
            ax.set_title(f"(b) {name}, prior {prior_name}\ntest ELBO {r['test_elbo']:.1f} ± "
                         f"{r['test_elbo_se']:.1f} nats; {100 * r['aggregate_inside_prior']:.0f}% of q(z) inside\n"
                         f"the prior's {100 * MASS:.0f}% region; {100 * r['prior_in_holes']:.0f}% of prior draws in "
                         f"holes of q(z)")
            ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="z₁", ylabel="z₂", aspect="equal")
        handles = [Line2D([], [], marker="o", ls="", color=palette[d], label=str(d)) for d in range(10)]
        handles += [Line2D([], [], marker="+", ls="", color="black", label="mean of\nq(z|u_k)"),
                    Line2D([], [], ls="--", color=common.COLORS["prior"], label=f"prior's {100 * MASS:.0f}%\nregion"),
                    matplotlib.patches.Patch(color="0.6", label="log p(z):\n2-nat bands")]
        axes[1, 1].legend(handles=handles, title="posterior\nmeans, digit", loc="center left",
                          bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.text(0.5, 0.003, f"q(z): the aggregate posterior of the test images; its holes: outside the region holding "
                 f"{100 * MASS:.0f}% of its mass (if p(z) = q(z): {100 * MASS:.0f}% and {100 * (1 - MASS):.0f}%).\n"
                 f"Test ELBO, VampVAE − VAE on the same images: {numbers['vamp_minus_vae_elbo']:+.2f} ± "
                 f"{numbers['vamp_minus_vae_elbo_se']:.2f} nats per image.", ha="center", fontsize=10)
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n-pseudo", type=int, default=None, help="K, the VampVAE's pseudo-inputs (default 50; --quick 10)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of each model (default 20; --quick 1)")
    args = common.parse_args(p, argv)
    for flag in ("n_pseudo", "epochs"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')}: expected an integer >= 1, got {getattr(args, flag)}")
    return run(args)


if __name__ == "__main__":
    main()
