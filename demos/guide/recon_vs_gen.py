r"""Reconstruction is not generation: decoding a code of x gives x back; decoding a prior draw gives a new image.

Question (study notes 004: "one new sample X_1 can be generated from Given Z_1, derived from X_1
itself"). Two different uses of the same decoder:

* **reconstruction** needs an image x: encode, :math:`z\sim q_\phi(z|x)`, decode. The posterior
  :math:`q(z|x)` is narrow (its s.d. per unit is a fraction of the prior's 1), so every such z
  decodes to (nearly) the same image, a blurred copy of x. This is the ELBO's first term,
  :math:`E_{q(z|x)}[\log p_\theta(x|z)]`; an autoencoder does it too;
* **generation** needs no image: :math:`z\sim p(z) = N(0, I)`, then :math:`x\sim p_\theta(x|z)`
  (ancestral sampling, ``VAE.sample``). Only the prior is involved, and the result is a new
  image, near no particular training image.

Measured on a 784-400-20 Bernoulli VAE (npvae's default network; 10 epochs on 20,000 MNIST
training images, as in ``graphical_model.py``), over ``--n-eval`` (1,000) binarized test images:

* the posterior's s.d. per unit, :math:`\sigma_j(x) = e^{\mathrm{logvar}_j/2}`, against the prior's 1
  (:func:`posterior_spread`);
* :math:`-\log p(x|z)` of each test image for z drawn three ways (:func:`neg_log_lik_by_code`): from
  its own posterior :math:`q(z|x)` (the reconstruction term), from the posterior of another test
  image, and from the prior;
* distances in pixel space (Euclidean, grey levels in [0, 1]; :func:`nearest_distances`): a
  reconstruction (decoder mean at :math:`\mu(x)`) to its own x; a reconstruction to the nearest
  of the training images; a generated image (decoder mean at a prior draw) to the nearest of
  the training images. The last two are both decoder means, so equally smooth: if the samples
  were copies of training images, their distance would be far smaller than the reconstructions'.

``--quick``: 300 images, 1 epoch, 100 evaluation images.
Figure: docs/figures/guide_recon_vs_gen.png. Numbers: docs/guide_data/recon_vs_gen.json.
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
from npvae import distributions as dist
from npvae._checks import check_array, check_int
from npvae.plots import image_grid

NAME = "recon_vs_gen"
Z_DIM = 20
N_SHOW = 6          # rows of the figure
N_DRAWS = 3         # decodings of z ~ q(z|x) per shown image


def posterior_spread(logvar: np.ndarray) -> dict:
    r"""Summary of the posterior s.d. :math:`\sigma = e^{\mathrm{logvar}/2}` of (N, z_dim) ``logvar``: floats
    ``geometric_mean`` (over images and units), ``median`` and ``largest_unit`` (the largest per-unit mean)."""
    sigma = np.exp(0.5 * np.asarray(logvar, dtype=np.float64))
    return {"geometric_mean": float(np.exp(np.log(sigma).mean())), "median": float(np.median(sigma)),
            "largest_unit": float(sigma.mean(axis=0).max())}


def neg_log_lik_by_code(model, x: np.ndarray, *, rng: np.random.Generator, draws: int = 10) -> dict:
    r""":math:`-\log p(x|z)` of each image of ``x`` (N, 784) for z drawn three ways, (N,) float64 nats each.

    ``own``: :math:`z\sim q(z|x)` (the reconstruction term of the ELBO, averaged over ``draws``);
    ``other``: :math:`z\sim q(z|x')` for x' the next image of ``x`` (cyclically), a code of a
    different image; ``prior``: :math:`z\sim N(0, I)`. The noise comes from ``rng``.
    """
    draws = check_int(draws, "draws", minimum=1)
    check_array(x, "x", shape=(None, model.x_dim))
    mu, logvar = model.encode(x)
    N, Z = mu.shape
    other = np.roll(np.arange(N), -1)
    codes = {"own": (mu, logvar), "other": (mu[other], logvar[other]),
             "prior": (np.zeros_like(mu), np.zeros_like(logvar))}
    out = {}
    for name, (m, lv) in codes.items():
        z = dist.reparameterize(m, lv, dist.sample_eps((draws, N, Z), rng=rng, dtype=model.dtype))
        logits = model.decoder.forward(z.reshape(draws * N, Z)).reshape(draws, N, model.x_dim)
        out[name] = -model.likelihood.log_prob(x, logits).astype(np.float64).mean(axis=0)
    return out


def nearest_distances(queries: np.ndarray, reference: np.ndarray, *, chunk: int = 500):
    r"""For each row of ``queries`` (Q, D), the Euclidean distance to, and the index of, its nearest row of ``reference`` (R, D).

    :math:`\|a - b\|^2 = \|a\|^2 - 2a\cdot b + \|b\|^2` as one matmul per ``chunk`` queries (clipped at 0
    against round-off). Returns ``(distance (Q,) float64, index (Q,) int)``.
    """
    a = np.asarray(queries, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    check_array(b, "reference", shape=(None, a.shape[1]))
    bb = np.einsum("ij,ij->i", b, b)
    dist_out, idx_out = np.empty(len(a)), np.empty(len(a), dtype=np.int64)
    for i in range(0, len(a), chunk):
        q = a[i:i + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * q @ b.T + bb[None]            # (chunk, R)
        j = np.argmin(d2, axis=1)
        idx_out[i:i + chunk] = j
        dist_out[i:i + chunk] = np.sqrt(np.maximum(d2[np.arange(len(q)), j], 0.0))
    return dist_out, idx_out


def draw(shown: dict, nll: dict, numbers: dict, path: Path, *, setup: str, dpi: int = 100) -> Path:
    """Left: x, its reconstruction and three decodings of z ~ q(z|x); right: prior samples with their nearest
    training image; bottom: -log p(x|z) for z from q(z|x), another image's q, and p(z)."""
    with common.guide_style():
        fig = Figure(figsize=(11, 9.2), dpi=dpi, layout="constrained")
        fig.suptitle(setup)
        top, bottom = fig.subfigures(2, 1, height_ratios=(1.25, 1))
        a, b = top.subplots(1, 2, width_ratios=(5, 4))
        cmap = common.IMAGE_CMAP
        rec = np.concatenate([shown["x"][:, None], shown["recon"][:, None], shown["draws"]], axis=1)  # (n, 5, 784)
        a.imshow(image_grid(rec.reshape(-1, 784), N_SHOW, rec.shape[1], pad=2, pad_value=0.35), cmap=cmap, vmin=0,
                 vmax=1, interpolation="nearest")
        a.set_xticks([15 + 30 * i for i in range(rec.shape[1])],
                     ["x", "mean at\nμ(x)", "draw 1\nz ~ q(z|x)", "draw 2\nz ~ q(z|x)", "draw 3\nz ~ q(z|x)"],
                     fontsize=9.5)
        a.set_yticks([])
        a.set_title(f"RECONSTRUCTION needs x: encode, then decode\n(posterior s.d. per unit ≈ "
                    f"{numbers['sigma']['geometric_mean']:.2f}; the prior's is 1)")
        pairs = np.stack([shown[k] for k in ("samples", "nearest", "samples2", "nearest2")], axis=1)  # (n, 4, 784)
        b.imshow(image_grid(pairs.reshape(-1, 784), N_SHOW, 4, pad=2, pad_value=0.35), cmap=cmap, vmin=0, vmax=1,
                 interpolation="nearest")
        b.set_xticks([15 + 30 * i for i in range(4)], ["sample\nz ~ p(z)", "nearest\ntraining\nimage"] * 2,
                     fontsize=9.5)
        b.set_yticks([])
        b.set_title("GENERATION needs no x: z ~ p(z), then decode\n(each sample beside its nearest training image)")
        ax = bottom.subplots()
        labels = {"own": "z ~ q(z|x), its own code (the reconstruction term)",
                  "other": "z ~ q(z|x') of another test image x'", "prior": "z ~ p(z) = N(0, I)"}
        colors = {"own": common.COLORS["q"], "other": "#ff7f0e", "prior": common.COLORS["prior"]}
        hi = np.percentile(np.concatenate(list(nll.values())), 99.5)
        bins = np.linspace(0, hi, 80)
        for key in ("own", "other", "prior"):
            ax.hist(np.clip(nll[key], 0, hi), bins=bins, color=colors[key], alpha=0.55 if key != "prior" else 0.4,
                    label=f"{labels[key]}: mean {nll[key].mean():.1f}")
        ax.set(xlabel=f"−log p(x | z) of a test image x (nats; values above {hi:.0f} in the last bin)",
               ylabel="test images",
               title="how well a code explains x: its own posterior's z against other z")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    return common.save_figure(fig, path)


