r"""Can q(z|x) be richer than a Gaussian? One 2-D posterior drawn four ways: true, Gaussian, planar flow, IAF.

Question (guide: "Can q be richer than a Gaussian? Normalizing flows"; study notes 004, "Improved
Variational Inference with Inverse Autoregressive Flow"). A normalizing flow pushes the
Gaussian :math:`q_0(z_0|x)` through invertible maps :math:`z_K = f_K\circ\dots\circ f_1(z_0)`, and
the change of variables gives its density,

.. math:: \log q(z_K|x) = \log q_0(z_0|x) - \sum_{k=1}^K \log\left|\det\frac{\partial f_k}{\partial z_{k-1}}\right| .

With a 2-D latent everything can be drawn and measured exactly: the true posterior
:math:`p(z|x) = p(x,z)/p(x)` by quadrature on a grid (:func:`demos.guide.models_common.grid_posterior`),
and each q's density on the same grid, exactly, by inverting the flow
(:func:`demos.guide.models_common.flow_log_density`: planar steps by a 1-D bisection, IAF steps
one variable at a time). The gap between the ELBO and log p(x) is
:math:`\mathrm{KL}(q(z|x)\,\|\,p(z|x)) = \log p(x) - \mathrm{ELBO}`, in nats.

Setup (default): a 784-400-2 Bernoulli VAE trained ``--epochs`` epochs on 10,000 MNIST
images (dynamic binarization, Adam 1e-3, batch 128). Its decoder is then **frozen**, so that
one true posterior per image is approximated three ways; each posterior family trains its
encoder (and flow) for ``--fit-epochs`` more epochs on that decoder (:func:`fit_posterior`):

* Gaussian: the VAE's own encoder, :math:`q = N(\mu(x), \mathrm{diag}\,\sigma^2(x))`;
* planar: :class:`npvae.models.FlowVAE` with ``flow="planar"``, ``--flow-length`` steps (global, the
  same warp for every x);
* IAF: :class:`npvae.models.FlowVAE` with ``flow="iaf"``, ``--flow-length`` steps (MADE steps that
  read the encoder's context h, so amortized per x).

The flow models start from the VAE's encoder weights (the context outputs freshly
initialized). ``--joint`` instead trains the three models end to end from scratch for
``--epochs`` epochs, each with its own decoder, and draws each against its own true
posterior. ``--quick``: 300 images, 1 epoch each, 3 test images, coarse grids.

Measured on ``--images`` binarized test images: each model's ELBO (2,000 draws of log w, the
mean of ``log_weights``) and the exact log p(x), hence KL(q || p(z|x)); and how far each true
posterior is from any Gaussian, its negentropy J (:func:`negentropy`). Drawn: the test image
where IAF gains most over the Gaussian, the one with the median Gaussian gap, and the one with
the largest. Printed and stored: the mean and median gaps, the drawn images' gaps, the mass
each q puts inside the drawn box and the flow inversions' largest error. Figure:
docs/figures/guide_flow_posteriors.png; numbers: docs/guide_data/flow_posteriors.json (a run
with any flag changed writes both to the scratch folder instead). Exercises: ``--joint``,
``--flow-length``.
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
from demos.guide import models_common as mc
from npvae import VAE, Adam
from npvae.models import FlowVAE
from npvae import data as npdata

Z_DIM = 2
NAMES = ("Gaussian", "planar", "IAF")


def fit_posterior(model, images: np.ndarray, *, epochs: int, seed: int, batch_size: int = 128,
                  lr: float = 1e-3) -> list[float]:
    """Train every parameter of ``model`` except the decoder's on uint8 ``images`` (the decoder stays frozen).

    The loop of :class:`npvae.Trainer` (dynamic binarization, Adam, one shuffle per epoch from
    ``np.random.default_rng(seed)``) with an optimizer that holds only the non-decoder
    parameters. Returns the mean training loss of each epoch (nats per example).
    """
    free = {k: v for k, v in model.params.items() if not k.startswith("decoder.")}
    opt = Adam(free, lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        perm, total = rng.permutation(len(images)), 0.0
        for i in range(0, len(images), batch_size):
            idx = perm[i:i + batch_size]
            x = npdata.batch_to_float(images[idx], binarize="dynamic", rng=rng, dtype=model.dtype)
            total += model.forward(x, rng=rng).loss * len(idx)
            grads = model.backward()
            opt.step({k: grads[k] for k in free})
        losses.append(total / len(images))
    return losses


def copy_matching(src, dst) -> None:
    """Copy ``src``'s encoder and decoder weights into ``dst`` (the encoder's last layer: its first 2Z columns)."""
    for name, p in src.params.items():
        q = dst.params.get(name)
        if q is None:
            continue
        if q.shape == p.shape:
            q[...] = p
        else:  # the flow's encoder also outputs the IAF context: copy [mu, logvar], keep the rest
            q[..., :p.shape[-1]] = p


def build(args, kind: str, rng: np.random.Generator):
    if kind == "Gaussian":
        return VAE(784, Z_DIM, (400,), rng=rng)
    return FlowVAE(784, Z_DIM, (400,), flow=kind.lower(), flow_length=args.flow_length, rng=rng)


def elbo_per_image(model, x: np.ndarray, n: int, *, rng: np.random.Generator) -> np.ndarray:
    r"""ELBO :math:`= E_q[\log w]` of each image by ``n`` draws of ``log_weights``: (B,) float64 nats; its s.e. (B,)."""
    lw = mc.pool_log_weights(model, x, n, rng=rng)
    return lw.mean(axis=0), lw.std(axis=0, ddof=1) / np.sqrt(n)


def q_log_density(model, x: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, float]:
    """log q(z|x) of any of the three models at ``pts`` (n, 2), float64; and the inversion's error (0: a Gaussian)."""
    if isinstance(model, FlowVAE):
        return mc.flow_log_density(model, x, pts)
    mu, logvar = model.encode(np.asarray(x, model.dtype)[None])
    return mc.gaussian_log_density(mu[0], logvar[0], pts), 0.0


