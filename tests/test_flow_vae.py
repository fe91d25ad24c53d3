"""FlowVAE: float64 gradient checks (planar and IAF, every likelihood, L > 1, beta != 1), the identity flow as the
Monte Carlo-KL ELBO, log_likelihood with the flow proposal vs 2-D quadrature, dtype, reproducibility, Trainer, errors."""

import numpy as np
import pytest

from npvae import distributions as D
from npvae import gradcheck
from npvae.models import IWAE, LOGVAR_MAX, LOGVAR_MIN, FlowVAE, from_config
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer

from helpers import fake_images
from quadrature import log_px_2d_grid

LIKELIHOODS = ["bernoulli", "gaussian", "gaussian_learned"]
FD = dict(h=1e-4, order=4)  # fourth-order stencil, as tests/test_vae.py; tanh everywhere: no kinks to cross
MAX_REL = {}  # largest relative error per configuration, printed at the end of the run (conftest.py)
QUAD = {}     # flow -> (log p(x) estimate - exact, its standard error), nats per example
MAX_ABS = {}  # largest absolute error per configuration (the gradients' scale is 0.01-1)


def record(key, results):
    """Store the worst relative and absolute errors; True if every entry passes.

    An entry passes at relative error < 1e-6 (the cs231n float64 threshold) or, for an
    entry that happens to be tiny (a few 1e-6 when the array's largest is ~0.4), at
    absolute error < 1e-9: the stencil's rounding floor is ~5e-11 here (eps * |loss| / h),
    so a relative error of 1e-5 on a 3e-6 entry is noise, while any real mistake in a
    gradient of size 0.01-1 is orders of magnitude above 1e-9.
    """
    MAX_REL[key] = max(r.rel_error for r in results.values())
    MAX_ABS[key] = max(r.abs_error for r in results.values())
    return all(r.rel_error < 1e-6 or r.abs_error < 1e-9 for r in results.values())


def small_flow(likelihood="bernoulli", flow="planar", *, seed=0, x_dim=5, z_dim=3, hidden=(4,), batch=3, L=2,
               flow_length=2, **kw):
    """A small float64 FlowVAE (tanh) with random biases, data x and fixed eps (L, B, Z).

    The MADEs' output weights start at 0.01 x Glorot (IAF's gentle start); they are scaled
    up 30x so that every gradient is O(1e-3) or more, not below the finite differences'
    rounding floor (a gradient of 1e-8 checked to 1e-6 relative would need 1e-14 absolute).
    """
    rng = np.random.default_rng(seed)
    model = FlowVAE(x_dim, z_dim, hidden, "tanh", likelihood, flow=flow, flow_length=flow_length, rng=rng,
                    dtype=np.float64, **kw)
    for name, p in model.params.items():
        if name.endswith(".b"):
            p[...] = rng.normal(0.0, 0.5, p.shape)
    if flow == "iaf":
        for step in model.flow.steps:
            step.made.layers[-1].params["W"] *= 30
    x = rng.random((batch, x_dim))
    return model, x, rng.standard_normal((L, batch, z_dim))


def identity_flow(model):
    """Make every step the identity: planar u = w log(e - 1) / |w|^2 gives û = 0 exactly (m(wᵀu) = -1 +
    softplus(log(e - 1)) = 0); IAF with zero output weights and s-bias 50 gives sigma(51) = 1.0 in float64."""
    for step in model.flow.steps:
        if model.flow_kind == "planar":
            w = step.params["w"]
            step.params["u"][...] = w * np.log(np.e - 1) / (w @ w)
        else:
            last = step.made.layers[-1].params
            last["W"][...] = 0
            last["b"][model.z_dim:] = 50.0


# ----------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_gradient_every_parameter(flow, likelihood):
    model, x, eps = small_flow(likelihood, flow, sigma_x=0.7, per_pixel_sigma=(flow == "iaf"))

    def loss():
        return model.forward(x, eps=eps, n_samples=2, beta=0.7).loss
    loss()
    grads = model.backward()
    results = gradcheck.check_params(loss, model.params, grads, **FD)
    assert set(results) == set(model.params) and any(n.startswith("flow.") for n in results)
    if flow == "iaf":
        assert "flow.1.made.ctx.W" in results and np.abs(grads["encoder.2.W"][:, 6:]).max() > 1e-3  # context used
    assert record(f"{flow}/{likelihood}/L=2/beta=0.7", results), \
        {n: (r.rel_error, r.abs_error) for n, r in results.items() if r.rel_error > 1e-7}


