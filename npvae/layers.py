r"""Layers with hand-written forward and backward passes.

The contract (after the cs231n layers):

* ``forward(x) -> y`` computes the output for a whole batch and keeps in a cache what
  ``backward`` will need.
* ``backward(dy) -> dx`` takes :math:`\partial L / \partial y` (same shape as the last
  output), returns :math:`\partial L / \partial x`, and **overwrites** ``grads`` with
  :math:`\partial L / \partial \theta` for the last forward. It never accumulates: call
  forward, then backward, then read ``grads``.
* ``params`` and ``grads`` are ``dict[str, np.ndarray]`` with identical keys and shapes.
  The arrays are *live*: an optimizer updates ``params`` in place and ``backward`` writes
  into the same ``grads`` arrays every time, so references stay valid.

Arrays are batches of row vectors: ``x`` has shape ``(batch, features)``. Every pass is
vectorised over the batch (no Python loop over examples) and preserves the dtype:
float32 in, float32 out; float64 in, float64 out. A :class:`Linear` layer owns
parameters of a fixed dtype and rejects inputs of another dtype instead of silently
upcasting.

Next to each ``backward`` is the local derivative it implements, written as a one-line
formula, so it can be checked against the forward by eye; ``tests/test_layers.py``
checks each one by central finite differences in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from . import init as _init
from ._checks import check_array, check_bool, check_choice, check_dtype, check_float, check_int, check_rng
from .distributions import softplus

__all__ = [
    "Layer",
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "ELU",
    "Identity",
    "Sequential",
    "MLP",
    "ACTIVATIONS",
    "get_activation",
    "Conv2d",
    "ConvTranspose2d",
    "Flatten",
    "Unflatten",
]


class Layer:
    """Base class: a differentiable map ``y = f(x; params)`` over a batch.

    Attributes
    ----------
    params : dict[str, np.ndarray]
        The trainable arrays (live; updated in place by optimizers).
    grads : dict[str, np.ndarray]
        Same keys and shapes as ``params``; overwritten by each ``backward``.

    Subclasses implement the math, ``_forward(x)`` and ``_backward(dy)``; ``forward`` and
    ``backward`` here check the arguments around them: a non-float input raises TypeError,
    a backward before any forward RuntimeError, a ``dy`` of another dtype TypeError and of
    another shape than the last output ValueError. The checks are one inline test each;
    the message is built (by :func:`npvae._checks.check_array`) only when one fails.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._out_shape: tuple | None = None
        self._out_dtype = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute ``y = f(x)`` for a batch and cache what backward needs.

        Raises TypeError for a non-float array and ValueError for a wrong shape.
        """
        if not (isinstance(x, np.ndarray) and x.dtype.kind == "f"):
            check_array(x, "x")  # raises, naming what was expected and what came
        y = self._forward(x)
        self._out_shape, self._out_dtype = y.shape, y.dtype
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Given ``dy = dL/dy`` for the last forward, return ``dx = dL/dx``; overwrite ``grads``.

        Raises RuntimeError if called before forward, TypeError for a ``dy`` whose dtype
        is not the last output's, and ValueError if ``dy.shape`` differs from its shape.
        """
        if self._out_shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: call forward(x) first")
        if not (isinstance(dy, np.ndarray) and dy.dtype == self._out_dtype and dy.shape == self._out_shape):
            check_array(dy, "dy", dtype=self._out_dtype)  # no silent upcast of dx or the grads
            raise ValueError(f"dy: expected shape {self._out_shape} (the last output's), got shape {dy.shape}")
        return self._backward(dy)

    def _forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Layer):
    r"""Affine map ``y = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output (both >= 1).
    rng : np.random.Generator
        Source of randomness for the weight initializer.
    dtype : float32 or float64
        The dtype of ``W``, ``b``, their gradients, and of the inputs it accepts.
    init : str
        Name of a weight initializer in :mod:`npvae.init`; ``b`` starts at zero.

    Shapes: ``x`` (batch, in_features) -> ``y`` (batch, out_features);
    ``W`` (in_features, out_features); ``b`` (out_features,).

    Setting ``skip_input_grad = True`` makes ``backward`` return ``None`` instead of
    ``dx``: the first layer of a network never needs ``dL/dx`` (x is data), and the
    ``dy @ W.T`` product it would cost is as large as the forward matmul.

    Raises TypeError for a non-Generator rng or a non-float dtype, ValueError for sizes
    < 1 or an unknown ``init``; ``forward`` raises ValueError for a wrong rank or feature
    size and TypeError for an input of another dtype.
    """

    def __init__(self, in_features: int, out_features: int, *, rng: np.random.Generator,
                 dtype=np.float32, init: str = "glorot_uniform") -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        self.out_features = check_int(out_features, "out_features", minimum=1)
        self.dtype = check_dtype(dtype)
        check_rng(rng)
        W = _init.get(init)((self.in_features, self.out_features), rng=rng, dtype=self.dtype)
        self.params = {"W": W, "b": np.zeros(self.out_features, dtype=self.dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.skip_input_grad = False
        self._x = None

    def _forward(self, x):
        if not (x.dtype == self.dtype and x.ndim == 2 and x.shape[1] == self.in_features):
            check_array(x, "x", shape=(None, self.in_features), dtype=self.dtype)  # raises, naming the difference
        self._x = x
        y = x @ self.params["W"]
        y += self.params["b"]  # in place: saves one (batch, out) temporary
        return y

    def _backward(self, dy):
        # local derivatives: dy/dW = x^T (.)   dy/db = sum over batch   dy/dx = (.) W^T
        # dL/dW = x^T dy ; dL/db = sum_n dy_n ; dL/dx = dy W^T
        x, W = self._x, self.params["W"]
        np.matmul(x.T, dy, out=self.grads["W"])  # written into the live grads array: no allocation
        np.sum(dy, axis=0, out=self.grads["b"])
        if self.skip_input_grad:
            # FAST: the first layer of an encoder sees data, and nobody needs dL/dx of data.
            # Skipping the product below saves a matmul as large as the forward's (measured
            # in benchmarks/README.md, "Speed tricks"); the textbook line is the return below.
            return None
        return dy @ W.T

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}, dtype={self.dtype})"


