"""The machine code is generated for: host target description, target machines, the pass pipeline.

Everything that depends on which CPU the code will run on lives here, so that the cache key
(`TargetSpec.cache_token`) and the code generator agree on it.

Finding on 512-bit vectors (LLVM 22, llvmlite 0.50), measured by counting registers in the
assembly of a float ``c[i] = a[i] + b[i]`` loop:

- skylake-avx512, cascadelake, icelake-server, sapphirerapids: LLVM's tuning for these CPUs
  sets ``prefer-256-bit``, so the loop vectorizer uses ymm only, even with ``+avx512f``.
  Appending ``-prefer-256-bit`` to the feature string gives zmm (16-wide float) loops.
- znver4, znver5: 512-bit by default; ``-prefer-256-bit`` changes nothing there.
- ``+prefer-256-bit`` forces ymm everywhere; on CPUs without AVX-512 (such as znver3) neither
  spelling changes the code, since 256 bits is already the widest vector.

Host feature detection reports ISA features only, never tuning flags, so the host feature
string alone never turns 512-bit loops on. `vector_features` therefore appends
``-prefer-256-bit`` where ``+avx512f`` is present. Whether 512-bit code is faster on Intel
parts that downclock under AVX-512 depends on the kernel; it is the right default for the
long, arithmetic-heavy loops this back end emits.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import llvmlite
import llvmlite.binding as llvm

__all__ = [
    "TargetSpec",
    "host_spec",
    "vector_features",
    "target_machine",
    "host_target_machine",
    "own_target_machine",
    "engine_target_machine",
    "prepare_module",
    "optimize",
    "pass_builder",
    "functions_to_optimize",
    "emit_assembly",
    "code_generation",
    "versions_token",
]

# The code model must be "large" for objects loaded at arbitrary addresses by MCJIT's
# RuntimeDyld: calls to libm and constant-pool loads can otherwise overflow a 32-bit
# relocation. "jitdefault" is llvmlite's name for that choice on 64-bit hosts.
_CODE_MODEL = "jitdefault"
_RELOC = "default"
# Code generation settings that LLVM takes only as process-wide flags, set while this package
# generates machine code (`code_generation`): (flag, its value then, LLVM's default, restored
# after). Loop strength reduction rewrites a loop's address arithmetic into pointers of its
# own; the micro-kernels step their pointers themselves, and the programs' loops and the
# kernels on unpacked operands ran as fast without it. It was 0.17 of the 0.59 s of code
# generation of the mnist step and its float32 kernel library (an elementwise loop of the
# vectoriser: 7 of its 16 ms), and without it products of 32 to 784 and the deep and mnist
# steps took 0.98-1.02 of the time (five alternate processes each).
_CODEGEN_FLAGS = (("-disable-lsr", "true", "false"),)


@functools.cache
def _initialise_native() -> None:
    """Register the host target and its assembly printer with LLVM, once."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def vector_features(features: str) -> str:
    """Return a feature string adjusted so the vectorizers use the widest vectors.

    Parameters
    ----------
    features : str
        Comma-separated LLVM feature string such as ``"+avx2,+fma"``.

    Returns
    -------
    str
        ``features`` with ``-prefer-256-bit`` appended where ``+avx512f`` is on (see the
        module docstring for the measurement behind this), otherwise unchanged.

    Examples
    --------
    >>> vector_features("+avx2,+fma")
    '+avx2,+fma'
    >>> vector_features("+avx2,+avx512f")
    '+avx2,+avx512f,-prefer-256-bit'
    """
    flags = [f for f in features.split(",") if f]
    if "+avx512f" in flags and "-prefer-256-bit" not in flags:
        flags.append("-prefer-256-bit")
    return ",".join(flags)


@dataclass(frozen=True)
class TargetSpec:
    """What machine code is generated for: a triple, a CPU name and a feature string.

    Parameters
    ----------
    triple : str
        LLVM target triple, such as ``"x86_64-unknown-linux-gnu"``.
    cpu : str
        LLVM CPU name, such as ``"znver3"`` or ``"skylake-avx512"``.
    features : str
        Comma-separated feature string passed to LLVM unchanged.

    Examples
    --------
    >>> spec = TargetSpec("x86_64-unknown-linux-gnu", "skylake-avx512", "+avx512f")
    >>> spec.vector_bits
    512
    """

    triple: str
    cpu: str
    features: str

    @property
    def vector_bits(self) -> int:
        """Widest SIMD register width, in bits, that the features enable."""
        flags = set(self.features.split(","))
        if "+avx512f" in flags:
            return 512
        if "+avx" in flags or "+avx2" in flags:
            return 256
        return 128

    def cache_token(self) -> str:
        """Everything about the target that changes the machine code, as one string."""
        flags = " ".join(f"{flag}={value}" for flag, value, _ in _CODEGEN_FLAGS)
        return (
            f"triple={self.triple};cpu={self.cpu};features={self.features};"
            f"code_model={_CODE_MODEL};reloc={_RELOC};codegen={flags}"
        )


