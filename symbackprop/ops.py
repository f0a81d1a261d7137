"""The primitive ops and their shape/dtype rules.

Every tensor in a graph is made by one of :data:`PRIMITIVES`. Each interpretation of the
graph keeps one table keyed by op name: ``shape_rules`` here, ``eval_rules`` in
:mod:`symbackprop.evaluate`, ``vjp_rules`` in :mod:`symbackprop.autodiff`,
``formula_rules`` in :mod:`symbackprop.formula`. A test checks that the tables agree.

A shape rule takes the input nodes and the attributes and returns ``(shape, dtype)``,
raising :class:`GraphError` that names the op, the operands and what was expected.
"""

from __future__ import annotations

import math

from .errors import GraphError
from .shapes import FLOAT_DTYPES, broadcast_shapes, format_shape, result_dtype

LEAVES = ("input", "param", "const", "batch_size")
PRIMITIVES = LEAVES + (
    "map",
    "matmul",
    "sum",
    "max",
    "broadcast",
    "reshape",
    "transpose",
    "slice",
    "unslice",
    "concat",
    "gather",
    "scatter_add",
    "one_hot",
    "cast",
    "stop_gradient",
    "random_uniform",
)


def describe(node) -> str:
    return f"{node.label} {format_shape(node.shape)} {node.dtype}"


def _leaf(inputs, attrs):
    return attrs["shape"], attrs["dtype"]


def _batch_size(inputs, attrs):
    return (), attrs["dtype"]


def _map(inputs, attrs):
    fn = attrs["fn"]
    if len(inputs) != fn.arity:
        raise GraphError(f"{fn.name}: takes {fn.arity} operand(s), got {len(inputs)}")
    for node in inputs:
        if node.dtype not in FLOAT_DTYPES:
            raise GraphError(
                f"{fn.name}: operand {describe(node)} is not a float tensor; elementwise "
                f"functions need float32 or float64 (use .astype('float32'))"
            )
    shapes = {node.shape for node in inputs}
    if len(shapes) > 1:
        listed = ", ".join(describe(n) for n in inputs)
        raise GraphError(f"{fn.name}: operands must have one shape after broadcasting: {listed}")
    return inputs[0].shape, result_dtype([n.dtype for n in inputs])


def _matmul(inputs, attrs):
    a, b = inputs
    if a.dtype not in FLOAT_DTYPES or a.dtype != b.dtype:
        raise GraphError(f"matmul: operands {describe(a)} and {describe(b)} need one float dtype")
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise GraphError(f"matmul: operands must be matrices (rank 2), got {describe(a)} and {describe(b)}")
    if a.shape[1] != b.shape[0]:
        raise GraphError(
            f"matmul: cannot multiply {describe(a)} by {describe(b)}: the inner dimensions "
            f"{a.shape[1]} and {b.shape[0]} differ"
        )
    return (a.shape[0], b.shape[1]), a.dtype


def _reduce(inputs, attrs):
    (x,) = inputs
    axes, keep = attrs["axes"], attrs["keepdims"]
    if keep:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return shape, x.dtype


def _broadcast(inputs, attrs):
    (x,) = inputs
    target = attrs["shape"]
    if len(x.shape) > len(target) or broadcast_shapes([x.shape, target], f"broadcast of {x.label}") != target:
        raise GraphError(f"broadcast: cannot broadcast {describe(x)} to {format_shape(target)}")
    return target, x.dtype


def _static_size(shape):
    return math.prod(d for d in shape if d is not None), shape.count(None)


def _reshape(inputs, attrs):
    (x,) = inputs
    target = attrs["shape"]
    if _static_size(x.shape) != _static_size(target):
        raise GraphError(
            f"reshape: cannot reshape {describe(x)} to {format_shape(target)}: the sizes differ"
            + (" (the batch dimension n must stay a dimension of its own)" if None in x.shape else "")
        )
    return target, x.dtype


def _transpose(inputs, attrs):
    (x,) = inputs
    perm = attrs["perm"]
    if sorted(perm) != list(range(len(x.shape))):
        raise GraphError(f"transpose: {perm!r} is not a permutation of the axes of {describe(x)}")
    return tuple(x.shape[p] for p in perm), x.dtype


