"""The Gaussian VAE moved to :mod:`npvae.models.vae`; this module keeps the old import path working.

``from npvae.vae import VAE`` and ``npvae.VAE`` are the same class as
``npvae.models.VAE``. ``ELBOTerms`` is the old name of :class:`npvae.models.Terms`.
"""

from .models.parts import LIKELIHOODS, LOGVAR_MAX, LOGVAR_MIN, Terms
from .models.vae import VAE

ELBOTerms = Terms

__all__ = ["VAE", "ELBOTerms", "LIKELIHOODS", "LOGVAR_MIN", "LOGVAR_MAX"]
