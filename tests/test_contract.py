"""The model contract: the Trainer, evaluation and checkpoints rely on it, not on a model's type.

A model written here, in the test, that is no npvae class (a linear-Gaussian "model" of the
pixels) trains, evaluates, checkpoints and resumes through the Trainer. Also: old (format 1)
checkpoints still load, ``Terms`` exposes metrics as attributes, the progress line.
"""

import io
import json
import zipfile

import numpy as np
import pytest

from npvae import Adam, TrainConfig, Trainer, evaluate
from npvae import checkpoint as ck
from npvae.distributions import GaussianLearned
from npvae.flows import Flow, PlanarFlow
from npvae.layers import Conv2d, ConvTranspose2d, Linear
from npvae.made import MaskedLinear
from npvae.models import MODELS, VAE, Terms, build_model, from_config
from npvae.models.vamp_vae import PseudoInputs
from npvae.progress import Progress


class PixelMeans:
    """-log N(x; m, I) per example: the smallest thing that follows the contract (no KL, no noise)."""

    kind, conditional, loss_name = "pixel_means", False, "neg_log_likelihood"

    def __init__(self, x_dim, *, dtype=np.float64):
        self.x_dim, self.z_dim, self.hidden, self.dtype = x_dim, 0, (), np.dtype(dtype)
        self.params = {"m": np.zeros(x_dim, dtype=dtype)}
        self.grads = {"m": np.zeros(x_dim, dtype=dtype)}
        self.config = {"kind": self.kind, "x_dim": x_dim}

    def forward(self, x, *, rng=None):
        self._r = x - self.params["m"]
        nll = 0.5 * np.sum(self._r ** 2, axis=1)
        return Terms(float(nll.mean()), {"reconstruction": nll})

    def backward(self):
        self.grads["m"][...] = -self._r.mean(axis=0)  # d/dm of mean ||x - m||^2 / 2
        return self.grads


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16), dtype=np.uint8)


def test_a_model_of_any_type_trains_evaluates_and_resumes(tmp_path):
    def trainer(epochs):
        model = PixelMeans(16)
        return Trainer(model, Adam(model.params, lr=0.05), images(64), images(32, 1),
                       TrainConfig(epochs=epochs, batch_size=16, binarize="none"),
                       rng=np.random.default_rng(0), checkpoint_path=tmp_path / "c.npz", log=None)

    t = trainer(3)
    history = t.fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(history[0]) >= {"train_loss", "train_reconstruction", "test_loss", "test_reconstruction"}
    assert "train_kl" not in history[0]  # the history holds what the model reports, nothing assumed
    # resume: 2 epochs, then a fresh trainer loads the checkpoint and runs the third
    part = trainer(2)
    part.fit()
    resumed = trainer(3)
    resumed.load(tmp_path / "c.npz")
    resumed.fit()
    np.testing.assert_array_equal(resumed.model.params["m"], t.model.params["m"])


