"""2-D convolution on NHWC images, as one matrix product per output row.

The primitives have a rank-2 ``matmul`` and keep the batch axis ``n`` a dimension of its
own, so the usual im2col-then-GEMM (one ``(n·Ho·Wo, kh·kw·Cin)`` matrix) cannot be written.
What can: output row ``i`` depends only on the ``kh`` padded input rows starting at
``i·stride``, and it is the same linear map of those rows for every ``i``. That map is a
banded matrix ``R`` of shape ``(kh·Wp·Cin, Wo·Cout)`` whose entries are kernel entries or
zeros; it is gathered from the kernel once per graph (``gather`` with a constant index
table), and each output row is ``rows_i · R``. The gradient of the kernel is the sum of
``rows_iᵀ·δ_i`` scattered back into the kernel's entries by the gradient of ``gather``.
docs/layers.md compares this with the other formulations that fit the primitives.
"""

from __future__ import annotations

import numpy as np

from .. import functions as F
from ..errors import GraphError
from ..graph import Tensor, const
from ..init import INITIALIZERS
from ..shapes import format_shape
from .activation import activation_label, describe_activation, resolve_activation
from .module import Module, derive_seed, positive_ints
from .windows import output_size, pad2d, pair, resolve_padding


def conv2d(x: Tensor, kernel: Tensor, stride=1, padding=0) -> Tensor:
    """Cross-correlation of ``x`` (n, H, W, Cin) with ``kernel`` (kh, kw, Cin, Cout), as in
    every deep-learning library (the kernel is not flipped).

    ``padding`` is an int, a pair ``(ph, pw)`` of zeros added on both sides, ``"valid"``
    (none), ``"same"`` (``ceil(H/stride)`` outputs, an odd extra row or column at the
    bottom or right) or ``((top, bottom), (left, right))``.

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 3, 3, 1))
    >>> k = sb.const(np.ones((2, 2, 1, 1)))
    >>> sb.evaluate(sb.nn.conv2d(x, k), {x: np.arange(9.0).reshape(1, 3, 3, 1)})[0, :, :, 0].tolist()
    [[8.0, 12.0], [20.0, 24.0]]
    """
    if kernel.ndim != 4:
        raise GraphError(f"conv2d: kernel {kernel.label} {format_shape(kernel.shape)} must be (kh, kw, Cin, Cout)")
    kh, kw, cin, cout = kernel.shape
    stride = pair(stride, "stride", "conv2d")
    if x.ndim != 4 or x.shape[3] != cin:
        raise GraphError(
            f"conv2d: input {x.label} {format_shape(x.shape)} does not fit the kernel {kernel.label} "
            f"{format_shape(kernel.shape)}: expected (n, H, W, {cin})"
        )
    padded = pad2d(x, resolve_padding(padding, x.shape[1:3], (kh, kw), stride, "conv2d"))
    _, height, width, _ = padded.shape
    out_h, out_w = output_size(height, kh, stride[0]), output_size(width, kw, stride[1])
    if out_h < 1 or out_w < 1:
        raise GraphError(f"conv2d: the padded input {x.label} is {height}x{width}, smaller than the kernel {kh}x{kw}")
    weights = kernel if kernel.dtype == x.dtype else F.cast(kernel, x.dtype)
    band = banded_kernel(weights, width, out_w, stride[1])
    rows = []
    for i in range(out_h):
        window = padded[:, i * stride[0] : i * stride[0] + kh, :, :]
        rows.append(F.reshape(F.reshape(window, (None, kh * width * cin)) @ band, (None, 1, out_w, cout)))
    return F.concat(rows, axis=1)


def banded_kernel(kernel: Tensor, width: int, out_w: int, stride: int) -> Tensor:
    """The ``(kh·width·Cin, out_w·Cout)`` matrix that maps ``kh`` image rows to one output row.

    Entry ``[(di, c, ci), (j, co)]`` is ``kernel[di, c − j·stride, ci, co]`` where that
    column offset lies in the kernel, else 0 (a final zero appended to the kernel's entries).

    >>> import numpy as np, symbackprop as sb
    >>> kernel = sb.const(np.array([1.0, 2.0]).reshape(1, 2, 1, 1))
    >>> sb.evaluate(banded_kernel(kernel, width=3, out_w=2, stride=1)).tolist()
    [[1.0, 0.0], [2.0, 1.0], [0.0, 2.0]]
    """
    kh, kw, cin, cout = kernel.shape
    size = kh * kw * cin * cout
    di, c, ci, j, co = np.ix_(np.arange(kh), np.arange(width), np.arange(cin), np.arange(out_w), np.arange(cout))
    dj = c - j * stride
    index = np.where((dj >= 0) & (dj < kw), ((di * kw + dj) * cin + ci) * cout + co, size)
    entries = F.concat([F.reshape(kernel, (size,)), const(np.zeros(1), kernel.dtype)], axis=0)
    return F.gather(entries, const(index.reshape(kh * width * cin, out_w * cout).astype(np.int64)))


