"""Convolutions: finite differences, references, the adjoint identity, dtypes and errors.

* Finite differences (float64, ``gradcheck.check_layer``) for x, W and b of Conv2d and
  ConvTranspose2d over generated strides 1-2, paddings 0-2, kernels 1-5 (square or not),
  channel counts 1-3 and non-square images (hypothesis). Both layers are affine in x, in W
  and in b separately, so a central difference has no truncation error at any step: a unit
  step leaves only round-off (as for Linear in ``test_layers.py``). Flatten, Unflatten and a
  conv network in a Sequential are checked too (tanh: smooth; fourth-order stencil).
* The forward against a six-loop reference written from the definition, and against
  ``scipy.signal.correlate`` per (example, output channel, input channel); the transposed
  convolution against a loop that paints one kernel-sized patch per input pixel.
* The adjoint identity <Conv2d(x), y> = <x, ConvTranspose2d(y)> for a shared W and zero
  biases (output_padding chosen so that ConvTranspose2d's output has x's size).

The largest errors are collected in ``MAX_REL`` / ``MAX_ABS`` and printed at the end of the
run (conftest.py).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import signal

from npvae import gradcheck
from npvae import layers as L
from npvae.conv import conv_output_size, conv_transpose_output_size

MAX_REL: dict[str, float] = {}   # largest FD rel_error per layer class (and per array)
MAX_ABS: dict[str, float] = {}   # largest reference / adjoint errors, relative to the output's scale


def _record(table, key, value):
    table[key] = max(table.get(key, 0.0), float(value))


# ------------------------------------------------------------------------------------------
# references, written from the definitions (no im2col)
# ------------------------------------------------------------------------------------------

def conv2d_reference(x, W, b, stride, padding):
    """y[n, o, a, b] = b[o] + sum_{c, i, j} W[o, c, i, j] xp[n, c, s a + i, s b + j]: six loops."""
    (sh, sw), (ph, pw) = stride, padding
    B, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    xp = np.zeros((B, C, H + 2 * ph, Wd + 2 * pw), dtype=np.float64)
    xp[:, :, ph:ph + H, pw:pw + Wd] = x
    ho, wo = conv_output_size(H, kh, sh, ph), conv_output_size(Wd, kw, sw, pw)
    y = np.zeros((B, O, ho, wo))
    for n in range(B):
        for o in range(O):
            for a in range(ho):
                for bb in range(wo):
                    total = float(b[o])
                    for c in range(C):
                        for i in range(kh):
                            for j in range(kw):
                                total += W[o, c, i, j] * xp[n, c, sh * a + i, sw * bb + j]
                    y[n, o, a, bb] = total
    return y


def conv_transpose2d_reference(x, W, b, stride, padding, output_padding):
    """Each input pixel x[n, :, a, b] paints W[c] x[n, c, a, b] at (s a - p, s b - p): loops over pixels."""
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    B, C, H, Wd = x.shape
    _, O, kh, kw = W.shape
    ho = conv_transpose_output_size(H, kh, sh, ph, oph)
    wo = conv_transpose_output_size(Wd, kw, sw, pw, opw)
    canvas = np.zeros((B, O, max((H - 1) * sh + kh, ph + ho), max((Wd - 1) * sw + kw, pw + wo)))
    for n in range(B):
        for a in range(H):
            for bb in range(Wd):
                patch = np.einsum("c,cokl->okl", x[n, :, a, bb], W)
                canvas[n, :, sh * a:sh * a + kh, sw * bb:sw * bb + kw] += patch
    return canvas[:, :, ph:ph + ho, pw:pw + wo] + b[:, None, None]


def scipy_reference(x, W, b, stride, padding):
    """Stride 1 by scipy.signal.correlate (valid mode) per channel pair, then every s-th output."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    B, O = x.shape[0], W.shape[0]
    full = np.stack([np.stack([sum(signal.correlate(xp[n, c], W[o, c], mode="valid") for c in range(x.shape[1]))
                               + b[o] for o in range(O)]) for n in range(B)])
    return full[:, :, ::sh, ::sw]


# ------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------

