"""The NumPy reference evaluator: the definition of what every op means.

The compiled back end is tested against it, and it lets everything above the lowering be
tested without LLVM. ``eval_rules`` maps an op to ``(node, args, env) -> ndarray``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import GraphError, MissingRuleError
from .graph import Tensor, topological_order
from .random import uniform_values
from .shapes import concrete, format_shape


class Env:
    """What an evaluation knows besides the graph: the fed inputs and the batch size."""

    def __init__(self, feeds: dict, batch: int | None):
        self.feeds, self.batch = feeds, batch

    def shape(self, node: Tensor) -> tuple[int, ...]:
        return concrete(node.shape, self.batch)


def _input(node, args, env):
    return env.feeds[node]


def _map(node, args, env):
    out = node.attrs["fn"].numpy(*args)
    return np.broadcast_to(np.asarray(out, dtype=node.dtype), env.shape(node))


def _reduce(reducer):
    def rule(node, args, env):
        return reducer(args[0], axis=node.attrs["axes"], keepdims=node.attrs["keepdims"])

    return rule


def _as_slices(slices):
    return tuple(slice(start, stop, step) for start, stop, step in slices)


def _unslice(node, args, env):
    out = np.zeros(env.shape(node), dtype=node.dtype)
    out[_as_slices(node.attrs["slices"])] = args[0]
    return out


def _scatter_add(node, args, env):
    values, indices = args
    out = np.zeros(env.shape(node), dtype=node.dtype)
    np.add.at(out, indices, values)
    return out


def _one_hot(node, args, env):
    labels = args[0]
    depth = node.attrs["depth"]
    return (labels[..., None] == np.arange(depth)).astype(node.dtype)


def _gather(node, args, env):
    table, indices = args
    return table[indices]


eval_rules = {
    "input": _input,
    "param": lambda node, args, env: node.value,
    "const": lambda node, args, env: node.value,
    "batch_size": lambda node, args, env: np.array(env.batch if env.batch is not None else 1, dtype=node.dtype),
    "map": _map,
    "matmul": lambda node, args, env: args[0] @ args[1],
    "sum": _reduce(np.sum),
    "max": _reduce(np.max),
    "broadcast": lambda node, args, env: np.broadcast_to(args[0], env.shape(node)),
    "reshape": lambda node, args, env: args[0].reshape(env.shape(node)),
    "transpose": lambda node, args, env: np.transpose(args[0], node.attrs["perm"]),
    "slice": lambda node, args, env: args[0][_as_slices(node.attrs["slices"])],
    "unslice": _unslice,
    "concat": lambda node, args, env: np.concatenate(args, axis=node.attrs["axis"]),
    "gather": _gather,
    "scatter_add": _scatter_add,
    "one_hot": _one_hot,
    "cast": lambda node, args, env: args[0].astype(node.dtype),
    "stop_gradient": lambda node, args, env: args[0],
    "random_uniform": lambda node, args, env: uniform_values(env.shape(node), node.dtype, node.attrs["seed"], args[0]),
}


def bind_inputs(outputs: Sequence[Tensor], feeds: Mapping) -> Env:
    """Match the feeds to the graph's inputs, check them, and find the batch size.

    Feeds may be keyed by input tensor or by name. Every problem is reported with the
    input's name and what was expected.
    """
    if not isinstance(feeds, Mapping):
        raise TypeError(f"feeds must be a dict from inputs (or their names) to arrays, got {type(feeds).__name__}")
    needed = [n for n in topological_order(outputs) if n.op == "input"]
    by_name: dict[str, Tensor] = {}
    for node in needed:
        other = by_name.setdefault(node.attrs["name"], node)
        if other is not node:
            raise GraphError(f"two different inputs are named {node.attrs['name']!r}: {other} and {node}")
    bound = {}
    for key, value in feeds.items():
        node = by_name.get(key) if isinstance(key, str) else key
        if not isinstance(node, Tensor) or node.op != "input":
            if isinstance(key, str) or (isinstance(key, Tensor) and key.op == "input"):
                continue  # an input the requested outputs do not use
            raise GraphError(f"feeds must be keyed by inputs or their names; {key!r} is neither")
        if node not in needed:
            continue
        bound[node] = check_input_value(node, value)
    missing = [n.label for n in needed if n not in bound]
    if missing:
        unused = [key for key in feeds if isinstance(key, str) and key not in by_name]
        hint = f" (the feeds name {unused}, which these outputs do not use)" if unused else ""
        raise GraphError(f"no value fed for the input(s) {missing}{hint}")
    return Env(bound, batch_size_of(list(bound), list(bound.values())))


def check_input_value(node: Tensor, value, whole_floats: bool = True) -> np.ndarray:
    """The value for an input as a C-contiguous array of its dtype, or a GraphError naming it.

    Other float precisions, lists and non-contiguous arrays are converted. An int64 input
    takes integers, and floats holding whole numbers when ``whole_floats`` is set.
    """
    name = node.label
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise GraphError(f"input {name!r}: cannot convert the value to an array ({exc})") from exc
    if array.ndim != node.ndim or any(d is not None and d != g for d, g in zip(node.shape, array.shape)):
        raise GraphError(f"input {name!r}: expected shape {format_shape(node.shape)}, got {array.shape}")
    if node.dtype == "int64":
        whole = whole_floats and array.dtype.kind == "f" and bool(np.all(array == np.round(array)))
        if array.dtype.kind not in "iu" and not whole:
            raise GraphError(f"input {name!r}: expected integers (int64), got {array.dtype}")
    elif array.dtype.kind not in "fiub":
        raise GraphError(f"input {name!r}: expected numbers ({node.dtype}), got {array.dtype}")
    if None in node.shape and 0 in array.shape:
        raise GraphError(f"input {name!r}: the batch is empty (shape {array.shape})")
    return np.asarray(array, dtype=node.dtype, order="C")  # ascontiguousarray would make () into (1,)


def batch_size_of(inputs: Sequence[Tensor], arrays: Sequence[np.ndarray]) -> int | None:
    """The batch size the arrays of these inputs agree on; None when no input has one."""
    batch, source = None, None
    for node, array in zip(inputs, arrays):
        for dim, got in zip(node.shape, array.shape):
            if dim is None:
                if batch is not None and got != batch:
                    raise GraphError(
                        f"input {node.label!r} has batch size {got}, but {source!r} has {batch}; "
                        "every input must have the same batch size"
                    )
                batch, source = got, node.label
    return batch


def evaluate(outputs, feeds: Mapping | None = None):
    """Evaluate tensors with NumPy.

    ``outputs`` is a tensor or a list of tensors; ``feeds`` maps each input (or its name)
    to an array. Returns an array, or a list of arrays for a list.

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 2))
    >>> sb.evaluate((x * 2).sum(), {x: np.ones((3, 2))})
    array(12., dtype=float32)
    """
    single = isinstance(outputs, Tensor)
    outputs = [outputs] if single else list(outputs)
    for out in outputs:
        if not isinstance(out, Tensor):
            raise TypeError(f"evaluate: outputs must be Tensors, got {type(out).__name__}")
    env = bind_inputs(outputs, feeds or {})
    values: dict[Tensor, np.ndarray] = {}
    for node in topological_order(outputs):
        rule = eval_rules.get(node.op)
        if rule is None:
            raise MissingRuleError("evaluation", node.op)
        with np.errstate(all="ignore"):  # inf and NaN propagate as in IEEE arithmetic
            values[node] = np.asarray(rule(node, [values[i] for i in node.inputs], env))
    results = [np.array(values[out], dtype=out.dtype) for out in outputs]
    return results[0] if single else results
