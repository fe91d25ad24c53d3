"""The conditional VAE: float64 gradient checks, the fixed-label property, log p(x|y) by quadrature, labels, Trainer."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npvae import distributions as D
from npvae import gradcheck
from npvae.models import CVAE, VAE, from_config
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer

from quadrature import log_px_1d
from helpers import fake_images
from test_ae import FD, LIKELIHOODS, small_model

C = 3  # classes in the small models
MAX_REL = {}


def small_cvae(likelihood="bernoulli", activation="tanh", *, seed=0, batch=4, **kw):
    return small_model(CVAE, C, seed=seed, activation=activation, likelihood=likelihood, batch=batch,
                       labels=lambda r: r.integers(0, C, batch), **kw)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("n_samples,beta", [(1, 1.0), (3, 1.0), (2, 0.25), (1, 4.0)])
def test_gradient_every_parameter(likelihood, activation, n_samples, beta):
    model, x, y, rng = small_cvae(likelihood, activation, sigma_x=0.7, per_pixel_sigma=(n_samples > 1))
    eps = rng.standard_normal((n_samples, x.shape[0], model.z_dim))

    def loss():
        return model.forward(x, y, eps=eps, n_samples=n_samples, beta=beta).loss

    loss()
    results = gradcheck.check_params(loss, model.params, model.backward(), **FD)
    assert set(results) == set(model.params)
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"CVAE {likelihood}/{activation}/L={n_samples}/beta={beta}"] = worst
    assert worst < 1e-6, {k: r.rel_error for k, r in results.items()}


def vae_with_label_folded_in(cvae, c):
    """A VAE computing what the CVAE computes when every label is c: the one-hot rows added to the first biases."""
    vae = VAE(cvae.x_dim, cvae.z_dim, cvae.hidden, cvae.activation, cvae.likelihood_name, rng=np.random.default_rng(0),
              dtype=cvae.dtype, sigma_x=cvae.sigma_x, per_pixel_sigma=cvae.per_pixel_sigma)
    for name, p in cvae.params.items():
        vae.params[name][...] = p if name not in ("encoder.0.W", "decoder.0.W", "encoder.0.b", "decoder.0.b") else 0
    for part, n_in in (("encoder", cvae.x_dim), ("decoder", cvae.z_dim)):
        W, b = cvae.params[f"{part}.0.W"], cvae.params[f"{part}.0.b"]
        vae.params[f"{part}.0.W"][...] = W[:n_in]          # [v, e_c] @ W + b = v @ W[:n] + (b + W[n + c])
        vae.params[f"{part}.0.b"][...] = b + W[n_in + c]
    return vae


@given(c=st.integers(0, C - 1), likelihood=st.sampled_from(LIKELIHOODS), n_samples=st.integers(1, 3),
       beta=st.floats(0.0, 3.0), seed=st.integers(0, 1000))
def test_all_labels_c_is_a_vae_fed_the_fixed_one_hot(c, likelihood, n_samples, beta, seed):
    """Same loss and metrics; the CVAE's gradient is the VAE's, with the row of class c of each first
    layer equal to the VAE's bias gradient and the other classes' rows zero."""
    cvae, x, _, rng = small_cvae(likelihood, "tanh", seed=seed, per_pixel_sigma=True)
    y = np.full(x.shape[0], c)
    eps = rng.standard_normal((n_samples, x.shape[0], cvae.z_dim))
    vae = vae_with_label_folded_in(cvae, c)
    a = cvae.forward(x, y, eps=eps, n_samples=n_samples, beta=beta)
    b = vae.forward(x, eps=eps, n_samples=n_samples, beta=beta)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    for k in b.metrics:
        np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=1e-12, atol=1e-14)
    ga, gb = cvae.backward(), vae.backward()
    for name in ga:
        if name.endswith(".0.W"):
            n = cvae.x_dim if name.startswith("encoder") else cvae.z_dim
            np.testing.assert_allclose(ga[name][:n], gb[name], rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(ga[name][n + c], gb[name.replace(".W", ".b")], rtol=1e-10, atol=1e-14)
            assert np.all(np.delete(ga[name][n:], c, axis=0) == 0)
        else:
            np.testing.assert_allclose(ga[name], gb[name], rtol=1e-10, atol=1e-14)


def test_labels_change_the_model(rng):
    model, x, y, _ = small_cvae()
    eps = rng.standard_normal((1, x.shape[0], model.z_dim))
    assert model.forward(x, y, eps=eps).loss != model.forward(x, (y + 1) % C, eps=eps).loss
    z = rng.standard_normal((2, model.z_dim))
    assert not np.allclose(model.decode(z, np.array([0, 0])), model.decode(z, np.array([1, 1])))
    a = model.forward(x, y, rng=np.random.default_rng(5)).loss
    assert a == model.forward(x, y, rng=np.random.default_rng(5)).loss != model.forward(x, y, rng=rng).loss


def test_iwae_k1_is_the_single_sample_elbo(rng):
    model, x, y, _ = small_cvae("gaussian")
    eps = rng.standard_normal((1, x.shape[0], model.z_dim))
    terms = model.forward(x, y, eps=eps)
    mu, logvar = model.encode(x, y)
    z = mu + np.exp(0.5 * logvar) * eps[0]
    mc = -terms.reconstruction + D.standard_normal_log_prob(z) - D.gaussian_log_prob(z, mu, logvar)
    np.testing.assert_allclose(model.iwae_bound(x, y, 1, eps=eps), mc, rtol=1e-12, atol=1e-12)


def test_log_likelihood_converges_to_quadrature(rng):
    """z_dim = 1: log p(x|y) = log ∫ p(x|z,y) N(z; 0, 1) dz by quad; the k = 2000 estimate is within 4 SE of it.

    The model is first fitted for 500 Adam steps on its 4 examples, so that q(z|x,y) is close
    to the posterior and the estimate's standard error is ~1e-5 nats: a sharp test.
    """
    model, x, y, _ = small_cvae("bernoulli", z_dim=1, x_dim=5, hidden=(8,), batch=4, seed=3)
    x = (x < 0.4).astype(np.float64)
    opt = Adam(model.params, lr=1e-2)
    for _ in range(500):
        model.forward(x, y, rng=rng, n_samples=4)
        opt.step(model.backward())
    exact = []
    for xi, yi in zip(x, y):
        def log_joint(z):
            out = model.decoder.forward(np.array([[z] + [float(c == yi) for c in range(C)]]))
            return float(model.likelihood.log_prob(xi, out)[0] + D.standard_normal_log_prob(np.array([z])))
        exact.append(log_px_1d(log_joint))
    exact = np.array(exact)
    elbos = np.array([model.forward(x, y, rng=rng).elbo for _ in range(400)])
    elbo, elbo_se = elbos.mean(axis=0), elbos.std(axis=0, ddof=1) / np.sqrt(len(elbos))
    draws = np.array([model.log_likelihood(x, y, 2000, rng=rng, batch_size=3) for _ in range(20)])
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(elbo <= exact + 4 * elbo_se), (elbo - exact, elbo_se)
    assert np.all(se < 1e-3) and np.all(np.abs(mean - exact) < 4 * se + 1e-5), (mean - exact, se)
    test_log_likelihood_converges_to_quadrature.numbers = dict(exact=exact, gap=mean - exact, se=se)


def test_float32_preserved(rng):
    model = CVAE(20, 4, 10, (16,), likelihood="gaussian_learned", rng=rng)
    x = rng.random((8, 20), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    terms = model.forward(x, y, rng=rng, n_samples=2)
    grads = model.backward()
    assert terms.reconstruction.dtype == terms.kl.dtype == np.float32
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.encode(x, y)[0].dtype == model.decode(np.zeros((2, 4), np.float32), y[:2]).dtype == np.float32
    assert model.sample(5, 3, rng=rng).dtype == model.posterior_means(x, y).dtype == np.float32
    assert model.log_likelihood(x, y, 4, rng=rng).dtype == np.float64


def test_sample_one_label_or_one_per_row(rng):
    model = CVAE(10, 2, 4, (8,), rng=rng, dtype=np.float64)
    a = model.sample(3, 2, rng=np.random.default_rng(1))
    b = model.sample(3, np.array([2, 2, 2]), rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 10) and np.all((a > 0) & (a < 1))
    draws = model.sample(4, np.arange(4), rng=rng, mean=False)
    assert set(np.unique(draws)) <= {0.0, 1.0}


@pytest.mark.parametrize("y,exc,match", [
    (np.array([0.0, 1.0, 2.0, 1.0]), TypeError, "y: expected an integer array of class labels, got float64"),
    ([0, 1, 2, 1], TypeError, "y: expected an integer array of class labels, got list"),
    (np.array([0, 1, 3, 1]), ValueError, r"y: expected labels in \[0, 2\], got values from 0 to 3"),
    (np.array([0, -1, 2, 1]), ValueError, r"y: expected labels in \[0, 2\]"),
    (np.array([0, 1, 2]), ValueError, r"y: expected shape \(4,\) \(one label per example\), got shape \(3,\)"),
    (np.zeros((4, 1), dtype=int), ValueError, r"y: expected shape \(4,\)"),
])
def test_bad_labels(y, exc, match, rng):
    model = CVAE(6, 2, C, (5,), rng=rng, dtype=np.float64)
    x = rng.random((4, 6))
    for call in (lambda: model.forward(x, y, rng=rng), lambda: model.encode(x, y),
                 lambda: model.decode(np.zeros((4, 2)), y), lambda: model.log_likelihood(x, y, 3, rng=rng),
                 lambda: model.posterior_means(x, y), lambda: model.sample(4, y, rng=rng)):
        with pytest.raises(exc, match=match):
            call()
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 2\], got values from 5 to 5"):
        model.sample(2, 5, rng=rng)
    with pytest.raises(TypeError, match="y: expected an integer array"):
        model.sample(2, 1.0, rng=rng)
    with pytest.raises(ValueError, match="n_classes: expected an integer >= 2, got 1"):
        CVAE(6, 2, 1, rng=rng)


def test_contract_and_config(rng):
    model = CVAE(10, 3, 4, (8, 6), "elu", "gaussian_learned", rng=rng, dtype=np.float64, per_pixel_sigma=True)
    assert (model.kind, model.conditional, model.loss_name, model.noise_dim) == ("cvae", True, "neg_elbo", 3)
    assert model.params["encoder.0.W"].shape == (14, 8) and model.params["decoder.0.W"].shape == (7, 6)
    clone = from_config(model.config, rng=np.random.default_rng(1))
    assert type(clone) is CVAE and clone.config == model.config and clone.config["n_classes"] == 4
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    x, y = rng.random((5, 10)), rng.integers(0, 4, 5)
    model.forward(x, y, rng=rng)
    model.encode(x, y)
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    np.testing.assert_allclose(model.posterior_means(x, y, batch_size=2), model.encode(x, y)[0], rtol=1e-13)


def test_trainer_with_labels_trains_and_round_trips_a_checkpoint(tmp_path):
    labels = np.random.default_rng(2).integers(0, 5, 260)

    def make():
        model = CVAE(64, 3, 5, (16,), rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params, lr=1e-2), fake_images(200), fake_images(60, seed=1),
                       TrainConfig(epochs=2, batch_size=32, seed=3, n_samples=2, beta=0.5),
                       rng=np.random.default_rng(7), log=None, checkpoint_path=tmp_path / "cvae.npz",
                       train_labels=labels[:200], test_labels=labels[200:])
    t = make()
    history = t.fit()
    assert history[-1]["test_loss"] < 0.95 * t.initial_test_loss
    assert np.isclose(history[-1]["test_loss"], history[-1]["test_reconstruction"] + history[-1]["test_kl"])
    fresh = make()
    fresh.load(tmp_path / "cvae.npz")
    for k in t.model.params:
        np.testing.assert_array_equal(fresh.model.params[k], t.model.params[k], err_msg=k)
    assert fresh.evaluate()["loss"] == t.evaluate()["loss"]
    with pytest.raises(ValueError, match="train_labels: expected class labels for the conditional cvae model"):
        Trainer(t.model, Adam(t.model.params), fake_images(50), rng=np.random.default_rng(0), log=None)