def run(args) -> dict:
    """Train, measure spread, likelihoods and distances, draw, write the numbers."""
    t0 = time.perf_counter()
    n_train, n_eval, epochs = (300, 100, 1) if args.quick else (20_000, args.n_eval, 10)
    train_x, _, test_x, _ = common.load_subset(n_train, n_eval, seed=args.seed)
    with common.Timer("train"):
        model = common.train_vae(train_x, z_dim=Z_DIM, epochs=epochs, seed=args.seed)
    x = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    rng = np.random.default_rng(args.seed + 4)
    mu, logvar = model.encode(x)
    sigma = posterior_spread(logvar)
    nll = neg_log_lik_by_code(model, x, rng=rng)
    grey_train = train_x.astype(np.float64) / 255.0
    recon = model.decode(mu).astype(np.float64)                                     # means at mu(x), (N, 784)
    d_own = np.linalg.norm(recon - test_x.astype(np.float64) / 255.0, axis=1)
    d_rec_nn, _ = nearest_distances(recon, grey_train)
    samples = model.decode(dist.sample_eps((n_eval, Z_DIM), rng=rng, dtype=model.dtype)).astype(np.float64)
    d_gen_nn, nn_idx = nearest_distances(samples, grey_train)
    kl = dist.gaussian_kl(mu.astype(np.float64), logvar.astype(np.float64))
    numbers = {"n_train": n_train, "epochs": epochs, "n_eval": n_eval, "z_dim": Z_DIM, "sigma": sigma,
               "neg_log_lik": {k: float(v.mean()) for k, v in nll.items()},
               "kl": float(kl.mean()),
               "distance_recon_to_own_x": float(d_own.mean()),
               "distance_recon_to_nearest_train": float(d_rec_nn.mean()),
               "distance_sample_to_nearest_train": float(d_gen_nn.mean()),
               "fraction_samples_closer_than_median_recon": float(np.mean(d_gen_nn < np.median(d_rec_nn)))}
    print(f"posterior s.d. per unit: geometric mean {sigma['geometric_mean']:.3f}, median {sigma['median']:.3f}; "
          f"KL {numbers['kl']:.2f} nats")
    print("-log p(x|z): " + ", ".join(f"{k} {v:.1f}" for k, v in numbers["neg_log_lik"].items()))
    print(f"distances: reconstruction to its x {d_own.mean():.2f}; reconstruction to nearest training image "
          f"{d_rec_nn.mean():.2f}; prior sample to nearest training image {d_gen_nn.mean():.2f}")
    # the figure's images: six test images with three decodings of z ~ q(z|x); twelve prior samples
    show = np.arange(N_SHOW)
    z = dist.reparameterize(mu[show], logvar[show], dist.sample_eps((N_DRAWS, N_SHOW, Z_DIM), rng=rng,
                                                                     dtype=model.dtype))
    shown = {"x": test_x[show].astype(np.float64) / 255.0, "recon": recon[show],
             "draws": model.decode(z.reshape(-1, Z_DIM)).reshape(N_DRAWS, N_SHOW, 784).transpose(1, 0, 2),
             "samples": samples[:N_SHOW], "nearest": grey_train[nn_idx[:N_SHOW]],
             "samples2": samples[N_SHOW:2 * N_SHOW], "nearest2": grey_train[nn_idx[N_SHOW:2 * N_SHOW]]}
    setup = (f"784-400-{Z_DIM} Bernoulli VAE, {epochs} epochs on {n_train:,} MNIST images; "
             f"measured on {n_eval:,} test images")
    draw(shown, nll, numbers, args.out / f"guide_{NAME}.png", setup=setup, dpi=50 if args.quick else 100)
    common.write_numbers(args, NAME, numbers, seconds=time.perf_counter() - t0)
    return {"numbers": numbers, "nll": nll, "model": model}


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n-eval", type=int, default=1000, help="test images measured (default 1000, at least 12)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
