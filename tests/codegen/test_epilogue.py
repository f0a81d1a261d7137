"""Products whose result a map reads element for element run the map on each block, in the
thread that computed it (:class:`codegen.kernels.MatmulMap`); everything else is left apart."""

import numpy as np
import pytest

import symbackprop as sb
from codegen import parallel
from codegen.kernels import MatmulMap
from codegen.lower import lower

TRANSPOSITIONS = [(False, False), (False, True), (True, False)]


def kinds(program):
    return [type(k).__name__ for k in program.kernels]


def layer(k: int, cols: int, dtype: str, trans: tuple[bool, bool]):
    """``tanh(op(a)·op(w) + b)`` with ``op(a)`` of shape (rows, k) and ``op(w)`` (k, cols)."""
    trans_a, trans_b = trans
    a = sb.input("a", (k, None) if trans_a else (None, k), dtype)
    w = sb.param("w", (cols, k) if trans_b else (k, cols), init="glorot_uniform", seed=1, dtype=dtype)
    b = sb.param("b", (cols,), init="glorot_uniform", seed=2, dtype=dtype)
    product = (a.T if trans_a else a) @ (w.T if trans_b else w)
    return a, sb.tanh(product + b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans", TRANSPOSITIONS)
@pytest.mark.parametrize("rows", [1, 3, 17, 129])
@pytest.mark.parametrize("cols", [10, 64, 100])
def test_a_layer_maps_each_block_as_the_reference_does(dtype, trans, rows, cols):
    a, out = layer(64, cols, dtype, trans)
    f = sb.compile(out, inputs=[a])
    assert kinds(f.program) == ["MatmulMap"]
    shape = (64, rows) if trans[0] else (rows, 64)
    A = np.random.default_rng(rows).standard_normal(shape).astype(dtype)
    tolerance = 2e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(f(A), sb.evaluate(out, {a: A}), rtol=tolerance, atol=tolerance)


def test_split_and_unsplit_products_give_the_same_blocks(monkeypatch):
    # 128 x 128 x 128 is split between the threads when a worker runs; the blocks' maps
    # must then cover every element once, as on one thread.
    a, out = layer(128, 128, "float64", (False, False))
    f = sb.compile(out, inputs=[a])
    A = np.random.default_rng(0).standard_normal((128, 128))
    before = parallel.statistics()["parallel_calls"]
    together = [f(A) for _ in range(20)]
    expected = sb.evaluate(out, {a: A})
    for got in together:
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    if parallel.worker_running():
        assert parallel.statistics()["parallel_calls"] > before


def test_the_optimizer_update_runs_on_the_weight_gradient_blocks():
    x = sb.input("x", (None, 64))
    w = sb.param("w", (64, 64), init="glorot_uniform", seed=0)
    loss = (sb.tanh(x @ w) ** 2).mean()
    step = sb.compile_step(loss, inputs=[x], params=[w], optimizer=sb.optim.SGD(lr=0.5))
    fused = [k for k in step.program.kernels if isinstance(k, MatmulMap)]
    assert any(k.epilogue.out.buffer.role == "param" for k in fused)
    X = np.random.default_rng(0).standard_normal((96, 64)).astype(np.float32)
    for _ in range(3):
        expected = w.value - 0.5 * sb.evaluate(sb.grad(loss, [w])[0], {x: X})
        step(X)
        np.testing.assert_allclose(w.value, expected, rtol=1e-5, atol=1e-6)


def test_a_map_that_overwrites_an_operand_stays_apart():
    # w ← w − w·w: the update writes w, which the product reads; one thread's block
    # of the update would overwrite what the other thread still multiplies.
    x = sb.input("x", (None, 8), "float64")
    w = sb.param("w", (8, 8), init="glorot_uniform", seed=0, dtype="float64")
    updated = w - w @ w
    program = lower([], [x], in_place={updated: w})
    assert kinds(program) == ["Matmul", "Map"]
    assert program.kernels[-1].out.buffer is w_buffer(program)


def w_buffer(program):
    return next(b for b in program.buffers if b.name == "w")


def test_a_map_reading_other_elements_of_the_product_stays_apart():
    x = sb.input("x", (4, 4), "float64")
    w = sb.param("w", (4, 4), init="glorot_uniform", seed=0, dtype="float64")
    p = x @ w
    out = p * p.T  # each element reads its transposed one: another thread's block
    f = sb.compile(out, inputs=[x])
    assert kinds(f.program) == ["Matmul", "Map"]
    X = np.random.default_rng(0).standard_normal((4, 4))
    np.testing.assert_allclose(f(X), sb.evaluate(out, {x: X}), rtol=1e-12)


def test_kernel_ir_shows_the_map_under_its_product():
    a, out = layer(64, 64, "float32", (False, False))
    text = sb.compile(out, inputs=[a]).kernel_ir
    assert "each block then:\n    map out0[n,64] = tanh(x0 + x1)" in text
