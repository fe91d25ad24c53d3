"""Shared test configuration.

Hypothesis profiles (chosen with the environment variable ``NPVAE_HYPOTHESIS_PROFILE``):

* ``ci`` (the default, used by ``.ci/run``): derandomized, so every run draws the same
  examples and a failure reproduces exactly; no deadline (machines are noisy); a
  moderate number of examples to keep the suite within a few minutes on 2 cores.
* ``thorough``: random seeds and ten times the examples, for local runs:
  ``NPVAE_HYPOTHESIS_PROFILE=thorough pytest``.

The cheap numerical property tests (KLs, likelihoods, log-determinants) run 25x the
profile's examples: see ``tests/helpers.py: numeric``.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=400,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("NPVAE_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    """A fresh, seeded Generator per test (never NumPy's global state)."""
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder with the real MNIST files, from NPVAE_DATA_DIR; skips with a reason if unset."""
    d = os.environ.get("NPVAE_DATA_DIR")
    if not d:
        pytest.skip("NPVAE_DATA_DIR is not set: real-MNIST tests need the four IDX files "
                    "(set NPVAE_DATA_DIR=../shared/data/mnist)")
    p = Path(d)
    if not p.is_dir():
        pytest.skip(f"NPVAE_DATA_DIR={d} is not a directory")
    return p


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory):
    """A small dataset in the MNIST file format: blurry class prototypes plus noise (1,200 / 300 images)."""
    from helpers import write_fake_mnist

    return write_fake_mnist(tmp_path_factory.mktemp("fake_mnist"), 1200, 300)
