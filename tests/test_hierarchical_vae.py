"""The two-stochastic-layer VAE: float64 gradient checks (k = 1 with and without beta, k > 1, every likelihood, a
clipped logvar), the objective written out independently, log p(x) against 2-D quadrature, sampling, dtype,
config, errors, training, per-layer codes and active units."""

import json

import numpy as np
import pytest

from npvae import distributions as D
from npvae import gradcheck
from npvae.layers import Linear
from npvae.models.hierarchical_vae import HierarchicalVAE
from npvae.models.parts import LIKELIHOODS
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer

from helpers import fake_images
from quadrature import log_px_2d_grid

FD = dict(h=1e-4, order=4)  # as tests/test_vae.py and test_iwae.py: fourth-order stencil
MAX_REL = {}  # largest relative error per configuration, printed at the end of the run (conftest.py)
QUAD = {}     # example -> (log p(x) estimate - exact, its standard error, the grid's error bound), nats

NETS = ("encoder1", "encoder2", "decoder2", "decoder1")


def small_hvae(likelihood="bernoulli", *, k=1, seed=0, x_dim=5, z_dims=(3, 2), hidden=((4,), (3,)), batch=3,
               activation="tanh", **kw):
    """A small float64 model with random biases (no symmetric zero), data x and fixed eps (k, B, z1 + z2)."""
    rng = np.random.default_rng(seed)
    model = HierarchicalVAE(x_dim, z_dims, hidden, activation, likelihood, k, rng=rng, dtype=np.float64, **kw)
    for name, p in model.params.items():
        if name.endswith(".b"):
            p[...] = rng.normal(0.0, 0.5, p.shape)
    x = rng.random((batch, x_dim))
    eps = rng.standard_normal((k, batch, sum(z_dims)))
    return model, x, eps


def fd_check(model, x, eps, label, beta=1.0, **kw):
    model.forward(x, eps=eps, beta=beta)
    grads = model.backward()
    results = gradcheck.check_params(lambda: model.forward(x, eps=eps, beta=beta).loss, model.params, grads,
                                     **{**FD, **kw})
    assert set(results) == set(model.params)
    worst = max(r.rel_error for r in results.values())
    MAX_REL[f"hvae/{label}"] = worst
    assert worst < 1e-6, {n: r.rel_error for n, r in results.items()}
    return grads


def log_joint_of(model, xi):
    """(m, 2) points (z1, z2) -> (m,) log p(x|z1) + log p(z1|z2) + log p(z2), from the generative networks alone."""
    def f(z):
        z1, z2 = z[:, :1], z[:, 1:]
        mu_p, logvar_p = D.split_mu_logvar(model.decoder2.forward(z2))
        return (model.likelihood.log_prob(xi, model.decoder1.forward(z1)) + D.gaussian_log_prob(z1, mu_p, logvar_p)
                + D.standard_normal_log_prob(z2))
    return f


# ----------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("k,beta", [(1, 1.0), (1, 0.3), (4, 1.0)])
def test_gradient_every_parameter(likelihood, k, beta):
    model, x, eps = small_hvae(likelihood, k=k, sigma_x=0.7, per_pixel_sigma=(k == 4))
    grads = fd_check(model, x, eps, f"{likelihood}/k={k}/beta={beta}", beta=beta)
    # every network gets a gradient: no path of the chain rule is silently missing
    for name, g in grads.items():
        assert np.any(g != 0), name


def test_gradient_with_clipped_logvars_and_two_hidden_layers():
    """A logvar unit clipped in q(z2|z1) and one in p(z1|z2): no gradient through the clip, FD agrees."""
    for k in (1, 3):
        model, x, eps = small_hvae("gaussian", k=k, x_dim=7, z_dims=(3, 2), hidden=((6, 5), (4, 3)), batch=4,
                                   seed=2)
        model.encoder2[-1].params["b"][2] = -30.0    # logvar2 unit 0 below LOGVAR_MIN
        model.decoder2[-1].params["b"][3 + 1] = 30.0  # logvar_p unit 1 above LOGVAR_MAX
        # h = 1e-3: some entries of decoder2's gradient are ~1e-4 against a loss of ~30 nats, whose round-off
        # (1e-16 * 30 / h) would dominate at h = 1e-4; the fourth-order stencil's truncation stays ~1e-12
        # (weight matrices of more than 12 entries along 4 random directions each, every bias entry by entry)
        grads = fd_check(model, x, eps, f"gaussian/k={k} 7-(6,5)-3-(4,3)-2 clipped", h=1e-3, max_elementwise=12,
                         n_directions=4, rng=np.random.default_rng(k))
        assert grads["encoder2.4.b"][2] == 0 and grads["decoder2.4.b"][4] == 0


