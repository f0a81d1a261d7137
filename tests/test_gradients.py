"""Reverse-mode gradients against central differences, first and second order, in float64.

``GRADIENT_CASES`` maps a name to a builder ``(Builder) -> (tensor, differentiable leaves)``;
the tensor is reduced to a scalar by ``Builder.scalar``. Every primitive op must appear in
one of these graphs (checked in test_op_tables.py).
"""

import numpy as np
import pytest
import sympy
from graph_builder import Builder

import symbackprop as sb
from symbackprop.autodiff import vjp_rules
from symbackprop.graph import make_node

_t, _u, _v = sympy.symbols("t u v")
SWISH = sb.function("swish", _t / (1 + sympy.exp(-_t)), [_t])
BUMP = sb.function("bump", _u * sympy.exp(-(_v**2)) + sympy.log(1 + _u**2) * _v, [_u, _v])


def unary(fn, shape=(3, 4), **values):
    def build(g):
        x = g.input("x", shape, **values)
        return fn(x), [x]

    return build


def binary(fn, x_shape=(3, 4), y_shape=(3, 4), x_values=None, y_values=None):
    def build(g):
        x = g.input("x", x_shape, **(x_values or {}))
        y = g.input("y", y_shape, **(y_values or {}))
        return fn(x, y), [x, y]

    return build


def apart(fn):
    """``fn(x, y)`` with y at least 0.2 away from x, so no element sits on a tie."""

    def build(g):
        x = g.input("x", (3, 4))
        y = g.input("y", (3, 4))
        g.feeds["y"] = g.feeds["x"] + g.values((3, 4), gap=0.2)
        return fn(x, y), [x, y]

    return build


def param_only(g):
    W = g.param("W", (3, 4))
    return W, [W]


def batch_size_case(g):
    x = g.input("x", (None, 3))
    return x * sb.batch_size("float64"), [x]


def matmul_case(g):
    x, W = g.input("x", (None, 3)), g.param("W", (3, 2))
    return x @ W, [x, W]


def matmul_vector_case(g):
    W, u, v = g.param("W", (3, 2)), g.input("u", (2,)), g.input("v", (3,))
    return sb.concat([W @ u, v @ W], axis=0), [W, u, v]


def unslice_case(g):
    x = g.input("x", (3, 4))
    return make_node("unslice", [x], shape=(5, 4), slices=((1, 4, 1), (0, None, 1))), [x]


def gather_case(g):
    table, indices = g.param("table", (5, 3)), g.labels("i", (6,), 5)
    return sb.gather(table, indices), [table]


def scatter_add_case(g):
    values, indices = g.input("x", (6, 3)), g.labels("i", (6,), 5)
    return make_node("scatter_add", [values, indices], rows=5), [values]


def one_hot_case(g):
    labels, x = g.labels("labels", (None,), 4), g.input("x", (None, 4))
    return sb.one_hot(labels, 4, "float64") * x, [x]


def cast_case(g):
    x32, labels = g.input("x32", (3, 4), dtype="float32"), g.labels("labels", (3, 4), 5)
    return sb.cast(x32, "float64") * sb.cast(labels, "float64"), [x32]


def random_uniform_case(g):
    # The draw is a constant of x; its counter is an input like any other, not differentiated.
    x, counter = g.input("x", (None, 3)), g.input("counter", ())
    return x * sb.random_uniform((None, 3), seed=5, counter=counter, dtype="float64"), [x]


def stop_gradient_case(g):
    # The stopped shift cancels out of the value, so its missing gradient is exact.
    x = g.input("x", (3, 4))
    e = sb.exp(x - sb.stop_gradient(x.max(axis=1, keepdims=True)))
    return e / e.sum(axis=1, keepdims=True), [x]


def where_case(g):
    cond, x, y = g.input("cond", (3, 4)), g.input("x", (3, 4)), g.input("y", (4,))
    g.feeds["cond"] = (g.feeds["cond"] > 0).astype(float)
    return sb.where(cond, x, y), [x, y]


def concat_case(g):
    x, y = g.input("x", (None, 2)), g.input("y", (None, 3))
    return sb.concat([x, y, x], axis=1), [x, y]


def mse_case(g):
    x, W, target = g.input("x", (None, 3)), g.param("W", (3, 2)), g.input("target", (None, 2))
    return sb.mse(x @ W, target), [W, target]


def softmax_cross_entropy_case(g):
    logits, labels = g.input("logits", (None, 5), -3, 3), g.labels("labels", (None,), 5)
    return sb.softmax_cross_entropy(logits, labels), [logits]


