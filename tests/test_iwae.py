"""The IWAE: float64 gradient checks (k = 1, 3, 5, every likelihood), k = 1 vs the VAE, bounds vs exact log p(x),
DReG, stability, dtype, reproducibility, the Trainer, errors."""

import numpy as np
import pytest

from npvae import distributions as D
from npvae import gradcheck
from npvae.models import IWAE, VAE, from_config
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer

from helpers import fake_images, kink_margin
from quadrature import log_px_1d

LIKELIHOODS = ["bernoulli", "gaussian", "gaussian_learned"]
FD = dict(h=1e-4, order=4)  # as tests/test_vae.py: fourth-order stencil, probes far from ReLU kinks
MAX_REL = {}  # largest relative error per configuration, printed at the end of the run (conftest.py)
GAPS = {}     # k -> log p(x) - E L_k per example (nats), printed at the end of the run (conftest.py)


def small_iwae(likelihood="bernoulli", activation="tanh", *, k=3, seed=0, x_dim=6, z_dim=3, hidden=(5, 4), batch=4,
               margin=0.05, **kw):
    """A small float64 IWAE with random biases, data x, fixed eps (k, B, Z), every ReLU kink >= margin away."""
    for s in range(seed, seed + 1000):
        rng = np.random.default_rng(s)
        model = IWAE(x_dim, z_dim, hidden, activation, likelihood, k=k, rng=rng, dtype=np.float64, **kw)
        for name, p in model.params.items():
            if name.endswith(".b"):
                p[...] = rng.normal(0.0, 0.5, p.shape)
        x = rng.random((batch, x_dim))
        eps = rng.standard_normal((k, batch, z_dim))
        model.forward(x, eps=eps)
        if kink_margin(model) > margin:
            return model, x, eps
    raise AssertionError("no seed found with all pre-activations away from the ReLU kink")


def twin_vae(model):
    """A VAE with the IWAE's architecture and a copy of its weights."""
    vae = VAE(model.x_dim, model.z_dim, model.hidden, model.activation, model.likelihood_name,
              rng=np.random.default_rng(0), dtype=model.dtype, sigma_x=model.sigma_x)
    for k, v in model.params.items():
        vae.params[k][...] = v
    return vae


def grads_at(model, x, eps):
    model.forward(x, eps=eps)
    return {k: v.copy() for k, v in model.backward().items()}


def group_means(models, x, *, rng, groups=60, per=50):
    """Loss and gradient of each model averaged over ``per`` independent draws, ``groups`` times, same eps for all.

    One forward of ``per`` copies of x is the average over ``per`` draws of eps (the loss is a
    batch mean). Returns [(losses (groups,), {name: (groups, *shape)})] per model.
    """
    k, Z = getattr(models[0], "k", 1), models[0].z_dim
    xr = np.tile(x, (per, 1))
    out = [(np.empty(groups), {n: np.empty((groups, *p.shape)) for n, p in m.params.items()}) for m in models]
    for g in range(groups):
        eps = rng.standard_normal((k, xr.shape[0], Z))
        for m, (losses, grads) in zip(models, out):
            losses[g] = m.forward(xr, eps=eps).loss
            for n, v in m.backward().items():
                grads[n][g] = v
    return out


# ----------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradient_every_parameter(likelihood, k, activation):
    model, x, eps = small_iwae(likelihood, activation, k=k, sigma_x=0.7, per_pixel_sigma=(k == 3))
    model.forward(x, eps=eps)
    grads = model.backward()
    results = gradcheck.check_params(lambda: model.forward(x, eps=eps).loss, model.params, grads, **FD)
    assert set(results) == set(model.params)
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"iwae/{likelihood}/{activation}/k={k}"] = worst
    assert worst < 1e-6, {n: r.rel_error for n, r in results.items()}


def test_gradient_with_a_clipped_logvar_and_a_bigger_network():
    model, x, eps = small_iwae("gaussian", "tanh", k=4, x_dim=20, z_dim=4, hidden=(12, 8), batch=6)
    model.encoder[-1].params["b"][model.z_dim] = -25.0  # first logvar unit clipped at LOGVAR_MIN
    model.forward(x, eps=eps)
    grads = model.backward()
    results = gradcheck.check_params(lambda: model.forward(x, eps=eps).loss, model.params, grads,
                                     max_elementwise=150, n_directions=6, rng=np.random.default_rng(1), **FD)
    worst = max(r.rel_error for r in results.values())
    MAX_REL["iwae/gaussian/tanh/k=4 20-12-8-4 clipped, directions"] = worst
    assert worst < 1e-6
    assert grads["encoder.4.b"][model.z_dim] == 0