def _slice_shape(shape, slices):
    out = []
    for dim, (start, stop, step) in zip(shape, slices):
        out.append(dim if (start, stop, step) == (0, None, 1) else len(range(start, stop, step)))
    return tuple(out)


def _slice(inputs, attrs):
    (x,) = inputs
    shape = _slice_shape(x.shape, attrs["slices"])
    if 0 in shape:
        raise GraphError(f"slice: slicing {describe(x)} with {attrs['slices']} leaves no elements")
    return shape, x.dtype


def _unslice(inputs, attrs):
    (g,) = inputs
    shape = attrs["shape"]
    if _slice_shape(shape, attrs["slices"]) != g.shape:
        raise GraphError(f"unslice: {describe(g)} does not fit the slice {attrs['slices']} of {format_shape(shape)}")
    return shape, g.dtype


def _concat(inputs, attrs):
    axis = attrs["axis"]
    first = inputs[0]
    dtypes = {n.dtype for n in inputs}
    if len(dtypes) != 1:
        raise GraphError("concat: operands need one dtype, got " + ", ".join(describe(n) for n in inputs))
    for node in inputs[1:]:
        same_rank = len(node.shape) == len(first.shape)
        if not same_rank or any(a != b for i, (a, b) in enumerate(zip(node.shape, first.shape)) if i != axis):
            raise GraphError(f"concat: {describe(node)} does not match {describe(first)} off axis {axis}")
    if any(n.shape[axis] is None for n in inputs):
        raise GraphError("concat: cannot concatenate along the batch dimension")
    shape = list(first.shape)
    shape[axis] = sum(n.shape[axis] for n in inputs)
    return tuple(shape), first.dtype


def _check_indices(op, indices):
    if indices.dtype != "int64":
        raise GraphError(f"{op}: indices {describe(indices)} must have dtype int64")


def _gather(inputs, attrs):
    table, indices = inputs
    _check_indices("gather", indices)
    if not table.shape or table.shape[0] is None:
        raise GraphError(f"gather: the table {describe(table)} needs a fixed first dimension")
    return indices.shape + table.shape[1:], table.dtype


def _scatter_add(inputs, attrs):
    values, indices = inputs
    _check_indices("scatter_add", indices)
    if values.shape[: len(indices.shape)] != indices.shape:
        raise GraphError(f"scatter_add: values {describe(values)} do not start with the shape of {describe(indices)}")
    return (attrs["rows"],) + values.shape[len(indices.shape) :], values.dtype


def _one_hot(inputs, attrs):
    (labels,) = inputs
    _check_indices("one_hot", labels)
    return labels.shape + (attrs["depth"],), attrs["dtype"]


def _cast(inputs, attrs):
    return inputs[0].shape, attrs["dtype"]


def _identity(inputs, attrs):
    return inputs[0].shape, inputs[0].dtype


def _random_uniform(inputs, attrs):
    (counter,) = inputs
    if counter.shape != () or counter.dtype not in FLOAT_DTYPES:
        raise GraphError(
            f"random_uniform: the counter {describe(counter)} must be a float scalar (shape ()), "
            "such as the step number sb.step_number()"
        )
    if attrs["dtype"] not in FLOAT_DTYPES:
        raise GraphError(f"random_uniform: dtype {attrs['dtype']!r} is not one of {FLOAT_DTYPES}")
    seed = attrs["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise GraphError(f"random_uniform: seed must be an int in [0, 2**64), got {seed!r}")
    return attrs["shape"], attrs["dtype"]


shape_rules = {
    "input": _leaf,
    "param": _leaf,
    "const": _leaf,
    "batch_size": _batch_size,
    "map": _map,
    "matmul": _matmul,
    "sum": _reduce,
    "max": _reduce,
    "broadcast": _broadcast,
    "reshape": _reshape,
    "transpose": _transpose,
    "slice": _slice,
    "unslice": _unslice,
    "concat": _concat,
    "gather": _gather,
    "scatter_add": _scatter_add,
    "one_hot": _one_hot,
    "cast": _cast,
    "stop_gradient": _identity,
    "random_uniform": _random_uniform,
}