@functools.cache
def host_spec() -> TargetSpec:
    """Describe the machine this process runs on, with `vector_features` applied.

    Returns
    -------
    TargetSpec
        Process triple, host CPU name and host features (cached for the process).

    Examples
    --------
    >>> host_spec().cpu == llvm.get_host_cpu_name()
    True
    """
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        # Some hosts cannot report features; the CPU name then implies a safe default set.
        features = ""
    return TargetSpec(llvm.get_process_triple(), llvm.get_host_cpu_name(), vector_features(features))


def _create_target_machine(spec: TargetSpec, opt: int) -> llvm.TargetMachine:
    _initialise_native()
    target = llvm.Target.from_triple(spec.triple)
    return target.create_target_machine(
        cpu=spec.cpu, features=spec.features, opt=opt, reloc=_RELOC, codemodel=_CODE_MODEL, jit=True
    )


@functools.lru_cache(maxsize=16)
def target_machine(spec: TargetSpec, opt: int = 3) -> llvm.TargetMachine:
    """Return a cached target machine for optimising and emitting code for ``spec``.

    Never hand this machine to an execution engine: MCJIT takes ownership of its target
    machine and frees it with the engine, which would leave this cache with a dangling
    pointer. Use `engine_target_machine` for engines.

    Parameters
    ----------
    spec : TargetSpec
        The target to generate code for.
    opt : int
        Code generator optimisation level, 0 to 3.

    Returns
    -------
    llvmlite.binding.TargetMachine
    """
    if opt not in (0, 1, 2, 3):
        raise ValueError(f"opt must be 0, 1, 2 or 3, got {opt!r}")
    return _create_target_machine(spec, opt)


def host_target_machine() -> llvm.TargetMachine:
    """Return the cached target machine for the host (see `target_machine`).

    Examples
    --------
    >>> host_target_machine() is host_target_machine()
    True
    """
    return target_machine(host_spec())


def own_target_machine(opt: int = 3) -> llvm.TargetMachine:
    """Return a new host target machine at level ``opt``, for one thread to use and free.

    A target machine must not generate code for two threads at once; `target_machine`'s
    are shared, so a thread compiling beside others (`codegen.llvm_threads`) takes one of
    its own.

    >>> own_target_machine() is own_target_machine()
    False
    """
    return _create_target_machine(host_spec(), opt)


def engine_target_machine() -> llvm.TargetMachine:
    """Return a new host target machine, for one execution engine to own and free.

    Creating one takes well under a millisecond. Engines load object code that was
    optimised and emitted elsewhere; their own machine only generates code for the empty
    module an engine is created with, when the engine is finalised, so it runs at level 0:
    that halves the time of finalising an engine (0.65 to 0.3 ms).
    """
    return own_target_machine(0)


def prepare_module(module_ref: llvm.ModuleRef, machine: llvm.TargetMachine | None = None) -> llvm.ModuleRef:
    """Set the module's triple and data layout to the target's, in place.

    The optimiser's cost models read both: without them the vectorizers assume a generic
    target and keep loops scalar.

    Parameters
    ----------
    module_ref : llvmlite.binding.ModuleRef
        Parsed module.
    machine : llvmlite.binding.TargetMachine, optional
        Defaults to `host_target_machine`.

    Returns
    -------
    llvmlite.binding.ModuleRef
        The same module.
    """
    machine = machine or host_target_machine()
    module_ref.triple = machine.triple
    module_ref.data_layout = str(machine.target_data)
    return module_ref


