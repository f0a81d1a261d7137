"""A second thread for large matmuls: one persistent native worker per process.

The runtime is a small LLVM module, compiled once per process, with three entry points:

- ``sbp_worker_main(arg)``, the body of the one worker thread (a pthread that never runs
  Python code): it waits for a job, spinning on a counter for a short while (``pause`` and
  ``sched_yield``), then sleeping on a futex, so that an idle worker burns no CPU.
- ``sbp_parallel_for(fn, ctx, count, long)`` runs ``fn(ctx, index, thread)`` for every index
  below ``count``; the calling thread (``thread`` 0) and the worker (``thread`` 1) take the
  indices from a shared counter. The caller never waits for a worker that has not started:
  when the caller runs out of indices, it withdraws a job the worker has not yet taken.
  A worker that is busy (another Python thread's job), stopped or missing, makes the call
  run every index on the caller, so a call always finishes.
- ``sbp_stop()`` makes the worker return.

The caller also decides when the worker is not worth it: a sleeping worker is woken but
left out of a short job (it takes up to milliseconds to run again), and after jobs where
the worker came too late to help (its core busy with another process) calls run alone for
a while (`BACKOFF_MS`).

Generated code finds ``sbp_parallel_for`` through the pointer variable ``sbp_parallel_hook``,
which Python owns and registers as a process symbol (``llvm.add_symbol``) when this module
is imported, so generated code links in any process, the cached object code included. The
pointer is null until the worker runs; generated code then calls the kernels directly.

`parallel_matmul` wraps a matmul kernel: products of at least `MIN_FLOPS` floating-point
operations are cut into `CHUNKS` chunks of columns of C (or of rows when C has more rows
than columns), each computed by one kernel call with the workspace of the thread that runs
it; `matmul_workspace_elements` reserves a workspace per thread for them.

``SYMBACKPROP_THREADS=1`` keeps the worker from starting (everything runs on the calling
thread); so does a process limited to one CPU. After ``fork`` the child has no worker and
runs serially until `ensure_worker` is called again (`matmul_workspace_elements` does so
when a program is prepared for a batch size).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import signal
import threading
import time
import warnings

import llvmlite.binding as llvm
import llvmlite.ir as ir

from . import debug
from .builder import FoldingBuilder
from .jit import compile_ir
from .loops import llvm_float_type
from .matmul import MatmulConfig, matmul_config, matmul_workspace_size

__all__ = [
    "CHUNKS",
    "EPILOGUE_FN",
    "HOOK_SYMBOL",
    "MIN_FLOPS",
    "MIN_ELEMENTS",
    "THREADS_VAR",
    "at_least_flops",
    "chunk_function",
    "emit_parallel_for",
    "enabled",
    "ensure_worker",
    "matmul_workspace_elements",
    "parallel_matmul",
    "shutdown",
    "split_eligible",
    "statistics",
    "worker_running",
    "workspace_size_ir",
]

THREADS_VAR = "SYMBACKPROP_THREADS"
HOOK_SYMBOL = "sbp_parallel_hook"

# Products below this many FLOPs (2 M N K) stay on one thread. Measured on Zen 3 with a
# worker that is awake: a hand-off costs 0.25-0.4 us, and a 64x64x64 product (5e5 FLOPs,
# 6 us on one core) takes 3.4-3.6 us split. Smaller products lose inside a training step,
# where the worker first has to pull their operands from the other core's cache (digits'
# 32x64x64 steps: 17-18 us split against 14-15 us alone). See docs/backend-llvm.md.
MIN_FLOPS = 500_000
# Products from this many FLOPs are handed to a sleeping worker (which it wakes) rather
# than run alone: their chunks take much longer than the worker takes to wake, up to a
# millisecond or two on a virtual machine whose idle CPU the host has descheduled.
LONG_FLOPS = 200_000_000
# Chunks per product: two, one per thread, as more chunks repeat the packing of the
# operand that every chunk needs whole (measured: four chunks lost 2-15%).
CHUNKS = 2

# How long each side spins before sleeping on a futex, in microseconds. The worker spins
# after each job so that the next matmul of a step finds it awake (a futex wake-up takes
# 20-30 us here after a short sleep, 0.4-2 ms after tens of milliseconds, when the host
# has descheduled the idle virtual CPU); the caller spins while the worker finishes.
WORKER_SPIN_US = 300.0
CALLER_SPIN_US = 2000.0
# While spinning, each side calls ``sched_yield`` at most this often, in microseconds, so
# that another process waiting for its CPU gets it. Not at every turn: the system call
# costs about a microsecond on this virtual machine, and yielding at every turn made each
# hand-off of a job cost 1.1-1.4 us instead of 0.25-0.4 us (measured with chunks of
# 0.5 to 5 us).
YIELD_US = 20.0

# Fused elementwise loops (codegen/fusion.py) from this many elements are cut in two
# chunks, run by both threads when the worker is awake: 32768 elements of swish's loop take
# about 28 us, ten hand-offs' worth.
MIN_ELEMENTS = 1 << 15

_I1, _I32, _I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
_PTR = ir.IntType(8).as_pointer()
_VOID = ir.VoidType()
_CHUNK_FN = ir.FunctionType(_VOID, [_PTR, _I64, _I64])  # fn(ctx, index, thread)
_HOOK_FN = ir.FunctionType(_VOID, [_PTR, _PTR, _I64, _I1])  # sbp_parallel_for(fn, ctx, count, long)
EPILOGUE_FN = ir.FunctionType(
    _VOID, [_PTR, _I64, _I64, _I64, _I64]
)  # a split product's map (ctx, row, rows, col, cols)

# States of the job word.
_NONE, _POSTED, _TAKEN, _LEFT = 0, 1, 2, 3
# Counters of `statistics`, in the order of the runtime's array.
_COUNTERS = (
    "parallel_calls",
    "serial_busy",
    "serial_asleep",
    "serial_backoff",
    "withdrawn",
    "slow_worker",
    "worker_chunks",
    "worker_sleeps",
)
# After SLOW_JOBS_IN_A_ROW jobs in a row whose worker was slow (it never started while
# the caller computed, or the caller waited for it longer than it computed, so that the job
# took longer than on one thread: another process has the worker's core), calls run alone
# for BACKOFF_MS[0], twice as long after each further run of slow jobs, at most
# BACKOFF_MS[1]; a prompt job ends this. Jobs within GRACE_MS of the worker's wake-up are
# not judged: a virtual CPU back from idle runs at about half speed for a few
# milliseconds (measured: 3-5 ms on this machine). Four, not two: on a shared host two slow
# jobs in a row also come by chance, and the deep step's 21 jobs then ran alone for 4 ms
# at a time (medians of five alternate runs of 20 ms samples: 289 against 367 µs per step,
# 309 against 370 µs with 0.12 s pauses between samples); with a busy loop on the other
# core the backing off starts within microseconds either way (494 against 528 µs).
BACKOFF_MS = (4.0, 1000.0)
SLOW_JOBS_IN_A_ROW = 4
GRACE_MS = 10.0

# Linux futex numbers per architecture; elsewhere the worker is not used.
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98}
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129
# Spin-wait hints as intrinsics (inline assembly would need LLVM's asm parser): x86
# ``pause``, AArch64 ``yield`` (hint #1).
_SPIN_HINT = {"x86_64": "x86", "amd64": "x86", "aarch64": "aarch64", "arm64": "aarch64"}


# --------------------------------------------------------------------------- runtime module


class _RuntimeEmitter:
    """Builds the runtime module: shared words, futex calls, the worker and the dispatcher."""

    def __init__(self, futex_number: int, spin_hint: str | None):
        self.module = ir.Module(name="sbp_parallel")
        self.futex_number = futex_number
        self.spin_hint = spin_hint
        # Each shared word on its own cache line, so that spinning on one does not pull
        # in the line the other thread is writing.
        self.stop = self._word("state.stop", _I32)
        self.seq = self._word("state.seq", _I32)  # bumped at each post and at stop
        self.sleeping = self._word("state.worker_sleeping", _I32)
        self.caller_sleeping = self._word("state.caller_sleeping", _I32)
        self.owner = self._word("state.owner", _I32)  # 1 while a caller holds the worker
        self.job = self._word("state.job", _I32)
        self.next = self._word("job.next", _I64)
        self.fn = self._word("job.fn", _PTR)
        self.ctx = self._word("job.ctx", _PTR)
        self.count = self._word("job.count", _I64)
        self.worker_spin = self._word("config.worker_spin", _I64)
        self.caller_spin = self._word("config.caller_spin", _I64)
        self.yield_every = self._word("config.yield_every", _I64)
        self.grace = self._word("config.grace", _I64)  # cycles, like the three below
        self.backoff_min = self._word("config.backoff_min", _I64)
        self.backoff_max = self._word("config.backoff_max", _I64)
        self.woke_at = self._word("worker.woke_at", _I64)  # cycle count at its last wake-up
        self.until = self._word("backoff.until", _I64)  # calls run alone until this cycle
        self.backoff = self._word("backoff.length", _I64)
        self.strikes = self._word("backoff.strikes", _I64)  # slow jobs in a row
        self.counters = {name: self._word(f"stats.{name}", _I64) for name in _COUNTERS}
        self.syscall = ir.Function(self.module, ir.FunctionType(_I64, [_I64], var_arg=True), "syscall")
        self.sched_yield = ir.Function(self.module, ir.FunctionType(_I32, []), "sched_yield")

    def _word(self, name: str, type_: ir.Type) -> ir.GlobalVariable:
        word = ir.GlobalVariable(self.module, type_, name)
        word.linkage = "internal"
        word.initializer = ir.Constant(type_, None)
        word.align = 64
        return word

    def function(self, name: str, type_: ir.FunctionType, exported: bool = True) -> tuple[ir.Function, ir.IRBuilder]:
        fn = ir.Function(self.module, type_, name)
        fn.attributes.add("nounwind")
        if not exported:
            fn.linkage = "internal"
        return fn, FoldingBuilder(fn.append_basic_block("entry"))

    # -- small idioms

    @staticmethod
    def load(b: ir.IRBuilder, word, order: str = "acquire") -> ir.Value:
        return b.load_atomic(word, order, _size(word.type.pointee))

    @staticmethod
    def store(b: ir.IRBuilder, value, word, order: str = "release") -> None:
        value = ir.Constant(word.type.pointee, value) if isinstance(value, int) else value
        b.store_atomic(value, word, order, _size(word.type.pointee))

    def cycles(self, b: ir.IRBuilder) -> ir.Value:
        """A cycle counter (the TSC on x86); 0 where the target has none."""
        existing = self.module.globals.get("llvm.readcyclecounter")
        counter = existing or ir.Function(self.module, ir.FunctionType(_I64, []), "llvm.readcyclecounter")
        return b.call(counter, [])

    def count_up(self, b: ir.IRBuilder, counter: str) -> None:
        b.atomic_rmw("add", self.counters[counter], ir.Constant(_I64, 1), "monotonic")

    def pause(self, b: ir.IRBuilder) -> None:
        """A spin-wait hint: lets the other thread of the core run, saves power."""
        if self.spin_hint == "x86":
            b.call(self._intrinsic("llvm.x86.sse2.pause", []), [])
        elif self.spin_hint == "aarch64":
            b.call(self._intrinsic("llvm.aarch64.hint", [_I32]), [ir.Constant(_I32, 1)])

    def relax(self, b: ir.IRBuilder, now: ir.Value, next_yield: ir.Value) -> ir.Value:
        """One step of a spin-wait: the hint, then ``sched_yield`` if the cycle count ``now``
        has reached ``next_yield``; returns the next ``next_yield``.

        Where another thread waits for this CPU (a process that keeps the other core
        busy), yielding hands it over instead of spinning against it; on an idle CPU the
        call returns at once, but costs a system call, hence only every `YIELD_US`.
        """
        self.pause(b)
        due = b.icmp_unsigned(">=", now, next_yield)
        with b.if_then(due, likely=False):
            b.call(self.sched_yield, [])
        return b.select(due, b.add(now, self.load(b, self.yield_every, "monotonic")), next_yield)

    def _intrinsic(self, name: str, args: list[ir.Type]) -> ir.Function:
        existing = self.module.globals.get(name)
        return existing if existing is not None else ir.Function(self.module, ir.FunctionType(_VOID, args), name)

    def futex(self, b: ir.IRBuilder, word, op: int, value: ir.Value) -> None:
        args = [ir.Constant(_I64, self.futex_number), b.bitcast(word, _PTR), ir.Constant(_I64, op)]
        args += [b.zext(value, _I64), ir.Constant(_PTR, None), ir.Constant(_PTR, None), ir.Constant(_I64, 0)]
        b.call(self.syscall, args)

    def wake(self, b: ir.IRBuilder, word, count: int) -> None:
        self.futex(b, word, _FUTEX_WAKE_PRIVATE, ir.Constant(_I32, count))

    def run_chunks(self, b: ir.IRBuilder, fn, ctx, count, thread: int, name: str) -> None:
        """Take indices from the shared counter and run them until none is left."""
        head, body, done = (b.append_basic_block(f"{name}.{s}") for s in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        index = b.atomic_rmw("add", self.next, ir.Constant(_I64, 1), "monotonic")
        b.cbranch(b.icmp_signed("<", index, count), body, done)
        b.position_at_end(body)
        b.call(fn, [ctx, index, ir.Constant(_I64, thread)])
        if thread == 1:
            self.count_up(b, "worker_chunks")
        b.branch(head)
        b.position_at_end(done)


def _size(type_: ir.Type) -> int:
    """Bytes of a shared word: an integer's width, or a 64-bit pointer."""
    return type_.width // 8 if isinstance(type_, ir.IntType) else 8


