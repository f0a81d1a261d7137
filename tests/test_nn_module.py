"""The Module interface: parameter names and order, numbering, modes, descriptions, printing,
errors, and formulas of models against hand-built graphs."""

import json

import numpy as np
import pytest
import sympy

import symbackprop as sb

nn = sb.nn


def _mlp():
    return nn.Sequential(nn.Dense(4, 8, activation="tanh", seed=0), nn.ReLU(), nn.Dense(8, 3, seed=1))


class Bottleneck(nn.Module):
    def __init__(self, features, code):
        self.encoder = nn.Dense(features, code, activation="tanh", seed=0)
        self.decoder = nn.Dense(code, features, seed=1)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def test_sequential_parameters_are_qualified_by_position_and_numbered_by_layer():
    model = _mlp()
    params = model.parameters()
    assert list(params) == ["0.W", "0.b", "2.W", "2.b"]
    assert [p.label for p in params.values()] == ["W1", "b1", "W2", "b2"]
    assert [p.shape for p in params.values()] == [(4, 8), (8,), (8, 3), (3,)]
    assert all(p.op == "param" for p in params.values())


def test_plain_composition_names_parameters_by_attribute():
    model = Bottleneck(5, 2)
    assert {name: p.label for name, p in model.parameters().items()} == {
        "encoder.W": "W1",
        "encoder.b": "b1",
        "decoder.W": "W2",
        "decoder.b": "b2",
    }
    assert model(sb.input("x", (None, 5))).shape == (None, 5)


def test_nesting_numbers_layers_across_the_whole_model_and_keeps_their_values():
    inner = Bottleneck(5, 2)
    before = inner.encoder.W.value.copy()
    model = nn.Sequential(nn.Dense(3, 5, seed=2), inner, nn.Dense(5, 1, name="out"))
    labels = {name: p.label for name, p in model.parameters().items()}
    assert labels == {
        "0.W": "W1",
        "0.b": "b1",
        "1.encoder.W": "W2",
        "1.encoder.b": "b2",
        "1.decoder.W": "W3",
        "1.decoder.b": "b3",
        "2.W": "W_out",
        "2.b": "b_out",
    }
    np.testing.assert_array_equal(inner.encoder.W.value, before)


def test_a_standalone_layer_and_a_named_one():
    assert [p.label for p in nn.Dense(2, 2).parameters().values()] == ["W", "b"]
    assert [p.label for p in nn.Dense(2, 2, name="h").parameters().values()] == ["W_h", "b_h"]
    assert list(nn.Dense(2, 2, use_bias=False).parameters()) == ["W"]


def test_a_shared_layer_is_listed_once():
    shared = nn.Dense(3, 3, seed=0)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    assert list(model.parameters()) == ["0.W", "0.b"]


def test_modules_in_a_list_attribute_are_children():
    class Stack(nn.Module):
        def __init__(self):
            self.blocks = [nn.Dense(2, 2, seed=0), nn.Dense(2, 2, seed=1)]

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    assert list(Stack().parameters()) == ["blocks.0.W", "blocks.0.b", "blocks.1.W", "blocks.1.b"]


