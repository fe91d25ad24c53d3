"""npvae: variational autoencoders from scratch in NumPy, with hand-written gradients.

Modules
-------
layers        Linear, activations, Sequential, MLP (forward/backward by hand)
init          weight initializers (explicit np.random.Generator)
gradcheck     central finite differences in float64, rel_error, layer/model checks
"""

__version__ = "0.1.0"

from . import gradcheck, init, layers  # noqa: F401
from .layers import MLP, Linear, Sequential  # noqa: F401
