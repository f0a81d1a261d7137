"""The worker thread and split matmuls: same results as one thread, no deadlock, no idle CPU."""

import ctypes
import os
import subprocess
import sys
import textwrap
import threading
import time

import llvmlite.ir as ir
import numpy as np
import pytest

import symbackprop as sb
from codegen import parallel
from codegen.jit import compile_ir
from codegen.matmul import emit_matmul, matmul_config, matmul_workspace_size

pytestmark = pytest.mark.skipif(parallel._platform_support() is None, reason="the worker needs Linux futexes")

ARGTYPES = (ctypes.c_int64,) * 3 + (ctypes.c_void_p, ctypes.c_int64) * 3 + (ctypes.c_int32, ctypes.c_void_p)
VARIANTS = [(False, False), (False, True), (True, False), (True, True)]


@pytest.fixture(scope="module", autouse=True)
def worker_enabled():
    """Every test starts with a worker (unless a test stops it), whatever the environment says."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(parallel.THREADS_VAR, raising=False)
        if not parallel.enabled():
            pytest.skip("the worker needs two CPUs")
        yield


@pytest.fixture(autouse=True)
def running_worker():
    assert parallel.ensure_worker()
    yield
    parallel.ensure_worker()


@pytest.fixture(scope="module", params=["float32", "float64"])
def kernels(request):
    """(one thread, split) callables for the four variants of one dtype."""
    dtype = request.param
    module = ir.Module()
    names = {}
    for trans_a, trans_b in VARIANTS:
        name = f"mm_{int(trans_a)}{int(trans_b)}"
        kernel = emit_matmul(module, name, dtype, trans_a, trans_b)
        wrapper = parallel.parallel_matmul(module, kernel, dtype, trans_a, trans_b)
        wrapper.linkage = ""  # callable from the test
        names[trans_a, trans_b] = (name, wrapper.name)
    compiled = compile_ir(module)
    functions = {key: tuple(compiled.function(n, None, *ARGTYPES) for n in pair) for key, pair in names.items()}
    return dtype, functions


def run(fn, a, b, c, m, n, k, work, accumulate=0):
    """``fn`` on row-major arrays; ``c`` may be a view with a longer row stride."""
    ldc = c.strides[0] // c.itemsize
    fn(m, n, k, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], c.ctypes.data, ldc, accumulate, work.ctypes.data)


def operands(m, n, k, trans_a, trans_b, dtype, rng):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def split_shapes():
    """Shapes about the threshold and about the split points (tiles of rows and of columns)."""
    cfg = matmul_config("float32")
    mr, nr = cfg.mr, cfg.nr
    return [
        (128, 128, 128),  # 4.2 MFLOP: split by columns
        (127, 129, 127),  # just above the threshold, partial tiles in both directions
        (100, 100, 199),  # 3.98 MFLOP: just below, one thread
        (2 * nr + 1, 2 * nr + 1, 2000),  # three column tiles, the second chunk a single column
        (nr - 1, nr + 1, 9000),  # two column tiles, the second of one column
        (mr + 1, mr, 40000),  # rows: two tiles, the second of one row
        (6 * mr - 1, 17, 3000),  # rows: six tiles with the last one short
        (300, 1, 9000),  # one column: split by rows
        (1, 300, 9000),  # one row: split by columns
        (1, 1, 3_000_000),  # one tile each way: one thread
        (784, 256, 128),
        (128, 784, 256),
    ]


# A stand-in for sbp_parallel_for: every chunk on the calling thread as if it were the
# worker (thread 1, the second workspace), last chunk first.
REVERSED_IR = r"""
define void @reversed(i8* %fn, i8* %ctx, i64 %count, i1 %long) {
entry:
  %f = bitcast i8* %fn to void (i8*, i64, i64)*
  br label %loop
loop:
  %i = phi i64 [ %count, %entry ], [ %j, %body ]
  %more = icmp sgt i64 %i, 0
  br i1 %more, label %body, label %done
body:
  %j = sub i64 %i, 1
  call void %f(i8* %ctx, i64 %j, i64 1)
  br label %loop
done:
  ret void
}
"""


@pytest.fixture(scope="module")
def reversed_hook():
    compiled = compile_ir(REVERSED_IR)
    return compiled, compiled.address("reversed")


@pytest.mark.parametrize("trans_a, trans_b", VARIANTS)
def test_split_products_equal_the_single_threaded_kernel(kernels, reversed_hook, trans_a, trans_b):
    dtype, functions = kernels
    single, split = functions[trans_a, trans_b]
    rng = np.random.default_rng(7)
    for m, n, k in split_shapes():
        a, b = operands(m, n, k, trans_a, trans_b, dtype, rng)
        size = parallel.matmul_workspace_elements(m, n, k, dtype)
        guarded = np.full(size + 64, np.nan, dtype)
        guarded[size:] = -7
        work = guarded[:size]
        expected = np.empty((m, n), dtype)
        run(single, a, b, expected, m, n, k, work)
        for hook in (parallel._HOOK.value, reversed_hook[1]):
            # C is a window of a wider, guarded array: nothing outside it may change.
            wide = np.full((m + 1, n + 3), -7.0, dtype)
            got = wide[:m, 1 : n + 1]
            got[...] = np.nan
            saved, parallel._HOOK.value = parallel._HOOK.value, hook
            try:
                run(split, a, b, got, m, n, k, work)
                # Accumulating adds the product once more, as the kernel does.
                once = got.copy()
                run(split, a, b, got, m, n, k, work, accumulate=1)
            finally:
                parallel._HOOK.value = saved
            np.testing.assert_array_equal(once, expected, err_msg=f"{m}x{n}x{k}")
            assert (wide[m] == -7).all() and (wide[:, 0] == -7).all() and (wide[:, n + 1 :] == -7).all()
            assert (guarded[size:] == -7).all(), "a workspace overran"
            twice = expected.copy()
            run(single, a, b, twice, m, n, k, work, accumulate=1)
            np.testing.assert_array_equal(got, twice, err_msg=f"{m}x{n}x{k} accumulating")


def test_stopped_worker_leaves_the_calls_on_the_caller(kernels):
    dtype, functions = kernels
    single, split = functions[True, False]
    m, n, k = 200, 200, 200
    a, b = operands(m, n, k, True, False, dtype, np.random.default_rng(2))
    work = np.empty(parallel.matmul_workspace_elements(m, n, k, dtype), dtype)
    expected, got = np.empty((m, n), dtype), np.empty((m, n), dtype)
    run(single, a, b, expected, m, n, k, work)
    parallel.shutdown()
    assert not parallel.worker_running()
    before = parallel.statistics()
    run(split, a, b, got, m, n, k, work)
    np.testing.assert_array_equal(got, expected)
    assert parallel.statistics() == before  # the hook is null: the kernel was called directly
    assert parallel.ensure_worker() and parallel.worker_running()


def test_workspace_size_in_ir_equals_matmul_workspace_size():
    for dtype in ("float32", "float64"):
        cfg = matmul_config(dtype)
        i64 = ir.IntType(64)
        module = ir.Module()
        fn = ir.Function(module, ir.FunctionType(i64, [i64] * 3), "size")
        builder = ir.IRBuilder(fn.append_basic_block("entry"))
        builder.ret(parallel.workspace_size_ir(builder, *fn.args, cfg))
        size = compile_ir(module).function("size", ctypes.c_int64, *[ctypes.c_int64] * 3)
        values = sorted(
            {0, 1, 5, 6, 7, 15, 16, 17, cfg.kc - 1, cfg.kc, cfg.kc + 1, cfg.mc, cfg.mc + 1, cfg.nc + 1, 5000}
        )
        for m in values:
            for n in values:
                for k in values:
                    assert size(m, n, k) == matmul_workspace_size(m, n, k, dtype, cfg), (dtype, m, n, k)


def test_split_eligibility_follows_the_threshold():
    assert parallel.MIN_FLOPS == 500_000  # the cases below are written for this threshold
    assert parallel.split_eligible(50, 50, 100)  # exactly MIN_FLOPS
    assert not parallel.split_eligible(50, 50, 99)
    assert parallel.split_eligible(64, 64, 64) and not parallel.split_eligible(32, 64, 64)
    assert not parallel.split_eligible(0, 10**6, 10**6)
    single = matmul_workspace_size(128, 256, 784, "float32")
    assert parallel.matmul_workspace_elements(128, 256, 784, "float32") == 2 * single
    assert parallel.matmul_workspace_elements(8, 8, 8, "float32") == matmul_workspace_size(8, 8, 8, "float32")


# -- the runtime on its own ----------------------------------------------------------------------
# chunk(ctx, index, thread): counts index into ctx[index] and its thread into ctx[64 + thread].
COUNTING_IR = r"""
define void @chunk(i8* %ctx, i64 %index, i64 %thread) {
  %counts = bitcast i8* %ctx to i64*
  %slot = getelementptr i64, i64* %counts, i64 %index
  %old = atomicrmw add i64* %slot, i64 1 monotonic
  %t = add i64 %thread, 64
  %tslot = getelementptr i64, i64* %counts, i64 %t
  %old2 = atomicrmw add i64* %tslot, i64 1 monotonic
  ret void
}
define void @jobs(i8* %hook, i8* %ctx, i64 %count, i64 %times, i1 %long) {
entry:
  %f = bitcast i8* %hook to void (i8*, i8*, i64, i1)*
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  call void %f(i8* bitcast (void (i8*, i64, i64)* @chunk to i8*), i8* %ctx, i64 %count, i1 %long)
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %times
  br i1 %more, label %loop, label %done
done:
  ret void
}
"""


@pytest.fixture(scope="module")
def jobs():
    compiled = compile_ir(COUNTING_IR)
    argtypes = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_bool
    return compiled.function("jobs", None, *argtypes)


def test_ten_thousand_tiny_jobs_back_to_back(jobs):
    hook = parallel._HOOK.value
    counts = np.zeros(66, np.int64)
    start = time.monotonic()
    for count, long in ((2, False), (3, True), (1, False), (5, True)):
        jobs(hook, counts.ctypes.data, count, 2500, long)
    assert time.monotonic() - start < 10
    assert counts[:5].tolist() == [10_000, 7_500, 5_000, 2_500, 2_500]
    assert counts[64] + counts[65] == 27_500


def test_callers_on_several_threads_share_one_worker(jobs):
    hook = parallel._HOOK.value
    arrays = [np.zeros(66, np.int64) for _ in range(3)]
    threads = [threading.Thread(target=jobs, args=(hook, a.ctypes.data, 4, 3000, True)) for a in arrays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    for counts in arrays:
        assert counts[:4].tolist() == [3000] * 4
        assert counts[64] + counts[65] == 12_000


# Chunk 1 records its thread and raises a flag; chunk 0 records its thread and waits for the
# flag (at most about a second): both can only finish together if two threads run them.
RENDEZVOUS_IR = r"""
define void @chunk(i8* %ctx, i64 %index, i64 %thread) {
entry:
  %words = bitcast i8* %ctx to i64*
  %flag = getelementptr i64, i64* %words, i64 0
  %seen = getelementptr i64, i64* %words, i64 1
  %who = getelementptr i64, i64* %words, i64 2
  %mine = getelementptr i64, i64* %who, i64 %index
  store i64 %thread, i64* %mine
  %first = icmp eq i64 %index, 0
  br i1 %first, label %wait, label %raise
raise:
  store atomic i64 1, i64* %flag release, align 8
  ret void
wait:
  %i = phi i64 [ 0, %entry ], [ %next, %again ]
  %up = load atomic i64, i64* %flag acquire, align 8
  %done = icmp eq i64 %up, 1
  br i1 %done, label %met, label %again
again:
  call void @llvm.x86.sse2.pause()
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, 50000000
  br i1 %more, label %wait, label %out
met:
  store i64 1, i64* %seen
  br label %out
out:
  ret void
}
declare void @llvm.x86.sse2.pause()
define void @meet(i8* %hook, i8* %ctx) {
  %f = bitcast i8* %hook to void (i8*, i8*, i64, i1)*
  call void %f(i8* bitcast (void (i8*, i64, i64)* @chunk to i8*), i8* %ctx, i64 2, i1 1)
  ret void
}
"""


@pytest.mark.skipif((parallel._platform_support() or (0, None))[1] != "x86", reason="the test's spin loop is x86 code")
def test_the_worker_runs_chunks_while_the_caller_runs_its_own():
    meet = compile_ir(RENDEZVOUS_IR).function("meet", None, ctypes.c_void_p, ctypes.c_void_p)
    parallel.shutdown()  # a fresh worker: nothing left of the earlier tests' back-off
    assert parallel.ensure_worker()
    before = parallel.statistics()["worker_chunks"]
    words = np.zeros(4, np.int64)
    meet(parallel._HOOK.value, words.ctypes.data)
    assert words[:2].tolist() == [1, 1]
    assert sorted(words[2:].tolist()) == [0, 1]  # one chunk each on the caller and the worker
    assert parallel.statistics()["worker_chunks"] == before + 1


def test_an_idle_worker_burns_no_cpu(jobs):
    counts = np.zeros(66, np.int64)
    jobs(parallel._HOOK.value, counts.ctypes.data, 2, 1000, True)
    time.sleep(0.05)  # past the worker's spin, it sleeps
    before = time.process_time()  # every thread of the process
    time.sleep(0.3)
    assert time.process_time() - before < 0.03


def test_threads_variable(monkeypatch):
    monkeypatch.setenv(parallel.THREADS_VAR, "1")
    assert not parallel.enabled()
    for value in ("", "0", "2", "8"):
        monkeypatch.setenv(parallel.THREADS_VAR, value)
        assert parallel.enabled()
    monkeypatch.setenv(parallel.THREADS_VAR, "many")
    with pytest.warns(RuntimeWarning, match="not a thread count"):
        assert parallel.enabled()


# -- compiled programs -----------------------------------------------------------------------------
def mlp_step(seed=0):
    x, y = sb.input("x", (None, 784)), sb.input("y", (None,), "int64")
    w1 = sb.param("W1", (784, 256), init="glorot_uniform", seed=seed)
    w2 = sb.param("W2", (256, 10), init="glorot_uniform", seed=seed + 1)
    loss = sb.softmax_cross_entropy(sb.relu(x @ w1) @ w2, y)
    return sb.compile_step(loss, [x, y], [w1, w2], sb.optim.SGD(lr=0.1)), [w1, w2]


def test_compiled_steps_are_the_same_with_and_without_the_worker():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((128, 784)).astype(np.float32), rng.integers(0, 10, 128)
    results = []
    for threads in (True, False):
        if not threads:
            parallel.shutdown()
        step, params = mlp_step()
        losses = [step(X, Y) for _ in range(3)]
        results.append((losses, [p.value.copy() for p in params]))
        work = next(b for b in step.program.buffers if b.role == "workspace")
        assert step.bound.elements(work, 128) == 2 * matmul_workspace_size(128, 256, 784, "float32")
    assert results[0][0] == results[1][0]
    for with_worker, without in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(with_worker, without)


SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    import numpy as np
    sys.path.insert(0, {tests!r})
    from codegen import parallel
    from test_parallel import mlp_step
    step, params = mlp_step()
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    first = [step(X, Y) for _ in range(5)]
    counters = parallel.statistics()
    print(parallel.worker_running(), counters["parallel_calls"] + counters["serial_asleep"] > 0)
    if {fork}:
        pid = os.fork()
        if pid == 0:
            step(X, Y)
            os._exit(0 if parallel.ensure_worker() and parallel.worker_running() else 3)
        assert os.waitpid(pid, 0)[1] == 0
    # A daemon thread still stepping while the interpreter exits.
    threading.Thread(target=lambda: [step(X, Y) for _ in range(10**6)], daemon=True).start()
    """
)


@pytest.mark.parametrize("threads, fork", [("", True), ("1", False)])
def test_a_process_using_the_worker_exits_cleanly(threads, fork):
    env = dict(os.environ, **{parallel.THREADS_VAR: threads})
    script = SCRIPT.format(tests=os.path.dirname(__file__), fork=fork)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = "False False" if threads == "1" else "True True"
    assert done.stdout.split("\n")[0] == expected
