"""Independent products paired, one per thread (:mod:`codegen.schedule`): where they pair,
that they compute what the reference does, and that dependent or unbalanced ones do not."""

import time

import numpy as np
import pytest

import symbackprop as sb
from codegen import parallel
from codegen.kernels import Concurrent, leaf_kernels
from codegen.lower import lower
from codegen.schedule import PAIR_MAX_FLOPS, PAIR_MIN_FLOPS, worth_pairing


def stack(width: int, depth: int, dtype: str = "float32"):
    """A tanh stack with a softmax cross-entropy loss: its backward pass has pairs."""
    x = sb.input("x", (None, width), dtype)
    y = sb.input("y", (None,), "int64")
    h, params = x, []
    for i in range(depth):
        w = sb.param(f"W{i}", (width, width), init="glorot_uniform", seed=i, dtype=dtype)
        b = sb.param(f"b{i}", (width,), init="zeros", dtype=dtype)
        h = sb.tanh(h @ w + b)
        params += [w, b]
    out = sb.param("Wout", (width, 10), init="glorot_uniform", seed=99, dtype=dtype)
    loss = sb.losses.softmax_cross_entropy(h @ out, y)
    return x, y, params + [out], loss


def pairs(program) -> list[Concurrent]:
    return [k for k in program.kernels if isinstance(k, Concurrent)]


def test_a_layer_stack_pairs_each_weight_gradient_with_the_next_backward_product():
    x, y, params, loss = stack(64, 4)
    step = sb.compile_step(loss, inputs=[x, y], params=params, optimizer=sb.optim.SGD(lr=0.1))
    found = pairs(step.program)
    products = [[k.product if hasattr(k, "product") else k for k in (p.first, p.second)] for p in found]
    # δ·Wᵀ of layer l on the caller beside hᵀ·δ of layer l + 1 on the worker, for the two
    # middle layers; the first two layers' weight gradients pair with each other.
    kinds = [(first.trans_a, first.trans_b, second.trans_a, second.trans_b) for first, second in products]
    assert kinds == [(False, True, True, False)] * 2 + [(True, False, True, False)]
    assert all(first.work is not second.work for first, second in products)  # a workspace each
    assert "together:" in str(step.program)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 17, 64, 130])
def test_paired_steps_train_as_the_reference_does(dtype, batch):
    x, y, params, loss = stack(64, 3, dtype)
    step = sb.compile_step(loss, inputs=[x, y], params=params, optimizer=sb.optim.SGD(lr=0.2))
    assert pairs(step.program)
    rng = np.random.default_rng(batch)
    X = rng.standard_normal((batch, 64)).astype(dtype)
    Y = rng.integers(0, 10, batch)
    tolerance = 2e-5 if dtype == "float32" else 1e-12
    for _ in range(3):
        gradients = sb.evaluate(sb.grad(loss, params), {x: X, y: Y})
        expected = [p.value - 0.2 * g for p, g in zip(params, gradients)]
        step(X, Y)
        for p, want in zip(params, expected):
            np.testing.assert_allclose(p.value, want, rtol=tolerance, atol=tolerance)


def test_products_that_depend_on_each_other_are_not_paired():
    x = sb.input("x", (None, 64))
    w = sb.param("w", (64, 64), init="glorot_uniform", seed=0)
    h = x @ w
    assert not pairs(lower([(h.T @ h) @ w], [x]))  # each product reads the one before
    # w ← w − hᵀ·h reads h, and writes w, which the product making h reads first.
    program = lower([], [x], in_place={w - h.T @ h: w})
    assert not pairs(program) and len(program.kernels) == 2


def test_unbalanced_or_large_products_are_not_paired():
    assert not worth_pairing(PAIR_MIN_FLOPS - 1, PAIR_MIN_FLOPS - 1)
    assert not worth_pairing(PAIR_MAX_FLOPS + 1, PAIR_MAX_FLOPS + 1)
    assert not worth_pairing(1_000_000, 700_000)
    assert worth_pairing(1_000_000, 800_000)
    x, d = sb.input("x", (None, 64)), sb.input("d", (None, 64))
    small = sb.param("s", (64, 8), init="glorot_uniform", seed=0)
    big = sb.param("big", (1024, 1024), init="glorot_uniform", seed=0)
    e = sb.input("e", (None, 1024))
    assert not pairs(lower([x.T @ d, d @ small], [x, d]))  # 8 times fewer FLOPs
    assert not pairs(lower([e.T @ e, e @ big], [e]))  # split well on their own


