"""The ConvVAE: finite differences of every parameter, log p(x) against quadrature, the demo, API and errors.

The gradient checks run on an 8x8 image (``image_shape=(1, 8, 8)``, channels (2, 3): two
Conv2d and two ConvTranspose2d layers, 8 -> 4 -> 2 -> 4 -> 8) in float64, with the
fourth-order stencil. Its step is h = 1e-3, not ``test_vae.py``'s 1e-4: the last kernel's
gradient entries are ~1e-5 against a loss of ~45 nats, so the round-off eps |loss| / h
alone gave a relative error of 2e-6 at h = 1e-4 (measured: 1e-8 at h = 1e-2, 1.2e-7 at
1e-3, 2e-6 at 1e-4, 1.3e-5 at 1e-5, the 1/h of round-off, not a kink), while the O(h^4)
truncation stays negligible. With ReLU every pre-activation is at least 5e-3 from the kink
(the probe points are at most 2e-3 away in one parameter).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from demos import train_mnist as demo  # the repository root is on pytest's pythonpath
from npvae import distributions as D
from npvae import gradcheck
from npvae.layers import Conv2d, ConvTranspose2d, Flatten, Linear, ReLU, Unflatten
from npvae.models import MODELS, ConvVAE, build_model, from_config
from npvae.optim import Adam

from helpers import fake_images, small_vae
from quadrature import log_px_1d

FD = dict(h=1e-3, order=4)
SMALL = dict(model_cls=ConvVAE, x_dim=64, image_shape=(1, 8, 8), channels=(2, 3))
MAX_REL = {}   # largest FD rel_error per configuration (printed by conftest.py)
GAPS = {}      # |log_likelihood - quadrature| (nats)


@pytest.mark.parametrize("likelihood,activation,hidden,n_samples,beta", [
    ("bernoulli", "tanh", (), 1, 1.0),
    ("bernoulli", "relu", (), 1, 1.0),
    ("bernoulli", "relu", (6,), 2, 1.0),
    ("gaussian_learned", "softplus", (), 1, 0.5),
    ("gaussian", "tanh", (5,), 3, 4.0),
])
def test_every_parameter_by_finite_differences(likelihood, activation, hidden, n_samples, beta):
    model, x, eps = small_vae(likelihood, activation, z_dim=2, hidden=hidden, batch=3, n_samples=n_samples,
                              margin=5e-3, sigma_x=0.7, **SMALL)
    model.forward(x, eps=eps, n_samples=n_samples, beta=beta)
    grads = model.backward()
    results = gradcheck.check_params(lambda: model.forward(x, eps=eps, n_samples=n_samples, beta=beta).loss,
                                     model.params, grads, **FD)
    assert set(results) == set(model.params) and all(r.mode == "elementwise" for r in results.values())
    assert any(".W" in k and model.params[k].ndim == 4 for k in results)  # the kernels are among them
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"{likelihood}/{activation}/hidden={hidden}/L={n_samples}/beta={beta}"] = worst
    assert worst < 1e-6, {k: r.rel_error for k, r in results.items() if r.rel_error >= 1e-6}


def test_log_likelihood_against_quadrature():
    """z_dim = 1: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz by adaptive quadrature; ELBO <= log p(x) ~ IWAE_5000."""
    model = ConvVAE(64, 1, (), "tanh", rng=np.random.default_rng(3), dtype=np.float64, image_shape=(1, 8, 8),
                    channels=(2, 3))
    x = (np.random.default_rng(4).random((3, 64)) < 0.4).astype(np.float64)
    exact = []
    for xi in x:
        def log_joint(z, xi=xi):
            out = model.decoder.forward(np.array([[z]]))
            return float(model.likelihood.log_prob(xi[None], out)[0] + D.standard_normal_log_prob(np.array([z])))
        exact.append(log_px_1d(log_joint))
    exact = np.array(exact)
    ll = model.log_likelihood(x, 5000, rng=np.random.default_rng(0), batch_size=2)
    # the ELBO's expectation over eps ~ N(0, 1) by 60-point Gauss-Hermite quadrature (a Monte Carlo mean is
    # too noisy here: the untrained posterior is close to the prior and the gap is ~0.01 nats)
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    elbo = sum(w * model.forward(x, eps=np.full((1, 3, 1), e)).elbo for e, w in zip(nodes, weights))
    elbo = elbo / np.sqrt(2 * np.pi)
    GAPS["ConvVAE |log_likelihood(k=5000) - quadrature|"] = float(np.max(np.abs(ll - exact)))
    assert np.all(elbo < exact) and np.all(exact - elbo < 0.5)
    np.testing.assert_allclose(ll, exact, atol=2e-2)


def test_default_architecture_is_the_issues(rng):
    """MNIST: 1x28x28 -> Conv(32, 4, s2, p1) -> 32x14x14 -> Conv(64) -> 64x7x7 -> Linear -> [mu, logvar], and back."""
    model = ConvVAE(784, 20, rng=rng)
    kinds = [type(layer) for layer in model.encoder]
    assert kinds == [Unflatten, Conv2d, ReLU, Conv2d, ReLU, Flatten, Linear]
    assert [type(layer) for layer in model.decoder] == [Linear, ReLU, Unflatten, ConvTranspose2d, ReLU,
                                                        ConvTranspose2d, Flatten]
    assert model.params["encoder.1.W"].shape == (32, 1, 4, 4) and model.params["encoder.3.W"].shape == (64, 32, 4, 4)
    assert model.params["encoder.6.W"].shape == (3136, 40)
    assert model.params["decoder.3.W"].shape == (64, 32, 4, 4) and model.params["decoder.5.W"].shape == (32, 1, 4, 4)
    assert model.feature_shape == (64, 7, 7)
    x = (rng.random((5, 784)) < 0.3).astype(np.float32)
    model.forward(x, rng=rng)
    assert model.encoder[2]._x.shape == (5, 32, 14, 14) and model.decoder[4]._x.shape == (5, 32, 14, 14)
    assert model.decode(np.zeros((2, 20), np.float32)).shape == (2, 784)
    with_hidden = ConvVAE(784, 20, (400,), rng=rng)
    assert with_hidden.params["encoder.6.W"].shape == (3136, 400) and with_hidden.params["decoder.2.W"].shape == (400, 3136)


def test_odd_image_sizes_come_back_whole(rng):
    """output_padding gives the decoder the encoder's sizes back: 9x7 -> 4x3 -> 2x1 -> 4x3 -> 9x7."""
    model = ConvVAE(2 * 9 * 7, 3, (4,), rng=rng, dtype=np.float64, image_shape=(2, 9, 7), channels=(3, 2))
    x = rng.random((4, 126))
    terms = model.forward(x, rng=rng)
    assert np.isfinite(terms.loss) and model.decode(np.zeros((1, 3))).shape == (1, 126)
    assert [layer.output_padding for layer in model.decoder if isinstance(layer, ConvTranspose2d)] == [(0, 1), (1, 1)]