class _Elementwise(Layer):
    """An activation applied elementwise: no parameters, any shape, x's dtype kept.

    Each subclass writes its forward and, right below it, the local derivative its
    backward multiplies ``dy`` by.
    """


class ReLU(_Elementwise):
    """``y = max(x, 0)``. Any shape; dtype preserved. The derivative at 0 is taken as 0."""

    def _forward(self, x):
        self._x = x
        return np.maximum(x, 0)

    def _backward(self, dy):
        # dy/dx = 1[x > 0]
        return dy * (self._x > 0)


class LeakyReLU(_Elementwise):
    """``y = x`` for x > 0, ``negative_slope * x`` otherwise. ``negative_slope`` must be finite."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_float(negative_slope, "negative_slope")

    def _forward(self, x):
        self._x = x
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def _backward(self, dy):
        # dy/dx = 1 if x > 0 else negative_slope
        return dy * np.where(self._x > 0, 1, self._x.dtype.type(self.negative_slope))

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class Tanh(_Elementwise):
    """``y = tanh(x)``. Any shape; dtype preserved."""

    def _forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def _backward(self, dy):
        # dy/dx = 1 - tanh(x)^2 = 1 - y^2
        return dy * (1 - self._y * self._y)


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``, via ``scipy.special.expit`` (no overflow). Dtype preserved."""

    def _forward(self, x):
        self._y = expit(x)
        return self._y

    def _backward(self, dy):
        # dy/dx = sigmoid(x) (1 - sigmoid(x)) = y (1 - y)
        return dy * (self._y * (1 - self._y))


class Softplus(_Elementwise):
    """``y = log(1 + exp(x))`` (:func:`npvae.distributions.softplus`, never overflows). Any shape; dtype preserved."""

    def _forward(self, x):
        self._y = softplus(x)
        return self._y

    def _backward(self, dy):
        # dy/dx = sigmoid(x) = 1 - e^{-y} = -expm1(-y), since e^{-softplus(x)} = 1 / (1 + e^x);
        # expm1 keeps relative accuracy for small y (x << 0), and is exactly -1 once e^{-y} underflows
        return dy * -np.expm1(-self._y)