def test_trainer_refuses_options_the_model_has_no_use_for(tmp_path):
    model = PixelMeans(16)
    with pytest.raises(ValueError, match=r"beta: the pixel_means model's objective has no beta.*warmup_epochs=2"):
        Trainer(model, Adam(model.params), images(8), config=TrainConfig(warmup_epochs=2),
                rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_samples: .* got n_samples=3"):
        Trainer(model, Adam(model.params), images(8), config=TrainConfig(n_samples=3), rng=np.random.default_rng(0))


class PixelMeansWithBeta(PixelMeans):
    """PixelMeans whose forward takes a ``beta`` and declares it in ``forward_options``; records what it gets."""

    forward_options = ("beta",)

    def __init__(self, x_dim):
        super().__init__(x_dim)
        self.betas = []

    def forward(self, x, *, rng=None, beta=1.0):
        self.betas.append(beta)
        return super().forward(x, rng=rng)


class PixelMeansUndeclared(PixelMeansWithBeta):
    """The same forward (it takes ``beta``), but no ``forward_options``: the Trainer reads the declaration."""

    forward_options = ()


def test_trainer_passes_exactly_the_declared_forward_options():
    config = TrainConfig(epochs=2, batch_size=16, binarize="none", warmup_epochs=1, beta=2.0)
    model = PixelMeansWithBeta(16)
    t = Trainer(model, Adam(model.params, lr=0.05), images(64), config=config, rng=np.random.default_rng(0),
                log=None)
    t.fit()
    assert t.steps_per_epoch == 4
    assert model.betas == [t.beta_at(s) for s in range(8)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0]
    # at the defaults nothing is passed: the model's own default (here 1.0) is used
    model = PixelMeansWithBeta(16)
    Trainer(model, Adam(model.params), images(16), config=TrainConfig(epochs=1, batch_size=16, binarize="none"),
            rng=np.random.default_rng(0), log=None).fit()
    assert model.betas == [1.0]
    # declared beta but not n_samples; a forward that takes beta without declaring it is refused
    with pytest.raises(ValueError, match="n_samples: the pixel_means model's objective has no n_samples"):
        Trainer(PixelMeansWithBeta(16), Adam({"m": np.zeros(16)}), images(8), config=TrainConfig(n_samples=3),
                rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="beta: the pixel_means model's objective has no beta"):
        Trainer(PixelMeansUndeclared(16), Adam({"m": np.zeros(16)}), images(8), config=TrainConfig(beta=0.5),
                rng=np.random.default_rng(0))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_forward_options_declare_what_forward_accepts(kind):
    expected = {"vae": {"n_samples", "beta"}, "cvae": {"n_samples", "beta"}, "dirichlet": {"n_samples", "beta"},
                "flow": {"n_samples", "beta"}, "iwae": set(), "ae": set(), "conv": {"n_samples", "beta"},
                "hvae": {"beta"}, "vamp": {"beta"}}[kind]
    model = contract_model(kind, kind, rng=np.random.default_rng(0))
    assert isinstance(model.forward_options, tuple) and set(model.forward_options) == expected
    x = np.random.default_rng(1).random((4, 6))
    y = (np.arange(4) % 2,) if kind == "cvae" else ()
    base = model.forward(x, *y, rng=np.random.default_rng(2)).loss
    for name, value in (("beta", 0.5), ("n_samples", 2)):
        if name in expected:  # accepted, and it changes the objective
            loss = model.forward(x, *y, rng=np.random.default_rng(2), **{name: value}).loss
            assert np.isfinite(loss) and loss != base, name
        else:
            with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
                model.forward(x, *y, rng=np.random.default_rng(2), **{name: value})


def test_terms_expose_metrics_as_attributes():
    t = Terms(1.5, {"kl": np.ones(2)})
    np.testing.assert_array_equal(t.kl, np.ones(2))
    with pytest.raises(AttributeError, match=r"no attribute or metric 'elbo' \(metrics: \['kl'\]\)"):
        t.elbo


def test_registry_builds_every_kind_from_its_config():
    for kind, cls in MODELS.items():
        assert cls.kind == kind
    vae = build_model("vae", 6, 2, (5,), rng=np.random.default_rng(0), dtype=np.float64)
    again = from_config(json.loads(json.dumps(vae.config)), rng=np.random.default_rng(1))
    assert type(again) is VAE and again.config == vae.config and again.config["kind"] == "vae"
    with pytest.raises(ValueError, match=r"kind: expected one of \[.*'vae'.*\], got 'gan'"):
        build_model("gan")


def test_a_format_1_checkpoint_still_loads_and_resumes(tmp_path):
    """Checkpoints written before the model contract: config without "kind", sums as a list."""
    def trainer():
        model = VAE(16, 2, (8,), rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params), images(40), None, TrainConfig(epochs=2, batch_size=16),
                       rng=np.random.default_rng(0), checkpoint_path=tmp_path / "c.npz", log=None)

    t = trainer()
    t.fit()
    # rewrite the meta as format 1 wrote it, mid-epoch sums included
    with zipfile.ZipFile(tmp_path / "c.npz") as z:
        entries = {n[:-4]: np.load(io.BytesIO(z.read(n)), allow_pickle=False) for n in z.namelist()}
    meta = json.loads(str(entries.pop("__meta__")))
    meta["format_version"] = 1
    del meta["model_config"]["kind"]
    meta["sums"] = [30.0, 10.0, 16]
    np.savez(tmp_path / "old.npz", __meta__=np.array(json.dumps(meta)), **entries)
    old = trainer()
    old.load(tmp_path / "old.npz")
    assert old._sums == {"loss": 40.0, "reconstruction": 30.0, "kl": 10.0, "elbo": -40.0}
    for k, v in t.model.params.items():
        np.testing.assert_array_equal(old.model.params[k], v)
    # a version this code cannot read is refused, naming format_version
    meta["format_version"] = ck.FORMAT_VERSION + 1
    np.savez(tmp_path / "new.npz", __meta__=np.array(json.dumps(meta)), **entries)
    with pytest.raises(ValueError, match="format_version"):
        trainer().load(tmp_path / "new.npz")


