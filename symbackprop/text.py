"""A graph as text, one line per node, and a verifier of a graph's invariants.

The printed grammar::

    graph   := line* "return" names
    line    := name ":" dtype shape "=" op ["[" attr ("," attr)* "]"] operand*
    operand := a leaf's name or "%k", the k-th computed node

Nodes appear in topological order; inputs and params are called by their names, the
batch size by ``n``, and every other node (constants included) by ``%k``. Example:

>>> import symbackprop as sb
>>> x = sb.input("x", (None, 3))
>>> w = sb.param("w", (3, 2))
>>> print(sb.to_text(sb.tanh(x @ w)))
x: float32(n, 3) = input
w: float32(3, 2) = param
%0: float32(n, 2) = matmul x w
%1: float32(n, 2) = map[tanh: tanh(t)] %0
return %1
"""

from __future__ import annotations

from .errors import GraphError
from .graph import Tensor, topological_order
from .ops import LEAVES, PRIMITIVES, shape_rules
from .shapes import format_shape


def _attr_text(node: Tensor) -> str:
    if node.op == "map":
        fn = node.attrs["fn"]
        return f"[{fn.name}: {fn.text}]"
    hidden = {"name", "shape", "dtype", "uid"} if node.op in LEAVES else {"uid"}
    items = [f"{k}={v}" for k, v in node.attrs.items() if k not in hidden]
    if node.op in ("cast", "one_hot", "broadcast", "reshape", "unslice", "random_uniform"):
        items = [f"{k}={format_shape(v) if k == 'shape' else v}" for k, v in node.attrs.items()]
    return f"[{', '.join(items)}]" if items else ""


def to_text(outputs) -> str:
    """The graph of ``outputs`` in the readable one-line-per-node form described above."""
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    names: dict[Tensor, str] = {}
    lines = []
    numbered = 0  # nodes named %0, %1, ... in order
    for node in topological_order(outputs):
        if node.op in ("input", "param"):
            names[node] = node.label
        elif node.op == "batch_size":
            names[node] = "n"
        else:
            names[node] = f"%{numbered}"
            numbered += 1
        operands = " ".join(names[i] for i in node.inputs)
        line = f"{names[node]}: {node.dtype}{format_shape(node.shape)} = {node.op}{_attr_text(node)}"
        lines.append(f"{line} {operands}".rstrip())
    lines.append("return " + ", ".join(names[o] for o in outputs))
    return "\n".join(lines)


def verify(outputs) -> None:
    """Check every node of the graph: a known op, inputs that are tensors, and a shape and
    dtype that the op's rule reproduces. Raises :class:`GraphError` naming the node.

    >>> import symbackprop as sb
    >>> sb.verify(sb.input("x", (2,)) * 2)
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    for node in topological_order(outputs):
        where = f"{node.label} ({node.op})"
        if node.op not in PRIMITIVES:
            raise GraphError(f"verify: {where} has an unknown op")
        if node.op in LEAVES and node.inputs:
            raise GraphError(f"verify: the leaf {where} has inputs")
        if not all(isinstance(i, Tensor) for i in node.inputs):
            raise GraphError(f"verify: {where} has an operand that is not a Tensor")
        shape, dtype = shape_rules[node.op](node.inputs, dict(node.attrs))
        if tuple(shape) != node.shape or dtype != node.dtype:
            raise GraphError(
                f"verify: {where} claims {format_shape(node.shape)} {node.dtype}, but its op gives "
                f"{format_shape(tuple(shape))} {dtype}"
            )
        if node.op == "param" and (node.value is None or node.value.shape != node.shape):
            raise GraphError(f"verify: the param {where} holds no value of shape {format_shape(node.shape)}")
