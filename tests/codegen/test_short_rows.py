"""Short rows and few columns computed as explicit vectors: maps and reductions over a
short constant last axis (a softmax over ten classes), one-hot rows, and reductions over
the rows of a few columns (bias gradients), against the reference evaluator; widths on both
sides of the limits, broadcast operands, both precisions, strict and fast maths."""

import numpy as np
import pytest

import symbackprop as sb
from codegen.emit import REGISTER_VECTORS, SHORT_ROW, short_row_pieces
from codegen.matmul import matmul_config

TOLERANCE = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-5)}


def _check(outputs, inputs, arrays, dtype, fast_math=True):
    f = sb.compile(outputs, inputs=inputs, fast_math=fast_math)
    got = f(*arrays)
    want = sb.evaluate(outputs, dict(zip(inputs, arrays)))
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **TOLERANCE[dtype])
    return f


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", [2, 3, 5, 8, 10, 13, SHORT_ROW, SHORT_ROW + 1])
@pytest.mark.parametrize("batch", [1, 7])
def test_softmax_pieces_over_short_rows(width, batch, dtype):
    rng = np.random.default_rng(width * 100 + batch)
    X = (3 * rng.standard_normal((batch, width))).astype(dtype)
    B = rng.standard_normal((1, width)).astype(dtype)
    x = sb.input("x", (None, width), dtype)
    b = sb.param("b", (1, width), init=B, dtype=dtype)
    z = x + b  # a broadcast row
    shifted = z - z.max(axis=1, keepdims=True)  # a per-row operand: the same value along the row
    e = sb.exp(shifted)
    outputs = [e / e.sum(axis=1, keepdims=True), sb.log_softmax(z), sb.tanh(z) * 2 - z]
    f = _check(outputs, [x], [X], dtype)
    pieces = short_row_pieces([width], [[1]], [dtype])
    scalar = {"float32": "float", "float64": "double"}[dtype]
    for _, lanes in pieces or []:  # each piece is one vector in the code
        assert f"<{lanes} x {scalar}>" in f.llvm_ir
    assert (pieces is None) == (width > SHORT_ROW)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fast_math", [True, False])
def test_row_maxima_and_sums_keep_nan_and_infinities(dtype, fast_math):
    X = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [np.inf] + [0] * 9, [-np.inf] * 10, [0] * 9 + [np.nan]], dtype=dtype)
    x = sb.input("x", (None, 10), dtype)
    f = sb.compile([x.max(axis=1), x.sum(axis=1)], inputs=[x], fast_math=fast_math)
    maxima, sums = f(X)
    np.testing.assert_array_equal(maxima[:3], [10, np.inf, -np.inf])
    np.testing.assert_array_equal(sums[:3], [55, np.inf, -np.inf])
    assert np.isnan(sums[3])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("depth", [2, 10, SHORT_ROW, SHORT_ROW + 3])
def test_one_hot_rows(depth, dtype):
    labels = np.array([0, depth - 1, 1, depth // 2, 0, 1, depth - 1], dtype=np.int64)
    y = sb.input("y", (None,), "int64")
    f = sb.compile([sb.one_hot(y, depth, dtype=dtype)], inputs=[y])
    (got,) = f(labels)
    np.testing.assert_array_equal(got, np.eye(depth, dtype=dtype)[labels])
    with pytest.raises(ValueError, match="out of range"):
        f(np.array([depth], dtype=np.int64))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("columns", [3, 10, 33, 64, 65])
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_column_sums_and_maxima_over_rows(columns, batch, dtype):
    rng = np.random.default_rng(columns + batch)
    X = rng.standard_normal((batch, columns)).astype(dtype)
    x = sb.input("x", (None, columns), dtype)
    outputs = [x.sum(axis=0), (x * x).sum(axis=0), x.max(axis=0)]
    _check(outputs, [x], [X], dtype)


def test_the_limits_follow_the_vector_width():
    lanes = matmul_config("float32").lanes
    pieces = short_row_pieces([SHORT_ROW], [[1], [0]], ["float32", "float32"])
    assert sum(width for _, width in pieces) == SHORT_ROW and max(width for _, width in pieces) == lanes
    assert short_row_pieces([SHORT_ROW + 1], [[1]], ["float32"]) is None
    assert short_row_pieces([10], [[1], [1]], ["float32", "float64"]) is None  # a conversion on the way
    assert REGISTER_VECTORS * lanes >= 64  # a bias gradient of 64 float32 stays in registers
