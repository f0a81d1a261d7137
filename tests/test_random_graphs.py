"""Random compositions of elementwise functions and reductions: evaluator vs NumPy, and gradients."""

import numpy as np
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import symbackprop as sb

_t = sympy.Symbol("t")
SWISH = sb.function("swish", _t / (1 + sympy.exp(-_t)), [_t])

UNARY = {
    "tanh": (sb.tanh, np.tanh),
    "sigmoid": (sb.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    "softplus": (sb.softplus, lambda a: np.logaddexp(0, a)),
    "half_square": (lambda v: v * v / 2, lambda a: a * a / 2),
    "negative": (lambda v: -v, np.negative),
    "gauss": (lambda v: sb.exp(-v * v), lambda a: np.exp(-a * a)),
    "sqrt1p": (lambda v: sb.sqrt(1 + v * v), lambda a: np.sqrt(1 + a * a)),
    "log1p": (lambda v: sb.log(1 + v * v), lambda a: np.log(1 + a * a)),
    "swish": (SWISH, lambda a: a / (1 + np.exp(-a))),
}
BINARY = {
    "add": (lambda u, v: u + v, np.add),
    "subtract": (lambda u, v: u - v, np.subtract),
    "multiply": (lambda u, v: u * v, np.multiply),
    "divide": (lambda u, v: u / (1 + v * v), lambda a, b: a / (1 + b * b)),
}
REDUCE = {  # keepdims, so that every shape still broadcasts against (3, 4)
    "sum": (lambda v, axis: v.sum(axis, keepdims=True), lambda a, axis: a.sum(axis, keepdims=True)),
    "max": (lambda v, axis: v.max(axis, keepdims=True), lambda a, axis: a.max(axis, keepdims=True)),
    "mean": (lambda v, axis: sb.mean(v, axis, keepdims=True), lambda a, axis: a.mean(axis, keepdims=True)),
    "logsumexp": (
        lambda v, axis: sb.logsumexp(v, axis, keepdims=True),
        lambda a, axis: np.log(np.exp(a).sum(axis, keepdims=True)),
    ),
    "softmax": (
        lambda v, axis: sb.softmax(v, axis),
        lambda a, axis: np.exp(a) / np.exp(a).sum(axis, keepdims=True),
    ),
}
LEAF_SHAPES = {"x": (3, 4), "y": (3, 4), "w": (4,)}

expressions = st.recursive(
    st.sampled_from(sorted(LEAF_SHAPES)),
    lambda children: st.one_of(
        st.tuples(st.just("unary"), st.sampled_from(sorted(UNARY)), children),
        st.tuples(st.just("binary"), st.sampled_from(sorted(BINARY)), children, children),
        st.tuples(st.just("reduce"), st.sampled_from(sorted(REDUCE)), st.sampled_from([-1, None]), children),
    ),
    max_leaves=6,
)


def build(expr, leaves, numpy):
    """The expression with symbackprop ops on tensors, or with NumPy on arrays."""
    pick = 1 if numpy else 0
    if isinstance(expr, str):
        return leaves[expr]
    kind, name, *rest = expr
    if kind == "unary":
        return UNARY[name][pick](build(rest[0], leaves, numpy))
    if kind == "binary":
        return BINARY[name][pick](build(rest[0], leaves, numpy), build(rest[1], leaves, numpy))
    axis, child = rest
    return REDUCE[name][pick](build(child, leaves, numpy), axis)


@settings(max_examples=25, deadline=None)
@given(expr=expressions, seed=st.integers(0, 2**32 - 1))
def test_random_graph_matches_numpy_and_its_gradients_check(expr, seed):
    rng = np.random.default_rng(seed)
    arrays = {name: rng.uniform(-1.5, 1.5, shape) for name, shape in LEAF_SHAPES.items()}
    inputs = {name: sb.input(name, shape, "float64") for name, shape in LEAF_SHAPES.items()}
    out = build(expr, inputs, numpy=False)
    expected = build(expr, arrays, numpy=True)
    got = sb.evaluate(out, arrays)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    loss = (out * out).sum() + out.sum()
    sb.check_grads(loss, list(inputs.values()), arrays, order=2, seed=seed % 1000)
