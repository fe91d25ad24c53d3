r"""What is a Dirichlet VAE? A latent point on the simplex, and how well its Gaussian stand-in matches a Dirichlet.

Question (guide: "What is a Dirichlet VAE?"; study notes 004, "Delichelt VAE"). Two models carry
the name:

* Srivastava & Sutton 2017 (ProdLDA; what :class:`npvae.DirichletVAE` implements): the latent
  :math:`\theta = \mathrm{softmax}(z)` lies on the simplex, :math:`q(z|x) = N(\mu, \mathrm{diag}\,\sigma^2)`,
  and the Dirichlet(α) prior on θ is replaced by its Laplace approximation in the softmax
  basis, :math:`p(z) = N(\mu_0, \mathrm{diag}\,\sigma_0^2)` (their eq. 3;
  :func:`npvae.dirichlet.dirichlet_laplace_prior`), so the KL is the closed form between two
  diagonal Gaussians and the reparameterization is the VAE's;
* Joo, Lee, Park & Moon 2019 ("Dirichlet Variational Autoencoder"): a true Dirichlet prior,
  written as normalized Gamma variables, with a Gamma posterior whose samples are
  reparameterized by an approximate inverse CDF, :math:`F^{-1}(u;\alpha,\beta)\approx
  \beta^{-1}(u\,\alpha\,\Gamma(\alpha))^{1/\alpha}` (Knowles 2015). npvae does not implement it.

This script trains npvae's model and measures how far each stand-in is from the Dirichlet it
replaces, by sampling: the exact Dirichlet(α) (``numpy``'s Gamma sampler), npvae's Laplace
prior pushed through the softmax (:func:`laplace_draws`), and Joo et al.'s approximate Gamma
draws normalized (:func:`inverse_cdf_draws`). Compared: the distribution of one component
:math:`\theta_1` (exactly Beta(α, (K-1)α)), by the Kolmogorov-Smirnov distance of its samples
to that Beta's CDF, and the mean of the largest component :math:`\max_k\theta_k` (how sparse
the proportions are).

Setup: a 784-400-K DirichletVAE (K = ``--z-dim``, default 20), α = ``--alpha`` (default
0.3, npvae's default), Bernoulli decoder, ``--n-train`` MNIST images (default all 60,000; dynamic binarization),
``--epochs`` epochs (default 10), Adam 1e-3, batch 128. Also measured: the test -ELBO and
its terms, and :math:`\theta = \mathrm{softmax}(\mu(x))` of 1,000 test images (its mean
largest component, and its mean per digit class). ``--quick``: 300 images, 1 epoch.
Figure: docs/figures/guide_dirichlet.png; numbers: docs/guide_data/dirichlet.json (a run with
any flag changed writes both to the scratch folder instead). Exercises: ``--alpha``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure
from scipy import stats
from scipy.special import gammaln

from demos.guide import common
from npvae import DirichletVAE, Adam, TrainConfig, Trainer
from npvae.dirichlet import dirichlet_laplace_prior, softmax
from npvae.plots import image_grid

#: the three samplers of theta, as the figure names them
LABELS = {"exact": "Dirichlet (exact)", "laplace": "Laplace + softmax (npvae)",
          "inverse_cdf": "inverse-CDF Gammas (Joo et al.)"}


def laplace_draws(alpha: float, K: int, n: int, *, rng: np.random.Generator) -> np.ndarray:
    r"""``n`` draws :math:`\theta = \mathrm{softmax}(z)`, :math:`z\sim N(\mu_0, \mathrm{diag}\,\sigma_0^2)`: npvae's prior on θ. (n, K)."""
    mu0, logvar0 = dirichlet_laplace_prior(alpha, K)
    return softmax(mu0 + np.exp(0.5 * logvar0) * rng.standard_normal((n, K)))


def inverse_cdf_draws(alpha: float, K: int, n: int, *, rng: np.random.Generator) -> np.ndarray:
    r"""Joo et al.'s draws: :math:`v_k = (u_k\,\alpha\,\Gamma(\alpha))^{1/\alpha}`, :math:`u_k\sim U(0,1)`, :math:`\theta = v/\sum_k v_k`. (n, K).

    The approximate inverse CDF of Gamma(α, 1) (Knowles 2015), computed in logs:
    :math:`\log v = (\log u + \log\alpha + \log\Gamma(\alpha))/\alpha`; θ is the softmax of log v.
    """
    log_v = (np.log(rng.random((n, K))) + np.log(alpha) + gammaln(alpha)) / alpha
    return softmax(log_v)


