"""The VampVAE: float64 gradient checks of every parameter (pseudo-inputs included, every likelihood), the
hardtanh's zero gradient, log_prior against scipy's mixture, log p(x) against 2-D quadrature, sampling, config,
dtype, errors, training, and the guide figure script in --quick mode."""

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from npvae import distributions as D
from npvae import gradcheck
from npvae.models import LIKELIHOODS
from npvae.models import vamp_vae
from npvae.models.vamp_vae import VampVAE
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer

from helpers import fake_images, kink_margin
from quadrature import log_px_2d_grid

# fourth-order stencil; h = 1e-3 (truncation O(h^4) ~ 1e-12) keeps the round-off ~1e-13 / h below 1e-6 for the
# smallest gradient entries, and the probes (up to 2h) stay far from the ReLU kinks and the hardtanh's 0 and 1
FD = dict(h=1e-3, order=4)
MAX_REL = {}  # largest relative error per configuration, printed at the end of the run (conftest.py)
MAX_ABS = {}  # log_prior and quadrature errors (nats), printed at the end of the run
QUAD = {}     # log_likelihood - quadrature per example, and its standard error


def small_vamp(likelihood="bernoulli", activation="tanh", *, seed=0, x_dim=6, z_dim=3, hidden=(5, 4), n_pseudo=4,
               batch=5, margin=0.05, **kw):
    """A small float64 VampVAE with random biases, pseudo-inputs m_k in (0.1, 0.9), data x and fixed eps (B, Z),
    every ReLU kink (data and pseudo-input rows) at least ``margin`` away."""
    for s in range(seed, seed + 1000):
        rng = np.random.default_rng(s)
        model = VampVAE(x_dim, z_dim, hidden, activation, likelihood, n_pseudo=n_pseudo, rng=rng, dtype=np.float64,
                        **kw)
        for name, p in model.params.items():
            if name.endswith(".b"):
                p[...] = rng.normal(0.0, 0.5, p.shape)
        m = model.params["pseudo.means"]
        m[...] = rng.uniform(0.1, 0.9, m.shape)   # distinct pseudo-inputs, away from the hardtanh's kinks at 0 and 1
        x = rng.random((batch, x_dim))
        eps = rng.standard_normal((batch, z_dim))
        model.forward(x, eps=eps)
        if kink_margin(model) > margin:
            return model, x, eps
    raise AssertionError("no seed found with all pre-activations away from the ReLU kink")


def check_all(model, x, eps, beta=1.0, **kw):
    model.forward(x, eps=eps, beta=beta)
    grads = model.backward()
    return gradcheck.check_params(lambda: model.forward(x, eps=eps, beta=beta).loss, model.params, grads, **FD, **kw)


# ----------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_gradient_every_parameter(likelihood, activation, beta):
    model, x, eps = small_vamp(likelihood, activation, sigma_x=0.7, per_pixel_sigma=(beta != 1.0))
    results = check_all(model, x, eps, beta)
    assert set(results) == set(model.params) and "pseudo.means" in results
    assert all(r.mode == "elementwise" for r in results.values())
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"vamp/{likelihood}/{activation}/beta={beta}"] = worst
    assert worst < 1e-6, {n: r.rel_error for n, r in results.items()}
    # the pseudo-inputs' gradient is not trivially small: the check above compared real numbers
    assert np.max(np.abs(results["pseudo.means"].analytic)) > 1e-3


