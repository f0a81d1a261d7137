"""Compiled functions: odd shapes, conversions, and bad input refused before native code runs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symbackprop as sb


def mlp(width_in, width_out, dtype="float32"):
    x = sb.input("x", (None, width_in), dtype)
    W = sb.param("W", (width_in, width_out), init="glorot_uniform", seed=0, dtype=dtype)
    b = sb.param("b", (width_out,), init="normal", seed=1, dtype=dtype, std=0.5)
    out = sb.tanh(x @ W + b)
    loss = (out * out).mean()
    return x, [W, b], [out, loss, *sb.grad(loss, [W, b])]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", [1, 3, 17, 129])
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_odd_shapes_and_a_batch_of_one(width, batch, dtype):
    x, params, targets = mlp(width, (width % 5) + 1, dtype)
    f = sb.compile(targets, inputs=[x])
    X = np.random.default_rng(width).normal(size=(batch, width)).astype(dtype)
    rtol = 1e-10 if dtype == "float64" else 2e-5
    for got, expected in zip(f(X), sb.evaluate(targets, {x: X})):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


def test_the_same_function_serves_several_batch_sizes_and_new_param_values():
    x, (W, b), targets = mlp(4, 3)
    f = sb.compile(targets, inputs=[x])
    for batch in (5, 2, 9, 2):
        X = np.random.default_rng(batch).normal(size=(batch, 4)).astype(np.float32)
        np.testing.assert_allclose(f(X)[1], sb.evaluate(targets[1], {x: X}), rtol=1e-5)
    W.value = np.ones((4, 3))
    X = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(f(X)[0], sb.evaluate(targets[0], {x: X}), rtol=1e-6)


def test_conversions_are_made_and_documented_cases_refused():
    x, _, targets = mlp(4, 3)
    f = sb.compile(targets[1], inputs=[x])
    X = np.random.default_rng(0).normal(size=(6, 8))
    expected = sb.evaluate(targets[1], {x: X[:, ::2].astype(np.float32)})
    np.testing.assert_allclose(f(X[:, ::2]), expected, rtol=1e-6)  # float64, non-contiguous: converted
    np.testing.assert_allclose(f(X[:, ::2].tolist()), expected, rtol=1e-6)
    with pytest.raises(sb.GraphError, match=r"input 'x': expected shape \(n, 4\), got \(6, 8\)"):
        f(X)
    with pytest.raises(sb.GraphError, match="input 'x': the batch is empty"):
        f(np.zeros((0, 4)))
    with pytest.raises(sb.GraphError, match="expected numbers"):
        f(np.array([["a"] * 4]))
    with pytest.raises(TypeError, match="expected 1 argument"):
        f()


def test_nan_and_inf_propagate_instead_of_crashing():
    x, _, targets = mlp(3, 2)
    f = sb.compile(targets[0], inputs=[x])
    got = f(np.array([[np.nan, 0, 0], [np.inf, 0, 0], [0, 0, 0]], np.float32))
    assert np.isnan(got[0]).any() and np.all(np.isfinite(got[2]))


def test_labels_out_of_range_are_refused_and_computed_indices_are_caught():
    z = sb.input("z", (None, 3))
    y = sb.input("y", (None,), "int64")
    f = sb.compile(sb.softmax_cross_entropy(z, y), inputs=[z, y])
    with pytest.raises(sb.GraphError, match=r"input 'y': the value -1 is out of range; expected 0 <= y < 3"):
        f(np.zeros((2, 3)), np.array([0, -1]))
    table = sb.param("table", (4, 2), init="normal", seed=0)
    shifted = sb.gather(table, sb.cast(sb.cast(y, "float32") * 3, "int64"))  # indices computed in the graph
    g = sb.compile(shifted, inputs=[y])
    np.testing.assert_array_equal(g(np.array([0, 1])), table.value[[0, 3]])
    with pytest.raises(IndexError, match="out of range"):
        g(np.array([2]))


def test_compile_refuses_inputs_that_do_not_fit_the_graph():
    x, _, targets = mlp(4, 3)
    other = sb.input("other", (None, 4))
    with pytest.raises(sb.GraphError, match=r"the outputs need the input\(s\) \['x'\]"):
        sb.compile(targets, inputs=[other])
    with pytest.raises(sb.GraphError, match="list an input twice"):
        sb.compile(targets, inputs=[x, x])
    with pytest.raises(sb.GraphError, match="must be a tensor made by sb.input"):
        sb.compile(targets, inputs=[targets[0]])


UNARY = {
    "tanh": sb.tanh,
    "sigmoid": sb.sigmoid,
    "exp": lambda t: sb.exp(t * 0.5),
    "relu": sb.relu,
    "softplus": sb.softplus,
    "square": lambda t: t * t,
}
BINARY = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "max": sb.maximum, "sub": lambda a, b: a - b}


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(UNARY)), st.sampled_from(sorted(BINARY)), st.integers(0, 2)),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([None, 0, 1]),
)
def test_random_graphs_compiled_match_the_evaluator(steps, axis):
    x = sb.input("x", (None, 3), "float64")
    w = sb.param("w", (3,), init=np.array([0.3, -0.7, 1.1]), dtype="float64")
    values = [x, x * w]
    for unary, binary, pick in steps:
        values.append(BINARY[binary](UNARY[unary](values[-1]), values[pick % len(values)]))
    out = values[-1].sum(axis=axis) if axis is not None else values[-1].sum()
    targets = [out, *sb.grad(out.sum(), [w])]
    X = np.linspace(-1, 1, 12).reshape(4, 3)
    for got, expected in zip(sb.compile(targets, inputs=[x])(X), sb.evaluate(targets, {x: X})):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_a_map_read_only_by_a_reduction_is_fused_into_it():
    x = sb.input("x", (None, 5), "float64")
    y = x * sb.sigmoid(x)
    X = np.random.default_rng(0).normal(size=(7, 5))
    alone = [y.sum(), *sb.grad(y.sum(), [x])]
    shared = [y.sum(), y.max(axis=1)]
    fused, unfused = sb.compile(alone, inputs=[x]), sb.compile(shared, inputs=[x])
    assert "reduce-sum out0[] = a*b over (x[n,5], t1[n,5])" in fused.kernel_ir
    assert "reduce-sum out0[] = t1[n,5] as (1, 5*n, 1)" in unfused.kernel_ir  # two readers: stored
    for targets, f in ((alone, fused), (shared, unfused)):
        for got, expected in zip(f(X), sb.evaluate(targets, {x: X})):
            np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_buffer_left_unbound_is_refused_not_dereferenced():
    x = sb.input("x", (None, 3))
    f = sb.compile(sb.tanh(x).sum(), [x])
    assert f(np.ones((2, 3), dtype=np.float32)) == pytest.approx(2 * 3 * np.tanh(1.0), rel=1e-6)
    f.bound.table[:] = 0  # as if an input had never been bound
    with pytest.raises(RuntimeError, match="nothing bound to"):
        f.bound.run(2)
