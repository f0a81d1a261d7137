"""The kernel library: matmul kernels compiled once per machine, shared by every program.

A matmul kernel with its packing, edge tiles and two-thread dispatch is several hundred
kilobytes of IR that LLVM needs most of a second to optimise. Emitting it into every
program made each new model pay that again, so each variant (precision and transpositions)
lives in a module of its own, compiled (or loaded from the object cache) the first time a
program needs it, and registered as a process symbol (``llvm.add_symbol``) that the
programs' modules declare and call. The engines are kept for the life of the process, as
their code must be.

A variant takes 0.4-0.5 s of LLVM from cold, and a training step needs three. LLVM calls
through llvmlite hold one lock per process, so threads do not help; instead, `prefetch`
starts a helper process (``python -m codegen.library``) that compiles the variants a
program calls into the disk cache, first to last, while this process emits and compiles
the program. `load_variants` then takes them from last to first: it loads what the helper
has finished, compiles itself what the helper has not started, and waits for the one the
helper is compiling; each process claims a variant in the cache (`codegen.cache.claim`)
before compiling it, so that the two meet in the middle. ``SYMBACKPROP_COMPILE_HELPER=0``
(or a disabled cache) compiles everything in this process; so does a helper that fails.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import llvmlite.binding as llvm
import llvmlite.ir as ir

from . import cache, debug
from .jit import CompiledModule, CompileOptions, compile_keyed, keyed_cache_key
from .matmul import MICRO_KERNEL_PREFIX, emit_matmul, matmul_function_type
from .parallel import parallel_matmul

DTYPES = ("float32", "float64")
# The library is written vectorised and split into the functions it should run as: each
# function gets LLVM's per-function simplification (which folds the drivers' and small
# kernels' index arithmetic: a 48 x 48 product ran 15-30% slower without it), the micro-kernels
# none, and nothing is inlined or vectorised again. A variant compiles in 0.40-0.47 s instead
# of 0.56-0.78 s (float32 nn, nt, tn and float64 nn), its products as fast from 32 to 128.
LIBRARY_OPTIONS = CompileOptions(vectorize=False, interprocedural=False, as_written=(MICRO_KERNEL_PREFIX,))
_lock = threading.Lock()


def matmul_symbol(dtype: str, trans_a: bool, trans_b: bool, one_thread: bool = False) -> str:
    """The exported name of one matmul variant: its entry point, which splits large products
    between the threads, or with ``one_thread`` the kernel itself, for the programs' own
    splits (a product whose result a map reads, see `codegen.emit`).

    >>> matmul_symbol("float32", False, True), matmul_symbol("float64", True, False, one_thread=True)
    ('sbp_matmul_float32_nt', 'sbp_matmul_float64_tn_one_thread')
    """
    suffix = "_one_thread" if one_thread else ""
    return f"sbp_matmul_{dtype}_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}{suffix}"


def _variant_module(dtype: str, trans_a: bool, trans_b: bool) -> ir.Module:
    """One matmul variant: the kernel and, calling it, the entry point that splits products."""
    symbol = matmul_symbol(dtype, trans_a, trans_b)
    module = ir.Module(name=symbol)
    kernel = emit_matmul(module, matmul_symbol(dtype, trans_a, trans_b, one_thread=True), dtype, trans_a, trans_b)
    wrapper = parallel_matmul(module, kernel, dtype, trans_a, trans_b)
    exported = ir.Function(module, wrapper.function_type, name=symbol)
    builder = ir.IRBuilder(exported.append_basic_block("entry"))
    builder.call(wrapper, list(exported.args))
    builder.ret_void()
    return module


_loaded: dict[str, CompiledModule] = {}
HELPER_VAR = "SYMBACKPROP_COMPILE_HELPER"
HELPER_TIMEOUT_S = 300.0


class _Helper:
    """A helper process compiling variants into the disk cache."""

    def __init__(self, process: subprocess.Popen, symbols: list[str]):
        self.process, self.symbols = process, symbols

    def wait_for(self, key: str) -> None:
        """Return once the cache has ``key`` or the helper has exited (then the caller
        compiles what is missing, as on any cache miss)."""
        deadline = time.monotonic() + HELPER_TIMEOUT_S
        while not cache.contains(key) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.process.poll() not in (None, 0):
            debug.log(1, f"library helper for {', '.join(self.symbols)} exited with {self.process.returncode}")

    def finish(self) -> None:
        """Stop the helper once nothing it compiles is wanted here any more."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


_helpers: dict[str, _Helper] = {}  # symbol -> the helper compiling it
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_helpers.clear)  # a forked child's helpers are its parent's


def _source_token() -> str:
    from . import program_cache  # imported here: it imports SymPy, which a helper does not need

    return program_cache.source_token()


def _identity(symbol: str, source_token: str) -> str:
    """What a variant's object code is cached under: the compiler's source and the symbol."""
    return f"kernel library {source_token} {symbol}"


def helper_enabled() -> bool:
    """Whether `prefetch` may start a helper: the cache is on and ``SYMBACKPROP_COMPILE_HELPER``
    is not ``0`` (or ``false``, ``no``, ``off``)."""
    switched_off = os.environ.get(HELPER_VAR, "1").strip().lower() in ("0", "false", "no", "off")
    return cache.cache_enabled() and not switched_off