def _emit_worker_main(e: _RuntimeEmitter) -> None:
    """``void *sbp_worker_main(void *)``: wait for jobs, run their chunks, return at stop."""
    fn, b = e.function("sbp_worker_main", ir.FunctionType(_PTR, [_PTR]))
    top, spin, spin_body, sleep, take, chunks, leave, wake, exit_ = (
        fn.append_basic_block(n)
        for n in ("top", "spin", "spin.body", "sleep", "take", "chunks", "leave", "wake", "exit")
    )
    e.store(b, e.cycles(b), e.woke_at, "monotonic")
    b.branch(top)
    b.position_at_end(top)
    # Read the counter before looking for work: any post or stop after this read changes
    # it, so the futex wait below returns at once instead of missing the wake-up.
    seen = e.load(b, e.seq)
    stopping = b.icmp_signed("!=", e.load(b, e.stop), ir.Constant(_I32, 0))
    look = b.append_basic_block("look")
    b.cbranch(stopping, exit_, look)
    b.position_at_end(look)
    posted = b.icmp_signed("==", e.load(b, e.job), ir.Constant(_I32, _POSTED))
    spin_start = b.append_basic_block("spin.start")
    b.cbranch(posted, take, spin_start)
    # Spin a while: the next matmul of a step usually comes within microseconds.
    b.position_at_end(spin_start)
    spin_from = e.cycles(b)
    first_deadline = b.add(spin_from, e.load(b, e.worker_spin, "monotonic"))
    first_yield = b.add(spin_from, e.load(b, e.yield_every, "monotonic"))
    b.branch(spin)
    b.position_at_end(spin)
    deadline, next_yield = b.phi(_I64), b.phi(_I64)
    deadline.add_incoming(first_deadline, spin_start)
    next_yield.add_incoming(first_yield, spin_start)
    now = e.cycles(b)
    b.cbranch(b.icmp_signed("<", now, deadline), spin_body, sleep)
    b.position_at_end(spin_body)
    next_yield.add_incoming(e.relax(b, now, next_yield), b.block)
    # While a caller is still inside its job (finishing its own chunks), the next job
    # is near: the countdown starts when it leaves.
    held = b.icmp_signed("!=", e.load(b, e.owner, "monotonic"), ir.Constant(_I32, 0))
    later = b.add(now, e.load(b, e.worker_spin, "monotonic"))
    deadline.add_incoming(b.select(held, later, deadline), b.block)
    b.cbranch(b.icmp_signed("!=", e.load(b, e.seq, "monotonic"), seen), top, spin)
    # Sleep. The caller wakes us only if it sees `sleeping` set; with both sides
    # sequentially consistent, either it sees the flag or we see its new counter.
    b.position_at_end(sleep)
    e.store(b, 1, e.sleeping, "seq_cst")
    unchanged = b.icmp_signed("==", e.load(b, e.seq, "seq_cst"), seen)
    with b.if_then(unchanged):
        e.count_up(b, "worker_sleeps")
        e.futex(b, e.seq, _FUTEX_WAIT_PRIVATE, seen)
        e.store(b, e.cycles(b), e.woke_at, "monotonic")
    e.store(b, 0, e.sleeping, "seq_cst")
    b.branch(top)
    # Take the job unless the caller withdrew it first.
    b.position_at_end(take)
    pair = b.cmpxchg(e.job, ir.Constant(_I32, _POSTED), ir.Constant(_I32, _TAKEN), "acq_rel", "acquire")
    b.cbranch(b.extract_value(pair, 1), chunks, top)
    b.position_at_end(chunks)
    job_fn = b.bitcast(b.load(e.fn), _CHUNK_FN.as_pointer())
    e.run_chunks(b, job_fn, b.load(e.ctx), b.load(e.count), 1, "worker")
    b.branch(leave)
    b.position_at_end(leave)
    e.store(b, _LEFT, e.job, "seq_cst")
    waiting = b.icmp_signed("!=", e.load(b, e.caller_sleeping, "seq_cst"), ir.Constant(_I32, 0))
    b.cbranch(waiting, wake, top)
    b.position_at_end(wake)
    e.wake(b, e.job, 2**31 - 1)
    b.branch(top)
    b.position_at_end(exit_)
    b.ret(ir.Constant(_PTR, None))