# ----------------------------------------------------------------------------------------
# The objective, written out independently
# ----------------------------------------------------------------------------------------

def naive_terms(model, x, eps):
    """Per-draw log p(x|z1), log p(z1|z2), log p(z2), log q(z1|x), log q(z2|z1), KL(q(z2|z1)||p(z2)), (k, B) each,
    from the textbook formulas (densities as log N(z; mu, sigma^2) at z, not at eps)."""
    Z1 = model.z_dims[0]
    h1 = model.encoder1.forward(x)
    mu1, lv1 = h1[:, :Z1], np.clip(h1[:, Z1:], -20, 10)

    def log_n(z, mu, lv):
        return np.sum(-0.5 * (np.log(2 * np.pi) + lv + (z - mu) ** 2 / np.exp(lv)), axis=-1)

    rows = []
    for e in eps:
        z1 = mu1 + np.sqrt(np.exp(lv1)) * e[:, :Z1]
        h2 = model.encoder2.forward(z1)
        Z2 = h2.shape[1] // 2
        mu2, lv2 = h2[:, :Z2], np.clip(h2[:, Z2:], -20, 10)
        z2 = mu2 + np.sqrt(np.exp(lv2)) * e[:, Z1:]
        g = model.decoder2.forward(z2)
        mu_p, lv_p = g[:, :Z1], np.clip(g[:, Z1:], -20, 10)
        p = 1 / (1 + np.exp(-model.decoder1.forward(z1)))
        log_px = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=-1)
        kl2 = 0.5 * np.sum(mu2 ** 2 + np.exp(lv2) - lv2 - 1, axis=-1)
        rows.append((log_px, log_n(z1, mu_p, lv_p), log_n(z2, 0, 0), log_n(z1, mu1, lv1), log_n(z2, mu2, lv2), kl2))
    return [np.array(t) for t in zip(*rows)]


