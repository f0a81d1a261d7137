"""Sliding windows over NHWC images, built from slices: the shared part of convolution and pooling.

A window offset ``(di, dj)`` of a ``k×k`` window with stride ``s`` picks the strided slice
``x[:, di::s, dj::s, :]`` (cut to the output size); every output pixel of a convolution
or pooling is a combination of those slices. Zero padding is the primitive ``unslice``
(the same op the gradient of a slice uses), so it is differentiable and compiles to a
fill and a copy.
"""

from __future__ import annotations

import math

from ..errors import GraphError
from ..graph import Tensor, make_node

WHOLE = (0, None, 1)  # the slice that takes an axis whole


def pair(value, what: str, where: str) -> tuple[int, int]:
    """``value`` as ``(height, width)``: an int is used for both.

    >>> pair(3, "size", "MaxPool2D"), pair((2, 1), "stride", "Conv2D")
    ((3, 3), (2, 1))
    """
    items = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(items, (tuple, list))
        or len(items) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in items)
    ):
        raise GraphError(f"{where}: {what} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding ``(before, after)`` that gives ``ceil(size/stride)`` outputs; an odd extra goes after.

    >>> same_padding(8, 3, 1), same_padding(8, 2, 1), same_padding(7, 3, 2)
    ((1, 1), (0, 1), (1, 1))
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, image: tuple[int, int], kernel: tuple[int, int], stride, where: str):
    """``((top, bottom), (left, right))`` for ``padding``: an int, a pair, ``"valid"``, ``"same"``,
    or already in that form.

    >>> resolve_padding("same", (8, 8), (3, 3), (1, 1), "Conv2D"), resolve_padding(2, (8, 8), (3, 3), (1, 1), "Conv2D")
    (((1, 1), (1, 1)), ((2, 2), (2, 2)))
    """
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        sides = tuple(pair(p, "padding", where) for p in padding)
        if min(sides[0] + sides[1]) < 0:
            raise GraphError(f"{where}: padding must not be negative, got {padding!r}")
        return sides
    if padding == "same":
        return tuple(same_padding(n, k, s) for n, k, s in zip(image, kernel, stride))
    if padding == "valid":
        padding = 0
    if isinstance(padding, str):
        raise GraphError(f"{where}: padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding", where)
    if ph < 0 or pw < 0:
        raise GraphError(f"{where}: padding must not be negative, got {padding!r}")
    return (ph, ph), (pw, pw)


def pad2d(x: Tensor, padding) -> Tensor:
    """``x`` (n, H, W, C) with zero rows and columns added: ``padding = ((top, bottom), (left, right))``.

    >>> import symbackprop as sb
    >>> pad2d(sb.input("x", (None, 8, 8, 3)), ((1, 1), (0, 2))).shape
    (None, 10, 10, 3)
    """
    (top, bottom), (left, right) = padding
    if not top + bottom + left + right:
        return x
    n, height, width, channels = x.shape
    shape = (n, height + top + bottom, width + left + right, channels)
    slices = (WHOLE, (top, top + height, 1), (left, left + width, 1), WHOLE)
    return make_node("unslice", [x], shape=shape, slices=slices)


def output_size(size: int, kernel: int, stride: int) -> int:
    """How many windows of ``kernel`` with ``stride`` fit in ``size`` (incomplete ones are dropped).

    >>> output_size(8, 3, 1), output_size(7, 2, 2)
    (6, 3)
    """
    return (size - kernel) // stride + 1


def window_slices(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> list[Tensor]:
    """One tensor ``(n, Ho, Wo, C)`` per window offset, in row-major order of the offsets.

    >>> import symbackprop as sb
    >>> [s.shape for s in window_slices(sb.input("x", (None, 5, 5, 1)), (2, 2), (2, 2))]
    [(None, 2, 2, 1), (None, 2, 2, 1), (None, 2, 2, 1), (None, 2, 2, 1)]
    """
    _, height, width, _ = x.shape
    out_h, out_w = (output_size(n, k, s) for n, k, s in zip((height, width), kernel, stride))
    slices = []
    for di in range(kernel[0]):
        for dj in range(kernel[1]):
            rows = (di, di + (out_h - 1) * stride[0] + 1, stride[0])
            cols = (dj, dj + (out_w - 1) * stride[1] + 1, stride[1])
            spec = (WHOLE, _canonical(rows, height), _canonical(cols, width), WHOLE)
            slices.append(x if spec == (WHOLE,) * 4 else make_node("slice", [x], slices=spec))
    return slices


def _canonical(item: tuple[int, int, int], size: int) -> tuple:
    # The slice op writes an axis taken whole as (0, None, 1); any other form is a real slice.
    return WHOLE if item == (0, size, 1) else item
