"""Matmuls and training steps on one thread and on two (the calling thread and the worker).

Run from the repository root with the project importable (``pip install -e .``)::

    python benchmarks/bench_parallel.py [--samples 9] [--seconds 0.05] [--steps 20] [--sweep]

The matmul table calls the kernel and its two-thread wrapper (`codegen.parallel`) from a
native loop, as generated code does; samples of the two alternate, and each two-thread
sample starts with calls that wake the worker, so both see the same background load. The
step table times ``sb.compile_step`` on two MLPs, calling the step from Python, with the
worker running and after `codegen.parallel.shutdown` (the same native code, which then
calls every kernel directly, as with ``SYMBACKPROP_THREADS=1``). ``--sweep`` adds small
products around the threshold, split regardless of it. Each figure is a median.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import llvmlite.ir as ir
import numpy as np
from common import OtherLoad, emit_repeat

import symbackprop as sb
from codegen import parallel
from codegen.jit import compile_ir
from codegen.matmul import emit_matmul, matmul_workspace_size

# (label, M, N, K, trans_a, trans_b)
SQUARE = [(f"{n}^3", n, n, n, False, False) for n in (256, 384, 512, 768, 1024)]
MLP = [
    ("mnist x.W", 128, 256, 784, False, False),
    ("mnist g.WT", 128, 784, 256, False, True),
    ("mnist xT.g", 784, 256, 128, True, False),
    ("mnist x.W (layer 2)", 128, 128, 256, False, False),
    ("wide x.W", 256, 2048, 1024, False, False),
    ("wide g.WT", 256, 1024, 2048, False, True),
    ("wide xT.g", 1024, 2048, 256, True, False),
    ("wide x.W (layer 2)", 256, 2048, 2048, False, False),
    ("wide g.WT (layer 2)", 256, 2048, 2048, False, True),
    ("wide xT.g (layer 2)", 2048, 2048, 256, True, False),
]
SWEEP = [
    (f"{m}x{n}x{k}", m, n, k, False, False)
    for m, n, k in [(64, 64, 64), (96, 96, 96), (128, 64, 64), (128, 128, 64), (128, 128, 128), (128, 128, 256)]
]


def compile_variants(dtype: str = "float32"):
    """``repeat(count, args...)`` loops over each kernel and over its two-thread wrapper."""
    module = ir.Module()
    names = {}
    for trans_a in (False, True):
        for trans_b in (False, True):
            tag = f"{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}"
            kernel = emit_matmul(module, f"mm_{tag}", dtype, trans_a, trans_b)
            wrapper = parallel.parallel_matmul(module, kernel, dtype, trans_a, trans_b)
            for label, callee in (("one", kernel), ("two", wrapper)):
                names[trans_a, trans_b, label] = emit_repeat(module, callee, f"repeat_{label}_{tag}")
    compiled = compile_ir(module)
    argtypes = (ctypes.c_int64,) * 3 + (ctypes.c_void_p, ctypes.c_int64) * 3 + (ctypes.c_int32, ctypes.c_void_p)
    return {key: compiled.function(name, None, ctypes.c_int64, *argtypes) for key, name in names.items()}


def _rate(repeat, args, flops: int, seconds: float) -> float:
    calls = max(2, int(seconds * 100e9 / flops))
    start = time.perf_counter()
    repeat(calls, *args)
    return flops * calls / (time.perf_counter() - start) / 1e9


def measure_matmul(repeats, shape, samples: int, seconds: float, rng) -> tuple[float, float]:
    """Median GFLOP/s of one shape on one thread and on two; checks the results agree."""
    _, m, n, k, trans_a, trans_b = shape
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    one, two = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    work = np.empty(2 * matmul_workspace_size(m, n, k, "float32"), np.float32)
    args = [m, n, k, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], None, n, 0, work.ctypes.data]
    single, double = repeats[trans_a, trans_b, "one"], repeats[trans_a, trans_b, "two"]
    args[7] = one.ctypes.data
    single(1, *args)
    args[7] = two.ctypes.data
    double(1, *args)
    np.testing.assert_array_equal(one, two)
    flops = 2 * m * n * k
    rates_one, rates_two = [], []
    for _ in range(samples):
        rates_one.append(_rate(single, args, flops, seconds))
        _rate(double, args, flops, 0.002)  # wake the worker (it slept during the other side)
        rates_two.append(_rate(double, args, flops, seconds))
    return statistics.median(rates_one), statistics.median(rates_two)


def mlp_step(sizes: list[int], batch: int, seed: int = 0):
    """A compiled SGD step of a relu MLP with softmax cross-entropy, and a batch for it."""
    x = sb.input("x", (None, sizes[0]))
    y = sb.input("y", (None,), "int64")
    h, params = x, []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        w = sb.param(f"W{layer}", (fan_in, fan_out), init="glorot_uniform", seed=seed + layer)
        bias = sb.param(f"b{layer}", (fan_out,))
        params += [w, bias]
        h = h @ w + bias
        if layer < len(sizes) - 2:
            h = sb.relu(h)
    step = sb.compile_step(sb.softmax_cross_entropy(h, y), [x, y], params, sb.optim.SGD(lr=0.01))
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((batch, sizes[0])).astype(np.float32), rng.integers(0, sizes[-1], batch)
    return step, data


def measure_step(step, data, steps: int, samples: int) -> tuple[float, float]:
    """Median milliseconds per step without the worker and with it, in alternating samples."""
    timings: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(samples):
        for threads in (False, True):
            if threads:
                parallel.ensure_worker()
            else:
                parallel.shutdown()
            step(*data)  # the first step after a change wakes the worker or finds it gone
            start = time.perf_counter()
            for _ in range(steps):
                step(*data)
            timings[threads].append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(timings[False]), statistics.median(timings[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sweep", action="store_true", help="also time small products, split regardless of size")
    args = parser.parse_args()
    if not parallel.ensure_worker():
        raise SystemExit("no worker thread: SYMBACKPROP_THREADS=1, one CPU, or an unsupported platform")

    shapes = SQUARE + MLP
    if args.sweep:
        parallel.MIN_FLOPS = 1  # before compiling: the wrappers then split every product
        shapes = SWEEP + shapes
    repeats = compile_variants()
    rng = np.random.default_rng(0)
    print(f"float32 matmul, GFLOP/s, median of {args.samples}; split at {parallel.MIN_FLOPS:.0e} FLOPs")
    print("load: CPU used meanwhile by other processes, in cores")
    print(f"{'shape':<22}{'M x N x K':>18}{'MFLOP':>9}{'1 thread':>10}{'2 threads':>11}{'speed-up':>10}{'load':>7}")
    for shape in shapes:
        with OtherLoad() as load:
            one, two = measure_matmul(repeats, shape, args.samples, args.seconds, rng)
        label, m, n, k = shape[:4]
        dims = f"{m}x{n}x{k}"
        row = f"{label:<22}{dims:>18}{2 * m * n * k / 1e6:>9.1f}{one:>10.1f}{two:>11.1f}{two / one:>10.2f}"
        print(f"{row}{load.cores:>7.2f}")

    print(f"\nsb.compile_step, SGD, ms per step (median of {args.samples} runs of {args.steps} steps)")
    print(f"{'model':<34}{'1 thread':>10}{'2 threads':>11}{'speed-up':>10}{'load':>7}")
    for label, sizes, batch in [
        ("mnist MLP 784-256-128-10, batch 128", [784, 256, 128, 10], 128),
        ("wide MLP 1024-2048-2048-10, b. 256", [1024, 2048, 2048, 10], 256),
    ]:
        step, data = mlp_step(sizes, batch)
        steps = args.steps if sizes[1] < 1024 else max(2, args.steps // 5)
        with OtherLoad() as load:
            one, two = measure_step(step, data, steps, args.samples)
        print(f"{label:<34}{one:>10.3f}{two:>11.3f}{one / two:>10.2f}{load.cores:>7.2f}")
    print(f"\nworker counters: {parallel.statistics()}")


if __name__ == "__main__":
    main()
