"""Compiled functions: a program's native code bound to NumPy arrays.

A call checks every argument in Python (shape, dtype, batch size, index ranges) before
any native code runs, converts what can be converted, writes the addresses of the
arrays into the buffer table and makes one native call.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np
import sympy

from symbackprop.errors import GraphError
from symbackprop.evaluate import batch_size_of, check_input_value
from symbackprop.graph import Tensor

from .kernels import N, Program
from .parallel import matmul_workspace_elements

ALIGNMENT = 64


def check_indices(checks, inputs, arrays) -> None:
    """Labels and indices fed to one_hot or gather must be in range; checked before the call."""
    by_name = {node.label: array for node, array in zip(inputs, arrays)}
    for name, bound in checks:
        values = by_name[name]
        if values.size and (values.min() < 0 or values.max() >= bound):
            bad = values[(values < 0) | (values >= bound)].ravel()[0]
            raise GraphError(f"input {name!r}: the value {bad} is out of range; expected 0 <= {name} < {bound}")


def check_call(inputs: Sequence[Tensor], arrays: Sequence, index_checks) -> tuple[list[np.ndarray], int]:
    """Every argument of a call checked and converted, and the batch size they agree on."""
    if len(arrays) != len(inputs):
        names = [n.label for n in inputs]
        raise TypeError(f"expected {len(inputs)} argument(s) for the inputs {names}, got {len(arrays)}")
    # Compiled code takes int64 data only as integers: a float array is refused, not rounded.
    arrays = [check_input_value(node, a, whole_floats=False) for node, a in zip(inputs, arrays)]
    batch = batch_size_of(inputs, arrays) or 1
    check_indices(index_checks, inputs, arrays)
    return arrays, batch


class Inspectable:
    """What a compiled object shows of itself; needs ``program`` and ``compiled``."""

    @property
    def kernel_ir(self) -> str:
        """The kernel program (loop nests over buffers) as text."""
        return str(self.program)

    @property
    def llvm_ir(self) -> str:
        return self.compiled.ir

    @property
    def optimized_ir(self) -> str:
        return self.compiled.optimized_ir

    @property
    def assembly(self) -> str:
        return self.compiled.assembly


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


class BoundProgram:
    """A compiled program with its buffer table and scratch memory for one batch size at a time."""

    def __init__(self, program: Program, native, compiled_module):
        self.program, self.native, self.module = program, native, compiled_module
        self.table = np.zeros(max(len(program.buffers), 1), dtype=np.uint64)
        self.table_address = address(self.table)
        self.arena_batch: int | None = None
        self.bound: dict[int, np.ndarray] = {}
        self.arena: np.ndarray | None = None
        self.output_shapes: dict[int, list[tuple[int, ...]]] = {}
        for buffer in program.buffers:
            if buffer.role == "const":
                self.table[buffer.slot] = address(buffer.node.value)

    def prepare(self, batch: int) -> None:
        """Lay out the temporaries for this batch size in one aligned block (kept until it changes)."""
        if self.arena_batch == batch:
            return
        offsets, total = [], 0
        temps = [b for b in self.program.buffers if b.role in ("temp", "workspace")]
        for buffer in temps:
            offsets.append(total)
            nbytes = self.elements(buffer, batch) * np.dtype(buffer.dtype).itemsize
            total += -(-nbytes // ALIGNMENT) * ALIGNMENT
        self.arena = np.empty(total + ALIGNMENT, dtype=np.uint8)
        base = -address(self.arena) % ALIGNMENT
        for buffer, offset in zip(temps, offsets):
            self.table[buffer.slot] = address(self.arena) + base + offset
        self.arena_batch = batch

    def elements(self, buffer, batch: int) -> int:
        if buffer.role != "workspace":
            return int(buffer.size.subs(N, batch))
        # A product split between two threads needs a workspace for each.
        sizes = [
            matmul_workspace_elements(*k.dims(batch), buffer.dtype)
            for k in self.program.kernels
            if getattr(k, "work", None) is buffer
        ]
        return max(sizes, default=0)

    def bind(self, buffer, array: np.ndarray) -> None:
        # The table holds raw addresses: keep each array alive while its address is there,
        # or native code would write into freed memory.
        self.bound[buffer.slot] = array
        self.table[buffer.slot] = address(array)

    def outputs(self, batch: int) -> list[np.ndarray]:
        """Fresh arrays for the results, bound to the output buffers."""
        shapes = self.output_shapes.get(batch)
        if shapes is None:  # SymPy's subs costs tens of µs: once per batch size, not per call
            shapes = [tuple(int(sympy.sympify(d).subs(N, batch)) for d in v.shape) for v in self.program.outputs]
            self.output_shapes = {batch: shapes}
        arrays = []
        for view, shape in zip(self.program.outputs, shapes):
            array = np.empty(shape, dtype=view.dtype)
            self.bind(view.buffer, array)
            arrays.append(array)
        return arrays

    def run(self, batch: int) -> None:
        # A buffer without an address would make native code write through a null pointer;
        # refuse instead (one vectorised test of the table, about a microsecond).
        if self.program.buffers and not self.table.all():
            missing = [b.node.label if b.node is not None else f"buffer {b.slot}" for b in self.program.buffers]
            missing = [name for b, name in zip(self.program.buffers, missing) if not self.table[b.slot]]
            raise RuntimeError(f"compiled code was called with nothing bound to {missing}")
        status = self.native(self.table_address, batch)
        if status:
            raise IndexError("an index or label was out of range in a compiled gather or one_hot")


def native_entry(compiled_module, name: str = "run"):
    return compiled_module.function(name, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)
