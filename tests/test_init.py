"""Weight initializers: shapes, dtypes, statistics, reproducibility, explicit randomness, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae import init
from npvae.layers import Linear

RANDOM_INITS = ["glorot_uniform", "glorot_normal", "he_normal", "he_uniform"]
ALL_INITS = [*RANDOM_INITS, "zeros"]
DTYPES = [np.float32, np.float64]

# A big non-square matrix: fan_in != fan_out, so swapping them changes every expected value.
FAN_IN, FAN_OUT = 400, 2500  # 1e6 entries


def expected_variance(name, fan_in, fan_out):
    return {"glorot_uniform": 2 / (fan_in + fan_out), "glorot_normal": 2 / (fan_in + fan_out),
            "he_normal": 2 / fan_in, "he_uniform": 2 / fan_in, "zeros": 0.0}[name]


@pytest.fixture(scope="module")
def big():
    """One 400x2500 float64 draw per random initializer (shared: drawing is the slow part)."""
    return {name: init.get(name)((FAN_IN, FAN_OUT), rng=np.random.default_rng(2024), dtype=np.float64)
            for name in RANDOM_INITS}


def test_registry_and_get():
    assert set(init.INITIALIZERS) == set(ALL_INITS)
    for name in ALL_INITS:
        assert init.get(name) is getattr(init, name) is init.INITIALIZERS[name]


@pytest.mark.parametrize("name", ALL_INITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (7,), (2, 3, 4)])
def test_shape_and_dtype(name, dtype, shape, rng):
    w = init.get(name)(shape, rng=rng, dtype=dtype)
    assert isinstance(w, np.ndarray)
    assert w.shape == shape and w.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(w))
    if name != "zeros" and w.size > 1:
        assert len(np.unique(w)) == w.size  # really random, not a constant


@pytest.mark.parametrize("name", ALL_INITS)
def test_default_dtype_is_float32(name, rng):
    assert init.get(name)((4, 3), rng=rng).dtype == np.float32


def test_zeros_is_all_zero():
    for dtype in DTYPES:
        w = init.zeros((5, 6), rng=np.random.default_rng(0), dtype=dtype)
        assert not np.any(w) and w.dtype == dtype
    assert not np.any(init.zeros((3,)))  # rng is optional for zeros (unused)


@pytest.mark.parametrize("name", RANDOM_INITS)
def test_variance_and_mean(name, big):
    w = big[name]
    n = w.size
    var = expected_variance(name, FAN_IN, FAN_OUT)
    # relative standard error of the sample variance: sqrt((kurtosis - 1) / n) <= 1.5e-3, so
    # 1% is ~7 standard errors, while a swapped or wrong fan (2/fan_out = 8e-4 instead of
    # 2/2900 = 6.9e-4, or 2/fan_in) is off by 16% or more
    assert np.var(w) == pytest.approx(var, rel=0.01)
    assert abs(np.mean(w)) < 5 * np.sqrt(var / n)


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform"])
def test_uniform_bounds(name, big):
    w = big[name]
    a = np.sqrt(6 / (FAN_IN + FAN_OUT)) if name == "glorot_uniform" else np.sqrt(6 / FAN_IN)
    assert np.max(np.abs(w)) <= a
    assert np.max(w) > 0.999 * a and np.min(w) < -0.999 * a  # the whole interval is used
    # uniform: kurtosis 9/5, and the fraction within a/2 is 1/2
    assert np.mean(w ** 4) / np.var(w) ** 2 == pytest.approx(1.8, rel=0.01)
    assert np.mean(np.abs(w) < a / 2) == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize("name", ["glorot_normal", "he_normal"])
def test_normal_shape(name, big):
    w = big[name]
    std = np.sqrt(expected_variance(name, FAN_IN, FAN_OUT))
    assert np.mean(w ** 4) / np.var(w) ** 2 == pytest.approx(3.0, rel=0.02)  # normal kurtosis
    assert np.mean(np.abs(w) < std) == pytest.approx(0.6827, abs=0.005)
    assert np.max(np.abs(w)) > 4 * std  # unbounded tails (1e6 draws), unlike a uniform


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform"])
def test_float32_uniform_within_bound(name):
    w = init.get(name)((300, 300), rng=np.random.default_rng(1), dtype=np.float32)
    a = np.sqrt(6 / 600) if name == "glorot_uniform" else np.sqrt(6 / 300)
    assert np.max(np.abs(w)) <= np.float32(a)


@pytest.mark.parametrize("name", RANDOM_INITS)
def test_one_dimensional_shape_uses_n_as_both_fans(name):
    w = init.get(name)((200_000,), rng=np.random.default_rng(3), dtype=np.float64)
    assert np.var(w) == pytest.approx(expected_variance(name, 200_000, 200_000), rel=0.02)


@pytest.mark.parametrize("name", ALL_INITS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reproducible_for_the_same_seed(name, dtype):
    a = init.get(name)((6, 7), rng=np.random.default_rng(42), dtype=dtype)
    b = init.get(name)((6, 7), rng=np.random.default_rng(42), dtype=dtype)
    np.testing.assert_array_equal(a, b)
    assert a.tobytes() == b.tobytes()
    if name != "zeros":
        c = init.get(name)((6, 7), rng=np.random.default_rng(43), dtype=dtype)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", RANDOM_INITS)
def test_float32_is_the_float64_draw_rounded(name):
    """Same seed, both dtypes: the same numbers (one draw, then a cast)."""
    w64 = init.get(name)((5, 4), rng=np.random.default_rng(9), dtype=np.float64)
    w32 = init.get(name)((5, 4), rng=np.random.default_rng(9), dtype=np.float32)
    np.testing.assert_array_equal(w32, w64.astype(np.float32))


@given(seed=st.integers(0, 2**63), fan_in=st.integers(1, 40), fan_out=st.integers(1, 40),
       name=st.sampled_from(RANDOM_INITS))
def test_uses_only_the_given_generator(seed, fan_in, fan_out, name):
    np.random.seed(seed % 2**32)
    global_before = np.random.get_state()
    rng = np.random.default_rng(seed)
    gen_before = rng.bit_generator.state
    w1 = init.get(name)((fan_in, fan_out), rng=rng)
    global_after = np.random.get_state()
    assert global_before[0] == global_after[0]
    np.testing.assert_array_equal(global_before[1], global_after[1])
    assert global_before[2:] == global_after[2:]
    assert rng.bit_generator.state != gen_before  # the given generator was the one used
    # and the result is a function of the generator's state alone
    np.random.seed((seed + 1) % 2**32)
    w2 = init.get(name)((fan_in, fan_out), rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(w1, w2)


def test_zeros_does_not_touch_the_generator():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    init.zeros((3, 3), rng=rng)
    assert rng.bit_generator.state == state


def test_linear_uses_the_initializer(rng):
    a = Linear(30, 20, rng=np.random.default_rng(5), dtype=np.float64, init="he_uniform")
    expected = init.he_uniform((30, 20), rng=np.random.default_rng(5), dtype=np.float64)
    np.testing.assert_array_equal(a.params["W"], expected)
    assert not np.any(a.params["b"])
    z = Linear(3, 2, rng=rng, init="zeros")
    assert not np.any(z.params["W"]) and z.params["W"].dtype == np.float32


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RANDOM_INITS)
@pytest.mark.parametrize("bad_rng,got", [(None, "NoneType"), (0, "int"), (np.random, "module"),
                                         (np.random.RandomState(0), "RandomState"),
                                         (np.random.PCG64(0), "PCG64")])
def test_non_generator_rng_raises_type_error(name, bad_rng, got):
    with pytest.raises(TypeError, match=f"rng: expected a numpy.random.Generator .*got {got}"):
        init.get(name)((3, 4), rng=bad_rng)


@pytest.mark.parametrize("name", ALL_INITS)
@pytest.mark.parametrize("shape", [(), (0, 3), (3, 0), (-1, 2), (4, -5), (0,)])
def test_bad_shape_raises_value_error(name, shape, rng):
    with pytest.raises(ValueError, match=r"shape: expected a non-empty shape of positive sizes, got "
                                         + re.escape(str(shape))):
        init.get(name)(shape, rng=rng)


@pytest.mark.parametrize("name", ALL_INITS)
@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, "float"])
def test_non_float32_64_dtype_raises_type_error(name, dtype, rng):
    if dtype == "float":  # numpy reads "float" as float64: accepted
        assert init.get(name)((2, 2), rng=rng, dtype=dtype).dtype == np.float64
        return
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        init.get(name)((2, 2), rng=rng, dtype=dtype)


@pytest.mark.parametrize("bad", ["Glorot_Uniform", "xavier", "", "orthogonal"])
def test_get_unknown_name_raises_value_error(bad):
    with pytest.raises(ValueError, match=rf"init: expected one of 'glorot_uniform', .*, got '{bad}'"):
        init.get(bad)