@pytest.mark.parametrize("flow,kw", [("iaf", dict(context_dim=0, flow_hidden=(5, 4))),
                                     ("iaf", dict(context_dim=2, flow_length=3)),
                                     ("planar", dict(flow_length=4))])
def test_gradient_other_flow_shapes_and_a_clipped_logvar(flow, kw):
    model, x, eps = small_flow("gaussian", flow, L=3, **kw)
    model.encoder[-1].params["b"][model.z_dim] = -25.0  # first logvar unit clipped at LOGVAR_MIN

    def loss():
        return model.forward(x, eps=eps, n_samples=3, beta=1.3).loss
    loss()
    grads = model.backward()
    results = gradcheck.check_params(loss, model.params, grads, **FD)
    assert record(f"{flow}/gaussian/L=3/beta=1.3 {kw} clipped", results), \
        {n: (r.rel_error, r.abs_error) for n, r in results.items() if r.rel_error > 1e-7}
    assert grads["encoder.2.b"][model.z_dim] == 0


# ----------------------------------------------------------------------------------------
# Identity flow = the VAE's Monte Carlo-KL ELBO (= IWAE with k = 1)
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_identity_flow_is_the_monte_carlo_kl_elbo(flow):
    model, x, eps = small_flow("bernoulli", flow, L=1, context_dim=0 if flow == "iaf" else None)
    identity_flow(model)
    terms = model.forward(x, eps=eps)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps[0]
    np.testing.assert_allclose(model.posterior_means(x), mu, rtol=1e-14)
    p = model.decode(z)
    log_px = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)  # naive form, safe at these sizes
    mc = log_px + D.standard_normal_log_prob(z) - D.gaussian_log_prob(z, mu, logvar)
    np.testing.assert_allclose(terms.elbo, mc, rtol=1e-12)
    np.testing.assert_allclose(terms.loss, -mc.mean(), rtol=1e-12)
    assert np.max(np.abs(terms.logdet)) < 1e-15
    # same loss and encoder/decoder gradients as IWAE(k = 1) with the same weights and eps
    iwae = IWAE(model.x_dim, model.z_dim, model.hidden, "tanh", k=1, rng=np.random.default_rng(0), dtype=np.float64)
    for n in iwae.params:
        iwae.params[n][...] = model.params[n]
    model.forward(x, eps=eps)
    g = model.backward()
    assert np.isclose(iwae.forward(x, eps=eps).loss, terms.loss, rtol=1e-13)
    for n, v in iwae.backward().items():
        np.testing.assert_allclose(g[n], v, rtol=1e-11, atol=1e-15, err_msg=n)


# ----------------------------------------------------------------------------------------
# log p(x) with the flow proposal against quadrature (2-D latent)
# ----------------------------------------------------------------------------------------

def quadrature_model(flow):
    """FlowVAE 5-8-2 with a non-trivial flow (E logdet ~ -0.6 nats planar, -1.9 IAF) and a base q wide enough
    that the weights p(x, z_K) / q(z_K|x) have relative sd ~1.7 (planar), ~0.6 (IAF): log_likelihood converges."""
    model = FlowVAE(5, 2, (8,), "tanh", flow=flow, flow_length=3, rng=np.random.default_rng(3), dtype=np.float64)
    last = model.encoder[-1].params
    last["W"] *= 0.3
    last["b"][2:4] = 1.6 if flow == "planar" else 2.0
    for step in model.flow.steps:
        if flow == "planar":
            step.params["u"] *= 2
            step.params["w"] *= 2
        else:
            step.made.layers[-1].params["W"] *= 50
    return model