def test_evaluate_is_the_models_own_bound():
    model = VAE(6, 2, (5,), rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((4, 6))
    a = evaluate.iwae_bound(model, x, 7, rng=np.random.default_rng(2))
    b = model.iwae_bound(x, 7, rng=np.random.default_rng(2))
    c = evaluate.iwae_bound(model, x, 7, rng=np.random.default_rng(2), chunk_size=2)  # chunks draw in order
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-12)


def test_sample_mean_or_draw():
    model = VAE(6, 2, (5,), rng=np.random.default_rng(0), dtype=np.float32)
    means = model.sample(500, rng=np.random.default_rng(3))
    draws = model.sample(500, rng=np.random.default_rng(3), mean=False)
    assert draws.dtype == np.float32 and set(np.unique(draws)) <= {0.0, 1.0}
    assert not set(np.unique(means)) <= {0.0, 1.0}
    # the draws are Bernoulli(mean) for the same z: their average tracks the means
    assert abs(draws.mean() - means.mean()) < 4 * np.sqrt(0.25 / draws.size)


class _Stream(io.StringIO):
    """A text stream that says whether it is a terminal (progress lines differ)."""

    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_line(tty):
    out = _Stream(tty)
    with Progress(1000, "log p(x), k=10", stream=out, min_interval=0) as bar:
        for _ in range(10):
            bar.update(100)
    text = out.getvalue()
    assert "log p(x), k=10: 1000/1000 images" in text and "done in" in text
    if tty:
        assert "\r" in text
    else:  # a line about every 10 %, and the final one
        lines = text.strip().splitlines()
        assert 9 <= len(lines) <= 11 and "left" in lines[0] and "images/s" in lines[0]
    quiet = _Stream(tty)
    with Progress(10, "x", stream=quiet, quiet=True) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("tty", [False, True])
def test_progress_waits_for_its_delay_and_clear_erases_the_line(tty, monkeypatch):
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr("npvae.progress.time.perf_counter", lambda: next(clock))
    out = _Stream(tty)
    bar = Progress(10, "epoch 1/3", unit="batches", stream=out, delay=3.0, min_interval=0, done=2)  # t = 0
    bar.update()  # t = 1: inside the delay, silent
    bar.update()  # t = 2: still silent
    assert out.getvalue() == ""
    bar.update()  # t = 3: reports; the line reads the clock once more (t = 4): 3 batches since the
    #               resumed start in 4 s, 5 left at 0.75 batches/s
    assert "epoch 1/3:  5/10 batches  0.8 batches/s  0:07 left" in out.getvalue()
    bar.clear()   # the caller's own summary line replaces it: no "done in" line
    text = out.getvalue()
    assert "done in" not in text
    assert text.endswith("\r\x1b[K") if tty else text.count("\n") == 1
    silent = _Stream(tty)
    short = Progress(10, "short", stream=silent, delay=1e9)
    short.update(10)
    short.close()
    short.clear()
    assert silent.getvalue() == ""  # a phase shorter than its delay never says anything


