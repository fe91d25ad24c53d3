r"""The VAE as a graphical model: the plate diagram, amortized inference, and the amortization gap measured.

Question (study notes 003: "rooted in the methods of variational Bayes, graphical model").
The generative model is the directed graphical model :math:`z_n \to x_n` repeated over a plate
of N data points, with the decoder's weights :math:`\theta` shared by all of them:

.. math::  p_\theta(x_{1:N}, z_{1:N}) = \prod_{n=1}^N p(z_n)\,p_\theta(x_n|z_n),\qquad p(z) = N(0, I).

Variational inference approximates each posterior :math:`p_\theta(z_n|x_n)` by a Gaussian
:math:`q_n = N(\mu_n, \mathrm{diag}\,\sigma_n^2)`. Classical (mean-field) VI gives every data
point its own parameters :math:`\lambda_n = (\mu_n, \log\sigma_n^2)`, found by an optimisation per
point; the VAE *amortizes* it: one encoder :math:`\phi` maps any x to
:math:`\lambda(x) = (\mu_\phi(x), \log\sigma_\phi^2(x))` in one forward pass (Kingma & Welling 2014,
section 2.1; Gershman & Goodman 2014). The price is the **amortization gap** (Cremer, Li &
Duvenaud 2018, "Inference Suboptimality in Variational Autoencoders", section 3):

.. math::
    \log p(x) - \mathcal L[q_\phi] =
    \underbrace{\log p(x) - \mathcal L[q^*]}_{\text{approximation gap}}
    + \underbrace{\mathcal L[q^*] - \mathcal L[q_\phi]}_{\text{amortization gap}},
    \qquad q^* = \arg\max_{q \in \text{diagonal Gaussians}} \mathcal L[q],

with the decoder fixed. Measured here on a trained MNIST VAE, per image:

* :math:`\mathcal L[q_\phi]`: the ELBO with the encoder's :math:`q(z|x)` (:func:`local_elbo`, the
  reconstruction term averaged over ``--eval-samples`` draws, the KL in closed form);
* :math:`\mathcal L[q^*]`: the ELBO after ``--steps`` Adam steps on :math:`\mu` and logvar alone,
  starting from the encoder's output, the decoder fixed (:func:`optimize_local`; the gradient
  by :func:`local_elbo_grad`, written with npvae's shared functions: the likelihood's
  ``log_prob_grad``, the decoder's ``backward``, :func:`npvae.distributions.reparameterize_backward`
  and :func:`npvae.distributions.gaussian_kl_grad`). Adam acts elementwise, so optimising all
  images in one array is the same as optimising each image on its own;
* :math:`\log p(x)`: :func:`npvae.evaluate.log_likelihood` with k = ``--k`` importance samples, twice:
  with the encoder's q as the proposal (the library's default) and with the optimised :math:`q^*`
  (:class:`FixedProposal`); the larger of the two per image. Where the encoder's q is far from
  the posterior its weights are heavy-tailed, and its estimate is the lower one.

Both estimated gaps lean one way: a finite number of noisy Adam steps finds an ELBO at most
:math:`\mathcal L[q^*]` (the amortization gap printed is a lower estimate), and the importance-sampled
:math:`\log p(x)` is biased low (so is the approximation gap).

Setup: a 784-400-20 Bernoulli VAE (npvae's default) trained ``--epochs`` (10) epochs on
``--n-train`` (20,000) MNIST training images by :func:`demos.guide.common.train_vae`, then
evaluated on ``--n-eval`` (300) fixed binarized test images and 300 of its own training
images. ``--quick``: 300 images, 1 epoch, 40 evaluation images, 30 steps, k = 50.

Figure (docs/figures/guide_graphical_model.png): the two plate diagrams (mean-field VI, with a
local :math:`\lambda_n` inside the plate; amortized VI, with :math:`\phi` outside it), the mean
ELBO against Adam steps between the encoder's ELBO and :math:`\log p(x)`, and the per-image gaps.
Numbers: docs/guide_data/graphical_model.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from demos.guide import common
from npvae import Adam, evaluate
from npvae import distributions as dist
from npvae._checks import check_array, check_int

NAME = "graphical_model"
Z_DIM = 20
#: Adam steps at which the mean ELBO is recorded for the figure's curve
TRACE_STEPS = (0, 5, 10, 20, 30, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000)


# ---- the per-image ELBO and its gradient in (mu, logvar), the decoder fixed ------------------------------
def _check_local(model, x, mu, logvar, eps) -> tuple[int, int, int]:
    B, Z = mu.shape if isinstance(mu, np.ndarray) and mu.ndim == 2 else (None, None)
    check_array(mu, "mu", shape=(None, model.z_dim), dtype=model.dtype, finite=True)
    check_array(logvar, "logvar", shape=mu.shape, dtype=model.dtype, finite=True)
    check_array(x, "x", shape=(B, model.x_dim), dtype=model.dtype, finite=True)
    check_array(eps, "eps", shape=(None, B, Z), dtype=model.dtype, finite=True)
    return eps.shape[0], B, Z


def local_elbo(model, x: np.ndarray, mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    r"""The ELBO of each image for a given :math:`q = N(\mu, \mathrm{diag}\,e^{\mathrm{logvar}})`, (B,) float64 nats.

    :math:`\mathcal L = \frac1S\sum_s \log p_\theta(x|\mu + \sigma\odot\epsilon_s) - KL(q\,\|\,N(0, I))`
    (Kingma & Welling 2014, eq. 10), with the model's decoder and likelihood. ``x`` (B, x_dim),
    ``mu`` and ``logvar`` (B, z_dim), ``eps`` (S, B, z_dim), all in the model's dtype. Raises
    TypeError/ValueError naming a bad argument.
    """
    S, B, Z = _check_local(model, x, mu, logvar, eps)
    rec = np.zeros(B)
    chunk = max(1, evaluate.CHUNK_ELEMENTS // (B * model.x_dim))       # draws decoded at a time: bounded memory
    for s in range(0, S, chunk):
        e = eps[s:s + chunk]
        z = dist.reparameterize(mu, logvar, e)                                             # (s, B, Z)
        out = model.decoder.forward(z.reshape(-1, Z)).reshape(len(e), B, model.x_dim)      # (s, B, D)
        rec += model.likelihood.log_prob(x, out).astype(np.float64).sum(axis=0)            # sum_s log p(x|z_s)
    return rec / S - dist.gaussian_kl(mu.astype(np.float64), logvar.astype(np.float64))   # (B,)


def local_elbo_grad(model, x: np.ndarray, mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray):
    r"""The ELBO of each image (as :func:`local_elbo`) and the gradient of :math:`-\sum_b \mathcal L_b` in (mu, logvar).

    Returns ``elbo`` (B,) float64 and ``dmu``, ``dlogvar`` (B, z_dim) in the model's dtype. Image b's
    ELBO depends only on row b of (mu, logvar), so row b of the gradient is that image's own.
    The chain rule of :meth:`npvae.models.VAE.backward`, steps 1-4, with the decoder fixed:

    1. :math:`\partial(-\mathcal L)/\partial\,\mathrm{out} = -\frac1S\,\partial\log p(x|z)/\partial\,\mathrm{out}`
       (Bernoulli: :math:`-(x - \mathrm{sigmoid}(\mathrm{out}))/S`);
    2. the decoder's backward gives :math:`\partial(-\mathcal L)/\partial z` (it also overwrites the
       decoder's ``grads``, which are not used);
    3. :math:`z = \mu + \sigma\epsilon`: :math:`\partial z/\partial\mu = 1`,
       :math:`\partial z/\partial\,\mathrm{logvar} = \sigma\epsilon/2`, summed over the S draws;
    4. the KL: :math:`\partial KL/\partial\mu = \mu`, :math:`\partial KL/\partial\,\mathrm{logvar} = (\sigma^2 - 1)/2`.
    """
    S, B, Z = _check_local(model, x, mu, logvar, eps)
    # forward: z = mu + sigma eps, out = decoder(z)
    z = dist.reparameterize(mu, logvar, eps)                                               # (S, B, Z)
    out = model.decoder.forward(z.reshape(S * B, Z)).reshape(S, B, model.x_dim)             # (S, B, D)
    rec = model.likelihood.log_prob(x, out).astype(np.float64).mean(axis=0)                 # (B,)
    elbo = rec - dist.gaussian_kl(mu.astype(np.float64), logvar.astype(np.float64))
    # 1. d(-L)/d out = -(1/S) d log p(x|z) / d out                                          (S, B, D)
    d_out = model.likelihood.log_prob_grad(x, out, -1.0 / S)
    # 2. decoder backward: d(-L)/dz                                                          (S, B, Z)
    dz = model.decoder.backward(d_out.reshape(S * B, model.x_dim)).reshape(S, B, Z)
    # 3. z = mu + sigma eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2, summed over the S draws (B, Z) each
    dmu, dlogvar = dist.reparameterize_backward(dz, logvar, eps)
    # 4. + dKL: dKL/dmu = mu, dKL/dlogvar = (sigma^2 - 1) / 2
    dkl_dmu, dkl_dlogvar = dist.gaussian_kl_grad(mu, logvar)
    return elbo, dmu + dkl_dmu, dlogvar + dkl_dlogvar


def optimize_local(model, x: np.ndarray, mu0: np.ndarray, logvar0: np.ndarray, *, steps: int, rng: np.random.Generator,
                   lr: float = 1e-2, n_samples: int = 1, trace_eps: np.ndarray | None = None,
                   trace_steps=TRACE_STEPS):
    r"""Maximise each image's ELBO over its own (mu, logvar) by Adam, the decoder fixed: the "optimal" :math:`q^*`.

    Starts from ``mu0``, ``logvar0`` (B, z_dim) (the encoder's output), takes ``steps`` Adam steps
    (:class:`npvae.Adam`) on :math:`-\sum_b\mathcal L_b` with ``n_samples`` fresh draws of eps per step
    from ``rng``. The learning rate decays linearly from ``lr`` at the first step to ``lr/steps`` at
    the last (``schedule``), so the noise of the one-draw gradients averages out instead of
    leaving the parameters jittering at the optimum (500 steps reach the ELBO of 2,000 within
    0.1 nats on the guide's model). If ``trace_eps`` (S, B, z_dim) is given, the mean ELBO over
    the images with that fixed noise is recorded at the steps of ``trace_steps`` up to ``steps``.
    Returns ``mu``, ``logvar`` (B, z_dim, copies) and the trace as a list of (step, mean ELBO).
    """
    steps = check_int(steps, "steps", minimum=0)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    local = {"mu": np.array(mu0, dtype=model.dtype), "logvar": np.array(logvar0, dtype=model.dtype)}
    opt = Adam(local, lr=lr, schedule=lambda t: 1.0 - (t - 1) / steps)     # t = 1 .. steps
    trace = []
    for t in range(steps + 1):
        if trace_eps is not None and t in trace_steps:
            trace.append((t, float(local_elbo(model, x, local["mu"], local["logvar"], trace_eps).mean())))
        if t == steps:
            break
        eps = dist.sample_eps((n_samples, *local["mu"].shape), rng=rng, dtype=model.dtype)
        _, dmu, dlogvar = local_elbo_grad(model, x, local["mu"], local["logvar"], eps)
        opt.step({"mu": dmu, "logvar": dlogvar})
    return local["mu"].copy(), local["logvar"].copy(), trace


class FixedProposal:
    r"""The model with its encoder replaced by given per-image Gaussians, for :func:`npvae.evaluate.log_likelihood`.

    ``proposal(x)`` returns ``(x, mu, logvar)`` for the B images it was built for (``x`` must be
    that (B, x_dim) array, passed as one batch: ``batch_size=B``); ``log_weights`` is the model's,
    :math:`\log p(x|z) + \log p(z) - \log q(z|x)`. Importance sampling with the optimised
    :math:`q^*` as the proposal: where the encoder's q is far from the posterior, its weights are
    heavy-tailed and the estimate of :math:`\log p(x)` is low (the guide's section on p(x)).
    """

    def __init__(self, model, x: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> None:
        self.model, self.x, self.mu, self.logvar = model, x, mu, logvar
        self.noise_dim, self.dtype, self.x_dim, self.hidden = model.noise_dim, model.dtype, model.x_dim, model.hidden

    def proposal(self, x: np.ndarray):
        if np.shape(x) != self.x.shape or not np.array_equal(x, self.x):
            raise ValueError(f"x: expected the ({len(self.x)}, {self.x_dim}) images this proposal was built for, "
                             f"in one batch, got an array of shape {np.shape(x)}")
        return x, self.mu, self.logvar

    def log_weights(self, q, eps: np.ndarray) -> np.ndarray:
        return self.model.log_weights(q, eps)


def gaps(model, x: np.ndarray, *, steps: int, k: int, eval_samples: int, rng: np.random.Generator, lr: float = 1e-2,
         n_samples: int = 1) -> dict:
    r"""The three numbers per image: ``elbo_encoder``, ``elbo_optimized``, ``log_px`` ((B,) float64 nats each),
    the two gaps ``amortization`` = elbo_optimized - elbo_encoder and ``approximation`` = log_px -
    elbo_optimized, and the ``trace`` of :func:`optimize_local`. ``x`` (B, x_dim) binarized images."""
    mu, logvar = model.encode(x)
    eval_eps = dist.sample_eps((eval_samples, *mu.shape), rng=rng, dtype=model.dtype)    # the same noise for both ELBOs
    trace_eps = eval_eps[: max(1, eval_samples // 10)]
    mu_opt, logvar_opt, trace = optimize_local(model, x, mu, logvar, steps=steps, rng=rng, lr=lr,
                                               n_samples=n_samples, trace_eps=trace_eps)
    out = {"elbo_encoder": local_elbo(model, x, mu, logvar, eval_eps),
           "elbo_optimized": local_elbo(model, x, mu_opt, logvar_opt, eval_eps),
           "log_px_encoder": evaluate.log_likelihood(model, x, k, rng=rng),
           "log_px_optimized": evaluate.log_likelihood(FixedProposal(model, x, mu_opt, logvar_opt), x, k, rng=rng,
                                                       batch_size=len(x)),
           "trace": trace, "sigma_encoder": np.exp(0.5 * logvar), "sigma_optimized": np.exp(0.5 * logvar_opt),
           "mu_shift": np.abs(mu_opt - mu) / np.exp(0.5 * logvar_opt)}       # |mu* - mu| in posterior s.d.s
    # the better of the two importance-sampling estimates, image by image (both are low in expectation)
    out["log_px"] = np.maximum(out["log_px_encoder"], out["log_px_optimized"])
    out["amortization"] = out["elbo_optimized"] - out["elbo_encoder"]
    out["approximation"] = out["log_px"] - out["elbo_optimized"]
    return out


# ---- the plate diagrams ---------------------------------------------------------------------------------
def _node(ax, xy, label, *, observed=False, r=0.42):
    ax.add_patch(Circle(xy, r, facecolor="#c8c8c8" if observed else "white", edgecolor="black", lw=1.6, zorder=3))
    ax.text(*xy, label, ha="center", va="center", fontsize=17, zorder=4)


def _param(ax, xy, label, *, side="left"):
    ax.add_patch(Circle(xy, 0.09, color="black", zorder=3))
    ax.text(xy[0] + (-0.2 if side == "left" else 0.2), xy[1], label, ha="right" if side == "left" else "left",
            va="center", fontsize=15)


def _arrow(ax, a, b, *, dashed=False, color="black", rad=0.0, shrink=(30, 30)):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=16, lw=1.6, color=color,
                                 linestyle=(0, (4, 3)) if dashed else "-", shrinkA=shrink[0], shrinkB=shrink[1],
                                 connectionstyle=f"arc3,rad={rad}", zorder=2))


def draw_plate(ax, *, amortized: bool) -> None:
    """One plate diagram on ``ax``: z_n -> x_n (solid, p(z) p_theta(x|z)) in a plate over n = 1..N, theta outside;
    the variational q dashed: a local lambda_n inside the plate (``amortized=False``) or the shared
    encoder phi outside it, with x_n -> z_n (``amortized=True``)."""
    z, x = (2.0, 3.2), (2.0, 1.2)
    ax.add_patch(FancyBboxPatch((0.85, 0.35), 2.6, 3.75, boxstyle="round,pad=0.02,rounding_size=0.15",
                                fill=False, lw=1.4))
    ax.text(3.35, 0.5, "n = 1 … N", ha="right", va="bottom", fontsize=12)
    _node(ax, z, "$z_n$")
    _node(ax, x, "$x_n$", observed=True)
    _arrow(ax, z, x)
    ax.text(1.35, 2.2, r"$p_\theta(x|z)$", ha="right", va="center", fontsize=12)
    ax.text(2.0, 3.75, r"$p(z)=\mathcal{N}(0,I)$", ha="center", va="bottom", fontsize=11)
    _param(ax, (0.25, 1.2), r"$\theta$")
    _arrow(ax, (0.25, 1.2), x, shrink=(6, 30))
    q = common.COLORS["q"]
    if amortized:
        _param(ax, (4.05, 2.2), r"$\phi$", side="right")
        _arrow(ax, x, z, dashed=True, color=q, rad=-0.45)
        _arrow(ax, (4.05, 2.2), (2.55, 2.2), dashed=True, color=q, shrink=(6, 2))
        ax.text(2.62, 2.0, r"$q_\phi(z|x)$", color=q, ha="left", va="top", fontsize=12)
        title = "amortized VI (the VAE):\none encoder φ for every x"
    else:
        ax.add_patch(Circle((3.1, 2.2), 0.09, color=q, zorder=3))
        ax.text(3.1, 1.95, r"$\lambda_n$", color=q, ha="center", va="top", fontsize=15)
        _arrow(ax, (3.1, 2.2), z, dashed=True, color=q, shrink=(5, 30))
        ax.text(2.75, 3.0, r"$q_{\lambda_n}(z_n)$", color=q, ha="left", va="center", fontsize=12)
        title = "mean-field VI: its own $\\lambda_n=(\\mu_n, \\log\\sigma_n^2)$\nper data point, optimised point by point"
    ax.set_title(title, fontsize=11.5)
    ax.set_xlim(-0.3, 4.6)
    ax.set_ylim(0.1, 4.4)
    ax.set_aspect("equal")
    ax.set_axis_off()


def draw(results: dict, path: Path, *, setup: str, dpi: int = 100) -> Path:
    """Plate diagrams (top), the mean ELBO against Adam steps and the per-image gaps (bottom)."""
    with common.guide_style():
        fig = Figure(figsize=(11, 8.6), dpi=dpi, layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.15))
        ax1, ax2 = top.subplots(1, 2)
        draw_plate(ax1, amortized=False)
        draw_plate(ax2, amortized=True)
        top.suptitle("solid: the generative model p(z) p(x|z); dashed: the variational posterior q", fontsize=11.5)
        axc, axg = bottom.subplots(1, 2, width_ratios=(1.25, 1))
        r = results["test"]
        steps, elbo = np.array(r["trace"]).T
        lpx, enc = r["log_px"].mean(), r["elbo_encoder"].mean()
        axc.plot(steps, elbo, "o-", color=common.COLORS["q"], ms=4, label="ELBO of q optimised per image (Adam)")
        axc.axhline(lpx, color="black", lw=1.5, label="log p(x) (importance sampling)")
        axc.axhline(enc, color=common.COLORS["q"], ls="--", lw=1.5, label="ELBO of the encoder's q(z|x)")
        xa = steps[-1] * 1.04
        opt = r["elbo_optimized"].mean()
        for lo, hi, name in ((enc, opt, "amortization\ngap"), (opt, lpx, "approximation\ngap")):
            axc.annotate("", (xa, hi), (xa, lo), arrowprops=dict(arrowstyle="<->", lw=1.3))
            axc.text(xa * 1.02, (lo + hi) / 2, f"{name}\n{hi - lo:.2f} nats", va="center", fontsize=10)
        axc.set_xlim(-steps[-1] * 0.02, steps[-1] * 1.45)
        axc.set(xlabel="Adam steps on (μ, log σ²) of each test image, decoder fixed",
                ylabel="mean over the test images (nats)",
                title=f"ELBO of q against optimisation steps ({len(r['log_px'])} test images)")
        axc.legend(loc="lower left", bbox_to_anchor=(0.1, 0.2), fontsize=9.5)
        axc.grid(alpha=0.3)
        for split, color in (("test", common.COLORS["test"]), ("train", common.COLORS["train"])):
            g = results[split]
            axg.scatter(g["amortization"], g["approximation"], s=9, alpha=0.6, color=color, linewidths=0,
                        label=f"{split} images: means {g['amortization'].mean():.2f}, {g['approximation'].mean():.2f}")
        axg.set(xlabel="amortization gap per image (nats)", ylabel="approximation gap per image (nats)",
                title="the two gaps, image by image")
        axg.axvline(0, color="black", lw=0.8)
        axg.axhline(0, color="black", lw=0.8)
        axg.legend(loc="upper right", fontsize=9.5)
        axg.grid(alpha=0.3)
        bottom.suptitle(setup, fontsize=11)
    return common.save_figure(fig, path)


def run(args) -> dict:
    """Train the VAE, measure the gaps on test and training images, draw, write the numbers."""
    t0 = time.perf_counter()
    n_train, n_eval, epochs = (300, 40, 1) if args.quick else (args.n_train, args.n_eval, args.epochs)
    steps, k, eval_samples = (30, 50, 20) if args.quick else (args.steps, args.k, args.eval_samples)
    train_x, _, test_x, _ = common.load_subset(n_train, n_eval, seed=args.seed)
    with common.Timer("train"):
        model = common.train_vae(train_x, z_dim=Z_DIM, epochs=epochs, seed=args.seed)
    sets = {"test": common.binarize(test_x, rng=np.random.default_rng(args.seed + 1)),
            "train": common.binarize(train_x[:n_eval], rng=np.random.default_rng(args.seed + 2))}
    results = {}
    for i, (split, x) in enumerate(sets.items()):
        with common.Timer(f"gaps on {split} images"):
            results[split] = gaps(model, x, steps=steps, k=k, eval_samples=eval_samples, lr=args.lr,
                                  rng=np.random.default_rng(args.seed + 10 + i))
        r = results[split]
        print(f"{split}: mean ELBO with the encoder {r['elbo_encoder'].mean():.2f}, optimised {r['elbo_optimized'].mean():.2f}, "
              f"log p(x) {r['log_px'].mean():.2f} nats; amortization gap {r['amortization'].mean():.2f}, "
              f"approximation gap {r['approximation'].mean():.2f}")
    setup = (f"784-400-{Z_DIM} Bernoulli VAE, {epochs} epochs on {n_train:,} MNIST images; {steps} Adam steps "
             f"(lr {args.lr:g} decaying to 0, one draw per step);\nELBOs with {eval_samples:,} draws, log p(x) with k = {k:,}")
    draw(results, args.out / f"guide_{NAME}.png", setup=setup, dpi=50 if args.quick else 100)
    numbers = {"n_train": n_train, "epochs": epochs, "n_eval": n_eval, "steps": steps, "lr": args.lr, "k": k,
               "eval_samples": eval_samples, "z_dim": Z_DIM,
               "train_final_loss": model.history[-1]["train_loss"]}
    for split, r in results.items():
        se = lambda a: float(a.std(ddof=1) / np.sqrt(len(a)))  # noqa: E731 - the standard error of a mean
        numbers[split] = {
            "elbo_encoder": float(r["elbo_encoder"].mean()), "elbo_optimized": float(r["elbo_optimized"].mean()),
            "log_px": float(r["log_px"].mean()), "log_px_encoder": float(r["log_px_encoder"].mean()),
            "log_px_optimized": float(r["log_px_optimized"].mean()),
            "fraction_optimized_proposal_higher": float(np.mean(r["log_px_optimized"] > r["log_px_encoder"])),
            "amortization_gap": float(r["amortization"].mean()),
            "amortization_gap_se": se(r["amortization"]), "approximation_gap": float(r["approximation"].mean()),
            "approximation_gap_se": se(r["approximation"]),
            "amortization_share": float(r["amortization"].mean() / (r["log_px"] - r["elbo_encoder"]).mean()),
            "fraction_improved": float(np.mean(r["amortization"] > 0)),
            "sigma_ratio": float(np.exp(np.mean(np.log(r["sigma_optimized"] / r["sigma_encoder"])))),
            "mu_shift_median": float(np.median(r["mu_shift"])),
            "trace": [[int(s), float(e)] for s, e in r["trace"]],
            # share of the ELBO gained by the last step that was reached after 50 and 100 steps
            "gain_reached": {str(t): float((e - r["trace"][0][1]) / (r["trace"][-1][1] - r["trace"][0][1]))
                             for t, e in r["trace"] if t in (50, 100)},
        }
    seconds = time.perf_counter() - t0
    common.write_numbers(args, NAME, numbers, seconds=seconds)
    return {"results": results, "numbers": numbers, "model": model}


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=20_000, help="MNIST training images (default 20000)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--n-eval", type=int, default=300, help="test images, and as many training images (default 300)")
    p.add_argument("--steps", type=int, default=500, help="Adam steps on each image's (mu, logvar) (default 500)")
    p.add_argument("--lr", type=float, default=1e-2, help="their Adam learning rate (default 0.01)")
    p.add_argument("--k", type=int, default=2000, help="importance samples for log p(x) (default 2000)")
    p.add_argument("--eval-samples", type=int, default=1000, help="draws for each ELBO (default 1000)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
