"""The kernel library: matmul kernels compiled once per machine, shared by every program.

A matmul kernel with its packing, edge tiles and two-thread dispatch is several hundred
kilobytes of IR that LLVM needs most of a second to compile. Emitting it into every program
made each new model pay that again, so the library lives in modules of its own, compiled
(or loaded from the object cache) the first time a program needs them, their functions
registered as process symbols (``llvm.add_symbol``) that later modules declare and call. The
engines are kept for the life of the process, as their code must be.

Most of a variant (precision and transpositions) is its register-blocked kernels, which
are the same in every variant of a precision; so those are *parts* of their own
(`codegen.matmul.KERNEL_PARTS`: the packed-panel micro-kernels, the kernels on unpacked
operands), and a variant's module holds only its packing, blocking and two-thread
dispatch, linked to the parts. A float32 training step's three variants were three modules
of 0.40-0.47 s of LLVM each from cold; as three parts and three variants they are 0.9 s in
all, and a fourth variant adds a tenth of a second.

Emitting a module's IR is Python, which runs one thread at a time, so a process of its own
does the library's share: `prefetch` starts a helper process (`_main`) that compiles the
modules a program needs into the disk cache, first to last (the parts first), while this
process emits and compiles the program. `load_variants` then compiles, last to first, what
the helper has not started, and waits for the ones the helper is still compiling; each
process claims a module in the cache (`codegen.cache.claim`) before compiling it, so that
the two meet in the middle. The helper is this process forked where that is safe
(`codegen.forked`), otherwise a new interpreter; it starts before the program is derived,
on standby (`helper_on_standby`): it compiles the kernel parts, which every variant of a
precision needs, while this process derives and lowers the program, then reads the names
of its other modules from its input. ``SYMBACKPROP_COMPILE_HELPER=0`` (or a disabled
cache) compiles everything in this process, and so does a helper that fails; ``spawn``
starts a new interpreter even where forking is safe. The modules are then loaded from the
cache into one engine (`codegen.jit.compile_keyed_group`), which links them to each other;
without a helper, this process compiles them first, two at a time in parallel threads.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import llvmlite.binding as llvm
import llvmlite.ir as ir

from . import cache, collector, debug, forked
from .ir_text import module_text
from .jit import (
    CompiledModule,
    CompileOptions,
    compile_keyed_group,
    keyed_cache_key,
    store_keyed,
    store_keyed_all,
)
from .llvm_threads import usable_cores
from .matmul import (
    KERNEL_PARTS,
    emit_kernel_part,
    emit_matmul,
    kernel_parts,
    matmul_function_type,
)
from .parallel import EPILOGUE_FN, parallel_matmul

DTYPES = ("float32", "float64")
# The library is written vectorised and split into the functions it should run as, so it
# gets no optimisation passes at all, only code generation: the micro-kernels and the
# kernels on unpacked operands step their own pointers, the drivers and entry points run
# once per product around the packing and the kernels (a float32 step's three variants took
# 0.18 instead of 0.27 s of LLVM without passes, products of 16 to 784 as fast), and the
# packing loops, written with their vectors and index arithmetic, compile in 38 instead of
# 58 ms (float32) with no passes and ran as fast (products of 96 to 784 and 512, both
# precisions, all transpositions: 0.99-1.01 of the time, interleaved in one process). Code
# generation runs at level 1: a sixth less of the library's LLVM time, and products of 10 to
# 784 (all transpositions) 0.99-1.01 of level 3's time, interleaved in one process.
ENTRY_PREFIX = "sbp_matmul_"
LIBRARY_OPTIONS = CompileOptions(speed_level=0, vectorize=False, unroll=False, codegen_level=1)
_lock = threading.Lock()
# The arguments that the entry points with an epilogue take after the product's: the map of
# a block (or null) and its context.
EPILOGUE_ARGUMENTS = (EPILOGUE_FN.as_pointer(), ir.IntType(8).as_pointer())


def matmul_symbol(dtype: str, trans_a: bool, trans_b: bool, one_thread: bool = False, epilogue: bool = False) -> str:
    """The exported name of one matmul variant: its entry point, which splits large products
    between the threads; with ``epilogue``, the same taking a map to run on each block of the
    result (`codegen.parallel.parallel_matmul`); with ``one_thread``, the kernel itself, for
    the programs' own splits (the halves of a batch, see `codegen.emit`).

    >>> matmul_symbol("float32", False, True), matmul_symbol("float64", True, False, one_thread=True)
    ('sbp_matmul_float32_nt', 'sbp_matmul_float64_tn_one_thread')
    >>> matmul_symbol("float32", False, False, epilogue=True)
    'sbp_matmul_float32_nn_epilogue'
    """
    suffix = "_one_thread" if one_thread else "_epilogue" if epilogue else ""
    return f"{ENTRY_PREFIX}{dtype}_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}{suffix}"


def _letters(trans_a: bool, trans_b: bool) -> str:
    return f"{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}"


def _units(variants: Iterable[tuple[str, bool, bool]]) -> list[str]:
    """The library's modules that ``variants`` need, as ``dtype:part`` and ``dtype:nn`` (and
    so on) names, parts first: a variant links to its parts.

    >>> _units([("float64", True, True), ("float64", False, False)])  # doctest: +NORMALIZE_WHITESPACE
    ['float64:packing', 'float64:direct_edges', 'float64:direct_clamped', 'float64:direct',
     'float64:edge_kernels', 'float64:kernels', 'float64:nn', 'float64:tt']
    """
    parts, entries = {}, {}
    for dtype, trans_a, trans_b in sorted(set(variants)):
        parts.update(dict.fromkeys(f"{dtype}:{part}" for part in kernel_parts(dtype)))
        entries[f"{dtype}:{_letters(trans_a, trans_b)}"] = None
    return [*parts, *entries]


def _is_part(unit: str) -> bool:
    """Whether a unit (``dtype:name``) is a kernel part rather than a variant."""
    return unit.split(":")[1] in KERNEL_PARTS


def _unloaded(variants: Iterable[tuple[str, bool, bool]]) -> list[str]:
    """`_units` less those this process has loaded."""
    return [unit for unit in _units(variants) if unit not in _loaded]


def _unit_ir(unit: str) -> str:
    """The IR of one of the library's modules: a part of the kernels (`emit_kernel_part`), or
    a variant: the kernel that runs on the calling thread and, calling it, the entry point
    that splits products between the threads."""
    dtype, name = unit.split(":")
    module = ir.Module(name=unit)
    with collector.paused():
        if name in KERNEL_PARTS:
            emit_kernel_part(module, dtype, name)
            return module_text(module)
        trans_a, trans_b = (letter == "t" for letter in name)
        one_thread = matmul_symbol(dtype, trans_a, trans_b, one_thread=True)
        kernel = emit_matmul(module, one_thread, dtype, trans_a, trans_b, external_kernels=True)
        for epilogue in (False, True):
            wrapper = parallel_matmul(module, kernel, dtype, trans_a, trans_b, epilogue=epilogue)
            name = matmul_symbol(dtype, trans_a, trans_b, epilogue=epilogue)
            exported = ir.Function(module, wrapper.function_type, name=name)
            builder = ir.IRBuilder(exported.append_basic_block("entry"))
            builder.call(wrapper, list(exported.args))
            builder.ret_void()
        return module_text(module)


_loaded: dict[str, CompiledModule] = {}  # unit -> its code, kept for the life of the process
HELPER_VAR = "SYMBACKPROP_COMPILE_HELPER"
_Process = subprocess.Popen | forked.ForkedProcess  # a helper: a new interpreter, or forked
HELPER_TIMEOUT_S = 300.0


class _Helper:
    """A helper process compiling modules of the library into the disk cache."""

    def __init__(self, process: _Process, units: list[str], keys: list[str]):
        self.process, self.units, self.keys = process, units, keys

    def wait_for(self, key: str) -> None:
        """Return once the cache has ``key`` or the helper has exited (then the caller
        compiles what is missing, as on any cache miss)."""
        deadline = time.monotonic() + HELPER_TIMEOUT_S
        while not cache.contains(key) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.process.poll() not in (None, 0):
            debug.log(1, f"library helper for {', '.join(self.units)} exited with {self.process.returncode}")

    def finish(self) -> None:
        """Stop the helper once nothing it compiles is wanted here any more, and remove the
        claims it may have left: stopped between writing a module and releasing its claim."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for key in self.keys:
            cache.release(key, self.process.pid)