def test_seeds_make_initial_values_reproducible():
    first, again, other = (nn.Dense(6, 4, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(first.W.value, again.W.value)
    assert not np.array_equal(first.W.value, other.W.value)
    assert first.W.value.dtype == np.float32 and np.all(first.b.value == 0)
    limit = np.sqrt(6 / (6 + 4))
    assert np.abs(first.W.value).max() <= limit
    assert nn.Dense(2, 3, init="ones", bias_init="ones", dtype="float64").W.value.dtype == np.float64


def test_train_and_eval_are_recursive_and_return_the_module():
    model = nn.Sequential(Bottleneck(3, 2), nn.Dense(3, 1))
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model and model[0].encoder.training
    model.train(False)
    assert not model[0].decoder.training


def test_describe_is_json_and_builds_the_same_architecture():
    model = nn.Sequential(
        nn.Conv2D(1, 4, 3, padding="same", activation="relu", seed=0),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(16, 3, activation=sb.tanh, seed=1),
        nn.LayerNorm(3),
        nn.Softmax(),
    )
    description = model.describe()
    assert json.loads(json.dumps(description)) == description
    assert description["children"]["3"]["args"]["activation"] == "tanh"
    rebuilt = nn.build(json.loads(json.dumps(description)))
    assert rebuilt.describe() == description
    assert [p.shape for p in rebuilt.parameters().values()] == [p.shape for p in model.parameters().values()]
    np.testing.assert_array_equal(rebuilt[0].K.value, model[0].K.value)  # same seed, same start
    assert rebuilt(sb.input("x", (None, 4, 4, 1))).shape == (None, 3)


def test_descriptions_tell_architectures_apart():
    assert _mlp().describe() == _mlp().describe()
    assert nn.Dense(4, 8).describe() != nn.Dense(4, 9).describe()
    assert nn.RNN(2, 3).describe() != nn.RNN(2, 3, return_sequences=True).describe()
    assert Bottleneck(5, 2).describe()["args"] == {"features": 5, "code": 2}


def test_a_user_function_activation_survives_the_round_trip():
    t = sympy.Symbol("t")
    swish = sb.function("swish", t * sb.scalar.sigmoid(t), [t])
    layer = nn.Dense(3, 2, activation=swish, seed=0)
    copy = nn.build(json.loads(json.dumps(layer.describe())))
    copy.W.value, copy.b.value = layer.W.value, layer.b.value
    x = sb.input("x", (None, 3))
    values = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_allclose(sb.evaluate(copy(x), {x: values}), sb.evaluate(layer(x), {x: values}))


def test_build_names_unknown_and_ambiguous_classes(monkeypatch):
    with pytest.raises(sb.GraphError, match="'Nope' is not a known Module class"):
        nn.build({"type": "Nope", "args": {}, "children": {}})
    with pytest.raises(sb.GraphError, match="expected a description"):
        nn.build({"type": "Dense"})

    monkeypatch.setitem(nn.module.registry, "Dense", dict(nn.module.registry["Dense"]))  # undone after the test

    class Dense(nn.Module):  # a user class with a built-in's name
        def forward(self, x):
            return x

    with pytest.raises(sb.GraphError, match="names several Module classes"):
        nn.build(nn.Dense(2, 2).describe())
    assert isinstance(nn.build(nn.Dense(2, 2).describe(), classes={"Dense": nn.Dense}), nn.Dense)


def test_repr_is_nested():
    assert repr(nn.Sequential(nn.Dense(4, 8, activation="tanh"), Bottleneck(8, 2), nn.Dense(8, 1))) == (
        "Sequential(\n"
        "  (0): Dense(4 -> 8, activation=tanh)\n"
        "  (1): Bottleneck(\n"
        "    features=8, code=2\n"
        "    (encoder): Dense(8 -> 2, activation=tanh)\n"
        "    (decoder): Dense(2 -> 8)\n"
        "  )\n"
        "  (2): Dense(8 -> 1)\n"
        ")"
    )


def test_bad_inputs_raise_clear_errors():
    layer = nn.Dense(64, 10)
    with pytest.raises(sb.GraphError, match=r"Dense\(64 -> 10\): input x \(n, 32\) has 32 features, expected 64"):
        layer(sb.input("x", (None, 32)))
    with pytest.raises(sb.GraphError, match=r"expected rank 2 \(batch, features\)"):
        layer(sb.input("x", (None, 4, 64)))
    with pytest.raises(sb.GraphError, match="is float64, expected float32"):
        layer(sb.input("x", (None, 64), "float64"))
    with pytest.raises(sb.GraphError, match="the input is a ndarray, expected a symbackprop Tensor"):
        layer(np.ones((2, 64)))
    with pytest.raises(sb.GraphError, match="out_features must be a positive int, got 0"):
        nn.Dense(3, 0)
    with pytest.raises(sb.GraphError, match="unknown activation 'tan'"):
        nn.Dense(3, 2, activation="tan")
    with pytest.raises(sb.GraphError, match="layer 1 is a function, expected a symbackprop.nn.Module"):
        nn.Sequential(nn.Dense(3, 2), sb.tanh)
    with pytest.raises(NotImplementedError, match="does not implement forward"):
        nn.Module()(sb.input("x", (None, 2)))


def test_formula_of_a_model_reads_as_the_hand_built_graph():
    x, y = sb.input("x", (None, 64)), sb.input("y", (None,), dtype="int64")
    model = nn.Sequential(nn.Dense(64, 32, activation="tanh", seed=0), nn.Dense(32, 10, seed=1))
    loss = sb.softmax_cross_entropy(model(x), y)
    from_model = str(sb.formula(sb.grad(loss, list(model.parameters().values()))))

    W1, b1 = sb.param("W1", (64, 32)), sb.param("b1", (32,))
    W2, b2 = sb.param("W2", (32, 10)), sb.param("b2", (10,))
    by_hand = sb.softmax_cross_entropy(sb.tanh(x @ W1 + b1) @ W2 + b2, y)
    assert from_model == str(sb.formula(sb.grad(by_hand, [W1, b1, W2, b2])))
    assert from_model.splitlines()[:4] == [
        "z1 = x·W1 + b1",
        "h1 = tanh(z1)",
        "z2 = h1·W2 + b2",
        "δ2 = (softmax(z2) − onehot(y))/n",
    ]


def test_a_compiled_training_step_of_a_model_lowers_the_loss():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 4)).astype(np.float32)
    Y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    model = nn.Sequential(nn.Dense(4, 16, activation="tanh", seed=0), nn.Dense(16, 2, seed=1))
    x, y = sb.input("x", (None, 4)), sb.input("y", (None,), dtype="int64")
    loss = sb.softmax_cross_entropy(model(x), y)
    step = sb.compile_step(loss, [x, y], list(model.parameters().values()), sb.optim.Adam(lr=0.03))
    first = step.epoch(X, Y, batch_size=32, seed=0)
    for epoch in range(1, 20):
        last = step.epoch(X, Y, batch_size=32, seed=epoch)
    assert last < 0.5 * first
