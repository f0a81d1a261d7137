"""Reverse-mode differentiation as a graph-to-graph transform.

``vjp_rules`` maps an op to ``(node, g) -> cotangents``: given the node and the gradient
``g`` of the output with respect to it, one cotangent per input (``None`` where the input
is not differentiable). Every rule is written in primitives that have rules themselves,
so the gradient graph can be differentiated again.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import sympy

from . import functions as F
from .errors import GraphError, MissingRuleError
from .graph import Tensor, const, make_node, topological_order
from .scalar import ScalarFunction, real_symbols
from .shapes import FLOAT_DTYPES, format_shape

# For the formula printer: gradient tensor -> (the forward tensor it is the adjoint of, y).
adjoint_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_a, _b = real_symbols("a b")
EQUAL = ScalarFunction("equal", (_a, _b), sympy.Piecewise((1, sympy.Eq(_a, _b)), (0, True)))


def apply_body(symbols, body: sympy.Expr, inputs: Sequence[Tensor], like: Tensor) -> Tensor:
    """``body`` applied to the inputs, dropping inputs the body does not use."""
    used = [i for i, s in enumerate(symbols) if s in body.free_symbols]
    if not used:
        return F.broadcast_to(const(float(body), like.dtype), like.shape)
    if len(used) == 1 and body == symbols[used[0]]:
        return inputs[used[0]]
    fn = ScalarFunction("d", [symbols[i] for i in used], body)
    return make_node("map", [inputs[i] for i in used], fn=fn)


def _map(node, g):
    fn = node.attrs["fn"]
    cotangents = []
    for index in range(fn.arity):
        partial = fn.partial(index).body
        if partial == 0:
            cotangents.append(None)
        elif partial.is_number:
            cotangents.append(g if partial == 1 else F.multiply(g, float(partial)))
        else:
            cotangents.append(F.multiply(g, _partial_value(fn, partial, node)))
    return cotangents


def _partial_value(fn, partial, node):
    """The partial derivative as a tensor, in terms of the node's own value where possible.

    ``tanh' = 1 - tanh²``, ``sigmoid' = sigmoid·(1 - sigmoid)`` and ``exp' = exp`` then reuse
    the forward result ``h`` instead of recomputing it from the input, as backprop by hand does.
    """
    if fn.arity == 1:
        (u,) = real_symbols("u")
        in_output = partial.xreplace({fn.body: u})
        if fn.symbols[0] not in in_output.free_symbols:
            return apply_body((u,), in_output, [node], node)
    return apply_body(fn.symbols, partial, node.inputs, node)


def _matmul(node, g):
    x, w = node.inputs
    return F.matmul(g, F.transpose(w)), F.matmul(F.transpose(x), g)


def _keepdims_shape(node):
    (x,) = node.inputs
    return tuple(1 if i in node.attrs["axes"] else d for i, d in enumerate(x.shape))


def _sum(node, g):
    (x,) = node.inputs
    return (F.broadcast_to(F.reshape(g, _keepdims_shape(node)), x.shape),)


def _max(node, g):
    (x,) = node.inputs
    axes = node.attrs["axes"]
    peak = F.broadcast_to(F.reshape(node, _keepdims_shape(node)), x.shape)
    mask = F.stop_gradient(make_node("map", [x, peak], fn=EQUAL))
    ties = F.broadcast_to(F.sum(mask, axes, keepdims=True), x.shape)
    share = F.broadcast_to(F.reshape(g, _keepdims_shape(node)), x.shape)
    return (share * mask / ties,)


def unbroadcast(g: Tensor, shape) -> Tensor:
    """Sum ``g`` over the axes that broadcasting to its shape added or stretched."""
    lead = g.ndim - len(shape)
    stretched = [i + lead for i, d in enumerate(shape) if d == 1 and g.shape[i + lead] != 1]
    summed = F.sum(g, tuple(range(lead)) + tuple(stretched), keepdims=False) if lead or stretched else g
    return F.reshape(summed, shape)


def _concat(node, g):
    axis = node.attrs["axis"]
    pieces, start = [], 0
    for x in node.inputs:
        index = [slice(None)] * g.ndim
        index[axis] = slice(start, start + x.shape[axis])
        pieces.append(F.getitem(g, tuple(index)))
        start += x.shape[axis]
    return pieces


vjp_rules = {
    "input": lambda node, g: (),
    "param": lambda node, g: (),
    "const": lambda node, g: (),
    "batch_size": lambda node, g: (),
    "map": _map,
    "matmul": _matmul,
    "sum": _sum,
    "max": _max,
    "broadcast": lambda node, g: (unbroadcast(g, node.inputs[0].shape),),
    "reshape": lambda node, g: (F.reshape(g, node.inputs[0].shape),),
    "transpose": lambda node, g: (F.transpose(g, sorted(range(g.ndim), key=node.attrs["perm"].__getitem__)),),
    "slice": lambda node, g: (make_node("unslice", [g], shape=node.inputs[0].shape, slices=node.attrs["slices"]),),
    "unslice": lambda node, g: (make_node("slice", [g], slices=node.attrs["slices"]),),
    "concat": _concat,
    "gather": lambda node, g: (make_node("scatter_add", [g, node.inputs[1]], rows=node.inputs[0].shape[0]), None),
    "scatter_add": lambda node, g: (make_node("gather", [g, node.inputs[1]]), None),
    "one_hot": lambda node, g: (None,),
    "cast": lambda node, g: (F.cast(g, node.inputs[0].dtype) if node.inputs[0].dtype in FLOAT_DTYPES else None,),
    "stop_gradient": lambda node, g: (None,),
    "random_uniform": lambda node, g: (None,),  # a hash of the counter: nothing to differentiate
}


def zeros_like(x: Tensor) -> Tensor:
    return F.broadcast_to(const(0.0, x.dtype), x.shape)


def grad(y: Tensor, wrt):
    """Gradients of the scalar ``y`` with respect to each tensor of ``wrt``, as graphs.

    The results have the shapes of ``wrt`` and can be evaluated, compiled, printed with
    :func:`symbackprop.formula`, or differentiated again. A tensor ``y`` does not depend
    on gets a zero gradient.

    >>> import numpy as np, symbackprop as sb
    >>> w = sb.param("w", (3,), init=np.array([1.0, 2.0, 3.0]))
    >>> (gw,) = sb.grad((w * w).sum(), [w])
    >>> sb.evaluate(gw, {}).tolist()
    [2.0, 4.0, 6.0]
    """
    single = isinstance(wrt, Tensor)
    targets = [wrt] if single else list(wrt)
    if not isinstance(y, Tensor):
        raise TypeError(f"grad: y must be a Tensor, got {type(y).__name__}")
    if y.shape != ():
        raise GraphError(
            f"grad: y must be a scalar (shape ()), but {y.label} has shape {format_shape(y.shape)}; "
            "reduce it first, for example with .sum() or .mean()"
        )
    if y.dtype not in FLOAT_DTYPES:
        raise GraphError(f"grad: y must be a float scalar, but {y.label} has dtype {y.dtype}")
    for position, target in enumerate(targets):
        if not isinstance(target, Tensor):
            raise TypeError(f"grad: wrt[{position}] must be a Tensor, got {type(target).__name__}")
        if target.dtype not in FLOAT_DTYPES:
            raise GraphError(
                f"grad: cannot differentiate with respect to {target.label}, which has dtype {target.dtype}"
            )

    order = topological_order([y])
    wanted = set(targets)
    relevant = set()  # nodes through which y depends on a target
    for node in order:
        if node in wanted or any(i in relevant for i in node.inputs):
            relevant.add(node)

    cotangent = {y: const(1.0, y.dtype)}
    for node in reversed(order):
        g = cotangent.get(node)
        if g is None or not node.inputs:
            continue
        adjoint_of.setdefault(g, (node, y))
        rule = vjp_rules.get(node.op)
        if rule is None:
            raise MissingRuleError("vector-Jacobian", node.op)
        for child, c in zip(node.inputs, rule(node, g)):
            if c is None or child not in relevant:
                continue
            total = cotangent.get(child)
            cotangent[child] = c if total is None else F.add(total, c)

    results = []
    for target in targets:
        g = cotangent.get(target)
        if g is None:
            g = zeros_like(target)
        adjoint_of[g] = (target, y)  # the requested name wins over an intermediate's
        results.append(g)
    return results[0] if single else results