# The program of a helper that is a new interpreter. It runs without the `site` module
# (``-S``), which spends a third of a bare interpreter's start on `.pth` files and site
# directories, on this process's module search path instead, passed as its first arguments
# (their count, then the paths), with this package's root put first: ahead of the working
# directory, which ``python -m`` and ``-c`` put there, where a ``codegen`` package of the
# user's own would be found instead. Then ``standby`` or ``assigned``, and `_main`'s.
_HELPER_PROGRAM = (
    "import sys; a = sys.argv; n = int(a[1]); sys.path[:0] = a[2 : 2 + n]; del a[1 : 2 + n]\n"
    "from codegen.library import _main; _main(a[2:], sys.stdin.buffer if a[1] == 'standby' else None)"
)
_helpers: dict[str, _Helper] = {}  # unit -> the helper compiling it
# A helper started before this process knows what it will compile (`helper_on_standby`):
# it compiles the kernel parts, then waits for its other units on its input.
_standby: _Process | None = None


def _forget_helpers() -> None:
    global _standby, _lock
    _helpers.clear()
    _standby = None
    _lock = threading.Lock()  # the thread that held it at the fork, if one did, is not here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)  # a forked child's helpers are its parent's


def _source_token() -> str:
    from . import program_cache  # imported here: it imports SymPy, which a helper does not need

    return program_cache.source_token()


