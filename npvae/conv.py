r"""Convolutions with hand-written backward passes: Conv2d, ConvTranspose2d, Flatten, Unflatten.

Conventions are PyTorch's, so a learner can hold the two side by side:

* images are ``(batch, channels, height, width)`` ("NCHW");
* :class:`Conv2d` is a cross-correlation, as ``torch.nn.functional.conv2d``: its kernel
  ``W`` has shape ``(out_channels, in_channels, kH, kW)`` and

  .. math:: y[n, o, a, b] = b_o + \sum_{c, i, j} W[o, c, i, j]\; x_p[n, c, s a + i, s b + j],

  where :math:`x_p` is x with ``padding`` zeros on every side; output size
  :math:`\lfloor (H + 2p - k)/s \rfloor + 1` (Dumoulin & Visin 2016, "A guide to
  convolution arithmetic for deep learning", relationship 6);
* :class:`ConvTranspose2d` is the adjoint (the transpose) of that map with respect to x,
  as ``torch.nn.functional.conv_transpose2d``: its kernel has shape
  ``(in_channels, out_channels, kH, kW)`` and its output size is
  :math:`(H - 1)s - 2p + k + \mathrm{output\_padding}` (Dumoulin & Visin, relationship 14).

**im2col.** Both are computed with one matrix product. The *columns* of a padded image
``xp`` are its receptive fields laid out one per row: row ``(n, a, b)`` of ``cols`` holds
the ``C * kH * kW`` numbers ``xp[n, c, s*a + i, s*b + j]`` that output pixel ``(a, b)``
reads, in ``(c, i, j)`` order -- the order of ``W.reshape(out_channels, -1)``'s columns.
For a 4x4 image, a 3x3 kernel, stride 1, no padding (the numbers are pixel indices)::

    x (1 channel)      cols (one row per output pixel (a, b), one column per tap (i, j))
     0  1  2  3        (0,0):  0  1  2   4  5  6   8  9 10
     4  5  6  7        (0,1):  1  2  3   5  6  7   9 10 11
     8  9 10 11        (1,0):  4  5  6   8  9 10  12 13 14
    12 13 14 15        (1,1):  5  6  7   9 10 11  13 14 15

so ``y = cols @ W.reshape(out_channels, -1).T + b``. :func:`im2col` builds ``cols``
from a read-only window view (``numpy.lib.stride_tricks.sliding_window_view``: no copy
until the final reshape) and :func:`col2im` is its adjoint: it adds every row of a
``cols``-shaped array back onto the pixels that row was read from, one kernel tap (i, j)
at a time, a strided slice of the whole batch per tap. ``docs/derivation.md``, section
"Convolutions", derives the gradients and draws the index arithmetic.

Every layer keeps the dtype (float32 in, float32 out) and rejects an input of another
dtype than its parameters (TypeError), a wrong rank or channel count, or an image smaller
than the kernel after padding (ValueError, naming ``x``, the expected and the received
sizes). ``tests/test_conv.py`` checks every gradient by float64 central differences, the
forward against a six-loop reference and ``scipy.signal.correlate``, and the adjoint
identity :math:`\langle \mathrm{Conv2d}(x), y\rangle = \langle x, \mathrm{ConvTranspose2d}(y)\rangle`.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._checks import check_array, check_dtype, check_int, check_rng
from .layers import Layer

__all__ = ["Conv2d", "ConvTranspose2d", "Flatten", "Unflatten", "im2col", "col2im", "col2im_tap_major",
           "conv_output_size", "conv_transpose_output_size", "FAST_COL2IM"]

#: FAST: let the matmul before each col2im write its columns tap-major, (kH, kW, C, B, Ho, Wo),
#: and add them with :func:`col2im_tap_major`, whose per-tap slice is then contiguous, instead
#: of :func:`col2im` on row-per-pixel columns, whose per-tap slice is a strided gather (every
#: (kH kW)-th number). The same products, added to each pixel in the same tap order (the
#: matmul may round differently: tests/test_fast_paths.py checks the two agree); measured in
#: benchmarks/README.md, "Convolutions". False runs the textbook form written beside it.
FAST_COL2IM = True


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``, as a pair (height, width); TypeError/ValueError naming ``name``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"{name}: expected an integer or a pair of integers (height, width), got {value!r}")
    return (check_int(value[0], f"{name}[0]", minimum=minimum), check_int(value[1], f"{name}[1]", minimum=minimum))


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``floor((size + 2 padding - kernel) / stride) + 1``: Conv2d's output height (or width)."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int, output_padding: int = 0) -> int:
    """``(size - 1) stride - 2 padding + kernel + output_padding``: ConvTranspose2d's output height (or width)."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def _pytorch_init(shape, fan_in: int, rng: np.random.Generator, dtype) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Conv2d's default for W and b (kaiming_uniform, a = sqrt(5))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    r"""The receptive fields of a padded batch, one per row: (B, C, Hp, Wp) -> (B Ho Wo, C kH kW).

    Row ``(n, a, b)`` (flattened in that order) holds ``xp[n, c, sH a + i, sW b + j]`` for
    ``(c, i, j)`` in C-order, for the ``out_size = (Ho, Wo)`` output pixels. The windows
    are a strided view of ``xp`` (``sliding_window_view``, then every ``stride``-th
    window); the reshape is the one copy. Dtype kept.
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
    B, C = xp.shape[:2]
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo]  # (B, C, Ho, Wo, kH, kW)
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(B * ho * wo, C * kh * kw)


def col2im(cols: np.ndarray, padded_shape: tuple, kernel: tuple[int, int], stride: tuple[int, int],
           out_size: tuple[int, int]) -> np.ndarray:
    r"""The adjoint of :func:`im2col`: add each row of ``cols`` (B Ho Wo, C kH kW) back onto the pixels it reads.

    Returns an array of ``padded_shape`` (B, C, Hp, Wp) in cols' dtype with
    ``xp[n, c, sH a + i, sW b + j] += cols[(n, a, b), (c, i, j)]`` for every row and column:
    a pixel read by several windows (overlapping kernels) receives the sum of their
    entries. One strided slice of the whole batch per kernel tap (i, j): kH kW additions.
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
    B, C = padded_shape[:2]
    c6 = cols.reshape(B, ho, wo, C, kh, kw)
    xp = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # tap (i, j) of output pixel (a, b) read xp[:, :, sH a + i, sW b + j]
            xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += c6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp


def col2im_tap_major(cols_t: np.ndarray, padded_shape: tuple, kernel: tuple[int, int], stride: tuple[int, int],
                     out_size: tuple[int, int]) -> np.ndarray:
    r""":func:`col2im` for columns laid out tap-major: ``cols_t`` (kH kW C, B Ho Wo) is ``cols.T`` with its rows in (i, j, c) order.

    ``xp[n, c, sH a + i, sW b + j] += cols_t[(i, j, c), (n, a, b)]``; returns a (B, C, Hp, Wp)
    view (of a (C, B, Hp, Wp) array) in cols_t's dtype. Each tap's slice ``t[i, j]`` is a
    contiguous (C, B, Ho, Wo) block. The fast form of :data:`FAST_COL2IM`.
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
    B, C = padded_shape[:2]
    t = cols_t.reshape(kh, kw, C, B, ho, wo)
    xp = np.zeros((C, B, *padded_shape[2:]), dtype=cols_t.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += t[i, j]
    return xp.transpose(1, 0, 2, 3)


def _taps(W: np.ndarray) -> np.ndarray:
    """A kernel (A, C, kH, kW) as the (kH kW C, A) matrix whose rows are in tap-major (i, j, c) order."""
    return W.transpose(2, 3, 1, 0).reshape(-1, W.shape[0])


def _pad(x: np.ndarray, padding: tuple[int, int], shape: tuple[int, int] | None = None) -> np.ndarray:
    """x (B, C, H, W) inside a zero canvas: ``padding`` rows/columns before, enough after to reach ``shape``."""
    (ph, pw), (B, C, H, W) = padding, x.shape
    hp, wp = shape if shape is not None else (H + 2 * ph, W + 2 * pw)
    xp = np.zeros((B, C, hp, wp), dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp


class Conv2d(Layer):
    r"""2-D cross-correlation over a batch of images, as ``torch.nn.Conv2d`` (no dilation, no groups).

    Parameters
    ----------
    in_channels, out_channels : int >= 1
    kernel_size : int >= 1 or pair (kH, kW)
    stride : int >= 1 or pair, default 1
    padding : int >= 0 or pair, default 0 (zeros on both sides)
    rng : np.random.Generator
        Draws ``W`` and ``b`` from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels kH kW
        (PyTorch's default initialization).
    dtype : float32 or float64

    Shapes: ``x`` (B, in_channels, H, W) -> ``y`` (B, out_channels, Ho, Wo) with
    Ho = floor((H + 2 pH - kH) / sH) + 1 (same for Wo); ``W`` (out_channels, in_channels,
    kH, kW); ``b`` (out_channels,). Forward: ``cols = im2col(pad(x))``, ``y = cols @ W_mat.T + b``
    with ``W_mat = W.reshape(out_channels, -1)`` (one matmul).

    Raises TypeError (rng, dtype, non-integer sizes) or ValueError (sizes < 1, padding < 0)
    when built; ``forward`` raises TypeError for an input of another dtype and ValueError
    for a wrong rank or channel count or a padded image smaller than the kernel.
    Source: Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep learning";
    ``torch.nn.functional.conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, *,
                 rng: np.random.Generator, dtype=np.float32) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dtype = check_dtype(dtype)
        check_rng(rng)
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self.params = {"W": _pytorch_init((self.out_channels, self.in_channels, kh, kw), fan_in, rng, self.dtype),
                       "b": _pytorch_init((self.out_channels,), fan_in, rng, self.dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache = None

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(out_channels, Ho, Wo) for an input image of ``height`` x ``width``."""
        return (self.out_channels,
                conv_output_size(height, self.kernel_size[0], self.stride[0], self.padding[0]),
                conv_output_size(width, self.kernel_size[1], self.stride[1], self.padding[1]))

    def _forward(self, x):
        if not (x.dtype == self.dtype and x.ndim == 4 and x.shape[1] == self.in_channels):
            check_array(x, "x", shape=(None, self.in_channels, None, None), dtype=self.dtype)  # raises
        B, C, H, W = x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if H + 2 * ph < kh or W + 2 * pw < kw:
            raise ValueError(f"x: expected an image at least as large as the kernel {kh}x{kw} after padding "
                             f"{ph}x{pw}, got {H}x{W} (padded {H + 2 * ph}x{W + 2 * pw})")
        O, ho, wo = self.output_shape(H, W)
        # 1. receptive fields, one row per output pixel (n, a, b)                      (B Ho Wo, C kH kW)
        cols = im2col(_pad(x, self.padding), self.kernel_size, self.stride, (ho, wo))
        # 2. one matmul with the kernel as a matrix, plus the bias                      (B Ho Wo, O)
        y = cols @ self.params["W"].reshape(O, -1).T
        y += self.params["b"]
        self._cache = (x.shape, cols)
        # 3. rows (n, a, b) back to images (B, O, Ho, Wo): a transposed view, no copy
        return y.reshape(B, ho, wo, O).transpose(0, 3, 1, 2)

    def _backward(self, dy):
        # local derivatives of y = cols W_mat^T + b:
        #   dL/dW_mat = dY^T cols ;  dL/db = sum over (n, a, b) of dY ;  dL/dcols = dY W_mat ;  dL/dx = col2im(dL/dcols)
        (B, C, H, W), cols = self._cache
        O = self.out_channels
        (ph, pw), (_, ho, wo) = self.padding, self.output_shape(H, W)
        dY = dy.transpose(0, 2, 3, 1).reshape(B * ho * wo, O)                           # (B Ho Wo, O)
        np.matmul(dY.T, cols, out=self.grads["W"].reshape(O, -1))                        # (O, C kH kW)
        np.sum(dY, axis=0, out=self.grads["b"])
        if FAST_COL2IM:  # FAST: the same columns, written tap-major by the matmul (see FAST_COL2IM)
            dcols_t = _taps(self.params["W"]) @ dy.transpose(1, 0, 2, 3).reshape(O, -1)    # (kH kW C, B Ho Wo)
            dxp = col2im_tap_major(dcols_t, (B, C, H + 2 * ph, W + 2 * pw), self.kernel_size, self.stride, (ho, wo))
        else:
            dcols = dY @ self.params["W"].reshape(O, -1)                                  # (B Ho Wo, C kH kW)
            dxp = col2im(dcols, (B, C, H + 2 * ph, W + 2 * pw), self.kernel_size, self.stride, (ho, wo))
        return dxp[:, :, ph:ph + H, pw:pw + W]                                             # the padding's share dropped

    def __repr__(self) -> str:
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dtype={self.dtype})")


class ConvTranspose2d(Layer):
    r"""The transpose of :class:`Conv2d` with respect to its input, as ``torch.nn.ConvTranspose2d`` (no dilation, no groups).

    Parameters
    ----------
    in_channels, out_channels : int >= 1
    kernel_size : int >= 1 or pair (kH, kW)
    stride : int >= 1 or pair, default 1
    padding : int >= 0 or pair, default 0: rows/columns cropped from each side of the output
    output_padding : int >= 0 or pair, default 0, each < its stride: extra rows/columns at
        the bottom/right (it picks one of the ``stride`` input sizes a Conv2d maps to the same size)
    rng : np.random.Generator
        Draws ``W`` and ``b`` from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in =
        out_channels kH kW (PyTorch's default for this layer).
    dtype : float32 or float64

    Shapes: ``x`` (B, in_channels, H, W) -> ``y`` (B, out_channels, Ho, Wo) with
    Ho = (H - 1) sH - 2 pH + kH + output_padding_H; ``W`` (in_channels, out_channels, kH, kW),
    ``b`` (out_channels,). Forward: each input pixel's ``x[n, :, a, b] @ W_mat`` (one matmul
    for all of them, ``W_mat = W.reshape(in_channels, -1)``) is a (out_channels, kH, kW)
    patch, added at (sH a - pH, sW b - pW) into the output by :func:`col2im`: exactly
    Conv2d's input gradient, so ``<Conv2d(x), y> = <x, ConvTranspose2d(y)>`` for a shared
    ``W`` and zero biases.

    Raises as :class:`Conv2d`, plus ValueError for an ``output_padding`` not below its
    stride and, in ``forward``, for an input whose output would be empty.
    Source: Dumoulin & Visin 2016, section 4; ``torch.nn.functional.conv_transpose2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0, *,
                 rng: np.random.Generator, dtype=np.float32) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.output_padding = _pair(output_padding, "output_padding", 0)
        for d in (0, 1):
            if self.output_padding[d] >= self.stride[d]:
                raise ValueError(f"output_padding: expected each entry below its stride {self.stride}, "
                                 f"got {self.output_padding}")
        self.dtype = check_dtype(dtype)
        check_rng(rng)
        kh, kw = self.kernel_size
        fan_in = self.out_channels * kh * kw
        self.params = {"W": _pytorch_init((self.in_channels, self.out_channels, kh, kw), fan_in, rng, self.dtype),
                       "b": _pytorch_init((self.out_channels,), fan_in, rng, self.dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache = None

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(out_channels, Ho, Wo) for an input of ``height`` x ``width``."""
        return (self.out_channels,
                *(conv_transpose_output_size(s, self.kernel_size[d], self.stride[d], self.padding[d],
                                             self.output_padding[d]) for d, s in enumerate((height, width))))

    def _canvas(self, H: int, W: int) -> tuple[int, int]:
        """Height and width of the uncropped output: every patch fits, and so does the padded output."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _, ho, wo = self.output_shape(H, W)
        return max((H - 1) * sh + kh, ph + ho), max((W - 1) * sw + kw, pw + wo)

    def _forward(self, x):
        if not (x.dtype == self.dtype and x.ndim == 4 and x.shape[1] == self.in_channels):
            check_array(x, "x", shape=(None, self.in_channels, None, None), dtype=self.dtype)  # raises
        B, C, H, W = x.shape
        O, ho, wo = self.output_shape(H, W)
        if ho < 1 or wo < 1:
            raise ValueError(f"x: expected an image whose output (H - 1) stride - 2 padding + kernel + output_padding "
                             f"is at least 1x1, got {H}x{W}, whose output would be {ho}x{wo}")
        ph, pw = self.padding
        canvas_shape = (B, O, *self._canvas(H, W))
        if FAST_COL2IM:  # FAST: the same patches, written tap-major by the matmul (see FAST_COL2IM)
            XT = x.transpose(1, 0, 2, 3).reshape(C, B * H * W)                           # (C_in, B H W)
            X = XT.T
            canvas = col2im_tap_major(_taps(self.params["W"]) @ XT, canvas_shape,
                                      self.kernel_size, self.stride, (H, W))
        else:
            # 1. one row per input pixel (n, a, b)                                        (B H W, C_in)
            X = x.transpose(0, 2, 3, 1).reshape(B * H * W, C)
            # 2. each row times the kernel: the (C_out, kH, kW) patch that pixel paints     (B H W, C_out kH kW)
            cols = X @ self.params["W"].reshape(C, -1)
            # 3. add the patches into the canvas at (s a, s b)                             (B, C_out, Hc, Wc)
            canvas = col2im(cols, canvas_shape, self.kernel_size, self.stride, (H, W))
        # 4. crop the padding, add the bias                                                (B, C_out, Ho, Wo)
        y = canvas[:, :, ph:ph + ho, pw:pw + wo]
        y += self.params["b"][:, None, None]
        self._cache = (x.shape, X)
        return y

    def _backward(self, dy):
        # local derivatives of canvas = col2im(X W_mat): its adjoint is im2col, so
        #   dL/dcols = im2col(pad(dy)) ;  dL/dW_mat = X^T dL/dcols ;  dL/dX = dL/dcols W_mat^T ;  dL/db = sum of dy
        (B, C, H, W), X = self._cache
        ph, pw = self.padding
        dcols = im2col(_pad(dy, self.padding, self._canvas(H, W)), self.kernel_size, self.stride, (H, W))
        np.matmul(X.T, dcols, out=self.grads["W"].reshape(C, -1))                        # (C_in, C_out kH kW)
        np.sum(dy, axis=(0, 2, 3), out=self.grads["b"])
        dX = dcols @ self.params["W"].reshape(C, -1).T                                    # (B H W, C_in)
        return dX.reshape(B, H, W, C).transpose(0, 3, 1, 2)

    def __repr__(self) -> str:
        return (f"ConvTranspose2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, output_padding={self.output_padding}, "
                f"dtype={self.dtype})")


class Flatten(Layer):
    """(B, d1, d2, ...) -> (B, d1 d2 ...): images to row vectors, so a Linear layer can follow a convolution.

    No parameters; dtype kept; the output is a reshape (a view when x is contiguous).
    Backward: dL/dx = dy reshaped to x's shape (the local derivative is the identity).
    ``forward`` raises ValueError for an x of rank < 2.
    """

    def _forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"x: expected an array of rank >= 2 (batch, ...), got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dy):
        # dy/dx = identity, up to the shape
        return dy.reshape(self._shape)


class Unflatten(Layer):
    """(B, prod(shape)) -> (B, *shape): row vectors to images, e.g. ``Unflatten((64, 7, 7))`` after a Linear layer.

    No parameters; dtype kept. Backward: dL/dx = dy reshaped to (B, prod(shape)) (the
    identity). Raises ValueError for a bad ``shape`` when built, and in ``forward`` for an x
    that is not (batch, prod(shape)).
    """

    def __init__(self, shape) -> None:
        super().__init__()
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if not shape:
            raise ValueError("shape: expected at least one size, got ()")
        self.shape = tuple(check_int(s, f"shape[{i}]", minimum=1) for i, s in enumerate(shape))
        self.size = int(np.prod(self.shape))

    def _forward(self, x):
        if not (x.ndim == 2 and x.shape[1] == self.size):
            check_array(x, "x", shape=(None, self.size))  # raises, naming the expected (batch, prod(shape))
        return x.reshape(x.shape[0], *self.shape)

    def _backward(self, dy):
        # dy/dx = identity, up to the shape
        return dy.reshape(dy.shape[0], self.size)

    def __repr__(self) -> str:
        return f"Unflatten({self.shape})"