def test_gradient_is_zero_outside_the_hardtanh():
    """u = hardtanh(m): entries of m below 0 or above 1 have u at the clip, and exactly zero gradient."""
    model, x, eps = small_vamp("gaussian", "tanh")
    m = model.params["pseudo.means"]
    outside = np.zeros(m.shape, dtype=bool)
    outside[0, :3] = outside[2, 4:] = outside[3, 1] = True
    m[0, :3], m[2, 4:], m[3, 1] = -0.3, 1.4, 7.0
    u = model.pseudo_inputs
    np.testing.assert_array_equal(u[0, :3], 0.0)
    np.testing.assert_array_equal(u[2, 4:], 1.0)
    assert u[3, 1] == 1.0 and np.all((u >= 0) & (u <= 1))
    results = check_all(model, x, eps)
    worst = max(r.rel_error for r in results.values())
    MAX_REL["vamp/gaussian/tanh, pseudo-inputs outside [0, 1]"] = worst
    assert worst < 1e-6
    g = model.grads["pseudo.means"]
    assert np.all(g[outside] == 0) and np.all(results["pseudo.means"].numerical[outside] == 0)
    assert np.all(g[~outside] != 0)


def test_gradient_with_a_clipped_logvar_and_a_bigger_network():
    """A logvar unit clipped at LOGVAR_MAX for every row (data and pseudo-inputs); bigger arrays along directions."""
    model, x, eps = small_vamp("bernoulli", "tanh", x_dim=20, z_dim=4, hidden=(12, 8), n_pseudo=7, batch=6)
    model.encoder[-1].params["b"][model.z_dim] = 25.0        # first logvar unit clipped at 10
    results = check_all(model, x, eps, max_elementwise=120, n_directions=6, rng=np.random.default_rng(1))
    assert any(r.mode == "directions" for r in results.values())
    worst = max(r.rel_error for r in results.values())
    MAX_REL["vamp/bernoulli/tanh 20-12-8-4 K=7, clipped logvar, directions"] = worst
    assert worst < 1e-6
    assert model.grads["encoder.4.b"][model.z_dim] == 0


def test_gradient_check_catches_a_missing_pseudo_input_pass(monkeypatch):
    """Dropping the gradient through the K pseudo-inputs (treating the prior as fixed) fails the check."""
    model, x, eps = small_vamp("bernoulli", "tanh")
    real = D.split_mu_logvar_backward

    def data_rows_only(h, dmu, dlogvar):
        dh = real(h, dmu, dlogvar)
        dh[x.shape[0]:] = 0
        return dh

    monkeypatch.setattr(D, "split_mu_logvar_backward", data_rows_only)
    results = check_all(model, x, eps)
    assert results["encoder.0.W"].rel_error > 1e-2 and results["pseudo.means"].rel_error > 0.5


# ----------------------------------------------------------------------------------------
# The prior, the terms, log p(x)
# ----------------------------------------------------------------------------------------

def scipy_log_prior(model, z):
    """log (1/K) sum_k N(z; mu_k, diag sigma_k^2) with scipy.stats.multivariate_normal, component by component."""
    mu_p, logvar_p = model.encode(model.pseudo_inputs)
    logpdf = np.array([multivariate_normal(mu_p[k], np.diag(np.exp(logvar_p[k]))).logpdf(z)
                       for k in range(model.n_pseudo)]).reshape(model.n_pseudo, -1)
    direct = np.log(np.mean([multivariate_normal(mu_p[k], np.diag(np.exp(logvar_p[k]))).pdf(z)
                             for k in range(model.n_pseudo)], axis=0))
    return direct, logsumexp(logpdf, axis=0) - np.log(model.n_pseudo)


def test_log_prior_against_scipy_mixture():
    model, _, _ = small_vamp("bernoulli", "tanh", z_dim=3, n_pseudo=6)
    mu_p, _ = model.encode(model.pseudo_inputs)
    rng = np.random.default_rng(2)
    z = np.concatenate([mu_p[rng.integers(0, 6, 40)] + rng.standard_normal((40, 3)),  # near the components
                        rng.standard_normal((10, 3)) * 3])
    lp = model.log_prior(z)
    direct, via_logpdf = scipy_log_prior(model, z)
    assert lp.shape == (50,) and lp.dtype == np.float64
    MAX_ABS["log_prior - scipy mixture (nats)"] = float(np.max(np.abs(lp - direct)))
    np.testing.assert_allclose(lp, direct, rtol=1e-12, atol=1e-12)
    # far away every pdf underflows to 0 (log 0 = -inf directly); the log-sum-exp stays finite and exact
    far = np.array([[60.0, -50.0, 45.0], [-80.0, 0.0, 0.0]])
    with np.errstate(divide="ignore"):
        direct_far, via_logpdf_far = scipy_log_prior(model, far)
    assert np.all(np.isinf(direct_far))
    lp_far = model.log_prior(far)
    assert np.all(np.isfinite(lp_far)) and np.all(lp_far < -500)
    np.testing.assert_allclose(lp_far, via_logpdf_far, rtol=1e-13)
    # the blocks over rows do not change it
    np.testing.assert_allclose(vamp_vae._log_vamp_prior(z, *model.encode(model.pseudo_inputs)), lp, rtol=0)


