"""Tests for npvae.optim: update rules against straightforward reference implementations,
in-place updates with bounded temporaries, float32 arithmetic, the subnormal flush,
clipping, schedules, state_dict round trips and argument validation. Numerical comparisons
use float64 unless a test is about float32."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae import optim
from npvae.optim import (
    SGD,
    Adam,
    AdamW,
    CosineLR,
    ExponentialLR,
    LinearWarmup,
    StepLR,
    clip_grad_norm,
)

# shapes like a small VAE's flat params dict (names contain dots, one 0-d array)
SHAPES = {"encoder.0.W": (6, 4), "encoder.0.b": (4,), "decoder.2.W": (4, 3), "decoder.2.b": (3,), "scale": ()}


def make_params(rng, dtype=np.float64, shapes=SHAPES):
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def make_grads(rng, params):
    return {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}


def copy_dict(d):
    return {k: v.copy() for k, v in d.items()}


# ------------------------------------------------------------------ reference implementations


class RefAdam:
    """Kingma & Ba (2015), Algorithm 1, written literally (m_hat, v_hat and all)."""

    def __init__(self, params, lr, b1, b2, eps, wd=0.0):
        self.p = copy_dict(params)
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.lr, self.b1, self.b2, self.eps, self.wd, self.t = lr, b1, b2, eps, wd, 0

    def step(self, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        for k, g in grads.items():
            self.p[k] = self.p[k] * (1 - lr * self.wd)  # AdamW decay (a no-op when wd = 0)
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g**2
            m_hat = self.m[k] / (1 - self.b1**self.t)
            v_hat = self.v[k] / (1 - self.b2**self.t)
            self.p[k] = self.p[k] - lr * m_hat / (np.sqrt(v_hat) + self.eps)


class RefSGD:
    """PyTorch-convention SGD with heavy-ball / Nesterov momentum."""

    def __init__(self, params, lr, mu, nesterov):
        self.p = copy_dict(params)
        self.buf = {k: np.zeros_like(v) for k, v in params.items()}
        self.lr, self.mu, self.nesterov = lr, mu, nesterov

    def step(self, grads):
        for k, g in grads.items():
            self.buf[k] = self.mu * self.buf[k] + g
            d = g + self.mu * self.buf[k] if self.nesterov else self.buf[k]
            self.p[k] = self.p[k] - self.lr * d


def clipped(grads, max_norm):
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    c = min(1.0, max_norm / norm)
    return {k: g * c for k, g in grads.items()}


def quadratic(rng, n=8, d=5):
    """0.5 ||A p - b||^2 with a well-conditioned A; returns (grad_fn, solution)."""
    A = rng.standard_normal((n, d)) + 3 * np.eye(n, d)
    b = rng.standard_normal(n)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    return (lambda p: A.T @ (A @ p - b)), sol


# ------------------------------------------------------------------ Adam


def test_adam_first_step_has_magnitude_lr(rng):
    params = make_params(rng)
    before = copy_dict(params)
    grads = {k: np.asarray(np.sign(g) * (0.1 + np.abs(g))) for k, g in make_grads(rng, params).items()}  # |g| >= 0.1
    lr = 3e-3
    Adam(params, lr=lr).step(grads)
    for k in params:
        delta = params[k] - before[k]
        np.testing.assert_allclose(np.abs(delta), lr, rtol=1e-6)
        assert np.all(np.sign(delta) == -np.sign(grads[k]))


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9), (0.0, 0.0)])
def test_adam_matches_algorithm_1(rng, betas):
    params = make_params(rng)
    ref = RefAdam(params, 1e-2, *betas, 1e-8)
    opt = Adam(params, lr=1e-2, betas=betas, eps=1e-8)
    for _ in range(50):
        grads = make_grads(rng, params)
        opt.step(grads)
        ref.step(grads)
    assert opt.t == 50
    for k in params:
        np.testing.assert_allclose(params[k], ref.p[k], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(opt.m[k], ref.m[k], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(opt.v[k], ref.v[k], rtol=1e-12, atol=1e-15)


def test_adam_converges_on_quadratic(rng):
    grad, sol = quadratic(rng)
    p = np.zeros(sol.shape)
    opt = Adam({"p": p}, lr=0.1, schedule=CosineLR(1500))
    for _ in range(1500):
        opt.step({"p": grad(p)})
    np.testing.assert_allclose(p, sol, atol=1e-4)


def test_adam_float32_stays_float32(rng):
    params = make_params(rng, np.float32)
    opt = Adam(params, lr=1e-3, clip_norm=0.5, schedule=ExponentialLR(0.99))
    for _ in range(5):
        opt.step(make_grads(rng, params))
    for k in params:
        assert params[k].dtype == np.float32
        assert opt.m[k].dtype == np.float32 and opt.v[k].dtype == np.float32
        assert np.all(np.isfinite(params[k]))


def test_adam_updates_in_place_with_temporaries_bounded_by_the_largest_parameter(rng):
    """The textbook step makes per-line temporaries of one parameter's size (m_hat, v_hat
    and at most two more), never copies of the whole model: the peak extra memory of a step
    is at most 4 times the largest parameter in float64 and 5 in float32 (NumPy does not
    elide temporaries of float32 arrays combined with Python-float scalars), whatever the
    number of parameters."""
    shapes = {f"layer{i}.W": (200, 500) for i in range(6)} | {"b": (500,), "scale": ()}
    for dtype, bound in ((np.float64, 4), (np.float32, 5)):
        params = make_params(rng, dtype, shapes=shapes)
        ids = {k: id(v) for k, v in params.items()}
        grads = make_grads(rng, params)
        opt = Adam(params, lr=1e-3, clip_norm=1e9)  # clipping on but not binding: no copy of the gradients
        state_ids = {(kind, k): id(a) for kind, d in (("m", opt.m), ("v", opt.v)) for k, a in d.items()}
        before = copy_dict(params)
        opt.step(grads)  # warm-up
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            opt.step(grads)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        largest = params["layer0.W"].nbytes
        assert peak - base <= bound * largest + 65536, dtype  # 6 such parameters: no copy of the model
        assert all(opt.params[k] is params[k] and id(params[k]) == ids[k] for k in params)
        assert {(kind, k): id(a) for kind, d in (("m", opt.m), ("v", opt.v)) for k, a in d.items()} == state_ids
        assert not np.array_equal(params["layer0.W"], before["layer0.W"])  # the caller's arrays were updated


def test_tracemalloc_sees_numpy_temporaries(rng):
    """Sanity check of the test above: a parameter-sized temporary is detected."""
    a = rng.standard_normal((200, 500))
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        a -= 1e-3 * a
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base >= a.nbytes


# ------------------------------------------------------------------ AdamW


def test_adamw_zero_grads_decay_exactly(rng):
    params = make_params(rng)
    expected = copy_dict(params)
    lr, wd = 1e-2, 0.5
    opt = AdamW(params, lr=lr, weight_decay=wd)
    zeros = {k: np.zeros_like(p) for k, p in params.items()}
    for _ in range(5):
        opt.step(zeros)
        for k in expected:
            expected[k] *= 1 - lr * wd
    for k in params:
        np.testing.assert_array_equal(params[k], expected[k])


def test_adamw_without_decay_equals_adam(rng):
    p1 = make_params(rng)
    p2 = copy_dict(p1)
    a, w = Adam(p1, lr=1e-2), AdamW(p2, lr=1e-2, weight_decay=0.0)
    for _ in range(10):
        g = make_grads(rng, p1)
        a.step(g)
        w.step(g)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_adamw_matches_reference_algorithm_2(rng):
    params = make_params(rng)
    ref = RefAdam(params, 1e-2, 0.9, 0.999, 1e-8, wd=0.1)
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    for _ in range(20):
        g = make_grads(rng, params)
        opt.step(g)
        ref.step(g)
    for k in params:
        np.testing.assert_allclose(params[k], ref.p[k], rtol=1e-12, atol=1e-15)


def test_adamw_decay_filter_excludes_names(rng):
    params = make_params(rng)
    before = copy_dict(params)
    opt = AdamW(params, lr=0.1, weight_decay=0.5, decay_filter=lambda n: n.endswith(".W"))
    assert opt.decayed == {"encoder.0.W", "decoder.2.W"}
    opt.step({k: np.zeros_like(p) for k, p in params.items()})
    for k in params:
        if k.endswith(".W"):
            np.testing.assert_array_equal(params[k], before[k] * (1 - 0.1 * 0.5))
        else:
            np.testing.assert_array_equal(params[k], before[k])


def test_adamw_rejects_bad_decay_arguments(rng):
    params = make_params(rng)
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW(params, weight_decay=-1.0)
    with pytest.raises(TypeError, match="decay_filter"):
        AdamW(params, decay_filter=lambda n: "yes")
    opt = AdamW(params, lr=2.0, weight_decay=0.5)
    before = copy_dict(params)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.step(make_grads(rng, params))
    assert opt.t == 0 and opt.last_lr is None  # a rejected step changes nothing
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


# ------------------------------------------------------------------ SGD


def test_sgd_plain_step(rng):
    params = make_params(rng)
    before = copy_dict(params)
    grads = make_grads(rng, params)
    SGD(params, lr=0.1).step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k] - 0.1 * grads[k])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_reference(rng, nesterov):
    params = make_params(rng)
    ref = RefSGD(params, 0.05, 0.9, nesterov)
    opt = SGD(params, lr=0.05, momentum=0.9, nesterov=nesterov)
    for _ in range(30):
        g = make_grads(rng, params)
        opt.step(g)
        ref.step(g)
    for k in params:
        np.testing.assert_allclose(params[k], ref.p[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.momentum_buffer[k], ref.buf[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_converges_on_quadratic(rng, momentum, nesterov):
    grad, sol = quadratic(rng)
    p = np.zeros(sol.shape)
    opt = SGD({"p": p}, lr=0.01, momentum=momentum, nesterov=nesterov)
    for _ in range(1000):
        opt.step({"p": grad(p)})
    np.testing.assert_allclose(p, sol, atol=1e-8)


def test_sgd_rejects_nesterov_without_momentum(rng):
    with pytest.raises(ValueError, match="nesterov"):
        SGD(make_params(rng), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        SGD(make_params(rng), lr=0.1, momentum=1.0)


# ------------------------------------------------------------------ clipping


def test_clip_grad_norm_scales_to_max_norm(rng):
    grads = make_grads(rng, make_params(rng))
    norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    returned = clip_grad_norm(grads, norm / 3)
    assert returned == pytest.approx(norm, rel=1e-12)
    after = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    assert after == pytest.approx(norm / 3, rel=1e-12)


def test_clip_grad_norm_leaves_small_gradients_unchanged(rng):
    grads = make_grads(rng, make_params(rng))
    before = copy_dict(grads)
    norm = clip_grad_norm(list(grads.values()), 1e6)
    assert norm == pytest.approx(math.sqrt(sum(float(np.sum(g**2)) for g in before.values())), rel=1e-12)
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])


def test_clip_grad_norm_non_finite_leaves_arrays_unchanged():
    grads = {"a": np.array([1.0, np.nan]), "b": np.array([3.0])}
    assert math.isnan(clip_grad_norm(grads, 1.0))
    np.testing.assert_array_equal(grads["b"], [3.0])
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


@pytest.mark.parametrize("max_norm", [0.3, 1e3])
def test_optimizer_clipping_uses_clipped_gradients_and_keeps_callers_grads(rng, max_norm):
    params = make_params(rng)
    grads = make_grads(rng, params)
    grads_before = copy_dict(grads)
    ref_sgd = RefSGD(params, 0.1, 0.0, False)
    ref_adam = RefAdam(params, 0.1, 0.9, 0.999, 1e-8)
    p_adam = copy_dict(params)
    sgd = SGD(params, lr=0.1, clip_norm=max_norm)
    adam = Adam(p_adam, lr=0.1, clip_norm=max_norm)
    for _ in range(3):
        sgd.step(grads)
        adam.step(grads)
        ref_sgd.step(clipped(grads, max_norm))
        ref_adam.step(clipped(grads, max_norm))
    norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    assert sgd.last_grad_norm == pytest.approx(norm, rel=1e-12)
    for k in params:
        np.testing.assert_array_equal(grads[k], grads_before[k])  # caller's arrays untouched
        np.testing.assert_allclose(params[k], ref_sgd.p[k], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(p_adam[k], ref_adam.p[k], rtol=1e-12, atol=1e-15)


def test_last_grad_norm_is_none_without_clipping(rng):
    params = make_params(rng)
    opt = SGD(params, lr=0.1)
    opt.step(make_grads(rng, params))
    assert opt.last_grad_norm is None


# ------------------------------------------------------------------ schedules


def test_schedule_values():
    s = StepLR(3, gamma=0.5)
    assert [s(t) for t in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    e = ExponentialLR(0.9)
    assert e(1) == 1.0 and e(3) == pytest.approx(0.81)
    c = CosineLR(10, min_factor=0.1)
    assert c(0) == 1.0 and c(5) == pytest.approx(0.55) and c(10) == 0.1 and c(25) == 0.1
    values = [c(t) for t in range(12)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    w = LinearWarmup(4)
    assert [w(t) for t in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    wc = LinearWarmup(2, then=CosineLR(4))
    assert wc(2) == 1.0 and wc(4) == pytest.approx(0.5) and wc(6) == 0.0


@pytest.mark.parametrize("make, exc, name", [
    (lambda: StepLR(0), ValueError, "step_size"),
    (lambda: StepLR(2, gamma=1.5), ValueError, "gamma"),
    (lambda: ExponentialLR(0.0), ValueError, "gamma"),
    (lambda: CosineLR(0), ValueError, "total_steps"),
    (lambda: CosineLR(10, min_factor=2.0), ValueError, "min_factor"),
    (lambda: LinearWarmup(2.5), TypeError, "warmup_steps"),
    (lambda: LinearWarmup(2, then=3), TypeError, "then"),
    (lambda: CosineLR(10)(-1), ValueError, "t"),
])
def test_schedule_rejects_bad_arguments(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


def test_optimizer_follows_schedule(rng):
    p = np.zeros(3)
    g = np.array([1.0, -2.0, 0.5])
    sched = StepLR(2, gamma=0.1)
    opt = SGD({"p": p}, lr=0.5, schedule=sched)
    for t in range(1, 6):
        before = p.copy()
        opt.step({"p": g})
        assert opt.t == t and opt.last_lr == pytest.approx(0.5 * sched(t))
        np.testing.assert_allclose(p - before, -0.5 * sched(t) * g, rtol=1e-12)


def test_schedule_returning_negative_is_rejected(rng):
    params = make_params(rng)
    opt = Adam(params, schedule=lambda t: -1.0)
    with pytest.raises(ValueError, match="schedule"):
        opt.step(make_grads(rng, params))
    assert opt.t == 0


# ------------------------------------------------------------------ state_dict


OPTIMIZERS = {
    "adam": lambda p: Adam(p, lr=1e-2, betas=(0.8, 0.99), clip_norm=2.0, schedule=CosineLR(30)),
    "adamw": lambda p: AdamW(p, lr=1e-2, weight_decay=0.1, decay_filter=lambda n: n.endswith("W")),
    "sgd-nesterov": lambda p: SGD(p, lr=1e-2, momentum=0.9, nesterov=True),
    "sgd": lambda p: SGD(p, lr=1e-2),
}


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip_through_npz_is_bit_exact(rng, tmp_path, kind, dtype):
    make = OPTIMIZERS[kind]
    params = make_params(rng, dtype)
    grads = [make_grads(rng, params) for _ in range(20)]
    opt = make(params)
    for g in grads[:10]:
        opt.step(g)
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    saved_params = copy_dict(params)
    for g in grads[10:]:
        opt.step(g)

    params2 = saved_params
    opt2 = make(params2)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as state:
        opt2.load_state_dict(state)
    assert opt2.t == 10
    for g in grads[10:]:
        opt2.step(g)
    for k in params:
        np.testing.assert_array_equal(params2[k], params[k])


def test_state_dict_layout(rng):
    params = make_params(rng)
    opt = Adam(params, lr=1e-2)
    opt.step(make_grads(rng, params))
    state = opt.state_dict()
    assert set(state) == {"optimizer", "t", "lr", "betas", "eps"} | {f"{b}.{k}" for b in "mv" for k in params}
    assert str(state["optimizer"]) == "Adam" and state["t"] == 1 and state["lr"] == 1e-2
    np.testing.assert_array_equal(state["betas"], [0.9, 0.999])
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    state["m.encoder.0.W"][...] = 123.0  # a copy, not the live buffer
    assert not np.any(opt.m["encoder.0.W"] == 123.0)
    assert set(SGD(params, lr=1.0).state_dict()) == {"optimizer", "t", "lr", "momentum", "nesterov"}


def test_load_state_dict_restores_hyperparameters(rng):
    params = make_params(rng)
    a = Adam(params, lr=0.5, betas=(0.5, 0.6), eps=1e-3)
    b = Adam(copy_dict(params))
    b.load_state_dict(a.state_dict())
    assert (b.lr, b.betas, b.eps) == (0.5, (0.5, 0.6), 1e-3)


def test_load_state_dict_rejects_mismatches(rng):
    params = make_params(rng)
    opt = Adam(params, lr=1e-2)
    opt.step(make_grads(rng, params))
    good = opt.state_dict()
    snapshot = opt.state_dict()

    other_arch = make_params(rng, shapes={**SHAPES, "decoder.4.W": (3, 2)})
    with pytest.raises(ValueError, match="decoder.4.W"):  # missing key
        Adam(other_arch).load_state_dict(good)
    smaller = {k: v for k, v in params.items() if k != "scale"}
    with pytest.raises(ValueError, match="'m.scale'"):  # unexpected key
        Adam(smaller).load_state_dict(good)
    reshaped = {**params, "encoder.0.W": np.zeros((4, 6))}
    with pytest.raises(ValueError, match=r"m\.encoder\.0\.W.*shape"):
        Adam(reshaped).load_state_dict(good)
    with pytest.raises(TypeError, match="dtype"):
        Adam(make_params(rng, np.float32)).load_state_dict(good)
    with pytest.raises(ValueError, match="optimizer"):
        SGD(params, lr=1.0).load_state_dict(good)
    with pytest.raises(ValueError, match="betas"):
        opt.load_state_dict({**good, "betas": np.array([0.9, 1.0]), "v.scale": np.zeros(())})
    # a failed load changed nothing
    after = opt.state_dict()
    assert set(after) == set(snapshot)
    for k in snapshot:
        np.testing.assert_array_equal(after[k], snapshot[k])


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("make, name", [
    (lambda p: Adam(p, lr=-1e-3), "lr"),
    (lambda p: SGD(p, lr=0.0), "lr"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), r"betas\[1\]"),
    (lambda p: Adam(p, betas=(0.9,)), "betas"),
    (lambda p: Adam(p, eps=0.0), "eps"),
    (lambda p: Adam(p, clip_norm=-1.0), "clip_norm"),
    (lambda p: Adam({}), "params"),
    (lambda p: Adam({"a": p["scale"], "b": p["scale"]}), "params"),
])
def test_bad_constructor_arguments_raise_value_error(rng, make, name):
    with pytest.raises(ValueError, match=name):
        make(make_params(rng))


def test_bad_params_types(rng):
    with pytest.raises(TypeError, match="params"):
        Adam([np.zeros(3)])
    with pytest.raises(TypeError, match=r"params\['a'\]"):
        Adam({"a": np.zeros(3, dtype=np.int64)})
    with pytest.raises(TypeError, match=r"params\['a'\]"):
        Adam({"a": np.zeros(3, dtype=np.float16)})
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        Adam({"a": ro})
    with pytest.raises(TypeError, match="schedule"):
        Adam({"a": np.zeros(3)}, schedule=0.5)


def test_step_rejects_mismatched_grads(rng):
    params = make_params(rng)
    before = copy_dict(params)
    opt = Adam(params)
    grads = make_grads(rng, params)
    with pytest.raises(ValueError, match="'scale'"):
        opt.step({k: g for k, g in grads.items() if k != "scale"})
    with pytest.raises(ValueError, match="'extra'"):
        opt.step({**grads, "extra": np.zeros(2)})
    with pytest.raises(ValueError, match=r"grads\['encoder.0.W'\].*shape"):
        opt.step({**grads, "encoder.0.W": np.zeros((4, 6))})
    with pytest.raises(TypeError, match=r"grads\['encoder.0.b'\].*float64"):
        opt.step({**grads, "encoder.0.b": np.zeros(4, dtype=np.float32)})
    with pytest.raises(TypeError, match="grads"):
        opt.step(list(grads.values()))
    assert opt.t == 0
    assert all(np.array_equal(params[k], before[k]) and not opt.m[k].any() for k in params)


def test_load_state_dict_rejects_bad_scalars_naming_the_key(rng):
    opt = SGD(make_params(rng), lr=0.1, momentum=0.9)
    good = opt.state_dict()
    for key, value, exc in [("t", np.array(1.5), TypeError), ("t", np.array(-1), ValueError),
                            ("lr", np.array(0.0), ValueError), ("nesterov", np.array(1.0), TypeError),
                            ("momentum", np.array(1.0), ValueError), ("optimizer", np.array("Adam"), ValueError)]:
        with pytest.raises(exc, match=f"state\\['{key}'\\]"):
            opt.load_state_dict({**good, key: value})
    with pytest.raises(TypeError, match="state"):
        opt.load_state_dict([("t", 1)])
    assert opt.t == 0 and opt.lr == 0.1


def test_lr_setter_read_only_t_and_repr(rng):
    opt = AdamW(make_params(rng), lr=1e-2, weight_decay=0.1, clip_norm=1.0, schedule=StepLR(5))
    opt.lr = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 0.0
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "fast"
    with pytest.raises(AttributeError):
        opt.t = 3
    assert repr(opt) == ("AdamW(5 params, lr=0.5, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.1, "
                         "clip_norm=1.0, schedule=StepLR(step_size=5, gamma=0.1), t=0)")


def test_non_finite_gradients_propagate(rng):
    params = make_params(rng)
    grads = make_grads(rng, params)
    grads["encoder.0.b"][1] = np.nan
    opt = Adam(params, clip_norm=1.0)
    opt.step(grads)
    assert opt.t == 1 and math.isnan(opt.last_grad_norm)  # no special case: the step is taken
    assert np.isnan(params["encoder.0.b"][1]) and np.isnan(opt.m["encoder.0.b"][1])
    assert np.isfinite(params["encoder.0.W"]).all()


# ------------------------------------------------------------------ properties (hypothesis)

finite = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)


@given(g=hnp.arrays(np.float64, shapes, elements=finite),
       lr=st.floats(1e-6, 1.0), b1=st.floats(0.0, 0.99), b2=st.floats(0.0, 0.9999))
def test_adam_first_step_is_bounded_by_lr(g, lr, b1, b2):
    # Kingma & Ba (2015) section 2.1: |Delta| <= alpha; at t = 1 it is alpha |g| / (|g| + eps)
    p = np.zeros_like(g)
    Adam({"p": p}, lr=lr, betas=(b1, b2)).step({"p": g})
    assert np.all(np.abs(p) <= lr * (1 + 1e-6))


@given(data=st.data(), shape=shapes, a=st.floats(-10, 10),
       mu=st.sampled_from([0.0, 0.5, 0.9]), nesterov=st.booleans())
def test_sgd_is_linear_in_the_gradients(data, shape, a, mu, nesterov):
    nesterov = nesterov and mu > 0
    small = st.floats(-100, 100)
    g1 = [data.draw(hnp.arrays(np.float64, shape, elements=small)) for _ in range(3)]
    g2 = [data.draw(hnp.arrays(np.float64, shape, elements=small)) for _ in range(3)]

    def run(gs):
        p = np.zeros(shape)
        opt = SGD({"p": p}, lr=0.1, momentum=mu, nesterov=nesterov)
        for g in gs:
            opt.step({"p": g})
        return p

    combined = run([np.asarray(a * x + y) for x, y in zip(g1, g2)])  # asarray: 0-d ops give scalars
    np.testing.assert_allclose(combined, a * run(g1) + run(g2), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ memory layouts, dtypes, the flush


def _flat_params(rng, shapes, dtype=np.float64, scale=1.0):
    """Arrays laid end to end in one buffer (as a model with a flat parameter buffer has)."""
    n = sum(int(np.prod(s)) for s in shapes.values())
    buf = (rng.standard_normal(n) * scale).astype(dtype)
    out, off = {}, 0
    for k, s in shapes.items():
        size = int(np.prod(s))
        out[k] = buf[off:off + size].reshape(s)
        off += size
    return out


LAYOUT_SHAPES = {"a.W": (7, 5), "a.b": (5,), "b.W": (3, 11), "s": (), "b.b": (11,)}


@pytest.mark.parametrize("flat_p, flat_g", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "nesterov"])
def test_flat_buffer_layouts_match_reference(rng, flat_p, flat_g, kind):
    """Params and/or grads as views into one buffer (as a model with one parameter buffer
    has them) or separate arrays: the same iterates as the literal reference
    implementations, and the state is plain arrays of the parameters' shapes that own
    their memory."""
    params = _flat_params(rng, LAYOUT_SHAPES) if flat_p else make_params(rng, shapes=LAYOUT_SHAPES)
    if kind in ("adam", "adamw"):
        wd = 0.1 if kind == "adamw" else 0.0
        ref = RefAdam(params, 1e-2, 0.9, 0.999, 1e-8, wd=wd)
        opt = Adam(params, lr=1e-2) if wd == 0 else AdamW(params, lr=1e-2, weight_decay=wd)
        state = [opt.m, opt.v]
    else:
        ref = RefSGD(params, 0.05, 0.9, kind == "nesterov")
        opt = SGD(params, lr=0.05, momentum=0.9, nesterov=kind == "nesterov")
        state = [opt.momentum_buffer]
    assert all(opt.params[k] is params[k] for k in params)
    grads = _flat_params(rng, LAYOUT_SHAPES) if flat_g else None
    for _ in range(6):
        g = make_grads(rng, params)
        if flat_g:
            for k in grads:  # the same live arrays every step, new values
                grads[k][...] = g[k]
            g = grads
        opt.step(g)
        ref.step(g)
    for k in params:
        np.testing.assert_allclose(params[k], ref.p[k], rtol=1e-12, atol=1e-15)
    for arrays in state:
        assert arrays.keys() == params.keys()
        for k, a in arrays.items():
            assert type(a) is np.ndarray and a.base is None and a.shape == params[k].shape, k


def test_adamw_decay_filter_with_flat_params(rng):
    params = _flat_params(rng, LAYOUT_SHAPES)
    before = copy_dict(params)
    opt = AdamW(params, lr=0.1, weight_decay=0.5, decay_filter=lambda n: n.endswith(".W"))
    opt.step({k: np.zeros_like(p) for k, p in params.items()})
    for k in params:
        factor = (1 - 0.1 * 0.5) if k.endswith(".W") else 1.0
        np.testing.assert_array_equal(params[k], before[k] * factor)


def test_strided_and_mixed_dtype_params(rng):
    """A transposed (non-contiguous) parameter is updated in place, never through a copy;
    float32 and float64 parameters each keep their own dtype."""
    base = rng.standard_normal((6, 4))
    params = {"T": base.T, "x32": rng.standard_normal(10).astype(np.float32), "y": rng.standard_normal(9)}
    ref = RefAdam(params, 1e-2, 0.9, 0.999, 1e-8)
    opt = Adam(params, lr=1e-2)
    for _ in range(4):
        g = make_grads(rng, params)
        g["T"] = np.asfortranarray(g["T"])[::1]  # any layout
        opt.step(g)
        ref.step(g)
    np.testing.assert_allclose(base.T, ref.p["T"], rtol=1e-12)
    np.testing.assert_allclose(params["y"], ref.p["y"], rtol=1e-12)
    np.testing.assert_allclose(params["x32"], ref.p["x32"], rtol=1e-5)
    assert params["x32"].dtype == opt.m["x32"].dtype == np.float32 and opt.m["y"].dtype == np.float64


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "nesterov"])
def test_float32_arithmetic_is_float32_bit_for_bit(rng, kind, monkeypatch):
    """No float64 intermediate anywhere: a float32 run of the textbook lines equals, bit for
    bit, the literal reference algorithm run on float32 arrays (whose Python-float scalars are
    weak, NEP 50), clipping included. (The fast Adam form reorders the arithmetic: it is
    compared with the textbook lines in tests/test_fast_paths.py.)"""
    monkeypatch.setattr(optim, "FAST_ADAM", False)
    params = make_params(rng, np.float32)
    if kind in ("adam", "adamw"):
        wd = 0.1 if kind == "adamw" else 0.0
        ref = RefAdam(params, 1e-2, 0.9, 0.999, 1e-8, wd=wd)
        opt = (Adam(params, lr=1e-2, clip_norm=3.0) if wd == 0 else
               AdamW(params, lr=1e-2, weight_decay=wd, clip_norm=3.0))
    else:
        ref = RefSGD(params, 0.05, 0.9, kind == "nesterov")
        opt = SGD(params, lr=0.05, momentum=0.9, nesterov=kind == "nesterov", clip_norm=3.0)
    for _ in range(10):
        g = make_grads(rng, params)
        opt.step(g)
        c = min(1.0, 3.0 / opt.last_grad_norm)
        ref.step({k: gk * c if c < 1.0 else gk for k, gk in g.items()})
    assert c < 1.0  # clipping did happen
    for k in params:
        assert params[k].dtype == np.float32
        np.testing.assert_array_equal(params[k], ref.p[k])


@pytest.mark.parametrize("make", [lambda p: Adam(p, lr=1e-3), lambda p: AdamW(p, lr=1e-3, weight_decay=0.0),
                                  lambda p: SGD(p, lr=1e-3, momentum=0.9)], ids=["Adam", "AdamW", "SGD"])
def test_state_never_turns_subnormal_and_the_flush_changes_no_parameter(make, monkeypatch):
    """A gradient seen once, then zeros (a rarely-on pixel's weight): m = 0.1 * 0.9**t passes
    through the float32 subnormal range around t = 810..960, where each operation costs ~100x.
    The periodic flush keeps every state entry 0 or normal, and the parameters stay bit for bit
    those of the same run without it (FLUSH_SUBNORMALS = False: the algorithms as written)."""
    def run():
        p = {"w": np.linspace(0.5, 1.5, 8, dtype=np.float32)}
        opt = make(p)
        g = {"w": np.zeros(8, np.float32)}
        tiny = np.finfo(np.float32).tiny
        worst = flushed = 0
        for t in range(1, 1001):
            g["w"][:] = 1.0 if t == 1 else 0.0
            before = {k: a.copy() for k, a in opt.state_dict().items() if "." in k}
            opt.step(g)
            for key, a in opt.state_dict().items():
                if "." in key:  # the state arrays "m.w", "v.w", "momentum_buffer.w"
                    worst = max(worst, int(((a != 0) & (np.abs(a) < tiny)).sum()))
                    flushed += int(((a == 0) & (before[key] != 0)).sum())
        return p["w"].copy(), worst, flushed

    assert optim.FLUSH_SUBNORMALS is True and optim.FLUSH_EVERY == 64
    with_flush, worst, flushed = run()
    assert worst == 0 and flushed > 0  # the flush did zero entries, and no subnormal was ever left
    monkeypatch.setattr(optim, "FLUSH_SUBNORMALS", False)
    without, worst_off, flushed_off = run()
    assert worst_off > 0  # the case does reach the subnormal range without the flush
    np.testing.assert_array_equal(with_flush, without)


def test_flush_zeroes_only_entries_that_could_turn_subnormal_before_the_next_flush():
    m = np.array([0.0, 1e-36, 1e-34, -1e-36, 1.0], dtype=np.float32)
    optim._flush_subnormals({"w": m}, 0.9)  # threshold tiny / 0.9**64 = 1.0e-35
    np.testing.assert_array_equal(m, np.array([0.0, 0.0, 1e-34, 0.0, 1.0], dtype=np.float32))
    v = np.array([1e-36, 1e-30], dtype=np.float64)  # float64: tiny = 2.2e-308, nothing to flush
    optim._flush_subnormals({"v": v}, 0.999)
    np.testing.assert_array_equal(v, [1e-36, 1e-30])
