"""The NumPy reference evaluator against plain NumPy, and the graph's identity rules."""

import numpy as np
import pytest

import symbackprop as sb

SHAPES = [(1,), (3,), (17,), (1, 1), (3, 17), (17, 1, 3)]
DTYPES = ["float32", "float64"]
RTOL = {"float32": 2e-6, "float64": 1e-13, "int64": 0}


def np_sigmoid(a):
    return 1 / (1 + np.exp(-a))


def np_softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_logsumexp(a, axis=-1, keepdims=False):
    return np.log(np.exp(a).sum(axis=axis, keepdims=keepdims))


UNARY = {  # name: (symbackprop, NumPy, low, high)
    "exp": (sb.exp, np.exp, -3, 3),
    "log": (sb.log, np.log, 0.1, 5),
    "sqrt": (sb.sqrt, np.sqrt, 0, 5),
    "abs": (sb.abs, np.abs, -3, 3),
    "tanh": (sb.tanh, np.tanh, -3, 3),
    "sigmoid": (sb.sigmoid, np_sigmoid, -8, 8),
    "relu": (sb.relu, lambda a: np.maximum(a, 0), -3, 3),
    "leaky_relu": (lambda x: sb.leaky_relu(x, 0.2), lambda a: np.where(a > 0, a, 0.2 * a), -3, 3),
    "softplus": (sb.softplus, lambda a: np.log1p(np.exp(a)), -8, 8),
    "negative": (lambda x: -x, np.negative, -3, 3),
    "numbers": (lambda x: (1 - x) ** 2 / 4 + 2**x, lambda a: (1 - a) ** 2 / 4 + 2**a, -3, 3),
}

BINARY = {
    "add": (lambda x, y: x + y, np.add),
    "subtract": (lambda x, y: x - y, np.subtract),
    "multiply": (lambda x, y: x * y, np.multiply),
    "divide": (lambda x, y: x / y, np.divide),
    "power": (lambda x, y: sb.abs(x) ** y, lambda a, b: np.abs(a) ** b),
    "maximum": (sb.maximum, np.maximum),
    "minimum": (sb.minimum, np.minimum),
    "where": (lambda x, y: sb.where(x - 0.5, x, y), lambda a, b: np.where(a != 0.5, a, b)),
}
BROADCAST_PAIRS = [((3,), (3,)), ((17, 3), (3,)), ((17, 1), (1, 3)), ((1,), (17, 3)), ((3, 1, 17), (17,))]

STRUCTURAL = {  # on arrays of rank 3
    "sum": (lambda x: x.sum(axis=0), lambda a: a.sum(axis=0)),
    "sum_keepdims": (lambda x: x.sum(axis=(0, 2), keepdims=True), lambda a: a.sum(axis=(0, 2), keepdims=True)),
    "sum_all": (lambda x: x.sum(), np.sum),
    "max": (lambda x: x.max(axis=-1), lambda a: a.max(axis=-1)),
    "max_all": (lambda x: x.max(), np.max),
    "mean": (lambda x: sb.mean(x, axis=1), lambda a: a.mean(axis=1)),
    "transpose": (lambda x: x.transpose(1, 2, 0), lambda a: a.transpose(1, 2, 0)),
    "T": (lambda x: x.T, lambda a: a.T),
    "reshape": (lambda x: x.reshape(-1), lambda a: a.reshape(-1)),
    "slicing": (lambda x: x[::2, ..., -1], lambda a: a[::2, ..., -1]),
    "index": (lambda x: x[-1, :, -1:], lambda a: a[-1, :, -1:]),
    "broadcast": (lambda x: sb.broadcast_to(x, (2,) + x.shape), lambda a: np.broadcast_to(a, (2,) + a.shape)),
    "concat": (lambda x: sb.concat([x, 2 * x], axis=1), lambda a: np.concatenate([a, 2 * a], axis=1)),
    "softmax": (sb.softmax, np_softmax),
    "softmax_axis0": (lambda x: sb.softmax(x, axis=0), lambda a: np_softmax(a, axis=0)),
    "log_softmax": (sb.log_softmax, lambda a: np.log(np_softmax(a))),
    "logsumexp": (sb.logsumexp, np_logsumexp),
    "logsumexp_keepdims": (lambda x: sb.logsumexp(x, 1, True), lambda a: np_logsumexp(a, 1, True)),
    "cast_int": (lambda x: sb.cast(x * 4, "int64"), lambda a: (a * 4).astype(np.int64)),
}
RANK3_SHAPES = [(1, 1, 1), (3, 1, 17), (17, 3, 1)]

