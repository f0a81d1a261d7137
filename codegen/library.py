"""The kernel library: matmul kernels compiled once per machine, shared by every program.

A matmul kernel with its packing, edge tiles and two-thread dispatch is several hundred
kilobytes of IR that LLVM needs most of a second to optimise. Emitting it into every
program made each new model pay that again, so the kernels live in one module of their own,
compiled (or loaded from the object cache) the first time a program needs them, and
registered as process symbols (``llvm.add_symbol``) that the programs' modules declare and
call. The library's engine is kept for the life of the process, as its code must be.
"""

from __future__ import annotations

import functools
import itertools
import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from . import program_cache
from .jit import CompiledModule, compile_keyed
from .matmul import emit_matmul
from .parallel import parallel_matmul

DTYPES = ("float32", "float64")
_lock = threading.Lock()


def matmul_symbol(dtype: str, trans_a: bool, trans_b: bool) -> str:
    """The exported name of one matmul variant, for example ``sbp_matmul_float32_nt``."""
    return f"sbp_matmul_{dtype}_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}"


def _library_module() -> ir.Module:
    module = ir.Module(name="symbackprop_kernels")
    for dtype, trans_a, trans_b in itertools.product(DTYPES, (False, True), (False, True)):
        kernel = emit_matmul(module, f"matmul_{dtype}_{int(trans_a)}{int(trans_b)}", dtype, trans_a, trans_b)
        kernel.linkage = "internal"
        wrapper = parallel_matmul(module, kernel, dtype, trans_a, trans_b)
        exported = ir.Function(module, wrapper.function_type, name=matmul_symbol(dtype, trans_a, trans_b))
        builder = ir.IRBuilder(exported.append_basic_block("entry"))
        builder.call(wrapper, list(exported.args))
        builder.ret_void()
    return module


@functools.cache
def load() -> CompiledModule:
    """Compile or load the library and register its functions; once per process."""
    with _lock:
        # Keyed by the compiler's source: a warm start loads the object code without spending
        # ~0.2 s generating the library's IR in Python.
        library = compile_keyed(f"kernel library {program_cache.source_token()}", _library_module)
        for dtype, trans_a, trans_b in itertools.product(DTYPES, (False, True), (False, True)):
            name = matmul_symbol(dtype, trans_a, trans_b)
            llvm.add_symbol(name, library.address(name))
        return library


def declare_matmul(module: ir.Module, dtype: str, trans_a: bool, trans_b: bool) -> ir.Function:
    """Declare one library matmul in a program's module (loading the library if needed)."""
    load()
    name = matmul_symbol(dtype, trans_a, trans_b)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    template = emit_matmul(ir.Module(), "signature", dtype, trans_a, trans_b).function_type
    return ir.Function(module, template, name=name)