def _identity(unit: str, source_token: str) -> str:
    """What a module's object code is cached under: the compiler's source and the unit."""
    return f"kernel library {source_token} {unit}"


def _builds(units: list[str], source_token: str) -> dict:
    """Each unit's identity, and the function that emits its IR (called on a cache miss)."""
    return {_identity(unit, source_token): (lambda u=unit: _unit_ir(u)) for unit in units}


def _key(unit: str, source_token: str) -> str:
    return keyed_cache_key(_identity(unit, source_token), LIBRARY_OPTIONS)


def helper_enabled() -> bool:
    """Whether `prefetch` may start a helper: the cache is on and ``SYMBACKPROP_COMPILE_HELPER``
    is not ``0`` (or ``false``, ``no``, ``off``)."""
    return cache.cache_enabled() and _helper_mode() != "off"


def _helper_mode() -> str:
    """``SYMBACKPROP_COMPILE_HELPER``: ``"off"``, ``"spawn"`` (a new interpreter), or by
    default ``"fork"`` (this process forked, where that is safe)."""
    value = os.environ.get(HELPER_VAR, "1").strip().lower()
    return "off" if value in ("0", "false", "no", "off") else "spawn" if value == "spawn" else "fork"


# What a training step's products usually need: the product, and the two of its gradients.
_STEP_TRANSPOSITIONS = ((False, False), (False, True), (True, False))


