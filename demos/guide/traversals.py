r"""Is the latent code z interpretable? Per-unit latent traversals, the KL per dimension, and β.

Question (study notes 004, "interpretable z"; 002, "what does each z mean"). A VAE's
encoder gives :math:`q_\phi(z|x) = N(\mu(x), \mathrm{diag}\,\sigma^2(x))` and the prior is
:math:`p(z) = N(0, I)`. Because both are diagonal, the KL term of the ELBO is a sum of one
term per latent unit (Kingma & Welling 2014, appendix B):

.. math::
    KL(q\,\|\,p) = \sum_{j=1}^{J} KL_j, \qquad
    KL_j = \tfrac12\big(\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1\big)\ \text{nats},

so :math:`\overline{KL}_j = \frac1N\sum_n KL_j(x_n)` (the mean over test images,
:func:`kl_per_dimension`) says how many nats each unit carries about x. A unit with
:math:`\overline{KL}_j \approx 0` has :math:`q(z_j|x) = p(z_j)` for every x: it is unused
("inactive"). Burda et al. 2016 (section 5.2) measure the same thing by the activity
:math:`A_j = \mathrm{Var}_x\,E_q[z_j]` and call a unit *active* if :math:`A_j > 0.01`
(:func:`npvae.evaluate.active_units`).

A *traversal* of unit j (Higgins et al. 2017, "beta-VAE", figures 1-7) decodes
:math:`z = \mu(x_0)` with coordinate j replaced by each of ``steps`` values from -3 to +3
(three prior standard deviations), the others held at the posterior mean of one test
image :math:`x_0`; each image is the MEAN of :math:`p_\theta(x|z)` (pixel probabilities), not a
draw. :func:`traversal_grid` returns them as an array (units, steps, x_dim).

The β-VAE objective :math:`E_q[\log p(x|z)] - \beta\,KL(q\|p)` (Higgins et al. 2017, eq. 4;
``TrainConfig(beta=...)``) prices every nat of KL at β: a larger β switches more units off
and leaves fewer, smoother factors; β < 1 keeps more units and sharper reconstructions.

Setup: a 784-400-10 ReLU VAE with a Bernoulli decoder, for each β in {0.5, 1, 4}, trained
12 epochs on 10,000 MNIST training images (dynamically binarized, Adam 1e-3, batch 128);
the KL per dimension and the active units on 1,000 test images (one fixed binarization).
``--quick``: 300 images, 1 epoch, 100 test images.

Printed: for each β, the test reconstruction, KL, active units and the KL per unit.
Figure: docs/figures/guide_traversals.png, one panel per β, units sorted by their KL, each
row labelled with its unit and KL.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from demos.guide import common
from npvae import evaluate
from npvae._checks import check_array, check_int
from npvae.plots import image_grid

BETAS = (0.5, 1.0, 4.0)
Z_DIM = 10
STEPS = 9
LIMIT = 3.0  # traverse each unit from -3 to +3 (prior standard deviations)


def kl_per_dimension(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    r"""Mean over examples of :math:`KL_j = \frac12(\mu_j^2 + e^{\mathrm{logvar}_j} - \mathrm{logvar}_j - 1)`.

    ``mu``, ``logvar``: (N, J) floating arrays (the encoder's outputs for N examples).
    Returns (J,) float64, nats per example; its sum is the mean of
    :func:`npvae.distributions.gaussian_kl` over the N examples (Kingma & Welling
    2014, appendix B). Raises TypeError/ValueError for a non-array or mismatched shapes.
    """
    check_array(mu, "mu", shape=(None, None), finite=True)
    check_array(logvar, "logvar", shape=mu.shape, finite=True)
    mu, logvar = mu.astype(np.float64), logvar.astype(np.float64)
    # sigma^2 - logvar - 1 = expm1(logvar) - logvar: no cancellation for small logvar
    return 0.5 * np.mean(mu ** 2 + np.expm1(logvar) - logvar, axis=0)


def traversal_grid(model, z0: np.ndarray, *, steps: int = STEPS, limit: float = LIMIT, units=None) -> np.ndarray:
    r"""Decoder means along each latent unit: (len(units), steps, x_dim), model dtype.

    ``z0``: (z_dim,) the base code (e.g. a posterior mean); for unit j (``units``, default
    all, in the given order) row j decodes ``z0`` with coordinate j set to each of
    ``np.linspace(-limit, limit, steps)``. Each image is the mean of p(x|z)
    (``model.decode``), not a draw. Raises TypeError/ValueError for a bad ``z0``, ``steps``
    < 2 or a unit outside 0..z_dim-1.
    """
    z0 = check_array(np.asarray(z0), "z0", shape=(model.z_dim,), finite=True)
    steps = check_int(steps, "steps", minimum=2)
    units = list(range(model.z_dim)) if units is None else [int(u) for u in units]
    if any(not 0 <= u < model.z_dim for u in units):
        raise ValueError(f"units: expected indices in 0..{model.z_dim - 1}, got {units}")
    values = np.linspace(-limit, limit, steps)
    z = np.repeat(np.asarray(z0, dtype=model.dtype)[None, None, :], len(units), axis=0).repeat(steps, axis=1)
    for r, u in enumerate(units):
        z[r, :, u] = values                                            # (units, steps, z_dim)
    return model.decode(z.reshape(-1, model.z_dim)).reshape(len(units), steps, model.x_dim)


def run(args) -> dict:
    """Train one VAE per β, measure the KL per unit and the active units, draw the figure; returns the numbers."""
    n_train, n_test, epochs = (300, 100, 1) if args.quick else (10_000, 1_000, 12)
    train_x, _, test_x, test_y = common.load_subset(n_train, n_test, seed=args.seed)
    x_test = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    x0 = x_test[int(np.flatnonzero(test_y == 3)[0]) if (test_y == 3).any() else 0]   # a "3": the traversals' base
    results = {}
    for beta in BETAS:
        with common.Timer(f"beta = {beta}: train"):
            model = common.train_vae(train_x, z_dim=Z_DIM, hidden=(400,), epochs=epochs, beta=beta, seed=args.seed)
        terms = model.forward(x_test, rng=np.random.default_rng(args.seed + 2))
        mu, logvar = model.encode(x_test)
        kl_dim = kl_per_dimension(mu, logvar)
        order = np.argsort(-kl_dim)
        grid = traversal_grid(model, model.encode(x0[None])[0][0], units=order)
        results[beta] = dict(reconstruction=float(terms.metrics["reconstruction"].mean()),
                             kl=float(terms.metrics["kl"].mean()), kl_per_dim=kl_dim, order=order,
                             active_units=evaluate.active_units(model, x_test), grid=grid)
        r = results[beta]
        print(f"beta = {beta}: test reconstruction {r['reconstruction']:.2f}, KL {r['kl']:.2f} nats "
              f"(sum of per-unit KL {kl_dim.sum():.2f}), active units {r['active_units']} of {Z_DIM}; "
              f"KL per unit (sorted): {np.round(kl_dim[order], 2).tolist()}")
    draw(results, args.out / "guide_traversals.png", epochs=epochs, n_train=n_train, n_test=n_test)
    return results


def draw(results: dict, path, *, epochs: int, n_train: int, n_test: int) -> Path:
    """One panel per β: rows = units sorted by KL (labelled "z_j  KL"), columns = values -3..+3."""
    fig = Figure(figsize=(5.0 * len(results), 6.3), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle("Latent traversals: means of p(x|z), one unit varied from -3 to +3, the others at the posterior "
                 f"mean of one test '3'\n784-400-{Z_DIM} Bernoulli VAE, {n_train} training images, {epochs} epochs; "
                 f"KL per unit = mean over {n_test} test images (nats); active = Var_x E_q[z_j] > 0.01")
    axes = fig.subplots(1, len(results))
    for ax, (beta, r) in zip(np.atleast_1d(axes), results.items()):
        grid = r["grid"]
        n_units, steps, _ = grid.shape
        img = image_grid(grid.reshape(n_units * steps, -1), n_units, steps, pad=2, pad_value=0.0)
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([2 + 30 * i + 14 for i in range(n_units)],
                      [f"z{u + 1}  KL {r['kl_per_dim'][u]:.2f}" for u in r["order"]], fontsize=8)
        ax.set_xticks([2 + 30 * i + 14 for i in range(steps)], [f"{v:+.1f}" for v in np.linspace(-LIMIT, LIMIT, steps)],
                      fontsize=7)
        ax.tick_params(length=0)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_title(f"β = {beta:g}: KL {r['kl']:.1f}, reconstruction {r['reconstruction']:.1f} nats\n"
                     f"active units {r['active_units']} of {Z_DIM}", fontsize=10)
    return common.save_figure(fig, path)


def main(argv=None) -> dict:
    return run(common.parse_args(common.make_parser(__doc__.split("\n\n")[0]), argv))


if __name__ == "__main__":
    main()
