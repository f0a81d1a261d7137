"""Time the compiled matmul kernel against NumPy's BLAS, both on one thread.

Run from the repository root with the project importable (``pip install -e .``)::

    python benchmarks/bench_matmul.py [--dtype float32] [--samples 9] [--seconds 0.05]

NumPy's BLAS is limited to one thread through the environment variables read when it
loads (set below, before NumPy is imported), so both sides use one core. Each sample
times a batch of calls lasting about ``--seconds``; samples of the two sides alternate so
that background load affects both alike, and the table shows the median rate of each.
Both sides write into a preallocated output; the compiled kernel is called through
ctypes with prepared arguments, as generated code would call it. The peak column is the
kernel's rate as a fraction of the core's FMA peak, taken as two FMA instructions per
cycle at the clock rate measured with a chain of dependent integer additions.
"""

from __future__ import annotations

import os

from common import THREAD_VARIABLES, emit_repeat

for _var in THREAD_VARIABLES:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import llvmlite.ir as ir  # noqa: E402
import numpy as np  # noqa: E402

from codegen.jit import compile_ir  # noqa: E402
from codegen.matmul import MatmulKernels, emit_matmul, matmul_config  # noqa: E402
from codegen.target import host_spec  # noqa: E402

# (label, M, N, K, trans_a, trans_b)
SQUARE = [(f"{n}^3", n, n, n, False, False) for n in (64, 128, 256, 512, 768, 1024)]
MLP = [
    ("x.W 128x784.784x256", 128, 256, 784, False, False),
    ("x.W 128x256.256x128", 128, 128, 256, False, False),
    ("xT.g 784x128.128x256", 784, 256, 128, True, False),
    ("xT.g 256x128.128x128", 256, 128, 128, True, False),
    ("g.WT 128x256.(128x256)T", 128, 128, 256, False, True),
    ("g.WT 128x256.(784x256)T", 128, 784, 256, False, True),
]


def _rate(run, flops: int, seconds: float) -> float:
    """GFLOP/s of one batch of Python-level calls lasting about ``seconds``."""
    calls = max(1, int(seconds * 50e9 / flops))
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return flops * calls / (time.perf_counter() - start) / 1e9


def _native_rate(repeat, args, flops: int, seconds: float) -> float:
    """GFLOP/s of the kernel called ``n`` times in a row from native code."""
    calls = max(1, int(seconds * 50e9 / flops))
    start = time.perf_counter()
    repeat(calls, *args)
    return flops * calls / (time.perf_counter() - start) / 1e9


def compile_kernels(dtype: str):
    """The four variants, each with a ``repeat_<name>(n, args...)`` loop calling it ``n`` times.

    The loop measures the kernel as generated code calls it, without the ctypes call
    (about 1.5 us for eleven arguments) that a Python-level loop adds to every call.
    """
    module = ir.Module()
    for trans_a in (False, True):
        for trans_b in (False, True):
            kernel = emit_matmul(module, _name(trans_a, trans_b), dtype, trans_a, trans_b)
            emit_repeat(module, kernel, f"repeat_{kernel.name}")
    compiled = compile_ir(module)
    argtypes = (ctypes.c_int64,) * 3 + (ctypes.c_void_p, ctypes.c_int64) * 3 + (ctypes.c_int32, ctypes.c_void_p)
    return {
        key: compiled.function(f"repeat_{_name(*key)}", None, ctypes.c_int64, *argtypes)
        for key in [(False, False), (False, True), (True, False), (True, True)]
    }


def _name(trans_a: bool, trans_b: bool) -> str:
    return f"mm_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}"


def _operands(m, n, k, trans_a, trans_b, dtype, rng):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, np.empty((m, n), dtype)


def measure(kernels: MatmulKernels, repeats, shape, samples: int, seconds: float, rng) -> tuple[float, float, float]:
    """Median GFLOP/s for one shape: compiled kernel (native loop, ctypes calls) and NumPy."""
    _, m, n, k, trans_a, trans_b = shape
    a, b, c = _operands(m, n, k, trans_a, trans_b, kernels.dtype, rng)
    fn = kernels.functions[trans_a, trans_b]
    work = kernels.workspace(m, n, k)
    args = (m, n, k, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], c.ctypes.data, n, 0, work.ctypes.data)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    kernels(a, b, c, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(c, op_a @ op_b, rtol=1e-3, atol=1e-3 * np.sqrt(k))
    flops = 2 * m * n * k
    native, called, numpy = [], [], []
    for _ in range(samples):
        native.append(_native_rate(repeats[trans_a, trans_b], args, flops, seconds))
        called.append(_rate(lambda: fn(*args), flops, seconds))
        numpy.append(_rate(lambda: np.matmul(op_a, op_b, out=c), flops, seconds))
    return statistics.median(native), statistics.median(called), statistics.median(numpy)


def peak_gflops(dtype: str) -> float:
    """The core's FMA peak: lanes x 2 FLOP x 2 FMA instructions per cycle at the measured clock."""
    return _clock_hz() * matmul_config(dtype).lanes * 2 * 2 / 1e9


def _clock_hz() -> float:
    """Cycles per second, from a chain of dependent integer additions (one cycle each on x86)."""
    i64 = ir.IntType(64)
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(i64, [i64, i64]), "chain")
    entry, loop, done = (fn.append_basic_block(label) for label in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    x = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    x.add_incoming(fn.args[1], entry)
    # Each add/xor depends on the previous one and on a run-time value, so none folds away.
    y = x
    for _ in range(16):
        y = b.xor(b.add(y, fn.args[1]), fn.args[1])
    i_next = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(i_next, loop)
    x.add_incoming(y, loop)
    b.cbranch(b.icmp_signed("<", i_next, fn.args[0]), loop, done)
    b.position_at_end(done)
    b.ret(y)
    chain = compile_ir(module).function("chain", ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    iterations = 2_000_000
    chain(iterations // 10, 3)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        chain(iterations, 3)
        best = min(best, time.perf_counter() - start)
    return iterations * 32 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.05)
    args = parser.parse_args()

    kernels = MatmulKernels(args.dtype)
    repeats = compile_kernels(args.dtype)
    cfg = matmul_config(args.dtype)
    peak = peak_gflops(args.dtype)
    spec = host_spec()
    print(
        f"CPU {spec.cpu}, {spec.vector_bits}-bit vectors, {args.dtype}, tile {cfg.mr}x{cfg.nr}, "
        f"KC {cfg.kc} MC {cfg.mc} NC {cfg.nc}; FMA peak about {peak:.0f} GFLOP/s; median of {args.samples}"
    )
    print("GFLOP/s: ours called from native code, ours called through ctypes, NumPy; ratio = ours / NumPy")
    header = f"{'shape (M x N x K)':<26}{'ours':>8}{'ctypes':>8}{'NumPy':>8}{'ratio':>7}{'of peak':>9}"
    print(header)
    rng = np.random.default_rng(0)
    for shape in SQUARE + MLP:
        native, called, numpy = measure(kernels, repeats, shape, args.samples, args.seconds, rng)
        label = f"{shape[0]} ({shape[1]}x{shape[2]}x{shape[3]})" if shape in SQUARE else shape[0]
        print(f"{label:<26}{native:>8.1f}{called:>8.1f}{numpy:>8.1f}{native / numpy:>7.2f}{native / peak:>9.0%}")


if __name__ == "__main__":
    main()