@contextlib.contextmanager
def helper_on_standby(dtypes: Iterable[str]) -> Iterator[None]:
    """Start a helper process while the block runs, before this process knows which modules
    of the library it will want, if the library for ``dtypes`` may be needed and is neither
    loaded nor in the disk cache; `prefetch` inside the block hands it its modules, and one
    not handed any by the end of the block is let go.

    Every variant of a precision links to all of its kernel parts, so the helper compiles
    those at once, while this process derives and lowers the program, on a core that would
    otherwise wait; it stops after the one at hand if let go first.
    """
    global _standby
    started = False
    if helper_enabled():
        with _lock:
            variants = [(dtype, *pair) for dtype in set(dtypes) & set(DTYPES) for pair in _STEP_TRANSPOSITIONS]
            token, wanted = _wanted(variants) if _standby is None else (None, [])
            if wanted:
                parts = [unit for unit in wanted if _is_part(unit)]
                _standby = _start_helper(token, parts, standby=True)
                started = _standby is not None
                if started:
                    how = "fork" if isinstance(_standby, forked.ForkedProcess) else "spawn"
                    debug.log(1, f"library helper {_standby.pid} ({how}) on standby, compiling {', '.join(parts)}")
    try:
        yield
    finally:
        if started:
            with _lock:
                _dismiss_standby()


def _dismiss_standby() -> None:
    """Let the helper on standby go: with its input closed, it exits. Call with `_lock` held."""
    global _standby
    if _standby is not None:
        with contextlib.suppress(OSError):
            _standby.stdin.close()
        _let_go.append(_standby)
        _standby = None


# Helpers let go before they had exited, collected (`poll`) when the next one starts.
_let_go: list[_Process] = []


def _start_helper(token: str, units: list[str], standby: bool = False) -> _Process | None:
    """A helper process running `_main` on the source token and ``units``; with ``standby``,
    one that then reads more from its standard input (`_main`). None if it cannot start.

    It is this process forked where that is safe (`codegen.forked`), which starts with
    Python, LLVM and this package loaded: a new interpreter spends a tenth of a second or
    more of a core loading them. ``SYMBACKPROP_COMPILE_HELPER=spawn`` starts one always.
    """
    _let_go[:] = [process for process in _let_go if process.poll() is None]
    if _helper_mode() == "fork" and forked.can_fork():
        try:
            return forked.start(lambda handed: _main([token, *units], handed), with_input=standby)
        except OSError as error:
            debug.log(1, f"no library helper: {error}")
            return None
    paths = [str(Path(__file__).resolve().parent.parent), *sys.path]
    mode = "standby" if standby else "assigned"
    command = [sys.executable, "-S", "-c", _HELPER_PROGRAM, str(len(paths)), *paths, mode, token, *units]
    stdin = subprocess.PIPE if standby else subprocess.DEVNULL
    try:
        return subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as error:
        debug.log(1, f"no library helper: {error}")
        return None


def prefetch(variants: Iterable[tuple[str, bool, bool]]) -> bool:
    """Start compiling, in one helper process, the modules of ``variants`` (and of the parts
    they link to) that this process has not loaded and the disk cache lacks; return whether
    a helper started.

    ``variants`` are ``(dtype, trans_a, trans_b)``. The helper writes each module to the
    disk cache; `load_variants` waits for it, then loads. Nothing starts when every module
    is ready, or when helpers are off (`helper_enabled`).
    """
    if not helper_enabled():
        return False
    with _lock:
        token, wanted = _wanted(variants)
        if not wanted:
            return False
        # It compiles the modules in the order given, claiming each (see `load_variants`).
        process = _hand_to_standby(wanted) or _start_helper(token, wanted)
        if process is None:
            return False
        helper = _Helper(process, wanted, [_key(unit, token) for unit in wanted])
        for unit in wanted:
            _helpers[unit] = helper
        debug.log(1, f"library helper {process.pid} compiles {', '.join(wanted)}")
        return True


def _wanted(variants) -> tuple[str | None, list[str]]:
    """The source token and the modules of ``variants`` that no helper compiles, this
    process has not loaded and the disk cache lacks. Call with `_lock` held."""
    unready = [unit for unit in _unloaded(variants) if unit not in _helpers]
    if not unready:
        return None, []  # the usual case once a process has compiled a program: no source hash
    token = _source_token()
    return token, [unit for unit in unready if not cache.contains(_key(unit, token))]


