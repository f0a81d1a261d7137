"""The compiler driver: graph → rewrites → program → LLVM → a Python callable."""

from __future__ import annotations

from collections.abc import Sequence

from symbackprop.errors import GraphError
from symbackprop.graph import Tensor, topological_order
from symbackprop.rewrite import simplify

from . import collector, debug, library, program_cache
from .emit import emit_program, library_matmuls
from .expr import FAST
from .jit import CompileOptions, compile_ir
from .llvm_threads import usable_cores
from .lower import lower
from .profile import KernelProfile
from .runtime import BoundProgram, CallChecks, Inspectable, native_entry
from .split import is_as_written, split_module


def check_inputs(outputs: Sequence[Tensor], inputs: Sequence[Tensor]) -> list[Tensor]:
    """The inputs as a list, refusing non-inputs, repeats and inputs the outputs need but lack."""
    inputs = list(inputs)
    for position, node in enumerate(inputs):
        if not isinstance(node, Tensor) or node.op != "input":
            raise GraphError(f"inputs[{position}] must be a tensor made by sb.input, got {node!r}")
    if len(set(inputs)) != len(inputs):
        raise GraphError(f"inputs {[n.label for n in inputs]} list an input twice")
    needed = [n for n in topological_order(outputs) if n.op == "input" and n not in inputs]
    if needed:
        raise GraphError(f"the outputs need the input(s) {[n.label for n in needed]}, which are not in inputs")
    return inputs


class CompiledFunction(Inspectable):
    """Outputs of a graph as native code; call it with one array per input, in order.

    Parameters are read from their ``.value`` at every call, so they may change between
    calls. Results are new NumPy arrays. See :func:`symbackprop.compile`.
    """

    def __init__(
        self, outputs, inputs: Sequence[Tensor], *, fast_math: bool = True, rewrite: bool = True, profile: bool = False
    ):
        single = isinstance(outputs, Tensor)
        self.outputs = [outputs] if single else list(outputs)
        if not self.outputs or not all(isinstance(o, Tensor) for o in self.outputs):
            raise GraphError("compile: outputs must be a tensor or a non-empty list of tensors")
        self.single = single
        self.inputs = check_inputs(self.outputs, inputs)
        self.rewrite = rewrite
        param_order = [n for n in topological_order(self.outputs) if n.op == "param"]

        def build():
            graph = simplify(self.outputs).outputs if rewrite else self.outputs
            program = lower(graph, self.inputs, reassociate=fast_math)
            return program, emit_program(program, flags=FAST if fast_math else (), profile=profile)

        options = f"fast_math={fast_math};rewrite={rewrite}" + (";profile" if profile else "")
        self.program, ir_texts = cached_build("function", self.outputs, self.inputs, param_order, options, build)
        self.compiled = compile_program(self.program, ir_texts)
        self.bound = BoundProgram(self.program, native_entry(self.compiled), self.compiled)
        self.params = [b for b in self.program.buffers if b.role == "param"]
        self.input_buffers = self.program.inputs
        # Slots of the call's arrays; params by their node, whose array is read at every call.
        self._input_slots = [b.slot for b in self.input_buffers]
        self._param_slots = [(b.slot, b.node) for b in self.params]
        self.checks = CallChecks(self.inputs, self.program.index_checks)
        #: Kernel timings (`codegen.profile.KernelProfile`) when compiled with ``profile=True``.
        self.profile = KernelProfile(self.program, self.compiled) if profile else None

    def __call__(self, *arrays):
        arrays, batch = self.checks(arrays)
        bound = self.bound
        bound.prepare(batch)
        held = bound.held  # arrays still bound to their slot need no new address
        for slot, array in zip(self._input_slots, arrays):
            if held[slot] is not array:
                bound.bind_slot(slot, array)
        for slot, node in self._param_slots:  # read at every call: a param's value may have been replaced
            if held[slot] is not node.value:
                bound.bind_slot(slot, node.value)
        results = bound.outputs(batch)
        bound.run(batch)
        return results[0] if self.single else results

    # -- inspection ---------------------------------------------------------------------------------
    @property
    def rewritten(self):
        """The rewrites applied before lowering, with their log (see :func:`symbackprop.simplify`)."""
        return simplify(self.outputs) if self.rewrite else None


# Programs are compiled with LLVM's unrolling only where their loops ask for it (loop hints,
# `codegen.loops.set_loop_hints`; the emitters unroll the loops that need it themselves,
# `KernelBuilder.loop_unrolled`). Left to choose, LLVM fully unrolled every loop of a constant
# count after vectorising it (a bias update over 256 elements: 21 to 223 instructions, the
# epoch's copies, each short row of the softmax head) and the mnist step's code was 6,900
# instructions instead of 3,700, its compile 0.65 s of LLVM instead of 0.45 s.
PROGRAM_OPTIONS = CompileOptions(unroll=False)
# The modules of functions emitted as they should run (`codegen.split.mark_as_written`: loops
# written in vectors, or none) get no optimisation passes, only code generation: the mnist
# step's 0.31 s of LLVM (one core's time) became 0.12 s, its steps as fast.
AS_WRITTEN_OPTIONS = CompileOptions(speed_level=0, vectorize=False, unroll=False)


def program_parts() -> int:
    """How many modules a program's IR is split into (`codegen.split`): one per core this
    process may run on, two at most: LLVM compiles them side by side (the mnist step's
    0.46 s of LLVM took 0.22-0.30 s as two modules)."""
    return min(2, usable_cores())


def compile_program(program, ir_texts: list[str]):
    """The program's native code (`compile_ir`) from its modules, loaded once the library
    variants it calls are: they compile meanwhile in a helper process where they must
    (`library.prefetch`)."""
    options = [AS_WRITTEN_OPTIONS if is_as_written(text) else PROGRAM_OPTIONS for text in ir_texts]
    return compile_ir(ir_texts, options=options, before_load=lambda: library.load_variants(library_matmuls(program)))


def cached_build(kind, targets, inputs, params, options, build):
    """``(program, the IR texts of its modules)`` from the program cache, or from ``build()``
    (then stored).

    ``build`` returns the program and its LLVM module, which is split into modules that
    compile side by side (`split_module`); it runs only on a miss.
    """
    timings: dict[str, float] = {}
    key = program_cache.request_key(kind, targets, inputs, params, options)
    with debug.stage("program cache", timings):
        hit = program_cache.load(key, inputs, params)
    if hit is not None:
        library.prefetch(library_matmuls(hit[0]))  # variants missing from the cache compile meanwhile
        return hit
    # A helper for the kernel library starts now if the graph has products (their gradients'
    # products have the same precisions): it imports while the program is derived.
    products = {node.dtype for node in topological_order(targets) if node.op == "matmul"}
    with debug.stage("rewrite, lower and emit", timings), collector.paused(), library.helper_on_standby(products):
        program, module = build()
        ir_texts = split_module(module, program_parts())
    debug.log(1, lambda: f"kernel program:\n{program}")
    program_cache.store(key, program, ir_texts, inputs, params)
    return program, ir_texts


__all__ = ["CompiledFunction", "check_inputs"]
