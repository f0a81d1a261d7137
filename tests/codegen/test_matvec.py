"""Products with one output column (a matrix times a vector) run as loops of their own in the
program instead of the library's tiles: every transposition, strided operands, odd sizes."""

import itertools

import numpy as np
import pytest

import symbackprop as sb
from codegen.emit import NARROW_COLUMNS, library_matmuls
from codegen.matmul import matmul_config

SIZES = [1, 3, 17, 129]
TOLERANCE = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-5)}


def _one_column_products(f) -> list:
    return [k for k in f.program.kernels if type(k).__name__ == "Matmul" and k.out.shape[1] == 1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows, inner", list(itertools.product(SIZES, SIZES)))
def test_every_transposition_matches_numpy(rows, inner, dtype):
    rng = np.random.default_rng(rows * 1000 + inner)
    X = rng.standard_normal((rows, inner)).astype(dtype)
    XT = rng.standard_normal((inner, rows)).astype(dtype)
    col, row = rng.standard_normal((inner, 1)).astype(dtype), rng.standard_normal((1, inner)).astype(dtype)
    x, xt = sb.input("x", (None, inner), dtype), sb.input("xt", (inner, None), dtype)
    w = sb.param("w", (inner, 1), init=col, dtype=dtype)
    v = sb.param("v", (1, inner), init=row, dtype=dtype)
    products = [x @ w, x @ sb.transpose(v), sb.transpose(xt) @ w, sb.transpose(xt) @ sb.transpose(v)]
    f = sb.compile(products, inputs=[x, xt])
    assert len(_one_column_products(f)) == 4
    if inner > 1:  # with one element along K, a transposed view is the same view and is not marked
        flags = {(k.trans_a, k.trans_b) for k in _one_column_products(f)}
        assert flags == set(itertools.product([False, True], repeat=2))
    expected = [X @ col, X @ row.T, XT.T @ col, XT.T @ row.T]
    for got, want in zip(f(X, XT), expected):
        assert got.shape == (rows, 1) and got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_strided_operands_and_the_weight_gradient_of_a_regression_output(dtype):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((17, 9)).astype(dtype)
    W = rng.standard_normal((4, 1)).astype(dtype)
    x = sb.input("x", (None, 9), dtype)
    w = sb.param("w", (4, 1), init=W, dtype=dtype)
    out = x[:, 2:6] @ w  # rows of A nine elements apart, starting at column 2
    loss = (out * out).sum()
    f = sb.compile([out, *sb.grad(loss, [w])], inputs=[x])
    got_out, got_grad = f(X)
    np.testing.assert_allclose(got_out, X[:, 2:6] @ W, **TOLERANCE[dtype])
    np.testing.assert_allclose(got_grad, 2 * X[:, 2:6].T @ (X[:, 2:6] @ W), **TOLERANCE[dtype])
    assert len(_one_column_products(f)) == 2  # x·w forward, xᵀ·δ backward


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows, cols", [(1, 1), (1, 17), (3, 2), (17, 16), (129, 3)])
def test_products_along_a_single_index_are_outer_products(rows, cols, dtype):
    rng = np.random.default_rng(rows * 100 + cols)
    D = rng.standard_normal((rows, 1)).astype(dtype)
    DT = rng.standard_normal((1, rows)).astype(dtype)
    W = rng.standard_normal((cols, 1)).astype(dtype)
    d, dt = sb.input("d", (None, 1), dtype), sb.input("dt", (1, None), dtype)
    w = sb.param("w", (cols, 1), init=W, dtype=dtype)
    f = sb.compile([d @ sb.transpose(w), sb.transpose(dt) @ sb.transpose(w)], inputs=[d, dt])
    for got, want in zip(f(D, DT), [D @ W.T, DT.T @ W.T]):
        assert got.shape == (rows, cols)
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("terms", [2, 3, 4, 5])
def test_products_with_a_few_terms_per_element(terms, dtype):
    """Up to FEW_TERMS they are maps, past it the library's kernel: the same results."""
    rng = np.random.default_rng(terms)
    X = rng.standard_normal((19, terms)).astype(dtype)
    XT = rng.standard_normal((terms, 19)).astype(dtype)
    W = rng.standard_normal((terms, 17)).astype(dtype)
    x, xt = sb.input("x", (None, terms), dtype), sb.input("xt", (terms, None), dtype)
    w = sb.param("w", (terms, 17), init=W, dtype=dtype)
    v = sb.param("v", (17, terms), init=W.T.copy(), dtype=dtype)
    products = [x @ w, sb.transpose(xt) @ w, x @ sb.transpose(v), sb.transpose(xt) @ sb.transpose(v)]
    f = sb.compile(products, inputs=[x, xt])
    for got, want in zip(f(X, XT), [X @ W, XT.T @ W, X @ W, XT.T @ W]):
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "features, cols, batch",
    [(8, 2, 1), (64, 10, 32), (16, 12, 3), (64, 13, 17), (12, 5, 9), (17, 4, 5), (16, 8, 7), (24, 4, 2)],
)
def test_weight_gradients_with_few_columns(features, cols, batch, dtype):
    """``hᵀ·δ`` with up to NARROW_COLUMNS columns and rows in whole vectors run in the program,
    vectorised along the rows; other shapes (13 columns, 12 rows of float32) in the library.
    Their results are stored a square block of columns at a time, the rest column by column:
    one block and two columns (10 of float32), blocks alone (8 of float32, 4 and 8 of
    float64), columns alone (fewer than a vector)."""
    rng = np.random.default_rng(features * cols + batch)
    H = rng.standard_normal((batch, features)).astype(dtype)
    D = rng.standard_normal((batch, cols)).astype(dtype)
    h, d = sb.input("h", (None, features), dtype), sb.input("d", (None, cols), dtype)
    lanes = matmul_config(dtype).lanes
    for view, X in ((h, H), (h[:, 1:], H[:, 1:])):  # the second starts one element into each row
        f = sb.compile(sb.transpose(view) @ d, inputs=[h, d])
        np.testing.assert_allclose(f(H, D), X.T @ D, **TOLERANCE[dtype])
        in_program = cols <= NARROW_COLUMNS and X.shape[1] % lanes == 0
        assert not library_matmuls(f.program) if in_program else library_matmuls(f.program)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cols", [2, 3, 5, 8, 10, 12, 13])