def test_the_elbo_and_the_bound_are_the_papers():
    model, x, eps = small_hvae("bernoulli", k=1)
    log_px, log_pz1, log_pz2, log_qz1, log_qz2, kl2 = naive_terms(model, x, eps)
    terms = model.forward(x, eps=eps, beta=0.4)
    np.testing.assert_allclose(terms.reconstruction, -log_px[0], rtol=1e-12)
    np.testing.assert_allclose(terms.kl_z1, (log_qz1 - log_pz1)[0], rtol=1e-12)
    np.testing.assert_allclose(terms.kl_z2, kl2[0], rtol=1e-12)
    np.testing.assert_allclose(terms.kl, terms.kl_z1 + terms.kl_z2, rtol=1e-12)
    np.testing.assert_allclose(terms.elbo, (log_px + log_pz1 - log_qz1 - kl2)[0], rtol=1e-12)
    np.testing.assert_allclose(terms.loss, np.mean(-log_px[0] + 0.4 * (log_qz1 - log_pz1 + kl2)[0]), rtol=1e-12)
    assert "iwae_bound" not in terms.metrics
    # k > 1: L_k = log mean_i w_i with every term at the sample; the forward's bound is evaluate's for the same eps
    model, x, eps = small_hvae("bernoulli", k=6)
    log_px, log_pz1, log_pz2, log_qz1, log_qz2, kl2 = naive_terms(model, x, eps)
    log_w = log_px + log_pz1 + log_pz2 - log_qz1 - log_qz2
    terms = model.forward(x, eps=eps)
    np.testing.assert_allclose(terms.iwae_bound, np.log(np.mean(np.exp(log_w), axis=0)), rtol=1e-12)
    np.testing.assert_allclose(terms.loss, -np.mean(terms.iwae_bound), rtol=1e-12)
    np.testing.assert_allclose(terms.elbo, np.mean(log_px + log_pz1 - log_qz1 - kl2, axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.log_weights(model.proposal(x), eps), log_w, rtol=1e-12)
    np.testing.assert_allclose(model.iwae_bound(x, 6, eps=eps), terms.iwae_bound, rtol=1e-12)
    np.testing.assert_allclose(model.iwae_bound(x, 6, eps=eps, chunk_size=4), terms.iwae_bound, rtol=1e-12)
    assert np.all(terms.iwae_bound > terms.elbo - 1e-9)  # log of a mean >= mean of the logs (Jensen), draw by draw


def test_the_closed_form_kl_of_z2_has_the_monte_carlo_expectation():
    """E over eps of the k = 1 ELBO (closed-form KL of z2) equals E log w (every term at the sample), and has less
    variance: the substitution of the z2 term is exact in expectation, not an approximation."""
    model, x, _ = small_hvae("bernoulli", k=1, batch=2)
    n = 20000
    eps = np.random.default_rng(7).standard_normal((1, 2 * n, 5))
    xr = np.tile(x, (n, 1))
    elbo = model.forward(xr, eps=eps).elbo.reshape(n, 2)
    mc = model.log_weights(model.proposal(xr), eps)[0].reshape(n, 2)
    d = elbo - mc
    assert np.all(np.abs(d.mean(axis=0)) < 4 * d.std(axis=0, ddof=1) / np.sqrt(n))
    assert np.all(elbo.var(axis=0) < mc.var(axis=0))


# ----------------------------------------------------------------------------------------
# log p(x) against quadrature
# ----------------------------------------------------------------------------------------

def test_log_likelihood_converges_to_the_2d_quadrature():
    """z_dims = (1, 1): log p(x) = log of the double integral of p(x|z1) p(z1|z2) p(z2), on a 401 x 401 grid.

    p(z1|z2) is made to depend strongly on z2 (its mean spans [-1.2, 1.2], sigma_p ~ 0.47), so p(z1) is no
    Gaussian; q is widened so the weights have relative sd ~1 and log p(x) converges at k = 5000."""
    model = HierarchicalVAE(4, (1, 1), ((6,), (4,)), "tanh", rng=np.random.default_rng(3), dtype=np.float64)
    model.decoder2[-1].params["W"][:, 0] *= 4
    model.decoder2[-1].params["b"][1] = -1.5
    model.decoder1[-1].params["W"] *= 3
    for enc in (model.encoder1, model.encoder2):
        enc[-1].params["W"] *= 0.3
        enc[-1].params["b"][1] = 0.0
    x = (np.random.default_rng(4).random((3, 4)) < 0.4).astype(np.float64)
    exact, errs = [], []
    for xi in x:
        val, err = log_px_2d_grid(log_joint_of(model, xi), n=401)
        assert err < 1e-8
        exact.append(val)
        errs.append(err)
    exact = np.array(exact)
    rng = np.random.default_rng(0)
    # E[L_1] < log p(x): 4000 single-sample ELBOs per example, as one batch of copies of x
    elbo = model.forward(np.tile(x, (4000, 1)), rng=rng).elbo.reshape(4000, 3)
    assert np.all(elbo.mean(axis=0) + 4 * elbo.std(axis=0) / np.sqrt(4000) < exact - 0.5)  # a gap of ~1 nat
    draws = np.array([model.log_likelihood(x, 5000, rng=rng, batch_size=2) for _ in range(32)])  # (32, B)
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-3), (mean - exact, se)
    assert np.all(se < 0.01)
    QUAD.update({f"hvae x[{i}]": (float(mean[i] - exact[i]), float(se[i]), errs[i]) for i in range(3)})


# ----------------------------------------------------------------------------------------
# Sampling, dtype, reproducibility
# ----------------------------------------------------------------------------------------

