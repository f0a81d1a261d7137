"""Multi-output fusion: a map read by several elementwise kernels over the same elements runs
in one loop with them, its values in registers; everything else is left as it was."""

import time

import numpy as np
import pytest

import symbackprop as sb
from codegen import parallel
from codegen.kernels import FusedMap, Map
from codegen.parallel import MIN_ELEMENTS


def kernels(compiled, kind):
    return [k for k in compiled.program.kernels if isinstance(k, kind)]


def test_a_loss_and_its_gradient_share_one_pass():
    x = sb.input("x", (None, 3), "float64")
    total = (x * sb.sigmoid(x)).sum()
    f = sb.compile([total, *sb.grad(total, [x])], inputs=[x])
    (fused,) = f.program.kernels
    assert isinstance(fused, FusedMap) and len(fused.members) == 3
    assert "fused over 3*n elements (t1 in registers)" in f.kernel_ir
    assert [b.role for b in f.program.buffers] == ["input", "output", "output"]  # no temporary
    X = np.linspace(-40, 40, 21).reshape(7, 3)
    expected = sb.evaluate([total, *sb.grad(total, [x])], {x: X})
    for got, want in zip(f(X), expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


def test_without_fast_math_a_sum_stays_in_a_loop_of_its_own():
    # A sum vectorises only when LLVM may reassociate it, and a scalar sum would leave a
    # fused loop scalar; maps alone are still fused.
    x = sb.input("x", (None, 3), "float64")
    s = sb.sigmoid(x)
    f = sb.compile([(x * s).sum(), s * (1 - s)], inputs=[x], fast_math=False)
    assert not kernels(f, FusedMap)
    g = sb.compile([x * s, s * (1 - s)], inputs=[x], fast_math=False)
    assert len(kernels(g, FusedMap)) == 1
    X = np.linspace(-5, 5, 12).reshape(4, 3)
    for compiled, targets in ((f, [(x * s).sum(), s * (1 - s)]), (g, [x * s, s * (1 - s)])):
        for got, want in zip(compiled(X), sb.evaluate(targets, {x: X})):
            np.testing.assert_allclose(got, want, rtol=1e-15)


def test_arithmetic_readers_and_sums_of_several_kinds_in_one_loop():
    x = sb.input("x", (None, 4))
    t = sb.tanh(x * 0.5)
    targets = [(t * t).sum(), t.sum(), 2 * t - x**2, t * x]
    f = sb.compile(targets, inputs=[x])
    assert len(kernels(f, FusedMap)) == 1
    X = np.random.default_rng(0).normal(size=(33, 4)).astype(np.float32) * 3
    for got, want in zip(f(X), sb.evaluate(targets, {x: X})):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("reader", ["max", "exp"])
def test_a_maximum_or_a_transcendental_reader_keeps_the_loops_apart(reader):
    # A maximum does not vectorise, and a second transcendental function in the same loop
    # made it slower than two loops: both are left unfused.
    x = sb.input("x", (None, 4))
    t = sb.tanh(x * 0.5)
    other = t.max() if reader == "max" else sb.exp(t)
    targets = [(t * t).sum(), other]
    f = sb.compile(targets, inputs=[x])
    assert not kernels(f, FusedMap)
    X = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
    for got, want in zip(f(X), sb.evaluate(targets, {x: X})):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_readers_over_other_elements_keep_the_temporary():
    x = sb.input("x", (None, 4))
    w = sb.param("w", (4, 2), init=np.arange(8.0).reshape(4, 2) / 8)
    s = sb.sigmoid(x)
    targets = [s.sum(), s @ w, (s * s).sum(axis=0)]  # a product and a reduction over rows
    f = sb.compile(targets, inputs=[x])
    assert not kernels(f, FusedMap)
    assert any(isinstance(k, Map) and "sigmoid" in str(k) for k in f.program.kernels)
    X = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    for got, want in zip(f(X), sb.evaluate(targets, {x: X})):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_training_step_never_moves_a_read_past_the_update_it_precedes():
    # sigmoid(w) is read by the loss's sum and by the update, which overwrites w in place and
    # runs last, after the loss is divided by 6: fusing them would move the sum past that
    # division, so the kernels stay apart, and the loss is read before the update.
    w = sb.param("w", (6,), init=np.linspace(-2, 2, 6))
    loss = (w * sb.sigmoid(w)).sum() / 6
    step = sb.compile_step(loss, [], [w], sb.optim.SGD(lr=0.5))
    assert not kernels(step, FusedMap)
    v = w.value.astype(np.float64)
    for _ in range(3):
        sig = 1 / (1 + np.exp(-v))
        assert step() == pytest.approx(np.sum(sig * v) / 6, rel=1e-6)
        v = v - 0.5 * (sig + v * sig * (1 - sig)) / 6
        np.testing.assert_allclose(w.value, v, rtol=1e-6)


@pytest.mark.parametrize(
    "size", [1, 63, 64, 65, MIN_ELEMENTS - 1, MIN_ELEMENTS, MIN_ELEMENTS + 1, 2 * MIN_ELEMENTS + 130]
)
def test_chunked_loops_cover_every_element_once(size):
    x = sb.input("x", (None,), "float64")
    total = (x * sb.sigmoid(x)).sum()
    targets = [total, *sb.grad(total, [x])]
    f = sb.compile(targets, inputs=[x])
    X = np.linspace(-6, 6, size)
    got, want = f(X), sb.evaluate(targets, {x: X})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-13, atol=1e-15)  # the gradient crosses zero


@pytest.mark.skipif(parallel._platform_support() is None, reason="the worker needs Linux futexes")
def test_long_fused_loops_are_the_same_with_and_without_the_worker(monkeypatch):
    monkeypatch.delenv(parallel.THREADS_VAR, raising=False)
    if not parallel.enabled():
        pytest.skip("the worker needs two CPUs")
    x = sb.input("x", (None,))
    total = (x * sb.sigmoid(x)).sum()
    f = sb.compile([total, *sb.grad(total, [x])], inputs=[x])
    X = np.linspace(-8, 8, 3 * MIN_ELEMENTS + 5, dtype=np.float32)
    assert parallel.ensure_worker()
    before, deadline, split = parallel.statistics()["worker_chunks"], time.monotonic() + 5, []
    while parallel.statistics()["worker_chunks"] == before and time.monotonic() < deadline:
        split = f(X)  # the first calls may find the worker asleep and run alone
    assert parallel.statistics()["worker_chunks"] > before
    parallel.shutdown()
    alone = f(X)
    parallel.ensure_worker()
    for a, b in zip(split, alone):
        np.testing.assert_array_equal(a, b)
