"""The expanded, element-by-element view of a formula, for small networks.

Every element of every input and parameter becomes a scalar symbol (``W1_12`` is row 1,
column 2 of ``W1``), the graph is evaluated over SymPy expressions, and each element of
the result is written out, as in a textbook's worked example of backpropagation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import sympy

from .errors import GraphError
from .evaluate import Env, eval_rules
from .functions import _number
from .graph import Tensor, topological_order

# Inputs and parameters with more elements than this are refused: the view is for teaching.
MAX_ELEMENTS = 256


def _element_name(name: str, node: Tensor, index: tuple[int, ...]) -> str:
    """``W1_12`` for row 1, column 2; batch axes are left out (the view has one example)."""
    suffix = "".join(str(i + 1) for i, d in zip(index, node.shape) if d is not None)
    return f"{name}_{suffix}" if suffix else name


def _element_symbols(name: str, node: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    for index in itertools.product(*(range(d) for d in shape)):
        out[index] = sympy.Symbol(_element_name(name, node, index), real=True)
    return out


def _leaf(node, args, env):
    return _element_symbols(node.label, node, env.shape(node))


def _map(node, args, env):
    fn = node.attrs["fn"]
    return np.vectorize(lambda *xs: fn(*xs), otypes=[object])(*args)


def _max(node, args, env):
    return np.apply_over_axes(lambda a, axis: _reduce_max(a, axis), args[0], node.attrs["axes"]).reshape(
        env.shape(node)
    )


def _reduce_max(array, axis):
    return np.apply_along_axis(lambda v: sympy.Max(*v), axis, array)[(slice(None),) * axis + (None,)]


def _one_hot(node, args, env):
    labels = args[0]
    depth = node.attrs["depth"]
    return np.vectorize(lambda y, k: sympy.KroneckerDelta(y, k), otypes=[object])(labels[..., None], np.arange(depth))


def _refuse(op):
    def rule(node, args, env):
        raise GraphError(f"formula(expand=True): {op} with symbolic indices cannot be written out element by element")

    return rule


symbolic_rules = {
    **eval_rules,
    "input": _leaf,
    "param": _leaf,
    "const": lambda node, args, env: np.vectorize(_number, otypes=[object])(node.value),
    "batch_size": lambda node, args, env: np.array(sympy.Integer(env.batch), dtype=object),
    "map": _map,
    "max": _max,
    "one_hot": _one_hot,
    "gather": _refuse("gather"),
    "scatter_add": _refuse("scatter_add"),
    "cast": lambda node, args, env: args[0],
    "unslice": lambda node, args, env: _unslice(node, args, env),
}


def _unslice(node, args, env):
    out = np.full(env.shape(node), sympy.S.Zero, dtype=object)
    out[tuple(slice(*s) for s in node.attrs["slices"])] = args[0]
    return out


def expanded_formula(targets: Sequence[Tensor], batch: int = 1):
    """Every element of the targets over scalar symbols, with named per-element intermediates."""
    from .formula import Formula, _names, _result_label

    nodes = topological_order(targets)
    for node in nodes:
        if node.op in ("input", "param") and np.prod([d or batch for d in node.shape]) > MAX_ELEMENTS:
            raise GraphError(
                f"formula(expand=True) is for small networks: {node.label} has shape {node.shape} "
                f"(more than {MAX_ELEMENTS} elements)"
            )
    names = _names(targets)
    env = Env({}, batch)
    values: dict[Tensor, np.ndarray] = {}
    definitions: list[tuple[str, sympy.Expr]] = []
    activations: dict[sympy.Expr, sympy.Symbol] = {}
    for node in nodes:
        value = symbolic_rules[node.op](node, [values[i] for i in node.inputs], env)
        value = np.asarray(value, dtype=object).reshape(env.shape(node))
        if node in names:
            named = _element_symbols(str(names[node]), node, value.shape)
            for index in np.ndindex(value.shape):
                expr = sympy.factor_terms(value[index].xreplace(activations))
                definitions.append((str(named[index]), expr))
                if str(names[node]).startswith("h"):
                    activations[value[index]] = named[index]
            value = named
        values[node] = value
    results = []
    for target in targets:
        label = _result_label(target, names)
        for index in np.ndindex(values[target].shape):
            expr = sympy.factor_terms(sympy.sympify(values[target][index]).xreplace(activations))
            results.append((_element_name(label, target, index), expr))
    used = {str(s) for _, e in results + definitions for s in e.free_symbols}
    return Formula([(label, e) for label, e in definitions if label in used], results, scalar=True)
