"""Losses and penalties: values against NumPy and PyTorch, gradients against central differences and
autograd, compiled code against the evaluator, and clear errors for bad arguments."""

import numpy as np
import pytest

import symbackprop as sb

RNG = np.random.default_rng(0)
P, T = RNG.normal(size=(7, 3)), RNG.normal(size=(7, 3))

# name: (our loss of (prediction, target), the same in NumPy, torch.nn.functional's name and arguments)
ELEMENTWISE = {
    "mae": (sb.mae, lambda p, t: np.mean(np.abs(p - t)), ("l1_loss", {})),
    "huber": (
        sb.huber,
        lambda p, t: np.mean(np.where(np.abs(p - t) <= 1, (p - t) ** 2 / 2, np.abs(p - t) - 0.5)),
        ("huber_loss", {"delta": 1.0}),
    ),
    "huber_delta": (
        lambda p, t: sb.huber(p, t, delta=0.4),
        lambda p, t: np.mean(np.where(np.abs(p - t) <= 0.4, (p - t) ** 2 / 2, 0.4 * (np.abs(p - t) - 0.2))),
        ("huber_loss", {"delta": 0.4}),
    ),
}


def inputs(dtype="float64", shape=(None, 3)):
    return sb.input("p", shape, dtype), sb.input("t", shape, dtype)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_values_match_numpy(name):
    loss, reference, _ = ELEMENTWISE[name]
    p, t = inputs()
    assert float(sb.evaluate(loss(p, t), {p: P, t: T})) == pytest.approx(reference(P, T), rel=1e-14)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_gradients_match_central_differences(name):
    p, t = inputs(shape=P.shape)
    # Both operands: the target may be a model's output too.
    checks = sb.check_grads(ELEMENTWISE[name][0](p, t), [p, t], {p: P, t: T})
    assert [c.order for c in checks] == [1, 2]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_values_and_gradients_match_torch(name):
    torch = pytest.importorskip("torch")
    loss, _, (torch_name, torch_args) = ELEMENTWISE[name]
    p, t = inputs()
    value, gp, gt = sb.evaluate([loss(p, t), *sb.grad(loss(p, t), [p, t])], {p: P, t: T})
    leaves = [torch.tensor(a, requires_grad=True) for a in (P, T)]
    torch_value = getattr(torch.nn.functional, torch_name)(*leaves, **torch_args)
    torch_value.backward()
    assert float(value) == pytest.approx(torch_value.item(), rel=1e-14)
    np.testing.assert_allclose(gp, leaves[0].grad.numpy(), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(gt, leaves[1].grad.numpy(), rtol=1e-13, atol=1e-16)


def test_huber_gradient_is_the_clipped_error_and_mae_the_sign():
    p, t = inputs(shape=(5,))
    error = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    feeds = {p: error, t: np.zeros(5)}
    (huber_grad,) = sb.evaluate(sb.grad(sb.huber(p, t), [p]), feeds)
    np.testing.assert_array_equal(huber_grad, np.clip(error, -1, 1) / 5)
    (mae_grad,) = sb.evaluate(sb.grad(sb.mae(p, t), [p]), feeds)
    np.testing.assert_array_equal(mae_grad, np.sign(error) / 5)  # 0 at a tie, as torch's l1_loss
    # Where the pieces meet, the value and the slope agree: δ²/2 and δ.
    p1, t1 = inputs(shape=(1,))
    edge = {p1: np.array([1.0]), t1: np.array([0.0])}
    assert float(sb.evaluate(sb.huber(p1, t1), edge)) == 0.5
    assert sb.evaluate(sb.grad(sb.huber(p1, t1), p1), edge).tolist() == [1.0]


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [1, 17])
def test_compiled_matches_the_evaluator(name, dtype, rows):
    p, t = inputs(dtype)
    loss = ELEMENTWISE[name][0](p, t)
    outputs = [loss, *sb.grad(loss, [p, t])]
    data = {p: RNG.normal(size=(rows, 3)).astype(dtype), t: RNG.normal(size=(rows, 3)).astype(dtype)}
    tolerance = 1e-12 if dtype == "float64" else 1e-5
    for got, expected in zip(sb.compile(outputs, [p, t])(data[p], data[t]), sb.evaluate(outputs, data)):
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


# -- penalties ----------------------------------------------------------------------------------------
def params(dtype="float64"):
    W = sb.param("W", (3, 4), init="normal", seed=1, dtype=dtype)
    b = sb.param("b", (4,), init="normal", seed=2, dtype=dtype)
    return W, b


def test_penalties_sum_over_every_param():
    W, b = params()
    assert float(sb.evaluate(sb.l1_penalty([W, b], 0.3))) == pytest.approx(
        0.3 * (np.abs(W.value).sum() + np.abs(b.value).sum()), rel=1e-14
    )
    assert float(sb.evaluate(sb.l2_penalty([W, b], 0.3))) == pytest.approx(
        0.3 * ((W.value**2).sum() + (b.value**2).sum()), rel=1e-14
    )
    assert float(sb.evaluate(sb.l2_penalty(W, 2.0))) == pytest.approx(2 * (W.value**2).sum(), rel=1e-14)
    gW, gb = sb.evaluate(sb.grad(sb.l2_penalty([W, b], 0.3), [W, b]))
    np.testing.assert_allclose(gW, 0.6 * W.value, rtol=1e-15)
    np.testing.assert_allclose(gb, 0.6 * b.value, rtol=1e-15)
    (gW,) = sb.evaluate(sb.grad(sb.l1_penalty([W, b], 0.3), [W]))
    np.testing.assert_allclose(gW, 0.3 * np.sign(W.value), rtol=1e-15)


