"""sb.simplify: named rewrites that keep values and make them stable."""

import numpy as np
import pytest
import sympy

import symbackprop as sb
from symbackprop.graph import topological_order


def count(outputs, op):
    return sum(1 for n in topological_order(outputs) if n.op == op)


def test_fusion_merges_a_chain_into_one_map_with_the_same_values():
    x = sb.input("x", (None, 4))
    y = sb.exp(sb.tanh(x * 2 + 1) ** 2) - x
    result = sb.simplify(y)
    assert count(result.outputs, "map") == 1
    assert "fuse_elementwise" in result.rules()
    X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(sb.evaluate(result.outputs[0], {x: X}), sb.evaluate(y, {x: X}), rtol=1e-6)


def test_a_map_used_twice_is_not_duplicated():
    x = sb.input("x", (None, 4))
    h = sb.tanh(x)
    out = (h * 2).sum() + (h @ sb.param("w", (4,))).sum()
    (new,) = sb.simplify(out).outputs
    tanh_bodies = [n for n in topological_order([new]) if n.op == "map" and "tanh" in str(n.attrs["fn"].body)]
    assert len(tanh_bodies) == 1


def test_hand_written_binary_cross_entropy_becomes_stable():
    z, y = sb.input("z", (None,)), sb.input("y", (None,))
    p = sb.sigmoid(z)
    manual = -(y * sb.log(p) + (1 - y) * sb.log(1 - p)).mean()
    result = sb.simplify(manual)
    assert {"log_sigmoid", "log_one_minus_sigmoid"} <= set(result.rules())
    feeds = {z: np.array([-200.0, 0.3, 150.0]), y: np.array([1.0, 0.0, 1.0])}
    assert not np.isfinite(sb.evaluate(manual, feeds))  # log(0) in float32
    stable = sb.evaluate(result.outputs[0], feeds)
    assert stable == pytest.approx(float(sb.evaluate(sb.binary_cross_entropy(z, y), feeds)), rel=1e-6)


def test_log_of_softmax_becomes_log_softmax():
    x = sb.input("x", (None, 5))
    result = sb.simplify(sb.log(sb.softmax(x)))
    assert "log_softmax" in result.rules()
    X = np.array([[1000.0, 0.0, -1000.0, 3.0, 2.0]], dtype=np.float32)
    got = sb.evaluate(result.outputs[0], {x: X})
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, sb.evaluate(sb.log_softmax(x), {x: X}), rtol=1e-6)


def test_log_sum_exp_is_shifted_by_the_maximum():
    x = sb.input("x", (None, 3))
    naive = sb.log(sb.exp(x).sum(axis=1))
    result = sb.simplify(naive)
    assert "logsumexp" in result.rules()
    X = np.array([[1000.0, 999.0, 0.0]], dtype=np.float32)
    assert not np.isfinite(sb.evaluate(naive, {x: X})).all()
    np.testing.assert_allclose(sb.evaluate(result.outputs[0], {x: X}), [1000.0 + np.log1p(np.exp(-1.0))], rtol=1e-6)


def test_log_shows_each_step_before_and_after():
    z = sb.input("z", (None,))
    p = sb.sigmoid(z)
    text = str(sb.simplify(sb.log(p).sum()))
    assert "log_sigmoid:" in text and "before: log(sigmoid(" in text and "after:  -softplus(-" in text


def test_rewritten_gradients_keep_their_values_and_labels():
    x = sb.input("x", (None, 4))
    y = sb.input("y", (None,), dtype="int64")
    W = sb.param("W", (4, 3), init="normal", seed=0, std=1.0)
    b = sb.param("b", (3,), init="normal", seed=1, std=1.0)
    grads = sb.grad(
        sb.softmax_cross_entropy(sb.sigmoid(x @ W + b) @ sb.param("V", (3, 3), init="normal", seed=2), y), [W, b]
    )
    result = sb.simplify(grads)
    X = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    Y = np.array([0, 1, 2, 1, 0])
    for before, after in zip(sb.evaluate(grads, {x: X, y: Y}), sb.evaluate(result.outputs, {x: X, y: Y})):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-7)
    assert str(sb.formula(result.outputs)).splitlines()[-2].startswith("∂L/∂W = ")


def test_naive_log_of_softmax_is_stabilised_after_fusion():
    v = sb.input("v", (None, 3))
    naive = sb.log(sb.exp(v) / sb.exp(v).sum(axis=1, keepdims=True))
    result = sb.simplify(naive)
    assert {"log_softmax", "logsumexp"} <= set(result.rules())
    np.testing.assert_allclose(
        sb.evaluate(result.outputs[0], {v: np.array([[1000.0, 0.0, 0.0]])}), [[0.0, -1000.0, -1000.0]]
    )


def test_exp_over_one_plus_exp_becomes_sigmoid_even_inside_a_product():
    # SymPy's derivative of log(1 + e^t) is e^t/(e^t + 1); left as e^t·sigmoid(-t) it
    # overflows in float32 for large t, so the rewrite must reach sigmoid(t).
    t = sympy.Symbol("t", real=True)
    smooth = sb.function("smooth", sympy.log(1 + sympy.exp(t)), [t])
    x, y = sb.input("x", (None,)), sb.input("y", (None,))
    derivative = sb.grad(smooth(x).sum(), x)
    assert str(sb.formula(sb.simplify(derivative).outputs)) == "∂L/∂x = sigmoid(x)"
    scaled = sb.simplify(x * sb.exp(y) / (1 + sb.exp(y)))
    assert str(sb.formula(scaled.outputs)) == "y = x ⊙ sigmoid(y)"
    big = np.array([-100.0, 0.0, 100.0], dtype=np.float32)
    np.testing.assert_allclose(sb.compile(derivative, [x])(big), [0.0, 0.5, 1.0], atol=1e-30)
