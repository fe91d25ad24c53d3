"""The VAE: full-model gradient checks, the ELBO terms, IWAE and log p(x), API and errors."""

import numpy as np
import pytest
from scipy import integrate

from npvae import distributions as D
from npvae import gradcheck
from npvae.models import LOGVAR_MAX, LOGVAR_MIN, VAE

from helpers import small_vae

LIKELIHOODS = ["bernoulli", "gaussian", "gaussian_learned"]
# Fourth-order central differences: h = 1e-4 keeps the probe points (up to 2h) far from
# any kink, and the O(h^4) truncation error still lets tiny gradient entries meet 1e-6.
FD = dict(h=1e-4, order=4)
MAX_REL = {}  # largest relative error seen per configuration, printed at the end of the run (conftest.py)


def _check_model(model, x, eps, n_samples, beta):
    model.forward(x, eps=eps, n_samples=n_samples, beta=beta)
    grads = model.backward()

    def loss():
        return model.forward(x, eps=eps, n_samples=n_samples, beta=beta).loss

    return gradcheck.check_params(loss, model.params, grads, **FD)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
@pytest.mark.parametrize("n_samples,beta", [(1, 1.0), (3, 1.0), (2, 0.25), (1, 4.0)])
def test_full_model_gradient_elementwise(likelihood, activation, n_samples, beta):
    model, x, eps = small_vae(likelihood, activation, n_samples=n_samples, sigma_x=0.7,
                              per_pixel_sigma=(n_samples > 1))
    results = _check_model(model, x, eps, n_samples, beta)
    assert set(results) == set(model.params)
    worst = max(r.rel_error for r in results.values())
    key = f"{likelihood}/{activation}/L={n_samples}/beta={beta}"
    MAX_REL[key] = worst
    assert worst < 1e-6, {k: r.rel_error for k, r in results.items()}


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_full_model_gradient_random_directions(likelihood):
    """A bigger network, checked along random directions (cheap for large arrays)."""
    model, x, eps = small_vae(likelihood, "tanh", x_dim=64, z_dim=8, hidden=(48, 32), batch=16,
                              n_samples=2, sigma_x=0.5)
    model.forward(x, eps=eps, n_samples=2)
    grads = model.backward()
    results = gradcheck.check_params(lambda: model.forward(x, eps=eps, n_samples=2).loss, model.params, grads,
                                     max_elementwise=100, n_directions=8, rng=np.random.default_rng(1), **FD)
    assert any(r.mode == "directions" for r in results.values())
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"{likelihood}/tanh/64-48-32-8 directions"] = worst
    assert worst < 1e-6


def test_gradient_check_catches_std_variance_mixup(monkeypatch):
    """Using exp(logvar) as sigma in the sampler while the KL treats it as the variance
    (numpy-ml's bug) makes the gradient check fail, and the sampler test below too."""
    model, x, eps = small_vae("bernoulli", "tanh")
    ok = max(r.rel_error for r in _check_model(model, x, eps, 1, 1.0).values())
    monkeypatch.setattr(D, "reparameterize", lambda mu, logvar, e: mu + np.exp(logvar) * e)
    bad = max(r.rel_error for r in _check_model(model, x, eps, 1, 1.0).values())
    assert ok < 1e-6 < 1e-2 < bad


def test_gradient_check_catches_fresh_eps_in_backward(monkeypatch):
    """Drawing a new eps in the backward pass gives a wrong gradient, and the check sees it."""
    model, x, eps = small_vae("gaussian", "tanh", n_samples=2)
    real = D.reparameterize_backward
    fresh = np.random.default_rng(99)
    monkeypatch.setattr(D, "reparameterize_backward",
                        lambda dz, logvar, e: real(dz, logvar, fresh.standard_normal(e.shape)))
    bad = max(r.rel_error for r in _check_model(model, x, eps, 2, 1.0).values())
    assert bad > 1e-3