def test_dreg_decoder_exact_encoder_is_the_surrogate_gradient():
    """DReG: decoder gradient = IWAE's; encoder gradient = FD of the surrogate
    -(1/B) sum_i stop(w~_i^2) [log p(x, z_i) - log q(z_i; stop(mu), stop(logvar))]."""
    model, x, eps = small_iwae("gaussian_learned", "tanh", k=4, estimator="dreg")
    B = x.shape[0]
    iwae = IWAE.from_config({**model.config, "estimator": "iwae"}, rng=np.random.default_rng(0))
    for n, v in model.params.items():
        iwae.params[n][...] = v
    g_dreg, g_iwae = grads_at(model, x, eps), grads_at(iwae, x, eps)
    w2 = model._cache[-1] ** 2                                       # (k, B), held fixed
    mu0, logvar0 = (a.copy() for a in model.encode(x))

    def surrogate():
        mu, logvar = model.encode(x)
        z = mu + np.exp(0.5 * logvar) * eps
        out = model.decoder.forward(z.reshape(-1, model.z_dim)).reshape(eps.shape[0], B, -1)
        log_w = (model.likelihood.log_prob(x, out) + D.standard_normal_log_prob(z)
                 - D.gaussian_log_prob(z, mu0, logvar0))
        return -np.sum(w2 * log_w) / B

    enc = {n: p for n, p in model.params.items() if n.startswith("encoder")}
    results = gradcheck.check_params(surrogate, enc, {n: g_dreg[n] for n in enc}, **FD)
    worst = max(r.rel_error for r in results.values())
    MAX_REL["dreg/gaussian_learned/tanh/k=4 encoder vs surrogate"] = worst
    assert worst < 1e-6
    for n in model.params:
        if not n.startswith("encoder"):
            np.testing.assert_array_equal(g_dreg[n], g_iwae[n], err_msg=n)
    assert not np.allclose(g_dreg["encoder.0.W"], g_iwae["encoder.0.W"])


def test_dreg_agrees_with_iwae_in_expectation():
    model, x, _ = small_iwae("bernoulli", "tanh", k=3, estimator="dreg", x_dim=4, z_dim=2, hidden=(3,), batch=2)
    iwae = IWAE.from_config({**model.config, "estimator": "iwae"}, rng=np.random.default_rng(0))
    for n, v in model.params.items():
        iwae.params[n][...] = v
    (_, gd), (_, gi) = group_means([model, iwae], x, rng=np.random.default_rng(5))
    for n in gd:
        d = gd[n] - gi[n]
        se = d.std(axis=0, ddof=1) / np.sqrt(len(d))
        assert np.all(np.abs(d.mean(axis=0)) < 5 * se + 1e-12), (n, d.mean(axis=0), se)
    # the point of DReG: a lower-variance encoder gradient
    assert sum(gd[n].var(axis=0).sum() for n in gd if n.startswith("encoder")) < \
        0.5 * sum(gi[n].var(axis=0).sum() for n in gi if n.startswith("encoder"))


# ----------------------------------------------------------------------------------------
# k = 1 against the VAE's analytic-KL ELBO
# ----------------------------------------------------------------------------------------

def test_k1_loss_is_the_monte_carlo_kl_elbo():
    model, x, eps = small_iwae("bernoulli", "tanh", k=1)
    terms = model.forward(x, eps=eps)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps[0]
    p = model.decode(z)
    log_px = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)  # naive, safe here
    mc = log_px + D.standard_normal_log_prob(z) - D.gaussian_log_prob(z, mu, logvar)
    np.testing.assert_allclose(terms.iwae_bound, mc, rtol=1e-12)
    np.testing.assert_allclose(terms.loss, -mc.mean(), rtol=1e-12)
    vae = twin_vae(model).forward(x, eps=eps)
    np.testing.assert_allclose(terms.reconstruction, vae.reconstruction, rtol=1e-13)
    np.testing.assert_allclose(terms.kl, vae.kl, rtol=1e-13)
    np.testing.assert_allclose(terms.elbo, vae.elbo, rtol=1e-13)
    assert abs(terms.loss - vae.loss) > 1e-3  # Monte Carlo KL != closed form for one draw
    g_iwae, g_vae = grads_at(model, x, eps), grads_at(twin_vae(model), x, eps)
    np.testing.assert_allclose(g_iwae["decoder.0.W"], g_vae["decoder.0.W"], rtol=1e-12)  # same reconstruction
    assert np.max(np.abs(g_iwae["encoder.4.b"] - g_vae["encoder.4.b"])) > 1e-3            # not the same KL