class Conv2D(Module):
    """A 2-D convolution layer on NHWC images ``(n, H, W, in_channels)``.

    The kernel ``K`` has shape ``(kh, kw, in_channels, out_channels)``; named initialisers
    (He normal by default) use the fan-in ``kh·kw·in_channels`` and fan-out
    ``kh·kw·out_channels``. ``stride`` and ``kernel_size`` are ints or pairs; ``padding``
    is an int, a pair, ``"valid"`` or ``"same"``. ``activation`` as for :class:`Dense`.

    >>> import symbackprop as sb
    >>> conv = sb.nn.Conv2D(1, 16, 3, padding="same", seed=0)
    >>> conv
    Conv2D(1 -> 16, kernel_size=(3, 3), padding='same')
    >>> conv(sb.input("images", (None, 8, 8, 1))).shape
    (None, 8, 8, 16)
    >>> conv(sb.input("images", (None, 8, 8, 3)))
    Traceback (most recent call last):
      ...
    symbackprop.errors.GraphError: Conv2D(1 -> 16, kernel_size=(3, 3), padding='same'): input images (n, 8, 8, 3) has 3 channels, expected 1
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        activation=None,
        use_bias: bool = True,
        init="he_normal",
        bias_init="zeros",
        seed: int | None = None,
        name: str | None = None,
        dtype: str = "float32",
    ):
        self.in_channels, self.out_channels = positive_ints(self, in_channels=in_channels, out_channels=out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.stride = pair(stride, "stride", "Conv2D")
        positive_ints(self, kernel_height=self.kernel_size[0], kernel_width=self.kernel_size[1])
        positive_ints(self, stride_height=self.stride[0], stride_width=self.stride[1])
        resolve_padding(padding, (1, 1), self.kernel_size, self.stride, "Conv2D")  # checks the argument
        self.padding = padding
        self.name = name
        self.activation = resolve_activation(activation, f"Conv2D({in_channels} -> {out_channels})")
        shape = (*self.kernel_size, in_channels, out_channels)
        self.K = self.add_param("K", shape, init=_kernel_init(init), seed=derive_seed(seed, 0), dtype=dtype)
        self.b = (
            self.add_param("b", (out_channels,), init=bias_init, seed=derive_seed(seed, 1), dtype=dtype)
            if use_bias
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, 4, "(batch, height, width, channels)", self.in_channels, self.K.dtype, "channels")
        padding = resolve_padding(self.padding, x.shape[1:3], self.kernel_size, self.stride, "Conv2D")
        padded = [size + sum(pad) for size, pad in zip(x.shape[1:3], padding)]
        if any(output_size(n, k, s) < 1 for n, k, s in zip(padded, self.kernel_size, self.stride)):
            raise GraphError(
                f"{self.summary()}: input {x.label} is {x.shape[1]}x{x.shape[2]} (padded {padded[0]}x{padded[1]}), "
                f"smaller than the kernel {self.kernel_size[0]}x{self.kernel_size[1]}"
            )
        z = conv2d(x, self.K, self.stride, padding)
        if self.b is not None:
            z = z + self.b
        return z if self.activation is None else self.activation(z)

    def config(self) -> dict:
        config = super().config()
        config.update(kernel_size=list(self.kernel_size), stride=list(self.stride))
        config["activation"] = describe_activation(self.activation)
        return config

    def extra_repr(self) -> str:
        text = f"{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            text += f", stride={self.stride}"
        if self.padding not in (0, "valid"):
            text += f", padding={self.padding!r}"
        if self.activation is not None:
            text += f", activation={activation_label(self.activation)}"
        return text + ("" if self.b is not None else ", use_bias=False")


def _kernel_init(init):
    """A named initialiser applied in the (in, out, kh, kw) layout that :mod:`symbackprop.init`
    takes fans from, then moved to the (kh, kw, in, out) layout of the kernel."""
    if not isinstance(init, str):
        return init
    if init not in INITIALIZERS:
        raise GraphError(f"Conv2D: unknown init {init!r}; expected one of {sorted(INITIALIZERS)}")

    def initialise(shape, rng):
        kh, kw, cin, cout = shape
        return np.transpose(INITIALIZERS[init]((cin, cout, kh, kw), rng), (2, 3, 0, 1))

    return initialise