@pytest.mark.skipif(parallel._platform_support() is None, reason="the worker needs Linux futexes")
def test_pairs_give_the_same_results_with_and_without_the_worker(monkeypatch):
    monkeypatch.delenv(parallel.THREADS_VAR, raising=False)
    if not parallel.enabled():
        pytest.skip("the worker needs two CPUs")
    x, d = sb.input("x", (None, 64)), sb.input("d", (None, 64))
    w = sb.param("w", (64, 64), init="glorot_uniform", seed=0)
    f = sb.compile([x.T @ d, sb.tanh(d @ w.T)], inputs=[x, d])
    (pair,) = pairs(f.program)
    assert len(leaf_kernels(f.program.kernels)) == 2
    rng = np.random.default_rng(0)
    X, D = rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal((64, 64)).astype(np.float32)
    assert parallel.ensure_worker()
    before, deadline, together = parallel.statistics()["worker_chunks"], time.monotonic() + 5, []
    while parallel.statistics()["worker_chunks"] == before and time.monotonic() < deadline:
        together = f(X, D)  # the first calls may find the worker asleep and run alone
    assert parallel.statistics()["worker_chunks"] > before
    parallel.shutdown()
    alone = f(X, D)
    parallel.ensure_worker()
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(alone[0], X.T @ D, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(alone[1], np.tanh(D @ w.value.T), rtol=1e-5, atol=1e-5)


def test_the_generated_check_agrees_with_worth_pairing():
    import ctypes
    import itertools

    import llvmlite.ir as ir

    from codegen.emit import emit_worth_pairing
    from codegen.jit import compile_ir

    i64 = ir.IntType(64)
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ir.IntType(8), [i64, i64]), "worth")
    b = ir.IRBuilder(fn.append_basic_block())
    b.ret(b.zext(emit_worth_pairing(b, *fn.args), ir.IntType(8)))
    worth = compile_ir(module, use_cache=False).function("worth", ctypes.c_uint8, ctypes.c_int64, ctypes.c_int64)
    sizes = [0, 1, PAIR_MIN_FLOPS - 1, PAIR_MIN_FLOPS, 250_000, 524_288, 655_360, 800_000, 1_000_000]
    sizes += [PAIR_MAX_FLOPS - 1, PAIR_MAX_FLOPS, PAIR_MAX_FLOPS + 1, 10**9]
    for first, second in itertools.product(sizes, repeat=2):
        assert bool(worth(first, second)) == worth_pairing(first, second), (first, second)


def row_halves(program):
    from codegen.kernels import RowHalves

    return [k for k in program.kernels if isinstance(k, RowHalves)]


def test_a_forward_stack_runs_each_half_of_the_batch_on_a_thread():
    x, y, params, loss = stack(64, 4)
    step = sb.compile_step(loss, inputs=[x, y], params=params, optimizer=sb.optim.SGD(lr=0.1))
    (halves,) = row_halves(step.program)
    assert len(halves.members) == 4  # the 64-wide layers; the 10-wide output layer stays apart
    assert "each half of the rows on a thread of its own:" in str(step.program)


@pytest.mark.skipif(parallel._platform_support() is None, reason="the worker needs Linux futexes")
@pytest.mark.parametrize("batch", [1, 7, 64, 131])
def test_row_halves_give_the_same_results_with_and_without_the_worker(monkeypatch, batch):
    monkeypatch.delenv(parallel.THREADS_VAR, raising=False)
    if not parallel.enabled():
        pytest.skip("the worker needs two CPUs")
    x = sb.input("x", (None, 64), "float64")
    h = x
    for i in range(3):
        w = sb.param(f"w{i}", (64, 64), init="glorot_uniform", seed=i, dtype="float64")
        b = sb.param(f"b{i}", (64,), init="glorot_uniform", seed=10 + i, dtype="float64")
        h = sb.tanh(h @ w + b)
    f = sb.compile(h, inputs=[x])
    assert row_halves(f.program)
    X = np.random.default_rng(batch).standard_normal((batch, 64))
    assert parallel.ensure_worker()
    together = [f(X) for _ in range(50)][-1]
    parallel.shutdown()
    alone = f(X)
    parallel.ensure_worker()
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_allclose(alone, sb.evaluate(h, {x: X}), rtol=1e-12, atol=1e-12)


def test_layers_that_read_across_rows_are_not_halved():
    import dataclasses

    from codegen.kernels import View
    from codegen.schedule import _rows_stay_apart

    x = sb.input("x", (None, 64))
    w1, w2 = (sb.param(f"w{i}", (64, 64), init="glorot_uniform", seed=i) for i in (1, 2))
    h1 = sb.tanh(x @ w1)
    narrow = sb.param("narrow", (64, 8), init="glorot_uniform", seed=3)
    assert not row_halves(lower([sb.tanh(h1 @ narrow)], [x]))  # one wide layer, then a narrow one
    # A sum over the rows of a layer's output runs after the halves have joined.
    program = lower([sb.tanh(h1 @ w2) * h1.sum(axis=0)], [x])
    (halves,) = row_halves(program)
    assert type(program.kernels[1]).__name__ == "Reduce"
    # A member that read a row written in the run through any other view (here: row 0 of
    # the first layer's output, broadcast) would read what the other thread writes.
    first, second = halves.members
    written = first.epilogue.out
    row_zero = View(written.buffer, written.shape, (0, 1), 0)
    epilogue = dataclasses.replace(second.epilogue, inputs=[*second.epilogue.inputs, row_zero])
    assert _rows_stay_apart([first, second])
    assert not _rows_stay_apart([first, dataclasses.replace(second, epilogue=epilogue)])
