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
``TrainConfig(beta=...)``) prices every nat of KL at β: a larger β lowers the KL (fewer nats
in z) and worsens the reconstruction; whether units switch off or factors disentangle is
what the figure lets you look at, not something the script measures.

Setup: a 784-400-10 ReLU VAE with a Bernoulli decoder, for each β in {0.5, 1, 4}, trained
12 epochs on 10,000 MNIST training images (dynamically binarized, Adam 1e-3, batch 128);
the KL per dimension and the active units on 1,000 test images (one fixed binarization).
``--quick``: 300 images, 1 epoch, 100 test images. Flags: ``--betas``, ``--epochs``.
Numbers: docs/guide_data/traversals.json.

Printed: for each β, the test reconstruction, KL, active units and the KL per unit.
Figure: docs/figures/guide_traversals.png, one panel per β, units sorted by their KL, each
row labelled with its unit and KL, its first column the base image (the decoder mean at
:math:`\mu(x_0)`), then the unit's values -3 … +3; the data image :math:`x_0` top left.
"""

from __future__ import annotations

import sys
import time
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
STEPS = 7
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
    """Train one VAE per β, measure the KL per unit and the active units, draw the figure, write the JSON."""
    t0 = time.perf_counter()
    n_train, n_test, epochs = (300, 100, 1) if args.quick else (10_000, 1_000, 12)
    epochs = args.epochs or epochs
    betas = tuple(args.betas) if args.betas else BETAS
    train_x, _, test_x, test_y = common.load_subset(n_train, n_test, seed=args.seed)
    x_test = common.binarize(test_x, rng=np.random.default_rng(args.seed + 1))
    x0 = x_test[int(np.flatnonzero(test_y == 3)[0]) if (test_y == 3).any() else 0]   # a "3": the traversals' base
    results = {}
    for beta in betas:
        with common.Timer(f"beta = {beta}: train"):
            model = common.train_vae(train_x, z_dim=Z_DIM, hidden=(400,), epochs=epochs, beta=beta, seed=args.seed)
        terms = model.forward(x_test, rng=np.random.default_rng(args.seed + 2))
        mu, logvar = model.encode(x_test)
        kl_dim = kl_per_dimension(mu, logvar)
        order = np.argsort(-kl_dim)
        z0 = model.encode(x0[None])[0][0]
        grid = traversal_grid(model, z0, units=order)
        results[beta] = dict(reconstruction=float(terms.metrics["reconstruction"].mean()),
                             kl=float(terms.metrics["kl"].mean()), kl_per_dim=kl_dim, order=order,
                             active_units=evaluate.active_units(model, x_test), grid=grid,
                             base=model.decode(z0[None])[0], z0=z0)
        r = results[beta]
        print(f"beta = {beta}: test reconstruction {r['reconstruction']:.2f}, KL {r['kl']:.2f} nats "
              f"(sum of per-unit KL {kl_dim.sum():.2f}), active units {r['active_units']} of {Z_DIM}; "
              f"KL per unit (sorted): {np.round(kl_dim[order], 2).tolist()}")
    draw(results, args.out / "guide_traversals.png", epochs=epochs, n_train=n_train, n_test=n_test, x0=x0)
    common.write_numbers(args, "traversals", {
        "n_train": n_train, "n_test": n_test, "epochs": epochs,
        "betas": {f"{b:g}": {"reconstruction": r["reconstruction"], "kl": r["kl"], "active_units": r["active_units"],
                             "kl_per_unit_sorted": r["kl_per_dim"][r["order"]], "unit_order": r["order"] + 1}
                  for b, r in results.items()}}, seconds=time.perf_counter() - t0)
    return results


def _tiles(rows, *, gap: int = 2, gap_value: float = 0.3, split: int = 1, split_gap: int = 10) -> np.ndarray:
    """Images (28, 28) in rows of equal length as one array: ``gap`` px of ``gap_value`` between tiles, and
    ``split_gap`` px of white after the first ``split`` tiles of each row (the base column)."""
    def row(imgs):
        parts = []
        for i, im in enumerate(imgs):
            parts.append(im.reshape(28, 28))
            parts.append(np.full((28, split_gap if i == split - 1 else gap), 0.0 if i == split - 1 else gap_value))
        body = np.concatenate(parts[:-1], axis=1)
        return np.pad(body, ((gap, 0), (gap, gap)), constant_values=gap_value)
    grid = np.concatenate([row(r) for r in rows], axis=0)
    grid = np.pad(grid, ((0, gap), (0, 0)), constant_values=gap_value)
    # the white split column must stay white top to bottom
    return grid


def draw(results: dict, path, *, epochs: int, n_train: int, n_test: int, x0=None) -> Path:
    """One panel per β: a base column (the decoder mean at μ(x₀)), then rows = units sorted by KL
    (labelled "z_j, KL"), columns = values -3..+3 of that unit."""
    values = np.linspace(-LIMIT, LIMIT, STEPS)
    with common.guide_style():
        fig = Figure(figsize=(3.9 * len(results) + 0.6, 5.8), layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle("Latent traversals: decoder means of p(x|z) with one unit set to −3 … +3, the others at "
                     "μ(x₀) of one test '3'\n"
                     f"784-400-{Z_DIM} Bernoulli VAEs, {n_train} training images, {epochs} epochs; KL per unit: mean "
                     f"over {n_test} test images (nats)")
        axes = np.atleast_1d(fig.subplots(1, len(results)))
        for ax, (beta, r) in zip(axes, results.items()):
            grid = r["grid"]
            n_units, steps, _ = grid.shape
            img = _tiles([[r["base"], *grid[i]] for i in range(n_units)])
            ax.imshow(img, cmap=common.IMAGE_CMAP, vmin=0, vmax=1, interpolation="nearest")
            row_h = 30
            ax.set_yticks([2 + row_h * i + 14 for i in range(n_units)],
                          [f"z{u + 1}  {r['kl_per_dim'][u]:.2f}" for u in r["order"]], fontsize=10)
            xs = [2 + 14] + [2 + 28 + 10 + 30 * i + 14 for i in range(steps)]
            ax.set_xticks(xs, ["μ(x₀)"] + [f"{v:+.0f}" for v in values], fontsize=9.5)
            ax.tick_params(length=0)
            for sp in ax.spines.values():
                sp.set_visible(False)
            ax.set_title(f"β = {beta:g}: KL {r['kl']:.1f}, reconstruction {r['reconstruction']:.1f} nats,\n"
                         f"{r['active_units']} of {Z_DIM} units active; rows: unit, its KL")
        if x0 is not None:                       # the data image x0, outside the layout, top right
            w = 0.048
            ins = fig.add_axes((0.945, 0.885, w, w * fig.get_figwidth() / fig.get_figheight()))
            ins.imshow(x0.reshape(28, 28), cmap=common.IMAGE_CMAP, vmin=0, vmax=1)
            ins.set_xticks([])
            ins.set_yticks([])
            ins.set_ylabel("x₀ =", fontsize=11, rotation=0, ha="right", va="center")
        return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--betas", type=float, nargs="+", default=None,
                   help=f"the KL weights to train (default {' '.join(f'{b:g}' for b in BETAS)})")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of each model (default 12; --quick 1)")
    return run(common.parse_args(p, argv))


if __name__ == "__main__":
    main()