def _hand_to_standby(units: list[str]) -> _Process | None:
    """The helper on standby, given ``units`` to compile; None if there is none, or it has
    exited. Call with `_lock` held."""
    global _standby
    process, _standby = _standby, None
    if process is None:
        return None
    try:
        process.stdin.write(" ".join(units).encode() + b"\n")
        process.stdin.close()
    except OSError:  # it exited: start another
        _let_go.append(process)
        return None
    return process


def load_variants(variants: Iterable[tuple[str, bool, bool]]) -> None:
    """Compile or load the modules of ``variants`` (``(dtype, trans_a, trans_b)``) and of the
    parts they link to, and register their functions; each once per process.

    Each module is a cache entry of its own, keyed by the compiler's source: a warm start
    loads the object code without generating its IR in Python. With a helper at work
    (`prefetch`), this process first compiles, last to first, the modules the helper has
    not claimed, into the cache, and waits for those the helper is still compiling; then
    it loads them all into one engine, which links the variants to their parts.
    """
    with _lock:
        units = _unloaded(variants)
        if not units:
            return
        token = _source_token()
        if any(unit in _helpers for unit in units):
            _compile_beside_helpers(units, token)
        # All in one engine: from the cache, where the helper and this process put them (or
        # compiled here, two at a time, what a helper that failed left out).
        group = compile_keyed_group(_builds(units, token), options=LIBRARY_OPTIONS, threads=usable_cores())
        for unit, compiled in zip(units, group):
            _register(unit, compiled)


def _compile_beside_helpers(units: list[str], token: str) -> None:
    """Compile into the cache, last to first, the modules of ``units`` that their helper has
    not claimed, then wait for the helper's. Call with `_lock` held."""
    for unit in reversed(units):
        helper = _helpers.get(unit)
        key = _key(unit, token)
        if helper is not None and cache.claim(key, helper.process.pid):
            try:
                store_keyed(_identity(unit, token), lambda u=unit: _unit_ir(u), options=LIBRARY_OPTIONS)
            finally:
                cache.release(key, helper.process.pid)
    for unit in units:
        helper = _helpers.pop(unit, None)
        if helper is not None:
            helper.wait_for(_key(unit, token))
            if not any(h is helper for h in _helpers.values()):
                helper.finish()


def _register(unit: str, compiled: CompiledModule) -> None:
    """Make a loaded module's functions process symbols, for the modules that call them."""
    for name in compiled.functions:
        llvm.add_symbol(name, compiled.address(name))
    _loaded[unit] = compiled


def load_variant(dtype: str, trans_a: bool, trans_b: bool) -> CompiledModule:
    """`load_variants` for one variant; return its module.

    >>> load_variant("float64", False, True).from_cache in (True, False)
    True
    """
    load_variants([(dtype, trans_a, trans_b)])
    return _loaded[f"{dtype}:{_letters(trans_a, trans_b)}"]


def _every_variant(dtypes: Iterable[str] = DTYPES) -> list[tuple[str, bool, bool]]:
    return list(itertools.product(dtypes, (False, True), (False, True)))


def load() -> list[CompiledModule]:
    """Every variant of the library (both precisions, all four transpositions)."""
    variants = _every_variant()
    load_variants(variants)
    return [_loaded[f"{dtype}:{_letters(ta, tb)}"] for dtype, ta, tb in variants]


def cached(dtypes: Iterable[str] = DTYPES) -> dict[str, bool]:
    """Each module of the whole library for ``dtypes`` (parts and every transposition) and
    whether the disk cache holds its code for this machine and this version of the compiler.

    >>> units = cached(["float64"])
    >>> list(units)[-5:]
    ['float64:kernels', 'float64:nn', 'float64:nt', 'float64:tn', 'float64:tt']
    """
    token = _source_token()
    return {unit: cache.contains(_key(unit, token)) for unit in _units(_every_variant(dtypes))}


