r"""A decoder can map N(0, I) onto almost any distribution: a fixed map, and decoders trained on 2-D toys.

Question (study notes 004: "Assume to any distribution is ok"). The prior is a plain
:math:`N(0, I)`, yet the data are anything but Gaussian. The decoder does the work: if
:math:`z\sim N(0, I)` and g is a flexible enough function, :math:`g(z)` can have (almost) any
distribution (Doersch 2016, "Tutorial on Variational Autoencoders", section 2 and figure 2,
whose map :math:`g(z) = z/10 + z/\|z\|` turns a 2-D Gaussian into a ring). A VAE learns its g:
the decoder mean :math:`\hat x(z)`, plus the likelihood's noise :math:`x = \hat x(z) + \sigma_x\epsilon`.

"Almost": a continuous g maps the connected plane onto a connected set, so separated clusters
are joined by thin **bridges** of decoder means, where the data have no mass; and a likelihood
must cover every data point, so the model spreads some mass there rather than drop a mode.

Setup: two 2-D targets (:func:`two_moons`, :func:`eight_gaussians`), 20,000 training points
each. For each, a 2-64-64-2 (tanh) VAE with a Gaussian decoder and a learned :math:`\sigma_x`
(``likelihood="gaussian_learned"``), float64, trained by :func:`train_toy`: ``--steps`` (6,000)
Adam steps (learning rate 3e-3) on batches of 256 with npvae's ``VAE.forward`` /
``VAE.backward`` and :class:`npvae.Adam`. Measured on 2,000 fresh points and 5,000 prior draws:

* the model's :math:`\log p(x)` (:func:`npvae.evaluate.log_likelihood`, k = 1,000) against the
  true density's (:func:`true_log_density`; exact for the mixture, by numerical integration
  along the arcs for the moons): the difference estimates :math:`KL(p_{data}\,\|\,p_\theta)`;
* the learned :math:`\sigma_x` against the data's noise (0.05 and 0.1);
* the fraction of decoder means and of samples in the gaps, more than four noise s.d. from
  the noiseless shape (:func:`off_support_fraction`), against the data's own;
* for the mixture, the share of samples nearest each of the 8 modes (1/8 each in the data).

``--quick``: 300 steps, 500 test points, 1,000 prior draws, k = 50.
Figure: docs/figures/guide_any_distribution.png. Numbers: docs/guide_data/any_distribution.json.
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
from scipy.integrate import trapezoid
from scipy.special import logsumexp

from demos.guide import common
from npvae import Adam, VAE, evaluate
from npvae._checks import check_int

NAME = "any_distribution"
MOON_NOISE, MIX_NOISE, MIX_RADIUS, N_MODES = 0.05, 0.1, 2.0, 8
GAP_SDS = 4.0          # a point is "in a gap" if it is farther than GAP_SDS noise s.d. from the noiseless shape


# ---- the targets and their exact densities ---------------------------------------------------------------
def _moon_arcs(t: np.ndarray) -> np.ndarray:
    """Points of the two noiseless half circles at angles t in [0, pi]: (2, len(t), 2) (upper moon, lower moon)."""
    upper = np.stack([np.cos(t), np.sin(t)], axis=-1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=-1)
    return np.stack([upper, lower])


def two_moons(n: int, *, rng: np.random.Generator, noise: float = MOON_NOISE) -> np.ndarray:
    """``n`` points (n, 2) float64: a moon chosen with probability 1/2, an angle t ~ U[0, pi], plus N(0, noise^2 I)."""
    n = check_int(n, "n", minimum=1)
    moon, t = rng.integers(0, 2, n), rng.uniform(0.0, math.pi, n)
    return _moon_arcs(t)[moon, np.arange(n)] + noise * rng.standard_normal((n, 2))


def eight_gaussians(n: int, *, rng: np.random.Generator, noise: float = MIX_NOISE) -> np.ndarray:
    """``n`` points (n, 2) float64 from the equal mixture of N(c_k, noise^2 I), c_k = 2 (cos 2πk/8, sin 2πk/8)."""
    n = check_int(n, "n", minimum=1)
    return mixture_centres()[rng.integers(0, N_MODES, n)] + noise * rng.standard_normal((n, 2))


def mixture_centres() -> np.ndarray:
    """The 8 mode centres (8, 2) of :func:`eight_gaussians`."""
    a = 2 * math.pi * np.arange(N_MODES) / N_MODES
    return MIX_RADIUS * np.stack([np.cos(a), np.sin(a)], axis=1)


def true_log_density(target: str, x: np.ndarray, *, n_grid: int = 4001) -> np.ndarray:
    r"""The exact :math:`\log p_{data}(x)` of a target at the rows of ``x`` (N, 2), nats, (N,) float64.

    Mixture: :math:`\log\frac18\sum_k N(x; c_k, s^2 I)` by ``logsumexp``. Moons:
    :math:`p(x) = \frac12\sum_{m}\frac1\pi\int_0^\pi N(x; a_m(t), s^2 I)\,dt`, the integral by the
    trapezoid rule on ``n_grid`` angles (spacing 8e-4 rad, about 60 points per s.d. of the
    integrand along the arc), in log space.
    """
    x = np.asarray(x, dtype=np.float64)
    if target == "eight Gaussians":
        c, s = mixture_centres(), MIX_NOISE
        log_comp = -np.sum((x[:, None, :] - c[None]) ** 2, axis=-1) / (2 * s * s) - math.log(2 * math.pi * s * s)
        return logsumexp(log_comp, axis=1) - math.log(N_MODES)
    if target == "two moons":
        s, t = MOON_NOISE, np.linspace(0.0, math.pi, n_grid)
        arcs = _moon_arcs(t)                                                         # (2, T, 2)
        out = np.empty(len(x))
        for i in range(0, len(x), 200):
            d2 = np.sum((x[i:i + 200, None, None, :] - arcs[None]) ** 2, axis=-1)    # (b, 2, T)
            log_k = -d2 / (2 * s * s) - math.log(2 * math.pi * s * s)
            peak = log_k.max(axis=(1, 2), keepdims=True)
            integral = trapezoid(np.exp(log_k - peak), t, axis=-1).sum(axis=1)       # sum over the two moons
            out[i:i + 200] = peak[:, 0, 0] + np.log(integral) - math.log(2 * math.pi)
        return out
    raise ValueError(f"target: expected 'two moons' or 'eight Gaussians', got {target!r}")


def off_support_fraction(target: str, x: np.ndarray) -> float:
    """Fraction of the rows of ``x`` (N, 2) farther than ``GAP_SDS`` noise s.d. from the target's noiseless shape."""
    x = np.asarray(x, dtype=np.float64)
    if target == "eight Gaussians":
        d = np.min(np.linalg.norm(x[:, None, :] - mixture_centres()[None], axis=-1), axis=1)
        return float(np.mean(d > GAP_SDS * MIX_NOISE))
    arcs = _moon_arcs(np.linspace(0.0, math.pi, 1001)).reshape(-1, 2)    # points 0.003 apart along the arcs
    # squared distances |x - a|^2 = |x|^2 - 2 x.a + |a|^2, one matmul
    d2 = np.sum(x * x, axis=1)[:, None] - 2.0 * x @ arcs.T + np.sum(arcs * arcs, axis=1)[None]
    return float(np.mean(d2.min(axis=1) > (GAP_SDS * MOON_NOISE) ** 2))