MATMUL_SHAPES = [((1, 3), (3, 17)), ((17, 1), (1, 3)), ((3,), (3, 17)), ((17, 3), (3,)), ((1, 1), (1, 1))]


def random(shape, dtype="float64", low=-3, high=3, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def assert_matches(got, expected, dtype):
    assert got.dtype == np.dtype(dtype) and got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_function_matches_numpy(name, dtype):
    fn, np_fn, low, high = UNARY[name]
    for shape in SHAPES:
        x = sb.input("x", shape, dtype)
        a = random(shape, dtype, low, high)
        assert_matches(sb.evaluate(fn(x), {x: a}), np_fn(a), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_function_broadcasts_like_numpy(name, dtype):
    fn, np_fn = BINARY[name]
    for x_shape, y_shape in BROADCAST_PAIRS:
        x, y = sb.input("x", x_shape, dtype), sb.input("y", y_shape, dtype)
        a, b = random(x_shape, dtype, seed=1), random(y_shape, dtype, seed=2)
        assert_matches(sb.evaluate(fn(x, y), {x: a, y: b}), np_fn(a, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_structural_op_matches_numpy(name, dtype):
    fn, np_fn = STRUCTURAL[name]
    for shape in RANK3_SHAPES:
        x = sb.input("x", shape, dtype)
        a = random(shape, dtype)
        expected = np.asarray(np_fn(a))
        assert_matches(sb.evaluate(fn(x), {x: a}), expected, expected.dtype.name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_matches_numpy(dtype):
    for x_shape, y_shape in MATMUL_SHAPES:
        x, y = sb.input("x", x_shape, dtype), sb.input("y", y_shape, dtype)
        a, b = random(x_shape, dtype, seed=1), random(y_shape, dtype, seed=2)
        assert_matches(sb.evaluate(x @ y, {x: a, y: b}), a @ b, dtype)


def test_gather_and_one_hot_match_numpy():
    table = sb.param("table", (17, 3), init="normal", seed=0)
    labels = sb.input("labels", (None,), "int64")
    picked = np.array([16, 0, 3, 3])
    np.testing.assert_array_equal(sb.evaluate(sb.gather(table, labels), {labels: picked}), table.value[picked])
    np.testing.assert_array_equal(sb.evaluate(sb.one_hot(labels, 17), {labels: picked}), np.eye(17)[picked])


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_batch_dimension_takes_the_fed_size(batch):
    x = sb.input("x", (None, 3))
    W = sb.param("W", (3, 2), init="normal", seed=0)
    outputs = [x @ W, sb.mean(x, axis=0), sb.mean(x), x.sum(axis=0), sb.batch_size()]
    assert [o.shape for o in outputs] == [(None, 2), (3,), (), (3,), ()]
    a = random((batch, 3), "float32")
    expected = [a @ W.value, a.mean(axis=0), a.mean(), a.sum(axis=0), np.float32(batch)]
    for got, want in zip(sb.evaluate(outputs, {"x": a}), expected):
        assert_matches(got, want, "float32")


def test_mlp_with_a_batch_of_one_matches_numpy():
    x = sb.input("x", (None, 3), "float64")
    W1 = sb.param("W1", (3, 17), init="normal", seed=1, dtype="float64")
    b1 = sb.param("b1", (17,), init="normal", seed=2, dtype="float64")
    W2 = sb.param("W2", (17, 1), init="normal", seed=3, dtype="float64")
    a = random((1, 3))
    expected = np_sigmoid(np.tanh(a @ W1.value + b1.value) @ W2.value)
    assert_matches(sb.evaluate(sb.sigmoid(sb.tanh(x @ W1 + b1) @ W2), {x: a}), expected, "float64")


def test_float32_graphs_stay_float32():
    x = sb.input("x", (None, 3))
    labels = sb.input("labels", (None,), "int64")
    W = sb.param("W", (3, 4), init="normal", seed=0)
    logits = sb.tanh(x @ W * 0.5 + 1) / 3
    loss = sb.softmax_cross_entropy(logits, labels) + sb.mean(sb.softmax(logits)) + sb.mean(sb.sqrt(x * x + 1e-3))
    outputs = [logits, loss, *sb.grad(loss, [W, x])]
    assert all(o.dtype == "float32" for o in outputs)
    values = sb.evaluate(outputs, {x: random((5, 3)), labels: [0, 1, 2, 3, 0]})
    assert [v.dtype for v in values] == [np.float32] * 4


def test_float32_and_float64_promote_to_float64():
    x, y = sb.input("x", (3,)), sb.input("y", (3,), "float64")
    assert (x * y).dtype == "float64"
    assert sb.evaluate(x + y, {x: np.ones(3), y: np.ones(3)}).dtype == np.float64


def test_same_expression_built_twice_is_the_same_object():
    def build():
        x = sb.input("x", (None, 3))
        W, b = sb.param("W", (3, 2)), sb.param("b", (2,))
        return x, W, b

    x, W, b = build()
    assert sb.input("x", (None, 3)) is x
    assert sb.tanh(x @ W + b) is sb.tanh(x @ W + b)
    assert sb.softmax(x) is sb.softmax(x)
    assert x[:, 1:] is x[:, 1:]
    assert sb.grad(sb.tanh(x @ W + b).sum(), [W])[0] is sb.grad(sb.tanh(x @ W + b).sum(), [W])[0]
    assert sb.tanh(x) is not sb.sigmoid(x)
    assert sb.input("x", (None, 4)) is not x and sb.input("x", (None, 3), "float64") is not x


def test_params_with_the_same_name_are_distinct():
    first, second = sb.param("W", (3, 2)), sb.param("W", (3, 2))
    assert first is not second
    assert (first + 1) is not (second + 1)


def test_const_equality():
    assert sb.const(2.0) is sb.const(2.0)
    assert sb.const([1.0, 2.0]) is sb.const(np.array([1.0, 2.0], dtype=np.float32))
    assert sb.const(np.array([1.0, 2.0])).dtype == "float64"
    assert sb.const([1.0, 2.0]) is not sb.const([1.0, 3.0])
    assert sb.const(2.0) is not sb.const(2.0, "float64")
    assert sb.const(2) is not sb.const(2.0)
    assert sb.const(2).dtype == "int64" and sb.const(2.0).dtype == "float32"
    assert sb.const(np.ones((2, 2))) is not sb.const(np.ones(4))
    assert sb.evaluate(sb.const([[1.5, 2.5]]), {}).tolist() == [[1.5, 2.5]]


def test_const_value_is_read_only():
    source = np.array([1.0, 2.0])
    c = sb.const(source)
    source[0] = 9.0
    assert c.value.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):
        c.value[0] = 5.0


def test_batch_dimension_is_printed_as_n():
    x = sb.input("x", (None, 3))
    assert repr(x @ sb.param("W", (3, 2))) == "<Tensor matmul(...) (n, 2) float32>"
    assert sb.grad(sb.mean(x), x).shape == (None, 3)


def test_feeds_by_name_or_tensor_and_list_outputs():
    x = sb.input("x", (2,), "float64")
    by_name = sb.evaluate([x * 2, x + 1], {"x": [1.0, 2.0]})
    by_tensor = sb.evaluate([x * 2, x + 1], {x: np.array([1.0, 2.0])})
    assert isinstance(by_name, list)
    for got, want in zip(by_name + by_tensor, [[2.0, 4.0], [2.0, 3.0]] * 2):
        assert got.tolist() == want


def test_params_are_read_at_evaluation_time():
    w = sb.param("w", (2,), init=np.array([1.0, 2.0]))
    doubled = w * 2
    assert sb.evaluate(doubled, {}).tolist() == [2.0, 4.0]
    w.value = np.array([3.0, 4.0])
    assert sb.evaluate(doubled, {}).tolist() == [6.0, 8.0]


def test_scalar_inputs_and_params_keep_their_shape():
    s, p = sb.input("s", (), "float64"), sb.param("p", (), init=2.0, dtype="float64")
    assert p.value.shape == ()
    got = sb.evaluate(s * p + s, {s: 3.0})
    assert got.shape == () and got == 9.0


def test_a_param_owns_its_value():
    # Training updates a param's value in place: it must not write into the caller's array
    # or into another param made from the same array.
    start = np.ones((2, 2), dtype=np.float32)
    p = sb.param("p", (2, 2), init=start)
    q = sb.param("q", (2, 2), init=start)
    p.value[0, 0] = 5.0
    q.value = start
    q.value[1, 1] = 7.0
    assert start[0, 0] == 1.0 and start[1, 1] == 1.0 and q.value[0, 0] == 1.0
