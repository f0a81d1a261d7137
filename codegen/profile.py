"""Per-kernel timings of a compiled program: where a function's or a step's time goes.

Compiled with ``profile=True`` (:func:`symbackprop.compile`, :func:`symbackprop.compile_step`),
a program reads the CPU's cycle counter before and after each kernel call and adds the
difference, and one call, to that kernel's two counters: about 10 ns per kernel, which is why
it is an option. The counters live in the program's module and add up over every call, the
minibatches of an epoch included, until `KernelProfile.reset`. Times are the calling thread's:
a product split with the worker thread counts until both halves are done.

>>> import numpy as np, symbackprop as sb
>>> x = sb.input("x", (None, 4))
>>> w = sb.param("w", (4, 3), init="glorot_uniform", seed=0)
>>> f = sb.compile(sb.tanh(x @ w).sum(), inputs=[x], profile=True)
>>> _ = [f(np.ones((8, 4), np.float32)) for _ in range(10)]
>>> [(row.kernel.split()[0], row.calls) for row in f.profile.rows]
[('matmul', 10), ('reduce-sum', 10)]
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

_I64 = ir.IntType(64)
COUNTERS_SUFFIX = "_profile_counters"
CYCLES_SUFFIX = "_profile_cycles"


class ProfileEmitter:
    """Counters for ``count`` kernels in ``module`` and the code that times one call."""

    def __init__(self, module: ir.Module, name: str, count: int):
        self.count = count
        # cycles of kernel i at [i], calls of kernel i at [count + i]
        self.counters = ir.GlobalVariable(module, ir.ArrayType(_I64, 2 * max(count, 1)), f"{name}.profile")
        self.counters.initializer = ir.Constant(self.counters.type.pointee, None)
        self.counters.linkage = "internal"
        self.clock = module.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(_I64, []))
        accessor = ir.Function(module, ir.FunctionType(_I64.as_pointer(), []), name + COUNTERS_SUFFIX)
        b = ir.IRBuilder(accessor.append_basic_block("entry"))
        b.ret(b.gep(self.counters, [ir.Constant(_I64, 0), ir.Constant(_I64, 0)]))
        cycles = ir.Function(module, ir.FunctionType(_I64, []), name + CYCLES_SUFFIX)
        b = ir.IRBuilder(cycles.append_basic_block("entry"))
        b.ret(b.call(self.clock, []))

    def start(self, b: ir.IRBuilder) -> ir.Value:
        return b.call(self.clock, [])

    def stop(self, b: ir.IRBuilder, index: int, started: ir.Value) -> None:
        elapsed = b.sub(b.call(self.clock, []), started)
        for slot, amount in ((index, elapsed), (self.count + index, ir.Constant(_I64, 1))):
            pointer = b.gep(self.counters, [ir.Constant(_I64, 0), ir.Constant(_I64, slot)])
            b.store(b.add(b.load(pointer), amount), pointer)


@dataclass(frozen=True)
class ProfileRow:
    """One kernel: its position in the program, its text, calls and total seconds."""

    index: int
    kernel: str
    calls: int
    seconds: float

    @property
    def per_call(self) -> float:
        """Seconds per call (0 before the first)."""
        return self.seconds / self.calls if self.calls else 0.0


class KernelProfile:
    """The kernel timings of one compiled program, read from its counters when asked."""

    def __init__(self, program, compiled, name: str = "run"):
        self.kernels = [str(kernel) for kernel in program.kernels]
        address = compiled.function(name + COUNTERS_SUFFIX, ctypes.c_void_p)()
        self._counters = np.ctypeslib.as_array((ctypes.c_int64 * (2 * max(len(self.kernels), 1))).from_address(address))
        self._cycles_per_second = _cycles_per_second(compiled.function(name + CYCLES_SUFFIX, ctypes.c_int64))
        self._compiled = compiled  # the counters live in its memory

    @property
    def rows(self) -> list[ProfileRow]:
        """Every kernel in program order."""
        count = len(self.kernels)
        return [
            ProfileRow(i, text, int(self._counters[count + i]), self._counters[i] / self._cycles_per_second)
            for i, text in enumerate(self.kernels)
        ]

    @property
    def total(self) -> float:
        """Seconds spent in kernels since the last reset."""
        return sum(row.seconds for row in self.rows)

    def reset(self) -> None:
        """Set every counter to zero."""
        self._counters[:] = 0

    def table(self, top: int | None = None) -> str:
        """The kernels slowest first: time per call, share of the total, calls, the kernel."""
        rows = sorted(self.rows, key=lambda row: -row.seconds)[:top]
        total = self.total or 1.0
        lines = [f"{'per call':>10} {'share':>6} {'calls':>7}  kernel"]
        for row in rows:
            kernel = " ".join(line.strip() for line in row.kernel.splitlines())  # one line per kernel
            lines.append(f"{_format(row.per_call):>10} {row.seconds / total:>6.1%} {row.calls:>7}  {kernel}")
        lines.append(f"{_format(self.total):>10} {'':>6} {'':>7}  all kernels, in total")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"<KernelProfile of {len(self.kernels)} kernels, {_format(self.total)} in total>"


def _format(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e6:.3g} µs"


_rate: list[float] = []  # ticks per second, measured once per process


def _cycles_per_second(clock) -> float:
    """Cycle-counter ticks per second, measured over 5 ms of wall time the first time (every
    program's clock reads the same counter). A target without a counter reads 0: its
    times come out as 0."""
    if not _rate:
        start, first = time.perf_counter(), clock()
        while time.perf_counter() - start < 0.005:
            pass
        _rate.append((clock() - first) / (time.perf_counter() - start))
    return _rate[0] if _rate[0] > 0 else float("inf")
