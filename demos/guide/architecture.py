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
    ("x", 0.75, 3.1, 1.2, 1.1, "x\nimage\n(B, 784)", "#dddddd"),
    ("enc", 2.8, 3.1, 2.2, 1.6, "encoder MLP φ\n784 → 400 → 2J\nh = [h₁, h₂]\nVAE.encoder", "#cfe2f3"),
    ("mu", 5.4, 4.35, 1.7, 0.8, "μ = h₁  (B, J)", "#cfe2f3"),
    ("lv", 5.4, 1.95, 2.1, 1.05, "logvar = clip(h₂,\n−20, 10)  (B, J)\nσ = exp(logvar/2)", "#cfe2f3"),
    ("eps", 8.6, 5.5, 2.2, 0.8, "ε ~ N(0, I)  (B, J)\nsample_eps", "#fff2cc"),
    ("z", 8.6, 3.1, 2.0, 1.15, "z = μ + σ ⊙ ε\n(B, J)\nreparameterize", "#d9ead3"),
    ("dec", 10.95, 3.1, 1.9, 1.5, "decoder MLP θ\nJ → 400 → 784\nVAE.decoder", "#f4cccc"),
    ("logits", 12.85, 3.1, 1.3, 1.05, "logits l\n(B, 784)", "#f4cccc"),
    ("rec", 14.9, 3.1, 2.3, 1.35, "−log p(x|z) =\nΣ softplus(l) − x·l\nbernoulli_log_prob", "#f4cccc"),
    ("kl", 7.6, 0.1, 3.9, 1.15, "KL(q(z|x) ‖ p(z)), closed form\n½ Σ (μ² + e^logvar − logvar − 1)\n"
     "gaussian_kl", "#ead1dc"),
    ("loss", 14.9, 0.1, 2.3, 1.15, "loss = batch mean of\n−log p(x|z) + β·KL\n(nats per example)", "#eeeeee"),
]
RED = "crimson"