def _emit_parallel_for(e: _RuntimeEmitter) -> None:
    """``void sbp_parallel_for(fn, ctx, count, long)``: every chunk, with the worker's help if free.

    ``long`` says the chunks take long enough to be worth waiting for a sleeping worker.
    """
    fn, b = e.function("sbp_parallel_for", _HOOK_FN)
    chunk_fn, ctx, count, long_job = fn.args
    chunk_fn = b.bitcast(chunk_fn, _CHUNK_FN.as_pointer())
    alone = _emit_serial(e)
    serial, backing_off, claim, awake, post = (
        fn.append_basic_block(n) for n in ("serial", "backoff", "claim", "awake", "post")
    )
    single = b.icmp_signed("<", count, ir.Constant(_I64, 2))
    stopped = b.icmp_signed("!=", e.load(b, e.stop), ir.Constant(_I32, 0))
    check_skip = b.append_basic_block("check_skip")
    b.cbranch(b.or_(single, stopped), serial, check_skip)
    b.position_at_end(check_skip)
    skip = b.icmp_signed("<", e.cycles(b), e.load(b, e.until, "monotonic"))
    b.cbranch(skip, backing_off, claim)
    b.position_at_end(backing_off)
    e.count_up(b, "serial_backoff")
    b.branch(serial)
    b.position_at_end(serial)
    b.call(alone, [chunk_fn, ctx, count])
    b.ret_void()
    # One job at a time: a caller that finds the worker held runs alone.
    b.position_at_end(claim)
    pair = b.cmpxchg(e.owner, ir.Constant(_I32, 0), ir.Constant(_I32, 1), "acquire", "monotonic")
    busy = b.append_basic_block("busy")
    b.cbranch(b.extract_value(pair, 1), awake, busy)
    b.position_at_end(busy)
    e.count_up(b, "serial_busy")
    b.branch(serial)
    # A sleeping worker can take a millisecond to run again (an idle virtual CPU is
    # halted), and a chunk it takes late makes the caller wait longer than doing it
    # alone. Unless the job is long, wake it and run alone, holding the worker so that
    # it spins until the next call rather than sleeping again during this one.
    b.position_at_end(awake)
    asleep = b.icmp_signed("!=", e.load(b, e.sleeping, "seq_cst"), ir.Constant(_I32, 0))
    wake = b.append_basic_block("wake")
    b.cbranch(b.and_(asleep, b.not_(long_job)), wake, post)
    b.position_at_end(wake)
    b.atomic_rmw("add", e.seq, ir.Constant(_I32, 1), "seq_cst")
    e.wake(b, e.seq, 1)
    e.count_up(b, "serial_asleep")
    b.call(alone, [chunk_fn, ctx, count])
    e.store(b, 0, e.owner)
    b.ret_void()
    b.position_at_end(post)
    _post_job(e, b, fn.args[0], ctx, count)
    started = e.cycles(b)
    e.run_chunks(b, chunk_fn, ctx, count, 0, "caller")
    _finish_job(e, b, fn, started, e.cycles(b))
    b.ret_void()


