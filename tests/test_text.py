"""The text form of a graph and its verifier."""

import pytest

import symbackprop as sb
from symbackprop.graph import make_node


def test_text_form_lists_one_node_per_line():
    x = sb.input("x", (None, 3))
    w = sb.param("w", (3, 2))
    text = sb.to_text(sb.tanh(x @ w).sum())
    assert text.splitlines() == [
        "x: float32(n, 3) = input",
        "w: float32(3, 2) = param",
        "%0: float32(n, 2) = matmul x w",
        "%1: float32(n, 2) = map[tanh: tanh(t)] %0",
        "%2: float32() = sum[axes=(0, 1), keepdims=False] %1",
        "return %2",
    ]


def test_text_form_of_gradients_shares_common_nodes():
    x = sb.input("x", (None, 3))
    w = sb.param("w", (3,))
    h = sb.tanh(x @ w)
    text = sb.to_text([h.sum(), *sb.grad(h.sum(), [w])])
    assert text.count("= map[tanh: tanh(t)]") == 1


def test_verify_accepts_built_graphs_and_rejects_a_corrupted_node():
    x = sb.input("x", (None, 3))
    y = sb.exp(x).sum(axis=1)
    sb.verify(y)
    bad = make_node("sum", [x], axes=(0,), keepdims=False)
    object.__setattr__(bad, "shape", (7,))  # as a buggy rewrite could leave it
    with pytest.raises(sb.GraphError, match=r"claims \(7,\)"):
        sb.verify(bad)


def test_verify_rejects_a_param_without_value():
    w = sb.param("w", (2,))
    w._value = None
    with pytest.raises(sb.GraphError, match="holds no value"):
        sb.verify(w)
