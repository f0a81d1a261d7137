"""sb.formula: readable derivations that are also correct mathematics."""

import numpy as np
import pytest
import sympy

import symbackprop as sb
from symbackprop.formula import formula_rules
from symbackprop.ops import PRIMITIVES
from symbackprop.scalar import sigmoid


def test_every_primitive_has_a_formula_rule():
    assert set(formula_rules) == set(PRIMITIVES)


def two_layer_mlp():
    x = sb.input("x", (None, 6))
    y = sb.input("y", (None,), dtype="int64")
    W1 = sb.param("W1", (6, 5), init="glorot_uniform", seed=0)
    b1 = sb.param("b1", (5,))
    W2 = sb.param("W2", (5, 3), init="glorot_uniform", seed=1)
    b2 = sb.param("b2", (3,))
    loss = sb.softmax_cross_entropy(sb.tanh(x @ W1 + b1) @ W2 + b2, y)
    return loss, [W1, b1, W2, b2]


def test_two_layer_mlp_reads_like_a_textbook():
    loss, params = two_layer_mlp()
    text = str(sb.formula(sb.grad(loss, params)))
    assert text.splitlines() == [
        "z1 = x·W1 + b1",
        "h1 = tanh(z1)",
        "z2 = h1·W2 + b2",
        "δ2 = (softmax(z2) − onehot(y))/n",
        "δ1 = δ2·W2ᵀ ⊙ (1 − h1²)",
        "∂L/∂W1 = xᵀ·δ1",
        "∂L/∂b1 = Σ₀(δ1)",
        "∂L/∂W2 = h1ᵀ·δ2",
        "∂L/∂b2 = Σ₀(δ2)",
    ]


def test_binary_cross_entropy_gradient_is_sigmoid_minus_target_over_n():
    z, y = sb.input("z", (None,)), sb.input("y", (None,))
    (gz,) = sb.grad(sb.binary_cross_entropy(z, y), [z])
    assert str(sb.formula(gz)) == "∂L/∂z = (sigmoid(z) − y)/n"
    expr = sb.formula(gz)["∂L/∂z"]
    zs, ys, n = sympy.Symbol("z", real=True), sympy.Symbol("y", real=True), sympy.Symbol("n", positive=True)
    assert sympy.simplify(expr - (sigmoid(zs) - ys) / n) == 0
    # The rewritten graph computes it in one fused map with exactly that body.
    (fused,) = sb.simplify(gz).outputs
    assert fused.op == "map"
    body = fused.attrs["fn"].body
    names = dict(zip([i.label for i in fused.inputs], fused.attrs["fn"].symbols))
    n_symbol = next(s for label, s in names.items() if label not in ("z", "y"))
    assert sympy.simplify(body - (sigmoid(names["z"]) - names["y"]) / n_symbol) == 0


def test_latex_and_sympy_forms():
    loss, params = two_layer_mlp()
    f = sb.formula(sb.grad(loss, params))
    latex = f.latex()
    assert r"\frac{\partial L}{\partial W_{1}}" in latex
    assert r"\delta_{2} W_{2}^{\top} \odot" in latex
    assert f._repr_latex_().startswith("$")
    equations = f.sympy()
    assert all(isinstance(e, sympy.Eq) for e in equations)
    assert [str(e.lhs) for e in equations][:3] == ["z1", "h1", "z2"]


def test_formula_of_relu_uses_the_iverson_bracket():
    x = sb.input("x", (None, 3))
    W = sb.param("W", (3, 2))
    t = sb.input("t", (None, 2))
    text = str(sb.formula(sb.grad(sb.mse(sb.relu(x @ W), t), [W])))
    assert "[z1 > 0]" in text and "h1 = max(z1, 0)" in text


def test_unknown_line_is_a_clear_error():
    loss, params = two_layer_mlp()
    with pytest.raises(KeyError, match="no line 'q'"):
        sb.formula(loss)["q"]