def _emit_serial(e: _RuntimeEmitter) -> ir.Function:
    """``run_alone(fn, ctx, count)``: every chunk on the calling thread, in order."""
    fn, b = e.function("run_alone", ir.FunctionType(_VOID, [_CHUNK_FN.as_pointer(), _PTR, _I64]), exported=False)
    with _counted_loop(b, fn.args[2], "chunk") as index:
        b.call(fn.args[0], [fn.args[1], index, ir.Constant(_I64, 0)])
    b.ret_void()
    return fn


def _post_job(e: _RuntimeEmitter, b: ir.IRBuilder, fn, ctx, count) -> None:
    """Publish the job, bump the counter the worker watches, wake the worker if asleep."""
    b.store(fn, e.fn)
    b.store(ctx, e.ctx)
    b.store(count, e.count)
    e.store(b, 0, e.next, "monotonic")
    e.store(b, _POSTED, e.job, "seq_cst")  # orders the stores above before the worker's take
    b.atomic_rmw("add", e.seq, ir.Constant(_I32, 1), "seq_cst")
    e.count_up(b, "parallel_calls")
    asleep = b.icmp_signed("!=", e.load(b, e.sleeping, "seq_cst"), ir.Constant(_I32, 0))
    with b.if_then(asleep):
        e.wake(b, e.seq, 1)


def _finish_job(e: _RuntimeEmitter, b: ir.IRBuilder, fn: ir.Function, started, finished) -> None:
    """Withdraw the job if the worker never took it, else wait until it has left; release.

    ``started`` and ``finished`` are the cycle counts around the caller's own chunks.
    """
    release, wait, check, pause, sleep, done = (
        fn.append_basic_block(n) for n in ("release", "wait", "wait.check", "wait.pause", "wait.sleep", "done")
    )
    pair = b.cmpxchg(e.job, ir.Constant(_I32, _POSTED), ir.Constant(_I32, _NONE), "acquire", "acquire")
    withdrawn = b.append_basic_block("withdrawn")
    b.cbranch(b.extract_value(pair, 1), withdrawn, wait)
    b.position_at_end(withdrawn)
    e.count_up(b, "withdrawn")
    # Not even started while the caller computed: the worker's core is busy elsewhere.
    _update_backoff(e, b, ir.Constant(_I1, 1))
    b.branch(release)
    # The worker is inside the job: it runs at most one chunk more. Spin, then sleep.
    b.position_at_end(wait)
    deadline = b.add(finished, e.load(b, e.caller_spin, "monotonic"))
    first_yield = b.add(finished, e.load(b, e.yield_every, "monotonic"))
    b.branch(check)
    b.position_at_end(check)
    next_yield = b.phi(_I64)
    next_yield.add_incoming(first_yield, wait)
    left = b.icmp_signed("==", e.load(b, e.job), ir.Constant(_I32, _LEFT))
    b.cbranch(left, done, pause)
    b.position_at_end(pause)
    now = e.cycles(b)
    next_yield.add_incoming(e.relax(b, now, next_yield), b.block)
    b.cbranch(b.icmp_signed("<", now, deadline), check, sleep)
    b.position_at_end(sleep)
    e.store(b, 1, e.caller_sleeping, "seq_cst")
    state = e.load(b, e.job, "seq_cst")
    with b.if_then(b.icmp_signed("!=", state, ir.Constant(_I32, _LEFT))):
        e.futex(b, e.job, _FUTEX_WAIT_PRIVATE, state)
    e.store(b, 0, e.caller_sleeping, "seq_cst")
    b.cbranch(b.icmp_signed("==", e.load(b, e.job), ir.Constant(_I32, _LEFT)), done, sleep)
    b.position_at_end(done)
    e.store(b, _NONE, e.job, "monotonic")
    waited = b.sub(e.cycles(b), finished)
    # Slower than alone: the caller computed half the work, then waited more than that.
    _update_backoff(e, b, b.icmp_signed(">", waited, b.sub(finished, started)))
    b.branch(release)
    b.position_at_end(release)
    e.store(b, 0, e.owner)


def _update_backoff(e: _RuntimeEmitter, b: ir.IRBuilder, slow: ir.Value) -> None:
    """After `SLOW_JOBS_IN_A_ROW` slow jobs in a row, run alone for a while, doubling; a prompt
    job ends it.

    A worker that shares its core with another process starts late and computes at a
    fraction of the speed: the caller waits for it longer than it would take alone, and
    its spinning takes time from the caller. Only the caller holding the worker runs
    this, so monotonic loads and stores suffice.
    """
    zero, one = ir.Constant(_I64, 0), ir.Constant(_I64, 1)
    now = e.cycles(b)
    fresh = b.icmp_signed("<", b.sub(now, e.load(b, e.woke_at, "monotonic")), e.load(b, e.grace, "monotonic"))
    with b.if_then(b.not_(fresh)):
        with b.if_else(slow) as (is_slow, is_prompt):
            with is_slow:
                e.count_up(b, "slow_worker")
                strikes = b.add(e.load(b, e.strikes, "monotonic"), one)
                out = b.icmp_signed(">=", strikes, ir.Constant(_I64, SLOW_JOBS_IN_A_ROW))
                e.store(b, b.select(out, zero, strikes), e.strikes, "monotonic")
                with b.if_then(out):
                    length = b.mul(e.load(b, e.backoff, "monotonic"), ir.Constant(_I64, 2))
                    low, high = e.load(b, e.backoff_min, "monotonic"), e.load(b, e.backoff_max, "monotonic")
                    length = b.select(b.icmp_signed("<", length, low), low, length)
                    length = b.select(b.icmp_signed(">", length, high), high, length)
                    e.store(b, length, e.backoff, "monotonic")
                    e.store(b, b.add(now, length), e.until, "monotonic")
            with is_prompt:
                e.store(b, zero, e.strikes, "monotonic")
                e.store(b, zero, e.backoff, "monotonic")