def test_forward_terms_match_their_definitions(rng):
    model, x, eps = small_vae("bernoulli", "tanh", n_samples=3)
    terms = model.forward(x, eps=eps, n_samples=3, beta=0.5)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps                                    # (3, B, Z)
    p = model.decode(z.reshape(-1, model.z_dim)).reshape(3, x.shape[0], -1)
    log_px = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)       # naive, safe here
    kl = 0.5 * np.sum(mu ** 2 + np.exp(logvar) - logvar - 1, axis=-1)
    np.testing.assert_allclose(terms.reconstruction, -log_px.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-12)
    np.testing.assert_allclose(terms.loss, np.mean(-log_px.mean(axis=0) + 0.5 * kl), rtol=1e-12)
    np.testing.assert_allclose(terms.elbo, log_px.mean(axis=0) - kl, rtol=1e-12)


def test_float32_end_to_end(rng):
    model = VAE(20, 4, (16,), rng=rng)
    x = (rng.random((8, 20)) < 0.5).astype(np.float32)
    terms = model.forward(x, rng=rng, n_samples=2)
    grads = model.backward()
    assert terms.reconstruction.dtype == terms.kl.dtype == np.float32
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.decode(np.zeros((3, 4), np.float32)).dtype == np.float32
    assert model.sample(5, rng=rng).dtype == np.float32
    mu, logvar = model.encode(x)
    assert mu.dtype == logvar.dtype == np.float32
    assert model.iwae_bound(x, 4, rng=rng).dtype == np.float64  # accumulated in float64


def test_params_and_grads_are_live_flat_dicts(rng):
    model = VAE(10, 2, (8, 6), likelihood="gaussian_learned", rng=rng, dtype=np.float64)
    assert set(model.params) == set(model.grads)
    assert {"encoder.0.W", "encoder.4.b", "decoder.0.W", "decoder.4.b", "likelihood.log_sigma"} <= set(model.params)
    assert model.params["encoder.0.W"] is model.encoder[0].params["W"]
    assert model.grads["decoder.2.b"] is model.decoder[2].grads["b"]
    for k in model.params:
        assert model.params[k].shape == model.grads[k].shape
    x = rng.random((5, 10))
    model.forward(x, rng=rng)
    before = {k: id(g) for k, g in model.grads.items()}
    g = model.backward()
    assert {k: id(v) for k, v in g.items()} == before
    # an in-place update of params changes what forward computes
    eps = rng.standard_normal((1, 5, 2))
    l0 = model.forward(x, eps=eps).loss
    model.params["decoder.4.b"] += 1.0
    assert model.forward(x, eps=eps).loss != l0