def compare_priors(alpha: float, K: int, n: int, *, seed: int) -> dict:
    """The three samplers of θ against the exact Dirichlet: KS distance of θ_1 to Beta(α, (K-1)α), mean max θ."""
    rng = np.random.default_rng(seed)
    draws = {"exact": rng.dirichlet(np.full(K, alpha), size=n), "laplace": laplace_draws(alpha, K, n, rng=rng),
             "inverse_cdf": inverse_cdf_draws(alpha, K, n, rng=rng)}
    beta = stats.beta(alpha, (K - 1) * alpha)
    out = {}
    for name, th in draws.items():
        out[name] = {"ks": float(stats.kstest(th[:, 0], beta.cdf).statistic),
                     "mean_max": float(th.max(axis=1).mean()),
                     "below_1e4": float(np.mean(th[:, 0] < 1e-4)),
                     "theta1": th[:, 0], "max": th.max(axis=1)}
    return out


def run(args) -> dict:
    t0 = time.perf_counter()
    n_train, n_test, epochs, n_prior = (300, 100, 1, 2000) if args.quick else (args.n_train, 1000, args.epochs, 100_000)
    train_x, _, test_x, test_y = common.load_subset(n_train, n_test, seed=args.seed)
    model = DirichletVAE(784, args.z_dim, (400,), alpha=args.alpha, rng=np.random.default_rng(args.seed))
    config = TrainConfig(epochs=epochs, batch_size=128, seed=args.seed)
    trainer = Trainer(model, Adam(model.params, lr=1e-3), train_x, test_x, config,
                      rng=np.random.default_rng(args.seed), log=None)
    with common.Timer("train the Dirichlet VAE"):
        hist = trainer.fit()
    h = hist[-1]
    x_te = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    theta = model.topic_proportions(x_te).astype(np.float64)                       # softmax(mu(x)), (N, K)
    by_class = np.stack([theta[test_y == c].mean(axis=0) for c in range(10)])      # (10, K)
    priors = compare_priors(args.alpha, args.z_dim, n_prior, seed=args.seed + 2)
    res = {"test_neg_elbo": h["test_loss"], "test_reconstruction": h["test_reconstruction"], "test_kl": h["test_kl"],
           "active_units": int(model.active_units(x_te)),
           "posterior_mean_max_theta": float(theta.max(axis=1).mean()),
           "classes_top_component": np.argmax(by_class, axis=1),
           "distinct_top_components": int(len(set(np.argmax(by_class, axis=1).tolist()))),
           "prior": {k: {"ks": v["ks"], "mean_max": v["mean_max"], "below_1e4": v["below_1e4"]}
                     for k, v in priors.items()},
           "beta_cdf_1e4": float(stats.beta(args.alpha, (args.z_dim - 1) * args.alpha).cdf(1e-4)),
           # the largest value the inverse-CDF approximation can give: u = 1, (alpha Gamma(alpha))^(1/alpha)
           "inverse_cdf_max": float(np.exp(gammaln(args.alpha + 1) / args.alpha)),
           "prior_mu0": float(dirichlet_laplace_prior(args.alpha, args.z_dim)[0][0]),
           "prior_sigma0": float(np.exp(0.5 * dirichlet_laplace_prior(args.alpha, args.z_dim)[1][0]))}
    print(f"test -ELBO {h['test_loss']:.2f} nats (reconstruction {h['test_reconstruction']:.2f}, KL {h['test_kl']:.2f});"
          f" active units {res['active_units']} of {args.z_dim}; mean largest component of softmax(mu(x)) "
          f"{res['posterior_mean_max_theta']:.3f}; the classes' top components {res['classes_top_component'].tolist()}")
    for k, v in res["prior"].items():
        print(f"{LABELS[k]:34s}: KS distance of theta_1 to Beta({args.alpha:g}, {(args.z_dim - 1) * args.alpha:g}) "
              f"{v['ks']:.3f}; mean max_k theta_k {v['mean_max']:.3f}")
    samples = model.sample(64, rng=np.random.default_rng(args.seed + 3))
    res.update(n_train=n_train, epochs=epochs, prior_draws=n_prior, by_class=by_class)
    draw(samples, by_class, priors, res, args.out / "guide_dirichlet.png", alpha=args.alpha, K=args.z_dim,
         n_train=n_train, epochs=epochs)
    common.write_numbers(args, "dirichlet", res, seconds=time.perf_counter() - t0)
    return res