class _counted_loop:  # noqa: N801 - used as a statement, like a loop keyword
    """``for index in range(count)`` around the body emitted inside the ``with`` block."""

    def __init__(self, b: ir.IRBuilder, count: ir.Value, name: str):
        self.b, self.count, self.name = b, count, name

    def __enter__(self) -> ir.Value:
        b = self.b
        before = b.block
        self.head = b.append_basic_block(f"{self.name}.head")
        body = b.append_basic_block(f"{self.name}.body")
        self.done = b.append_basic_block(f"{self.name}.done")
        b.branch(self.head)
        b.position_at_end(self.head)
        self.index = b.phi(_I64)
        self.index.add_incoming(ir.Constant(_I64, 0), before)
        b.cbranch(b.icmp_signed("<", self.index, self.count), body, self.done)
        b.position_at_end(body)
        return self.index

    def __exit__(self, *exc) -> None:
        b = self.b
        self.index.add_incoming(b.add(self.index, ir.Constant(_I64, 1)), b.block)
        b.branch(self.head)
        b.position_at_end(self.done)


def _emit_control(e: _RuntimeEmitter) -> None:
    """Stop, reset, configuration, statistics and the pause loop used for calibration."""
    _, b = e.function("sbp_stop", ir.FunctionType(_VOID, []))
    e.store(b, 1, e.stop, "seq_cst")
    b.atomic_rmw("add", e.seq, ir.Constant(_I32, 1), "seq_cst")
    e.wake(b, e.seq, 2**31 - 1)
    b.ret_void()

    # Only while no worker thread exists: before starting one, and in a forked child.
    fn, b = e.function("sbp_reset", ir.FunctionType(_VOID, [_I32]))
    for word in (e.stop, e.sleeping, e.caller_sleeping, e.until, e.backoff, e.strikes):
        e.store(b, 0, word, "seq_cst")
    with b.if_then(b.icmp_signed("!=", fn.args[0], ir.Constant(_I32, 0))):
        e.store(b, 0, e.owner, "seq_cst")
        e.store(b, _NONE, e.job, "seq_cst")
    b.ret_void()

    words = (e.worker_spin, e.caller_spin, e.yield_every, e.grace, e.backoff_min, e.backoff_max)
    fn, b = e.function("sbp_configure", ir.FunctionType(_VOID, [_I64] * len(words)))
    for value, word in zip(fn.args, words):
        e.store(b, value, word, "monotonic")
    b.ret_void()

    _, b = e.function("sbp_cycles", ir.FunctionType(_I64, []))
    b.ret(e.cycles(b))

    fn, b = e.function("sbp_statistics", ir.FunctionType(_VOID, [_I64.as_pointer()]))
    for index, name in enumerate(_COUNTERS):
        b.store(e.load(b, e.counters[name], "monotonic"), b.gep(fn.args[0], [ir.Constant(_I64, index)]))
    b.ret_void()

    fn, b = e.function("sbp_pause_loop", ir.FunctionType(_VOID, [_I64]))
    with _counted_loop(b, fn.args[0], "spin"):
        e.pause(b)
    b.ret_void()


def runtime_module(futex_number: int, spin_hint: str | None) -> ir.Module:
    """The runtime as an LLVM module, for the given futex system call number and spin hint.

    Examples
    --------
    >>> module = runtime_module(202, "x86")
    >>> [f.name for f in module.functions if f.name.startswith("sbp_")][:3]
    ['sbp_worker_main', 'sbp_parallel_for', 'sbp_stop']
    """
    e = _RuntimeEmitter(futex_number, spin_hint)
    _emit_worker_main(e)
    _emit_parallel_for(e)
    _emit_control(e)
    return e.module


# --------------------------------------------------------------------------- the worker


class _Runtime:
    """The compiled runtime and ctypes handles to its control functions."""

    def __init__(self, futex_number: int, spin_hint: str | None):
        self.compiled = compile_ir(runtime_module(futex_number, spin_hint))
        self.parallel_for = self.compiled.address("sbp_parallel_for")
        self.worker_main = self.compiled.address("sbp_worker_main")
        self.stop = self.compiled.function("sbp_stop", None)
        self.reset = self.compiled.function("sbp_reset", None, ctypes.c_int32)
        self.configure = self.compiled.function("sbp_configure", None, *[ctypes.c_int64] * 6)
        self.cycle_count = self.compiled.function("sbp_cycles", ctypes.c_int64)
        self.read_statistics = self.compiled.function("sbp_statistics", None, ctypes.c_void_p)
        self.pause_loop = self.compiled.function("sbp_pause_loop", None, ctypes.c_int64)
        self.cycles_per_ns = self._calibrate()

    def _calibrate(self) -> float:
        """Cycle-counter ticks per nanosecond (0 where the target has no counter), timed
        over a spin loop of about a millisecond."""
        start, first = time.perf_counter(), self.cycle_count()
        self.pause_loop(50_000)
        elapsed, last = time.perf_counter() - start, self.cycle_count()
        return max((last - first) / elapsed / 1e9, 0.0)

    def apply_settings(self) -> None:
        """The times chosen in this module, as cycle counts."""
        cycles = [int(ms * 1e6 * self.cycles_per_ns) for ms in (GRACE_MS, *BACKOFF_MS)]
        spins = [int(us * 1e3 * self.cycles_per_ns) for us in (WORKER_SPIN_US, CALLER_SPIN_US, YIELD_US)]
        self.configure(*spins, *cycles)