def test_rng_and_eps_determinism(rng):
    model = VAE(12, 3, (8,), rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((6, 12))
    a = model.forward(x, rng=np.random.default_rng(5)).loss
    b = model.forward(x, rng=np.random.default_rng(5)).loss
    c = model.forward(x, rng=np.random.default_rng(6)).loss
    assert a == b and a != c
    eps = np.random.default_rng(5).standard_normal((1, 6, 3))
    assert model.forward(x, eps=eps).loss == a
    state = np.random.get_state()[1].copy()
    model.forward(x, rng=rng)
    assert np.array_equal(np.random.get_state()[1], state)  # the global state is never touched


def test_logvar_clip_is_in_the_gradient(rng):
    """Outside [LOGVAR_MIN, LOGVAR_MAX] the clip's derivative is 0; inside, the identity."""
    model, x, eps = small_vae("gaussian", "tanh")
    head = model.encoder[-1]
    z = model.z_dim
    head.params["b"][z + 1] = LOGVAR_MIN - 5.0  # second logvar unit clipped low for every example
    _, logvar = model.encode(x)
    assert np.all(logvar[:, 1] == LOGVAR_MIN)
    results = _check_model(model, x, eps, 1, 1.0)
    assert max(r.rel_error for r in results.values()) < 1e-6
    assert np.all(model.grads["encoder.4.b"][z + 1] == 0)
    assert np.all(model.grads["encoder.4.W"][:, z + 1] == 0)
    # clipped high: the loss (~exp(10) per example) no longer depends on the raw output
    head.params["b"][z] = LOGVAR_MAX + 5.0
    model.forward(x, eps=eps)
    assert model.backward()["encoder.4.b"][z] == 0
    b = head.params["b"]
    num = gradcheck.numerical_gradient(lambda: model.forward(x, eps=eps).loss, b, **FD)
    assert num[z] == 0 and num[z + 1] == 0


# ----------------------------------------------------------------------------------------
# IWAE bound and log p(x)
# ----------------------------------------------------------------------------------------

def test_iwae_k1_equals_single_sample_elbo():
    model, x, eps = small_vae("bernoulli", "tanh")
    iwae = model.iwae_bound(x, 1, eps=eps)
    terms = model.forward(x, eps=eps)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps[0]
    # ELBO with the same sample: log p(x|z) + log p(z) - log q(z|x)
    mc_elbo = -terms.reconstruction + D.standard_normal_log_prob(z) - D.gaussian_log_prob(z, mu, logvar)
    np.testing.assert_allclose(iwae, mc_elbo, rtol=1e-12, atol=1e-12)


def test_iwae_chunking_does_not_change_the_result(rng):
    model, x, _ = small_vae("gaussian", "tanh", batch=3)
    eps = rng.standard_normal((37, 3, model.z_dim))
    a = model.iwae_bound(x, 37, eps=eps)
    b = model.iwae_bound(x, 37, eps=eps, chunk_size=5)
    np.testing.assert_allclose(a, b, rtol=1e-13)


def _exact_log_px(model, x):
    """log p(x) = log ∫ p(x|z) N(z; 0, 1) dz for a z_dim = 1 model, by adaptive quadrature."""
    out = []
    for xi in x:
        def log_joint(z):
            o = model.decoder.forward(np.array([[z]]))
            return float(model.likelihood.log_prob(xi, o)[0] + D.standard_normal_log_prob(np.array([z])))
        # scale by the joint's peak so the integrand is O(1) and the log is exact
        grid = np.linspace(-10, 10, 2001)
        peak = max(log_joint(z) for z in grid[::20])
        val, err = integrate.quad(lambda z: np.exp(log_joint(z) - peak), -10, 10, limit=400,
                                  epsabs=0, epsrel=1e-11)
        out.append(peak + np.log(val))
    return np.array(out)


def test_bounds_against_exact_log_px(rng):
    """z_dim = 1: ELBO <= IWAE_k <= log p(x), and IWAE_k -> log p(x) as k grows."""
    model = VAE(5, 1, (8,), "tanh", "bernoulli", rng=np.random.default_rng(3), dtype=np.float64)
    x = (np.random.default_rng(4).random((4, 5)) < 0.4).astype(np.float64)
    log_px = _exact_log_px(model, x)
    # ELBO with the closed-form KL, averaged over many draws of eps
    elbo = np.mean([model.forward(x, rng=rng).elbo for _ in range(400)], axis=0)
    gaps, ses = {}, {}
    for k in (1, 10, 100, 1000, 5000):
        draws = np.array([model.iwae_bound(x, k, rng=rng) for _ in range(30)])  # (30, B)
        gaps[k] = log_px - draws.mean(axis=0)
        ses[k] = draws.std(axis=0, ddof=1) / np.sqrt(len(draws)) + 1e-12
    assert np.all(elbo <= log_px)
    for k in gaps:  # a lower bound: the mean of the draws is below log p(x) up to its noise
        assert np.all(gaps[k] >= -4 * ses[k]), (k, gaps[k], ses[k])
    mean_gap = {k: g.mean() for k, g in gaps.items()}
    assert mean_gap[1] > mean_gap[10] > mean_gap[100] > mean_gap[1000] - 4 * ses[1000].max()
    assert np.all(np.abs(gaps[5000]) < 5e-3 + 4 * ses[5000])
    np.testing.assert_allclose(model.log_likelihood(x, 5000, rng=rng, batch_size=3), log_px, atol=1e-2)
    test_bounds_against_exact_log_px.numbers = dict(log_px=log_px, elbo=elbo,
                                                    gaps={k: float(np.max(np.abs(g))) for k, g in gaps.items()})


def test_log_likelihood_batches_like_iwae(rng):
    model, x, _ = small_vae("bernoulli", "tanh", batch=7)
    a = model.log_likelihood(x, 20, rng=np.random.default_rng(0), batch_size=3)
    r = np.random.default_rng(0)
    b = np.concatenate([model.iwae_bound(x[i:i + 3], 20, rng=r) for i in range(0, 7, 3)])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (7,) and a.dtype == np.float64


# ----------------------------------------------------------------------------------------
# API and errors
# ----------------------------------------------------------------------------------------

def test_encode_decode_reconstruct_sample(rng):
    model = VAE(10, 3, (8,), rng=rng, dtype=np.float64)
    x = rng.random((4, 10))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 3)
    probs = model.decode(mu)
    assert np.all((probs > 0) & (probs < 1))
    np.testing.assert_array_equal(model.reconstruct(x), probs)
    s = model.sample(6, rng=rng)
    assert s.shape == (6, 10) and np.all((s > 0) & (s < 1))
    g = VAE(10, 3, (8,), likelihood="gaussian", rng=rng, dtype=np.float64)
    z = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(g.decode(z), g.decoder.forward(z))  # the Gaussian mean itself