def test_log_prior_blocks(monkeypatch):
    model, _, _ = small_vamp("bernoulli", "tanh", n_pseudo=5)
    z = np.random.default_rng(0).standard_normal((4, 7, 3))
    mu_p, logvar_p = model.encode(model.pseudo_inputs)
    whole = vamp_vae._log_vamp_prior(z, mu_p, logvar_p)
    monkeypatch.setattr(vamp_vae, "_PRIOR_BLOCK", 2 * 5 * 3)   # two rows per block
    np.testing.assert_allclose(vamp_vae._log_vamp_prior(z, mu_p, logvar_p), whole, rtol=1e-15)
    np.testing.assert_allclose(whole.reshape(-1), model.log_prior(z.reshape(-1, 3)), rtol=1e-15)


def test_forward_terms_match_their_definitions():
    model, x, eps = small_vamp("bernoulli", "tanh")
    terms = model.forward(x, eps=eps, beta=0.5)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps
    p = model.decode(z)
    log_px = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)                  # naive, safe here
    log_qz = np.array([multivariate_normal(mu[b], np.diag(np.exp(logvar[b]))).logpdf(z[b]) for b in range(len(x))])
    log_pz = scipy_log_prior(model, z)[0]
    np.testing.assert_allclose(terms.reconstruction, -log_px, rtol=1e-10)
    np.testing.assert_allclose(terms.kl, log_qz - log_pz, rtol=1e-10)
    np.testing.assert_allclose(terms.elbo, log_px + log_pz - log_qz, rtol=1e-10)
    np.testing.assert_allclose(terms.loss, np.mean(-log_px + 0.5 * (log_qz - log_pz)), rtol=1e-10)


def test_log_weights_match_forward_and_chunks():
    model, x, _ = small_vamp("gaussian_learned", "tanh", batch=4)
    eps = np.random.default_rng(1).standard_normal((7, 4, model.z_dim))
    log_w = model.log_weights(model.proposal(x), eps)
    assert log_w.shape == (7, 4) and log_w.dtype == np.float64
    for i in (0, 6):  # each draw is the forward's single-sample ELBO
        np.testing.assert_allclose(model.forward(x, eps=eps[i]).elbo, log_w[i], rtol=1e-12)
    np.testing.assert_allclose(model.iwae_bound(x, 7, eps=eps, chunk_size=2), model.iwae_bound(x, 7, eps=eps),
                               rtol=1e-13)