def test_k1_matches_the_vae_in_expectation_with_more_variance():
    """Same weights, same eps: the decoder gradients are identical; the loss and the encoder
    gradients differ draw by draw (MC vs closed-form KL) but agree in expectation."""
    model, x, _ = small_iwae("gaussian", "tanh", k=1, x_dim=4, z_dim=2, hidden=(3,), batch=3)
    vae = twin_vae(model)
    (li, gi), (lv, gv) = group_means([model, vae], x, rng=np.random.default_rng(11))
    d = li - lv
    assert abs(d.mean()) < 5 * d.std(ddof=1) / np.sqrt(len(d))
    for n in gi:
        d = gi[n] - gv[n]
        if n.startswith("decoder"):
            assert np.max(np.abs(d)) < 1e-12, n
            continue
        se = d.std(axis=0, ddof=1) / np.sqrt(len(d))
        assert np.all(np.abs(d.mean(axis=0)) < 5 * se + 1e-12), n
        # the Monte Carlo KL adds noise: the IWAE(k=1) gradient varies more than the VAE's
        assert gi[n].var(axis=0).sum() > 1.2 * gv[n].var(axis=0).sum(), n


# ----------------------------------------------------------------------------------------
# Bounds against the exact log p(x)
# ----------------------------------------------------------------------------------------

def test_bound_increases_with_k_up_to_the_exact_log_px():
    """z_dim = 1: E L_1 <= E L_5 <= E L_50 <= log p(x) (Burda et al., theorem 1), exact log p(x) by quadrature."""
    models = {k: IWAE(5, 1, (8,), "tanh", k=k, rng=np.random.default_rng(3), dtype=np.float64) for k in (1, 5, 50)}
    x = (np.random.default_rng(4).random((3, 5)) < 0.4).astype(np.float64)
    m = models[1]

    def log_joint(xi):
        def f(z):
            out = m.decoder.forward(np.array([[z]]))
            return float(m.likelihood.log_prob(xi, out)[0] + D.standard_normal_log_prob(np.array([z])))
        return f

    log_px = np.array([log_px_1d(log_joint(xi)) for xi in x])
    rng, B = np.random.default_rng(0), x.shape[0]
    mean, se = {}, {}
    for k, model in models.items():
        n = 8000 if k < 50 else 2000  # n independent draws of L_k per example, as one batch of n copies of x
        draws = model.forward(np.tile(x, (n, 1)), rng=rng).iwae_bound.reshape(n, B)
        mean[k], se[k] = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(n)
    for a, b in ((1, 5), (5, 50)):
        assert np.all(mean[a] + 4 * np.hypot(se[a], se[b]) < mean[b]), (a, b, mean, se)
    assert np.all(mean[50] <= log_px + 4 * se[50])
    assert np.all(log_px - mean[50] < 0.2 * (log_px - mean[1]))  # most of the gap closed by k = 50
    GAPS.update({k: log_px - m for k, m in mean.items()})
    # the forward's bound is evaluate.iwae_bound's for the same eps
    eps = rng.standard_normal((50, 3, 1))
    np.testing.assert_allclose(models[50].forward(x, eps=eps).iwae_bound, models[50].iwae_bound(x, 50, eps=eps),
                               rtol=1e-12)


