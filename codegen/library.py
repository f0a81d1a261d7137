"""The kernel library: matmul kernels compiled once per machine, shared by every program.

A matmul kernel with its packing, edge tiles and two-thread dispatch is several hundred
kilobytes of IR that LLVM needs most of a second to optimise. Emitting it into every
program made each new model pay that again, so each variant (precision and transpositions)
lives in a module of its own, compiled (or loaded from the object cache) the first time a
program needs it, and registered as a process symbol (``llvm.add_symbol``) that the
programs' modules declare and call. The engines are kept for the life of the process, as
their code must be.
"""

from __future__ import annotations

import itertools
import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from . import program_cache
from .jit import CompiledModule, CompileOptions, compile_keyed
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


def load_variant(dtype: str, trans_a: bool, trans_b: bool) -> CompiledModule:
    """Compile or load one matmul variant and register its entry point; once per process.

    Each variant is a module and a cache entry of its own (about 0.4 s of LLVM from cold), so
    that a program compiles only the variants it calls: a float32 training step uses three
    of the eight. Keyed by the compiler's source: a warm start loads the object code
    without spending time generating the variant's IR in Python.
    """
    symbol = matmul_symbol(dtype, trans_a, trans_b)
    with _lock:
        compiled = _loaded.get(symbol)
        if compiled is None:
            identity = f"kernel library {program_cache.source_token()} {symbol}"
            compiled = compile_keyed(
                identity, lambda: _variant_module(dtype, trans_a, trans_b), options=LIBRARY_OPTIONS
            )
            for name in (symbol, matmul_symbol(dtype, trans_a, trans_b, one_thread=True)):
                llvm.add_symbol(name, compiled.address(name))
            _loaded[symbol] = compiled  # kept for the life of the process, as its code must be
        return compiled


def load() -> list[CompiledModule]:
    """Every variant of the library (both precisions, all four transpositions)."""
    return [load_variant(*variant) for variant in itertools.product(DTYPES, (False, True), (False, True))]


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
    """Declare one library matmul in a program's module (loading that variant if needed):
    the entry point, or with ``one_thread`` the kernel that runs on the calling thread."""
    load_variant(dtype, trans_a, trans_b)
    name = matmul_symbol(dtype, trans_a, trans_b, one_thread)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, matmul_function_type(dtype), name=name)
