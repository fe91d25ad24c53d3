"""Small helpers shared by the model tests."""

import numpy as np
from hypothesis import settings

from npvae.layers import ReLU, LeakyReLU, ELU
from npvae.models import VAE


def kink_margin(model: VAE) -> float:
    """Smallest |pre-activation| at any ReLU-like unit in the model's last forward pass."""
    margins = [np.min(np.abs(layer._x)) for part in (model.encoder, model.decoder)
               for layer in part if isinstance(layer, (ReLU, LeakyReLU, ELU))]
    return float(min(margins)) if margins else np.inf


def small_vae(likelihood="bernoulli", activation="tanh", *, seed=0, x_dim=6, z_dim=3, hidden=(5, 4),
              batch=4, n_samples=1, margin=0.05, model_cls=VAE, **kw):
    """A small float64 VAE (or ``model_cls`` with the VAE's constructor) with random biases, data x and fixed eps.

    Biases are drawn at random so that no ReLU pre-activation sits exactly on its kink
    (with zero biases a dead unit upstream puts the next pre-activation at exactly 0);
    the seed is advanced until every kink is at least ``margin`` away, so a finite
    difference step cannot cross one.
    """
    for s in range(seed, seed + 1000):
        rng = np.random.default_rng(s)
        model = model_cls(x_dim, z_dim, hidden, activation, likelihood, rng=rng, dtype=np.float64, **kw)
        for name, p in model.params.items():
            if name.endswith(".b"):
                p[...] = rng.normal(0.0, 0.5, p.shape)
        x = rng.random((batch, x_dim))
        eps = rng.standard_normal((n_samples, batch, z_dim))
        model.forward(x, eps=eps, n_samples=n_samples)
        if kink_margin(model) > margin:
            return model, x, eps
    raise AssertionError("no seed found with all pre-activations away from the ReLU kink")


def numeric():
    """Settings for the cheap numerical property tests (KLs, likelihoods, log-determinants).

    Their failures are rounding corners (a KL of -5.6e-17 at logvar = 1e-8) that the
    profile's 40 examples never reach, and each example takes microseconds, so they run
    25x the active profile's examples: 1,000 in CI, 10,000 with ``thorough``.
    """
    return settings(max_examples=25 * settings.default.max_examples)


def write_fake_mnist(folder, n_train: int, n_test: int):
    """Write a small dataset in the MNIST file format into ``folder``: class prototypes plus noise."""
    from npvae import data as npdata

    rng = np.random.default_rng(0)
    protos = rng.random((10, 28, 28)) ** 4
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(protos[labels] + 0.1 * rng.standard_normal((n, 28, 28)), 0, 1)
        npdata.write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", (images * 255).astype(np.uint8))
        npdata.write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def fake_images(n, seed=0, side=8):
    """uint8 'digits': a few blurred prototypes plus noise, (n, side, side)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((5, side, side)) ** 3
    img = np.clip(protos[rng.integers(0, 5, n)] + 0.15 * rng.standard_normal((n, side, side)), 0, 1)
    return (img * 255).astype(np.uint8)


def one_line_error(err: str) -> str:
    """The demo's usage error: one line, no traceback (the log p(x) estimate's progress lines may come before it)."""
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith("log p(x"))
    assert err.startswith("train_mnist.py: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err
