"""The deterministic autoencoder: float64 gradient checks, the loss's definition, contract, Trainer, errors."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npvae import gradcheck
from npvae.models import AE, VAE, from_config
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer

from helpers import fake_images, kink_margin

LIKELIHOODS = ["bernoulli", "gaussian", "gaussian_learned"]
FD = dict(h=1e-4, order=4)  # as tests/test_vae.py: fourth-order stencil, probes far from ReLU kinks
MAX_REL = {}  # largest relative error per configuration, printed by test_zz_report


def small_model(cls, *args, seed=0, x_dim=6, z_dim=3, hidden=(5, 4), batch=4, margin=0.05, labels=None,
                **kw):
    """A small float64 model of class ``cls`` with random biases, data x, and every ReLU kink >= margin away.

    ``args`` go after (x_dim, z_dim) (e.g. n_classes); ``labels`` (a callable rng -> y)
    makes a conditional batch. Returns (model, x, y or None, rng).
    """
    for s in range(seed, seed + 1000):
        rng = np.random.default_rng(s)
        model = cls(x_dim, z_dim, *args, hidden, rng=rng, dtype=np.float64, **kw)
        for name, p in model.params.items():
            if name.endswith(".b"):
                p[...] = rng.normal(0.0, 0.5, p.shape)
        x = rng.random((batch, x_dim))
        y = labels(rng) if labels is not None else None
        model.forward(x, *(() if y is None else (y,)), rng=np.random.default_rng(s))
        if kink_margin(model) > margin:
            return model, x, y, rng
    raise AssertionError("no seed found with all pre-activations away from the ReLU kink")


def fd_check(model, loss):
    """Run backward after the caller's forward and compare every parameter with central differences."""
    grads = model.backward()
    return gradcheck.check_params(loss, model.params, grads, **FD)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
def test_gradient_every_parameter(likelihood, activation):
    model, x, _, _ = small_model(AE, activation=activation, likelihood=likelihood, sigma_x=0.7,
                                 per_pixel_sigma=(activation == "relu"))
    model.forward(x)
    results = fd_check(model, lambda: model.forward(x).loss)
    assert set(results) == set(model.params)
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"AE {likelihood}/{activation}"] = worst
    assert worst < 1e-6, {k: r.rel_error for k, r in results.items()}


@given(seed=st.integers(0, 10_000), likelihood=st.sampled_from(LIKELIHOODS), batch=st.integers(1, 6))
def test_gradient_property_random_directions(seed, likelihood, batch):
    """For any small AE and batch, the gradient matches central differences along random directions."""
    model, x, _, rng = small_model(AE, seed=seed, activation="tanh", likelihood=likelihood, batch=batch,
                                   x_dim=7, z_dim=2, hidden=(6,))
    model.forward(x)
    grads = model.backward()
    results = gradcheck.check_params(lambda: model.forward(x).loss, model.params, grads, max_elementwise=0,
                                     n_directions=3, rng=rng, **FD)
    worst = max(r.rel_error for r in results.values())
    MAX_REL["AE property (directions)"] = max(worst, MAX_REL.get("AE property (directions)", 0.0))
    assert worst < 1e-6


def test_loss_is_the_reconstruction_negative_log_likelihood(rng):
    model, x, _, _ = small_model(AE, activation="tanh")
    terms = model.forward(x)
    z = model.encode(x)
    p = model.decode(z)
    log_px = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)  # naive Bernoulli, safe here
    np.testing.assert_allclose(terms.reconstruction, -log_px, rtol=1e-12)
    np.testing.assert_allclose(terms.loss, -log_px.mean(), rtol=1e-12)
    assert set(terms.metrics) == {"reconstruction"} and terms.reconstruction.shape == (x.shape[0],)
    np.testing.assert_array_equal(model.reconstruct(x), p)
    np.testing.assert_allclose(model.posterior_means(x, batch_size=3), z, rtol=1e-13)  # BLAS may block differently


def test_the_ae_is_the_vae_without_noise(rng):
    """A VAE with the AE's weights as its mean and logvar clipped at -20 (sigma = 4.5e-5) has the AE's reconstruction."""
    ae, x, _, _ = small_model(AE, activation="tanh", likelihood="gaussian", sigma_x=0.5)
    vae = VAE(6, 3, (5, 4), "tanh", "gaussian", rng=rng, dtype=np.float64, sigma_x=0.5)
    for name, p in ae.params.items():
        if name.startswith("encoder.4"):  # the last layer: [mu, logvar] = [AE's z, -30 (clipped to -20)]
            vae.params[name][...] = np.concatenate([p, np.zeros_like(p)], axis=-1)
            vae.params[name][..., 3:] = -30.0 if name.endswith(".b") else 0.0
        else:
            vae.params[name][...] = p
    terms = vae.forward(x, rng=rng)
    np.testing.assert_allclose(terms.reconstruction, ae.forward(x).reconstruction, rtol=1e-3)