@st.composite
def conv_cases(draw, transpose=False):
    """(in_ch, out_ch, kernel, stride, padding, output_padding, x shape): small, valid, often non-square."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    c_in, c_out, batch = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if transpose:
        oph, opw = draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))
        H, W = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        assume(conv_transpose_output_size(H, kh, sh, ph, oph) >= 1 and conv_transpose_output_size(W, kw, sw, pw, opw) >= 1)
    else:
        oph = opw = 0
        H, W = draw(st.integers(max(1, kh - 2 * ph), 7)), draw(st.integers(max(1, kw - 2 * pw), 7))
    return c_in, c_out, (kh, kw), (sh, sw), (ph, pw), (oph, opw), (batch, c_in, H, W)


def build_conv(case, rng, dtype=np.float64, transpose=False):
    c_in, c_out, k, s, p, op, _ = case
    if transpose:
        return L.ConvTranspose2d(c_in, c_out, k, s, p, op, rng=rng, dtype=dtype)
    return L.Conv2d(c_in, c_out, k, s, p, rng=rng, dtype=dtype)


# ==========================================================================================
# finite differences
# ==========================================================================================

def _fd(layer, x, rng, **kw):
    results = gradcheck.check_layer(layer, x, rng=rng, **kw)
    assert set(results) == {"x", *layer.params}
    name = type(layer).__name__
    for key, r in results.items():
        _record(MAX_REL, f"{name} {key}", r.rel_error)
    bad = {k: r.rel_error for k, r in results.items() if not r.rel_error < 1e-6}
    assert not bad, f"{layer} on {x.shape}: {bad}"
    return results


@pytest.mark.parametrize("transpose", [False, True], ids=["Conv2d", "ConvTranspose2d"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fd_generated_shapes(transpose, data, seed):
    case = data.draw(conv_cases(transpose), label="case")
    rng = np.random.default_rng(seed)
    layer = build_conv(case, rng, transpose=transpose)
    x = rng.standard_normal(case[-1])
    _fd(layer, x, rng, h=1.0)  # affine in x, W, b: no truncation error at any step


@pytest.mark.parametrize("transpose", [False, True], ids=["Conv2d", "ConvTranspose2d"])
def test_fd_at_the_conv_vae_shapes_small_step(transpose, rng):
    """The ConvVAE's kind of layer (kernel 4, stride 2, padding 1) with the usual h = 1e-6, x and W along directions."""
    layer = (L.ConvTranspose2d(4, 3, 4, 2, 1, 1, rng=rng, dtype=np.float64) if transpose
             else L.Conv2d(3, 4, 4, 2, 1, rng=rng, dtype=np.float64))
    x = rng.standard_normal((2, layer.in_channels, 7, 6))
    results = _fd(layer, x, rng, max_elementwise=100, n_directions=12)
    assert results["x"].mode == "directions" and results["b"].mode == "elementwise"


def test_fd_conv_network_in_a_sequential(rng):
    """Unflatten -> Conv2d -> Tanh -> ConvTranspose2d -> Tanh -> Flatten -> Linear: the pieces compose."""
    net = L.Sequential(L.Unflatten((2, 5, 4)), L.Conv2d(2, 3, 3, 2, 1, rng=rng, dtype=np.float64), L.Tanh(),
                       L.ConvTranspose2d(3, 2, 3, 2, 1, (0, 1), rng=rng, dtype=np.float64), L.Tanh(),
                       L.Flatten(), L.Linear(2 * 5 * 4, 3, rng=rng, dtype=np.float64))
    x = rng.standard_normal((3, 40))
    assert net.forward(x).shape == (3, 3) and net[4]._y.shape == (3, 2, 5, 4)
    results = gradcheck.check_layer(net, x, rng=rng, h=1e-4, order=4)
    worst = max(r.rel_error for r in results.values())
    _record(MAX_REL, "Sequential(conv net)", worst)
    assert worst < 1e-6, {k: r.rel_error for k, r in results.items()}


@pytest.mark.parametrize("layer", [L.Flatten(), L.Unflatten((3, 2, 2))], ids=["Flatten", "Unflatten"])
def test_fd_flatten_unflatten(layer, rng):
    x = rng.standard_normal((4, 3, 2, 2) if isinstance(layer, L.Flatten) else (4, 12))
    results = _fd(layer, x, rng)
    assert set(results) == {"x"}
    y = layer.forward(x)
    assert y.shape == ((4, 12) if isinstance(layer, L.Flatten) else (4, 3, 2, 2))
    np.testing.assert_array_equal(layer.backward(y), x)  # the backward undoes the reshape


# ==========================================================================================
# the forward against references
# ==========================================================================================

@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_forward_matches_six_loops_and_scipy(data, seed):
    case = data.draw(conv_cases(), label="case")
    rng = np.random.default_rng(seed)
    layer = build_conv(case, rng)
    x = rng.standard_normal(case[-1])
    y = layer.forward(x)
    ref = conv2d_reference(x, layer.params["W"], layer.params["b"], layer.stride, layer.padding)
    sci = scipy_reference(x, layer.params["W"], layer.params["b"], layer.stride, layer.padding)
    assert y.shape == ref.shape == sci.shape == (x.shape[0], layer.out_channels,
                                                 *layer.output_shape(*x.shape[2:])[1:])
    scale = max(1.0, float(np.max(np.abs(ref))))
    err_loop, err_scipy = np.max(np.abs(y - ref)) / scale, np.max(np.abs(y - sci)) / scale
    _record(MAX_ABS, "Conv2d vs six loops", err_loop)
    _record(MAX_ABS, "Conv2d vs scipy.signal.correlate", err_scipy)
    assert err_loop < 1e-13 and err_scipy < 1e-13


