r"""The aggregate posterior and the rate: how much does the code say about x, and do the codes fill the prior?

Question (the guide's KL section called -KL "the information the code carries about x" and said
"the codes of all the data together fill the prior"; both need care). Average the KL term of the
ELBO over the data :math:`p_d(x)` and split it with the **aggregate posterior**
:math:`q(z) = E_{p_d(x)}\,q(z|x)` (Hoffman & Johnson 2016, "ELBO surgery"; Makhzani et al. 2016):

.. math::
    \underbrace{E_{p_d(x)} KL(q(z|x)\,\|\,p(z))}_{\text{rate}}
    = E_{q(x,z)}\Big[\log\frac{q(z|x)}{q(z)}\Big] + E_{q(z)}\Big[\log\frac{q(z)}{p(z)}\Big]
    = I_q(x; z) + KL(q(z)\,\|\,p(z)),

with :math:`q(x, z) = p_d(x)\,q(z|x)` (insert :math:`q(z)/q(z)` in the log). So the rate (Alemi
et al. 2018) is an **upper bound** on the mutual information between x and its code, and it is
exactly that information only when the codes of all the data together are distributed as the
prior. Where they are not, the prior has **holes**: regions where p(z) is large but q(z) small,
so a prior draw decodes to something the decoder was never trained on.

With the empirical data distribution (N images, each with weight 1/N) the aggregate posterior is
the mixture :math:`q(z) = \frac1N\sum_n q(z|x_n)`, so

* rate: the mean of the closed-form KL (:func:`npvae.distributions.gaussian_kl`);
* :math:`\log q(z) = \mathrm{logsumexp}_n \log N(z; \mu_n, \sigma_n^2) - \log N` (:func:`log_aggregate`);
* :math:`I_q(x; z)` and :math:`KL(q(z)\|p(z))` by Monte Carlo, with ``--draws`` draws
  :math:`z \sim q(z|x_n)` per image (:func:`rate_decomposition`). The MI of N equally weighted
  points is at most :math:`\log N`; as an estimate of the MI of the data distribution it is the
  InfoNCE lower bound (Poole et al. 2019, "On Variational Bounds of Mutual Information"), which
  rises with N, so the marginal KL = rate - MI it gives is an upper estimate.

Setup: the 784-400-2 Bernoulli VAE of ``vae_vs_ae.py`` (10,000 MNIST training images, 15 epochs,
the same seed), evaluated on ``--n-test`` (all 10,000) binarized test images. Measured: the
rate, the MI (also on random subsets of 500 and 2,000 images), the marginal KL, the spread (s.d. per
dimension) of the posterior means, the fraction of posterior means and of aggregate-posterior
draws within radius 2 (where 86.5 % of the prior's mass lies), and the fraction of prior draws
that land in a hole (:math:`q(z) < p(z)/10`). ``--quick``: 300 images, 1 epoch, 200 test images.

Figure (docs/figures/guide_aggregate_posterior.png): the density of q(z) against the prior's
circles, the posterior means by digit with the holes drawn, the fraction within radius r for
the prior, the means and q(z), and the rate split into MI and marginal KL.
Numbers: docs/guide_data/aggregate_posterior.json. A learned prior closes the gap from the
other side: the optimal prior for the ELBO is q(z) itself, which the VampPrior (Tomczak &
Welling 2018) approximates by a mixture of posteriors at learned pseudo-inputs.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from scipy.special import logsumexp

from demos.guide import common
from npvae import distributions as dist
from npvae._checks import check_array, check_int

NAME = "aggregate_posterior"
Z_DIM = 2
HOLE_RATIO = 0.1        # a hole: q(z) < HOLE_RATIO * p(z)
PRIOR_INSIDE_2 = 1.0 - math.exp(-2.0)   # P(|z| < 2) for z ~ N(0, I_2): chi-square(2) mass below 4 = 86.5 %


def log_aggregate(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    r""":math:`\log q(z) = \log\frac1N\sum_n N(z; \mu_n, \mathrm{diag}\,e^{\mathrm{logvar}_n})` at each row of ``z``, nats.

    ``z`` (P, Z); ``mu``, ``logvar`` (N, Z), the N posteriors. Returns (P,) float64, computed as
    :math:`\mathrm{logsumexp}_n[\log N(z; \mu_n, \sigma_n^2)] - \log N` (no underflow when every
    component is tiny), ``chunk`` rows of ``z`` at a time (memory chunk * N * Z floats).
    Raises ValueError for mismatched shapes.
    """
    check_array(mu, "mu", shape=(None, None))
    check_array(logvar, "logvar", shape=mu.shape)
    check_array(z, "z", shape=(None, mu.shape[1]))
    mu, logvar, z = (a.astype(np.float64) for a in (mu, logvar, z))
    out = np.empty(len(z))
    for i in range(0, len(z), chunk):
        log_comp = dist.gaussian_log_prob(z[i:i + chunk, None, :], mu[None], logvar[None])   # (chunk, N)
        out[i:i + chunk] = logsumexp(log_comp, axis=1) - math.log(len(mu))
    return out


def rate_decomposition(mu: np.ndarray, logvar: np.ndarray, *, draws: int, rng: np.random.Generator) -> dict:
    r"""Rate = MI + marginal KL for the N posteriors ``mu``, ``logvar`` (N, Z) of N equally weighted images.

    Returns a dict of floats (nats per image): ``rate`` (the mean closed-form
    :math:`KL(q(z|x_n)\|N(0, I))`), and, by Monte Carlo with ``draws`` draws :math:`z\sim q(z|x_n)` per
    image, ``mutual_information`` :math:`E[\log q(z|x) - \log q(z)]`, ``marginal_kl``
    :math:`E[\log q(z) - \log p(z)]`, their sum ``rate_mc`` (the Monte Carlo estimate of the rate,
    which the closed form checks) and the standard errors ``*_se``. Also ``log_n`` (the bound
    :math:`I \le \log N`).
    """
    draws = check_int(draws, "draws", minimum=1)
    mu, logvar = mu.astype(np.float64), logvar.astype(np.float64)
    N, Z = mu.shape
    eps = rng.standard_normal((draws, N, Z))
    z = dist.reparameterize(mu, logvar, eps)                                     # (draws, N, Z)
    log_q_cond = dist.log_q_at_sample(logvar, eps)                               # log q(z|x_n) at its own draws
    log_q = log_aggregate(z.reshape(-1, Z), mu, logvar).reshape(draws, N)        # log q(z)
    log_p = dist.standard_normal_log_prob(z)                                     # log p(z)
    mi, mkl = log_q_cond - log_q, log_q - log_p                                  # (draws, N) each
    se = lambda a: float(a.mean(0).std(ddof=1) / math.sqrt(N)) if N > 1 else float("nan")  # noqa: E731
    return {"rate": float(dist.gaussian_kl(mu, logvar).mean()), "mutual_information": float(mi.mean()),
            "marginal_kl": float(mkl.mean()), "rate_mc": float((mi + mkl).mean()),
            "mutual_information_se": se(mi), "marginal_kl_se": se(mkl), "rate_mc_se": se(mi + mkl),
            "log_n": math.log(N)}


def hole_fraction(mu: np.ndarray, logvar: np.ndarray, *, n: int, rng: np.random.Generator,
                  ratio: float = HOLE_RATIO) -> float:
    r"""Fraction of ``n`` prior draws :math:`z\sim N(0, I)` where the aggregate posterior is below ``ratio`` times the prior.

    A Monte Carlo estimate of :math:`P_{p(z)}[q(z) < \text{ratio}\cdot p(z)]`: how often ancestral
    sampling asks the decoder about a z that (almost) no training code is near. A float in [0, 1].
    """
    z = rng.standard_normal((check_int(n, "n", minimum=1), mu.shape[1]))
    return float(np.mean(log_aggregate(z, mu, logvar) < math.log(ratio) + dist.standard_normal_log_prob(z)))


def inside_fraction(z: np.ndarray, radius: float = 2.0) -> float:
    """Fraction of the rows of ``z`` (N, Z) within ``radius`` of 0, a float in [0, 1]."""
    return float(np.mean(np.linalg.norm(np.asarray(z, dtype=np.float64), axis=1) < radius))


def draw(r: dict, labels: np.ndarray, path: Path, *, setup: str, dpi: int = 100) -> Path:
    """Four panels: q(z) and the prior; the means by digit with the holes; fraction within radius r; the rate split."""
    mu, grid = r["mu"].astype(np.float64), r["grid"]
    g = grid["axis"]
    with common.guide_style():
        fig = Figure(figsize=(11, 10), dpi=dpi, layout="constrained")
        fig.suptitle(setup)
        (a, b), (c, d) = fig.subplots(2, 2)
        extent = (g[0], g[-1], g[0], g[-1])
        im = a.imshow(np.exp(grid["log_q"]), origin="lower", extent=extent, cmap=common.HEAT_CMAP,
                      interpolation="bilinear")
        fig.colorbar(im, ax=a, shrink=0.85, label="q(z), density")
        b.contourf(g, g, grid["hole"].astype(float), levels=[0.5, 1.5], colors=["#bbbbbb"], hatches=["//"])
        order = np.random.default_rng(0).permutation(len(mu))
        colors = np.array(common.DIGIT_COLORS)[labels[order]]
        b.scatter(mu[order, 0], mu[order, 1], c=colors, s=3, alpha=0.6, linewidths=0)
        for ax, title in ((a, "aggregate posterior q(z) = (1/N) Σn q(z|xn)\n(the prior's density peaks at 1/2π = 0.16)"),
                          (b, f"posterior means by digit; grey hatched: holes, q(z) < p(z)/{1 / HOLE_RATIO:.0f}")):
            for radius in (1, 2):
                ax.add_patch(Circle((0, 0), radius, fill=False, ls="--", color="white" if ax is a else "black", lw=1.2))
            ax.set(xlim=(g[0], g[-1]), ylim=(g[0], g[-1]), xlabel="z1", ylabel="z2", title=title, aspect="equal")
        handles = [Line2D([], [], marker="o", ls="", color=common.DIGIT_COLORS[k], label=str(k)) for k in range(10)]
        handles += [Patch(facecolor="#bbbbbb", hatch="//", label="hole"),
                    Line2D([], [], ls="--", color="black", label="prior 1σ, 2σ")]
        b.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9.5)
        radii = np.linspace(0, 4, 200)
        c.plot(radii, 1 - np.exp(-radii ** 2 / 2), color=common.COLORS["prior"], ls="--", label="prior p(z)")
        for key, label, color in (("mu", "posterior means μ(x)", "#ff7f0e"), ("draws", "draws z ~ q(z)", common.COLORS["q"])):
            rr = np.sort(np.linalg.norm(r[key].astype(np.float64), axis=1))
            c.plot(rr, np.arange(1, len(rr) + 1) / len(rr), color=color, label=label)
        c.axvline(2, color="black", lw=0.8)
        c.text(2.05, 0.05, f"|z| < 2: prior {100 * PRIOR_INSIDE_2:.1f} %, means {100 * r['inside_means']:.0f} %,\n"
                           f"q(z) draws {100 * r['inside_draws']:.0f} %", fontsize=10, va="bottom")
        c.set(xlabel="radius r", ylabel="fraction with |z| < r", title="how far from the origin the codes lie",
              xlim=(0, 4), ylim=(0, 1.01))
        c.legend(loc="upper left")
        c.grid(alpha=0.3)
        dec = r["decomposition"]
        d.bar(0, dec["rate"], color="#7f7f7f", width=0.6)
        d.bar(1, dec["mutual_information"], color=common.COLORS["q"], width=0.6, label="I_q(x; z)")
        d.bar(1, dec["marginal_kl"], bottom=dec["mutual_information"], color=common.COLORS["kl"], width=0.6,
              label="KL(q(z) ‖ p(z))")
        d.text(0, dec["rate"] + 0.05, f"{dec['rate']:.2f}", ha="center", va="bottom")
        d.text(1, dec["mutual_information"] / 2, f"{dec['mutual_information']:.2f}", ha="center", va="center", color="white")
        d.text(1, dec["mutual_information"] + dec["marginal_kl"] / 2, f"{dec['marginal_kl']:.2f}", ha="center",
               va="center", color="white")
        d.axhline(dec["log_n"], color="black", ls=":", lw=1.2)
        d.text(2.05, dec["log_n"] - 0.1, f"log N = {dec['log_n']:.2f}: the largest\npossible MI of N images", ha="right",
               va="top", fontsize=10)
        d.set_xticks([0, 1], ["rate\nE_x KL(q(z|x) ‖ p(z))", "MI + marginal KL\n(Monte Carlo)"])
        d.set(ylabel="nats per image", title="the rate splits into information and mismatch", xlim=(-0.6, 2.1),
              ylim=(0, max(dec["log_n"], dec["rate"]) * 1.15))
        d.legend(loc="upper left")
    return common.save_figure(fig, path)


def run(args) -> dict:
    """Train the 2-D VAE, encode the test images, measure the rate split, the spread and the holes; draw."""
    t0 = time.perf_counter()
    n_train, n_test, epochs = (300, 200, 1) if args.quick else (10_000, args.n_test, 15)
    train_x, _, test_x, test_y = common.load_subset(n_train, n_test, seed=args.seed)
    with common.Timer("train"):
        model = common.train_vae(train_x, z_dim=Z_DIM, epochs=epochs, seed=args.seed)
    x = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    mu, logvar = model.encode(x)
    rng = np.random.default_rng(args.seed + 3)
    with common.Timer("rate, MI, marginal KL"):
        dec = rate_decomposition(mu, logvar, draws=args.draws, rng=rng)
        subsets = {}
        for n in (500, 2000):              # random subsets: the MI of n images, a lower bound that rises with n
            if n < n_test:
                idx = rng.choice(n_test, size=n, replace=False)
                sub = rate_decomposition(mu[idx], logvar[idx], draws=args.draws, rng=rng)
                subsets[n] = {key: sub[key] for key in ("rate", "mutual_information", "marginal_kl")}
        subsets[n_test] = {key: dec[key] for key in ("rate", "mutual_information", "marginal_kl")}
    with common.Timer("holes"):
        holes = hole_fraction(mu, logvar, n=20_000 if not args.quick else 2_000, rng=rng)
        axis = np.linspace(-4, 4, 121 if not args.quick else 41)
        Z1, Z2 = np.meshgrid(axis, axis)
        zg = np.c_[Z1.ravel(), Z2.ravel()]
        log_q = log_aggregate(zg, mu, logvar)
        hole = log_q < math.log(HOLE_RATIO) + dist.standard_normal_log_prob(zg)
        hole &= np.linalg.norm(zg, axis=1) < 3          # draw holes where the prior has mass (|z| < 3: 98.9 %)
    draws = dist.reparameterize(mu.astype(np.float64), logvar.astype(np.float64), rng.standard_normal(mu.shape))
    r = {"mu": mu, "draws": draws, "decomposition": dec, "holes": holes,
         "grid": {"axis": axis, "log_q": log_q.reshape(Z1.shape), "hole": hole.reshape(Z1.shape)},
         "inside_means": inside_fraction(mu), "inside_draws": inside_fraction(draws)}
    sd = mu.astype(np.float64).std(axis=0)
    print(f"rate {dec['rate']:.3f} nats = MI {dec['mutual_information']:.3f} + marginal KL {dec['marginal_kl']:.3f} "
          f"(Monte Carlo sum {dec['rate_mc']:.3f} ± {dec['rate_mc_se']:.3f}); log N = {dec['log_n']:.2f}")
    print(f"posterior means: s.d. {sd.round(2).tolist()}, {100 * r['inside_means']:.1f} % within radius 2 "
          f"(prior {100 * PRIOR_INSIDE_2:.1f} %); q(z) draws {100 * r['inside_draws']:.1f} %; prior draws in holes "
          f"{100 * holes:.1f} %")
    setup = (f"784-400-{Z_DIM} Bernoulli VAE, {epochs} epochs on {n_train:,} MNIST images; "
             f"the {n_test:,} test images' posteriors")
    draw(r, test_y, args.out / f"guide_{NAME}.png", setup=setup, dpi=50 if args.quick else 100)
    numbers = {"n_train": n_train, "epochs": epochs, "n_test": n_test, "draws": args.draws,
               "rate": dec["rate"], "mutual_information": dec["mutual_information"],
               "marginal_kl": dec["marginal_kl"], "rate_mc": dec["rate_mc"], "rate_mc_se": dec["rate_mc_se"],
               "mutual_information_se": dec["mutual_information_se"], "marginal_kl_se": dec["marginal_kl_se"],
               "log_n": dec["log_n"], "mi_share": dec["mutual_information"] / dec["rate"],
               "by_n": {str(n): v for n, v in subsets.items()},
               "mean_sd": sd.tolist(),
               "posterior_sigma_geometric_mean": float(np.exp(0.5 * logvar.astype(np.float64).mean())),
               "inside_2_means": r["inside_means"], "inside_2_draws": r["inside_draws"],
               "inside_2_prior": PRIOR_INSIDE_2, "prior_draws_in_holes": holes, "hole_ratio": HOLE_RATIO,
               "q_peak": float(np.exp(log_q.max())), "prior_peak": 1.0 / (2.0 * math.pi)}
    common.write_numbers(args, NAME, numbers, seconds=time.perf_counter() - t0)
    return {**r, "numbers": numbers, "model": model}


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n-test", type=int, default=10_000, help="test images whose posteriors form q(z) (default 10000)")
    p.add_argument("--draws", type=int, default=2, help="draws z ~ q(z|x) per image for the MI (default 2)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
