"""The fast path of a compiled call: arguments like the last ones skip the checks they would
pass again, arrays still bound are not bound again, and the generated code refuses a table
with an empty slot. None of it may change a result or let a bad argument through."""

import numpy as np
import pytest

import symbackprop as sb
from codegen import runtime
from codegen.runtime import CallChecks, address


def classifier():
    x = sb.input("x", (None, 3))
    y = sb.input("y", (None,), "int64")
    W = sb.param("W", (3, 4), init=np.linspace(-1, 1, 12).reshape(3, 4))
    b = sb.param("b", (4,), init=np.zeros(4))
    loss = sb.softmax_cross_entropy(sb.tanh(x @ W) + b, y)
    return x, y, W, b, loss


def data(batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 3)).astype(np.float32), rng.integers(0, 4, size=batch)


def test_repeated_arguments_take_the_fast_path_and_others_the_full_checks():
    x, y, *_ = classifier()
    checks = CallChecks([x, y], [("y", 4)])
    X, Y = data()
    assert not checks.repeats((X, Y))  # nothing accepted yet
    checks((X, Y))
    assert checks.repeats((X + 1, Y.copy()))  # other arrays, same dtypes and shapes
    assert not checks.repeats((X[:4], Y[:4]))  # another batch size
    assert not checks.repeats((X.astype(np.float64), Y))  # converted by the full checks
    assert not checks.repeats((np.asfortranarray(np.ones((5, 3), np.float32)), Y))
    assert not checks.repeats((np.ones((3, 5), np.float32).T, Y))  # the shape, not the layout
    assert not checks.repeats((np.ones((5, 6), np.float32)[:, ::2], Y))
    assert not checks.repeats((X, Y.astype(np.int32)))
    assert not checks.repeats((X,))


def test_a_label_changed_in_place_is_refused_on_the_fast_path():
    x, y, W, b, loss = classifier()
    f = sb.compile(loss, inputs=[x, y])
    X, Y = data()
    f(X, Y)
    Y[2] = 4
    with pytest.raises(sb.GraphError, match=r"input 'y': the value 4 is out of range; expected 0 <= y < 4"):
        f(X, Y)
    Y[2] = -3
    with pytest.raises(sb.GraphError, match="the value -3 is out of range"):
        f(X, Y)
    step = sb.compile_step(loss, [x, y], [W, b], sb.optim.SGD(lr=0.1))
    Y[2] = 1
    step(X, Y)
    Y[0] = 7
    before = W.value.copy()
    with pytest.raises(sb.GraphError, match="the value 7 is out of range"):
        step(X, Y)
    np.testing.assert_array_equal(W.value, before)


def test_arrays_changed_in_place_or_replaced_between_calls_are_read_anew():
    x, y, W, b, loss = classifier()
    f = sb.compile([loss, *sb.grad(loss, [W])], inputs=[x, y])
    X, Y = data()
    for _ in range(2):  # the second call finds every array already bound
        got = f(X, Y)
        for g, e in zip(got, sb.evaluate([loss, *sb.grad(loss, [W])], {x: X, y: Y})):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
        X *= -2  # the same array, new contents
        Y[:] = Y[::-1]
        W.value[0, 0] += 1  # the param's array, changed in place
    W.value = np.full((3, 4), 0.5)  # a new array for the param
    np.testing.assert_allclose(f(X, Y)[0], sb.evaluate(loss, {x: X, y: Y}), rtol=1e-5)


def test_conversions_still_apply_after_fast_calls():
    x, y, W, b, loss = classifier()
    f = sb.compile(loss, inputs=[x, y])
    X, Y = data()
    expected = sb.evaluate(loss, {x: X, y: Y})
    assert f(X, Y) == pytest.approx(expected, rel=1e-6)
    wide = np.zeros((5, 6), np.float32)
    wide[:, ::2] = X
    assert f(wide[:, ::2], Y) == pytest.approx(expected, rel=1e-6)  # not contiguous: copied
    assert f(X.astype(np.float64), Y.tolist()) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(sb.GraphError, match="expected integers"):
        f(X, Y.astype(np.float64))
    with pytest.raises(sb.GraphError, match="batch size"):
        f(X, Y[:4])


def test_the_step_loss_is_a_new_float_each_call_and_steps_are_counted():
    x, y, W, b, loss = classifier()
    step = sb.compile_step(loss, [x, y], [W, b], sb.optim.SGD(lr=0.5))
    X, Y = data()
    losses = [step(X, Y) for _ in range(4)]
    assert all(isinstance(v, float) for v in losses)
    assert losses == sorted(losses, reverse=True) and losses[0] > losses[-1]
    assert step.steps == 4
    assert step.epoch(X, Y, batch_size=2, shuffle=False) < losses[-1]
    assert step.steps == 7


def test_an_empty_slot_is_refused_by_the_generated_code():
    x, y, W, b, loss = classifier()
    step = sb.compile_step(loss, [x, y], [W, b], sb.optim.SGD(lr=0.1))
    X, Y = data()
    step(X, Y)
    slot = next(buf.slot for buf in step.program.buffers if buf.node is W)
    step.bound.table[slot] = 0  # W is still the array bound last time, so the call keeps its slot
    before = W.value.copy()
    with pytest.raises(RuntimeError, match=r"nothing bound to \['W'\]"):
        step(X, Y)
    np.testing.assert_array_equal(W.value, before)  # no kernel ran
    with pytest.raises(RuntimeError, match=r"nothing bound to \['W'\]"):
        step.epoch(X, Y, batch_size=2)


def test_epochs_over_changing_data_and_batch_sizes_match_steps_called_one_by_one():
    by_epoch, by_step = classifier(), classifier()
    epochs = sb.compile_step(by_epoch[4], by_epoch[:2], by_epoch[2:4], sb.optim.Momentum(lr=0.1))
    steps = sb.compile_step(by_step[4], by_step[:2], by_step[2:4], sb.optim.Momentum(lr=0.1))
    X, Y = data(7, seed=3)
    for rows, batch in ((7, 3), (5, 2), (5, 2), (7, 7), (6, 4)):
        X[:] += 0.25  # the same data set changed in place between epochs
        Xs, Ys = X[:rows], Y[:rows]
        mean = epochs.epoch(Xs, Ys, batch_size=batch, shuffle=False)
        losses = [steps(Xs[i : i + batch], Ys[i : i + batch]) * len(Ys[i : i + batch]) for i in range(0, rows, batch)]
        assert mean == pytest.approx(sum(losses) / rows, rel=1e-6)
        np.testing.assert_allclose(by_epoch[2].value, by_step[2].value, rtol=1e-6)
    assert epochs.steps == steps.steps == 3 + 3 + 3 + 1 + 2


def test_addresses_read_from_the_array_header_match_numpys():
    assert runtime._FAST_ADDRESS  # CPython with NumPy's array layout
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays = [base, base[1:, 2:], base[::-1], base.T, np.asfortranarray(base), base[:0], np.float32(3) * np.ones(())]
    arrays += [np.broadcast_to(base[0], (3, 6)), np.frombuffer(bytes(16), np.uint8)]  # read-only
    for array in arrays:
        assert address(array) == array.__array_interface__["data"][0]
