"""Compiled training steps against the same updates computed by the reference evaluator."""

import numpy as np
import pytest

import symbackprop as sb

OPTIMIZERS = {
    "sgd": lambda: sb.optim.SGD(lr=0.1),
    "momentum": lambda: sb.optim.Momentum(lr=0.05, momentum=0.9),
    "nesterov": lambda: sb.optim.Momentum(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: sb.optim.Adam(lr=0.01),
    "adamw": lambda: sb.optim.AdamW(lr=0.01, weight_decay=0.1),
    "rmsprop": lambda: sb.optim.RMSProp(lr=0.01),
}


def mlp(dtype, seed=0):
    x = sb.input("x", (None, 5), dtype)
    y = sb.input("y", (None,), "int64")
    W1 = sb.param("W1", (5, 7), init="glorot_uniform", seed=seed, dtype=dtype)
    b1 = sb.param("b1", (7,), init="normal", seed=seed + 1, dtype=dtype, std=0.1)
    W2 = sb.param("W2", (7, 3), init="glorot_uniform", seed=seed + 2, dtype=dtype)
    loss = sb.softmax_cross_entropy(sb.tanh(x @ W1 + b1) @ W2, y)
    return x, y, [W1, b1, W2], loss


def data(count=23, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, 5)), rng.integers(0, 3, count)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_steps_match_the_reference_updates(name, dtype):
    x, y, params, loss = mlp(dtype)
    twin_x, twin_y, twin_params, twin_loss = mlp(dtype)
    step = sb.compile_step(loss, [x, y], params, OPTIMIZERS[name]())
    reference = OPTIMIZERS[name]()
    states = reference.init_states(twin_params)
    grads = sb.grad(twin_loss, twin_params)
    X, Y = data()
    tolerance = dict(rtol=1e-9, atol=1e-12) if dtype == "float64" else dict(rtol=2e-4, atol=1e-6)
    approx = dict(rel=tolerance["rtol"], abs=tolerance["atol"])
    for t in range(1, 6):
        batch = slice(4 * t, 4 * t + 7)
        expected_loss, *grad_values = sb.evaluate(
            [twin_loss, *grads], {twin_x: X[batch].astype(dtype), twin_y: Y[batch]}
        )
        reference.reference_step(twin_params, grad_values, states, t)
        assert step(X[batch], Y[batch]) == pytest.approx(float(expected_loss), **approx)
        for p, q in zip(params, twin_params):
            np.testing.assert_allclose(p.value, q.value, **tolerance)
    for key, value in states.items():
        twin = next(k for k in step.state if k[0].label == key[0].label and k[1] == key[1])
        np.testing.assert_allclose(step.state[twin], value, **tolerance)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_epoch_equals_its_steps_in_the_same_order(name):
    x, y, params, loss = mlp("float64")
    twin_x, twin_y, twin_params, twin_loss = mlp("float64")
    X, Y = data(count=23)
    epoch = sb.compile_step(loss, [x, y], params, OPTIMIZERS[name]())
    steps = sb.compile_step(twin_loss, [twin_x, twin_y], twin_params, OPTIMIZERS[name]())
    mean = epoch.epoch(X, Y, batch_size=5, shuffle=True, seed=3)
    order = np.random.default_rng(3).permutation(23)
    total = 0.0
    for start in range(0, 23, 5):
        rows = order[start : start + 5]
        total += steps(X[rows], Y[rows]) * len(rows)
    assert mean == pytest.approx(total / 23, rel=1e-12)
    assert epoch.steps == steps.steps == 5
    for p, q in zip(params, twin_params):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-12)


def test_training_reduces_the_loss():
    x, y, params, loss = mlp("float32")
    X, Y = data(count=200)
    Y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    step = sb.compile_step(loss, [x, y], params, sb.optim.Adam(lr=0.05))
    first = step.epoch(X, Y, batch_size=16, seed=0)
    for epoch in range(1, 30):
        last = step.epoch(X, Y, batch_size=16, seed=epoch)
    assert last < 0.5 * first


def test_bad_arguments_are_refused_before_native_code_runs():
    x, y, params, loss = mlp("float32")
    step = sb.compile_step(loss, [x, y], params, sb.optim.SGD(lr=0.1))
    X, Y = data()
    before = [p.value.copy() for p in params]
    with pytest.raises(sb.GraphError, match="input 'x': expected shape"):
        step(X[:, :4], Y)
    with pytest.raises(sb.GraphError, match="batch size"):
        step(X, Y[:5])
    with pytest.raises(sb.GraphError, match=r"input 'y': the value 7 is out of range; expected 0 <= y < 3"):
        step(X, np.full(23, 7))
    with pytest.raises(sb.GraphError, match="expected integers"):
        step(X, Y.astype(float))
    with pytest.raises(TypeError, match="expected 2 argument"):
        step(X)
    with pytest.raises(sb.GraphError, match="batch_size must be a positive int"):
        step.epoch(X, Y, batch_size=0)
    for p, value in zip(params, before):
        np.testing.assert_array_equal(p.value, value)
    with pytest.raises(sb.GraphError, match="must be a tensor made by sb.param"):
        sb.compile_step(loss, [x, y], [x], sb.optim.SGD(lr=0.1))
    with pytest.raises(sb.GraphError, match="loss must be a scalar"):
        sb.compile_step(x, [x, y], params, sb.optim.SGD(lr=0.1))


def test_a_param_the_step_does_not_train_is_read_from_its_value():
    x, y = sb.input("x", (None, 2)), sb.input("y", (None, 1))
    W = sb.param("W", (2, 1))
    b = sb.param("b", (1,), init=np.array([0.5]))
    step = sb.compile_step(sb.mse(x @ W + b, y), [x, y], [W], sb.optim.SGD(lr=0.1))
    X = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    Y = X @ np.array([[1.0], [2.0]], dtype=np.float32) + 0.5
    for _ in range(200):
        step(X, Y)
    np.testing.assert_allclose(W.value.ravel(), [1.0, 2.0], atol=1e-4)
    assert b.value[0] == 0.5  # not trained
    b.value = np.array([0.0])  # a new value is read by the next call
    assert step(X, Y) == pytest.approx(0.25, rel=1e-3)
    assert np.isfinite(step.epoch(X, Y, batch_size=4, seed=0))


def test_replacing_an_optimizer_state_array_is_checked_and_copied():
    x = sb.input("x", (None, 2))
    W = sb.param("W", (2, 1), init=np.ones((2, 1)))
    step = sb.compile_step((x @ W).sum(), [x], [W], sb.optim.Momentum(lr=0.1))
    (key,) = step.state
    with pytest.raises(sb.GraphError, match=r"has shape \(2, 1\), got an array of shape \(1,\)"):
        step.state[key] = np.zeros(1, np.float32)
    step.state[key] = np.ones((1, 2), np.float64).T  # other dtype, not contiguous: copied
    assert step.state[key].dtype == np.float32 and step.state[key].flags.c_contiguous
    step(np.ones((3, 2), np.float32))
    np.testing.assert_allclose(W.value, 1 - 0.1 * (0.9 + 3))  # v = 0.9·1 + 3, w = 1 − 0.1·v