def test_backward_needs_a_forward(rng):
    model = VAE(10, 3, (8,), rng=rng, dtype=np.float64)
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    x = rng.random((4, 10))
    model.forward(x, rng=rng)
    model.encode(x)  # overwrites the layers' caches
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()


def test_config_round_trip(rng):
    model = VAE(10, 3, (8, 6), "elu", "gaussian_learned", rng=rng, dtype=np.float64, sigma_x=0.3,
                per_pixel_sigma=True)
    clone = VAE.from_config(model.config, rng=np.random.default_rng(1))
    assert clone.config == model.config
    assert {k: v.shape for k, v in clone.params.items()} == {k: v.shape for k, v in model.params.items()}


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(z_dim=0), ValueError, "z_dim: expected an integer >= 1, got 0"),
    (dict(z_dim=-2), ValueError, "z_dim"),
    (dict(x_dim=2.5), TypeError, "x_dim: expected an integer"),
    (dict(likelihood="poisson"), ValueError, "likelihood: expected one of .*got 'poisson'"),
    (dict(activation="swish"), ValueError, "activation: expected one of .*got 'swish'"),
    (dict(hidden=(8, 0)), ValueError, r"hidden\[1\]"),
    (dict(dtype=np.int32), TypeError, "dtype: expected float32 or float64"),
    (dict(sigma_x=0.0), ValueError, "sigma_x: expected a number > 0"),
    (dict(rng=None), TypeError, "rng: expected a numpy.random.Generator"),
])
def test_constructor_errors(kwargs, exc, match):
    args = dict(x_dim=10, z_dim=3, hidden=(8,), rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        VAE(**args)


@pytest.mark.parametrize("make_x,exc,match", [
    (lambda: np.zeros((4, 9)), ValueError, r"x: expected shape \(\*, 10\), got shape \(4, 9\)"),
    (lambda: np.zeros(10), ValueError, "x: expected shape"),
    (lambda: np.zeros((4, 10), dtype=np.int64), TypeError, "x: expected a floating-point array.*int64"),
    (lambda: np.zeros((4, 10), dtype=object), TypeError, "x: expected a floating-point array"),
    (lambda: np.zeros((4, 10), dtype=np.float32), TypeError, "x: expected dtype float64, got dtype float32"),
    (lambda: np.full((4, 10), np.nan), ValueError, "x: expected only finite values, got 40 NaN or inf"),
    (lambda: np.full((4, 10), 1.5), ValueError, r"x: expected values <= 1.0, got maximum 1.5"),
    (lambda: np.full((4, 10), -0.1), ValueError, r"x: expected values >= 0.0"),
    (lambda: [[0.0] * 10], TypeError, "x: expected a numpy.ndarray, got list"),
    (lambda: np.zeros((0, 10)), ValueError, "x: expected a batch of at least 1 example"),
])
def test_forward_input_errors(make_x, exc, match):
    model = VAE(10, 3, (8,), rng=np.random.default_rng(0), dtype=np.float64)
    with pytest.raises(exc, match=match):
        model.forward(make_x(), rng=np.random.default_rng(0))


def test_other_argument_errors(rng):
    model = VAE(10, 3, (8,), rng=rng, dtype=np.float64)
    x = rng.random((4, 10))
    with pytest.raises(ValueError, match="beta: expected a number >= 0.0, got -1.0"):
        model.forward(x, rng=rng, beta=-1.0)
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 1, got 0"):
        model.forward(x, rng=rng, n_samples=0)
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator when eps is not given"):
        model.forward(x)
    with pytest.raises(ValueError, match=r"eps: expected shape \(2, 4, 3\), got shape \(1, 4, 3\)"):
        model.forward(x, eps=np.zeros((1, 4, 3)), n_samples=2)
    with pytest.raises(ValueError, match="k: expected an integer >= 1, got 0"):
        model.iwae_bound(x, 0, rng=rng)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        model.log_likelihood(x, 10, rng=rng, batch_size=0)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        model.log_likelihood(x, 10, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="n: expected an integer >= 1, got 0"):
        model.sample(0, rng=rng)
    with pytest.raises(ValueError, match=r"z: expected shape \(\*, 3\)"):
        model.decode(np.zeros((2, 4)))
    # a Gaussian likelihood accepts values outside [0, 1]
    g = VAE(10, 3, (8,), likelihood="gaussian", rng=rng, dtype=np.float64)
    assert np.isfinite(g.forward(x * 50 - 20, rng=rng).loss)


def test_training_lowers_the_loss_markedly():
    """A few hundred Adam steps on a tiny synthetic dataset (two prototypes plus noise)."""
    from npvae.optim import Adam

    rng = np.random.default_rng(0)
    protos = (rng.random((4, 16)) < 0.5).astype(np.float32)
    data = protos[rng.integers(0, 4, 512)]
    flip = rng.random(data.shape) < 0.05
    data = np.where(flip, 1 - data, data).astype(np.float32)
    model = VAE(16, 2, (32,), rng=rng)
    opt = Adam(model.params, lr=3e-3)
    start = model.forward(data, rng=rng).loss
    for step in range(300):
        batch = data[rng.integers(0, 512, 64)]
        model.forward(batch, rng=rng)
        opt.step(model.backward())
    end = np.mean([model.forward(data, rng=rng).loss for _ in range(5)])
    assert np.isfinite(end)
    assert end < 0.6 * start, (start, end)
    # prototype entropy floor: 16 pixels at 5 % flip noise plus log 4 for the class
    assert end < 16 * 0.2 + np.log(4) + 3.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_a_full_training_step_keeps_the_dtype(dtype, likelihood):
    """No silent upcast anywhere: params, grads, Adam's moments and the ELBO terms keep the dtype."""
    from npvae.data import batch_to_float
    from npvae.optim import Adam

    rng = np.random.default_rng(0)
    model = VAE(784, 8, (32, 16), likelihood=likelihood, rng=rng, dtype=dtype, per_pixel_sigma=True)
    opt = Adam(model.params)
    images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    x = batch_to_float(images, binarize="dynamic", rng=rng, dtype=dtype)
    for _ in range(2):
        terms = model.forward(x, rng=rng, n_samples=2)
        opt.step(model.backward())
    assert terms.reconstruction.dtype == terms.kl.dtype == dtype
    for name in model.params:
        assert model.params[name].dtype == dtype, name
        assert model.grads[name].dtype == dtype, name
        assert opt.m[name].dtype == dtype and opt.v[name].dtype == dtype, name
    assert model.encode(x)[0].dtype == model.decode(np.zeros((2, 8), dtype)).dtype == dtype


def test_posterior_means_latent_activity_and_active_units(rng):
    """A_u = Var_x mu_u(x) (Burda et al. 2016); a unit whose mean ignores x is inactive."""
    model = VAE(10, 3, (8,), rng=rng, dtype=np.float64)
    head = model.encoder[-1]
    head.params["W"][:, 1] = 0.0           # mu_1 is the constant bias: no activity
    head.params["W"][:, 0] *= 50.0         # mu_0 varies a lot with x
    x = rng.random((37, 10))
    mu = model.posterior_means(x, batch_size=5)
    np.testing.assert_allclose(mu, model.encode(x)[0], rtol=1e-12)
    activity = model.latent_activity(x, batch_size=5)
    np.testing.assert_allclose(activity, mu.var(axis=0), rtol=1e-12)
    assert activity[1] < 1e-20 and activity[0] > 0.01
    assert model.active_units(x) == int(np.sum(activity > 0.01))
    with pytest.raises(ValueError, match="at least 2 examples"):
        model.latent_activity(x[:1])
