"""RNN, LSTM and GRU: values against PyTorch with copied weights, backpropagation through
time against central differences, compiled code against the reference evaluator, errors."""

import numpy as np
import pytest

import symbackprop as sb

nn = sb.nn
RNG = np.random.default_rng(0)
LAYERS = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}


def _layer(kind, features=3, hidden=4, **options):
    layer = LAYERS[kind](features, hidden, seed=1, dtype="float64", **options)
    for bias in [p for name, p in layer.parameters().items() if name.startswith("b")]:
        bias.value = RNG.normal(scale=0.5, size=bias.shape)  # biases start at zero: make them count
    return layer


def _torch_twin(torch, kind, layer):
    """The PyTorch layer with the same weights: its matrices are ours transposed (gates stacked
    along the rows instead of the columns, in the same order)."""
    twin = getattr(torch.nn, kind)(layer.in_features, layer.hidden, batch_first=True, dtype=torch.float64)
    hidden_bias = layer.bh.value if kind == "GRU" else np.zeros_like(layer.b.value)
    with torch.no_grad():
        twin.weight_ih_l0.copy_(torch.tensor(layer.Wx.value.T))
        twin.weight_hh_l0.copy_(torch.tensor(layer.Wh.value.T))
        twin.bias_ih_l0.copy_(torch.tensor(layer.b.value))
        twin.bias_hh_l0.copy_(torch.tensor(hidden_bias))
    return twin


@pytest.mark.parametrize("kind", LAYERS)
def test_values_match_torch(kind):
    torch = pytest.importorskip("torch")
    sequences = RNG.normal(size=(2, 5, 3))
    x = sb.input("x", (None, 5, 3), "float64")
    every = _layer(kind, return_sequences=True)
    last = LAYERS[kind](3, 4, dtype="float64")
    for mine, theirs in zip(last.parameters().values(), every.parameters().values()):
        mine.value = theirs.value
    expected = _torch_twin(torch, kind, every)(torch.tensor(sequences))[0].detach().numpy()
    assert every(x).shape == (None, 5, 4) and last(x).shape == (None, 4)
    np.testing.assert_allclose(sb.evaluate(every(x), {x: sequences}), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sb.evaluate(last(x), {x: sequences}), expected[:, -1], rtol=1e-10, atol=1e-12)


def test_an_rnn_takes_another_activation():
    layer = _layer("RNN", activation="relu")
    x = sb.input("x", (None, 2, 3), "float64")
    values = RNG.normal(size=(3, 2, 3))
    h1 = np.maximum(values[:, 0] @ layer.Wx.value + layer.b.value, 0)
    h2 = np.maximum(values[:, 1] @ layer.Wx.value + h1 @ layer.Wh.value + layer.b.value, 0)
    np.testing.assert_allclose(sb.evaluate(layer(x), {x: values}), h2, rtol=1e-12)
    assert repr(layer) == "RNN(3 -> 4, activation=relu)"


@pytest.mark.parametrize("kind", LAYERS)
def test_backpropagation_through_time_matches_central_differences(kind):
    layer = _layer(kind, features=2, hidden=3, return_sequences=True)
    x = sb.input("x", (None, 3, 2), "float64")
    weights = sb.input("weights", (None, 3, 3), "float64")
    loss = (layer(x) * weights).sum()
    feeds = {x: RNG.normal(size=(2, 3, 2)), weights: RNG.normal(size=(2, 3, 3))}
    sb.check_grads(loss, [*layer.parameters().values(), x], feeds)


def test_compiled_layers_and_their_gradients_match_the_evaluator():
    x = sb.input("x", (None, 2, 3))  # two steps: the second reads the state, as every later one does
    layers = [LAYERS[kind](3, 5, seed=i) for i, kind in enumerate(LAYERS)]
    loss = sum(sb.tanh(layer(x)).mean() for layer in layers)
    params = [p for layer in layers for p in layer.parameters().values()]
    outputs = [loss, *sb.grad(loss, params)]
    sequences = RNG.normal(size=(6, 2, 3)).astype(np.float32)
    compiled = sb.compile(outputs, [x])(sequences)
    for got, expected in zip(compiled, sb.evaluate(outputs, {x: sequences})):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_parameters_are_named_after_their_role():
    model = nn.Sequential(nn.GRU(3, 4, return_sequences=True), nn.LSTM(4, 2))
    assert {name: p.label for name, p in model.parameters().items()} == {
        "0.Wx": "Wx1",
        "0.Wh": "Wh1",
        "0.b": "b1",
        "0.bh": "bh1",
        "1.Wx": "Wx2",
        "1.Wh": "Wh2",
        "1.b": "b2",
    }
    assert [p.shape for p in model.parameters().values()] == [(3, 12), (4, 12), (12,), (12,), (4, 8), (2, 8), (8,)]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(sb.GraphError, match=r"LSTM\(3 -> 4\): input x has shape \(n, 3\), expected rank 3"):
        nn.LSTM(3, 4)(sb.input("x", (None, 3)))
    with pytest.raises(sb.GraphError, match=r"input x \(n, 5, 2\) has 2 features, expected 3"):
        nn.GRU(3, 4)(sb.input("x", (None, 5, 2)))
    with pytest.raises(sb.GraphError, match="hidden must be a positive int"):
        nn.RNN(3, -1)