@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose2d_forward_matches_patch_loop(data, seed):
    case = data.draw(conv_cases(transpose=True), label="case")
    rng = np.random.default_rng(seed)
    layer = build_conv(case, rng, transpose=True)
    x = rng.standard_normal(case[-1])
    y = layer.forward(x)
    ref = conv_transpose2d_reference(x, layer.params["W"], layer.params["b"], layer.stride, layer.padding,
                                     layer.output_padding)
    assert y.shape == ref.shape == (x.shape[0], *layer.output_shape(*x.shape[2:]))
    err = np.max(np.abs(y - ref)) / max(1.0, float(np.max(np.abs(ref))))
    _record(MAX_ABS, "ConvTranspose2d vs patch loop", err)
    assert err < 1e-13


def test_output_sizes_follow_pytorch():
    """floor((H + 2p - k)/s) + 1 and (H - 1)s - 2p + k + output_padding, e.g. the ConvVAE's 28 -> 14 -> 7 -> 14 -> 28."""
    rng = np.random.default_rng(0)
    conv = L.Conv2d(1, 2, 4, 2, 1, rng=rng)
    assert conv.forward(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 2, 14, 14)
    assert conv.forward(np.zeros((1, 1, 14, 15), np.float32)).shape == (1, 2, 7, 7)
    up = L.ConvTranspose2d(2, 1, 4, 2, 1, rng=rng)
    assert up.forward(np.zeros((1, 2, 7, 7), np.float32)).shape == (1, 1, 14, 14)
    assert L.ConvTranspose2d(2, 1, 4, 2, 1, (0, 1), rng=rng).forward(np.zeros((1, 2, 7, 7), np.float32)).shape == \
        (1, 1, 14, 15)
    assert L.Conv2d(1, 1, (3, 1), (2, 1), (0, 2), rng=rng).forward(np.zeros((1, 1, 9, 4), np.float32)).shape == \
        (1, 1, 4, 8)


# ==========================================================================================
# the adjoint identity
# ==========================================================================================

@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose_is_the_adjoint_of_conv(data, seed):
    """<Conv2d(x), y> = <x, ConvTranspose2d(y)> with the same W and zero biases."""
    c_in, c_out, k, s, p, _, shape = data.draw(conv_cases(), label="case")
    rng = np.random.default_rng(seed)
    conv = L.Conv2d(c_in, c_out, k, s, p, rng=rng, dtype=np.float64)
    H, W = shape[2:]
    op = tuple((n + 2 * p[d] - k[d]) % s[d] for d, n in enumerate((H, W)))  # the size Conv2d forgot
    up = L.ConvTranspose2d(c_out, c_in, k, s, p, op, rng=rng, dtype=np.float64)
    up.params["W"][...] = conv.params["W"]                   # (out, in, kH, kW) of the conv = (in, out, ...) of its transpose
    conv.params["b"][...] = 0.0
    up.params["b"][...] = 0.0
    x = rng.standard_normal(shape)
    y = rng.standard_normal(conv.forward(x).shape)
    lhs, rhs = np.sum(conv.forward(x) * y), np.sum(x * up.forward(y))
    assert up.forward(y).shape == x.shape
    err = abs(lhs - rhs) / max(1.0, np.sum(np.abs(conv.forward(x) * y)))
    _record(MAX_ABS, "adjoint <Conv2d(x), y> - <x, ConvT(y)>", err)
    assert err < 1e-13
    # and ConvTranspose2d's forward is exactly Conv2d's input gradient
    conv.forward(x)
    np.testing.assert_allclose(conv.backward(y), up.forward(y), rtol=1e-12, atol=1e-12)