def test_sampling_is_ancestral_and_reproducible_from_the_rng():
    model = HierarchicalVAE(6, (3, 2), ((5,), (4,)), rng=np.random.default_rng(0), dtype=np.float64)
    a = model.sample(7, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, model.sample(7, rng=np.random.default_rng(1)))
    assert not np.allclose(a, model.sample(7, rng=np.random.default_rng(2)))
    # the order of the draws: z2 ~ N(0, I), z1 ~ p(z1|z2), then x
    r = np.random.default_rng(1)
    z2 = r.standard_normal((7, 2))
    mu_p, logvar_p = D.split_mu_logvar(model.decoder2.forward(z2))
    z1 = mu_p + np.exp(0.5 * logvar_p) * r.standard_normal((7, 3))
    np.testing.assert_allclose(a, model.decode(z1), rtol=1e-13)
    draws = model.sample(7, rng=np.random.default_rng(1), mean=False)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    state = np.random.get_state()[1].copy()
    model.sample(3, rng=np.random.default_rng(0))
    model.forward(np.random.default_rng(0).random((2, 6)), rng=np.random.default_rng(0))
    assert np.array_equal(np.random.get_state()[1], state)  # the global state is never used
    # the forward is reproducible from its rng, and the rng draws eps (k, B, z1 + z2) in one call
    model = HierarchicalVAE(6, (3, 2), ((5,), (4,)), k=3, rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((4, 6))
    loss = model.forward(x, rng=np.random.default_rng(5)).loss
    assert loss == model.forward(x, rng=np.random.default_rng(5)).loss
    assert loss == model.forward(x, eps=np.random.default_rng(5).standard_normal((3, 4, 5))).loss
    assert loss != model.forward(x, rng=np.random.default_rng(6)).loss


@pytest.mark.parametrize("k", [1, 3])
def test_float32_in_float32_out(k):
    rng = np.random.default_rng(0)
    model = HierarchicalVAE(8, (3, 2), ((6,), (4,)), likelihood="gaussian_learned", k=k, rng=rng)
    x = rng.random((5, 8), dtype=np.float32)
    terms = model.forward(x, rng=rng)
    grads = model.backward()
    assert model.dtype == np.float32 and np.isfinite(terms.loss)
    assert all(v.dtype == np.float32 and v.shape == (5,) for v in terms.metrics.values())
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in grads.values())
    assert model.sample(3, rng=rng).dtype == np.float32
    assert model.posterior_means(x).dtype == np.float32
    assert all(m.dtype == np.float32 for m in model.layer_posterior_means(x))
    log_w = model.log_weights(model.proposal(x), rng.standard_normal((4, 5, 5), dtype=np.float32))
    assert log_w.dtype == np.float64 and log_w.shape == (4, 5)
    assert model.log_likelihood(x, 10, rng=rng).dtype == np.float64


# ----------------------------------------------------------------------------------------
# Contract, config, errors
# ----------------------------------------------------------------------------------------

