"""Bad input to every public entry point: a clear exception naming the culprit and what was expected."""

import warnings

import numpy as np
import pytest
import sympy

import symbackprop as sb

x = sb.input("x", (None, 3))
flabels = sb.input("flabels", (None,))
labels = sb.input("labels", (None,), "int64")
W = sb.param("W", (4, 2))
b = sb.param("b", (4,))
t, s = sympy.symbols("t s")
SWISH = sb.function("swish", t / (1 + sympy.exp(-t)), [t])
G = sb.GraphError

ERRORS = {  # name: (call, exception, message pattern)
    # shapes
    "matmul inner dimensions": (
        lambda: x @ W,
        G,
        r"matmul: cannot multiply x \(n, 3\) float32 by W \(4, 2\) float32: the inner dimensions 3 and 4 differ",
    ),
    "matmul rank": (lambda: x @ sb.param("V", (3, 2, 2)), G, r"matmul: .*rank 2.*V \(3, 2, 2\)"),
    "matmul dtypes": (
        lambda: x @ sb.param("V", (3, 2), dtype="float64"),
        G,
        r"matmul: .*V \(3, 2\) float64.*one float",
    ),
    "add shapes": (lambda: x + b, G, r"add of x, b: shapes \(n, 3\), \(4,\) cannot be broadcast"),
    "where shapes": (lambda: sb.where(x, b, 1.0), G, r"where of x, b: shapes"),
    "broadcast_to": (lambda: sb.broadcast_to(x, (4, 3)), G, r"broadcast of x: shapes \(n, 3\), \(4, 3\)"),
    "concat shapes": (lambda: sb.concat([x, W], axis=1), G, r"concat: W \(4, 2\) float32 does not match x \(n, 3\)"),
    "concat batch axis": (lambda: sb.concat([x, x], axis=0), G, r"concat: cannot concatenate along the batch"),
    "concat nothing": (lambda: sb.concat([]), G, r"concat: needs at least one tensor"),
    "reshape sizes": (lambda: x.reshape(4, 2), G, r"reshape: cannot reshape x \(n, 3\) float32 to \(4, 2\)"),
    "reshape -1": (lambda: W.reshape(-1, 3), G, r"reshape: cannot reshape W \(4, 2\) to \(-1, 3\)"),
    "reshape zero": (lambda: W.reshape(8, 0), G, r"reshape of W: bad dimension 0"),
    "mse shapes": (lambda: sb.mse(x, flabels), G, r"mse: the prediction x \(n, 3\) and the target flabels \(n,\)"),
    "bce shapes": (lambda: sb.binary_cross_entropy(x, flabels), G, r"binary_cross_entropy: .*x \(n, 3\).*flabels"),
    "cross-entropy label shape": (
        lambda: sb.softmax_cross_entropy(x, sb.input("l2", (None, 2), "int64")),
        G,
        r"labels l2 \(n, 2\) must have shape \(n,\) to match logits x \(n, 3\)",
    ),
    "cross-entropy logits rank": (
        lambda: sb.softmax_cross_entropy(b, labels),
        G,
        r"logits b must be \(batch, classes\)",
    ),
    # dtypes
    "int64 into tanh": (lambda: sb.tanh(labels), G, r"tanh: operand labels \(n,\) is int64; .*float32 or float64"),
    "int64 into add": (lambda: x + labels.reshape(None, 1), G, r"add: operand reshape\(...\) \(n, 1\) is int64"),
    "float labels for cross-entropy": (
        lambda: sb.softmax_cross_entropy(x, flabels),
        G,
        r"labels flabels \(n,\) are float32; class labels must be int64",
    ),
    "float labels for one_hot": (lambda: sb.one_hot(flabels, 3), G, r"one_hot: indices flabels \(n,\) float32 .*int64"),
    "float indices for gather": (lambda: sb.gather(W, flabels), G, r"gather: indices flabels .*must have dtype int64"),
    "one_hot depth": (lambda: sb.one_hot(labels, 0), G, r"one_hot of labels: depth must be a positive int, got 0"),
    "cast dtype": (lambda: sb.cast(x, "int8"), G, r"cast of x: dtype 'int8' is not supported; expected one of"),
    "input dtype": (lambda: sb.input("z", (3,), "int32"), G, r"input 'z': dtype 'int32' is not supported"),
    "string operand": (lambda: x + "a", G, r"cannot use a str \('a'\) as a tensor"),
    # grad
    "grad of a non-scalar": (lambda: sb.grad(x * 2, [x]), G, r"grad: y must be a scalar.*multiply.*\(n, 3\)"),
    "grad of an int scalar": (lambda: sb.grad(labels.sum(), [x]), G, r"grad: y must be a float scalar.*int64"),
    "grad wrt int": (lambda: sb.grad(x.sum(), [labels]), G, r"cannot differentiate with respect to labels.*int64"),
    "grad wrt a name": (lambda: sb.grad(x.sum(), ["x"]), TypeError, r"grad: wrt\[0\] must be a Tensor, got str"),
    "grad of a number": (lambda: sb.grad(1.0, [x]), TypeError, r"grad: y must be a Tensor, got float"),
    "check_grads of a non-scalar": (
        lambda: sb.check_grads(x * 2, [x], {"x": np.ones((2, 3))}),
        G,
        r"y must be a scalar",
    ),
    # evaluate
    "unknown feed name": (
        lambda: sb.evaluate(x * 2, {"X": np.ones((2, 3))}),
        G,
        r"no value fed for the input\(s\) \['x'\] \(the feeds name \['X'\]",
    ),
    "feed keyed by a param": (
        lambda: sb.evaluate(x * 2, {W: np.ones((4, 2))}),
        G,
        r"feeds must be keyed by inputs or their names; <Tensor W",
    ),
    "missing feed": (
        lambda: sb.evaluate(x.sum() + flabels.sum(), {"x": np.ones((2, 3))}),
        G,
        r"no value fed for the input\(s\) \['flabels'\]",
    ),
    "inconsistent batch": (
        lambda: sb.evaluate(x.sum() + flabels.sum(), {"x": np.ones((2, 3)), "flabels": np.ones(3)}),
        G,
        r"input 'flabels' has batch size 3, but 'x' has 2",
    ),
    "empty batch": (lambda: sb.evaluate(x.sum(), {"x": np.ones((0, 3))}), G, r"input 'x': the batch is empty"),
    "feed shape": (
        lambda: sb.evaluate(x, {"x": np.ones((2, 4))}),
        G,
        r"input 'x': expected shape \(n, 3\), got \(2, 4\)",
    ),
    "feed rank": (lambda: sb.evaluate(x, {"x": np.ones(3)}), G, r"input 'x': expected shape \(n, 3\), got \(3,\)"),
    "fractional labels": (
        lambda: sb.evaluate(sb.one_hot(labels, 3), {"labels": [0.5, 1.0]}),
        G,
        r"input 'labels': expected integers \(int64\), got float64",
    ),
    "string feed": (lambda: sb.evaluate(x, {"x": [["a", "b", "c"]]}), G, r"input 'x': expected numbers \(float32\)"),
    "feeds not a dict": (lambda: sb.evaluate(x, [np.ones((2, 3))]), TypeError, r"feeds must be a dict.*got list"),
    "output not a tensor": (lambda: sb.evaluate([x, 3], {}), TypeError, r"outputs must be Tensors, got int"),
    # functions
    "function stray symbol": (
        lambda: sb.function("f", t * s, [t]),
        G,
        r"function 'f': the body uses \['s'\].*args \['t'\]",
    ),
    "function body not SymPy": (lambda: sb.function("f", object(), [t]), G, r"function 'f': the body .* not a SymPy"),
    "function body a callable": (lambda: sb.function("f", lambda v: v, [t]), G, r"function 'f': .* not a SymPy"),
    "function body garbage": (lambda: sb.function("f", "t +", [t]), G, r"function 'f': the body 't \+' is not"),
    "function args not symbols": (lambda: sb.function("f", t, ["t"]), G, r"function 'f': args must be .*sympy.Symbol"),
    "function repeated args": (lambda: sb.function("f", t, [t, t]), G, r"function 'f': args .* repeat a symbol"),
    "function name": (lambda: sb.function("my f", t, [t]), G, r"function name must be an identifier, got 'my f'"),
    "function arity": (lambda: sb.function("g2", t * s, [t, s])(x), G, r"g2: takes 2 operand\(s\), got 1"),
    "function without derivative": (
        lambda: sb.function("h", sympy.Function("g")(t), [t]),
        G,
        r"derivative of h with respect to t: SymPy left the unevaluated term Derivative",
    ),
    "function derivative argument": (lambda: SWISH.derivative("s"), G, r"function 'swish': no argument 's'"),
    # params and inputs
    "init name": (
        lambda: sb.param("V", (3, 2), init="glorot"),
        G,
        r"param 'V': unknown init 'glorot'; expected one of",
    ),
    "init arguments": (lambda: sb.param("V", (3, 2), init="normal", sd=3), G, r"param 'V': bad arguments.*'sd'"),
    "init array shape": (
        lambda: sb.param("V", (3, 2), init=np.ones(3)),
        G,
        r"param V: .*shape \(3,\), expected \(3, 2\)",
    ),
    "param value shape": (lambda: setattr(W, "value", np.ones(3)), G, r"param W: .*shape \(3,\), expected \(4, 2\)"),
    "param with batch": (lambda: sb.param("V", (None, 2)), G, r"param 'V': a parameter cannot have the batch"),
    "input shape": (lambda: sb.input("z", (3, -1)), G, r"input 'z': shape \(3, -1\) has the dimension -1"),
    "input name": (lambda: sb.input("", (3,)), G, r"input name must be a non-empty string"),
    "param name": (lambda: sb.param(3, (3,)), G, r"param name must be a non-empty string, got 3"),
    # axes and indices
    "sum axis": (lambda: x.sum(axis=2), G, r"sum of x: axis 2 is out of range for a tensor of rank 2"),
    "sum repeated axis": (lambda: x.sum(axis=(1, -1)), G, r"sum of x: axis \(1, -1\) repeats an axis"),
    "max axis": (lambda: x.max(axis=-3), G, r"max of x: axis -3 is out of range"),
    "mean axis": (lambda: sb.mean(x, axis=5), G, r"mean of x: axis 5 is out of range"),
    "softmax axis": (lambda: sb.softmax(x, axis=5), G, r"of x: axis 5 is out of range"),
    "transpose axis": (lambda: x.transpose(0, 5), G, r"transpose of x: axes \(0, 5\) are out of range .* rank 2"),
    "transpose repeated axis": (
        lambda: x.transpose(0, 0),
        G,
        r"transpose: \(0, 0\) is not a permutation .* x \(n, 3\)",
    ),
    "concat axis": (lambda: sb.concat([x, x], axis=3), G, r"concat: axis 3 is out of range"),
    "index out of range": (lambda: W[5], G, r"indexing W \(4, 2\): index 5 is out of range on axis 0"),
    "negative step": (lambda: W[::-1], G, r"indexing W: only positive slice steps"),
    "too many indices": (lambda: W[0, 0, 0], G, r"indexing W \(4, 2\): too many indices"),
    "part of the batch": (lambda: x[1:], G, r"indexing x: the batch axis can only be taken whole"),
    "fancy index": (lambda: W[[0, 1]], G, r"indexing W: unsupported index \[0, 1\]"),
    "empty slice": (lambda: W[3:1], G, r"slice: slicing W \(4, 2\) float32 .* leaves no elements"),
    # Python protocols
    "truth value": (lambda: bool(x), TypeError, r"a Tensor has no truth value"),
    "iteration": (lambda: list(x), TypeError, r"a Tensor cannot be iterated"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_input_raises_a_clear_error(name):
    call, exception, pattern = ERRORS[name]
    with pytest.raises(exception, match=pattern):
        call()


def test_graph_error_is_a_value_error():
    assert issubclass(sb.GraphError, ValueError)


def test_nan_propagates_without_error_or_warning():
    v = sb.input("v", (None, 3), "float64")
    W = sb.param("Wn", (3, 2), init="normal", seed=0, dtype="float64")
    loss = sb.softmax_cross_entropy(sb.tanh(v @ W), labels) + sb.mean(sb.log(sb.sigmoid(v)))
    feed = np.array([[0.1, np.nan, 0.3], [0.4, 0.5, 0.6]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hidden, value, gW = sb.evaluate([sb.tanh(v @ W), loss, sb.grad(loss, W)], {v: feed, labels: [1, 0]})
    assert np.isnan(hidden[0]).all()
    np.testing.assert_allclose(hidden[1], np.tanh(feed[1] @ W.value))
    assert np.isnan(value) and np.isnan(gW).all()


NON_CONTIGUOUS = {
    "strided": lambda a: a[:, ::2],
    "transposed": lambda a: a.T[:3].T,
    "reversed": lambda a: a[::-1, ::-2],
    "broadcast": lambda a: np.broadcast_to(a[:1, :3], (5, 3)),
    "fortran": lambda a: np.asfortranarray(a[:, :3]),
}


@pytest.mark.parametrize("name", sorted(NON_CONTIGUOUS))
def test_non_contiguous_feeds_are_read_correctly(name):
    a = NON_CONTIGUOUS[name](np.arange(30.0).reshape(5, 6) / 7)
    v = sb.input("v", (None, 3), "float64")
    w = np.array([1.0, -2.0, 0.5])
    got = sb.evaluate([v, v @ sb.const(w), v.T], {v: a})
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_allclose(got[1], a @ w, rtol=1e-15)
    np.testing.assert_array_equal(got[2], a.T)


def test_non_contiguous_param_value_is_read_correctly():
    a = np.arange(12.0).reshape(3, 4)[:, ::2]
    p = sb.param("P", (3, 2), init=a, dtype="float64")
    np.testing.assert_array_equal(sb.evaluate(p * 1.0, {}), a)