def mode_shares(x: np.ndarray) -> np.ndarray:
    """Share of the rows of ``x`` (N, 2) nearest each of the 8 mixture centres: (8,) float64 summing to 1."""
    k = np.argmin(np.linalg.norm(np.asarray(x, float)[:, None, :] - mixture_centres()[None], axis=-1), axis=1)
    return np.bincount(k, minlength=N_MODES) / len(k)


def doersch_map(z: np.ndarray) -> np.ndarray:
    r"""Doersch's (2016, figure 2) fixed map :math:`g(z) = z/10 + z/\|z\|`: N(0, I_2) onto a ring of radius about 1."""
    z = np.asarray(z, dtype=np.float64)
    return z / 10.0 + z / np.linalg.norm(z, axis=-1, keepdims=True)


# ---- training a VAE on a toy ------------------------------------------------------------------------------
def train_toy(data: np.ndarray, *, steps: int, rng: np.random.Generator, z_dim: int = 2, batch_size: int = 256,
              lr: float = 3e-3, hidden=(64, 64)) -> VAE:
    """A 2-hidden-z_dim VAE with a Gaussian decoder and learned sigma_x, trained on ``data`` (N, 2) float64.

    The loop of the guide's "one training step": a minibatch (drawn with replacement by ``rng``),
    ``terms = model.forward(x, rng=rng)``, ``grads = model.backward()``, ``opt.step(grads)``
    (:class:`npvae.Adam`). The weights are initialised from ``rng`` too. Returns the model.
    """
    steps = check_int(steps, "steps", minimum=1)
    model = VAE(data.shape[1], z_dim, hidden, "tanh", "gaussian_learned", rng=rng, dtype=np.float64, sigma_x=0.3)
    opt = Adam(model.params, lr=lr)
    for _ in range(steps):
        x = data[rng.integers(0, len(data), batch_size)]
        model.forward(x, rng=rng)
        opt.step(model.backward())
    return model