def test_training_lowers_the_loss_and_keeps_float32():
    rng = np.random.default_rng(0)
    model = ConvVAE(64, 4, rng=rng, image_shape=(1, 8, 8), channels=(8, 16))
    opt = Adam(model.params, lr=5e-3)
    images = fake_images(256, side=8)
    x = (images.reshape(256, 64) / 255.0).astype(np.float32)
    m = np.clip(x.mean(axis=0), 1e-6, 1 - 1e-6)   # the best model that ignores z: each pixel's mean
    constant = float(np.mean(-np.sum(x * np.log(m) + (1 - x) * np.log1p(-m), axis=1)))
    first = model.forward(x, rng=rng).loss
    for step in range(200):
        batch = x[(step % 4) * 64:(step % 4 + 1) * 64]
        model.forward(batch, rng=rng)
        opt.step(model.backward())
    terms = model.forward(x, rng=rng)
    # the -ELBO falls below the cross-entropy of every model that ignores the latent code (37.3 nats here)
    assert terms.loss < constant - 2.0 < first, (first, constant, terms.loss)
    assert terms.reconstruction.dtype == terms.kl.dtype == np.float32
    assert all(p.dtype == g.dtype == np.float32 for p, g in zip(model.params.values(), model.grads.values()))
    assert model.sample(3, rng=rng).dtype == np.float32


def test_registry_config_and_checkpoint_round_trip(rng):
    assert MODELS["conv"] is ConvVAE and ConvVAE.kind == "conv"
    model = build_model("conv", x_dim=64, z_dim=2, hidden=(5,), rng=rng, dtype=np.float64, image_shape=(1, 8, 8),
                        channels=(2, 3))
    config = json.loads(json.dumps(model.config))
    assert config["kind"] == "conv" and config["image_shape"] == [1, 8, 8] and config["channels"] == [2, 3]
    again = from_config(config, rng=np.random.default_rng(1))
    assert type(again) is ConvVAE and again.config == model.config
    for key, p in again.params.items():
        p[...] = model.params[key]
    x = rng.random((3, 64))
    assert again.forward(x, rng=np.random.default_rng(2)).loss == model.forward(x, rng=np.random.default_rng(2)).loss


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x_dim=100), ValueError, r"image_shape: expected \(channels, height, width\) with 100 = x_dim entries, "
                                  r"got \(1, 28, 28\) \(784 entries\)"),
    (dict(x_dim=4, image_shape=(1, 2, 2), channels=(2, 2, 2)), ValueError,
     r"image_shape: expected an image that survives 3 halvings"),
    (dict(image_shape=(28, 28)), ValueError, r"image_shape: expected 3 integers, got \(28, 28\)"),
    (dict(channels=()), ValueError, r"channels: expected a non-empty sequence of integers, got \(\)"),
    (dict(channels=(32, 0)), ValueError, r"channels\[1\]: expected an integer >= 1, got 0"),
])
def test_constructor_errors(kwargs, exc, match, rng):
    args = dict(x_dim=784, z_dim=2, rng=rng)
    with pytest.raises(exc, match=match):
        ConvVAE(**{**args, **kwargs})


def test_demo_trains_conv_and_draws_its_figures(fake_mnist, tmp_path, capsys):
    """``python demos/train_mnist.py --model conv`` through the registry, with the demo's own flags."""
    out = tmp_path / "conv"
    code = demo.main(["--model", "conv", "--data-dir", str(fake_mnist), "--out", str(out), "--epochs", "1",
                      "--train-limit", "300", "--test-limit", "100", "--hidden", "32", "--latent-dim", "2",
                      "--batch-size", "50", "--eval-k", "3"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_kind"] == "conv" and metrics["model"]["channels"] == [32, 64]
    assert np.isfinite(metrics["test_log_likelihood"]) and metrics["test_neg_elbo"] < metrics["initial_test_neg_elbo"]
    for name in ("reconstructions.png", "samples.png", "interpolation.png", "manifold.png", "curves.png",
                 "latent.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and 1000 < len(data) < 300_000, name
    assert "ConvVAE(image (1, 28, 28), channels (32, 64), hidden (32,)" in capsys.readouterr().out
