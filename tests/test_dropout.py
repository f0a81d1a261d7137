"""The Dropout layer: the mask, its gradient, and compiled training steps and epochs against the
reference evaluator."""

import numpy as np
import pytest

import symbackprop as sb
from symbackprop.functions import apply


def test_evaluation_mode_and_rate_zero_are_the_identity():
    x = sb.input("x", (None, 5))
    assert sb.nn.Dropout(0.3, seed=1).eval()(x) is x
    assert sb.nn.Dropout(0.0)(x) is x
    layer = sb.nn.Dropout(0.3).eval().train()
    assert layer(x) is not x and layer.training


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_keeps_a_fraction_one_minus_rate_scaled_up(rate, dtype):
    x = sb.input("x", (None, 50), dtype)
    values = np.random.default_rng(0).uniform(0.5, 1.5, (400, 50)).astype(dtype)
    out = sb.evaluate(sb.nn.Dropout(rate, seed=3)(x), {x: values, "step": 1.0})
    kept = out != 0
    np.testing.assert_allclose(out[kept], values[kept] / (1 - rate), rtol=1e-6)
    # binomial: the kept fraction is within 4 standard deviations of 1 - rate
    assert abs(kept.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / kept.size)
    assert abs(out.mean() / values.mean() - 1) < 0.05  # the expected value is preserved


def test_the_mask_changes_with_the_step_and_the_seed_and_repeats_with_both():
    x = sb.input("x", (None, 64))
    ones = {x: np.ones((8, 64))}
    first, second = (sb.evaluate(sb.nn.Dropout(0.5, seed=1)(x), {**ones, "step": s}) for s in (1.0, 2.0))
    other_seed = sb.evaluate(sb.nn.Dropout(0.5, seed=2)(x), {**ones, "step": 1.0})
    again = sb.evaluate(sb.nn.Dropout(0.5, seed=1)(x), {**ones, "step": 1.0})
    assert np.mean(first != second) > 0.3 and np.mean(first != other_seed) > 0.3
    np.testing.assert_array_equal(first, again)


def test_the_gradient_is_the_mask():
    x, w = sb.input("x", (None, 6), "float64"), sb.input("w", (None, 6), "float64")
    dropped = sb.nn.Dropout(0.4, seed=5)(x)
    loss = (sb.tanh(dropped) * w).sum()
    rng = np.random.default_rng(1)
    feeds = {x: rng.uniform(0.5, 1.5, (5, 6)), w: rng.normal(size=(5, 6)), "step": 3.0}
    (gx,) = sb.grad(loss, [x])
    out, gradient = sb.evaluate([dropped, gx], feeds)
    mask = (out != 0) / 0.6
    np.testing.assert_allclose(gradient, mask * (1 - np.tanh(out) ** 2) * feeds[w], rtol=1e-12)
    sb.check_grads(loss, [x, w], feeds)


def _model(dropout_seed=7, training=True):
    model = sb.nn.Sequential(
        sb.nn.Dense(6, 16, activation="tanh", seed=0, dtype="float64"),
        sb.nn.Dropout(0.5, seed=dropout_seed),
        sb.nn.Dense(16, 3, seed=1, dtype="float64"),
    )
    model.train(training)
    x, y = sb.input("x", (None, 6), "float64"), sb.input("y", (None,), "int64")
    return model, x, y, sb.softmax_cross_entropy(model(x), y)


def _data(rows=32):
    rng = np.random.default_rng(2)
    return rng.normal(size=(rows, 6)), rng.integers(0, 3, rows)


@pytest.mark.parametrize("optimizer", [sb.optim.SGD(lr=0.5), sb.optim.Adam(lr=0.05)], ids=["SGD", "Adam"])
def test_compiled_steps_equal_the_reference_evaluator(optimizer):
    model, x, y, loss = _model()
    params = list(model.parameters().values())
    step = sb.compile_step(loss, [x, y], params, optimizer)
    assert step.step_input is sb.step_number()

    reference, rx, ry, reference_loss = _model()
    reference_params = list(reference.parameters().values())
    grads = sb.grad(reference_loss, reference_params)
    states = optimizer.init_states(reference_params)
    X, Y = _data()
    for t in range(1, 4):
        batch = slice(8 * t, 8 * t + 8)
        expected, *grad_values = sb.evaluate([reference_loss, *grads], {rx: X[batch], ry: Y[batch], "step": t})
        optimizer.reference_step(reference_params, grad_values, states, t)
        assert step(X[batch], Y[batch]) == pytest.approx(float(expected), rel=1e-12)
    for p, q in zip(params, reference_params):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-10, atol=1e-12)