def draw(fixed: dict, runs: dict, path: Path, *, setup: str, dpi: int = 100) -> Path:
    """Row 1: Doersch's fixed map. Rows 2-3: each target's data, decoder means of prior draws, samples."""
    with common.guide_style():
        fig = Figure(figsize=(11, 11.2), dpi=dpi, layout="constrained")
        fig.suptitle(setup)
        axes = fig.subplots(3, 3)
        cmap = "twilight"          # a cyclic map: the angle of z, so neighbouring z have neighbouring colours
        angle = fixed["angle"]
        sc = axes[0, 0].scatter(*fixed["z"].T, c=angle, cmap=cmap, s=3, linewidths=0, vmin=-math.pi, vmax=math.pi)
        axes[0, 0].set_title("z ~ N(0, I), coloured by its angle")
        axes[0, 1].scatter(*fixed["gz"].T, c=angle, cmap=cmap, s=3, linewidths=0, vmin=-math.pi, vmax=math.pi)
        axes[0, 1].set_title("g(z) = z/10 + z/‖z‖ (Doersch 2016):\na fixed map, a ring")
        fig.colorbar(sc, ax=axes[0, 2], location="left", shrink=0.8, label="angle of z (radians)")
        axes[0, 2].set_axis_off()
        axes[0, 2].text(0.05, 0.5, "Rows 2 and 3: a VAE's decoder\nlearns its own g from data.\n\n"
                        "Middle: decoder means x̂(z) of\nprior draws z ~ N(0, I), coloured\nby the angle of z. "
                        "Right: samples\nx = x̂(z) + σx ε, ancestral\nsampling from the trained VAE.",
                        transform=axes[0, 2].transAxes, va="center", fontsize=11)
        for row, (target, r) in enumerate(runs.items(), start=1):
            n = r["numbers"]
            axes[row, 0].scatter(*r["data"].T, s=2, color="#555555", linewidths=0)
            axes[row, 0].set_title(f"{target}: data (noise s.d. {n['data_noise']:g})")
            axes[row, 1].scatter(*r["means"].T, c=r["angle"], cmap=cmap, s=3, linewidths=0, vmin=-math.pi,
                                 vmax=math.pi)
            axes[row, 1].set_title(f"decoder means x̂(z), z ~ N(0, I)\n{100 * n['gap_means']:.1f} % in the gaps "
                                   f"(data: {100 * n['gap_data']:.1f} %)")
            axes[row, 2].scatter(*r["samples"].T, s=2, color=common.COLORS["q"], linewidths=0)
            axes[row, 2].set_title(f"samples, learned σx = {n['sigma_x']:.3f}\nlog p(x): model "
                                   f"{n['log_px_model']:.2f}, true {n['log_px_true']:.2f} nats")
        for ax in axes.ravel():
            if ax is not axes[0, 2]:
                ax.set_aspect("equal")
                ax.grid(alpha=0.3)
        for row in range(1, 3):
            lims = axes[row, 0].get_xlim(), axes[row, 0].get_ylim()
            for col in (1, 2):
                axes[row, col].set(xlim=lims[0], ylim=lims[1])
        for ax in axes[0, :2]:
            ax.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5))
    return common.save_figure(fig, path)


