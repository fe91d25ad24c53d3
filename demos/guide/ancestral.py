r"""How does a VAE generate a sample? Ancestral sampling, x ~ p(x|z), against the decoder mean.

Question. The VAE is a generative model: it defines :math:`p_\theta(x, z) = p(z)\,p_\theta(x|z)`,
and a new example is drawn "ancestrally", parents first (Kingma & Welling 2014, section 2.1;
Bishop 2006, section 8.1.2):

1. :math:`z \sim p(z) = N(0, I)`;
2. :math:`x \sim p_\theta(x|z)`; for the Bernoulli decoder, :math:`x_d \sim \mathrm{Bernoulli}(\pi_d)`
   independently per pixel with :math:`\pi = \mathrm{sigmoid}(\mathrm{decoder}_\theta(z))`.

The decoder MEAN :math:`E[x|z] = \pi` (grey levels) is what most figures show ("Samples from
the prior" in the README is the mean); it is not a sample from the model, whose data are
binary. ``VAE.sample(n, rng=..., mean=True)`` returns the mean, ``mean=False`` the draw
(:func:`npvae.models.parts.decode_sample`); with two Generators seeded alike the same z is
used, which :func:`mean_and_draw` relies on. :func:`more_draws` draws further x ~ p(x|z) for
the same z from ``VAE.decode(z)`` (row 3-4 of the figure: the pixel noise of p(x|z) alone).

Setup: a 784-400-20 Bernoulli VAE trained 10 epochs on 20,000 dynamically binarized MNIST
training images (``--quick``: 300 images, 1 epoch). Figure rows, for the same 10 draws of z:
the decoder mean, the draw from ``sample(mean=False)``, two more draws for the same z, and
for comparison a row of binarized training images (what the model was fit to).
Printed: the mean fraction of pixels that differ between two draws for the same z (the 10
shown), and the Bernoulli entropy of p(x|z) in nats per image, the mean over 1,000 prior draws
(the noise ancestral sampling adds). Numbers: docs/guide_data/ancestral.json.
Figure: docs/figures/guide_ancestral.png.
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


def mean_and_draw(model, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The same n latent draws z ~ N(0, I), decoded two ways, with the library's ``sample``.

    Returns ``(z, mean, draw)``: z (n, z_dim) and the mean of p(x|z) and one draw x ~ p(x|z),
    each (n, x_dim) in the model's dtype. ``sample`` draws z first from its Generator, so two
    Generators seeded with ``seed`` give the same z; z is redrawn the same way to return it.
    """
    mean = model.sample(n, rng=np.random.default_rng(seed), mean=True)
    draw = model.sample(n, rng=np.random.default_rng(seed), mean=False)
    z = np.random.default_rng(seed).standard_normal((n, model.z_dim), dtype=model.dtype)
    return z, mean, draw


def more_draws(model, z: np.ndarray, m: int, *, rng: np.random.Generator) -> np.ndarray:
    r""":math:`m` independent draws :math:`x \sim \mathrm{Bernoulli}(\mathrm{decode}(z))` per z: (m, n, x_dim), 0/1 in the model's dtype."""
    pi = model.decode(z)
    return (rng.random((m, *pi.shape)) < pi).astype(pi.dtype)


def bernoulli_entropy(pi: np.ndarray) -> np.ndarray:
    r""":math:`H = -\sum_d [\pi_d\log\pi_d + (1-\pi_d)\log(1-\pi_d)]` per row (nats), with 0 log 0 = 0. (n,) float64."""
    p = np.clip(np.asarray(pi, dtype=np.float64), 1e-300, 1.0)
    q = np.clip(1.0 - np.asarray(pi, dtype=np.float64), 1e-300, 1.0)
    return -np.sum(p * np.log(p) + q * np.log(q), axis=-1)


def run(args) -> dict:
    t0 = time.perf_counter()
    n_train, epochs = (300, 1) if args.quick else (20000, 10)
    n_train = args.n_train or n_train
    epochs = args.epochs or epochs
    n = 10
    train_x, _, _, _ = common.load_subset(n_train, 10, seed=args.seed)
    with common.Timer("train"):
        model = common.train_vae(train_x, z_dim=20, hidden=(400,), epochs=epochs, seed=args.seed)
    z, mean, draw = mean_and_draw(model, n, seed=args.seed + 1)
    rng = np.random.default_rng(args.seed + 2)
    extra = more_draws(model, z, 2, rng=rng)
    data = common.binarize(train_x[:n], rng=rng)
    pix_diff = float(np.mean(extra[0] != extra[1]))
    # over many prior draws, not only the 10 shown: the noise p(x|z) adds to the mean
    z_many = np.random.default_rng(args.seed + 3).standard_normal((1000, model.z_dim)).astype(model.dtype)
    entropy = float(np.mean(bernoulli_entropy(model.decode(z_many))))
    rows = [("decoder mean\nE[x|z] (grey)", mean), ("x ~ p(x|z)\nsample(mean=\nFalse)", draw),
            ("another\nx ~ p(x|z)", extra[0]), ("another\nx ~ p(x|z)", extra[1]),
            ("binarized\ntraining\nimages", data)]
    with common.guide_style():
        fig = Figure(figsize=(11, 6.5))
        axes = fig.subplots(len(rows), n)
        for r, (label, imgs) in enumerate(rows):
            for c in range(n):
                ax = axes[r, c]
                ax.imshow(imgs[c].reshape(28, 28), cmap=common.IMAGE_CMAP, vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(label, fontsize=10.5, rotation=0, ha="right", va="center")
                if r == 0:
                    ax.set_title(f"z #{c + 1}", fontsize=10.5)
        fig.suptitle(f"Ancestral sampling: z ~ N(0, I), then x ~ p(x|z); the same z in each column\n"
                     f"(784-400-20 VAE, {n_train} MNIST images, {epochs} epochs). Rows 2-4: binary draws from p(x|z):\n"
                     f"two draws differ in {100 * pix_diff:.1f}% of the pixels; the entropy of p(x|z) is "
                     f"{entropy:.1f} nats per image")
        fig.subplots_adjust(left=0.13, right=0.99, bottom=0.01, top=0.84, wspace=0.06, hspace=0.08)
        common.save_figure(fig, args.out / "guide_ancestral.png")
    print(f"two draws x ~ p(x|z) for the same z differ in {100 * pix_diff:.2f}% of pixels")
    print(f"mean per-image entropy of p(x|z) over 1,000 prior draws: {entropy:.2f} nats "
          "(sum over 784 pixels of the Bernoulli entropy)")
    common.write_numbers(args, "ancestral", {"n_train": n_train, "epochs": epochs, "pixel_difference": pix_diff,
                                             "entropy": entropy}, seconds=time.perf_counter() - t0)
    return {"pixel_difference": pix_diff, "entropy": entropy, "mean": mean, "draw": draw, "z": z}


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 10; --quick 1)")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 20000; --quick 300)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
