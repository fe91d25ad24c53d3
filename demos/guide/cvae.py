r"""How do I generate a chosen digit? The conditional VAE, and why its samples do not always obey the label.

Question (guide: "How do I generate a chosen digit? The conditional VAE"; study notes 004,
"CVAE"). The CVAE (Sohn, Lee & Yan 2015) gives the label y to both networks and bounds the
conditional likelihood,

.. math:: \log p(x|y) \ge \mathcal L(x, y) = E_{q_\phi(z|x,y)}[\log p_\theta(x|z,y)]
          - \mathrm{KL}(q_\phi(z|x,y)\,\|\,p(z)),

with npvae's prior :math:`p(z) = N(0, I)` the same for every y (Sohn et al. also allow a
learned conditional prior :math:`p_\theta(z|x)`). Sampling a digit of class y is
:math:`z\sim N(0, I)`, then the mean of :math:`p_\theta(x|z, y)` (``CVAE.sample``).

The teachable failure: decode the same z under all ten labels and some rows render one digit
(often a 7 or a 9) for most labels. This script measures it, with no classifier trained on
the decoded images:

* :func:`demos.guide.models_common.knn_predict` reads each decoded image as the majority label
  of its 5 nearest training images in pixel space (its accuracy on real test images, and on
  the CVAE's own reconstructions, is printed);
* the label-following rate: the fraction of (z, y) pairs whose decoding reads as y;
* the "region class" of a prior draw z, the majority label of the 10 training codes
  :math:`\mu(x_n, y_n)` nearest to it, and the following rate split by whether y equals it;
* how much the code z knows about the label, :math:`I_q(z; y)`, by the Barber-Agakov lower
  bound :math:`I(z;y)\ge H(y) - \mathrm{CE}`, CE the held-out cross-entropy of a classifier
  :math:`\hat p(y|z)` (:func:`label_information`), for the CVAE and, for comparison, for a
  VAE of the same size trained alike (its z is never given y).

Setup: a 784-400-``--z-dim`` CVAE and VAE, Bernoulli decoders, ``--n-train`` MNIST training
images (default all 60,000; dynamic binarization), ``--epochs`` epochs (default 10), the
CVAE's KL weight ``--beta`` (default 1), Adam 1e-3, batch 128; 200 prior draws, each decoded
under the 10 labels. ``--quick``: 300 images, 1 epoch, 20 draws. Figure:
docs/figures/guide_cvae.png (one row per class; the same z under every label, framed by
whether the digit follows y; the rates); numbers: docs/guide_data/cvae.json (a run with any
flag changed writes both to the scratch folder instead). Exercises: ``--beta``, ``--z-dim``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import optimize
from scipy.special import logsumexp

from demos.guide import common
from demos.guide import models_common as mc
from npvae import CVAE, VAE, Adam, TrainConfig, Trainer
from npvae import distributions as dist
from npvae.plots import image_grid

N_SHOWN = 10  # rows of the same-z grid


def label_information(z_tr, y_tr, z_te, y_te, *, n_classes: int = 10, l2: float = 1e-3) -> dict:
    r"""A lower bound on :math:`I(z; y)`: :math:`H(y) - \mathrm{CE}` of a classifier on held-out pairs.

    The classifier is a multinomial logistic regression on the features :math:`[z, z^2, 1]`
    (standardized; a quadratic boundary per class, the form of Gaussian class-conditionals
    with diagonal covariances), fitted to the training pairs (``z_tr`` (N, Z), labels
    ``y_tr``) by L-BFGS on the mean cross-entropy plus ``l2``/2 times the squared weights. Any
    classifier's cross-entropy on pairs drawn from the joint is at least :math:`H(y|z)`, so
    :math:`I(z;y) = H(y) - H(y|z)\ge H(y) - \mathrm{CE}` (Barber & Agakov 2003), with
    :math:`H(y)` the entropy of the held-out labels' frequencies and CE measured on
    (``z_te``, ``y_te``). Returns nats: ``H_y``, ``ce``, ``bound``; and ``accuracy`` of
    :math:`\arg\max_y\hat p(y|z)` on the held-out pairs.
    """
    def features(z):
        z = np.asarray(z, np.float64)
        return np.concatenate([z, z * z], axis=1)
    f_tr, f_te = features(z_tr), features(z_te)
    m, s = f_tr.mean(axis=0), f_tr.std(axis=0) + 1e-12
    f_tr = np.concatenate([(f_tr - m) / s, np.ones((len(f_tr), 1))], axis=1)
    f_te = np.concatenate([(f_te - m) / s, np.ones((len(f_te), 1))], axis=1)
    onehot = np.eye(n_classes)[y_tr]
    F = f_tr.shape[1]

    def loss_grad(w):
        W = w.reshape(F, n_classes)
        logits = f_tr @ W
        log_p = logits - logsumexp(logits, axis=1, keepdims=True)
        ce = -np.mean(np.sum(onehot * log_p, axis=1))
        # d CE / d logits = softmax - onehot (per example, / N)
        g = f_tr.T @ (np.exp(log_p) - onehot) / len(f_tr)
        return ce + 0.5 * l2 * np.sum(W * W), (g + l2 * W).ravel()

    w = optimize.minimize(loss_grad, np.zeros(F * n_classes), jac=True, method="L-BFGS-B",
                          options={"maxiter": 500}).x.reshape(F, n_classes)
    logits = f_te @ w
    log_p = logits - logsumexp(logits, axis=1, keepdims=True)
    ce = float(-np.mean(log_p[np.arange(len(y_te)), y_te]))
    freq = np.bincount(y_te, minlength=n_classes) / len(y_te)
    h_y = float(-np.sum(freq[freq > 0] * np.log(freq[freq > 0])))
    return {"H_y": h_y, "ce": ce, "bound": h_y - ce, "accuracy": float(np.mean(np.argmax(logits, 1) == y_te))}


def codes(model, x, *labels, rng):
    """One draw z ~ q(z|x[, y]) per image: (N, Z) float64."""
    mu, logvar = model.encode(x, *labels)
    return dist.reparameterize(mu, logvar, dist.sample_eps(mu.shape, rng=rng, dtype=mu.dtype)).astype(np.float64)


def train(model, args, train_x, train_y, test_x, test_y, epochs: int):
    """Train ``model`` (the CVAE with labels, or the VAE without) with Adam 1e-3, batch 128; print the test terms."""
    conditional = isinstance(model, CVAE)
    config = TrainConfig(epochs=epochs, batch_size=128, beta=args.beta if conditional else 1.0, seed=args.seed)
    trainer = Trainer(model, Adam(model.params, lr=1e-3), train_x, test_x, config, rng=np.random.default_rng(args.seed),
                      log=None, train_labels=train_y if conditional else None,
                      test_labels=test_y if conditional else None)
    with common.Timer(f"train the {type(model).__name__}"):
        model.history = trainer.fit()
    h = model.history[-1]
    print(f"{type(model).__name__}: test -ELBO {h['test_loss']:.2f} nats (reconstruction "
          f"{h['test_reconstruction']:.2f}, KL {h['test_kl']:.2f})")
    return model


def run(args) -> dict:
    t0 = time.perf_counter()
    n_train, n_test, epochs, n_draws = (300, 100, 1, 20) if args.quick else (args.n_train, 1000, args.epochs, 200)
    train_x, train_y, test_x, test_y = common.load_subset(n_train, n_test, seed=args.seed)
    model = train(CVAE(784, args.z_dim, 10, (400,), rng=np.random.default_rng(args.seed)), args, train_x, train_y,
                  test_x, test_y, epochs)
    h = model.history[-1]
    grey_tr = train_x.astype(np.float32) / 255
    knn = lambda images: mc.knn_predict(grey_tr, train_y, images)          # noqa: E731
    x_te = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    acc_real = float(np.mean(knn(test_x.astype(np.float32) / 255) == test_y))
    acc_rec = float(np.mean(knn(model.reconstruct(x_te, test_y)) == test_y))
    # every prior draw decoded under every label; read by kNN
    rng = np.random.default_rng(args.seed + 2)
    z = dist.sample_eps((n_draws, args.z_dim), rng=rng)
    labels = np.tile(np.arange(10), n_draws)                                  # row-major: draw i, label c
    decoded = model.decode(np.repeat(z, 10, axis=0), labels)                  # (n_draws * 10, 784)
    read = knn(decoded).reshape(n_draws, 10)
    follows = read == np.arange(10)[None, :]
    # the region of each prior draw: the majority label of the 10 nearest training codes mu(x_n, y_n)
    x_tr = common.binarize(train_x, rng=np.random.default_rng(args.seed + 3))
    region = mc.knn_predict(model.encode(x_tr, train_y)[0], train_y, z, k=10)
    same = np.arange(10)[None, :] == region[:, None]
    shows_region = read == region[:, None]
    # what z knows about y: a classifier fitted to z ~ q(z|x, y) of the training images, scored on the test images';
    # the same for a VAE (no label anywhere) trained alike, for comparison
    info = label_information(codes(model, x_tr, train_y, rng=rng), train_y, codes(model, x_te, test_y, rng=rng),
                             test_y)
    vae = train(VAE(784, args.z_dim, (400,), rng=np.random.default_rng(args.seed)), args, train_x, None, test_x, None,
                epochs)
    info_vae = label_information(codes(vae, x_tr, rng=rng), train_y, codes(vae, x_te, rng=rng), test_y)
    res = {"test_neg_elbo": h["test_loss"], "test_reconstruction": h["test_reconstruction"], "test_kl": h["test_kl"],
           "knn_accuracy_test": acc_real, "knn_accuracy_reconstructions": acc_rec,
           "follow_rate": float(follows.mean()), "follow_rate_per_label": follows.mean(axis=0),
           "rows_following_at_most_half": float(np.mean(follows.sum(axis=1) <= 5)),
           "follow_rate_region": float(follows[same].mean()), "follow_rate_other": float(follows[~same].mean()),
           "shows_region_when_other": float(shows_region[~same].mean()),
           "region_counts": np.bincount(region, minlength=10),
           "info_bound": info["bound"], "H_y": info["H_y"], "label_from_z_accuracy": info["accuracy"],
           "vae_info_bound": info_vae["bound"], "vae_label_from_z_accuracy": info_vae["accuracy"],
           "vae_test_kl": vae.history[-1]["test_kl"],
           "n_draws": n_draws}
    print(f"kNN (k = 5, {n_train} training images) reads real test digits right {100 * acc_real:.1f}%, the CVAE's "
          f"reconstructions {100 * acc_rec:.1f}%")
    print(f"decodings that read as their label y: {100 * res['follow_rate']:.1f}% of {n_draws} x 10 "
          f"(per y: {', '.join(f'{100 * v:.0f}' for v in res['follow_rate_per_label'])}%); rows following at most "
          f"5 of 10 labels: {100 * res['rows_following_at_most_half']:.0f}%")
    print(f"split by the region class of z (training codes nearby): y = region {100 * res['follow_rate_region']:.1f}%"
          f", y != region {100 * res['follow_rate_other']:.1f}% (and then the region's digit shows in "
          f"{100 * res['shows_region_when_other']:.1f}%); regions per class {res['region_counts'].tolist()}")
    print(f"I(z; y) >= {info['bound']:.2f} nats of H(y) = {info['H_y']:.2f}; the label read from z alone: "
          f"{100 * info['accuracy']:.1f}% right; test KL {h['test_kl']:.2f} nats. The VAE's z: I(z; y) >= "
          f"{info_vae['bound']:.2f} nats, {100 * info_vae['accuracy']:.1f}% right, KL {res['vae_test_kl']:.2f}")
    samples = model.sample(100, np.repeat(np.arange(10), 10), rng=np.random.default_rng(args.seed + 4))
    res.update(n_train=n_train, epochs=epochs)
    draw(samples, decoded.reshape(n_draws, 10, 784)[:N_SHOWN], read[:N_SHOWN], region[:N_SHOWN], res,
         args.out / "guide_cvae.png", z_dim=args.z_dim, beta=args.beta, n_train=n_train, epochs=epochs)
    common.write_numbers(args, "cvae", res, seconds=time.perf_counter() - t0)
    return res


def draw(samples, same_z, read, region, res, path, *, z_dim, beta, n_train, epochs) -> Path:
    """Top: 10 samples per class; the same z under every label, framed green/red. Bottom: the rates."""
    with common.guide_style():
        fig = Figure(figsize=(11, 9.6), dpi=100, layout="constrained")
        fig.suptitle(f"CVAE 784-400-{z_dim}, prior N(0, I) for every label, β = {beta:g}, {n_train} images, {epochs} "
                     f"epochs.\nMeans of p(x|z, y); the digit an image shows is read as the label of its 5 nearest "
                     f"training images.")
        top, bottom = fig.subfigures(2, 1, height_ratios=(2.35, 1))
        axes = top.subplots(1, 2)
        pad = 2
        ax = axes[0]
        ax.imshow(image_grid(samples, 10, 10, pad=pad, pad_value=0.5), cmap=common.IMAGE_CMAP, vmin=0, vmax=1)
        ax.set_title("z ~ N(0, I): one row per label y")
        ax.set_yticks([pad + 13.5 + r * 30 for r in range(10)], [f"y = {r}" for r in range(10)])
        ax.set_xticks([])
        ax = axes[1]
        gap, cell = 4, 28 + 4                                       # wider gaps: one frame per tile
        ax.imshow(image_grid(same_z.reshape(-1, 784), len(same_z), 10, pad=gap, pad_value=0.0),
                  cmap=common.IMAGE_CMAP, vmin=0, vmax=1)
        for r in range(len(same_z)):
            for c in range(10):
                ax.add_patch(Rectangle((gap + c * cell - 1.5, gap + r * cell - 1.5), 30, 30, fill=False, lw=2,
                                       ec="#2ca02c" if read[r, c] == c else "#d62728"))
        ax.set_title("the same z (one per row) under every label y\ngreen: reads as y; red: does not")
        ax.set_xticks([gap + 13.5 + c * cell for c in range(10)], [str(c) for c in range(10)])
        ax.set_yticks([gap + 13.5 + r * cell for r in range(len(same_z))],
                      [f"z{r + 1} ({region[r]})" for r in range(len(same_z))])
        ax.set_xlabel("label y given to the decoder")
        ax.set_ylabel("prior draw (its region class)")
        ax.tick_params(length=0)
        ax = bottom.subplots()
        bars = [("all (z, y)", res["follow_rate"]), ("y = region class of z", res["follow_rate_region"]),
                ("y ≠ region class", res["follow_rate_other"]),
                ("y ≠ region class: shows the region's digit", res["shows_region_when_other"])]
        pos = np.arange(len(bars))[::-1]
        ax.barh(pos, [100 * v for _, v in bars], color=["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e"], height=0.7)
        for p_, (_, v) in zip(pos, bars):
            ax.text(100 * v + 1, p_, f"{100 * v:.0f}%", va="center")
        ax.set_yticks(pos, [b for b, _ in bars])
        ax.set_xlim(0, 110)
        ax.set_xlabel(f"% of the {res['n_draws']} prior draws × 10 labels whose decoding reads as y "
                      f"(the last bar: as the region's class)")
        ax.set_title(f"Does the decoded digit follow y? The region class of z: the label of most training codes "
                     f"near it.\nThe code knows the label: I(z; y) ≥ {res['info_bound']:.2f} of {res['H_y']:.2f} "
                     f"nats "
                     f"(a VAE's code, never given y: ≥ {res['vae_info_bound']:.2f})")
        ax.grid(axis="x", alpha=0.3)
    return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--z-dim", type=int, default=20, help="latent dimensions (default 20)")
    p.add_argument("--beta", type=float, default=1.0, help="the CVAE's KL weight (default 1: the ELBO)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--n-train", type=int, default=60_000, help="training images (default 60000: all of MNIST's)")
    args = common.parse_args(p, argv)
    if args.z_dim < 1 or args.epochs < 1:
        p.error(f"--z-dim, --epochs: expected integers >= 1, got {args.z_dim}, {args.epochs}")
    if not args.beta >= 0:
        p.error(f"--beta: expected a number >= 0, got {args.beta}")
    return run(args)


if __name__ == "__main__":
    main()