def run(args) -> dict:
    t0 = time.perf_counter()
    n_train, epochs, fit_epochs, n_img = ((300, 1, 1, 3) if args.quick
                                          else (10_000, args.epochs, args.fit_epochs, args.images))
    grid = {"n_coarse": 41, "n_fine": 61} if args.quick else {"n_coarse": 81, "n_fine": 161}
    train_x, _, test_x, _ = common.load_subset(n_train, max(n_img, 10), seed=args.seed)
    x = common.binarize(test_x[:n_img], rng=np.random.default_rng(args.seed + 1))
    models = {}
    if args.joint:
        for kind in NAMES:
            models[kind] = build(args, kind, np.random.default_rng(args.seed))
            with common.Timer(f"train {kind} end to end"):
                common.train_model(models[kind], train_x, epochs=epochs, seed=args.seed)
    else:
        vae = build(args, "Gaussian", np.random.default_rng(args.seed))
        with common.Timer("train the VAE"):
            common.train_model(vae, train_x, epochs=epochs, seed=args.seed)
        for kind in NAMES:
            models[kind] = build(args, kind, np.random.default_rng(args.seed + 10))
            copy_matching(vae, models[kind])
            with common.Timer(f"fit the {kind} posterior on the frozen decoder"):
                losses = fit_posterior(models[kind], train_x, epochs=fit_epochs, seed=args.seed + 20)
            print(f"  {kind}: training -ELBO {losses[0]:.2f} -> {losses[-1]:.2f}")
    m64 = {k: mc.to_float64(m) for k, m in models.items()}
    x64 = x.astype(np.float64)
    # exact log p(x) (one decoder, or one per model with --joint) and each q's ELBO
    n_elbo = 200 if args.quick else 2000
    with common.Timer("quadrature and ELBOs"):
        decoders = NAMES if args.joint else ("Gaussian",)
        posts = {k: [mc.grid_posterior(models[k], xi, **grid) for xi in x] for k in decoders}
        log_px = {k: np.array([g["log_px"] for g in v]) for k, v in posts.items()}
        gaps, elbo_se = {}, {}
        for kind in NAMES:
            elbo, se = elbo_per_image(models[kind], x, n_elbo, rng=np.random.default_rng(args.seed + 3))
            gaps[kind] = log_px[kind if args.joint else "Gaussian"] - elbo
            elbo_se[kind] = float(np.max(se))
    negs = {k: np.array([negentropy(g) for g in v]) for k, v in posts.items()}
    neg = negs["Gaussian"]
    order = np.argsort(gaps["Gaussian"])
    worst, median = int(order[-1]), int(order[len(order) // 2])
    gain = gaps["Gaussian"] - gaps["IAF"]
    best = next(int(i) for i in np.argsort(gain)[::-1] if i not in (worst, median))
    shown = [(best, "IAF's largest gain"), (median, "the median Gaussian KL"), (worst, "the largest Gaussian KL")]
    results = {"mean_gap": {k: float(gaps[k].mean()) for k in NAMES},
               "median_gap": {k: float(np.median(gaps[k])) for k in NAMES},
               "se_gap": {k: float(gaps[k].std(ddof=1) / np.sqrt(n_img)) for k in NAMES},
               "mean_gap_without_worst": {k: float(np.delete(gaps[k], worst).mean()) for k in NAMES},
               "images_iaf_below_gaussian": int(np.sum(gaps["IAF"] < gaps["Gaussian"])),
               "images_planar_below_gaussian": int(np.sum(gaps["planar"] < gaps["Gaussian"])),
               "max_elbo_se": elbo_se, "mean_log_px": {k: float(v.mean()) for k, v in log_px.items()},
               "negentropy_median": float(np.median(neg)), "negentropy_max": float(neg.max()),
               "negentropy_max_by_decoder": {k: float(v.max()) for k, v in negs.items()},
               "negentropy_median_by_decoder": {k: float(np.median(v)) for k, v in negs.items()},
               "gaps": gaps, "negentropy": neg, "shown": [], "n_images": n_img}
    panels = []
    for j, why in shown:
        row = {"image": j, "why": why, "negentropy": float(neg[j]), "gap": {k: float(gaps[k][j]) for k in NAMES},
               "mass_in_box": {}, "inversion_error": {}, "log_px": {}}
        dens, axes_of = {}, {}
        for kind in NAMES:
            owner = kind if args.joint else "Gaussian"           # whose decoder defines the true posterior
            if owner not in axes_of:
                box = display_box(mc.grid_posterior(m64[owner], x64[j], **grid))
                g = mc.grid_posterior(m64[owner], x64[j], box=box, n_fine=grid["n_fine"])
                axes_of[owner] = (g["z1"], g["z2"], g["cell"])
                dens[f"true {owner}"], row["log_px"][owner] = g["log_post"], g["log_px"]
            z1, z2, cell = axes_of[owner]
            pts = np.stack(np.meshgrid(z1, z2, indexing="ij"), axis=-1).reshape(-1, 2)
            lq, err = q_log_density(m64[kind], x64[j], pts)
            dens[kind] = lq.reshape(len(z1), len(z2))
            row["mass_in_box"][kind] = float(np.exp(dens[kind]).sum() * cell)
            row["inversion_error"][kind] = err
        results["shown"].append(row)
        panels.append((x64[j], axes_of, dens, row))
        print(f"image {j}: log p(x) " + ", ".join(f"{k} {v:.2f}" for k, v in row["log_px"].items())
              + "; KL(q || p(z|x)) " + ", ".join(f"{k} {row['gap'][k]:.3f}" for k in NAMES)
              + "; q's mass in the box " + ", ".join(f"{k} {v:.4f}" for k, v in row["mass_in_box"].items())
              + "; inversion error " + ", ".join(f"{k} {v:.1e}" for k, v in row["inversion_error"].items()))
    results["max_inversion_error"] = max(max(r["inversion_error"].values()) for r in results["shown"])
    results["min_mass_in_box"] = min(min(r["mass_in_box"].values()) for r in results["shown"])
    for k in NAMES:
        print(f"mean over {n_img} images: KL(q || p(z|x)) = log p(x) - ELBO, {k}: {results['mean_gap'][k]:.3f} "
              f"± {results['se_gap'][k]:.3f} nats")
    results.update(n_train=n_train, epochs=epochs, fit_epochs=fit_epochs, flow_length=args.flow_length,
                   elbo_draws=n_elbo)
    draw(panels, results, args.out / "guide_flow_posteriors.png", joint=args.joint,
         flow_length=args.flow_length, n_train=n_train, epochs=epochs, fit_epochs=fit_epochs)
    common.write_numbers(args, "flow_posteriors", results, seconds=time.perf_counter() - t0)
    return results


def negentropy(post: dict) -> float:
    r"""How far a grid posterior is from Gaussian: :math:`J = H(N(m, \Sigma)) - H(p) \ge 0`, nats (0 iff Gaussian).

    ``post`` from ``grid_posterior``; m, Σ its mean and covariance, :math:`H(p) = -\int p\log p`
    as a grid sum, :math:`H(N) = \tfrac12\log((2\pi e)^2\det\Sigma)`. Equals
    :math:`\mathrm{KL}(p\,\|\,N(m, \Sigma))`, the smallest KL from p to any Gaussian.
    """
    g1, g2 = np.meshgrid(post["z1"], post["z2"], indexing="ij")
    lp = post["log_post"]
    p = np.exp(lp) * post["cell"]
    m1, m2 = np.sum(p * g1), np.sum(p * g2)
    cov = np.array([[np.sum(p * (g1 - m1) ** 2), np.sum(p * (g1 - m1) * (g2 - m2))],
                    [np.sum(p * (g1 - m1) * (g2 - m2)), np.sum(p * (g2 - m2) ** 2)]])
    h_p = -np.sum(p * lp)
    h_gauss = 0.5 * np.log((2 * np.pi * np.e) ** 2 * np.linalg.det(cov))
    return float(h_gauss - h_p)


def display_box(post: dict, *, within: float = 12.0, factor: float = 1.4):
    """A square box about where ``post`` (from ``grid_posterior``) is within ``within`` nats of its peak.

    The box's side is ``factor`` times the larger extent of that region (at least 0.2).
    """
    lp = post["log_post"]
    i1, i2 = np.nonzero(lp > lp.max() - within)
    z1, z2 = post["z1"][i1], post["z2"][i2]
    c1, c2 = (z1.min() + z1.max()) / 2, (z2.min() + z2.max()) / 2
    half = factor * max(z1.max() - z1.min(), z2.max() - z2.min(), 0.2) / 2
    return (c1 - half, c1 + half, c2 - half, c2 + half)


def mass_levels(log_density: np.ndarray, cell: float, masses=(0.5, 0.9, 0.99)) -> list[float]:
    """Density levels whose superlevel sets hold ``masses`` of the grid's probability (highest-density regions)."""
    d = np.sort(np.exp(log_density).ravel())[::-1]
    cum = np.cumsum(d) * cell
    return sorted(float(d[min(np.searchsorted(cum, m), len(d) - 1)]) for m in masses)


def draw(panels, results, path, *, joint: bool, flow_length: int, n_train: int, epochs: int, fit_epochs: int) -> Path:
    """One row per drawn image: the image, the true posterior, and each q with the true posterior's contours."""
    how = (f"three models trained end to end ({epochs} epochs, {n_train} images),\neach q against its own true "
           f"posterior;" if joint else f"one VAE ({epochs} epochs, {n_train} images), its decoder then\nfrozen; each "
           f"q fitted to it for {fit_epochs} more epochs;")
    med = results["median_gap"]
    with common.guide_style():
        fig = Figure(figsize=(11, 3.0 * len(panels) + 1.5), dpi=100, layout="constrained")
        fig.suptitle(f"A 2-D-latent posterior drawn four ways: {how} flows of {flow_length} steps. Colour: the "
                     f"density\n(linear, each panel its own). White lines: the TRUE posterior's regions of 50, 90, "
                     f"99% mass. KL = log p(x) − ELBO.\nMedian KL over the {results['n_images']} images, nats: "
                     f"Gaussian {med['Gaussian']:.3f}, planar {med['planar']:.3f}, IAF {med['IAF']:.3f}. "
                     f"J = KL(true posterior ‖ closest Gaussian).")
        axes = fig.subplots(len(panels), 5, squeeze=False, width_ratios=(0.75, 1, 1, 1, 1))
        for r, (x, axes_of, dens, row) in enumerate(panels):
            ax = axes[r, 0]
            ax.imshow(x.reshape(28, 28), cmap=common.IMAGE_CMAP, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            why = row["why"].replace("the ", "").replace(" Gaussian KL", "\nGaussian KL").replace(" gain", "\ngain")
            ax.set_title(f"test image {row['image']}:\n{why}\n(J = {row['negentropy']:.2f} nats)", fontsize=10.5)
            for c, kind in enumerate(("true",) + NAMES, start=1):
                owner = "Gaussian" if (kind == "true" or not joint) else kind
                z1, z2, cell = axes_of[owner]
                true = dens[f"true {owner}"]
                ax = axes[r, c]
                ax.imshow(np.exp(true if kind == "true" else dens[kind]).T, origin="lower",
                          extent=(z1[0], z1[-1], z2[0], z2[-1]), cmap=common.HEAT_CMAP, aspect="equal",
                          interpolation="bilinear")
                ax.contour(z1, z2, np.exp(true).T, levels=mass_levels(true, cell), colors="white", linewidths=1.0)
                if kind == "true":
                    ax.set_title(f"true p(z|x)\nlog p(x) = {row['log_px'][owner]:.2f}", fontsize=10.5)
                else:
                    ax.set_title(f"{kind} q(z|x)\nKL = {row['gap'][kind]:.3f} nats", fontsize=10.5)
                ax.set_xlabel("z1", labelpad=1)
                if c == 1:
                    ax.set_ylabel("z2")
                ax.tick_params(labelsize=8.5)
                ax.locator_params(nbins=4)
    return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="VAE training epochs (default 10)")
    p.add_argument("--fit-epochs", type=int, default=10,
                   help="epochs fitting each posterior on the frozen decoder (default 10)")
    p.add_argument("--flow-length", type=int, default=4, help="flow steps K (default 4)")
    p.add_argument("--joint", action="store_true", help="train each model end to end, each with its own decoder")
    p.add_argument("--images", type=int, default=40, help="test images measured (default 40)")
    args = common.parse_args(p, argv)
    for name in ("epochs", "fit_epochs", "flow_length", "images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")
    return run(args)


if __name__ == "__main__":
    main()