class _Worker:
    """The process's worker thread: started lazily, stopped at exit."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runtime: _Runtime | None = None
        self.thread: ctypes.c_ulong | None = None
        self.pid: int | None = None
        self.exit_hook_registered = False
        self.failed = False  # pthread_create failed


# The pointer generated code loads; a process symbol, so its address never changes.
_HOOK = ctypes.c_void_p(None)
llvm.add_symbol(HOOK_SYMBOL, ctypes.addressof(_HOOK))
_WORKER = _Worker()
_LIBC = ctypes.CDLL(None, use_errno=True)


def enabled() -> bool:
    """Whether a worker may be used: ``SYMBACKPROP_THREADS`` is not 1, two CPUs, Linux futexes.

    ``SYMBACKPROP_THREADS`` unset, empty, 0 (automatic) or 2 and more allow the worker
    (only one is ever started); 1 forbids it; anything else warns and counts as unset.
    """
    value = os.environ.get(THREADS_VAR, "").strip()
    if value and not value.isdigit():
        warnings.warn(f"{THREADS_VAR}={value!r} is not a thread count; using the default", RuntimeWarning, stacklevel=2)
    elif value and int(value) == 1:
        return False
    return _platform_support() is not None and len(os.sched_getaffinity(0)) >= 2


def _platform_support() -> tuple[int, str | None] | None:
    """(futex system call number, spin hint) on Linux, else None."""
    if not hasattr(os, "sched_getaffinity") or platform.system() != "Linux":
        return None
    machine = platform.machine().lower()
    if machine not in _SYS_FUTEX or not hasattr(_LIBC, "pthread_create"):
        return None
    return _SYS_FUTEX[machine], _SPIN_HINT.get(machine)


def worker_running() -> bool:
    """Whether this process's worker thread is running."""
    return _WORKER.thread is not None and _WORKER.pid == os.getpid()


def ensure_worker() -> bool:
    """Start the worker thread unless it runs or is not `enabled`; returns whether it runs.

    The first start compiles the runtime (about a millisecond from the object cache).
    """
    if worker_running():
        return True
    with _WORKER.lock:
        if worker_running():
            return True
        if _WORKER.failed or not enabled():
            return False
        if _WORKER.runtime is None:
            _WORKER.runtime = _Runtime(*_platform_support())
        runtime = _WORKER.runtime
        runtime.apply_settings()
        # A forked child inherits the parent's job words mid-use; the parent's own state
        # is consistent after a join, and a call in flight on another thread owns it.
        runtime.reset(int(_WORKER.pid not in (None, os.getpid())))
        thread = _start_thread(runtime.worker_main)
        if thread is None:
            _WORKER.failed = True  # warned once; one thread from here on
            return False
        _WORKER.thread, _WORKER.pid = thread, os.getpid()
        _HOOK.value = runtime.parallel_for
        if not _WORKER.exit_hook_registered:
            atexit.register(shutdown)
            _WORKER.exit_hook_registered = True
        debug.log(1, f"parallel: worker thread started ({runtime.cycles_per_ns:.2f} cycle-counter ticks per ns)")
        return True