def prefetch(variants: Iterable[tuple[str, bool, bool]]) -> bool:
    """Start compiling, in one helper process, the variants that this process has not
    loaded and the disk cache lacks; return whether a helper started.

    ``variants`` are ``(dtype, trans_a, trans_b)``. The helper writes each to the disk
    cache; `load_variant` waits for it, then loads. Nothing starts when every variant is
    ready, or when helpers are off (`helper_enabled`).
    """
    if not helper_enabled():
        return False
    with _lock:
        unready = [
            v for v in sorted(set(variants)) if matmul_symbol(*v) not in _loaded and matmul_symbol(*v) not in _helpers
        ]
        if not unready:
            return False  # the usual case once a process has compiled a program: no source hash
        token = _source_token()
        wanted = [
            v
            for v in unready
            if not cache.contains(keyed_cache_key(_identity(matmul_symbol(*v), token), LIBRARY_OPTIONS))
        ]
        if not wanted:
            return False
        names = [f"{dtype}:{'t' if ta else 'n'}{'t' if tb else 'n'}" for dtype, ta, tb in wanted]
        # The helper imports this package from where this process did.
        environment = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "codegen.library", token, *names]
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment
            )  # it compiles the variants in the order given, claiming each (see `load_variants`)
        except OSError as error:
            debug.log(1, f"no library helper: {error}")
            return False
        helper = _Helper(process, [matmul_symbol(*v) for v in wanted])
        for symbol in helper.symbols:
            _helpers[symbol] = helper
        debug.log(1, f"library helper {process.pid} compiles {', '.join(names)}")
        return True


def load_variant(dtype: str, trans_a: bool, trans_b: bool) -> CompiledModule:
    """Compile or load one matmul variant and register its entry point; once per process.

    Each variant is a module and a cache entry of its own (about 0.4 s of LLVM from cold), so
    that a program compiles only the variants it calls: a float32 training step uses three
    of the eight. Keyed by the compiler's source: a warm start loads the object code
    without spending time generating the variant's IR in Python. A variant that a helper
    compiles (`prefetch`) is compiled here if the helper has not claimed it yet, else
    waited for and loaded from the cache.
    """
    symbol = matmul_symbol(dtype, trans_a, trans_b)
    with _lock:
        compiled = _loaded.get(symbol)
        if compiled is None:
            identity = _identity(symbol, _source_token())
            helper = _helpers.pop(symbol, None)
            key = keyed_cache_key(identity, LIBRARY_OPTIONS)
            mine = helper is None or cache.claim(key, helper.process.pid)
            if not mine:
                helper.wait_for(key)
            compiled = compile_keyed(
                identity, lambda: _variant_module(dtype, trans_a, trans_b), options=LIBRARY_OPTIONS
            )
            if helper is not None:
                cache.release(key, helper.process.pid)
                if not any(h is helper for h in _helpers.values()):
                    helper.finish()
            for name in (symbol, matmul_symbol(dtype, trans_a, trans_b, one_thread=True)):
                llvm.add_symbol(name, compiled.address(name))
            _loaded[symbol] = compiled  # kept for the life of the process, as its code must be
        return compiled


def load() -> list[CompiledModule]:
    """Every variant of the library (both precisions, all four transpositions)."""
    return [load_variant(*variant) for variant in itertools.product(DTYPES, (False, True), (False, True))]


def load_variants(variants: Iterable[tuple[str, bool, bool]]) -> None:
    """`load_variant` for each ``(dtype, trans_a, trans_b)``, last first: a helper started
    by `prefetch` compiles them first first, and the two meet in the middle."""
    for variant in sorted(set(variants), reverse=True):
        load_variant(*variant)


def loaded() -> list[str]:
    """Entry points of the variants this process has loaded, sorted.

    >>> _ = load_variant("float64", False, True)
    >>> "sbp_matmul_float64_nt" in loaded()
    True
    """
    with _lock:
        return sorted(_loaded)


def declare_matmul(
    module: ir.Module, dtype: str, trans_a: bool, trans_b: bool, one_thread: bool = False
) -> ir.Function:
    """Declare one library matmul in a program's module: the entry point, or with
    ``one_thread`` the kernel that runs on the calling thread. The variant must be loaded
    (`load_variant`) before the program's code is."""
    name = matmul_symbol(dtype, trans_a, trans_b, one_thread)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, matmul_function_type(dtype), name=name)


def _main(arguments: list[str]) -> None:
    """The helper: ``python -m codegen.library SOURCE_TOKEN float32:nn float32:nt ...``
    compiles each variant into the disk cache."""
    source_token, *names = arguments
    for name in names:
        dtype, transpositions = name.split(":")
        trans_a, trans_b = (letter == "t" for letter in transpositions)
        identity = _identity(matmul_symbol(dtype, trans_a, trans_b), source_token)
        key = keyed_cache_key(identity, LIBRARY_OPTIONS)
        if not cache.claim(key, os.getpid()):
            continue  # the process that started this one compiles it
        if not cache.contains(key):  # it may have compiled it and released its claim already
            compile_keyed(identity, lambda v=(dtype, trans_a, trans_b): _variant_module(*v), options=LIBRARY_OPTIONS)
        cache.release(key, os.getpid())


if __name__ == "__main__":
    _main(sys.argv[1:])