@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_log_likelihood_with_the_flow_proposal_converges_to_quadrature(flow):
    model = quadrature_model(flow)
    x = (np.random.default_rng(4).random((3, 5)) < 0.4).astype(np.float64)
    exact = []
    for xi in x:
        def log_joint(z):  # (m, 2) -> (m,): log p(x|z) + log p(z), independent of q and of the flow
            return model.likelihood.log_prob(xi, model.decoder.forward(z)) + D.standard_normal_log_prob(z)
        val, err = log_px_2d_grid(log_joint, n=401)
        assert err < 1e-8
        exact.append(val)
    exact = np.array(exact)
    rng = np.random.default_rng(0)
    # E[L_1] <= log p(x): 4000 single-sample ELBOs per example, as one batch of copies of x
    terms = model.forward(np.tile(x, (4000, 1)), rng=rng)
    elbo, logdet = terms.elbo.reshape(4000, 3), terms.logdet.reshape(4000, 3)
    assert np.all(elbo.mean(axis=0) + 4 * elbo.std(axis=0) / np.sqrt(4000) < exact)
    assert np.all(np.abs(logdet.mean(axis=0)) > 0.4)  # dropping the logdet from log q would be off by that much
    draws = np.array([model.log_likelihood(x, 5000, rng=rng, batch_size=2) for _ in range(16)])  # (16, B)
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-3), (mean - exact, se)
    assert np.all(se < 0.02)
    QUAD[flow] = (mean - exact, se)


@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_log_weights_match_forward_and_broadcast_the_context(flow):
    model, x, _ = small_flow("bernoulli", flow, batch=4)
    eps = np.random.default_rng(1).standard_normal((7, 4, 3))
    q = model.proposal(x)
    log_w = model.log_weights(q, eps)
    assert log_w.shape == (7, 4) and log_w.dtype == np.float64
    # example by example (context (1, C)): the (k*B, C) repetition pairs each row with its own example
    for b in range(4):
        np.testing.assert_allclose(model.log_weights(model.proposal(x[b:b + 1]), eps[:, b:b + 1]), log_w[:, b:b + 1],
                                   rtol=1e-12)
    for i in (0, 6):  # each draw is the forward's single-sample ELBO
        np.testing.assert_allclose(model.forward(x, eps=eps[i:i + 1]).elbo, log_w[i], rtol=1e-12)
    np.testing.assert_allclose(model.iwae_bound(x, 7, eps=eps, chunk_size=2), model.iwae_bound(x, 7, eps=eps),
                               rtol=1e-13)


# ----------------------------------------------------------------------------------------
# posterior means, dtype, reproducibility
# ----------------------------------------------------------------------------------------

def test_posterior_means_are_the_flow_image_of_mu():
    model, x, _ = small_flow("bernoulli", "iaf", batch=5)
    Z = model.z_dim
    h = model.encoder.forward(x)                      # [mu, logvar_raw, ctx]: (5, 2Z + C)
    assert h.shape == (5, 2 * Z + model.context_dim) and model.context_dim > 0
    mu, ctx = h[:, :Z].copy(), h[:, 2 * Z:].copy()
    pm = model.posterior_means(x, batch_size=2)
    np.testing.assert_allclose(pm, model.flow.forward(mu, ctx)[0], rtol=1e-13)
    assert np.max(np.abs(pm - mu)) > 1e-2
    np.testing.assert_allclose(model.reconstruct(x), model.decode(pm), rtol=1e-13)


@pytest.mark.parametrize("flow, context_dim", [("planar", None), ("iaf", 0), ("iaf", None), ("iaf", 5)])
def test_encode_returns_the_base_gaussian(flow, context_dim):
    """``encode`` gives q_0's (mu, logvar), each (B, Z), whatever context the encoder also outputs."""
    model, x, _ = small_flow("bernoulli", flow, batch=4, context_dim=context_dim)
    Z = model.z_dim
    h = model.encoder.forward(x).copy()              # [mu, logvar_raw, ctx]
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, Z)
    np.testing.assert_array_equal(mu, h[:, :Z])
    np.testing.assert_array_equal(logvar, np.clip(h[:, Z:2 * Z], LOGVAR_MIN, LOGVAR_MAX))
    _, q_mu, q_logvar, _ = model.proposal(x)          # the importance sampler's q_0: the same Gaussian
    np.testing.assert_array_equal(q_mu, mu)
    np.testing.assert_array_equal(q_logvar, logvar)


@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_float32_preserved(flow):
    rng = np.random.default_rng(0)
    model = FlowVAE(20, 4, (16,), "relu", "gaussian_learned", flow=flow, flow_length=3, rng=rng)
    x = rng.random((8, 20), dtype=np.float32)
    terms = model.forward(x, rng=rng, n_samples=2, beta=0.5)
    grads = model.backward()
    assert all(v.dtype == np.float32 for v in terms.metrics.values())
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in grads.values())
    assert model.sample(3, rng=rng).dtype == np.float32 and model.posterior_means(x).dtype == np.float32
    assert model.log_likelihood(x, 10, rng=rng).dtype == np.float64