def run(args) -> dict:
    """The fixed map, then train a VAE on each target and measure it; draw; write the numbers."""
    t0 = time.perf_counter()
    steps, n_test, k, n_prior = (300, 500, 50, 1000) if args.quick else (args.steps, 2000, 1000, 5000)
    rng = np.random.default_rng(args.seed)
    z = rng.standard_normal((n_prior, 2))
    fixed = {"z": z, "gz": doersch_map(z), "angle": np.arctan2(z[:, 1], z[:, 0])}
    numbers, runs = {"steps": steps, "n_test": n_test, "k": k, "z_dim": args.z_dim}, {}
    for i, (target, sampler, noise) in enumerate((("two moons", two_moons, MOON_NOISE),
                                                  ("eight Gaussians", eight_gaussians, MIX_NOISE))):
        trng = np.random.default_rng(args.seed + 10 + i)
        train, test = sampler(20_000, rng=trng), sampler(n_test, rng=trng)
        with common.Timer(f"{target}: train"):
            model = train_toy(train, steps=steps, rng=trng, z_dim=args.z_dim)
        zp = trng.standard_normal((n_prior, args.z_dim))
        means = model.decode(zp)
        samples = means + float(np.exp(model.likelihood.log_sigma()[0])) * trng.standard_normal(means.shape)
        log_px = evaluate.log_likelihood(model, test, k, rng=trng)
        n = {"data_noise": noise, "sigma_x": float(np.exp(model.likelihood.log_sigma()[0])),
             "log_px_model": float(log_px.mean()), "log_px_true": float(true_log_density(target, test).mean()),
             "gap_means": off_support_fraction(target, means), "gap_samples": off_support_fraction(target, samples),
             "gap_data": off_support_fraction(target, test)}
        n["kl_data_model"] = n["log_px_true"] - n["log_px_model"]
        if target == "eight Gaussians":
            shares = mode_shares(samples)
            n.update(mode_share_min=float(shares.min()), mode_share_max=float(shares.max()))
        numbers[target.replace(" ", "_")] = n
        runs[target] = {"data": test, "means": means, "samples": samples, "numbers": n,
                        "angle": np.arctan2(zp[:, -1], zp[:, 0]) if args.z_dim > 1 else np.tanh(zp[:, 0]) * math.pi}
        print(f"{target}: log p(x) model {n['log_px_model']:.3f}, true {n['log_px_true']:.3f} nats "
              f"(KL(data || model) ≈ {n['kl_data_model']:.3f}); sigma_x {n['sigma_x']:.3f} (data {noise}); in the gaps: "
              f"means {100 * n['gap_means']:.1f} %, samples {100 * n['gap_samples']:.1f} %, data {100 * n['gap_data']:.1f} %"
              + (f"; mode shares {shares.min():.3f} .. {shares.max():.3f}" if target == "eight Gaussians" else ""))
    setup = (f"2-64-64-{args.z_dim} VAEs with a Gaussian decoder (learned σx), {steps:,} Adam steps on 20,000 points;\n"
             f"log p(x) per point on {n_test:,} test points (k = {k:,})")
    draw(fixed, runs, args.out / f"guide_{NAME}.png", setup=setup, dpi=50 if args.quick else 100)
    common.write_numbers(args, NAME, numbers, seconds=time.perf_counter() - t0)
    return {"numbers": numbers, "runs": runs}


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6000, help="Adam steps per toy (default 6000)")
    p.add_argument("--z-dim", type=int, default=2, help="latent dimension of the toy VAEs (default 2)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
