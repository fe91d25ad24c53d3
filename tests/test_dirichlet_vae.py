"""The Dirichlet VAE and npvae.dirichlet: float64 gradient checks, softmax, the Laplace prior, KL, quadrature, Trainer."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from npvae import distributions as D
from npvae import gradcheck
from npvae.dirichlet import check_alpha, dirichlet_laplace_prior, softmax, softmax_backward
from npvae.models import DirichletVAE, from_config
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer

from helpers import fake_images, numeric, small_vae
from quadrature import log_px_2d_grid

LIKELIHOODS = ["bernoulli", "gaussian", "gaussian_learned"]
FD = dict(h=1e-4, order=4)
MAX_REL = {}


def small_dvae(likelihood="bernoulli", activation="tanh", **kw):
    """A small float64 Dirichlet VAE with random biases, data x and eps, all ReLU kinks >= margin away."""
    return small_vae(likelihood, activation, model_cls=DirichletVAE, **kw)


# ----------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("n_samples,beta,alpha", [(1, 1.0, 0.3), (3, 1.0, [0.2, 1.0, 2.5]), (2, 0.25, 0.7),
                                                  (1, 4.0, [3.0, 0.5, 0.1])])
def test_gradient_every_parameter(likelihood, activation, n_samples, beta, alpha):
    model, x, eps = small_dvae(likelihood, activation, n_samples=n_samples, alpha=alpha, sigma_x=0.7,
                               per_pixel_sigma=(n_samples > 1))

    def loss():
        return model.forward(x, eps=eps, n_samples=n_samples, beta=beta).loss

    loss()
    results = gradcheck.check_params(loss, model.params, model.backward(), **FD)
    assert set(results) == set(model.params)
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"Dirichlet {likelihood}/{activation}/L={n_samples}/beta={beta}"] = worst
    assert worst < 1e-6, {k: r.rel_error for k, r in results.items()}


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 6), (7, 2)])
def test_softmax_backward_by_finite_differences(shape):
    rng = np.random.default_rng(sum(shape))
    z = 2.0 * rng.standard_normal(shape)
    w = rng.standard_normal(shape)  # f(z) = sum(w * softmax(z)), so dL/dtheta = w
    analytic = softmax_backward(softmax(z), w)
    numeric_ = gradcheck.numerical_gradient(lambda: float(np.sum(w * softmax(z))), z, **FD)
    err = gradcheck.rel_error(analytic, numeric_)
    MAX_REL[f"softmax_backward {shape}"] = err
    assert err < 1e-7
    np.testing.assert_allclose(analytic.sum(axis=-1), 0, atol=1e-14)  # softmax is invariant to z + c 1


@given(z=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 8)),
                    elements=st.floats(-700, 700)),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_softmax_rows_are_positive_and_sum_to_one(z, dtype):
    theta = softmax(z.astype(dtype))
    assert theta.dtype == dtype and np.all(np.isfinite(theta)) and np.all(theta >= 0)
    np.testing.assert_allclose(theta.sum(axis=-1), 1, rtol=10 * np.finfo(dtype).eps * z.shape[1])
    zc = np.clip(z, -30, 30).astype(dtype)  # a moderate spread: no entry underflows to 0
    assert np.all(softmax(zc) > 0)
    np.testing.assert_allclose(softmax(zc + dtype(3)), softmax(zc), rtol=1e-5, atol=1e-30)


# ----------------------------------------------------------------------------------------
# the Laplace prior and the KL
# ----------------------------------------------------------------------------------------

alphas = st.integers(2, 8).flatmap(
    lambda K: hnp.arrays(np.float64, K, elements=st.floats(0.01, 100.0)))


@given(alpha=alphas)
def test_laplace_prior_against_the_projected_matrix_form(alpha):
    """mu0 = P log alpha and sigma0^2 = diag(P diag(1/alpha) P), P the centring projection; softmax(mu0) = alpha / sum."""
    K = alpha.shape[0]
    mu0, logvar0 = dirichlet_laplace_prior(alpha, K)
    P = np.eye(K) - np.ones((K, K)) / K
    np.testing.assert_allclose(mu0, P @ np.log(alpha), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(logvar0), np.diag(P @ np.diag(1 / alpha) @ P), rtol=1e-12)
    # the formula term by term, written out as in the paper
    direct = [(1 / a) * (1 - 2 / K) + sum(1 / b for b in alpha) / K ** 2 for a in alpha]
    np.testing.assert_allclose(np.exp(logvar0), direct, rtol=1e-12)
    np.testing.assert_allclose(softmax(mu0), alpha / alpha.sum(), rtol=1e-12)  # the Dirichlet's mean
    assert mu0.dtype == logvar0.dtype == np.float64 and abs(mu0.sum()) < 1e-10


@pytest.mark.parametrize("K,a", [(2, 0.3), (3, 1.0), (10, 0.02), (50, 5.0)])
def test_symmetric_alpha(K, a):
    mu0, logvar0 = dirichlet_laplace_prior(a, K)
    assert np.all(mu0 == 0)
    np.testing.assert_allclose(np.exp(logvar0), (1 / a) * (1 - 1 / K), rtol=1e-13)  # (1/a)(1 - 2/K) + (1/K)(1/a)


@given(K=st.integers(2, 8), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-8, 1e-3, 1.0, 10.0]))
@numeric()
def test_dirichlet_kl_is_nonnegative_and_zero_at_the_prior(K, seed, scale):
    """KL(q || Laplace prior) >= 0 for q near and far from the prior (to 1e-8), and exactly 0 at it."""
    r = np.random.default_rng(seed)
    alpha = np.exp(r.uniform(np.log(0.01), np.log(100.0), K))
    mu0, logvar0 = dirichlet_laplace_prior(alpha, K)
    mu = mu0 + scale * r.standard_normal((3, K))
    logvar = np.clip(logvar0 + scale * r.standard_normal((3, K)), -20, 10)
    assert np.all(D.kl_normal(mu, logvar, mu0, logvar0) >= 0)
    assert np.all(D.kl_normal(np.tile(mu0, (3, 1)), np.tile(logvar0, (3, 1)), mu0, logvar0) == 0)


@pytest.mark.parametrize("alpha", [0.3, [0.5, 2.0, 0.1]])
def test_model_kl_is_zero_exactly_when_q_is_the_prior(alpha):
    """An encoder whose last layer outputs [mu0, logvar0] for every x: KL = 0 exactly; moving off gives KL > 0."""
    model, x, eps = small_dvae("gaussian", alpha=alpha)
    last = model.encoder[-1]
    last.params["W"][...] = 0
    last.params["b"][...] = np.concatenate([model.prior_mu, model.prior_logvar])
    assert np.all(model.forward(x, eps=eps).kl == 0)
    last.params["b"][0] += 1e-3
    assert np.all(model.forward(x, eps=eps).kl > 0)


# ----------------------------------------------------------------------------------------
# log p(x) against quadrature (K = 2)
# ----------------------------------------------------------------------------------------

def test_log_likelihood_converges_to_2d_quadrature(rng):
    """K = 2: log p(x) = log ∫∫ p(x|softmax(z)) N(z; mu0, sigma0^2) dz on a grid; IS with k = 20000 within 2e-2 (a N(0, I) prior is off by 0.06-0.12)."""
    model = DirichletVAE(5, 2, (8,), "tanh", "bernoulli", alpha=[0.4, 1.5], rng=np.random.default_rng(3),
                         dtype=np.float64)
    x = (np.random.default_rng(4).random((3, 5)) < 0.4).astype(np.float64)
    mu0, logvar0 = model.prior_mu, model.prior_logvar
    # a proposal wider than the prior (so wider than the posterior): p(x|z) <= 1 then bounds the weights
    # p(x|z) p(z) / q(z|x) (their relative sd is ~0.6, so log p(x) from k = 20000 has sd ~0.005 nats);
    # q still depends on x through W
    last = model.encoder[-1]
    last.params["W"] *= 0.2
    last.params["b"][...] = np.concatenate([mu0, logvar0 + 0.7])
    exact, errs = [], []
    for xi in x:
        def log_joint(z):  # (m, 2) -> (m,)
            out = model.decoder.forward(softmax(z))
            return model.likelihood.log_prob(xi, out) + D.gaussian_log_prob(z, mu0, logvar0)
        val, err = log_px_2d_grid(log_joint, lo=mu0 - 14, hi=mu0 + 14, n=401)
        exact.append(val)
        errs.append(err)
    exact = np.array(exact)
    assert max(errs) < 1e-6
    elbo = np.mean([model.forward(x, rng=rng).elbo for _ in range(200)], axis=0)
    assert np.all(elbo < exact)
    gaps, ses = {}, {}
    for k in (10, 100, 1000):
        draws = np.array([model.iwae_bound(x, k, rng=rng) for _ in range(20)])  # (20, B)
        gaps[k], ses[k] = exact - draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(20) + 1e-12
        assert np.all(gaps[k] >= -4 * ses[k]), (k, gaps[k], ses[k])  # a lower bound, up to its noise
    # the bound tightens with k: the ELBO's gap exceeds IWAE_1000's (the draws' means at k = 10, 100 are
    # too heavy-tailed with a random q to order reliably in 20 draws)
    assert np.all(exact - elbo > gaps[1000] + 4 * ses[1000])
    ll = model.log_likelihood(x, 20000, rng=rng, batch_size=2)
    np.testing.assert_allclose(ll, exact, atol=2e-2)
    MAX_REL["quadrature |log p(x) IS k=20000 - exact| (nats)"] = float(np.max(np.abs(ll - exact)))


# ----------------------------------------------------------------------------------------
# API: sampling, theta, dtype, reproducibility, config, errors
# ----------------------------------------------------------------------------------------

def test_sample_draws_from_the_laplace_prior_not_the_standard_normal(rng, monkeypatch):
    model = DirichletVAE(6, 3, (5,), alpha=[0.2, 1.0, 5.0], rng=rng, dtype=np.float64)
    seen = []
    real = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda t: seen.append(t) or real(t))
    s = model.sample(20000, rng=np.random.default_rng(0))
    assert s.shape == (20000, 6) and np.all((s > 0) & (s < 1))
    theta = seen[0]
    np.testing.assert_allclose(theta.sum(axis=1), 1, rtol=1e-12)
    eps = np.random.default_rng(0).standard_normal((20000, 3))  # the same draws, mapped by hand
    np.testing.assert_allclose(theta, softmax(model.prior_mu + np.exp(model.prior_logvar / 2) * eps), rtol=1e-12)
    assert theta[:, 2].mean() > theta[:, 1].mean() > theta[:, 0].mean()  # follows alpha
    draws = model.sample(4, rng=rng, mean=False)
    assert set(np.unique(draws)) <= {0.0, 1.0}


def test_encode_theta_decode(rng):
    model = DirichletVAE(10, 4, (8,), rng=rng, dtype=np.float64)
    x = rng.random((5, 10))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    theta = model.topic_proportions(x)
    np.testing.assert_allclose(theta, softmax(mu), rtol=1e-14)
    np.testing.assert_allclose(theta.sum(axis=1), 1, rtol=1e-14)
    np.testing.assert_array_equal(model.theta(x), theta)
    np.testing.assert_allclose(model.decode(mu), model.decode(mu + 7.0), rtol=1e-12)  # z + c 1: same theta
    np.testing.assert_allclose(model.posterior_means(x, batch_size=2), mu, rtol=1e-14)


def test_float32_is_preserved(rng):
    model = DirichletVAE(20, 4, (16,), alpha=[0.1, 0.2, 0.3, 0.4], rng=rng)
    x = (rng.random((8, 20)) < 0.5).astype(np.float32)
    terms = model.forward(x, rng=rng, n_samples=2, beta=0.5)
    grads = model.backward()
    assert all(v.dtype == np.float32 for v in terms.metrics.values())
    assert all(g.dtype == np.float32 for g in grads.values()) and all(p.dtype == np.float32 for p in model.params.values())
    assert model.prior_mu.dtype == model.prior_logvar.dtype == np.float32
    assert model.topic_proportions(x).dtype == model.encode(x)[0].dtype == np.float32
    assert model.decode(np.zeros((3, 4), np.float32)).dtype == model.sample(3, rng=rng).dtype == np.float32
    assert model.iwae_bound(x, 4, rng=rng).dtype == np.float64


def test_reproducible_and_the_global_state_untouched():
    model = DirichletVAE(12, 3, (8,), rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((6, 12))
    state = np.random.get_state()[1].copy()
    a = model.forward(x, rng=np.random.default_rng(5), n_samples=2).loss
    assert a == model.forward(x, rng=np.random.default_rng(5), n_samples=2).loss
    assert a != model.forward(x, rng=np.random.default_rng(6), n_samples=2).loss
    assert model.forward(x, eps=np.random.default_rng(5).standard_normal((2, 6, 3)), n_samples=2).loss == a
    assert np.array_equal(np.random.get_state()[1], state)
    twin = DirichletVAE(12, 3, (8,), rng=np.random.default_rng(0), dtype=np.float64)
    assert twin.forward(x, rng=np.random.default_rng(5), n_samples=2).loss == a


@pytest.mark.parametrize("alpha", [0.3, [0.5, 1.0, 2.0]])
def test_config_round_trip(rng, alpha):
    model = DirichletVAE(10, 3, (8, 6), "elu", "gaussian_learned", alpha=alpha, rng=rng, dtype=np.float64)
    assert model.config["kind"] == "dirichlet" and model.config["alpha"] == alpha
    clone = from_config(model.config, rng=np.random.default_rng(1))
    assert isinstance(clone, DirichletVAE) and clone.config == model.config
    np.testing.assert_array_equal(clone.prior_logvar, model.prior_logvar)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(z_dim=1), ValueError, "z_dim: expected an integer >= 2, got 1"),
    (dict(alpha=0.0), ValueError, "alpha: expected a number > 0.0, got 0.0"),
    (dict(alpha=-1), ValueError, "alpha: expected a number > 0.0"),
    (dict(alpha=float("nan")), ValueError, "alpha: expected a finite number"),
    (dict(alpha=[0.1, 0.2]), ValueError, r"alpha: expected a number or shape \(3,\).*got shape \(2,\)"),
    (dict(alpha=[0.1, -0.2, 1.0]), ValueError, "alpha: expected finite values > 0"),
    (dict(alpha=np.array([0.1, np.inf, 1.0])), ValueError, "alpha: expected finite values > 0"),
    (dict(alpha="dense"), TypeError, "alpha: expected a positive number or an array of 3"),
    (dict(alpha=True), TypeError, "alpha: expected a positive number"),
    (dict(likelihood="poisson"), ValueError, "likelihood: expected one of"),
])
def test_constructor_errors(kwargs, exc, match):
    args = dict(x_dim=10, z_dim=3, hidden=(8,), rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        DirichletVAE(**args)


def test_other_errors(rng):
    model = DirichletVAE(10, 3, (8,), rng=rng, dtype=np.float64)
    x = rng.random((4, 10))
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    model.forward(x, rng=rng)
    model.topic_proportions(x)
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    with pytest.raises(ValueError, match=r"eps: expected shape \(2, 4, 3\)"):
        model.forward(x, eps=np.zeros((1, 4, 3)), n_samples=2)
    with pytest.raises(ValueError, match="beta: expected a number >= 0.0"):
        model.forward(x, rng=rng, beta=-1.0)
    with pytest.raises(ValueError, match=r"z: expected shape \(\*, 3\)"):
        model.decode(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="K: expected an integer >= 2"):
        dirichlet_laplace_prior(0.3, 1)
    assert check_alpha(np.array([1, 2]), 2).dtype == np.float64  # integer arrays are fine


def test_trainer_trains_and_round_trips_a_checkpoint(tmp_path):

    def make():
        model = DirichletVAE(64, 3, (16,), alpha=[0.3, 0.5, 1.0], rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params, lr=1e-2), fake_images(200), fake_images(60, seed=1),
                       TrainConfig(epochs=2, batch_size=32, seed=3, n_samples=2, beta=0.5),
                       rng=np.random.default_rng(7), log=None, checkpoint_path=tmp_path / "dvae.npz")
    t = make()
    history = t.fit()
    assert history[-1]["test_loss"] < 0.95 * t.initial_test_loss
    assert np.isclose(history[-1]["test_loss"], history[-1]["test_reconstruction"] + history[-1]["test_kl"])
    fresh = make()
    fresh.load(tmp_path / "dvae.npz")
    for k in t.model.params:
        np.testing.assert_array_equal(fresh.model.params[k], t.model.params[k], err_msg=k)
    assert fresh.evaluate()["loss"] == t.evaluate()["loss"]


def test_zz_report(capsys):
    """Print the largest relative errors measured above (run with -s to see them)."""
    with capsys.disabled():
        for k, v in sorted(MAX_REL.items()):
            print(f"  {k:55s} {v:.2e}")