def _start_thread(start_routine: int) -> ctypes.c_ulong | None:
    """A pthread running ``start_routine(NULL)`` with every signal blocked, or None.

    Blocked signals go to the other threads: the worker never runs Python's handler and
    its futex waits are never interrupted.
    """
    thread = ctypes.c_ulong()
    create = _LIBC.pthread_create
    create.argtypes = [ctypes.POINTER(ctypes.c_ulong), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    create.restype = ctypes.c_int
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        error = create(ctypes.byref(thread), None, start_routine, None)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if error:
        warnings.warn(f"parallel: no worker thread ({os.strerror(error)}); running on one thread", stacklevel=3)
        return None
    return thread


def shutdown(timeout: float = 2.0) -> None:
    """Stop the worker and join it; generated code runs on the calling thread afterwards.

    Called at interpreter exit. Calls in flight on other threads finish on their own
    thread. If the worker does not return within ``timeout`` seconds it is left to the
    process's exit, and the runtime's code is never freed, so that it cannot run freed
    memory.
    """
    with _WORKER.lock:
        _HOOK.value = None
        if not worker_running():
            _WORKER.thread = None
            return
        _WORKER.runtime.stop()
        joined = _join(_WORKER.thread, timeout)
        _WORKER.thread = None
        if not joined:
            # The thread may still run the runtime's code: never free it.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(_WORKER.runtime))
            warnings.warn("parallel: the worker thread did not stop in time", RuntimeWarning, stacklevel=2)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _join(thread: ctypes.c_ulong, timeout: float) -> bool:
    """``pthread_timedjoin_np`` (glibc, musl) with a deadline; detach where it is missing."""
    timed_join = getattr(_LIBC, "pthread_timedjoin_np", None)
    if timed_join is None:
        _LIBC.pthread_detach(thread)
        return True
    deadline = time.time() + timeout
    spec = _Timespec(int(deadline), int((deadline % 1) * 1e9))
    timed_join.argtypes = [ctypes.c_ulong, ctypes.c_void_p, ctypes.POINTER(_Timespec)]
    timed_join.restype = ctypes.c_int
    return timed_join(thread, None, ctypes.byref(spec)) == 0


def _after_fork_in_child() -> None:
    """The child has no worker thread: run serially until `ensure_worker` starts one."""
    _HOOK.value = None
    _WORKER.thread = None
    _WORKER.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def statistics() -> dict[str, int]:
    """Counters since the process started (zeros before the runtime is compiled).

    ``parallel_calls``: jobs offered to the worker; ``serial_busy``: calls that ran alone
    because the worker was held by another thread; ``serial_asleep``: calls that ran alone
    because the worker was asleep (they wake it for the next call); ``serial_backoff``:
    calls that ran alone after slow workers; ``slow_worker``: jobs whose worker made the
    caller wait longer than it computed, or never started (not counting the first
    milliseconds after the worker woke); ``withdrawn``: jobs the caller took back
    because the worker had not started them; ``worker_chunks``: chunks the worker ran;
    ``worker_sleeps``: times the worker slept on its futex.
    """
    values = (ctypes.c_int64 * len(_COUNTERS))()
    if _WORKER.runtime is not None:
        _WORKER.runtime.read_statistics(values)
    return dict(zip(_COUNTERS, values))


# --------------------------------------------------------------------------- split matmuls


def split_eligible(m: int, n: int, k: int) -> bool:
    """Whether an ``m x n x k`` product may be split: ``2 m n k >= MIN_FLOPS``.

    Written as generated code evaluates it, ``m n >= ceil(MIN_FLOPS / 2k)``, so that the
    two agree exactly. Whether it is split also depends on the worker and on the shape.

    Examples
    --------
    >>> split_eligible(64, 64, 64), split_eligible(32, 64, 64)
    (True, False)
    """
    if m <= 0 or n <= 0 or k <= 0:
        return False
    return m * n >= -(-MIN_FLOPS // (2 * k))


def matmul_workspace_elements(m: int, n: int, k: int, dtype: str) -> int:
    """Workspace elements for a product compiled through `parallel_matmul`.

    Twice `matmul_workspace_size` for a product that may be split (each thread packs into
    its own half), once otherwise. A product that may be split also starts the worker:
    this is called when a program is prepared for a batch size, before it first runs.

    Examples
    --------
    >>> from codegen.matmul import matmul_workspace_size
    >>> matmul_workspace_elements(8, 8, 8, "float32") == matmul_workspace_size(8, 8, 8, "float32")
    True
    """
    single = matmul_workspace_size(m, n, k, dtype)
    if not split_eligible(m, n, k):
        return single
    ensure_worker()
    return 2 * single


def parallel_matmul(
    module: ir.Module,
    kernel: ir.Function,
    dtype: str,
    trans_a: bool,
    trans_b: bool,
    config: MatmulConfig | None = None,
    *,
    epilogue: bool = False,
) -> ir.Function:
    """A function with ``kernel``'s signature that splits large products between two threads.

    ``kernel`` is a matmul of `codegen.matmul.emit_matmul` with ``dtype``, ``trans_a``,
    ``trans_b`` and ``config`` (or its declaration). The wrapper calls it directly for
    products below `MIN_FLOPS`, for shapes too small to cut and while no worker runs;
    otherwise it cuts C into `CHUNKS` chunks of columns (whole micro-kernel tiles; rows when
    C has more rows than columns) and hands them to ``sbp_parallel_for``. The ``work``
    argument must hold `matmul_workspace_elements` elements. The wrapper is emitted once
    per kernel and module.

    With ``epilogue``, the wrapper takes two more arguments: a function of `EPILOGUE_FN`,
    ``void (i8* ctx, i64 row, i64 rows, i64 col, i64 cols)``, or null, and its ``ctx``. It
    calls the function on each block of C right after the kernel computed it, in the same
    thread: a map of the product's result then reads it from that core's cache, and is
    split as the product is. The function is an argument rather than a callee emitted into
    a wrapper of its own, so that one wrapper in the kernel library serves every program's
    maps (each such wrapper was some 250 instructions of every program's code).

    Examples
    --------
    >>> from codegen.matmul import emit_matmul
    >>> module = ir.Module()
    >>> kernel = emit_matmul(module, "mm", "float32", False, False)
    >>> parallel_matmul(module, kernel, "float32", False, False).name
    'mm.parallel'
    >>> wrapper = parallel_matmul(module, kernel, "float32", False, False, epilogue=True)
    >>> wrapper.name, len(wrapper.args)
    ('mm.parallel.epilogue', 13)
    """
    name = f"{kernel.name}.parallel"
    split = module.globals.get(f"{name}.epilogue")
    if split is None:
        cfg = config or matmul_config(dtype)
        context = _context_type(dtype)
        chunk = _emit_chunk(module, f"{name}.chunk", kernel, context, bool(trans_a), bool(trans_b))
        split = _emit_dispatch(module, f"{name}.epilogue", kernel, chunk, context, cfg)
    if epilogue:
        return split
    plain = module.globals.get(name)
    if plain is None:  # the same, with no epilogue
        plain = ir.Function(module, kernel.function_type, name)
        plain.linkage = "internal"
        plain.attributes.add("nounwind")
        b = ir.IRBuilder(plain.append_basic_block("entry"))
        b.call(split, [*plain.args, ir.Constant(EPILOGUE_FN.as_pointer(), None), ir.Constant(_PTR, None)])
        b.ret_void()
    return plain


def chunk_function(module: ir.Module, name: str) -> ir.Function:
    """A new internal ``void name(i8* ctx, i64 index, i64 thread)``, to run chunks of a job.

    >>> str(chunk_function(ir.Module(), "part").function_type)
    'void (i8*, i64, i64)'
    """
    fn = ir.Function(module, _CHUNK_FN, name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    return fn


def emit_parallel_for(b: ir.IRBuilder, chunk: ir.Function, ctx: ir.Value, count: ir.Value, split: ir.Value) -> None:
    """Run ``chunk(ctx, index, thread)`` for every index below ``count``: through the worker
    when ``split`` holds and a worker runs, else one after another on this thread. Either
    way each chunk runs once, so what the chunks compute does not depend on the threads.

    >>> module = ir.Module()
    >>> caller = ir.Function(module, ir.FunctionType(_VOID, [_PTR, _I64]), "caller")
    >>> b = ir.IRBuilder(caller.append_basic_block())
    >>> chunk = chunk_function(module, "part")
    >>> emit_parallel_for(b, chunk, caller.args[0], caller.args[1], ir.Constant(_I1, 1))
    >>> HOOK_SYMBOL in module.globals
    True
    """
    hook = b.load_atomic(_hook_global(b.module), "monotonic", 8)
    use = b.and_(split, b.icmp_unsigned("!=", hook, ir.Constant(_PTR, None)))
    raw_ctx = b.bitcast(ctx, _PTR)
    with b.if_else(use) as (through_worker, alone):
        with through_worker:
            target = b.bitcast(hook, _HOOK_FN.as_pointer())
            b.call(target, [b.bitcast(chunk, _PTR), raw_ctx, count, ir.Constant(_I1, 0)])
        with alone:
            with _counted_loop(b, count, "chunk") as index:
                b.call(chunk, [raw_ctx, index, ir.Constant(_I64, 0)])


def _context_type(dtype: str) -> ir.LiteralStructType:
    """The kernel's eleven arguments, then: split by rows, chunk width, workspace per thread,
    the epilogue and its context (both null without one)."""
    t = llvm_float_type(dtype).as_pointer()
    epilogue = EPILOGUE_FN.as_pointer()
    return ir.LiteralStructType([_I64, _I64, _I64, t, _I64, t, _I64, t, _I64, _I32, t, _I1, _I64, _I64, epilogue, _PTR])


def _hook_global(module: ir.Module) -> ir.GlobalVariable:
    existing = module.globals.get(HOOK_SYMBOL)
    return existing if existing is not None else ir.GlobalVariable(module, _PTR, HOOK_SYMBOL)


def _emit_chunk(module, name: str, kernel, context, trans_a: bool, trans_b: bool) -> ir.Function:
    """``void name(ctx, index, thread)``: the kernel on chunk ``index``, with ``thread``'s
    workspace, then the epilogue (if any) on the chunk's block of C.

    One call of the kernel, its arguments chosen with selects: a second call site could
    get the large kernel inlined twice.
    """
    fn = ir.Function(module, _CHUNK_FN, name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    b = FoldingBuilder(fn.append_basic_block("entry"))
    raw, index, thread = fn.args
    ctx = b.bitcast(raw, context.as_pointer())
    m, n, k, a, lda, bm, ldb, c, ldc, accumulate, work, by_rows, width, stride, epilogue, epilogue_ctx = (
        b.load(b.gep(ctx, [ir.Constant(_I32, 0), ir.Constant(_I32, i)])) for i in range(len(context.elements))
    )
    start = b.mul(index, width)

    def extent(total):
        rest = b.sub(total, start)
        return b.select(b.icmp_signed("<", width, rest), width, rest)

    zero = ir.Constant(_I64, 0)
    rows = b.select(by_rows, extent(m), m)
    cols = b.select(by_rows, n, extent(n))
    # Moving along rows of op(A) is a step of 1 in A when A is stored transposed, of lda
    # otherwise; along columns of op(B), a step of ldb when B is stored transposed.
    a_offset = b.select(by_rows, b.mul(start, ir.Constant(_I64, 1) if trans_a else lda), zero)
    b_offset = b.select(by_rows, zero, b.mul(start, ldb) if trans_b else start)
    c_offset = b.select(by_rows, b.mul(start, ldc), start)
    own_work = b.gep(work, [b.mul(thread, stride)])
    args = [rows, cols, k, b.gep(a, [a_offset]), lda, b.gep(bm, [b_offset]), ldb, b.gep(c, [c_offset]), ldc]
    b.call(kernel, [*args, accumulate, own_work])
    with b.if_then(b.icmp_unsigned("!=", epilogue, ir.Constant(epilogue.type, None))):
        b.call(epilogue, [epilogue_ctx, b.select(by_rows, start, zero), rows, b.select(by_rows, zero, start), cols])
    b.ret_void()
    return fn


def _emit_dispatch(module, name: str, kernel, chunk, context, cfg: MatmulConfig) -> ir.Function:
    """The wrapper: a direct call, or the chunks of the product through the hook; then or in
    each chunk, the epilogue (its last two arguments) unless it is null."""
    extra = [EPILOGUE_FN.as_pointer(), _PTR]
    fn = ir.Function(module, ir.FunctionType(_VOID, [*kernel.function_type.args, *extra]), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    b = FoldingBuilder(fn.append_basic_block("entry"))
    product_args = list(fn.args[:11])
    epilogue, epilogue_ctx = fn.args[11:]
    m, n, k = fn.args[:3]
    hook = b.load_atomic(_hook_global(module), "monotonic", 8)
    by_rows = b.icmp_signed(">", m, n)
    tile = b.select(by_rows, ir.Constant(_I64, cfg.mr), ir.Constant(_I64, cfg.nr))
    extent = b.select(by_rows, m, n)
    tiles = _ceil_div(b, extent, tile)
    split = b.and_(b.icmp_unsigned("!=", hook, ir.Constant(_PTR, None)), at_least_flops(b, m, n, k, MIN_FLOPS))
    split = b.and_(split, b.icmp_signed(">=", tiles, ir.Constant(_I64, 2)))
    direct, parallel = fn.append_basic_block("direct"), fn.append_basic_block("parallel")
    b.cbranch(split, parallel, direct)
    b.position_at_end(direct)
    b.call(kernel, product_args)
    with b.if_then(b.icmp_unsigned("!=", epilogue, ir.Constant(epilogue.type, None))):
        b.call(epilogue, [epilogue_ctx, ir.Constant(_I64, 0), m, ir.Constant(_I64, 0), n])
    b.ret_void()
    b.position_at_end(parallel)
    chunks = b.select(b.icmp_signed("<", tiles, ir.Constant(_I64, CHUNKS)), tiles, ir.Constant(_I64, CHUNKS))
    width = b.mul(_ceil_div(b, tiles, chunks), tile)
    count = _ceil_div(b, extent, width)
    chunk_m = b.select(by_rows, width, m)
    chunk_n = b.select(by_rows, n, width)
    stride = workspace_size_ir(b, chunk_m, chunk_n, k, cfg)
    ctx = b.alloca(context)
    for index, value in enumerate([*product_args, by_rows, width, stride, epilogue, epilogue_ctx]):
        b.store(value, b.gep(ctx, [ir.Constant(_I32, 0), ir.Constant(_I32, index)]))
    target = b.bitcast(hook, _HOOK_FN.as_pointer())
    long_job = at_least_flops(b, m, n, k, LONG_FLOPS)
    b.call(target, [b.bitcast(chunk, _PTR), b.bitcast(ctx, _PTR), count, long_job])
    b.ret_void()
    return fn


def _ceil_div(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.sdiv(b.add(x, b.sub(y, ir.Constant(_I64, 1))), y)


def at_least_flops(b: ir.IRBuilder, m, n, k, flops: int) -> ir.Value:
    """m, n, k all positive and ``2 m n k >= flops``, as ``m n >= ceil(flops / 2k)`` (no overflow).

    With ``flops`` = `MIN_FLOPS`, this is `split_eligible`.
    """
    zero = ir.Constant(_I64, 0)
    positive = b.and_(b.icmp_signed(">", m, zero), b.and_(b.icmp_signed(">", n, zero), b.icmp_signed(">", k, zero)))
    # Of k alone, so that a constant k (the usual case) makes the bound a constant: no division.
    safe_k = b.select(b.icmp_signed(">", k, zero), k, ir.Constant(_I64, 1))
    needed = _ceil_div(b, ir.Constant(_I64, flops), b.mul(safe_k, ir.Constant(_I64, 2)))
    return b.and_(positive, b.icmp_signed(">=", b.mul(m, n), needed))


def workspace_size_ir(b: ir.IRBuilder, m, n, k, cfg: MatmulConfig) -> ir.Value:
    """`matmul_workspace_size` computed in IR (the tests compare the two on many shapes)."""

    def const(value: int) -> ir.Constant:
        return ir.Constant(_I64, value)

    def smaller(x, limit: int) -> ir.Value:
        return b.select(b.icmp_signed("<", x, const(limit)), x, const(limit))

    def round_up(x, multiple: int) -> ir.Value:
        return b.mul(_ceil_div(b, x, const(multiple)), const(multiple))

    # The workspace of an empty product is the alignment slack alone: one cache line.
    line = matmul_workspace_size(0, 0, 0, cfg.dtype, cfg)
    kc = smaller(k, cfg.kc)
    packed_a = round_up(b.mul(round_up(smaller(m, cfg.mc), cfg.mr), kc), line)
    packed_b = b.mul(kc, round_up(smaller(n, cfg.nc), cfg.nr))
    return b.add(b.add(packed_a, packed_b), const(line))