def test_log_likelihood_against_quadrature():
    """z_dim = 2: log p(x) = log ∫∫ p(x|z) (1/K) sum_k q(z|u_k) dz by the trapezoid rule; E ELBO <= log p(x) and the
    k = 5000 estimate within 4 standard errors of it.

    The model is first fitted for 300 Adam steps on its 3 examples, so that q(z|x) is close to the posterior and the
    estimate's standard error is ~1e-3 nats: a sharp test (the same model with p(z) = N(0, I) in the quadrature
    instead of the VampPrior differs by 0.15 to 0.7 nats).
    """
    model = VampVAE(5, 2, (8,), "tanh", n_pseudo=3, rng=np.random.default_rng(5), dtype=np.float64)
    model.params["pseudo.means"][...] = np.random.default_rng(5).uniform(0.05, 0.95, (3, 5))
    model.encoder[0].params["W"] *= 3            # pseudo-inputs whose components lie apart
    model.encoder[-1].params["b"][2:] = -1.0
    x = (np.random.default_rng(4).random((3, 5)) < 0.4).astype(np.float64)
    rng = np.random.default_rng(0)
    opt = Adam(model.params, lr=1e-2)
    for _ in range(300):
        model.forward(np.tile(x, (4, 1)), rng=rng)
        opt.step(model.backward())
    exact, standard = [], []
    for xi in x:
        def log_joint(z, log_prior=model.log_prior):  # (m, 2) -> (m,): log p(x|z) + log p(z)
            return model.likelihood.log_prob(xi, model.decoder.forward(z)) + log_prior(z)
        val, err = log_px_2d_grid(log_joint, n=401)
        assert err < 1e-8
        exact.append(val)
        standard.append(log_px_2d_grid(lambda z: log_joint(z, D.standard_normal_log_prob), n=401)[0])
    exact = np.array(exact)
    assert np.all(np.abs(np.array(standard) - exact) > 0.1)     # the prior matters here
    elbo = model.forward(np.tile(x, (4000, 1)), rng=rng).elbo.reshape(4000, 3)
    assert np.all(elbo.mean(axis=0) + 4 * elbo.std(axis=0) / np.sqrt(4000) < exact)
    draws = np.array([model.log_likelihood(x, 5000, rng=rng, batch_size=2) for _ in range(12)])   # (12, B)
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    QUAD["vamp K=3 z_dim=2: log_likelihood(k=5000) - quadrature, se"] = (mean - exact, se)
    MAX_ABS["|log_likelihood(k=5000) - quadrature| (nats)"] = float(np.max(np.abs(mean - exact)))
    assert np.all(se < 0.01)
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-3), (mean - exact, se)


# ----------------------------------------------------------------------------------------
# Sampling, config, dtype, errors, training
# ----------------------------------------------------------------------------------------

def test_sample_draws_a_component_then_z_then_x():
    model, _, _ = small_vamp("bernoulli", "tanh", n_pseudo=4)
    a = model.sample(9, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, model.sample(9, rng=np.random.default_rng(5)))
    assert not np.array_equal(a, model.sample(9, rng=np.random.default_rng(6)))
    # the same stream by hand: k uniform, eps, z = mu_k + sigma_k eps, decoder mean
    r = np.random.default_rng(5)
    k = r.integers(0, 4, size=9)
    e = r.standard_normal((9, model.z_dim))
    mu_p, logvar_p = model.encode(model.pseudo_inputs)
    np.testing.assert_allclose(a, model.decode(mu_p[k] + np.exp(0.5 * logvar_p[k]) * e), rtol=1e-14)
    draws = model.sample(400, rng=np.random.default_rng(1), mean=False)
    assert set(np.unique(draws)) <= {0.0, 1.0} and draws.shape == (400, 6)
    state = np.random.get_state()[1].copy()
    model.sample(3, rng=np.random.default_rng(0))
    assert np.array_equal(np.random.get_state()[1], state)  # the global state is never touched


def test_rng_and_eps_determinism():
    model, x, _ = small_vamp("gaussian", "tanh")
    a = model.forward(x, rng=np.random.default_rng(5)).loss
    assert a == model.forward(x, rng=np.random.default_rng(5)).loss
    assert a != model.forward(x, rng=np.random.default_rng(6)).loss
    eps = np.random.default_rng(5).standard_normal((1, x.shape[0], model.z_dim))
    assert model.forward(x, eps=eps).loss == model.forward(x, eps=eps[0]).loss == a