def test_reproducible_from_the_seed():
    model = FlowVAE(12, 3, (8,), flow="iaf", rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((6, 12))
    a = model.forward(x, rng=np.random.default_rng(5), n_samples=2).loss
    ga = {n: g.copy() for n, g in model.backward().items()}
    b = model.forward(x, rng=np.random.default_rng(5), n_samples=2).loss
    gb = model.backward()
    assert a == b and all(np.array_equal(ga[n], gb[n]) for n in ga)
    assert model.forward(x, rng=np.random.default_rng(6), n_samples=2).loss != a
    assert model.forward(x, eps=np.random.default_rng(5).standard_normal((2, 6, 3)), n_samples=2).loss == a
    same = FlowVAE(12, 3, (8,), flow="iaf", rng=np.random.default_rng(0), dtype=np.float64)
    assert same.forward(x, rng=np.random.default_rng(5), n_samples=2).loss == a


# ----------------------------------------------------------------------------------------
# Trainer, config, errors
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_trainer_trains_and_round_trips_a_checkpoint(tmp_path, flow):
    def make(epochs):
        model = FlowVAE(64, 3, (16,), flow=flow, flow_length=2, rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params, lr=1e-2), fake_images(200), fake_images(60, seed=1),
                       TrainConfig(epochs=epochs, batch_size=32, seed=3), rng=np.random.default_rng(7), log=None,
                       checkpoint_path=tmp_path / "flow.npz")
    t = make(2)
    history = t.fit()
    assert history[-1]["test_loss"] < 0.95 * t.initial_test_loss
    fresh = make(2)
    fresh.load(tmp_path / "flow.npz")
    assert fresh.model.config == t.model.config
    for k in t.model.params:
        np.testing.assert_array_equal(fresh.model.params[k], t.model.params[k], err_msg=k)
    assert fresh.epoch == 2 and fresh.evaluate()["loss"] == t.evaluate()["loss"]


def test_config_round_trip_and_registry():
    model = FlowVAE(10, 3, (8, 6), "elu", "gaussian_learned", flow="iaf", flow_length=3, flow_hidden=(7,),
                    context_dim=5, rng=np.random.default_rng(0), dtype=np.float64, sigma_x=0.3, per_pixel_sigma=True)
    assert model.kind == "flow" and model.loss_name == "neg_elbo" and not model.conditional
    assert model.config["flow"] == "iaf" and model.config["flow_length"] == 3 and model.config["context_dim"] == 5
    clone = from_config(model.config, rng=np.random.default_rng(1))
    assert type(clone) is FlowVAE and clone.config == model.config and set(clone.params) == set(model.params)
    assert model.encoder[-1].params["W"].shape == (6, 2 * 3 + 5)
    planar = FlowVAE(10, 3, (8,), rng=np.random.default_rng(0))
    assert planar.context_dim == 0 and planar.config["flow_hidden"] is None and len(planar.flow) == 4
    assert "flow='planar', flow_length=4" in repr(planar)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(flow="radial"), ValueError, "flow: expected one of 'planar', 'iaf', got 'radial'"),
    (dict(flow_length=0), ValueError, "flow_length: expected an integer >= 1, got 0"),
    (dict(context_dim=3), ValueError, "context_dim: planar flows take no context"),
    (dict(flow_hidden=(4,)), ValueError, "flow_hidden: planar flows"),
    (dict(flow="iaf", context_dim=-1), ValueError, "context_dim"),
    (dict(z_dim=0), ValueError, "z_dim"),
])
def test_constructor_errors(kwargs, exc, match):
    args = dict(x_dim=10, z_dim=3, hidden=(8,), rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        FlowVAE(**args)


def test_forward_and_backward_errors():
    model = FlowVAE(10, 3, (8,), flow="iaf", rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((5, 10))
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    with pytest.raises(ValueError, match=r"eps: expected shape \(2, 5, 3\)"):
        model.forward(x, eps=np.zeros((3, 5, 3)), n_samples=2)
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        model.forward(x)
    with pytest.raises(ValueError, match="beta"):
        model.forward(x, rng=np.random.default_rng(0), beta=-1.0)
    with pytest.raises(TypeError, match="x"):
        model.forward(x.astype(np.float32), rng=np.random.default_rng(0))
    model.forward(x, rng=np.random.default_rng(0))
    model.posterior_means(x)  # overwrites the layers' and the flow's caches
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