def draw(samples, by_class, priors, res, path, *, alpha, K, n_train, epochs) -> Path:
    """Prior samples; the largest component under each prior; one component's CDF; mean θ per class."""
    colors = {"exact": "black", "laplace": "#1f77b4", "inverse_cdf": "#ff7f0e"}
    with common.guide_style():
        fig = Figure(figsize=(11, 9.4), dpi=100, layout="constrained")
        fig.suptitle(f"Dirichlet VAE (Srivastava & Sutton 2017) 784-400-{K}, α = {alpha:g}, {n_train} images, "
                     f"{epochs} epochs.\nθ = softmax(z) on the simplex; the prior N(μ0, σ0²) is the Laplace "
                     f"approximation of Dirichlet(α) in the softmax basis")
        (a, b), (c, d) = fig.subplots(2, 2)
        a.imshow(image_grid(samples, 8, 8, pad=2, pad_value=0.5), cmap=common.IMAGE_CMAP, vmin=0, vmax=1)
        a.set_axis_off()
        a.set_title("samples: means of p(x|θ), θ = softmax(z), z ~ N(μ0, σ0²)")
        bins = np.linspace(1 / K, 1, 41)
        for name, v in priors.items():
            b.hist(v["max"], bins=bins, density=True, histtype="step", lw=2, color=colors[name],
                   label=f"{LABELS[name]}: mean {v['mean_max']:.2f}")
        b.set(xlabel="largest component max_k θ_k", ylabel="density", xlim=(0, 1),
              title=f"How sparse is θ under each prior? ({len(priors['exact']['max']):,} draws)")
        b.legend(loc="upper right", fontsize=9.5)
        grid = np.logspace(-8, 0, 400)
        c.plot(grid, stats.beta(alpha, (K - 1) * alpha).cdf(grid), color="black", lw=4, alpha=0.35,
               label=f"Beta({alpha:g}, {(K - 1) * alpha:g}), exact")
        for name, v in priors.items():
            th = np.sort(v["theta1"])
            c.plot(th, np.arange(1, len(th) + 1) / len(th), color=colors[name], lw=1.5,
                   ls="--" if name == "exact" else "-", label=f"{LABELS[name]}: KS {v['ks']:.3f}")
        c.set_xscale("log")
        c.set(xlim=(1e-8, 1), ylim=(0, 1), xlabel="one component θ_1 (log scale)", ylabel="P(θ_1 ≤ t)",
              title="the CDF of one component; KS = the largest vertical gap")
        c.legend(loc="upper left", fontsize=9.5)
        c.grid(alpha=0.3)
        im = d.imshow(by_class, cmap=common.HEAT_CMAP, aspect="auto", vmin=0)
        for cls in range(10):
            for k in range(K):
                if by_class[cls, k] >= 0.15:
                    d.text(k, cls, f"{100 * by_class[cls, k]:.0f}", ha="center", va="center", fontsize=8.5,
                           color="black" if by_class[cls, k] > 0.6 * by_class.max() else "white")
        d.set_xticks(range(0, K, 2), [str(k + 1) for k in range(0, K, 2)])
        d.set_yticks(range(10), [str(cls) for cls in range(10)])
        d.set(xlabel="component k of θ", ylabel="digit class",
              title=f"mean θ = softmax(μ(x)) per class (test images; values\n≥ 0.15 written, in %); mean largest "
                    f"component {res['posterior_mean_max_theta']:.2f}")
        fig.colorbar(im, ax=d, label="mean θ_k", shrink=0.9)
    return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--alpha", type=float, default=0.3, help="Dirichlet concentration (default 0.3)")
    p.add_argument("--z-dim", type=int, default=20, help="K, the components of θ (default 20)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--n-train", type=int, default=60_000, help="training images (default 60000: all of MNIST's)")
    args = common.parse_args(p, argv)
    if args.z_dim < 2 or args.epochs < 1:
        p.error(f"--z-dim, --epochs: expected integers >= 2 and >= 1, got {args.z_dim}, {args.epochs}")
    if not args.alpha > 0:
        p.error(f"--alpha: expected a number > 0, got {args.alpha}")
    return run(args)


if __name__ == "__main__":
    main()