def test_config_round_trip():
    model = VampVAE(10, 3, (8, 6), "elu", "gaussian_learned", n_pseudo=7, rng=np.random.default_rng(0),
                    dtype=np.float64, sigma_x=0.3, per_pixel_sigma=True)
    config = model.config
    assert config["kind"] == "vamp" == model.kind and config["n_pseudo"] == 7
    assert json.loads(json.dumps(config)) == config
    twin = VampVAE.from_config(config, rng=np.random.default_rng(0))
    assert twin.config == config and twin.n_pseudo == 7 and twin.dtype == np.float64
    for name, p in model.params.items():
        np.testing.assert_array_equal(twin.params[name], p, err_msg=name)
    assert model.params["pseudo.means"].shape == (7, 10)
    assert model.conditional is False and model.loss_name == "neg_elbo" and model.forward_options == ("beta",)
    assert model.noise_dim == 3 and "n_pseudo=7" in repr(model)
    # the initialisation: N(0.05, 0.01^2), every pseudo-input pixel inside (0, 1)
    big = VampVAE(784, 2, (4,), n_pseudo=50, rng=np.random.default_rng(1))
    m = big.params["pseudo.means"]
    assert abs(m.mean() - 0.05) < 1e-3 and abs(m.std() - 0.01) < 1e-3
    np.testing.assert_array_equal(big.pseudo_inputs, m)
    # the layer behind "pseudo.means": its own arrays, u = hardtanh(m), and its backward before a forward
    assert big.params["pseudo.means"] is big.pseudo.params["means"]
    assert big.grads["pseudo.means"] is big.pseudo.grads["means"]
    m[0, :2] = -1.0, 2.0
    np.testing.assert_array_equal(big.pseudo.forward()[0, :3], [0.0, 1.0, m[0, 2]])
    with pytest.raises(RuntimeError, match="forward"):
        vamp_vae.PseudoInputs(3, 4, rng=np.random.default_rng(0), dtype=np.float64).backward(np.zeros((3, 4)))


def test_dtype_kept():
    rng = np.random.default_rng(0)
    model = VampVAE(20, 4, (16,), "relu", "gaussian_learned", n_pseudo=6, rng=rng)
    x = rng.random((8, 20), dtype=np.float32)
    terms = model.forward(x, rng=rng)
    grads = model.backward()
    assert all(m.dtype == np.float32 for m in terms.metrics.values())
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.pseudo_inputs.dtype == np.float32 and model.sample(3, rng=rng).dtype == np.float32
    assert model.log_prior(np.zeros((3, 4), np.float32)).dtype == np.float64
    assert model.log_likelihood(x, 10, rng=rng).dtype == np.float64
    assert model.posterior_means(x).shape == (8, 4)
    # float32 forward agrees with a float64 twin
    twin = VampVAE.from_config({**model.config, "dtype": "float64"}, rng=np.random.default_rng(1))
    for name, p in model.params.items():
        twin.params[name][...] = p
    eps = rng.standard_normal((8, 4), dtype=np.float32)
    np.testing.assert_allclose(model.forward(x, eps=eps).elbo, twin.forward(x.astype(np.float64), eps=eps.astype(
        np.float64)).elbo, rtol=1e-4)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError),
                                          ("5", TypeError), (None, TypeError)])
