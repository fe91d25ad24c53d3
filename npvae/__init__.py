"""npvae: variational autoencoders from scratch in NumPy, with hand-written gradients.

Modules
-------
layers         Linear, activations, Sequential, MLP (forward/backward by hand)
made           MaskedLinear and MADE: the autoregressive networks of IAF
flows          planar flows and IAF steps (forward -> (z, logdet), backward by hand)
init           weight initializers (explicit np.random.Generator)
gradcheck      central finite differences in float64, rel_error, layer/model checks
distributions  diagonal Gaussian, KL to N(0, I), Bernoulli and Gaussian likelihoods, gradients
models         the model contract and one file per model: VAE, AE, CVAE, DirichletVAE, ...
evaluate       IWAE bound, log p(x), latent activity, for any model
progress       a progress line for long work
optim          SGD, Adam, AdamW, learning-rate schedules, gradient clipping
data           MNIST / Fashion-MNIST IDX reader, checksummed download, binarization, batches
train          Trainer: epochs, evaluation, KL warm-up, checkpoints, exact resume
checkpoint     atomic .npz checkpoints loaded without pickle
plots          figures (matplotlib, Agg): reconstructions, samples, curves, latent space
"""

__version__ = "0.1.0"

from . import (checkpoint, data, distributions, evaluate, flows, gradcheck, init, layers, made, models,  # noqa: F401
               optim, train)
from .data import load_mnist  # noqa: F401
from .layers import MLP, Linear, Sequential  # noqa: F401
from .optim import SGD, Adam, AdamW  # noqa: F401
from .train import TrainConfig, Trainer  # noqa: F401
from .flows import Flow, IAFStep, PlanarFlow, make_flow  # noqa: F401
from .made import MADE, MaskedLinear  # noqa: F401
from .models import AE, CVAE, IWAE, VAE, ConvVAE, DirichletVAE, FlowVAE, HierarchicalVAE, VampVAE  # noqa: F401