def optimize(
    module_ref: llvm.ModuleRef,
    speed_level: int = 3,
    *,
    vectorize: bool = True,
    interprocedural: bool = True,
    as_written: tuple[str, ...] = (),
    unroll: bool = True,
    machine: llvm.TargetMachine | None = None,
) -> llvm.ModuleRef:
    """Run LLVM's default per-module pipeline on the module, in place.

    Parameters
    ----------
    module_ref : llvmlite.binding.ModuleRef
        Parsed module; its triple and data layout are set with `prepare_module` first.
    speed_level : int
        0 to 3, as ``-O0`` to ``-O3``.
    vectorize : bool
        Turn on the loop and SLP vectorizers (the SLP vectorizer is off by default in
        llvmlite's tuning options).
    interprocedural : bool
        False runs only the per-function pipeline on each function: no inlining, no
        interprocedural passes. For code that is already split and shaped as it should run.
    as_written : tuple of str
        Functions whose names start with one of these are left to code generation alone
        (with ``interprocedural=False``): code written vectorised and register-blocked by
        hand, which the optimiser would only re-derive, at a cost.
    unroll : bool
        False turns off LLVM's own choice of loops to unroll (fully or partly); loops whose
        metadata asks for unrolling (``llvm.loop.unroll.count``, ``.full``) still are.
    machine : llvmlite.binding.TargetMachine, optional
        Defaults to `host_target_machine`.

    Returns
    -------
    llvmlite.binding.ModuleRef
        The same module, optimised.

    Examples
    --------
    >>> m = llvm.parse_assembly("define i32 @f() { %a = add i32 1, 2\\n ret i32 %a }")
    >>> "ret i32 3" in str(optimize(m))
    True
    """
    machine = machine or host_target_machine()
    prepare_module(module_ref, machine)
    builder = pass_builder(machine, speed_level, vectorize=vectorize, unroll=unroll)
    if interprocedural:
        if as_written:
            raise ValueError("as_written needs interprocedural=False: the module pipeline would inline those functions")
        builder.getModulePassManager().run(module_ref, builder)
        return module_ref
    functions = builder.getFunctionPassManager()
    for function in functions_to_optimize(module_ref, as_written):
        functions.run(function, builder)
    return module_ref


def functions_to_optimize(module_ref: llvm.ModuleRef, as_written: tuple[str, ...] = ()) -> list[llvm.ValueRef]:
    """The functions that the per-function pipeline runs on: those the module defines, but
    for the ones whose names start with a prefix of ``as_written`` (see `optimize`).

    >>> m = llvm.parse_assembly("declare void @g()\\ndefine void @f() { ret void }\\ndefine void @k() { ret void }")
    >>> [f.name for f in functions_to_optimize(m, ("k",))]
    ['f']
    """
    return [f for f in module_ref.functions if not f.is_declaration and not f.name.startswith(as_written)]


def pass_builder(
    machine: llvm.TargetMachine, speed_level: int = 3, *, vectorize: bool = True, unroll: bool = True
) -> llvm.PassBuilder:
    """LLVM's pass builder for ``machine`` at ``speed_level``, with the vectorizers and LLVM's
    own unrolling on or off (see `optimize`).

    >>> builder = pass_builder(host_target_machine(), 2, unroll=False)
    >>> builder.getModulePassManager() is not None
    True
    """
    if speed_level not in (0, 1, 2, 3):
        raise ValueError(f"speed_level must be 0, 1, 2 or 3, got {speed_level!r}")
    tuning = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    tuning.loop_vectorization = vectorize
    tuning.slp_vectorization = vectorize
    tuning.loop_unrolling = unroll
    return llvm.create_pass_builder(machine, tuning)


_codegen_lock = threading.Lock()
_codegen_users = 0  # blocks inside `code_generation`, in any thread


@contextlib.contextmanager
def code_generation() -> Iterator[None]:
    """Generate machine code inside this block: LLVM's process-wide code generation flags are
    this package's (`_CODEGEN_FLAGS`) from the first block entered to the last one left, in
    any thread, and LLVM's defaults again after. Another library generating code through LLVM
    in the same process meanwhile (numba) gets them too: they change how fast its code runs,
    never what it computes.

    >>> with code_generation():
    ...     assembly = emit_assembly(llvm.parse_assembly("define void @f() { ret void }"))
    >>> "ret" in assembly
    True
    """
    global _codegen_users
    with _codegen_lock:
        if _codegen_users == 0:
            _set_codegen_flags(during=True)
        _codegen_users += 1
    try:
        yield
    finally:
        with _codegen_lock:
            _codegen_users -= 1
            if _codegen_users == 0:
                _set_codegen_flags(during=False)


def _set_codegen_flags(during: bool) -> None:
    for flag, value, default in _CODEGEN_FLAGS:
        llvm.set_option("symbackprop", f"{flag}={value if during else default}")


def emit_assembly(module_ref: llvm.ModuleRef, machine: llvm.TargetMachine | None = None) -> str:
    """Return the assembly of a module (which code generation may alter; pass a copy).

    Parameters
    ----------
    module_ref : llvmlite.binding.ModuleRef
        Optimised module.
    machine : llvmlite.binding.TargetMachine, optional
        Defaults to `host_target_machine`; pass another to read code for another CPU.
    """
    machine = machine or host_target_machine()
    prepare_module(module_ref, machine)
    with code_generation():
        return machine.emit_assembly(module_ref)


def versions_token() -> str:
    """llvmlite and LLVM versions, as one string for cache keys."""
    return f"llvmlite={llvmlite.__version__};llvm={'.'.join(map(str, llvm.llvm_version_info))}"