def draw(path) -> Path:
    """Draw the boxes, the forward arrows (black), ε's side input (orange) and every gradient arrow (red, dashed)."""
    with common.guide_style():
        fig = Figure(figsize=(13.2, 7.4), dpi=80)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 0.88))
        ax.set_xlim(-0.05, 16.2)
        ax.set_ylim(-1.05, 6.05)
        ax.set_axis_off()
        box = {}
        for name, cx, cy, w, h, text, colour in BOXES:
            ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0.05", fc=colour,
                                        ec="black", lw=1.2))
            ax.text(cx, cy, text, ha="center", va="center", fontsize=11.5)
            box[name] = (cx, cy, w, h)

        def edge(name, where, shift=0.0):
            """A point just outside a box's left/right/top/bottom edge, moved along that edge by ``shift``."""
            cx, cy, w, h = box[name]
            return {"l": (cx - w / 2 - 0.07, cy + shift), "r": (cx + w / 2 + 0.07, cy + shift),
                    "t": (cx + shift, cy + h / 2 + 0.07), "b": (cx + shift, cy - h / 2 - 0.07)}[where]

        def arrow(a, b, colour="black", ls="-", rad=0.0, lw=1.6):
            ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=15, color=colour, lw=lw,
                                         linestyle=ls, connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0))

        def grad(a, b, rad=0.0):
            arrow(a, b, colour=RED, ls="--", rad=rad, lw=1.7)

        # ---- forward pass (black) ----
        arrow(edge("x", "r"), edge("enc", "l"))
        arrow(edge("enc", "r", 0.5), edge("mu", "l", 0.0))
        arrow(edge("enc", "r", -0.45), edge("lv", "l", 0.15))
        arrow(edge("mu", "r", 0.0), edge("z", "l", 0.4))
        arrow(edge("lv", "r", 0.35), edge("z", "l", -0.2))
        arrow(edge("eps", "b"), edge("z", "t"), colour="darkorange", lw=2.2)
        arrow(edge("z", "r", 0.15), edge("dec", "l", 0.15))
        arrow(edge("dec", "r", 0.15), edge("logits", "l", 0.15))
        arrow(edge("logits", "r", 0.15), edge("rec", "l", 0.15))
        arrow(edge("x", "t"), edge("rec", "t", -0.4), rad=-0.15, lw=1.0)      # x is also the target of p(x|z)
        arrow(edge("mu", "b", 0.7), edge("kl", "t", -0.6))                    # mu -> KL
        arrow(edge("lv", "b", 0.35), edge("kl", "t", -1.85))                  # logvar -> KL
        arrow(edge("rec", "b", -0.35), edge("loss", "t", -0.35))
        arrow(edge("kl", "r", 0.2), edge("loss", "l", 0.2))
        ax.text(11.3, 5.1, "x is also the target of p(x|z)", fontsize=10.5, color="dimgray")
        # ---- backward pass (red, dashed): every forward arrow that carries a gradient, reversed ----
        grad(edge("loss", "t", 0.35), edge("rec", "b", 0.35))                 # loss -> reconstruction term
        grad(edge("loss", "l", -0.2), edge("kl", "r", -0.2))                  # loss -> KL term (times beta)
        grad(edge("rec", "l", -0.25), edge("logits", "r", -0.25))
        grad(edge("logits", "l", -0.25), edge("dec", "r", -0.25))
        grad(edge("dec", "l", -0.25), edge("z", "r", -0.25))
        grad(edge("z", "l", 0.15), edge("mu", "r", -0.25))                    # dz/dmu = 1
        grad(edge("z", "l", -0.45), edge("lv", "r", 0.05))                    # dz/dlogvar = sigma eps / 2
        grad(edge("kl", "t", -0.3), edge("mu", "b", 0.4 + 0.55))              # dKL/dmu = mu
        grad(edge("kl", "t", -1.5), edge("lv", "b", 0.7))                     # dKL/dlogvar = (sigma^2 - 1)/2
        grad(edge("mu", "l", -0.25), edge("enc", "r", 0.25))                  # mu = h1: identity
        grad(edge("lv", "l", -0.15), edge("enc", "r", -0.7))                  # through the clip
        ax.text(7.5, 3.88, "∂z/∂μ = 1", fontsize=10.5, color=RED, ha="left")
        ax.text(7.7, 2.2, "∂z/∂logvar = σε/2", fontsize=10.5, color=RED, ha="left", va="center")
        ax.text(7.6, -0.78, "∂KL/∂μ = μ,  ∂KL/∂logvar = (σ² − 1)/2", ha="center", fontsize=10.5, color=RED,
                va="top")
        ax.text(2.2, 2.1, "through the clip:\n× 1[−20 ≤ h₂ ≤ 10]\n(no gradient where\nh₂ is clipped)",
                fontsize=10.5, color=RED, ha="center", va="top")
        ax.text(11.7, -0.35, "× 1 and × β", fontsize=10.5, color=RED, ha="center", va="top")
        ax.text(8.75, 4.2, "no gradient into ε (an input)", fontsize=10.5, color="darkorange")
        # ---- legend ----
        lx, ly = 0.1, 5.75
        for i, (colour, ls, lw, text) in enumerate((("black", "-", 1.6, "forward pass"),
                                                    (RED, "--", 1.7, "gradient (VAE.backward)"),
                                                    ("darkorange", "-", 2.2, "noise, a side input"))):
            ax.plot([lx, lx + 0.6], [ly - 0.4 * i] * 2, color=colour, lw=lw, ls=ls)
            ax.text(lx + 0.75, ly - 0.4 * i, text, va="center", fontsize=11)
        fig.text(0.5, 0.955, "The VAE of npvae.models.VAE (784-400-J, Bernoulli decoder): q_φ(z|x) = N(μ, diag σ²), "
                 "p(z) = N(0, I), p_θ(x|z) = Bernoulli(sigmoid(l))", ha="center", fontsize=13)
        fig.text(0.5, 0.905, "blue, purple: the encoder q_φ(z|x) and the KL; green, orange: sampling; red: the decoder "
                 "p_θ(x|z). Shapes for a batch of B images, J = z_dim.", ha="center", fontsize=11, color="dimgray")
        return common.save_figure(fig, path)


def run(args) -> dict:
    """Draw the figure; returns {"path": Path}."""
    return {"path": draw(args.out / "guide_architecture.png")}


def main(argv=None) -> dict:
    return run(common.parse_args(common.make_parser(__doc__.split("\n\n")[0]), argv))


if __name__ == "__main__":
    main()