def textbook_network():
    x = sb.input("x", (None, 2))
    t = sb.input("t", (None, 2))
    W1 = sb.param("W1", (2, 2), init=np.array([[0.15, 0.25], [0.20, 0.30]]))
    b1 = sb.param("b1", (2,), init=np.array([0.35, 0.35]))
    W2 = sb.param("W2", (2, 2), init=np.array([[0.40, 0.50], [0.45, 0.55]]))
    b2 = sb.param("b2", (2,), init=np.array([0.60, 0.60]))
    out = sb.sigmoid(sb.sigmoid(x @ W1 + b1) @ W2 + b2)
    loss = 0.5 * ((out - t) ** 2).sum()
    return x, t, [W1, b1, W2, b2], loss


def test_expanded_view_writes_each_weight_and_evaluates_to_the_same_numbers():
    x, t, params, loss = textbook_network()
    grads = sb.grad(loss, params)
    f = sb.formula(grads, expand=True)
    text = str(f)
    assert "δ2_1 = h2_1·(1 − h2_1)·(h2_1 − t_1)" in text
    assert "∂L/∂W1_11 = x_1·δ1_1" in text
    # Substitute numbers into the definitions, in order, and compare with the evaluator.
    X, T = np.array([[0.05, 0.10]]), np.array([[0.01, 0.99]])
    values = {sympy.Symbol(f"x_{i + 1}", real=True): X[0, i] for i in range(2)}
    values.update({sympy.Symbol(f"t_{i + 1}", real=True): T[0, i] for i in range(2)})
    for p in params:
        for index in np.ndindex(p.shape):
            name = p.label + "_" + "".join(str(i + 1) for i in index)
            values[sympy.Symbol(name, real=True)] = p.value[index]
    for label, expr in f.definitions:
        values[sympy.Symbol(label, real=True)] = float(expr.subs(values).rewrite(sympy.exp).evalf())
    expected = sb.evaluate(grads, {x: X, t: T})
    for p, g in zip(params, expected):
        for index in np.ndindex(p.shape):
            label = "∂L/∂" + p.label + "_" + "".join(str(i + 1) for i in index)
            got = float(f[label].subs(values).rewrite(sympy.exp).evalf())
            assert got == pytest.approx(float(g[index]), rel=1e-5)


def test_expanded_view_refuses_large_tensors():
    x = sb.input("x", (None, 300))
    w = sb.param("w", (300,))
    with pytest.raises(sb.GraphError, match="small networks"):
        sb.formula((x @ w).sum(), expand=True)


def test_custom_function_derivative_comes_from_sympy():
    t = sympy.Symbol("t")
    swish = sb.function("swish", t / (1 + sympy.exp(-t)), [t])
    tr = sympy.Symbol("t", real=True)
    assert sympy.simplify(swish.derivative() - sympy.diff(tr / (1 + sympy.exp(-tr)), tr)) == 0
    x = sb.input("x", (None, 2))
    (gx,) = sb.grad(swish(x).sum(), [x])
    assert "exp" in str(sb.formula(gx))


def test_a_named_forward_tensor_shows_its_definition():
    x = sb.input("x", (None, 3))
    W, b = sb.param("W", (3, 2)), sb.param("b", (2,))
    assert str(sb.formula(x @ W + b)) == "z1 = x·W + b"
    assert str(sb.formula(sb.tanh(x @ W + b))).splitlines() == ["z1 = x·W + b", "h1 = tanh(z1)"]


def test_gradients_are_labelled_by_what_was_asked_for():
    x = sb.input("x", (3,))
    assert str(sb.formula(sb.grad(sb.tanh(x + 1).sum(), x))) == "∂L/∂x = 1 − tanh(x + 1)²"
    unused = sb.param("unused", (2,))
    assert str(sb.formula(sb.grad((x * 2).sum(), unused))) == "∂L/∂unused = 0"
    assert str(sb.formula(sb.grad((1 / (1 + sb.abs(x))).sum(), x))) == "∂L/∂x = -sign(x)/(|x| + 1)²"
