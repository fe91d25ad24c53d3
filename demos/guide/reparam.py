r"""Why the reparameterization trick? The variance of the score-function (REINFORCE) estimator
against the pathwise (reparameterization) one.

Question. The ELBO's reconstruction term is an expectation under the encoder,
:math:`E_{q_\phi(z|x)}[f(z)]` with :math:`f(z) = \log p_\theta(x|z)`, and we need its gradient with
respect to :math:`\phi`. Two unbiased Monte Carlo estimators exist (Mohamed, Rosca, Figurnov,
Mnih 2020, "Monte Carlo Gradient Estimation in Machine Learning", JMLR 21(132), sections 4-5):

* score function (REINFORCE, likelihood ratio), for :math:`z \sim N(\mu, \sigma^2)`:
  :math:`\hat g_{SF} = (f(z) - b)\,\partial_\theta \log N(z; \mu, \sigma^2)` with
  :math:`\partial_\mu \log N = (z-\mu)/\sigma^2` and
  :math:`\partial_\sigma \log N = ((z-\mu)^2 - \sigma^2)/\sigma^3`; ``b = 0`` is the plain
  estimator, ``b = E[f(z)]`` (a constant baseline; :math:`E[\partial\log N] = 0` keeps it unbiased)
  the baseline one;
* pathwise (reparameterization): :math:`z = \mu + \sigma\epsilon`, :math:`\epsilon\sim N(0,1)`,
  :math:`\hat g_{PW,\mu} = f'(z)`, :math:`\hat g_{PW,\sigma} = f'(z)\,\epsilon`.

Both have the same mean (the true gradient). Neither always wins on a toy cost: for
:math:`(z-k)^2` the pathwise estimator is far better, for :math:`\exp(-kz^2)` and :math:`\cos(kz)`
with large k (a rapidly varying f, large f') the score function can be better, and the constant
baseline E[f] is not the variance-optimal one (that is :math:`E[f s^2]/E[s^2]`), so it can even
hurt (Mohamed et al. 2020, figure 2 and section 7). On the VAE's high-dimensional f the
pathwise estimator wins by orders of magnitude. What differs is the per-sample variance
:math:`V = E[\hat g^2] - (E\hat g)^2`, which :func:`exact_variance` computes EXACTLY by
``scipy.integrate.quad`` (both expectations by quadrature against the N(μ, σ²) density) and
:func:`mc_variance` estimates from samples (with the standard error of a sample variance).

Part 1 (toy, as the paper's figure 2, μ = σ = 1): the variance of each estimator of
:math:`\partial_\mu` and :math:`\partial_\sigma` of :math:`E_{N(\mu,\sigma^2)}[f(z;k)]` as a function of
``k`` for three costs (:data:`COSTS`): :math:`f = (z-k)^2`, :math:`f = \exp(-k z^2)`,
:math:`f = \cos(k z)`. Lines: exact (quad); dots: Monte Carlo with 2,000 samples.

Part 2 (MNIST): a 784-400-10 Bernoulli VAE trained 5 epochs on 10,000 training images
(``--quick``: 300 images, 1 epoch). For a batch of 100 test images, :func:`encoder_gradients`
draws the gradient of the batch's reconstruction loss :math:`\frac1B\sum_n -\log p(x_n|z_n)`
with respect to every encoder weight R = 200 times (fresh ε each time), by the pathwise
estimator (backpropagation through :math:`z = \mu + \sigma\epsilon`, exactly what
``VAE.backward`` does) and by the score-function estimator (plain, and with the per-example
baseline :math:`b(x_n)` = the mean of f over 100 separate draws). :func:`total_variance`
sums the per-coordinate variances over all encoder weights (the trace of the covariance).

Flags (part 2): ``--z-dim``, ``--epochs``, ``--batch``. Numbers: docs/guide_data/reparam.json.

Printed: for each cost, the exact variances at k = 1 (SF, SF+baseline, PW, for μ and σ);
for MNIST, the total variance of each estimator and the ratios SF/PW and SF+baseline/PW.
Figure: docs/figures/guide_reparam_variance.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import matplotlib.lines
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from scipy import integrate

from demos.guide import common
from npvae import distributions as dist

ESTIMATORS = ("score function", "score function + baseline", "pathwise")

#: cost name -> (f(z, k), f'(z, k), grid of k for the figure)
COSTS = {
    "(z - k)²": (lambda z, k: (z - k) ** 2, lambda z, k: 2 * (z - k), np.linspace(-3, 3, 25)),
    "exp(-k z²)": (lambda z, k: np.exp(-k * z * z), lambda z, k: -2 * k * z * np.exp(-k * z * z),
                   np.linspace(0.1, 3, 25)),
    "cos(k z)": (lambda z, k: np.cos(k * z), lambda z, k: -k * np.sin(k * z), np.linspace(0.1, 3, 25)),
}


def estimator_samples(f, df, z, mu: float, sigma: float, wrt: str, baseline: float = 0.0) -> dict:
    r"""Per-sample gradient estimates of :math:`\partial_{wrt} E_{N(\mu,\sigma^2)}[f(z)]` at the points ``z``.

    ``f``, ``df``: the cost and its derivative (vectorised); ``z``: float64 array of any
    shape (samples of N(μ, σ²), or quadrature nodes); ``wrt``: "mu" or "sigma";
    ``baseline``: b of the baseline score-function estimator. Returns a dict estimator
    name -> array of ``z``'s shape:

    * score function: :math:`f(z)\,s(z)`, :math:`s_\mu = (z-\mu)/\sigma^2`,
      :math:`s_\sigma = ((z-\mu)^2-\sigma^2)/\sigma^3` (the score, Mohamed et al. 2020 eq. 13);
    * score function + baseline: :math:`(f(z) - b)\,s(z)`;
    * pathwise: :math:`f'(z)\,\partial z/\partial\theta` with :math:`z = \mu + \sigma\epsilon`,
      :math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial\sigma = \epsilon = (z-\mu)/\sigma`
      (eq. 35). Raises ValueError for another ``wrt``.
    """
    eps = (z - mu) / sigma
    if wrt not in ("mu", "sigma"):
        raise ValueError(f"wrt: expected 'mu' or 'sigma', got {wrt!r}")
    if wrt == "mu":
        score, dz = eps / sigma, np.ones_like(z)
    elif wrt == "sigma":
        score, dz = (eps * eps - 1.0) / sigma, eps
    else:
        raise ValueError(f"wrt: expected 'mu' or 'sigma', got {wrt!r}")
    fz = f(z)
    return {"score function": fz * score, "score function + baseline": (fz - baseline) * score,
            "pathwise": df(z) * dz}


def gaussian_expectation(g, mu: float, sigma: float) -> float:
    r""":math:`E_{N(\mu,\sigma^2)}[g(z)] = \int g(\mu + \sigma\epsilon)\,\phi(\epsilon)\,d\epsilon` by ``scipy.integrate.quad``.

    Integrated over ε in [-12, 12] (the omitted tails weigh < 1e-32) with up to 400
    subintervals; float. Raises RuntimeError if quad's error estimate exceeds 1e-7 relative.
    """
    def integrand(e):
        return g(mu + sigma * e) * np.exp(-0.5 * e * e) / np.sqrt(2 * np.pi)
    value, err = integrate.quad(integrand, -12.0, 12.0, limit=400, epsabs=1e-12, epsrel=1e-10)
    if err > 1e-7 * max(1.0, abs(value)):
        raise RuntimeError(f"quad: error estimate {err:.2e} too large for value {value:.6g}")
    return float(value)


def exact_variance(f, df, mu: float, sigma: float, wrt: str) -> dict:
    r"""Exact per-sample variance of each estimator: :math:`V = E[\hat g^2] - (E\hat g)^2`, both by quad.

    The baseline is the exact :math:`b = E[f(z)]`. Returns dict estimator name ->
    ``(mean, variance)`` (floats; the three means agree: each estimator is unbiased), plus
    ``"baseline"`` -> b.
    """
    b = gaussian_expectation(f, mu, sigma)
    out = {"baseline": b}
    for name in ESTIMATORS:
        def g(z, name=name):
            return estimator_samples(f, df, np.asarray(z, dtype=np.float64), mu, sigma, wrt, b)[name]
        m1 = gaussian_expectation(g, mu, sigma)
        m2 = gaussian_expectation(lambda z: g(z) ** 2, mu, sigma)
        out[name] = (m1, m2 - m1 * m1)
    return out


def mc_variance(f, df, mu: float, sigma: float, wrt: str, n: int, *, rng: np.random.Generator,
                baseline: float) -> dict:
    r"""Monte Carlo estimate of each estimator's per-sample mean and variance from ``n`` draws z ~ N(μ, σ²).

    Returns dict estimator name -> ``(mean, variance, standard error of the variance)``,
    the standard error :math:`\sqrt{(\hat m_4 - \hat V^2)/n}` (:math:`\hat m_4` the sample
    fourth central moment; the large-n variance of a sample variance).
    """
    z = mu + sigma * rng.standard_normal(n)
    out = {}
    for name, g in estimator_samples(f, df, z, mu, sigma, wrt, baseline).items():
        c = g - g.mean()
        v = float(np.mean(c * c))
        m4 = float(np.mean(c ** 4))
        out[name] = (float(g.mean()), v * n / (n - 1), float(np.sqrt(max(m4 - v * v, 0.0) / n)))
    return out


# ---- part 2: the encoder of a trained MNIST VAE ---------------------------------------
def _flat_encoder_grads(model) -> np.ndarray:
    return np.concatenate([g.ravel() for name, g in model.grads.items() if name.startswith("encoder.")]).astype(
        np.float64)


def encoder_gradients(model, x: np.ndarray, *, repeats: int, rng: np.random.Generator,
                      baseline_samples: int = 100) -> dict:
    r"""``repeats`` draws of each estimator of :math:`\nabla_\phi \frac1B\sum_n E_{q_\phi(z|x_n)}[-\log p_\theta(x_n|z)]`.

    ``x``: (B, 784) binary images in the model's dtype. The encoder runs once
    (μ, logvar: (B, Z)); each repeat draws ε (B, Z), sets :math:`z = \mu + \sigma\epsilon`,
    evaluates :math:`f_n = -\log p(x_n|z_n)` and, chain rule in order:

    * pathwise: :math:`\partial f/\partial z` by the decoder's backward, then
      ``dist.reparameterize_backward`` (:math:`\partial z/\partial\mu = 1`,
      :math:`\partial z/\partial\,\mathrm{logvar} = \sigma\epsilon/2`) - the same steps as
      ``VAE.backward`` without the KL;
    * score function: :math:`(f_n - b_n)\,\partial\log q(z_n|x_n)/\partial(\mu, \mathrm{logvar})`
      from ``dist.gaussian_log_prob_grad`` (:math:`(z-\mu)/\sigma^2` and
      :math:`\tfrac12((z-\mu)^2/\sigma^2 - 1)`), with :math:`b_n = 0` (plain) or the mean of
      :math:`f_n` over ``baseline_samples`` independent draws (baseline);

    then divided by B and pushed back through ``dist.split_mu_logvar_backward`` (the split of the
    encoder's output h into μ and the clipped logvar) and the encoder's backward. Returns dict
    estimator name -> ``(mean, var)``, each (P,) float64 over the ``repeats`` draws (P = number
    of encoder parameters; ``var`` the unbiased per-coordinate sample variance, accumulated
    in one pass so that no (repeats, P) array is held).
    """
    B = x.shape[0]
    dt = model.dtype
    h = model.encoder.forward(x).copy()                               # [mu, logvar_raw], (B, 2Z)
    mu, logvar = dist.split_mu_logvar(h)
    mu, logvar = mu.copy(), logvar.copy()

    def f_and_dz(eps, need_grad):
        z = dist.reparameterize(mu, logvar, eps)                      # (B, Z)
        out = model.decoder.forward(z)
        log_px = model.likelihood.log_prob(x, out)                    # (B,)
        if not need_grad:
            return -log_px, None
        d_out = model.likelihood.log_prob_grad(x, out, -1.0)          # d(-log p)/d out, (B, 784)
        dz = model.decoder.backward(d_out.astype(dt))                 # d(-log p)/dz, (B, Z)
        return -log_px, dz

    base = np.zeros(B, dtype=np.float64)
    for _ in range(baseline_samples):
        base += f_and_dz(dist.sample_eps(mu.shape, rng=rng, dtype=dt), False)[0] / baseline_samples
    sums = {name: [0.0, 0.0] for name in ESTIMATORS}  # sum of g, sum of g^2 (shifted by the first draw)
    shift = {}
    for _ in range(repeats):
        eps = dist.sample_eps(mu.shape, rng=rng, dtype=dt)
        f, dz = f_and_dz(eps, True)
        z = dist.reparameterize(mu, logvar, eps)
        _, dlogq_dmu, dlogq_dlogvar = dist.gaussian_log_prob_grad(z, mu, logvar)
        d_q = {"pathwise": dist.reparameterize_backward(dz[None], logvar, eps[None])}  # name -> (dL/dmu, dL/dlogvar)
        for name, b in (("score function", 0.0), ("score function + baseline", base)):
            w = (f - b)[:, None].astype(dt)
            d_q[name] = (w * dlogq_dmu, w * dlogq_dlogvar)
        for name, (dmu, dlogvar) in d_q.items():
            dh = dist.split_mu_logvar_backward(h, (dmu / B).astype(dt), (dlogvar / B).astype(dt))  # the logvar clip
            model.encoder.backward(dh)
            g = _flat_encoder_grads(model)
            # var = (sum d^2 - (sum d)^2 / R) / (R - 1) with d = g - g_first: shifting keeps it accurate
            d = g - shift.setdefault(name, g.copy())
            sums[name][0] += d
            sums[name][1] += d * d
    model._cache = None  # the layers' caches no longer belong to a forward
    return {name: (shift[name] + s1 / repeats, (s2 - s1 * s1 / repeats) / (repeats - 1))
            for name, (s1, s2) in sums.items()}


def total_variance(var: np.ndarray) -> float:
    """Trace of the covariance of a gradient estimator: the sum of its (P,) per-coordinate variances."""
    return float(np.sum(var))


def run(args) -> dict:
    """Compute both parts, draw the figure, print the numbers, write the JSON; returns the numbers (a dict)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    mu0, sigma0 = 1.0, 1.0
    n_mc = 300 if args.quick else 2000
    n_k = 6 if args.quick else 25
    results = {"toy": {}, "toy_k1": {}}
    for cname, (f, df, ks) in COSTS.items():
        ks = ks if not args.quick else np.linspace(ks[0], ks[-1], n_k)
        results["toy"][cname] = {}
        for wrt in ("mu", "sigma"):
            exact = {name: [] for name in ESTIMATORS}
            mc = {name: [] for name in ESTIMATORS}
            for k in ks:
                fk = (lambda z, k=k: f(z, k))
                dfk = (lambda z, k=k: df(z, k))
                ex = exact_variance(fk, dfk, mu0, sigma0, wrt)
                est = mc_variance(fk, dfk, mu0, sigma0, wrt, n_mc, rng=rng, baseline=ex["baseline"])
                for name in ESTIMATORS:
                    exact[name].append(ex[name][1])
                    mc[name].append(est[name][1:])
            results["toy"][cname][wrt] = {"k": ks, "exact": exact, "mc": {n: np.array(v) for n, v in mc.items()}}
            ex1 = exact_variance(lambda z: f(z, 1.0), lambda z: df(z, 1.0), mu0, sigma0, wrt)
            results["toy_k1"][f"{cname}, d/d{wrt}"] = {name: ex1[name][1] for name in ESTIMATORS}

    # ---- part 2: MNIST ------------------------------------------------------------------
    n_train, epochs, B, R = (300, 1, 20, 30) if args.quick else (10000, 5, 100, 200)
    epochs = args.epochs or epochs
    B = args.batch or B
    z_dim = args.z_dim or 10
    train_x, _, test_x, _ = common.load_subset(n_train, 1000 if not args.quick else 100, seed=args.seed)
    with common.Timer("train"):
        model = common.train_vae(train_x, z_dim=z_dim, hidden=(400,), epochs=epochs, seed=args.seed)
    x = common.binarize(test_x[:B], rng=rng, dtype=model.dtype)
    with common.Timer("encoder gradients"):
        draws = encoder_gradients(model, x, repeats=R, rng=rng)
    tv = {name: total_variance(var) for name, (_, var) in draws.items()}
    results["mnist"] = {"total_variance": tv, "ratio_sf_pw": tv["score function"] / tv["pathwise"],
                        "ratio_sfb_pw": tv["score function + baseline"] / tv["pathwise"],
                        "z_dim": z_dim, "n_train": n_train, "epochs": epochs, "batch": B, "repeats": R,
                        "setup": f"784-400-{z_dim} VAE, {n_train} train images, {epochs} epoch(s), batch {B}, "
                                 f"{R} draws"}
    draw(results, draws, args.out / "guide_reparam_variance.png", n_mc=n_mc)

    for key, vals in results["toy_k1"].items():
        print(f"exact variance {key}, k=1: " + ", ".join(f"{n} {vals[n]:.4g}" for n in ESTIMATORS))
    print(f"MNIST ({results['mnist']['setup']}): total variance " +
          ", ".join(f"{n} {tv[n]:.4g}" for n in ESTIMATORS))
    print(f"ratio score function / pathwise = {results['mnist']['ratio_sf_pw']:.1f}; "
          f"score function + baseline / pathwise = {results['mnist']['ratio_sfb_pw']:.1f}")
    results["summary"] = summarize(results)
    for line in results["summary"]["baseline_hurts"]:
        print(f"the constant baseline E[f] raises the variance: {line['case']}: {line['score function']:.3f} -> "
              f"{line['score function + baseline']:.3f}")
    common.write_numbers(args, "reparam", {k: v for k, v in results.items()}, seconds=time.perf_counter() - t0)
    return results


def summarize(results: dict) -> dict:
    """The numbers the guide quotes: ranges over the toy grids, the cases where the baseline hurts, the k = 3 ends."""
    sq = results["toy"]["(z - k)²"]["mu"]["exact"]
    hurts = [{"case": case, **vals} for case, vals in results["toy_k1"].items()
             if vals["score function + baseline"] > vals["score function"]]
    wins = {}
    for cname in ("exp(-k z²)", "cos(k z)"):
        for wrt in ("mu", "sigma"):
            ex = results["toy"][cname][wrt]["exact"]
            wins[f"{cname}, d/d{wrt}, k={results['toy'][cname][wrt]['k'][-1]:g}"] = {
                "score function": ex["score function"][-1], "pathwise": ex["pathwise"][-1]}
    return {"square_mu_pathwise": [min(sq["pathwise"]), max(sq["pathwise"])],
            "square_mu_sf": [min(sq["score function"]), max(sq["score function"])],
            "square_mu_sfb": [min(sq["score function + baseline"]), max(sq["score function + baseline"])],
            "baseline_hurts": hurts, "largest_k": wins}


def draw(results: dict, draws: dict, path, *, n_mc: int) -> Path:
    """Rows 1-2: the toy costs (exact lines, Monte Carlo dots); row 3: the MNIST encoder's gradient variance."""
    with common.guide_style():
        fig = Figure(figsize=(11, 10.8), layout="constrained")
        axes = fig.subplots(3, 3)
        for col, cname in enumerate(COSTS):
            for row, wrt in enumerate(("mu", "sigma")):
                ax = axes[row, col]
                t = results["toy"][cname][wrt]
                for name in ESTIMATORS:
                    ax.plot(t["k"], t["exact"][name], color=common.COLORS[name], lw=2)
                    v, se = t["mc"][name].T
                    ax.errorbar(t["k"], v, yerr=2 * se, fmt="o", ms=2.5, color=common.COLORS[name], alpha=0.6, lw=0.8)
                ax.set_yscale("log")
                ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_xlabel("k")
                ax.set_title(f"∂/∂{'μ' if wrt == 'mu' else 'σ'} E[{cname}],  z ~ N(1, 1)")
                ax.grid(alpha=0.3, lw=0.5)
                if col == 0:
                    ax.set_ylabel("variance per sample (log)")
        tv = results["mnist"]["total_variance"]
        names = list(ESTIMATORS)
        ax = axes[2, 0]
        ax.bar(range(3), [tv[n] for n in names], color=[common.COLORS[n] for n in names])
        ax.set_yscale("log")
        ax.set_xticks(range(3), ["SF", "SF +\nbaseline", "pathwise"])
        for i, n in enumerate(names):
            ax.text(i, tv[n], f"{tv[n]:.3g}\n×{tv[n] / tv['pathwise']:,.0f}" if n != "pathwise" else f"{tv[n]:.3g}",
                    ha="center", va="bottom", fontsize=10)
        ax.set_ylim(top=max(tv.values()) * 60)
        ax.set_ylabel("total variance (log)")
        m = results["mnist"]
        ax.set_title(f"MNIST VAE (784-400-{m['z_dim']}): total variance\nof the encoder-weight gradient")
        ax = axes[2, 1]
        v = {n: draws[n][1] for n in names}
        idx = np.flatnonzero(v["pathwise"] > 0)
        idx = idx[np.random.default_rng(0).permutation(len(idx))[:4000]]
        for n in ("score function", "score function + baseline"):
            ax.loglog(v["pathwise"][idx], v[n][idx], ".", ms=1.5, color=common.COLORS[n], alpha=0.6)
        lo, hi = v["pathwise"][idx].min(), v["pathwise"][idx].max()
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="equal variance")
        ax.set_xlabel("pathwise variance")
        ax.set_ylabel("score-function variance")
        ax.set_title("each encoder weight\n(4,000 shown)")
        ax.legend(loc="upper left")
        ax = axes[2, 2]
        ax.set_axis_off()
        handles = [matplotlib.lines.Line2D([], [], color=common.COLORS[n], lw=2.5, label=n) for n in names]
        handles.append(matplotlib.lines.Line2D([], [], color="gray", lw=0, marker="o", ms=4,
                                               label=f"Monte Carlo, {n_mc} draws (± 2 s.e.)"))
        handles.append(matplotlib.lines.Line2D([], [], color="gray", lw=2, label="exact (scipy quad)"))
        ax.legend(handles=handles, loc="upper left", frameon=False, title="estimator")
        ax.text(0.0, 0.28, f"MNIST: {m['n_train']} training images,\n{m['epochs']} epochs; gradient of a batch\n"
                f"of {m['batch']} test images, {m['repeats']} draws.\nSF: score function (REINFORCE)",
                transform=ax.transAxes, va="top", fontsize=10)
        fig.suptitle("Why reparameterize: variance of score-function vs pathwise gradient estimators\n"
                     "rows 1-2: toy costs f(z; k) with z ~ N(1, 1) (Mohamed et al. 2020, figure 2); row 3: a trained "
                     "MNIST VAE")
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--z-dim", type=int, default=None, help="latent dimension of the MNIST VAE (default 10)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of the MNIST VAE (default 5; --quick 1)")
    p.add_argument("--batch", type=int, default=None,
                   help="test images in the batch whose gradient is drawn (default 100; --quick 20)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