def test_bad_n_pseudo(value, error):
    with pytest.raises(error, match="n_pseudo") as info:
        VampVAE(6, 2, (4,), n_pseudo=value, rng=np.random.default_rng(0))
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_bad_arguments():
    model, x, eps = small_vamp("bernoulli", "tanh")
    fresh = VampVAE(6, 3, (5, 4), n_pseudo=4, rng=np.random.default_rng(0), dtype=np.float64)
    with pytest.raises(RuntimeError, match="forward"):
        fresh.backward()
    model.forward(x, eps=eps)
    model.log_prior(np.zeros((2, 3)))            # overwrites the layers' caches
    with pytest.raises(RuntimeError, match="forward"):
        model.backward()
    with pytest.raises(ValueError, match="x"):
        model.forward(x[:, :5], eps=eps)
    with pytest.raises(ValueError, match="x"):
        model.forward(x + 1.0, eps=eps)          # Bernoulli targets outside [0, 1]
    with pytest.raises(ValueError, match="beta"):
        model.forward(x, eps=eps, beta=-1.0)
    with pytest.raises(ValueError, match="eps"):
        model.forward(x, eps=eps[:, :2])
    with pytest.raises(ValueError, match="rng"):
        model.forward(x)
    with pytest.raises(ValueError, match="z"):
        model.log_prior(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="z"):
        model.log_prior(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="n"):
        model.sample(0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        model.sample(2, rng=0)
    with pytest.raises(ValueError, match="likelihood"):
        VampVAE(6, 2, likelihood="poisson", rng=np.random.default_rng(0))


def test_training_lowers_the_loss_and_moves_the_pseudo_inputs():
    """The Trainer with a KL warm-up (beta through forward_options): the test loss falls, the pseudo-inputs learn."""
    model = VampVAE(64, 2, (32,), "tanh", n_pseudo=10, rng=np.random.default_rng(0))
    start = model.pseudo_inputs
    trainer = Trainer(model, Adam(model.params, lr=1e-2), fake_images(300), fake_images(100, seed=1),
                      TrainConfig(epochs=4, batch_size=50, warmup_epochs=2, seed=3), rng=np.random.default_rng(7),
                      log=None)
    history = trainer.fit()
    assert history[0]["beta"] < 1.0 and history[-1]["beta"] == 1.0
    assert history[-1]["test_loss"] < 0.95 * trainer.initial_test_loss   # 45.96 -> 41.23 nats
    assert np.isclose(history[-1]["test_loss"], -history[-1]["test_elbo"], rtol=1e-5)
    assert np.max(np.abs(model.pseudo_inputs - start)) > 0.05


# ----------------------------------------------------------------------------------------
# The guide figure script
# ----------------------------------------------------------------------------------------

def test_figure_script_quick(mnist_dir, tmp_path, monkeypatch):
    from demos.guide import vampprior

    monkeypatch.setenv("NPVAE_DATA_DIR", str(mnist_dir))
    out = vampprior.main(["--quick", "--out", str(tmp_path)])
    png = tmp_path / "guide_vampprior.png"
    assert png.is_file() and 0 < png.stat().st_size < 300 * 1024
    record = json.loads((tmp_path / "vampprior.json").read_text())
    assert record["script"] == "demos/guide/vampprior.py" and record["settings"]["quick"] is True
    numbers = record["numbers"]
    assert numbers["n_pseudo"] == 10 and numbers["epochs"] == 1
    for name in ("VAE", "VampVAE"):
        r = numbers[name]
        assert r == pytest.approx({k: out["numbers"][name][k] for k in r})
        assert np.isfinite(r["test_elbo"]) and r["test_elbo"] < 0 and r["test_elbo_se"] > 0
        assert 0 <= r["aggregate_inside_prior"] <= 1 and 0 <= r["prior_in_holes"] <= 1
    assert numbers["vamp_minus_vae_elbo"] == pytest.approx(numbers["VampVAE"]["test_elbo"]
                                                           - numbers["VAE"]["test_elbo"])
    assert 0 < numbers["pseudo_input_max"] <= 1


def test_figure_script_measures():
    """The script's numbers on known distributions: the mixture density against scipy, the 90 % regions."""
    from demos.guide import vampprior

    rng = np.random.default_rng(0)
    mu, logvar = rng.standard_normal((5, 2)), rng.normal(-0.5, 0.3, (5, 2))
    z = rng.standard_normal((30, 2)) * 2
    pdf = np.mean([multivariate_normal(mu[m], np.diag(np.exp(logvar[m]))).pdf(z) for m in range(5)], axis=0)
    np.testing.assert_allclose(vampprior.log_gaussian_mixture(z, mu, logvar, block=7), np.log(pdf), rtol=1e-12)
    # N(0, I) in 2-D: the 90 % highest-density region is |z| < sqrt(-2 log 0.1); its log density threshold
    draws = rng.standard_normal((200_000, 2))
    t = vampprior.hpd_threshold(D.standard_normal_log_prob(draws))
    assert t == pytest.approx(-np.log(2 * np.pi) + np.log(0.1), abs=0.01)