class ELU(_Elementwise):
    """``y = x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise (Clevert et al. 2016)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_float(alpha, "alpha")

    def _forward(self, x):
        self._x = x
        a = x.dtype.type(self.alpha)
        # expm1 of min(x, 0): exact near 0 and never overflows on the branch np.where discards
        self._y = np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))
        return self._y

    def _backward(self, dy):
        # dy/dx = 1 if x > 0 else alpha * exp(x) = y + alpha
        a = self._x.dtype.type(self.alpha)
        return dy * np.where(self._x > 0, 1, self._y + a)

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"


class Identity(_Elementwise):
    """``y = x`` (a placeholder activation)."""

    def _forward(self, x):
        return x

    def _backward(self, dy):
        # dy/dx = 1
        return dy


ACTIVATIONS = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
    "elu": ELU,
    "identity": Identity,
}


def get_activation(name: str) -> Layer:
    """Return a new activation layer by name (one of ``ACTIVATIONS``); ValueError otherwise."""
    return ACTIVATIONS[check_choice(name, "activation", tuple(ACTIVATIONS))]()


class Sequential(Layer):
    """Compose layers: ``y = f_n(... f_2(f_1(x)))``.

    ``backward`` applies the chain rule in reverse order,
    ``dL/dx = J_1^T (J_2^T ( ... J_n^T dy))``, each layer filling its own grads.
    ``params``/``grads`` are flat dicts keyed ``"<index>.<name>"`` ("0.W", "2.b"),
    holding the layers' live arrays.
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}]: expected a npvae Layer, got {type(layer).__name__}")
        self.layers = list(layers)
        self.params = {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}
        self.grads = {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    def _forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def _backward(self, dy):
        # chain rule, last layer first: dL/dh_{i-1} = J_i^T dL/dh_i
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}(\n  {inner}\n)"


class MLP(Sequential):
    """A multilayer perceptron: Linear layers with an activation between consecutive ones.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths including input and output, e.g. ``(784, 400, 20)`` (length >= 2).
    activation : str
        Hidden activation, a key of ``ACTIVATIONS`` (default ``"relu"``).
    rng : np.random.Generator
        Used by every Linear layer's initializer.
    dtype : float32 or float64
    init : str
        Weight initializer name for every Linear layer.
    output_activation : str, optional
        Activation after the last Linear layer (none by default).
    skip_input_grad : bool
        The network's input is data (an encoder's x): its first Linear layer then returns
        ``None`` instead of ``dL/dx``, which saves a matmul as large as its forward.

    With ``sizes=(784, 400, 20)`` the layers are Linear(784,400), ReLU, Linear(400,20),
    so the parameter names are "0.W", "0.b", "2.W", "2.b".
    """

    def __init__(self, sizes, activation: str = "relu", *, rng: np.random.Generator, dtype=np.float32,
                 init: str = "glorot_uniform", output_activation: str | None = None,
                 skip_input_grad: bool = False) -> None:
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes: expected at least 2 layer sizes (input and output), got {sizes}")
        sizes = tuple(check_int(s, f"sizes[{i}]", minimum=1) for i, s in enumerate(sizes))
        check_choice(activation, "activation", tuple(ACTIVATIONS))
        if output_activation is not None:  # else get_activation's error would name "activation"
            check_choice(output_activation, "output_activation", tuple(ACTIVATIONS))
        layers: list[Layer] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(n_in, n_out, rng=rng, dtype=dtype, init=init))
            if i < len(sizes) - 2:
                layers.append(get_activation(activation))
        if output_activation is not None:
            layers.append(get_activation(output_activation))
        layers[0].skip_input_grad = check_bool(skip_input_grad, "skip_input_grad")
        super().__init__(*layers)
        self.sizes = sizes
        self.dtype = check_dtype(dtype)


# The convolutional layers live in their own file (npvae/conv.py: im2col, col2im, Conv2d,
# ConvTranspose2d, Flatten, Unflatten) and are re-exported here, after Layer is defined.
from .conv import Conv2d, ConvTranspose2d, Flatten, Unflatten  # noqa: E402
