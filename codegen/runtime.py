"""Compiled functions: a program's native code bound to NumPy arrays.

A call checks every argument in Python (shape, dtype, batch size, index ranges) before
any native code runs, converts what can be converted, writes the addresses of the
arrays into the buffer table and makes one native call.

The fixed cost of a call is a few microseconds, comparable to the native work of a small
model, so the common case is kept short: arguments shaped like those of the previous call
skip the checks they would pass again (:class:`CallChecks`), an array still bound to its
buffer is not bound again, and the generated code itself refuses a table with an empty
slot (one compare per buffer) instead of Python scanning the table on every call.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np

from symbackprop.errors import GraphError
from symbackprop.evaluate import batch_size_of, check_input_value
from symbackprop.graph import Tensor

from .emit import STATUS_INDEX_OUT_OF_RANGE, STATUS_UNBOUND
from .kernels import FusedMap, Program, View, at_batch, leaf_kernels
from .parallel import MIN_ELEMENTS, ensure_worker, matmul_workspace_elements

ALIGNMENT = 64


def out_of_range(values: np.ndarray, bound: int) -> bool:
    """Whether any index is negative or at least ``bound``; one pass for int64 indices.

    >>> out_of_range(np.array([0, 2, 1]), 3), out_of_range(np.array([0, -1]), 3), out_of_range(np.array([3]), 3)
    (False, True, True)
    """
    if not values.size:
        return False
    if values.dtype == np.int64 and values.flags.c_contiguous:
        # Read as unsigned, a negative index is above every bound: one reduction, not two.
        return bool(values.view(np.uint64).max() >= bound)
    return bool(values.min() < 0 or values.max() >= bound)


def check_indices(checks, inputs, arrays) -> None:
    """Labels and indices fed to one_hot or gather must be in range; checked before the call."""
    by_name = {node.label: array for node, array in zip(inputs, arrays)}
    for name, bound in checks:
        values = by_name[name]
        if out_of_range(values, bound):
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


class CallChecks:
    """The argument checks of one compiled function, with a fast path for a repeated call.

    ``checks(arrays)`` returns the arrays to bind and the batch size, or raises as
    :func:`check_call` does. Arguments that are C-contiguous NumPy arrays of their inputs'
    dtypes, with the shapes of the arguments last accepted, pass every check of
    :func:`check_call` again without a conversion, so only what their values decide is
    tested again: the ranges of labels and indices. Anything else takes the full checks.

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None, 2))
    >>> checks = CallChecks([x], [])
    >>> checks((np.ones((3, 2), np.float32),))[1]
    3
    >>> checks((np.ones((3, 5), np.float32),))
    Traceback (most recent call last):
    ...
    symbackprop.errors.GraphError: input 'x': expected shape (n, 2), got (3, 5)
    """

    def __init__(self, inputs: Sequence[Tensor], index_checks):
        self.inputs = list(inputs)
        self.index_checks = list(index_checks)
        self.dtypes = tuple(np.dtype(node.dtype) for node in self.inputs)
        position = {node.label: i for i, node in enumerate(self.inputs)}
        self.ranges = [(position[name], bound) for name, bound in self.index_checks]
        self.shapes: tuple | None = None  # of the arguments last accepted
        self.strides: tuple = ()
        self.batch = 1

    def __call__(self, arrays: Sequence) -> tuple[Sequence[np.ndarray], int]:
        if self.repeats(arrays):
            for position, bound in self.ranges:  # label values may differ from the last call's
                if out_of_range(arrays[position], bound):
                    check_indices(self.index_checks, self.inputs, arrays)
            return arrays, self.batch
        arrays, batch = check_call(self.inputs, arrays, self.index_checks)
        self.shapes, self.batch = tuple(a.shape for a in arrays), batch
        self.strides = tuple(a.strides for a in arrays)  # those of C-contiguous arrays of these shapes
        return arrays, batch

    def repeats(self, arrays: Sequence) -> bool:
        """Whether the arguments are arrays that the full checks would accept unchanged,
        because arrays like them (dtype, shape, layout) were accepted last time."""
        if self.shapes is None or len(arrays) != len(self.dtypes):
            return False
        for array, dtype, shape, strides in zip(arrays, self.dtypes, self.shapes, self.strides):
            # ``is`` on dtypes: NumPy's built-in dtypes are singletons; an equal copy takes
            # the full checks, which accept it. Strides equal to the last accepted array's
            # mean C-contiguous (checked before: the full checks copy other layouts), and
            # compare faster than ``array.flags``, which builds an object.
            if type(array) is not np.ndarray or array.dtype is not dtype or array.shape != shape:
                return False
            if array.strides != strides:
                return False
        return True


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


def _interface_address(array: np.ndarray) -> int:
    """The first element's address from NumPy's array interface (1.2 µs: it builds a dict)."""
    return array.__array_interface__["data"][0]


# NumPy's array object (PyArrayObject) holds its data pointer in the first field after the
# object header, in the C layout NumPy 1 and 2 share. Reading that word is 0.16 µs, against
# 0.46 µs through the buffer protocol, and a call pays it for each new output array. The
# read is checked against the array interface when this module loads, on a fresh array, a
# view with an offset and a read-only broadcast; any mismatch (another interpreter's object
# layout) keeps the interface.
_DATA_OFFSET = object.__basicsize__
_word_at = ctypes.c_void_p.from_address


def _header_address(array: np.ndarray) -> int:
    return _word_at(id(array) + _DATA_OFFSET).value or 0


def _header_read_works() -> bool:
    base = np.arange(8, dtype=np.float64)
    samples = [base, base[3:], np.broadcast_to(base[:1], (4, 4)), np.empty((2, 3), np.float32)]
    return all(_header_address(a) == _interface_address(a) for a in samples)


_FAST_ADDRESS = _header_read_works()


def address(array: np.ndarray) -> int:
    """The address of an array's first element (0.16 µs for an ndarray, see above).

    >>> a = np.zeros(4, np.float32)
    >>> address(a) == a.ctypes.data, address(a[2:]) - address(a)
    (True, 8)
    >>> address(np.broadcast_to(a, (2, 4))) == a.ctypes.data  # read-only
    True
    """
    if _FAST_ADDRESS and isinstance(array, np.ndarray):
        return _header_address(array)
    return _interface_address(array)


class BoundProgram:
    """A compiled program with its buffer table and scratch memory for one batch size at a time."""

    def __init__(self, program: Program, native, compiled_module):
        self.program, self.native, self.module = program, native, compiled_module
        self.table = np.zeros(max(len(program.buffers), 1), dtype=np.uint64)
        self.table_address = address(self.table)
        # The native call's arguments as ctypes objects, made once (the batch's when it
        # changes): `native_entry` declares no argument types, so ctypes passes them as they
        # are, 0.3 µs a call against 0.5 µs converting two Python ints.
        self._table_argument = ctypes.c_void_p(self.table_address)
        self._batch_argument = ctypes.c_int64(-1)
        self.arena_batch: int | None = None
        # The arrays whose addresses are in the table, by slot: kept alive while native code
        # may use them, and compared with the next call's to skip binding the same array again.
        self.held: list[np.ndarray | None] = [None] * len(self.table)
        self.arena: np.ndarray | None = None
        self.output_batch: int | None = None  # the batch size output_plan is for
        self.output_plan: list[tuple[int, tuple[int, ...], np.dtype]] = []  # (slot, shape, dtype)
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
        if any(isinstance(k, FusedMap) and at_batch(k.size, batch) >= MIN_ELEMENTS for k in self.program.kernels):
            ensure_worker()  # long fused loops are split between the threads
        self.arena = np.empty(total + ALIGNMENT, dtype=np.uint8)
        base = -address(self.arena) % ALIGNMENT
        for buffer, offset in zip(temps, offsets):
            self.table[buffer.slot] = address(self.arena) + base + offset
        self.arena_batch = batch

    def elements(self, buffer, batch: int) -> int:
        if buffer.role != "workspace":
            return at_batch(buffer.size, batch)
        # A product split between two threads needs a workspace for each.
        sizes = [
            matmul_workspace_elements(*k.dims(batch), buffer.dtype)
            for k in leaf_kernels(self.program.kernels)
            if getattr(k, "work", None) is buffer
        ]
        return max(sizes, default=0)

    def bind(self, buffer, array: np.ndarray) -> None:
        """Point the buffer's slot at ``array``, a C-contiguous array of the buffer's dtype.

        The table holds raw addresses: each array is kept alive while its address is there,
        or native code would write into freed memory. Holding it also keeps its address:
        NumPy refuses to resize an array referenced elsewhere, so the array bound last time
        needs no new address.
        """
        if self.held[buffer.slot] is not array:
            self.bind_slot(buffer.slot, array)

    def bind_slot(self, slot: int, array: np.ndarray) -> None:
        """`bind` by slot number, for callers that compared ``held[slot]`` themselves."""
        self.held[slot] = array
        self.table[slot] = address(array)

    def outputs(self, batch: int) -> list[np.ndarray]:
        """Fresh arrays for the results, bound to the output buffers."""
        if self.output_batch != batch:
            self.output_plan = [(v.buffer.slot, shape, np.dtype(v.dtype)) for v, shape in self.output_shapes(batch)]
            self.output_batch = batch
        held, table, arrays = self.held, self.table, []
        for slot, shape, dtype in self.output_plan:  # bind() inlined: a new array needs its address
            array = np.empty(shape, dtype)
            held[slot] = array
            table[slot] = address(array)
            arrays.append(array)
        return arrays

    def output_shapes(self, batch: int) -> list[tuple[View, tuple[int, ...]]]:
        """Each output view with its shape at this batch size (SymPy: once per batch size)."""
        return [(v, tuple(at_batch(d, batch) for d in v.shape)) for v in self.program.outputs]

    def run(self, batch: int) -> None:
        """One native call of the program; raises if it reports an error."""
        if self._batch_argument.value != batch:
            self._batch_argument = ctypes.c_int64(batch)
        status = self.native(self._table_argument, self._batch_argument)
        if status:
            self.raise_status(status)

    def raise_status(self, status: int) -> None:
        """The error for a status returned by native code (several may be set at once)."""
        if status & STATUS_UNBOUND:
            # The code returned before running any kernel: a buffer without an address would
            # have made it write through a null pointer.
            missing = [b for b in self.program.buffers if not self.table[b.slot]]
            names = [b.node.label if b.node is not None else f"buffer {b.slot}" for b in missing]
            raise RuntimeError(f"compiled code was called with nothing bound to {names}")
        if status & STATUS_INDEX_OUT_OF_RANGE:
            raise IndexError("an index or label was out of range in a compiled gather or one_hot")
        raise RuntimeError(f"compiled code returned the unknown status {status}")


def native_entry(compiled_module, name: str = "run"):
    """``int32 name(void *table, int64 batch)`` without declared argument types: the caller
    passes a ``c_void_p`` and a ``c_int64`` (see `BoundProgram.run`). The caller keeps
    ``compiled_module`` alive as long as the function."""
    return ctypes.CFUNCTYPE(ctypes.c_int32)(compiled_module.address(name))