def test_contract_attributes_and_config_round_trip():
    model = HierarchicalVAE(10, (4, 3), ((8, 6), (5,)), "elu", "gaussian_learned", 5, rng=np.random.default_rng(0),
                            dtype=np.float64, sigma_x=0.3, per_pixel_sigma=True)
    assert (model.kind, model.conditional, model.loss_name, model.forward_options) == \
        ("hvae", False, "neg_iwae_bound", ())
    assert (model.x_dim, model.z_dim, model.z_dims, model.noise_dim) == (10, 4, (4, 3), 7)
    assert model.hidden == (8, 6, 5) and model.hidden_per_layer == ((8, 6), (5,))
    config = json.loads(json.dumps(model.config))
    assert config == model.config and config["kind"] == "hvae" and config["hidden"] == [[8, 6], [5]]
    clone = HierarchicalVAE.from_config(config, rng=np.random.default_rng(1))
    assert type(clone) is HierarchicalVAE and clone.config == model.config
    assert {n: p.shape for n, p in clone.params.items()} == {n: p.shape for n, p in model.params.items()}
    assert "4-3" not in repr(model) and "10-8-6-4-5-3" in repr(model) and "k=5" in repr(model)
    vae = HierarchicalVAE(10, rng=np.random.default_rng(0))  # the paper's defaults
    assert (vae.z_dims, vae.hidden_per_layer, vae.activation, vae.k) == ((100, 50), ((200, 200), (100, 100)), "tanh", 1)
    assert (vae.loss_name, vae.forward_options) == ("neg_elbo", ("beta",))
    # params/grads: the layers' own live arrays, named after the model's attributes ("encoder1.0.W" -> encoder1[0])
    assert list(model.params) == list(model.grads)
    for key in model.params:
        *path, name = key.split(".")
        owner = getattr(model, path[0])
        if len(path) == 2:
            owner = owner[int(path[1])]
            assert isinstance(owner, Linear)
        assert model.params[key] is owner.params[name] and model.grads[key] is owner.grads[name], key
    assert {k.split(".")[0] for k in model.params} == {*NETS, "likelihood"}
    assert model.encoder1[0].params["W"].shape == (10, 8) and model.encoder2[-1].params["W"].shape == (5, 6)
    assert model.decoder2[0].params["W"].shape == (3, 5) and model.decoder2[-1].params["W"].shape == (5, 8)
    assert model.decoder1[0].params["W"].shape == (4, 6) and model.decoder1[-1].params["W"].shape == (8, 10)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(z_dims=3), ValueError, r"z_dims: expected a pair of latent sizes \(z1, z2\), e.g. \(100, 50\), got 3"),
    (dict(z_dims=(3, 2, 1)), ValueError, r"z_dims: expected a pair .* got \(3, 2, 1\)"),
    (dict(z_dims=(3, 0)), ValueError, r"z_dims\[1\]: expected an integer >= 1, got 0"),
    (dict(z_dims=(3.5, 2)), TypeError, r"z_dims\[0\]: expected an integer, got float 3.5"),
    (dict(hidden=(5,)), ValueError, r"hidden: expected a pair of hidden-width sequences .* got \(5,\)"),
    (dict(hidden=((5,), (4, 0))), ValueError, r"hidden\[1\]\[1\]: expected an integer >= 1, got 0"),
    (dict(hidden=((5,), None)), TypeError, r"hidden\[1\]: expected a sequence of widths, got NoneType None"),
    (dict(k=0), ValueError, "k: expected an integer >= 1, got 0"),
    (dict(k=2.5), TypeError, "k: expected an integer"),
    (dict(x_dim=0), ValueError, "x_dim: expected an integer >= 1, got 0"),
    (dict(likelihood="poisson"), ValueError, "likelihood: expected one of"),
    (dict(activation="swish"), ValueError, "activation: expected one of"),
    (dict(dtype=np.float16), TypeError, "dtype: expected float32 or float64, got float16"),
    (dict(rng=None), TypeError, "rng: expected a numpy.random.Generator"),
    (dict(sigma_x=0.0), ValueError, "sigma_x: expected a number > 0"),
])
def test_constructor_errors_name_the_argument(kwargs, exc, match):
    args = dict(x_dim=6, z_dims=(3, 2), hidden=((5,), (4,)), rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        HierarchicalVAE(**args)


def test_forward_and_backward_errors():
    model = HierarchicalVAE(6, (3, 2), ((5,), (4,)), k=4, rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((5, 6))
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    with pytest.raises(ValueError, match=r"eps: expected shape \(4, 5, 5\)"):
        model.forward(x, eps=np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        model.forward(x)
    with pytest.raises(ValueError, match="x: expected shape"):
        model.forward(np.zeros((5, 7)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="x: expected values <= 1.0"):
        model.forward(x + 1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="beta: expected 1 for k = 4"):
        model.forward(x, rng=np.random.default_rng(0), beta=0.5)
    with pytest.raises(ValueError, match=r"z1: expected shape \(\*, 3\)"):
        model.decode(np.zeros((2, 2)))
    model.forward(x, rng=np.random.default_rng(0))
    model.encode(x)  # overwrites the layers' caches
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward()
    k1 = HierarchicalVAE(6, (3, 2), ((5,), (4,)), rng=np.random.default_rng(0), dtype=np.float64)
    with pytest.raises(ValueError, match="beta: expected a number >= 0.0, got -1.0"):
        k1.forward(x, rng=np.random.default_rng(0), beta=-1.0)
    assert k1.forward(x, eps=np.zeros((5, 5))).loss == k1.forward(x, eps=np.zeros((1, 5, 5))).loss  # one draw
    with pytest.raises(ValueError, match="x: expected at least 2 examples"):
        k1.layer_active_units(x[:1])


# ----------------------------------------------------------------------------------------
# Training, per-layer codes
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 4])
def test_adam_lowers_the_loss_on_a_tiny_dataset(k):
    data = (fake_images(64, seed=2, side=4).reshape(64, 16) > 100).astype(np.float64)
    model = HierarchicalVAE(16, (3, 2), ((16,), (8,)), k=k, rng=np.random.default_rng(0), dtype=np.float64)
    opt = Adam(model.params, lr=1e-2)
    eval_eps = np.random.default_rng(9).standard_normal((k, 64 * 20, 5))

    def loss():  # the objective over 20 fixed noise draws per image
        return model.forward(np.tile(data, (20, 1)), eps=eval_eps).loss

    before, rng = loss(), np.random.default_rng(1)
    for step in range(300):
        batch = data[rng.permutation(64)[:32]]
        model.forward(batch, rng=rng)
        opt.step(model.backward())
    after = loss()
    assert after < 0.8 * before, (before, after)


def test_trainer_warm_up_and_checkpoint(tmp_path):
    """Through the Trainer: beta warm-up reaches the model (k = 1), a checkpoint restores it exactly."""
    def make():
        model = HierarchicalVAE(64, (3, 2), ((16,), (8,)), rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params, lr=1e-2), fake_images(96), fake_images(32, seed=1),
                       TrainConfig(epochs=2, batch_size=32, seed=3, warmup_epochs=1), rng=np.random.default_rng(7),
                       log=None, checkpoint_path=tmp_path / "hvae.npz")
    t = make()
    history = t.fit()
    assert history[0]["beta"] == 1.0 and history[-1]["test_loss"] < t.initial_test_loss
    assert {"train_kl_z1", "train_kl_z2", "test_elbo"} <= set(history[-1])
    fresh = make()
    fresh.load(tmp_path / "hvae.npz")
    for key, p in t.model.params.items():
        np.testing.assert_array_equal(fresh.model.params[key], p, err_msg=key)
    assert fresh.evaluate()["loss"] == t.evaluate()["loss"]
    # the class declares the k = 1 options (what the demo checks its flags against); a k > 1 instance has none
    assert HierarchicalVAE.forward_options == ("beta",) and HierarchicalVAE.loss_name == "neg_elbo"
    model = HierarchicalVAE(64, (3, 2), ((16,), (8,)), k=3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="beta: the hvae model's objective has no beta"):
        Trainer(model, Adam(model.params), fake_images(50), config=TrainConfig(beta=0.5),
                rng=np.random.default_rng(0), log=None)


def test_layer_posterior_means_and_active_units():
    model, x, _ = small_hvae("bernoulli", batch=9, seed=6)
    x = (x > 0.5).astype(np.float64)
    for net in (model.encoder1, model.encoder2):
        net[-1].params["W"] *= 2  # codes that vary with x: activities 0.3-2, well above 0.01
    mu1, mu2 = model.layer_posterior_means(x, batch_size=4)
    assert mu1.shape == (9, 3) and mu2.shape == (9, 2)
    np.testing.assert_array_equal(mu1, model.posterior_means(x, batch_size=4))  # the same batches: bit for bit
    np.testing.assert_allclose(mu1, model.encode(x)[0], rtol=1e-13)
    np.testing.assert_allclose(mu2, model.encoder2.forward(mu1)[:, :2], rtol=1e-13)  # the mean of q(z2|z1 = mu1)
    again = model.layer_posterior_means(x, batch_size=1000)
    np.testing.assert_allclose(mu1, again[0], rtol=1e-13)
    np.testing.assert_allclose(mu2, again[1], rtol=1e-13)
    # activity Var_x of each unit's code: all 3 + 2 active, then one unit of each layer switched off
    active = [(m.var(axis=0) > 0.01).sum() for m in (mu1, mu2)]
    assert model.layer_active_units(x) == tuple(active) == (3, 2)
    model.encoder1[-1].params["W"][:, 1] = 0.0   # mu1 unit 1 constant
    model.encoder2[-1].params["W"][:, 0] = 0.0   # mu2 unit 0 constant
    assert model.layer_active_units(x) == (2, 1)
    assert model.layer_active_units(x, threshold=1e9) == (0, 0)
