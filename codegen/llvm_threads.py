"""Compile several LLVM modules at once, one thread each.

llvmlite wraps every call into LLVM in one process-wide lock, as LLVM objects must not be
used by two threads at once. Objects that no other thread touches may be: LLVM's own
parallel code generation runs one context per thread, each with its target machine and
pass pipeline. So `compile_modules` gives each module a context, a target machine and a
pass builder of its own, and makes the three calls that take the time (parse, optimise,
emit) on llvmlite's C functions directly, without the lock; ctypes releases the GIL while
they run. The cheap calls around them (creating and disposing the objects) go through
llvmlite as usual.

Where llvmlite's C functions are not reachable this way (`available` is False: another
llvmlite layout), `codegen.jit` compiles the modules one after the other, with the lock.
The object code is the same either way: same passes, same target, same options.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llvmlite.binding as llvm
from llvmlite.binding import ffi

from .target import code_generation, functions_to_optimize, own_target_machine, pass_builder

if TYPE_CHECKING:
    from .jit import CompileOptions

__all__ = ["available", "compile_modules", "usable_cores"]

# The C functions called without the lock: llvmlite's ctypes library behind its locking
# wrapper, whose argument and result types llvmlite declared when it was imported.
_UNLOCKED_CALLS = (
    "LLVMPY_ParseAssembly",
    "LLVMPY_VerifyModule",
    "LLVMPY_SetTarget",
    "LLVMPY_SetDataLayout",
    "LLVMPY_RunNewModulePassManager",
    "LLVMPY_RunNewFunctionPassManager",
    "LLVMPY_TargetMachineEmitToMemory",
    "LLVMPY_GetBufferStart",
    "LLVMPY_GetBufferSize",
    "LLVMPY_DisposeMemoryBuffer",
)


def _unlocked_library():
    library = getattr(ffi.lib, "_lib", None)
    try:
        if library is None or any(getattr(library, name).argtypes is None for name in _UNLOCKED_CALLS):
            return None
    except AttributeError:
        return None
    return library


_C = _unlocked_library()


def available() -> bool:
    """Whether modules compile in parallel threads here (else one after the other).

    >>> isinstance(available(), bool)
    True
    """
    return _C is not None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one).

    >>> usable_cores() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass
class _Job:
    """One module's LLVM objects, used by one thread only, and what came of them."""

    text: str
    options: CompileOptions
    keep_ir: bool
    context: llvm.ContextRef = field(init=False)
    machine: llvm.TargetMachine = field(init=False)
    builder: llvm.PassBuilder = field(init=False)
    passes: llvm.ModulePassManager | llvm.FunctionPassManager = field(init=False)
    module: llvm.ModuleRef | None = None
    object_code: bytes = b""
    optimized_ir: str | None = None
    error: BaseException | None = None

    def prepare(self) -> None:
        options = self.options
        self.context = llvm.create_context()
        self.machine = own_target_machine(options.codegen_level)
        self.builder = pass_builder(
            self.machine, options.speed_level, vectorize=options.vectorize, unroll=options.unroll
        )
        # The module pipeline, or the per-function one that `codegen.target.optimize` runs
        # on each function of a module compiled without interprocedural passes.
        pipeline = self.builder.getModulePassManager if options.interprocedural else self.builder.getFunctionPassManager
        self.passes = pipeline()

    def run(self) -> None:
        try:
            self.object_code = self._compile()
        except BaseException as error:  # re-raised by the thread that started this one
            self.error = error

    def _compile(self) -> bytes:
        with ffi.OutputString() as message:
            pointer = _C.LLVMPY_ParseAssembly(self.context, ctypes.c_char_p(self.text.encode()), message)
            if message:
                raise _compile_error(f"invalid LLVM IR: LLVM IR parsing error\n{message}")
        self.module = llvm.ModuleRef(pointer, self.context)
        with ffi.OutputString() as message:
            if _C.LLVMPY_VerifyModule(self.module, message):
                raise _compile_error(f"invalid LLVM IR: {message}")
        _C.LLVMPY_SetTarget(self.module, self.machine.triple.encode())
        _C.LLVMPY_SetDataLayout(self.module, str(self.machine.target_data).encode())
        if self.options.interprocedural:
            _C.LLVMPY_RunNewModulePassManager(self.passes, self.module, self.builder)
        else:
            for function in functions_to_optimize(self.module, self.options.as_written):
                _C.LLVMPY_RunNewFunctionPassManager(self.passes, function, self.builder)
        if self.keep_ir:
            self.optimized_ir = str(self.module)
        with ffi.OutputString() as message:
            buffer = _C.LLVMPY_TargetMachineEmitToMemory(self.machine, self.module, 1, message)
            if not buffer:
                raise _compile_error(f"code generation failed: {message}")
        try:
            return ctypes.string_at(_C.LLVMPY_GetBufferStart(buffer), _C.LLVMPY_GetBufferSize(buffer))
        finally:
            _C.LLVMPY_DisposeMemoryBuffer(buffer)

    def dispose(self) -> None:
        # The module before its context, which would otherwise free it; what `prepare` did
        # not get to make is not there.
        for name in ("module", "passes", "builder", "machine", "context"):
            resource = getattr(self, name, None)
            if resource is not None:
                resource.close()


def _compile_error(message: str) -> Exception:
    from .jit import CompileError  # imported here: jit imports this module

    return CompileError(message)


def compile_modules(
    texts: Sequence[str], options: CompileOptions | Sequence[CompileOptions], *, keep_ir: bool = False
) -> list[tuple[bytes, str | None]]:
    """Object code of each module of ``texts``, optimised as ``options`` (or its own entry of
    a list of them) say for the host, compiled in parallel threads (the last module in the
    calling thread): ``(object code, optimised IR if keep_ir else None)`` per module.

    Needs `available`; `codegen.jit` falls back to one module after the other.

    Raises
    ------
    codegen.jit.CompileError
        If a module does not parse or verify (the first such module's error).

    Examples
    --------
    >>> from codegen.jit import CompileOptions
    >>> ir = 'define i64 @f{0}(i64 %x) {{\\n  %y = mul i64 %x, {0}\\n  ret i64 %y\\n}}\\n'
    >>> objects = compile_modules([ir.format(2), ir.format(3)], CompileOptions())
    >>> [len(code) > 0 and optimised is None for code, optimised in objects]
    [True, True]
    """
    if not available():
        raise RuntimeError("llvmlite's C functions are not reachable here: compile the modules one at a time")
    each = options if isinstance(options, (list, tuple)) else [options] * len(texts)
    jobs = [_Job(text, own, keep_ir) for text, own in zip(texts, each, strict=True)]
    started = []
    with code_generation():  # the threads are joined before it ends
        try:
            for job in jobs:
                job.prepare()
            for job in jobs[:-1]:
                thread = threading.Thread(target=job.run, name="llvm-compile", daemon=True)
                thread.start()
                started.append(thread)
            jobs[-1].run()
        finally:
            for thread in started:  # before any job's objects are freed
                thread.join()
            for job in jobs:
                job.dispose()
    for job in jobs:
        if job.error is not None:
            raise job.error
    return [(job.object_code, job.optimized_ir) for job in jobs]