def test_an_epoch_draws_a_new_mask_for_every_minibatch():
    X, Y = _data()
    model, x, y, loss = _model()
    epoch_step = sb.compile_step(loss, [x, y], list(model.parameters().values()), sb.optim.SGD(lr=0.5))
    epoch_loss = epoch_step.epoch(X, Y, batch_size=8, shuffle=False)

    # the same minibatches one call at a time: the step numbers 1..4, so the same masks
    stepped, sx, sy, stepped_loss = _model()
    one_by_one = sb.compile_step(stepped_loss, [sx, sy], list(stepped.parameters().values()), sb.optim.SGD(lr=0.5))
    losses = [one_by_one(X[i : i + 8], Y[i : i + 8]) for i in range(0, 32, 8)]
    assert epoch_step.steps == one_by_one.steps == 4
    assert epoch_loss == pytest.approx(np.mean(losses), rel=1e-12)
    for p, q in zip(model.parameters().values(), stepped.parameters().values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-12)


def _fixed_mask_training(data, labels, batch_size):
    """The model of _model() with its mask drawn at counter 1 for every minibatch."""
    model, x, y, _ = _model()
    first, dropout, last = model
    hidden = first(x)
    masked = apply(dropout.mask, hidden, sb.random_uniform(hidden.shape, 7, counter=1.0, dtype="float64"))
    loss = sb.softmax_cross_entropy(last(masked), y)
    step = sb.compile_step(loss, [x, y], list(model.parameters().values()), sb.optim.SGD(lr=0.5))
    step.epoch(data, labels, batch_size=batch_size, shuffle=False)
    return model


@pytest.mark.parametrize("batch_size", [32, 8])
def test_only_the_step_number_changes_the_mask_between_minibatches(batch_size):
    X, Y = _data()
    model, x, y, loss = _model()
    sb.compile_step(loss, [x, y], list(model.parameters().values()), sb.optim.SGD(lr=0.5)).epoch(
        X, Y, batch_size=batch_size, shuffle=False
    )
    fixed = _fixed_mask_training(X, Y, batch_size)
    same = [np.array_equal(p.value, q.value) for p, q in zip(model.parameters().values(), fixed.parameters().values())]
    # one minibatch: step 1 is counter 1, the same mask; several: the later masks differ
    assert all(same) if batch_size == 32 else not any(same)


def test_epochs_are_reproducible_and_differ_without_dropout_or_with_another_seed():
    X, Y = _data()

    def train(**options):
        model, x, y, loss = _model(**options)
        step = sb.compile_step(loss, [x, y], list(model.parameters().values()), sb.optim.SGD(lr=0.5))
        return [step.epoch(X, Y, batch_size=8, seed=e) for e in range(2)]

    first = train()
    assert train() == first
    assert train(training=False) != first
    assert train(dropout_seed=8) != first


def test_the_user_does_not_list_the_step_number():
    model, x, y, loss = _model()
    with pytest.raises(sb.GraphError, match="fed by the training step itself"):
        sb.compile_step(loss, [x, y, sb.step_number()], list(model.parameters().values()), sb.optim.SGD(lr=0.1))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: sb.nn.Dropout(1.0), r"rate must be a number in \[0, 1\), got 1.0"),
        (lambda: sb.nn.Dropout(-0.1), "rate must be a number"),
        (lambda: sb.nn.Dropout("half"), "rate must be a number"),
        (lambda: sb.nn.Dropout(0.5, seed=-2), r"Dropout: seed must be an int in \[0, 2\*\*64\)"),
        (lambda: sb.nn.Dropout(0.5)(sb.input("labels", (None,), "int64")), "is int64, expected float32 or float64"),
    ],
)
def test_bad_arguments_are_refused(build, message):
    with pytest.raises(sb.GraphError, match=message):
        build()


def test_description_rebuilds_the_layer():
    layer = sb.nn.Dropout(0.25, seed=4)
    assert repr(layer) == "Dropout(rate=0.25, seed=4)"
    assert sb.nn.build(layer.describe()).describe() == {
        "type": "Dropout",
        "args": {"rate": 0.25, "seed": 4},
        "children": {},
    }