def softmax_cross_entropy_soft_case(g):
    logits, targets = g.input("logits", (None, 5), -3, 3), g.input("targets", (None, 5), 0, 1)
    return sb.softmax_cross_entropy(logits, targets), [logits, targets]


def binary_cross_entropy_case(g):
    logits, targets = g.input("logits", (None, 3), -4, 4), g.input("targets", (None, 3), 0, 1)
    return sb.binary_cross_entropy(logits, targets), [logits, targets]


def mlp_case(g):
    x, labels = g.input("x", (None, 3)), g.labels("labels", (None,), 2)
    W1, b1, W2, b2 = g.param("W1", (3, 4)), g.param("b1", (4,)), g.param("W2", (4, 2)), g.param("b2", (2,))
    return sb.softmax_cross_entropy(sb.tanh(x @ W1 + b1) @ W2 + b2, labels), [W1, b1, W2, b2]


GRADIENT_CASES = {
    # primitives
    "input": unary(lambda x: x),
    "param": param_only,
    "const": unary(lambda x: x * sb.const(np.linspace(-1.0, 2.0, 4))),
    "batch_size": batch_size_case,
    "matmul": matmul_case,
    "sum": unary(lambda x: x.sum(axis=1)),
    "max": unary(lambda x: x.max(axis=1)),
    "broadcast": unary(lambda b: sb.broadcast_to(b, (2, 3, 4)), shape=(3, 1)),
    "reshape": unary(lambda x: x.reshape(2, 6)),
    "transpose": unary(lambda x: x.transpose(2, 0, 1), shape=(2, 3, 4)),
    "slice": unary(lambda x: x[1:, ::2]),
    "unslice": unslice_case,
    "concat": concat_case,
    "gather": gather_case,
    "scatter_add": scatter_add_case,
    "one_hot": one_hot_case,
    "cast": cast_case,
    "stop_gradient": stop_gradient_case,
    "random_uniform": random_uniform_case,
    # arithmetic
    "add": binary(lambda x, y: x + y),
    "subtract": binary(lambda x, y: x - y),
    "multiply": binary(lambda x, y: x * y),
    "divide": binary(lambda x, y: x / y, y_values={"gap": 0.3}),
    "power": binary(lambda x, y: x**y, x_values={"low": 0.2, "high": 2.0}),
    "power_numbers": unary(lambda x: x**3 + 2.0**x - 1 / x + (1 - x) / 3, gap=0.3),
    "negative": unary(lambda x: -x),
    # elementwise functions
    "exp": unary(sb.exp),
    "log": unary(sb.log, low=0.2, high=3.0),
    "sqrt": unary(sb.sqrt, low=0.2, high=3.0),
    "abs": unary(sb.abs, gap=0.2),
    "tanh": unary(sb.tanh),
    "sigmoid": unary(sb.sigmoid, low=-4.0, high=4.0),
    "relu": unary(sb.relu, gap=0.2),
    "leaky_relu": unary(lambda x: sb.leaky_relu(x, 0.1), gap=0.2),
    "softplus": unary(sb.softplus, low=-4.0, high=4.0),
    "maximum": apart(sb.maximum),
    "minimum": apart(sb.minimum),
    "where": where_case,
    "swish": unary(SWISH),
    "bump": binary(BUMP),
    # reductions and normalisations
    "sum_keepdims": unary(lambda x: x.sum(axis=0, keepdims=True)),
    "sum_all": unary(lambda x: x.sum(), shape=(2, 3, 4)),
    "max_all": unary(lambda x: x.max(), shape=(2, 3, 4)),
    "max_keepdims": unary(lambda x: x.max(axis=(0, 2), keepdims=True), shape=(2, 3, 4)),
    "mean": unary(lambda x: sb.mean(x, axis=1)),
    "mean_batch": unary(lambda x: sb.mean(x, axis=0), shape=(None, 3)),
    "mean_all": unary(sb.mean, shape=(None, 3)),
    "softmax": unary(lambda x: sb.softmax(x, axis=0)),
    "log_softmax": unary(sb.log_softmax, low=-3.0, high=3.0),
    "logsumexp": unary(lambda x: sb.logsumexp(x, axis=1), low=-3.0, high=3.0),
    "logsumexp_keepdims": unary(lambda x: sb.logsumexp(x, axis=0, keepdims=True)),
    # structure
    "matmul_vector": matmul_vector_case,
    "transpose_T": unary(lambda x: x.T),
    "reshape_batch": unary(lambda x: x.reshape(None, 2, 3), shape=(None, 6)),
    "slicing": unary(lambda x: x[..., 1] + x[0, :, 2:4].sum() + x[-1, :, ::3].T, shape=(2, 3, 4)),
    "broadcasting": binary(lambda x, b: x * b + b, x_shape=(None, 3), y_shape=(3,)),
    "broadcasting_both": binary(lambda x, y: x - y, x_shape=(3, 1), y_shape=(1, 4)),
    # losses and models
    "mse": mse_case,
    "softmax_cross_entropy": softmax_cross_entropy_case,
    "softmax_cross_entropy_soft": softmax_cross_entropy_soft_case,
    "binary_cross_entropy": binary_cross_entropy_case,
    "mlp": mlp_case,
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_gradient_matches_central_differences(name):
    builder = Builder()
    out, wrt = GRADIENT_CASES[name](builder)
    checks = sb.check_grads(builder.scalar(out), wrt, builder.feeds, order=2)
    assert [c.order for c in checks] == [1, 2]


def test_check_grads_catches_a_wrong_rule(monkeypatch):
    builder = Builder()
    right = vjp_rules["matmul"]
    monkeypatch.setitem(vjp_rules, "matmul", lambda node, g: (right(node, g)[0], 1.01 * right(node, g)[1]))
    out, wrt = matmul_case(builder)
    with pytest.raises(sb.GradientCheckError, match="order 1"):
        sb.check_grads(builder.scalar(out), wrt, builder.feeds)


def hvp(loss, w, v):
    (gw,) = sb.grad(loss, [w])
    return sb.grad((gw * v).sum(), [w])[0]


def test_hessian_vector_product_matches_differences_of_the_gradient():
    builder = Builder()
    x, labels = builder.input("x", (None, 3)), builder.labels("labels", (None,), 4)
    W, V = builder.input("W", (3, 4)), builder.input("V", (3, 4))
    loss = sb.softmax_cross_entropy(sb.tanh(x @ W) * 2.0, labels)
    (gW,) = sb.grad(loss, [W])
    feeds, eps = builder.feeds, 1e-5

    def gradient_at(step):
        return sb.evaluate(gW, {**feeds, "W": feeds["W"] + step * feeds["V"]})

    numeric = (gradient_at(eps) - gradient_at(-eps)) / (2 * eps)
    analytic = sb.evaluate(hvp(loss, W, V), feeds)
    assert np.abs(analytic).max() > 1e-3
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_hessian_vector_product_of_a_quadratic_form_is_exact():
    builder = Builder()
    A = builder.values((4, 4))
    W, V = builder.input("W", (4, 2)), builder.input("V", (4, 2))
    loss = (W * (sb.const(A) @ W)).sum()
    expected = (A + A.T) @ builder.feeds["V"]
    np.testing.assert_allclose(sb.evaluate(hvp(loss, W, V), builder.feeds), expected, rtol=1e-12)


def test_gradient_of_a_tensor_the_output_ignores_is_zero():
    builder = Builder()
    x, W = builder.input("x", (None, 3)), builder.param("W", (2, 5))
    gW = sb.grad(sb.tanh(x).sum(), [W])[0]
    assert gW.shape == (2, 5)
    np.testing.assert_array_equal(sb.evaluate(gW, builder.feeds), np.zeros((2, 5)))


def test_stop_gradient_blocks_the_gradient():
    builder = Builder()
    x = builder.input("x", (3,))
    gx = sb.grad((sb.stop_gradient(x) * x).sum(), x)
    np.testing.assert_array_equal(sb.evaluate(gx, builder.feeds), builder.feeds["x"])


KINKS = {
    "relu": (sb.relu, [-1.0, 0.0, 2.0], [0.0, 0.0, 1.0]),
    "abs": (sb.abs, [-1.0, 0.0, 2.0], [-1.0, 0.0, 1.0]),
    "leaky_relu": (lambda x: sb.leaky_relu(x, 0.25), [-1.0, 0.0, 2.0], [0.25, 0.25, 1.0]),
    "max ties share": (lambda x: x.max(), [3.0, 1.0, 3.0], [0.5, 0.0, 0.5]),
    "maximum ties give neither": (lambda x: sb.maximum(x, 1.0), [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]),
}


@pytest.mark.parametrize("name", sorted(KINKS))
def test_derivative_conventions_at_kinks(name):
    fn, at, expected = KINKS[name]
    x = sb.input("x", (3,), "float64")
    gx = sb.grad(fn(x).sum(), x)
    np.testing.assert_array_equal(sb.evaluate(gx, {x: np.array(at)}), expected)
