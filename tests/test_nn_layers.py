"""Dense, activation modules, LayerNorm, Embedding and Flatten: values against NumPy and
PyTorch, gradients against central differences, and clear errors."""

import numpy as np
import pytest
import sympy

import symbackprop as sb

nn = sb.nn
RNG = np.random.default_rng(0)


def test_dense_computes_the_affine_map_then_the_activation():
    layer = nn.Dense(5, 3, activation="sigmoid", seed=0, dtype="float64")
    layer.b.value = RNG.normal(size=3)
    x = sb.input("x", (None, 5), "float64")
    values = RNG.normal(size=(4, 5))
    expected = 1 / (1 + np.exp(-(values @ layer.W.value + layer.b.value)))
    np.testing.assert_allclose(sb.evaluate(layer(x), {x: values}), expected, rtol=1e-12)
    bare = nn.Dense(5, 3, use_bias=False, seed=0, dtype="float64")
    np.testing.assert_allclose(sb.evaluate(bare(x), {x: values}), values @ bare.W.value, rtol=1e-12)


def test_the_ways_to_give_an_activation_build_the_same_graph():
    x = sb.input("x", (None, 3))
    t = sympy.Symbol("t")
    cube = sb.function("cube", t**3, [t])
    layer = nn.Dense(3, 2, seed=0)
    z = x @ layer.W + layer.b
    assert layer(x) is z
    for spec, expected in [("tanh", sb.tanh(z)), (sb.relu, sb.relu(z)), (cube, cube(z))]:
        layer.activation = nn.activation.resolve_activation(spec, "test")
        assert layer(x) is expected


@pytest.mark.parametrize(
    "module, function",
    [
        (nn.Tanh(), sb.tanh),
        (nn.ReLU(), sb.relu),
        (nn.Sigmoid(), sb.sigmoid),
        (nn.Softplus(), sb.softplus),
        (nn.LeakyReLU(0.2), lambda x: sb.leaky_relu(x, 0.2)),
        (nn.Softmax(), sb.softmax),
        (nn.LogSoftmax(), sb.log_softmax),
        (nn.Activation("tanh"), sb.tanh),
    ],
)
def test_activation_modules_are_their_functions(module, function):
    x = sb.input("x", (None, 4))
    assert module(x) is function(x)
    assert list(module.parameters()) == []


def test_layer_norm_matches_torch_and_normalises_the_last_axis():
    torch = pytest.importorskip("torch")
    norm = nn.LayerNorm(6, eps=1e-3, dtype="float64")
    norm.gamma.value, norm.beta.value = RNG.normal(size=6), RNG.normal(size=6)
    x = sb.input("x", (None, 3, 6), "float64")
    values = RNG.normal(size=(2, 3, 6)) * 4 + 1
    expected = torch.nn.functional.layer_norm(
        torch.tensor(values), (6,), torch.tensor(norm.gamma.value), torch.tensor(norm.beta.value), eps=1e-3
    )
    np.testing.assert_allclose(sb.evaluate(norm(x), {x: values}), expected.numpy(), rtol=1e-10)
    sb.check_grads((norm(x) ** 3).mean(), [x, norm.gamma, norm.beta], {x: values})


def test_embedding_picks_rows_and_its_gradient_adds_them_up():
    table = nn.Embedding(7, 3, seed=0, dtype="float64")
    words = sb.input("words", (None, 4), "int64")
    ids = np.array([[0, 6, 2, 2], [1, 1, 1, 5]])
    out = table(words)
    assert out.shape == (None, 4, 3)
    np.testing.assert_array_equal(sb.evaluate(out, {words: ids}), table.E.value[ids])
    weights = sb.input("weights", (None, 4, 3), "float64")
    loss = (sb.tanh(out) * weights).sum()
    feeds = {words: ids, weights: RNG.normal(size=(2, 4, 3))}
    sb.check_grads(loss, [table.E], feeds)
    (g,) = sb.evaluate(sb.grad(out.sum(), [table.E]), {words: ids})
    np.testing.assert_array_equal(g[:, 0], np.bincount(ids.ravel(), minlength=7))
    assert nn.Embedding(5, 2, seed=0)(sb.input("w", (None,), "int64")).shape == (None, 2)


def test_a_compiled_embedding_model_matches_the_evaluator():
    model = nn.Sequential(nn.Embedding(9, 4, seed=0), nn.Flatten(), nn.Dense(12, 2, activation="tanh", seed=1))
    words = sb.input("words", (None, 3), "int64")
    outputs = [model(words), *sb.grad(model(words).sum(), list(model.parameters().values()))]
    ids = RNG.integers(0, 9, size=(5, 3))
    for got, expected in zip(sb.compile(outputs, [words])(ids), sb.evaluate(outputs, {words: ids})):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_flatten_keeps_the_batch_axis():
    x = sb.input("x", (None, 2, 3, 4))
    values = RNG.normal(size=(5, 2, 3, 4))
    out = nn.Flatten()(x)
    assert out.shape == (None, 24)
    np.testing.assert_allclose(sb.evaluate(out, {x: values}), values.reshape(5, 24).astype(np.float32))


def test_gradients_of_a_dense_stack_match_central_differences():
    model = nn.Sequential(
        nn.Dense(3, 4, activation="tanh", seed=0, dtype="float64"),
        nn.LayerNorm(4, dtype="float64"),
        nn.Dense(4, 2, activation="softplus", seed=1, dtype="float64"),
    )
    x, t = sb.input("x", (None, 3), "float64"), sb.input("t", (None, 2), "float64")
    loss = sb.mse(model(x), t)
    sb.check_grads(loss, list(model.parameters().values()), {x: RNG.normal(size=(5, 3)), t: RNG.normal(size=(5, 2))})


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(sb.GraphError, match=r"LayerNorm\(4, eps=1e-05\): input x \(n, 3\) has 3 features, expected 4"):
        nn.LayerNorm(4)(sb.input("x", (None, 3)))
    with pytest.raises(sb.GraphError, match=r"indices w \(n, 2\) are float32, expected int64"):
        nn.Embedding(5, 2)(sb.input("w", (None, 2)))
    with pytest.raises(sb.GraphError, match=r"expected \(batch,\) or \(batch, time\)"):
        nn.Embedding(5, 2)(sb.input("w", (None, 2, 2), "int64"))
    with pytest.raises(sb.GraphError, match="needs the batch axis first"):
        nn.Flatten()(sb.input("x", (3, 4)))
    with pytest.raises(sb.GraphError, match="Activation: needs a function"):
        nn.Activation(None)
    with pytest.raises(sb.GraphError, match="vocab must be a positive int"):
        nn.Embedding(0, 2)