def test_float32_preserved(rng):
    model = AE(20, 4, (16,), likelihood="gaussian_learned", rng=rng)
    x = rng.random((8, 20), dtype=np.float32)
    terms = model.forward(x, rng=rng)
    grads = model.backward()
    assert terms.reconstruction.dtype == np.float32
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.encode(x).dtype == model.decode(np.zeros((2, 4), np.float32)).dtype == np.float32


def test_no_noise_and_no_generative_methods(rng):
    """forward ignores nothing silently: rng is checked and never drawn from; eps/beta/n_samples do not exist."""
    model, x, _, _ = small_model(AE)
    r = np.random.default_rng(3)
    state = r.bit_generator.state
    assert model.forward(x, rng=r).loss == model.forward(x).loss
    assert r.bit_generator.state == state
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        model.forward(x, rng=3)
    assert model.forward_options == ()  # what the Trainer reads: it passes the AE no beta, no n_samples
    for kw in ("eps", "beta", "n_samples"):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{kw}'"):
            model.forward(x, **{kw: 1})
    for name in ("sample", "log_likelihood", "iwae_bound", "proposal"):
        assert not hasattr(model, name)
    assert (model.kind, model.conditional, model.loss_name) == ("ae", False, "neg_log_likelihood")


def test_backward_needs_a_forward(rng):
    model = AE(10, 3, (8,), rng=rng, dtype=np.float64)
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    x = rng.random((4, 10))
    model.forward(x)
    model.encode(x)
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()


def test_config_round_trip_and_errors(rng):
    model = AE(10, 3, (8, 6), "elu", "gaussian_learned", rng=rng, dtype=np.float64, sigma_x=0.3, per_pixel_sigma=True)
    clone = from_config(model.config, rng=np.random.default_rng(1))
    assert type(clone) is AE and clone.config == model.config and clone.config["kind"] == "ae"
    assert {k: v.shape for k, v in clone.params.items()} == {k: v.shape for k, v in model.params.items()}
    assert model.params["encoder.2.W"].shape == (8, 6) and model.params["encoder.4.W"].shape == (6, 3)
    with pytest.raises(ValueError, match="z_dim: expected an integer >= 1, got 0"):
        AE(10, 0, rng=rng)
    with pytest.raises(ValueError, match="likelihood: expected one of .*got 'poisson'"):
        AE(10, 2, likelihood="poisson", rng=rng)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 10\), got shape \(4, 9\)"):
        model.forward(np.zeros((4, 9)))
    with pytest.raises(ValueError, match=r"z: expected shape \(\*, 3\)"):
        model.decode(np.zeros((2, 4)))


def test_trainer_trains_and_round_trips_a_checkpoint(tmp_path):
    def make(epochs):
        model = AE(64, 3, (16,), rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params, lr=1e-2), fake_images(200), fake_images(60, seed=1),
                       TrainConfig(epochs=epochs, batch_size=32, seed=3), rng=np.random.default_rng(7), log=None,
                       checkpoint_path=tmp_path / "ae.npz")
    t = make(2)
    history = t.fit()
    assert history[-1]["test_loss"] < 0.95 * t.initial_test_loss
    assert np.isclose(history[-1]["test_loss"], history[-1]["test_reconstruction"])
    fresh = make(2)
    fresh.load(tmp_path / "ae.npz")
    for k in t.model.params:
        np.testing.assert_array_equal(fresh.model.params[k], t.model.params[k], err_msg=k)
    assert fresh.epoch == 2 and fresh.evaluate()["loss"] == t.evaluate()["loss"]
    model = AE(64, 3, (16,), rng=np.random.default_rng(0))
    for cfg, match in ((dict(beta=0.5), "beta: the ae model's objective has no beta"),
                       (dict(n_samples=2), "n_samples: the ae model's objective has no n_samples")):
        with pytest.raises(ValueError, match=match):
            Trainer(model, Adam(model.params), fake_images(50), config=TrainConfig(**cfg),
                    rng=np.random.default_rng(0), log=None)


def test_zz_report(capsys):
    """Print the largest relative errors measured above (run with -s to see them)."""
    with capsys.disabled():
        for k, v in sorted(MAX_REL.items()):
            print(f"  max rel error {k:40s} {v:.2e}")
    assert all(v < 1e-6 for v in MAX_REL.values())
