"""Time the compiled vector math (exp, log, tanh, sigmoid) against NumPy on one large array.

Run from the repository root with the project importable (``pip install -e .``)::

    python benchmarks/bench_vecmath.py [--size 1000000] [--repeats 31] [--dtype float32]

Both sides write into a preallocated output; each time is the median of ``--repeats`` runs.
NumPy's sigmoid is ``1 / (1 + exp(-x))`` done in place with ``out=`` arguments. The last
column is the largest relative difference from NumPy's result in the same dtype, a sanity
check only: accuracy against float64 references is measured in tests/codegen/test_vecmath.py.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import llvmlite.ir as ir
import numpy as np

from codegen import vecmath
from codegen.jit import compile_ir
from codegen.loops import emit_map_kernel
from codegen.target import host_spec

FUNCTIONS = ["exp", "log", "tanh", "sigmoid"]


def _inputs(name: str, size: int, dtype: str, rng: np.random.Generator) -> np.ndarray:
    if name == "log":
        return (10 ** rng.uniform(-3, 3, size)).astype(dtype)
    low, high = {"exp": (-10, 10), "tanh": (-5, 5), "sigmoid": (-10, 10)}[name]
    return rng.uniform(low, high, size).astype(dtype)


def _numpy(name: str, x: np.ndarray, out: np.ndarray) -> None:
    if name == "sigmoid":
        np.negative(x, out=out)
        np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)
    else:
        getattr(np, name)(x, out=out)


def _median_seconds(run, repeats: int) -> float:
    run()  # warm caches and page in the output
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10**6)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()

    module = ir.Module()
    for name in FUNCTIONS:
        emit_map_kernel(module, name, getattr(vecmath, name), args.dtype)
    compiled = compile_ir(module)
    spec = host_spec()
    print(f"CPU {spec.cpu}, {spec.vector_bits}-bit vectors, {args.size} x {args.dtype}, median of {args.repeats}")
    print(f"{'function':<10}{'compiled ms':>13}{'NumPy ms':>11}{'speed-up':>10}{'max rel diff':>14}")
    rng = np.random.default_rng(0)
    for name in FUNCTIONS:
        x = _inputs(name, args.size, args.dtype, rng)
        ours, theirs = np.empty_like(x), np.empty_like(x)
        kernel = compiled.function(name, None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
        out_ptr, x_ptr = ours.ctypes.data, x.ctypes.data
        t_ours = _median_seconds(lambda k=kernel, o=out_ptr, i=x_ptr: k(o, i, args.size), args.repeats)
        t_numpy = _median_seconds(lambda n=name, i=x, o=theirs: _numpy(n, i, o), args.repeats)
        reference = theirs.astype(np.float64)
        error = np.max(np.abs(ours - reference) / np.abs(reference))
        print(f"{name:<10}{t_ours * 1e3:>13.3f}{t_numpy * 1e3:>11.3f}{t_numpy / t_ours:>9.2f}x{error:>14.2e}")


if __name__ == "__main__":
    main()
