"""Static shapes and dtypes.

A shape is a tuple whose entries are positive ints or ``None``; ``None`` stands for the
batch size, which is only known when the graph is evaluated. All ``None`` entries of a
graph denote the same size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import GraphError

Shape = tuple  # tuple[int | None, ...]

FLOAT_DTYPES = ("float32", "float64")
DTYPES = FLOAT_DTYPES + ("int64",)


def check_dtype(dtype: object, what: str) -> str:
    """Return the canonical name of ``dtype`` or raise naming ``what`` and the choices."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise GraphError(f"{what}: dtype {dtype!r} is not supported; expected one of {DTYPES}")
    return name


def check_shape(shape: object, what: str) -> Shape:
    """Return ``shape`` as a tuple of positive ints and ``None``, or raise naming ``what``."""
    if isinstance(shape, (int, np.integer)) or shape is None:
        shape = (shape,)
    if not isinstance(shape, Iterable) or isinstance(shape, (str, bytes)):
        raise GraphError(f"{what}: shape must be a tuple of ints or None, got {shape!r}")
    dims = tuple(shape)
    for dim in dims:
        ok = dim is None or (isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim > 0)
        if not ok:
            raise GraphError(
                f"{what}: shape {dims!r} has the dimension {dim!r}; expected positive ints or None for the batch size"
            )
    return tuple(None if d is None else int(d) for d in dims)


def format_shape(shape: Shape) -> str:
    """``(None, 64)`` prints as ``(n, 64)``: the batch size is called ``n`` everywhere."""
    inner = ", ".join("n" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def broadcast_shapes(shapes: Sequence[Shape], what: str) -> Shape:
    """NumPy broadcasting of static shapes, where ``None`` only matches ``None`` or 1."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            listed = ", ".join(format_shape(s) for s in shapes)
            raise GraphError(f"{what}: shapes {listed} cannot be broadcast together")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def result_dtype(dtypes: Sequence[str]) -> str:
    """float64 wins over float32; integer operands of elementwise maths are refused upstream."""
    return "float64" if "float64" in dtypes else dtypes[0] if dtypes else "float32"


def normalize_axes(axis: int | Sequence[int] | None, rank: int, what: str) -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints; ``None`` means every axis."""
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -rank <= a < rank:
            raise GraphError(f"{what}: axis {a!r} is out of range for a tensor of rank {rank}")
        out.append(int(a) % rank)
    if len(set(out)) != len(out):
        raise GraphError(f"{what}: axis {axis!r} repeats an axis")
    return tuple(sorted(out))


def concrete(shape: Shape, batch: int | None) -> tuple[int, ...]:
    """The shape with ``None`` replaced by the batch size of an evaluation."""
    if None in shape and batch is None:
        raise GraphError(f"shape {format_shape(shape)} needs a batch size, but no input gave one")
    return tuple(batch if d is None else d for d in shape)


def size(shape: Shape) -> int | None:
    """Number of elements, or None when it depends on the batch size."""
    if None in shape:
        return None
    return int(np.prod(shape, dtype=np.int64))
