"""What the benchmark scripts share: thread pinning, the description of the machine, tables,
timings, the load of other processes, and worker processes that answer JSON requests.

Importing this module loads neither NumPy nor any framework, so that a script can call
:func:`pin_threads` first and import them after::

    from common import pin_threads

    pin_threads(2)
    import numpy as np  # noqa: E402

The scripts run as ``python benchmarks/<script>.py``, which puts this directory first on
``sys.path``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Read by the thread pools when their library loads, so they must be set before the import.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads(count: int) -> None:
    """Limit OpenMP, the BLAS libraries and XLA to ``count`` threads, and ask symbackprop's
    generated code for as many unless ``SYMBACKPROP_THREADS`` is already set.

    Effective only before NumPy, PyTorch or JAX are imported."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(count)
    os.environ.setdefault("SYMBACKPROP_THREADS", str(count))  # read by versions with a worker thread
    os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={count}"


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def blas_threads(count: int):
    """NumPy's BLAS on ``count`` threads inside the block (no effect without threadpoolctl)."""
    if not available("threadpoolctl"):
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(count, user_api="blas"):
        yield


# -- timings and tables ----------------------------------------------------------------------------
def format_time(seconds: float | None) -> str:
    """Three significant digits in s, ms or µs; ``·`` for a missing value."""
    if seconds is None:
        return "·"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table, columns padded to their widest cell."""
    lines = [list(header), *map(list, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


class OtherLoad:
    """CPU time that other processes used while the block ran, in cores (Linux ``/proc/stat``).

    A figure means something only on otherwise idle cores: a block with a load above a few
    hundredths was disturbed. ``cores`` is nan where ``/proc/stat`` cannot be read.
    """

    def __enter__(self) -> OtherLoad:
        self.start = self._busy(), sum(os.times()[:2]), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy, ours, wall = self._busy(), sum(os.times()[:2]), time.perf_counter()
        other = (busy - self.start[0]) - (ours - self.start[1])
        self.cores = max(other, 0.0) / (wall - self.start[2]) if busy == busy else float("nan")

    @staticmethod
    def _busy() -> float:
        """Seconds of CPU time used by everything since boot (user, nice, system, irq, softirq)."""
        try:
            with open("/proc/stat") as stat:
                fields = stat.readline().split()[1:]
        except OSError:
            return float("nan")
        ticks = sum(int(fields[i]) for i in (0, 1, 2, 5, 6))
        return ticks / os.sysconf("SC_CLK_TCK")


# -- the machine -----------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> float | None:
    with contextlib.suppress(OSError):
        return float(Path("/proc/loadavg").read_text().split()[0])
    return None


def blas_description() -> str:
    if not available("threadpoolctl"):
        return "threadpoolctl not installed: BLAS threads set by environment variables"
    import numpy  # noqa: F401 - threadpoolctl lists the pools of loaded libraries only
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return ", ".join(f"{p['internal_api']} {p.get('version')}" for p in pools) or "none found"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()


def library_revision() -> str:
    """Where symbackprop is imported from, its commit, and whether its files differ from it."""
    root = Path(importlib.util.find_spec("symbackprop").origin).resolve().parent.parent
    revision = git(root, "rev-parse", "--short", "HEAD")
    if not revision or git(root, "rev-parse", "--show-toplevel") != str(root):
        return f"{root} (not a git checkout)"
    dirty = git(root, "status", "--porcelain", "symbackprop", "codegen")
    return f"{root} at {revision}" + (" + uncommitted changes" if dirty else "")


def our_threads() -> str:
    """How many threads symbackprop's generated code uses."""
    spec = importlib.util.find_spec("codegen")
    if spec is None or not (Path(spec.origin).parent / "parallel.py").exists():
        return "1 (its generated code is single-threaded)"
    return f"a native worker thread for large matmuls (SYMBACKPROP_THREADS={os.environ.get('SYMBACKPROP_THREADS', 'unset')})"


def version(package: str) -> str:
    return importlib.metadata.version(package) if available(package) else "not installed"


def machine(threads: str, packages: Sequence[str] = ("torch", "jax", "jaxlib")) -> dict[str, str]:
    """The CPU, the threads (as ``threads`` describes them), the load and every version."""
    import llvmlite
    import llvmlite.binding as llvm
    import numpy as np

    import symbackprop as sb

    versions = {
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({blas_description()})",
        "llvmlite": f"{llvmlite.__version__} (LLVM {'.'.join(map(str, llvm.llvm_version_info))})",
        "symbackprop": f"{sb.__version__} from {library_revision()}",
    }
    versions.update({package: version(package) for package in packages})
    return {
        "cpu": f"{cpu_model()} ({llvm.get_host_cpu_name()}), {os.cpu_count()} logical cores",
        "threads": threads,
        "load average at start": f"{load_average()}",
        **versions,
    }


# -- worker processes ------------------------------------------------------------------------------
def serve(handle: Callable[[dict], dict]) -> None:
    """The worker's side: answer each JSON request on stdin with ``handle``'s reply on stdout,
    one line each, until stdin closes. Stray prints go to stderr (the worker's log)."""
    replies, sys.stdout = sys.stdout, sys.stderr
    for line in sys.stdin:
        replies.write(json.dumps(handle(json.loads(line))) + "\n")
        replies.flush()


class Worker:
    """The main process's handle on ``python script --worker name [arguments]``, a process
    that :func:`serve`\\ s requests; its stderr goes to ``directory/name.log``."""

    def __init__(self, script: str, name: str, directory: Path, arguments: Sequence[str] = ()):
        self.name = name
        self.log = open(directory / f"{name}.log", "w+")  # noqa: SIM115 - closed in close()
        command = [sys.executable, script, "--worker", name, *arguments]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1
        )

    def request(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"the {self.name} worker failed:\n{self.log.read()[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.log.close()


def emit_repeat(module, callee, name: str) -> str:
    """Add ``void name(count, args...)`` to an llvmlite module, calling ``callee(args...)``
    ``count`` times: a loop in native code, so timings of short kernels exclude the Python call."""
    from llvmlite import ir

    i64 = ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, *callee.function_type.args]), name)
    count, *args = fn.args
    entry, loop, done = (fn.append_basic_block(label) for label in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    b.call(callee, args)
    following = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(following, loop)
    b.cbranch(b.icmp_signed("<", following, count), loop, done)
    b.position_at_end(done)
    b.ret_void()
    return name