# ==========================================================================================
# dtypes, the grads contract, errors
# ==========================================================================================

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose", [False, True], ids=["Conv2d", "ConvTranspose2d"])
def test_dtype_is_kept_and_grads_are_overwritten(dtype, transpose, rng):
    layer = (L.ConvTranspose2d(3, 2, 4, 2, 1, rng=rng, dtype=dtype) if transpose
             else L.Conv2d(3, 2, 4, 2, 1, rng=rng, dtype=dtype))
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    assert y.dtype == dx.dtype == dtype and dx.shape == x.shape
    assert all(p.dtype == g.dtype == dtype for p, g in zip(layer.params.values(), layer.grads.values()))
    first = {k: g.copy() for k, g in layer.grads.items()}
    arrays = dict(layer.grads)
    layer.forward(x)
    layer.backward(dy)
    for k in first:  # overwritten in the same live arrays, never accumulated
        assert layer.grads[k] is arrays[k]
        np.testing.assert_array_equal(layer.grads[k], first[k])
    for flat in (L.Flatten(), L.Unflatten((3, 6, 5))):
        v = x if isinstance(flat, L.Flatten) else x.reshape(2, -1)
        assert flat.forward(v).dtype == flat.backward(flat.forward(v)).dtype == dtype


def test_float32_agrees_with_float64(rng):
    layer64 = L.Conv2d(2, 3, 3, 2, 1, rng=np.random.default_rng(1), dtype=np.float64)
    layer32 = L.Conv2d(2, 3, 3, 2, 1, rng=np.random.default_rng(1), dtype=np.float32)
    x = rng.standard_normal((2, 2, 9, 8))
    np.testing.assert_allclose(layer32.forward(x.astype(np.float32)), layer64.forward(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("make,exc,match", [
    (lambda r: L.Conv2d(0, 2, 3, rng=r), ValueError, "in_channels: expected an integer >= 1, got 0"),
    (lambda r: L.Conv2d(1, 2, 0, rng=r), ValueError, r"kernel_size\[0\]: expected an integer >= 1, got 0"),
    (lambda r: L.Conv2d(1, 2, (3, 2, 1), rng=r), TypeError, r"kernel_size: expected an integer or a pair"),
    (lambda r: L.Conv2d(1, 2, 3, stride=0, rng=r), ValueError, r"stride\[0\]: expected an integer >= 1, got 0"),
    (lambda r: L.Conv2d(1, 2, 3, padding=-1, rng=r), ValueError, r"padding\[0\]: expected an integer >= 0, got -1"),
    (lambda r: L.Conv2d(1, 2, 3.0, rng=r), TypeError, r"kernel_size: expected an integer or a pair"),
    (lambda r: L.Conv2d(1, 2, 3, rng=None), TypeError, "rng: expected a numpy.random.Generator"),
    (lambda r: L.ConvTranspose2d(1, 2, 3, stride=2, output_padding=2, rng=r), ValueError,
     r"output_padding: expected each entry below its stride \(2, 2\), got \(2, 2\)"),
    (lambda r: L.Unflatten((3, 0)), ValueError, r"shape\[1\]: expected an integer >= 1, got 0"),
])
def test_constructor_errors_name_the_argument(make, exc, match, rng):
    with pytest.raises(exc, match=match):
        make(rng)


def test_forward_errors_name_x(rng):
    conv = L.Conv2d(3, 2, 5, padding=1, rng=rng)
    with pytest.raises(ValueError, match=re.escape("x: expected an image at least as large as the kernel 5x5 after "
                                                   "padding 1x1, got 2x6 (padded 4x8)")):
        conv.forward(np.zeros((1, 3, 2, 6), np.float32))
    with pytest.raises(ValueError, match=re.escape("x: expected shape (*, 3, *, *), got shape (1, 2, 8, 8)")):
        conv.forward(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=re.escape("x: expected shape (*, 3, *, *), got shape (3, 8, 8)")):
        conv.forward(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="x: expected dtype float32, got dtype float64"):
        conv.forward(np.zeros((1, 3, 8, 8)))
    up = L.ConvTranspose2d(2, 1, 1, padding=1, rng=rng)
    with pytest.raises(ValueError, match=re.escape("x: expected an image whose output (H - 1) stride - 2 padding + "
                                                   "kernel + output_padding is at least 1x1, got 2x5, whose output "
                                                   "would be 0x3")):
        up.forward(np.zeros((1, 2, 2, 5), np.float32))
    y = conv.forward(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=re.escape(f"dy: expected shape {y.shape} (the last output's)")):
        conv.backward(np.zeros((1, 2, 7, 6), np.float32))
    with pytest.raises(ValueError, match=re.escape("x: expected shape (*, 12), got shape (4, 3, 4)")):
        L.Unflatten((3, 4)).forward(np.zeros((4, 3, 4)))
    with pytest.raises(ValueError, match=re.escape("x: expected an array of rank >= 2 (batch, ...), got shape (4,)")):
        L.Flatten().forward(np.zeros(4))


def test_layers_module_re_exports_the_conv_layers():
    from npvae import conv

    for name in ("Conv2d", "ConvTranspose2d", "Flatten", "Unflatten"):
        assert getattr(L, name) is getattr(conv, name) and name in L.__all__
