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


#: Module-level tables the tests fill with what they measured (largest finite-difference
#: errors, quadrature gaps); printed once at the end of the run, whatever order or subset
#: of tests ran. Each test asserts its own bound; these are only reported.
MEASURED_TABLES = ("MAX_REL", "MAX_ABS", "MAX_REL_ERROR", "GAPS", "QUAD")


def pytest_terminal_summary(terminalreporter):
    import sys

    rows = []
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("test_") or not getattr(module, "__file__", "").startswith(str(Path(__file__).parent)):
            continue
        for table in MEASURED_TABLES:
            for key, value in sorted(getattr(module, table, {}).items(), key=lambda kv: str(kv[0])):
                text = f"{value:.2e}" if isinstance(value, float) else np.array2string(np.asarray(value, dtype=object)
                                                                                      if isinstance(value, dict) else
                                                                                      np.asarray(value), precision=4)
                rows.append(f"{name}.{table}  {key}: {text}")
    if rows:
        terminalreporter.section("measured: largest gradient-check errors, quadrature gaps")
        for row in rows:
            terminalreporter.write_line(row)


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """300 training and 100 test images in the MNIST file format (class prototypes plus noise)."""
    from helpers import write_fake_mnist

    return write_fake_mnist(tmp_path_factory.mktemp("tiny_mnist"), 300, 100)


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if the demo loads any data (its errors must come before that)."""
    from npvae import data

    def forbidden(*args, **kwargs):
        raise AssertionError("the data was loaded before the error was found")
    monkeypatch.setattr(data, "load_mnist", forbidden)
