"""Pooling over NHWC images, and ``Flatten``.

Non-overlapping windows (stride equal to the window size) are a reshape that splits each
spatial axis into ``(outputs, window)`` and one reduction over the two window axes. Other
strides combine the window slices elementwise (``sb.maximum`` or a sum).
"""

from __future__ import annotations

import functools
import math

from .. import functions as F
from ..errors import GraphError
from ..graph import Tensor
from .module import Module
from .windows import pair, window_slices


class _Pool2D(Module):
    """Shared checks and the two formulations of pooling; subclasses say how to combine."""

    def __init__(self, size, stride=None):
        self.size = pair(size, "size", type(self).__name__)
        self.stride = self.size if stride is None else pair(stride, "stride", type(self).__name__)
        if min(self.size + self.stride) < 1:
            raise GraphError(f"{type(self).__name__}: size and stride must be positive, got {size!r} and {stride!r}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, 4, "(batch, height, width, channels)")
        if x.shape[1] < self.size[0] or x.shape[2] < self.size[1]:
            raise GraphError(
                f"{self.summary()}: input {x.label} is {x.shape[1]}x{x.shape[2]}, smaller than the window "
                f"{self.size[0]}x{self.size[1]}"
            )
        if self.stride == self.size:
            return self._tiles(x)
        return self.combine(window_slices(x, self.size, self.stride))

    def _tiles(self, x: Tensor) -> Tensor:
        n, height, width, channels = x.shape
        (kh, kw), out_h, out_w = self.size, height // self.size[0], width // self.size[1]
        if (out_h * kh, out_w * kw) != (height, width):  # incomplete windows at the edges are dropped
            x = x[:, : out_h * kh, : out_w * kw, :]
        return self.reduce(F.reshape(x, (n, out_h, kh, out_w, kw, channels)), (2, 4))

    def extra_repr(self) -> str:
        return f"size={self.size}" + ("" if self.stride == self.size else f", stride={self.stride}")


class MaxPool2D(_Pool2D):
    """The maximum over ``size`` windows (an int or a pair) moved by ``stride`` (``size`` by
    default), on NHWC images; incomplete windows at the edges are dropped.

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 4, 4, 1))
    >>> image = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> sb.evaluate(sb.nn.MaxPool2D(2)(x), {x: image})[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """

    def reduce(self, tiles: Tensor, axes) -> Tensor:
        return F.max(tiles, axes)

    def combine(self, slices: list[Tensor]) -> Tensor:
        return functools.reduce(F.maximum, slices)


class AvgPool2D(_Pool2D):
    """The mean over ``size`` windows moved by ``stride`` (``size`` by default), on NHWC images.

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 4, 4, 1))
    >>> image = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> sb.evaluate(sb.nn.AvgPool2D(2)(x), {x: image})[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """

    def reduce(self, tiles: Tensor, axes) -> Tensor:
        return F.sum(tiles, axes) / math.prod(self.size)

    def combine(self, slices: list[Tensor]) -> Tensor:
        return functools.reduce(F.add, slices) / math.prod(self.size)


class Flatten(Module):
    """Every axis after the batch axis merged into one: ``(n, H, W, C)`` becomes ``(n, H·W·C)``.

    >>> import symbackprop as sb
    >>> sb.nn.Flatten()(sb.input("x", (None, 4, 4, 16))).shape
    (None, 256)
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 1 or x.shape[0] is not None:
            raise GraphError(f"{self.summary()}: input {x.label} needs the batch axis first, got shape {x.shape}")
        return F.reshape(x, (None, math.prod(x.shape[1:])))