def test_trainer_reports_progress_inside_long_epochs_only(monkeypatch, capsys):
    import npvae.train as train_module
    model = VAE(16, 2, (4,), rng=np.random.default_rng(0), dtype=np.float64)
    config = TrainConfig(epochs=2, batch_size=10, seed=0)
    monkeypatch.setattr(train_module, "PROGRESS_DELAY", 0.0)  # every epoch counts as long
    Trainer(model, Adam(model.params), images(100), None, config, rng=np.random.default_rng(1),
            log=None, progress=True).fit()
    err = capsys.readouterr().err
    assert "epoch 1/2:  1/10 batches" in err and "epoch 2/2:  9/10 batches" in err
    monkeypatch.setattr(train_module, "PROGRESS_DELAY", 3600.0)  # nothing runs that long
    Trainer(model, Adam(model.params), images(100), None, config, rng=np.random.default_rng(1),
            log=None, progress=True).fit()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(train_module, "PROGRESS_DELAY", 0.0)
    Trainer(model, Adam(model.params), images(100), None, config, rng=np.random.default_rng(1),
            log=None).fit()  # progress=False, the default
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="progress: expected True or False, got int 1"):
        Trainer(model, Adam(model.params), images(100), None, config, rng=np.random.default_rng(1), progress=1)