@pytest.mark.parametrize("penalty", [sb.l1_penalty, sb.l2_penalty])
def test_penalties_added_to_a_loss_check_and_compile(penalty):
    x, y = sb.input("x", (None, 3), "float64"), sb.input("y", (None, 4), "float64")
    W, b = params()
    loss = sb.mse(sb.tanh(x @ W + b), y) + penalty([W, b], 0.01)
    feeds = {x: RNG.normal(size=(6, 3)), y: RNG.normal(size=(6, 4))}
    sb.check_grads(loss, [W, b], feeds)
    outputs = [loss, *sb.grad(loss, [W, b])]
    for got, expected in zip(sb.compile(outputs, [x, y])(feeds[x], feeds[y]), sb.evaluate(outputs, feeds)):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_mixed_precision_params_give_a_float64_penalty():
    W32 = sb.param("W32", (2,), init=np.array([1.0, -2.0]), dtype="float32")
    W64 = sb.param("W64", (2,), init=np.array([0.5, 0.25]), dtype="float64")
    penalty = sb.l2_penalty([W32, W64], 1.0)
    assert penalty.dtype == "float64" and penalty.shape == ()
    assert float(sb.evaluate(penalty)) == pytest.approx(5.3125)


# -- softmax cross-entropy with one-hot or probability targets --------------------------------------------
def test_softmax_cross_entropy_one_hot_rows_equal_class_labels():
    logits = sb.input("z", (None, 4), "float64")
    labels, rows = sb.input("labels", (None,), "int64"), sb.input("rows", (None, 4), "float64")
    Z, Y = RNG.normal(size=(6, 4)), np.array([0, 3, 1, 1, 2, 0])
    by_label = sb.evaluate(
        [sb.softmax_cross_entropy(logits, labels), *sb.grad(sb.softmax_cross_entropy(logits, labels), [logits])],
        {logits: Z, labels: Y},
    )
    by_row = sb.evaluate(
        [sb.softmax_cross_entropy(logits, rows), *sb.grad(sb.softmax_cross_entropy(logits, rows), [logits])],
        {logits: Z, rows: np.eye(4)[Y]},
    )
    for a, b in zip(by_label, by_row):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_softmax_cross_entropy_with_probabilities_matches_torch():
    torch = pytest.importorskip("torch")
    logits, targets = sb.input("z", (None, 4), "float64"), sb.input("q", (None, 4), "float64")
    Z = RNG.normal(size=(5, 4))
    Q = RNG.dirichlet(np.ones(4), size=5)
    loss = sb.softmax_cross_entropy(logits, targets)
    value, gz, gq = sb.evaluate([loss, *sb.grad(loss, [logits, targets])], {logits: Z, targets: Q})
    leaves = [torch.tensor(a, requires_grad=True) for a in (Z, Q)]
    torch_value = torch.nn.functional.cross_entropy(*leaves)
    torch_value.backward()
    assert float(value) == pytest.approx(torch_value.item(), rel=1e-14)
    np.testing.assert_allclose(gz, leaves[0].grad.numpy(), rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(gq, leaves[1].grad.numpy(), rtol=1e-12, atol=1e-16)
    compiled = sb.compile([loss, gz_node := sb.grad(loss, logits)], [logits, targets])(Z, Q)
    np.testing.assert_allclose(compiled[0], value, rtol=1e-12)
    np.testing.assert_allclose(compiled[1], sb.evaluate(gz_node, {logits: Z, targets: Q}), rtol=1e-12)


# -- bad arguments ---------------------------------------------------------------------------------------------
W_BAD = sb.param("W", (2, 2))
LABELS = sb.input("labels", (None,), "int64")
BAD = {
    "mae shapes": (
        lambda: sb.mae(sb.input("p", (None, 3)), sb.input("t", (None, 2))),
        r"mae: the prediction p \(n, 3\) and the target t \(n, 2\) must have the same shape",
    ),
    "huber shapes": (
        lambda: sb.huber(sb.input("p", (None, 3)), sb.input("t", (None,))),
        r"huber: the prediction p \(n, 3\) and the target t \(n,\) must have the same shape",
    ),
    "huber delta": (lambda: sb.huber(*inputs(), delta=0), r"huber: delta must be a finite number > 0, got 0"),
    "huber delta type": (lambda: sb.huber(*inputs(), delta="1"), r"delta must be a finite number > 0, got '1'"),
    "l1 no params": (lambda: sb.l1_penalty([], 0.1), r"l1_penalty: params must be a tensor or a non-empty list"),
    "l2 not a tensor": (
        lambda: sb.l2_penalty([W_BAD, 3.0], 0.1),
        r"l2_penalty: params\[1\] must be a float tensor, got 3.0",
    ),
    "l2 int64": (
        lambda: sb.l2_penalty([LABELS], 0.1),
        r"params\[0\] must be a float tensor, got an int64 tensor labels",
    ),
    "l2 scale": (lambda: sb.l2_penalty([W_BAD], -1), r"l2_penalty: scale must be a finite number >= 0, got -1"),
    "l1 scale nan": (
        lambda: sb.l1_penalty(W_BAD, float("nan")),
        r"l1_penalty: scale must be a finite number >= 0, got nan",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_raise(case):
    make, message = BAD[case]
    with pytest.raises(sb.GraphError, match=message):
        make()