@pytest.mark.parametrize("batch", [1, 3, 4, 5, 17])
def test_output_layers_with_few_columns(cols, batch, dtype):
    """``h·W`` with up to NARROW_COLUMNS columns that are not a whole number of vectors run in
    the program, rows in blocks of four and then one at a time; the rest in the library."""
    rng = np.random.default_rng(cols * 100 + batch)
    H = rng.standard_normal((batch, 21)).astype(dtype)
    W = rng.standard_normal((20, cols)).astype(dtype)
    h = sb.input("h", (None, 21), dtype)
    w = sb.param("w", (20, cols), init=W, dtype=dtype)
    f = sb.compile(h[:, 1:] @ w, inputs=[h])  # rows of a one element in, 21 apart
    np.testing.assert_allclose(f(H), H[:, 1:] @ W, **TOLERANCE[dtype])
    in_program = cols <= NARROW_COLUMNS and cols % matmul_config(dtype).lanes != 0
    assert not library_matmuls(f.program) if in_program else library_matmuls(f.program)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cols", [8, 16])
@pytest.mark.parametrize("batch", [1, 3, 5, 17, 129, 2048])
@pytest.mark.parametrize("with_map", [False, True])
def test_small_layers_of_whole_vectors_run_in_the_program_unless_split(cols, batch, dtype, with_map):
    # Below the split threshold the program's own rows compute them; above it (2048 rows of
    # 16 x 16) the library does, on both threads. Both paths, with and without an epilogue.
    lanes = matmul_config(dtype).lanes
    rng = np.random.default_rng(batch + cols)
    X = rng.standard_normal((batch, 16)).astype(dtype)
    x = sb.input("x", (None, 16), dtype)
    w = sb.param("w", (16, cols), init=rng.standard_normal((16, cols)).astype(dtype), dtype=dtype)
    out = sb.tanh(x @ w) if with_map else x @ w
    f = sb.compile(out, inputs=[x])
    if cols % lanes == 0:
        assert (dtype, False, False) in library_matmuls(f.program)  # kept for large batches
    want = np.tanh(X @ w.value) if with_map else X @ w.value
    np.testing.assert_allclose(f(X), want, **TOLERANCE[dtype])