# ----------------------------------------------------------------------------------------
# Numerics, dtype, reproducibility
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_log_weights_do_not_overflow(dtype):
    """Logits of size ~1e4: log w spans thousands of nats across the k samples; the softmax in log space holds."""
    rng = np.random.default_rng(0)
    model = IWAE(10, 2, (8,), "tanh", k=6, rng=rng, dtype=dtype)
    model.decoder[-1].params["W"] *= 3e3
    x = (rng.random((4, 10)) < 0.5).astype(dtype)
    eps = rng.standard_normal((6, 4, 2)).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is harmless
        terms = model.forward(x, eps=eps)
        grads = model.backward()
    log_w = model.log_weights(model.proposal(x), eps)
    assert np.ptp(log_w, axis=0).max() > 1e3
    ref = np.log(np.mean(np.exp(log_w - log_w.max(axis=0)), axis=0)) + log_w.max(axis=0)
    np.testing.assert_allclose(terms.iwae_bound, ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert np.isfinite(terms.loss) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_float32_preserved():
    rng = np.random.default_rng(0)
    model = IWAE(20, 4, (16,), "relu", "gaussian_learned", k=5, rng=rng, estimator="dreg")
    x = rng.random((8, 20), dtype=np.float32)
    terms = model.forward(x, rng=rng)
    grads = model.backward()
    assert all(v.dtype == np.float32 for v in terms.metrics.values())
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.sample(3, rng=rng).dtype == np.float32


def test_reproducible_from_the_seed():
    model = IWAE(12, 3, (8,), k=4, rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((6, 12))
    a = model.forward(x, rng=np.random.default_rng(5)).loss
    ga = {n: g.copy() for n, g in model.backward().items()}
    b = model.forward(x, rng=np.random.default_rng(5)).loss
    gb = model.backward()
    assert a == b and all(np.array_equal(ga[n], gb[n]) for n in ga)
    assert model.forward(x, rng=np.random.default_rng(6)).loss != a
    assert model.forward(x, eps=np.random.default_rng(5).standard_normal((4, 6, 3))).loss == a
    state = np.random.get_state()[1].copy()
    model.forward(x, rng=np.random.default_rng(0))
    assert np.array_equal(np.random.get_state()[1], state)
    same = IWAE(12, 3, (8,), k=4, rng=np.random.default_rng(0), dtype=np.float64)
    assert same.forward(x, rng=np.random.default_rng(5)).loss == a


# ----------------------------------------------------------------------------------------
# Contract, Trainer, errors
# ----------------------------------------------------------------------------------------

def test_trainer_trains_and_round_trips_a_checkpoint(tmp_path):
    def make(epochs):
        model = IWAE(64, 3, (16,), k=5, rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params, lr=1e-2), fake_images(200), fake_images(60, seed=1),
                       TrainConfig(epochs=epochs, batch_size=32, seed=3), rng=np.random.default_rng(7), log=None,
                       checkpoint_path=tmp_path / "iwae.npz")
    t = make(2)
    history = t.fit()
    assert history[-1]["test_loss"] < 0.95 * t.initial_test_loss
    assert np.isclose(history[-1]["test_loss"], -history[-1]["test_iwae_bound"])
    assert history[-1]["test_iwae_bound"] >= history[-1]["test_elbo"]  # the tighter bound
    fresh = make(2)
    fresh.load(tmp_path / "iwae.npz")
    assert fresh.model.config == t.model.config and fresh.model.k == 5
    for k in t.model.params:
        np.testing.assert_array_equal(fresh.model.params[k], t.model.params[k], err_msg=k)
    assert fresh.epoch == 2 and fresh.evaluate()["loss"] == t.evaluate()["loss"]
    model = IWAE(64, 3, (16,), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="beta: the iwae model's objective has no beta"):
        Trainer(model, Adam(model.params), fake_images(50), config=TrainConfig(beta=0.5),
                rng=np.random.default_rng(0), log=None)


def test_config_round_trip_and_registry():
    model = IWAE(10, 3, (8, 6), "elu", "gaussian_learned", k=7, rng=np.random.default_rng(0), dtype=np.float64,
                 sigma_x=0.3, per_pixel_sigma=True, estimator="dreg")
    assert model.kind == "iwae" and model.loss_name == "neg_iwae_bound" and not model.conditional
    clone = from_config(model.config, rng=np.random.default_rng(1))
    assert type(clone) is IWAE and clone.config == model.config
    assert model.config["k"] == 7 and model.config["estimator"] == "dreg"
    assert "k=7" in repr(model)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(k=0), ValueError, "k: expected an integer >= 1, got 0"),
    (dict(k=2.5), TypeError, "k: expected an integer"),
    (dict(estimator="vimco"), ValueError, "estimator: expected one of 'iwae', 'dreg', got 'vimco'"),
    (dict(z_dim=0), ValueError, "z_dim"),
    (dict(likelihood="poisson"), ValueError, "likelihood"),
])
def test_constructor_errors(kwargs, exc, match):
    args = dict(x_dim=10, z_dim=3, hidden=(8,), rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        IWAE(**args)


def test_forward_and_backward_errors():
    model = IWAE(10, 3, (8,), k=4, rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((5, 10))
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    with pytest.raises(ValueError, match=r"eps: expected shape \(4, 5, 3\)"):
        model.forward(x, eps=np.zeros((3, 5, 3)))
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        model.forward(x)
    with pytest.raises(ValueError, match="x: expected shape"):
        model.forward(np.zeros((5, 9)), rng=np.random.default_rng(0))
    with pytest.raises(TypeError):
        model.forward(x, rng=np.random.default_rng(0), beta=0.5)
    model.forward(x, rng=np.random.default_rng(0))
    model.encode(x)  # overwrites the layers' caches
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