def build(dtypes: Iterable[str] = DTYPES) -> list[str]:
    """Compile into the disk cache the modules of the library for ``dtypes`` that it lacks,
    without loading them; return their names. After this, a first model on this machine
    compiles only its own code (``symbackprop cache build``).

    Raises
    ------
    RuntimeError
        If the cache is off (``SYMBACKPROP_CACHE=0``): there is nowhere to keep the code.
    """
    if not cache.cache_enabled():
        raise RuntimeError("the compile cache is off (SYMBACKPROP_CACHE=0): there is nowhere to build the library")
    token = _source_token()
    missing = [unit for unit, present in cached(dtypes).items() if not present]
    claimed = [unit for unit in missing if cache.claim(_key(unit, token), os.getpid())]  # the rest: another process's
    try:
        compiled = set(store_keyed_all(_builds(claimed, token), options=LIBRARY_OPTIONS, threads=usable_cores()))
    finally:
        for unit in claimed:
            cache.release(_key(unit, token), os.getpid())
    return [unit for unit in claimed if _identity(unit, token) in compiled]


def loaded() -> list[str]:
    """Entry points of the variants this process has loaded, sorted.

    >>> _ = load_variant("float64", False, True)
    >>> "sbp_matmul_float64_nt" in loaded()
    True
    """
    with _lock:
        variants = [unit.split(":") for unit in _loaded if not _is_part(unit)]
        return sorted(matmul_symbol(dtype, name[0] == "t", name[1] == "t") for dtype, name in variants)


def declare_matmul(
    module: ir.Module, dtype: str, trans_a: bool, trans_b: bool, one_thread: bool = False, epilogue: bool = False
) -> ir.Function:
    """Declare one library matmul in a program's module: the entry point, with ``epilogue``
    the one taking a map of each block, or with ``one_thread`` the kernel that runs on the
    calling thread (see `matmul_symbol`). The variant must be loaded (`load_variants`)
    before the program's code is."""
    name = matmul_symbol(dtype, trans_a, trans_b, one_thread, epilogue)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    function_type = matmul_function_type(dtype)
    if epilogue:
        function_type = ir.FunctionType(function_type.return_type, [*function_type.args, *EPILOGUE_ARGUMENTS])
    return ir.Function(module, function_type, name=name)


def _main(arguments: list[str], handed: BinaryIO | None = None) -> None:
    """The helper, ``_main([SOURCE_TOKEN, "float32:kernels", "float32:nn", ...])`` (as
    ``python -m codegen.library SOURCE_TOKEN ...`` too): compiles each module into the disk
    cache, claiming it first.

    With ``handed``, a stream (a helper on standby), the modules given are compiled while
    nothing has been handed, and those named on the stream's first line after that: the
    stream ends without a line when the helper is let go.
    """
    source_token, *units = arguments
    if handed is not None:
        for unit in units:
            if _readable(handed):
                break
            _compile_claimed(unit, source_token)
        units = handed.readline().decode().split()
    for unit in units:  # one at a time: the process that started this one compiles beside it
        _compile_claimed(unit, source_token)


def _compile_claimed(unit: str, source_token: str) -> None:
    """Compile ``unit`` into the cache unless another process has claimed it."""
    key = _key(unit, source_token)
    if not cache.claim(key, os.getpid()):
        return  # that process compiles it
    try:
        store_keyed(_identity(unit, source_token), lambda: _unit_ir(unit), options=LIBRARY_OPTIONS)
    finally:
        cache.release(key, os.getpid())


def _readable(stream: BinaryIO) -> bool:
    """Whether reading ``stream`` would not wait: it has data, or has ended."""
    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (OSError, ValueError):  # not a pipe select can watch (Windows): read it when due
        return False


if __name__ == "__main__":
    _main(sys.argv[1:])
