r"""The models, one file each, and the contract they all follow (written down here, once).

The trainer (:mod:`npvae.train`), evaluation (:mod:`npvae.evaluate`), checkpoints
(:mod:`npvae.checkpoint`) and figures (:mod:`npvae.plots`, the demo) rely on this contract
and on nothing else: no type check, no base class.

The model contract
------------------
Every model has:

``params``, ``grads`` : dict[str, np.ndarray]
    Flat dicts of *live* arrays with identical keys and shapes ("encoder.0.W", ...). An
    optimizer updates ``params`` in place; ``backward`` overwrites ``grads`` in place.
``dtype`` : np.dtype
    Of every parameter, gradient and activation (float32 to train, float64 to check).
``x_dim``, ``z_dim``, ``hidden``
    Data dimension, latent dimension, hidden widths.
``kind`` : str
    The registry name ("vae", "ae", ...); ``config["kind"]`` holds it too.
``conditional`` : bool
    True if ``forward`` and the other data methods take labels ``y`` after ``x``
    (integer class labels, shape (batch,)); the trainer then passes them.
``loss_name`` : str
    What ``terms.loss`` is, plainly ("neg_elbo", "neg_log_likelihood", "neg_iwae_bound"):
    the demo's summary and metrics.json name the objective with it.
``config`` : dict, and ``from_config(config, *, rng)`` (a classmethod)
    The constructor arguments, JSON-able, including ``kind``; :func:`from_config` here
    rebuilds any model from it (weights freshly initialized from ``rng``).
``forward(x, [y,] *, rng=None, eps=None, ...) -> Terms``
    ``terms.loss``: the training objective, a float in nats per example averaged over the
    batch; ``terms.metrics``: a dict of per-example diagnostics, each (batch,) nats (e.g.
    ``reconstruction``, ``kl``, ``elbo``), which the trainer averages, logs and the curves
    plot. Optional keywords a model may accept: ``beta`` (KL weight, the trainer's
    warm-up schedule) and ``n_samples``; the trainer passes them only when they differ
    from 1, and refuses a run that needs one the model does not list in ``forward_options``.
``forward_options`` : tuple of str
    The optional ``forward`` keywords the model accepts, a subset of ("n_samples", "beta").
``backward() -> grads``
    The gradient of the last ``terms.loss``, written by hand; RuntimeError if there is no
    forward to differentiate.
Randomness
    All of it is drawn from ``rng`` (or given as ``eps``), in a fixed order, so two calls
    with ``np.random.default_rng(s)`` for the same ``s`` return the same loss.
``posterior_means(x, [y,] *, batch_size) -> (N, z_dim)``
    The latent code of each example (the mean of q(z|x), or z = encoder(x) for the AE).

Probabilistic models (all but the AE) also have:

``encode(x, [y])``, ``decode(z, [y])``
    The parameters of q(z|x) and the mean of p(x|z).
``sample(n, [y,] *, rng, mean=True)``
    Ancestral sampling: z from the prior, then the mean of p(x|z) or (``mean=False``) a
    draw x ~ p(x|z).
``noise_dim``, ``proposal(x, [y]) -> q``, ``log_weights(q, eps) -> (k, batch) float64``
    The importance-sampling hooks used by :func:`npvae.evaluate.iwae_bound`: ``q`` is a
    tuple of arrays (the batch and the parameters of q(z|x)), encoded once per batch;
    ``log_weights`` decodes the k samples of ``eps`` (k, batch, ``noise_dim``).
``log_likelihood(x, [y,] k, *, rng)``
    Importance-sampled log p(x) (or log p(x|y)) per example, nats, float64.

Models
------
``VAE`` (vae.py), ``AE`` (ae.py), ``CVAE`` (cvae.py), ``IWAE`` (iwae.py), ``DirichletVAE`` (dirichlet_vae.py),
``FlowVAE`` (flow_vae.py), ``ConvVAE`` (conv_vae.py),
``HierarchicalVAE`` (hierarchical_vae.py), ``VampVAE`` (vamp_vae.py).
"""

from __future__ import annotations

import numpy as np

from .parts import LIKELIHOODS, LOGVAR_MAX, LOGVAR_MIN, Terms  # noqa: F401
from .ae import AE
from .conv_vae import ConvVAE
from .cvae import CVAE
from .dirichlet_vae import DirichletVAE
from .flow_vae import FlowVAE
from .hierarchical_vae import HierarchicalVAE
from .iwae import IWAE
from .vamp_vae import VampVAE
from .vae import VAE

__all__ = ["VAE", "AE", "CVAE", "DirichletVAE", "IWAE", "FlowVAE", "ConvVAE", "HierarchicalVAE", "VampVAE", "Terms", "MODELS", "build_model", "from_config", "LIKELIHOODS", "LOGVAR_MIN", "LOGVAR_MAX"]

#: kind -> model class: the registry :func:`build_model` and :func:`from_config` read.
MODELS = {"vae": VAE, "ae": AE, "cvae": CVAE, "iwae": IWAE, "dirichlet": DirichletVAE, "flow": FlowVAE,
          "conv": ConvVAE, "hvae": HierarchicalVAE, "vamp": VampVAE}


def _model_class(kind: str):
    if kind not in MODELS:
        raise ValueError(f"kind: expected one of {sorted(MODELS)}, got {kind!r}")
    return MODELS[kind]


def build_model(kind: str, *args, **kwargs):
    """``MODELS[kind](*args, **kwargs)``; ValueError naming ``kind`` for an unknown one."""
    return _model_class(kind)(*args, **kwargs)


def from_config(config: dict, *, rng: np.random.Generator):
    """Rebuild a model of any kind from its ``config`` (a config without "kind" is a VAE's: format 1)."""
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict (a model's config), got {type(config).__name__}")
    return _model_class(config.get("kind", "vae")).from_config(config, rng=rng)