def test_log_likelihood_reports_progress():
    model = VAE(6, 2, (5,), rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((30, 6))
    out = io.StringIO()
    ll = evaluate.log_likelihood(model, x, 5, rng=np.random.default_rng(2), batch_size=10, progress=True, stream=out)
    assert ll.shape == (30,) and np.all(np.isfinite(ll))
    assert "30/30 images" in out.getvalue()


def _dicts(obj, attr, seen=None):
    """Every ``attr`` dict reachable from ``obj`` (its layers, steps, likelihood ...)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return []
    seen.add(id(obj))
    found = [getattr(obj, attr)] if isinstance(getattr(obj, attr, None), dict) else []
    for value in vars(obj).values():
        for child in (value if isinstance(value, (list, tuple)) else [value]):
            found += _dicts(child, attr, seen)
    return found


def _owner(model, key):
    """The layer (Linear, MaskedLinear, PlanarFlow, likelihood) whose own ``params``/``grads`` entry ``key`` names.

    "encoder.0.W" -> model.encoder[0], "W"; "flow.1.made.ctx.b" -> model.flow.steps[1].made.ctx, "b";
    "likelihood.log_sigma" -> model.likelihood, "log_sigma". Digits index a Sequential's or a MADE's
    ``layers``, or a Flow's ``steps``; other names are attributes.
    """
    *path, name = key.split(".")
    obj = model
    for part in path:
        obj = (obj.steps if isinstance(obj, Flow) else obj.layers)[int(part)] if part.isdigit() else getattr(obj, part)
    return obj, name


def _leaf_forward(layer, params, rng):
    """(layer output, the same computed here from ``params``), float64: the layer's forward against its formula."""
    if isinstance(layer, Linear):  # MaskedLinear too: its forward uses W * mask
        W = params["W"] * layer.mask if isinstance(layer, MaskedLinear) else params["W"]
        v = rng.standard_normal((4, W.shape[0]))
        return layer.forward(v), v @ W + params["b"]
    if isinstance(layer, PseudoInputs):  # u = hardtanh(means) = clip(means, 0, 1)
        return layer.forward(), np.clip(params["means"], 0, 1)
    if isinstance(layer, PlanarFlow):  # f(z) = z + u_hat tanh(w.z + b), w.u_hat = -1 + softplus(w.u)
        u, w, b = params["u"], params["w"], params["b"]
        u_hat = u + (-1 + np.log1p(np.exp(w @ u)) - w @ u) * w / (w @ w)
        v = rng.standard_normal((4, w.size))
        return layer.forward(v)[0], v + np.tanh(v @ w + b[0])[:, None] * u_hat
    if isinstance(layer, (Conv2d, ConvTranspose2d)):  # the references of test_conv.py, written from the definitions
        from test_conv import conv2d_reference, conv_transpose2d_reference

        v = rng.standard_normal((2, layer.in_channels, 3, 4))
        if isinstance(layer, Conv2d):
            return layer.forward(v), conv2d_reference(v, params["W"], params["b"], layer.stride, layer.padding)
        return layer.forward(v), conv_transpose2d_reference(v, params["W"], params["b"], layer.stride, layer.padding,
                                                            layer.output_padding)
    # the learned Gaussian likelihood: log N(x; out, sigma^2), log sigma above the floor
    ls = params["log_sigma"]
    xv, out = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    return layer.log_prob(xv, out), -np.sum(0.5 * np.log(2 * np.pi) + ls + 0.5 * (xv - out) ** 2 * np.exp(-2 * ls), 1)


CONTRACT_MODELS = {"ae": {}, "cvae": {}, "dirichlet": {}, "iwae": {}, "vae": {},
                   "flow": {"flow": "iaf", "flow_length": 2}, "flow-planar": {"flow": "planar", "flow_length": 2},
                   "conv": {"image_shape": (1, 2, 3), "channels": (2,)},  # 6 pixels as a 2x3 image
                   "hvae": {"z_dims": (3, 2), "hidden": ((5,), (4,))}, "vamp": {"n_pseudo": 4}}


def contract_model(kind, case, **kwargs):
    """A float64 model of ``kind`` on x_dim 6, z_dim 3, hidden (5,), with the case's own arguments."""
    args = {"cvae": (6, 3, 2), "hvae": (6,)}.get(kind, (6, 3))
    extra = {"hidden": (5,), **CONTRACT_MODELS.get(case, {}), **kwargs}
    return build_model(kind, *args, dtype=np.float64, **extra)


@pytest.mark.parametrize("case", sorted(CONTRACT_MODELS))
def test_params_and_grads_are_the_layers_own_arrays(case):
    """model.params / model.grads hold each layer's own arrays (no copies, no shared buffer)."""
    kind = case.split("-")[0]
    assert set(MODELS) <= {c.split("-")[0] for c in CONTRACT_MODELS}  # every model kind is covered
    model = contract_model(kind, case, likelihood="gaussian_learned", rng=np.random.default_rng(0))
    assert list(model.params) == list(model.grads)
    layers = {}
    for key in model.params:
        layer, name = _owner(model, key)
        assert isinstance(layer, (Linear, PlanarFlow, GaussianLearned, Conv2d, ConvTranspose2d, PseudoInputs)), (key, type(layer))
        assert model.params[key] is layer.params[name], key   # identity: the layer's own array
        assert model.grads[key] is layer.grads[name], key
        assert model.params[key].shape == model.grads[key].shape
        layers.setdefault(id(layer), (layer, {}))[1][name] = key
    # every array in every params/grads dict reachable from the model (layers, steps, MADEs, the
    # likelihood) is one of the model's entries: nothing holds a copy
    for attr in ("params", "grads"):
        top = {id(a) for a in getattr(model, attr).values()}
        for d in _dicts(model, attr):
            assert all(id(a) in top for a in d.values()), attr
        # plain per-layer arrays: no two entries share memory (no flat buffer behind them)
        arrays = list(getattr(model, attr).values())
        assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]), attr
    assert len({id(g) for g in model.grads.values()} | {id(p) for p in model.params.values()}) == 2 * len(model.params)

    # an in-place update through model.params is what each layer's forward computes with
    rng = np.random.default_rng(3)
    for layer, names in layers.values():
        new = {}
        for name, key in names.items():
            p = model.params[key]
            p[...] = rng.uniform(-1.0, 1.0, p.shape) if name != "log_sigma" else -0.4
            new[name] = p.copy()
        got, expected = _leaf_forward(layer, new, rng)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # ... and the whole model's: copying another model's weights in place through model.params
    # gives that model's loss exactly (what loading a checkpoint does)
    other = contract_model(kind, case, likelihood="gaussian_learned", rng=np.random.default_rng(9))
    x = np.random.default_rng(1).random((4, 6))
    y = (np.arange(4) % 2,) if kind == "cvae" else ()
    before = model.forward(x, *y, rng=np.random.default_rng(2)).loss
    for key, p in model.params.items():
        p[...] = other.params[key]
    loss = model.forward(x, *y, rng=np.random.default_rng(2)).loss
    assert loss == other.forward(x, *y, rng=np.random.default_rng(2)).loss != before
    # a training step writes through the layers into the model's dicts
    model.forward(x, *y, rng=np.random.default_rng(2))
    grads = model.backward()
    assert grads is model.grads
    assert all(grads[key] is _owner(model, key)[0].grads[_owner(model, key)[1]] for key in grads)
    assert all(np.any(g != 0) for name, g in grads.items() if "encoder" in name or "decoder" in name)
