r"""What does the VAE network look like? The architecture as a picture: forward pass, loss, gradient path.

Question (study notes 003, "the architecture of VAE network", "decoder: how does it work").
The default npvae model (:class:`npvae.models.VAE`, the 784-400-20 network of the PyTorch
examples) computes, for a batch of B images (Kingma & Welling 2014, section 3 and
appendix C):

1. encoder MLP :math:`h = \mathrm{MLP}_\phi(x)`, x (B, 784) -> h (B, 2J)  (``VAE.encoder``);
2. split ``h = [mu, logvar]``, each (B, J); :math:`\sigma = \exp(\mathrm{logvar}/2)`
   (``npvae/distributions.py: split_mu_logvar``, which clips logvar to [-20, 10]);
3. reparameterization :math:`z = \mu + \sigma\odot\epsilon`, :math:`\epsilon\sim N(0, I)` drawn
   outside the network, (B, J)  (``npvae/distributions.py: sample_eps, reparameterize``);
4. decoder MLP, z (B, J) -> logits (B, 784)  (``VAE.decoder``);
5. :math:`-\log p_\theta(x|z) = \sum_d[\mathrm{softplus}(l_d) - x_d l_d]`  (``npvae/distributions.py: bernoulli_log_prob``);
6. :math:`KL(q\,\|\,p) = \frac12\sum_j(\mu_j^2 + e^{\mathrm{logvar}_j} - \mathrm{logvar}_j - 1)` from
   the encoder's outputs alone (``npvae/distributions.py: gaussian_kl``);
7. loss = mean over the batch of :math:`-\log p(x|z) + \beta\,KL` (nats per example).

The gradient flows back along the same arrows (``VAE.backward``: likelihood, decoder,
:math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial\,\mathrm{logvar} = \sigma\epsilon/2`
plus the KL's closed-form gradient, then the encoder), but never into ε: that is the point
of the reparameterization trick.

No training and no data: this script only draws. Figure: docs/figures/guide_architecture.png.
``--quick`` draws the same figure (it takes well under a second either way).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from demos.guide import common

#: (name, centre x, centre y, width, height, text, face colour)
BOXES = [
    ("x", 0.8, 3.0, 1.1, 1.0, "x\nimage\n(B, 784)", "#dddddd"),
    ("enc", 2.75, 3.0, 1.9, 1.3, "encoder MLP  φ\n784 → 400 → 2J\nVAE.encoder", "#cfe2f3"),
    ("mu", 4.85, 3.75, 1.4, 0.75, "μ  (B, J)\nsplit_mu_logvar", "#cfe2f3"),
    ("lv", 4.85, 2.25, 1.4, 0.75, "logvar  (B, J)\nσ = exp(logvar/2)", "#cfe2f3"),
    ("eps", 6.95, 5.15, 1.7, 0.75, "ε ~ N(0, I)  (B, J)\nsample_eps", "#fff2cc"),
    ("z", 6.95, 3.0, 1.75, 1.0, "z = μ + σ ⊙ ε\n(B, J)\nreparameterize", "#d9ead3"),
    ("dec", 9.15, 3.0, 1.9, 1.3, "decoder MLP  θ\nJ → 400 → 784\nVAE.decoder", "#f4cccc"),
    ("logits", 11.15, 3.0, 1.3, 1.0, "logits l\n(B, 784)", "#f4cccc"),
    ("rec", 13.2, 3.0, 2.1, 1.2, "−log p(x|z)\n= Σ softplus(l) − x·l\nbernoulli_log_prob", "#f4cccc"),
    ("kl", 6.0, 0.85, 3.3, 1.0, "KL(q(z|x) ‖ p(z)), closed form\n½ Σ (μ² + e^logvar − logvar − 1)\n"
     "gaussian_kl", "#ead1dc"),
    ("loss", 13.2, 0.85, 2.1, 1.0, "loss = mean over batch of\n−log p(x|z) + β·KL\n(nats per example)", "#eeeeee"),
]


def draw(path) -> Path:
    """Draw the boxes, the forward arrows (black), ε's side input (orange) and the gradient path (red, dashed)."""
    fig = Figure(figsize=(14.5, 6.4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.9))
    ax.set_xlim(0, 14.5)
    ax.set_ylim(-0.1, 6.1)
    ax.set_axis_off()
    box = {}
    for name, cx, cy, w, h, text, colour in BOXES:
        ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0.05", fc=colour,
                                    ec="black", lw=1.2))
        ax.text(cx, cy, text, ha="center", va="center", fontsize=9.5)
        box[name] = (cx, cy, w, h)

    def side(name, where):
        cx, cy, w, h = box[name]
        return {"l": (cx - w / 2 - 0.05, cy), "r": (cx + w / 2 + 0.05, cy), "t": (cx, cy + h / 2 + 0.05),
                "b": (cx, cy - h / 2 - 0.05)}[where]

    def arrow(a, b, colour="black", style="-|>", ls="-", rad=0.0, lw=1.5):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=14, color=colour, lw=lw, linestyle=ls,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0))

    # forward pass
    arrow(side("x", "r"), side("enc", "l"))
    arrow(side("enc", "r"), side("mu", "l"))
    arrow(side("enc", "r"), side("lv", "l"))
    arrow(side("mu", "r"), side("z", "l"))
    arrow(side("lv", "r"), side("z", "l"))
    arrow(side("eps", "b"), side("z", "t"), colour="darkorange", lw=2)
    arrow(side("z", "r"), side("dec", "l"))
    arrow(side("dec", "r"), side("logits", "l"))
    arrow(side("logits", "r"), side("rec", "l"))
    arrow(side("x", "t"), (13.2, 3.65), rad=-0.18, lw=1.0)          # x is also the target of the likelihood
    arrow((5.6, 3.55), (6.0, 1.4))                                   # mu -> KL
    arrow((4.7, 1.82), (4.7, 1.4))                                   # logvar -> KL
    arrow(side("rec", "b"), side("loss", "t"))
    arrow(side("kl", "r"), side("loss", "l"))
    ax.text(9.6, 4.45, "x is also the target of p(x|z)", fontsize=8.5, color="dimgray")
    # gradient path (backward), drawn offset below the forward arrows
    red = dict(colour="crimson", ls="--", lw=1.6)
    off = -0.32
    arrow((box["rec"][0] - 1.1, 3.0 + off), (box["logits"][0] + 0.7, 3.0 + off), **red)
    arrow((box["logits"][0] - 0.7, 3.0 + off), (box["dec"][0] + 1.0, 3.0 + off), **red)
    arrow((box["dec"][0] - 1.0, 3.0 + off), (box["z"][0] + 0.92, 3.0 + off), **red)
    arrow((box["z"][0] - 0.92, 3.0 + off + 0.05), (box["mu"][0] + 0.75, 3.6), **red)
    arrow((box["z"][0] - 0.92, 3.0 + off - 0.05), (box["lv"][0] + 0.75, 2.1), **red)
    arrow((5.05, 1.4), (5.05, 1.82), **red)                         # KL -> logvar (and mu)
    arrow((box["mu"][0] - 0.75, 3.55), (box["enc"][0] + 1.0, 2.75), **red)
    ax.text(6.0, 0.12, "∂KL/∂μ = μ,  ∂KL/∂logvar = (σ² − 1)/2", ha="center", fontsize=8.5, color="crimson")
    ax.text(6.3, 2.35, "∂z/∂μ = 1\n∂z/∂logvar = σε/2", va="top", fontsize=8.5, color="crimson")
    ax.text(7.85, 4.05, "no gradient into ε\n(it is an input)", fontsize=8.5, color="darkorange")
    # legend
    lx, ly = 0.25, 0.75
    ax.plot([lx, lx + 0.6], [ly, ly], color="black", lw=1.5)
    ax.text(lx + 0.7, ly, "forward pass", va="center", fontsize=9)
    ax.plot([lx, lx + 0.6], [ly - 0.35, ly - 0.35], color="crimson", lw=1.6, ls="--")
    ax.text(lx + 0.7, ly - 0.35, "gradient (VAE.backward)", va="center", fontsize=9)
    ax.plot([lx, lx + 0.6], [ly - 0.7, ly - 0.7], color="darkorange", lw=2)
    ax.text(lx + 0.7, ly - 0.7, "noise, a side input", va="center", fontsize=9)
    fig.text(0.5, 0.955, "The VAE of npvae.models.VAE (784-400-J, Bernoulli decoder): q_φ(z|x) = N(μ, diag σ²), "
             "p(z) = N(0, I), p_θ(x|z) = Bernoulli(sigmoid(l))", ha="center", fontsize=11.5)
    fig.text(0.5, 0.915, "encoder and KL branch: q_φ(z|x) (blue, purple); sampling (green, orange); decoder and "
             "likelihood: p_θ(x|z) (red). Shapes for a batch of B images, J = z_dim.", ha="center", fontsize=9.5,
             color="dimgray")
    return common.save_figure(fig, path)


def run(args) -> dict:
    """Draw the figure; returns {"path": Path}."""
    return {"path": draw(args.out / "guide_architecture.png")}


def main(argv=None) -> dict:
    return run(common.parse_args(common.make_parser(__doc__.split("\n\n")[0]), argv))


if __name__ == "__main__":
    main()
