"""Emission: a :class:`~codegen.kernels.Program` becomes an LLVM module.

Each kernel becomes a function of its buffers (``noalias`` pointers: distinct buffers
never overlap), the batch size and an error-status pointer; ``run(table, n)`` loads the
buffer addresses from a table and calls the kernels in order, returning the status (0 when
every index was in range; a table with an empty slot runs no kernel and returns
``STATUS_UNBOUND``). Loops are plain scalar loop nests with unit-stride innermost
loops, which LLVM's loop vectorizer widens; maths comes from :mod:`codegen.expr`.
``emitters`` maps each kernel class to its emitter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import llvmlite.ir as ir
import sympy

from symbackprop.random import FINAL_SHIFT, FRACTION_BITS, GAMMA, MIX_STEPS, seed_key

from .builder import FoldingBuilder, constant_value
from .expr import FAST, ExprEmitter, calls_libm, emit_index
from .kernels import (
    KERNELS,
    Concurrent,
    Copy,
    Fill,
    FusedMap,
    Gather,
    Map,
    MapReduce,
    Matmul,
    MatmulMap,
    OneHot,
    Program,
    RandomUniform,
    Reduce,
    RowHalves,
    ScatterAdd,
    View,
    leaf_kernels,
    product_of,
)
from .library import declare_matmul, prefetch
from .loops import set_loop_hints
from .matmul import matmul_config, transpose_block
from .parallel import (
    CHUNKS,
    EPILOGUE_FN,
    MIN_ELEMENTS,
    MIN_FLOPS,
    at_least_flops,
    chunk_function,
    emit_parallel_for,
    workspace_size_ir,
)
from .profile import ProfileEmitter
from .schedule import PAIR_MAX_FLOPS, PAIR_MIN_FLOPS
from .split import mark_as_written

I32, I64 = ir.IntType(32), ir.IntType(64)
I8P = ir.IntType(8).as_pointer()
ELEMENT = {"float32": ir.FloatType(), "float64": ir.DoubleType(), "int64": I64}
# Status bits returned by ``run`` (``epoch`` returns their union over its minibatches).
STATUS_INDEX_OUT_OF_RANGE = 1
STATUS_UNBOUND = 2


def element_type(dtype: str) -> ir.Type:
    return ELEMENT[dtype]


class KernelBuilder:
    """One kernel function under construction: its pointer arguments, ``n`` and status."""

    def __init__(self, module: ir.Module, name: str, buffers: list, flags, extra: int = 0):
        self.buffers = list(dict.fromkeys(buffers))
        types = [element_type(b.dtype).as_pointer() for b in self.buffers] + [I64, I32.as_pointer()] + [I64] * extra
        self.function = ir.Function(module, ir.FunctionType(ir.VoidType(), types), name=name)
        self.function.linkage = "internal"
        for arg in self.function.args[: len(self.buffers)]:
            arg.add_attribute("noalias")
        self.pointers = dict(zip(self.buffers, self.function.args))
        self.n = self.function.args[len(self.buffers)]
        self.status = self.function.args[len(self.buffers) + 1]
        self.extra = list(self.function.args[len(self.buffers) + 2 :])  # integer arguments of its own
        self.builder = FoldingBuilder(self.function.append_basic_block("entry"))
        self.flags = flags
        # Set by an emitter whose loops over elements are all written in vectors (or that has
        # none): the kernel then compiles without optimisation passes (`mark_as_written`).
        self.as_written = False

    def index(self, expr) -> ir.Value:
        return emit_index(self.builder, sympy.sympify(expr), self.n)

    def address(self, view: View, linear: ir.Value) -> ir.Value:
        return self.builder.gep(self.pointers[view.buffer], [linear], inbounds=True)

    def load(self, view: View, linear: ir.Value) -> ir.Value:
        return self.builder.load(self.address(view, linear), align=_align(view))

    def store(self, view: View, linear: ir.Value, value: ir.Value) -> None:
        self.builder.store(value, self.address(view, linear), align=_align(view))

    def loop(self, count: ir.Value, body: Callable[[ir.Value], None], hints=None) -> None:
        """``for i in range(count): body(i)``."""
        self.loop_carrying(count, [], lambda i, carried: body(i) or [], hints)

    def loop_carrying(self, count: ir.Value, initial: list, body, hints=None) -> list:
        """``for i in range(count): values = body(i, values)`` (see `emit_loop`)."""
        return emit_loop(self.builder, ir.Constant(I64, 0), count, body, initial, hints=hints)

    def loop_unrolled(self, count: ir.Value, initial: list, body, times: int) -> list:
        """`loop_carrying` with ``times`` steps written out in each iteration, then the steps
        left over one at a time: unrolled here, as LLVM's unroller would, so that the loop
        needs no optimisation passes."""
        b = self.builder
        times_ = ir.Constant(I64, times)
        rounds = b.sdiv(count, times_)

        def each_round(index, values):
            first = b.mul(index, times_)
            for step in range(times):
                values = body(b.add(first, ir.Constant(I64, step)), values)
            return values

        values = self.loop_carrying(rounds, initial, each_round)
        return emit_loop(b, b.mul(rounds, times_), count, body, values)

    def fail(self, condition: ir.Value) -> None:
        """Record an error in the status word when ``condition`` holds (no branch needed)."""
        b = self.builder
        old = b.load(self.status)
        b.store(b.select(condition, ir.Constant(I32, STATUS_INDEX_OUT_OF_RANGE), old), self.status)

    def finish(self) -> ir.Function:
        self.builder.ret_void()
        return mark_as_written(self.function) if self.as_written else self.function


def emit_loop(
    b: ir.IRBuilder, start: ir.Value, stop: ir.Value, body, initial=(), step: ir.Value | None = None, hints=None
) -> list:
    """``for i in range(start, stop, step): values = body(i, values)``, starting from
    ``initial``; the values (running sums, a counter's next word) stay in registers as phis.
    Returns the values after the last iteration. The loop of every kernel and of the epoch.
    ``hints`` are LLVM's loop hints for it (`codegen.loops.set_loop_hints`).

    The loop is written rotated, as LLVM's passes would make it: a test before the first
    iteration, then one at the end of each, so that code compiled as written (`codegen.split`)
    takes one branch per iteration. A count known here of none or one iteration is no loop.

    >>> fn = ir.Function(ir.Module(), ir.FunctionType(I64, [I64]), "total")
    >>> b = ir.IRBuilder(fn.append_basic_block())
    >>> (total,) = emit_loop(b, ir.Constant(I64, 0), fn.args[0], lambda i, s: [b.add(s[0], i)], [ir.Constant(I64, 0)])
    >>> _ = b.ret(total)
    """
    step = step if step is not None else ir.Constant(I64, 1)
    known = [constant_value(v) for v in (start, stop, step)]
    if None not in known:
        first, last, stride = known
        if first >= last:
            return list(initial)
        if first + stride >= last:
            return list(body(start, list(initial)))
    fn = b.block.function
    before = b.block
    inside, after = fn.append_basic_block("loop"), fn.append_basic_block("after")
    b.cbranch(b.icmp_signed("<", start, stop), inside, after)
    b.position_at_end(inside)
    i = b.phi(I64)
    i.add_incoming(start, before)
    values = []
    for value in initial:
        values.append(b.phi(value.type))
        values[-1].add_incoming(value, before)
    updated = body(i, values)
    following = b.add(i, step)
    latch = b.block
    i.add_incoming(following, latch)
    for phi, value in zip(values, updated):
        phi.add_incoming(value, latch)
    back = b.cbranch(b.icmp_signed("<", following, stop), inside, after)
    if hints:
        set_loop_hints(back, hints)
    b.position_at_end(after)
    results = []
    for value, last_value in zip(initial, updated):
        result = b.phi(value.type)
        result.add_incoming(value, before)
        result.add_incoming(last_value, latch)
        results.append(result)
    return results


def _align(view: View) -> int:
    return 4 if view.dtype == "float32" else 8


def convert(builder: ir.IRBuilder, value: ir.Value, source: str, target: str) -> ir.Value:
    """Value conversion between float32, float64 and int64, as NumPy's astype does."""
    if source == target:
        return value
    to = element_type(target)
    if source == "int64":
        return builder.sitofp(value, to)
    if target == "int64":
        return builder.fptosi(value, to)
    return builder.fpext(value, to) if target == "float64" else builder.fptrunc(value, to)


# -- elementwise loop nests (Map, Copy, Fill) -----------------------------------------------------------
def collapse(shape, views: list[View]):
    """Merge adjacent axes that every view walks contiguously, and drop axes of length 1.

    Returns the new shape and, per view, its strides; fewer, longer loops vectorise better.
    """
    dims = [(d, [v.strides[i] for v in views]) for i, d in enumerate(shape) if d != 1]
    merged: list = []
    for size, strides in dims:
        if merged:
            last_size, last_strides = merged[-1]
            if all(sympy.expand(ls - s * size) == 0 for ls, s in zip(last_strides, strides)):
                merged[-1] = (last_size * size, strides)
                continue
        merged.append((size, strides))
    return [m[0] for m in merged], [[m[1][k] for m in merged] for k in range(len(views))]


def vector_pieces(count: int, lanes: int) -> list[tuple[int, int]]:
    """``(first, width)`` of the vectors that cover ``count`` elements: whole vectors of
    ``lanes``, then one of the rest.

    >>> vector_pieces(10, 8)
    [(0, 8), (8, 2)]
    """
    return [(first, min(lanes, count - first)) for first in range(0, count, lanes)]


def _vector_address(kb: KernelBuilder, view: View, linear: ir.Value, width: int) -> ir.Value:
    """Where ``width`` consecutive elements of ``view`` from ``linear`` are, as one vector."""
    return kb.builder.bitcast(kb.address(view, linear), ir.VectorType(element_type(view.dtype), width).as_pointer())


# Rows of up to this many elements, a constant count contiguous in the output, are computed
# as vectors of exactly their width (see `short_row_pieces`).
SHORT_ROW = 16


def short_row_pieces(shape: list, strides: list[list], dtypes: list[str]) -> list[tuple[int, int]] | None:
    """``(first element, width)`` of the vectors that cover a short innermost row, or None.

    A row of a constant ``2 ≤ c ≤ SHORT_ROW`` elements (the 10 classes of a softmax), contiguous
    in the output and in each input or the same element all along it (a per-row max), of one
    dtype throughout, is computed as vectors of the host's width and one of the rest (10
    float32: 8 + 2 lanes). Left to LLVM, such a loop was unrolled and re-vectorised by the SLP
    vectoriser: a tenth of the mnist step's compile time for its softmax head.

    ``shape`` and ``strides`` are as `collapse` returns them, output first; ``dtypes`` are
    the views' dtypes.

    >>> n = sympy.Symbol("n")
    >>> pieces = short_row_pieces([n, 10], [[10, 1], [10, 1], [1, 0]], ["float32"] * 3)
    >>> [width for _, width in pieces] == [8, 2] or pieces  # AVX2: 8 float32 lanes
    True
    >>> short_row_pieces([n, 10], [[10, 1], [20, 2]], ["float32"] * 2) is None  # strided input
    True
    """
    width = shape[-1] if shape else None
    if not isinstance(width, (int, sympy.Integer)) or not 1 < int(width) <= SHORT_ROW:
        return None
    if strides[0][-1] != 1 or any(s[-1] not in (0, 1) for s in strides[1:]):
        return None
    if len(set(dtypes)) != 1 or dtypes[0] not in ("float32", "float64"):
        return None
    return vector_pieces(int(width), matmul_config(dtypes[0]).lanes)


def emit_elementwise(kb: KernelBuilder, out: View, inputs: list[View], body, vector_body=None) -> bool:
    """``out[idx] = body(values of inputs at idx)`` over the shape of ``out``; return whether
    no loop over elements was left for LLVM to vectorise.

    With ``vector_body`` (``vector_body(values, width)``, on vectors of ``width`` lanes), a
    short innermost row (`short_row_pieces`) is computed as vectors instead of a loop."""
    views = [out, *inputs]
    shape, strides = collapse(out.shape, views)
    offsets = [kb.index(v.offset) for v in views]
    dtypes = [v.dtype for v in views]
    pieces = short_row_pieces(shape, strides, dtypes) if vector_body is not None else None
    in_vectors = bool(shape) and vector_body is not None and not pieces
    in_vectors = in_vectors and rows_in_vectors([s[-1] for s in strides], dtypes)

    def level(depth, bases):
        if depth == len(shape):
            values = [kb.load(v, base) for v, base in zip(inputs, bases[1:])]
            kb.store(out, bases[0], body(values))
            return
        if pieces and depth == len(shape) - 1:
            fixed = [None if step[-1] else kb.load(v, base) for v, base, step in zip(inputs, bases[1:], strides[1:])]
            for first, width in pieces:
                _vector_piece(kb, views, bases, fixed, ir.Constant(I64, first), width, vector_body)
            return
        if in_vectors and depth == len(shape) - 1:
            along = [s[-1] == 1 for s in strides]
            emit_row_in_vectors(kb, views, bases, along, ir.Constant(I64, 0), kb.index(shape[-1]), body, vector_body)
            return
        steps = [kb.index(s[depth]) for s in strides]

        def inner(i):
            moved = [kb.builder.add(base, kb.builder.mul(i, step)) for base, step in zip(bases, steps)]
            level(depth + 1, moved)

        kb.loop(kb.index(shape[depth]), inner)

    level(0, offsets)
    return bool(pieces) or in_vectors or not shape


# A row of a known length of at most this many vectors is written as that many vectors, no loop.
SHORT_ROW_VECTORS = 4


def rows_in_vectors(steps: list, dtypes: list[str]) -> bool:
    """Whether a row whose views (output first) step ``steps`` along it can be computed in
    vectors (`emit_row_in_vectors`): the output contiguous, each input contiguous or the
    same element all along (a bias), all of one floating-point dtype.

    >>> rows_in_vectors([1, 1, 0], ["float32"] * 3), rows_in_vectors([1, 2], ["float32"] * 2)
    (True, False)
    """
    if len(set(dtypes)) != 1 or dtypes[0] not in ("float32", "float64"):
        return False
    return steps[0] == 1 and all(step in (0, 1) for step in steps[1:])


def emit_row_in_vectors(
    kb: KernelBuilder, views: list[View], bases: list, along: list[bool], first, count, body, vector_body
) -> None:
    """``out[i] = body(inputs at i)`` for ``first <= i < first + count`` of a row: whole
    vectors of the host's lanes (``vector_body(values, lanes)``), then the elements left one
    by one. ``bases`` are the views' linear indices of the row's element 0 (output first);
    an input not ``along`` the row is one element, loaded once and broadcast.

    Written in vectors here, the loop needs none of LLVM's optimisation passes: the module it
    is in compiles without them (`codegen.split`), for a fifth of their time per line."""
    b = kb.builder
    out, *inputs = views
    lanes = matmul_config(out.dtype).lanes
    width = ir.Constant(I64, lanes)
    fixed = [None if on else kb.load(view, base) for view, base, on in zip(inputs, bases[1:], along[1:])]
    known = constant_value(count)
    if known is not None and known <= SHORT_ROW_VECTORS * lanes:  # a few vectors, one after the other
        for start, size in vector_pieces(known, lanes):
            _vector_piece(kb, views, bases, fixed, b.add(first, ir.Constant(I64, start)), size, vector_body)
        return
    # Broadcast once, outside the loop: code compiled as written has no pass to hoist them.
    splats = [None if value is None else _splat(b, value, lanes) for value in fixed]
    whole = b.mul(b.sdiv(count, width), width)
    kb.loop(
        b.sdiv(count, width),
        lambda index: _vector_piece(kb, views, bases, splats, b.add(first, b.mul(index, width)), lanes, vector_body),
    )

    def each_element(index):
        at = b.add(first, b.add(whole, index))
        values = [
            kb.load(view, b.add(base, at)) if value is None else value
            for view, base, value in zip(inputs, bases[1:], fixed)
        ]
        kb.store(out, b.add(bases[0], at), body(values))

    kb.loop(b.sub(count, whole), each_element)


def _vector_piece(kb: KernelBuilder, views: list[View], bases, fixed, at, width: int, vector_body) -> None:
    """``width`` elements of a row from element ``at`` (from the views' ``bases``, output
    first): a vector load of each input whose entry of ``fixed`` is None, a broadcast of
    the others (a scalar, or a vector already broadcast to ``width``), one vector store."""
    b = kb.builder
    out, *inputs = views
    values = [
        _load_vector(kb, view, b.add(base, at), width) if value is None else _broadcast(b, value, width)
        for view, base, value in zip(inputs, bases[1:], fixed)
    ]
    address = _vector_address(kb, out, b.add(bases[0], at), width)
    b.store(vector_body(values, width), address, align=_align(out))


def _map(kb: KernelBuilder, kernel: Map) -> None:
    def body(values, width=None):
        return _map_value(kb, kernel, values, width)

    vector_body = None if calls_libm(kernel.fn.body) else body
    kb.as_written = emit_elementwise(kb, kernel.out, kernel.inputs, body, vector_body)


def _map_value(kb: KernelBuilder, kernel, values: list, width: int | None = None) -> ir.Value:
    """A map's (or a map-reduction's) body on one element, given its inputs' values there
    (converted to the output's dtype), or on ``width`` elements: vectors, whose views all
    have the output's dtype already (`short_row_pieces`, `_reduction`)."""
    ty = element_type(kernel.out.dtype)
    env = {
        s: convert(kb.builder, v, view.dtype, kernel.out.dtype)
        for s, v, view in zip(kernel.fn.symbols, values, kernel.inputs)
    }
    return ExprEmitter(kb.builder, ty if width is None else ir.VectorType(ty, width), env, kb.flags)(kernel.fn.body)


def _copy(kb: KernelBuilder, kernel: Copy) -> None:
    kb.as_written = emit_elementwise(
        kb, kernel.out, [kernel.src], lambda values: convert(kb.builder, values[0], kernel.src.dtype, kernel.out.dtype)
    )


def _fill(kb: KernelBuilder, kernel: Fill) -> None:
    value = kernel.value
    if value.free_symbols:
        scalar = convert(kb.builder, kb.index(value), "int64", kernel.out.dtype)
    else:
        scalar = ir.Constant(
            element_type(kernel.out.dtype), float(value) if kernel.out.dtype != "int64" else int(value)
        )
    kb.as_written = emit_elementwise(kb, kernel.out, [], lambda values: scalar)


# -- matmul -----------------------------------------------------------------------------------------------
def _matmul(kb: KernelBuilder, kernel: Matmul) -> None:
    """A call of the library's packed, register-blocked kernel (:mod:`codegen.library`), whose
    wrapper splits large products between the calling thread and the worker thread. A product
    with one column (a matrix times a vector) or with at most `FEW_TERMS` terms per element
    is a loop of the program's own instead."""
    loop = _in_program(kernel)
    if loop is not None:
        kb.as_written = bool(loop(kb, kernel))
        return
    callee = declare_matmul(kb.function.module, kernel.out.dtype, kernel.trans_a, kernel.trans_b)
    kb.as_written = _library_unless_small(
        kb, kernel, lambda: kb.builder.call(callee, _library_arguments(kb, kernel)), lambda: _narrow_rows(kb, kernel)
    )


def _library_unless_small(kb: KernelBuilder, kernel: Matmul, library, alone) -> bool:
    """``library()``, or for a `_narrow_when_small` product too small to be split, a branch
    at run time between ``library()`` and ``alone()`` (the program's own rows). Returns
    whether the code is written as it should run: a call is, and ``alone()`` says of its own."""
    if not _narrow_when_small(kernel):
        library()
        return True
    with kb.builder.if_else(_splits(kb, kernel)) as (split, small):
        with split:
            library()
        with small:
            written = alone()
    return bool(written)


def _narrow_when_small(kernel: Matmul) -> bool:
    """``out = a·b`` with at most `SMALL_COLUMNS` constant columns (a whole number of vectors,
    unit steps as for `_narrow_plain`): computed by `_narrow_rows` when too small to split
    between the threads (tiny's 32 x 16 x 16: 0.22-0.28 µs in the library's tiles), by the
    library otherwise."""
    cols = kernel.out.shape[1]
    if kernel.trans_a or kernel.trans_b or not isinstance(cols, (int, sympy.Integer)) or int(cols) > SMALL_COLUMNS:
        return False
    unit = kernel.a.strides[1] == 1 and kernel.b.strides[1] == 1 and kernel.out.strides[1] == 1
    return unit and int(cols) % matmul_config(kernel.out.dtype).lanes == 0


def _splits(kb: KernelBuilder, kernel: Matmul) -> ir.Value:
    """Whether the library would split the product between the threads (`split_eligible`)."""
    return at_least_flops(kb.builder, *_dims(kb, kernel), MIN_FLOPS)


def _dims(kb: KernelBuilder, kernel: Matmul) -> tuple[ir.Value, ir.Value, ir.Value]:
    """``M, N, K`` of a product at the call's batch size."""
    inner = kernel.a.shape[0] if kernel.trans_a else kernel.a.shape[1]
    return tuple(kb.index(d) for d in (*kernel.out.shape, inner))


def _library_arguments(kb: KernelBuilder, kernel: Matmul, rows=None, thread=None) -> list[ir.Value]:
    """``M, N, K, A, lda, B, ldb, C, ldc, accumulate, work`` of a library matmul call; with
    ``rows = (first, count)`` for those rows of ``op(A)`` and of C only (``op(A) = A``), and
    with ``thread``, in that thread's part of the workspace (see `_row_halves`)."""
    b = kb.builder
    m, n, k = _dims(kb, kernel)
    lda, ldb, ldc = (kb.index(v.strides[0]) for v in (kernel.a, kernel.b, kernel.out))

    def at(view, first_row=None, step=None):
        start = kb.index(view.offset)
        if first_row is not None:
            start = b.add(start, b.mul(first_row, step))
        return b.gep(kb.pointers[view.buffer], [start], inbounds=True)

    first, count = rows if rows is not None else (None, m)
    work = kb.pointers[kernel.work]
    if thread is not None:
        stride = workspace_size_ir(b, m, n, k, matmul_config(kernel.out.dtype))
        work = b.gep(work, [b.mul(thread, stride)], inbounds=True)
    a, c = at(kernel.a, first, lda), at(kernel.out, first, ldc)
    return [count, n, k, a, lda, at(kernel.b), ldb, c, ldc, ir.Constant(I32, 0), work]


def _matmul_map(kb: KernelBuilder, kernel: MatmulMap) -> None:
    """A product whose blocks are mapped by the thread that computed them.

    A library product goes through the library's entry point that takes a map of each block
    (`parallel_matmul` with an epilogue): each chunk computes its block of the product, then
    maps it. A product the program computes itself (`_in_program`) is not split; the map
    follows it over the whole result.
    """
    product, epilogue = kernel.product, kernel.epilogue
    rows, cols = (kb.index(d) for d in product.out.shape)
    zero = ir.Constant(I64, 0)

    def then_map(emit_product):  # the program's own loops, one thread: the map follows them
        written = bool(emit_product(kb, product))
        return _block_map(kb, epilogue, zero, rows, zero, cols) and written

    loop = _in_program(product)
    if loop is not None:
        kb.as_written = then_map(loop)
        return
    kb.as_written = _library_unless_small(
        kb, product, lambda: _matmul_map_through_library(kb, kernel), lambda: then_map(_narrow_rows)
    )


def _matmul_map_through_library(kb: KernelBuilder, kernel: MatmulMap) -> None:
    """The library's split product with the map of each block, a function of the program's
    own (see `_matmul_map`)."""
    product, epilogue = kernel.product, kernel.epilogue
    b = kb.builder
    module = kb.function.module
    block = KernelBuilder(
        module,
        f"{kb.function.name}.block",
        [epilogue.out.buffer, *(v.buffer for v in epilogue.inputs)],
        kb.flags,
        extra=4,
    )
    block.as_written = _block_map(block, epilogue, *block.extra)
    block.finish()
    unpack = mark_as_written(ir.Function(module, EPILOGUE_FN, f"{kb.function.name}.epilogue"))
    unpack.linkage = "internal"
    ub = FoldingBuilder(unpack.append_basic_block("entry"))
    # Not inlined here, where a call per block costs nothing: LLVM would vectorise the map's
    # loops once more (3-5% of the mnist and deep steps' LLVM time). The small products'
    # branch below does inline it: a call there made the tiny step 10% slower.
    _call_from_context(ub, unpack.args[0], block.buffers, block, list(unpack.args[1:]), attributes=("noinline",))
    ub.ret_void()
    arguments = _library_arguments(kb, product)
    rows, cols = arguments[:2]
    # A product too small to split runs here, the map right after it, called directly: going
    # through the library's split entry and its call of the map made the tiny step 10-15%
    # slower (1.39 → 1.56 µs, alternate processes).
    with b.if_else(_splits(kb, product)) as (large, small):
        with large:
            split = declare_matmul(module, product.out.dtype, product.trans_a, product.trans_b, epilogue=True)
            b.call(split, [*arguments, unpack, _store_context(kb, block.buffers)])
        with small:
            kernel_alone = declare_matmul(module, product.out.dtype, product.trans_a, product.trans_b, one_thread=True)
            b.call(kernel_alone, arguments)
            zero = ir.Constant(I64, 0)
            b.call(
                block.function, [*(kb.pointers[buf] for buf in block.buffers), kb.n, kb.status, zero, rows, zero, cols]
            )


def _context_type(buffers: list) -> ir.LiteralStructType:
    """A kernel's arguments gathered for a callback: its buffers' addresses, ``n``, the status."""
    return ir.LiteralStructType([I8P] * len(buffers) + [I64, I8P])


def _store_context(kb: KernelBuilder, buffers: list) -> ir.Value:
    """The `_context_type` of ``buffers``, filled on ``kb``'s stack; as an ``i8*``."""
    b = kb.builder
    ctx = b.alloca(_context_type(buffers))
    values = [*(b.bitcast(kb.pointers[buf], I8P) for buf in buffers), kb.n, b.bitcast(kb.status, I8P)]
    for index, value in enumerate(values):
        b.store(value, b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, index)]))
    return b.bitcast(ctx, I8P)


def _call_from_context(
    b: ir.IRBuilder, raw: ir.Value, buffers: list, callee: KernelBuilder, extra: list, attributes=()
) -> None:
    """Call ``callee``'s kernel with its buffers, ``n`` and status taken from a context of
    ``buffers`` (a superset of the callee's), then ``extra``; ``attributes`` are the call's."""
    context = _context_type(buffers)
    ctx = b.bitcast(raw, context.as_pointer())
    fields = [b.load(b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, i)])) for i in range(len(context.elements))]
    pointers = {buf: b.bitcast(field, element_type(buf.dtype).as_pointer()) for field, buf in zip(fields, buffers)}
    status = b.bitcast(fields[-1], I32.as_pointer())
    b.call(callee.function, [*(pointers[buf] for buf in callee.buffers), fields[-2], status, *extra], attrs=attributes)


def _concurrent(kb: KernelBuilder, kernel: Concurrent) -> None:
    """Two independent products as the two chunks of one job: the caller runs the first and
    the worker the second, when the worker is free and the pair is worth it at this batch
    size (`codegen.schedule.worth_pairing`); else both on the caller, in order, each split
    as it would be alone. Inside the job each runs on its thread: the worker is held, so a
    split they ask for runs on the calling thread."""
    b = kb.builder
    module = kb.function.module
    members = []
    for index, member in enumerate((kernel.first, kernel.second)):
        member_kb = KernelBuilder(module, f"{kb.function.name}.{index}", kernel_buffers(member), kb.flags)
        emitters[type(member)](member_kb, member)
        members.append(member_kb)
        member_kb.finish()
    chunk = mark_as_written(chunk_function(module, f"{kb.function.name}.chunk"))
    cb = FoldingBuilder(chunk.append_basic_block("entry"))
    with cb.if_else(cb.icmp_signed("==", chunk.args[1], ir.Constant(I64, 0))) as (first, second):
        for branch, member_kb in zip((first, second), members):
            with branch:
                _call_from_context(cb, chunk.args[0], kb.buffers, member_kb, [])
    cb.ret_void()
    ctx = _store_context(kb, kb.buffers)
    first_flops, second_flops = (_flops(kb, member) for member in (kernel.first, kernel.second))
    emit_parallel_for(b, chunk, ctx, ir.Constant(I64, 2), emit_worth_pairing(b, first_flops, second_flops))
    kb.as_written = True  # the chunks' calls


def _row_halves(kb: KernelBuilder, kernel: RowHalves) -> None:
    """Layers that keep their values in their rows, as two chunks of one job: each chunk runs
    every layer on half of the rows (the library's one-thread kernel on those rows, then the
    layer's map on them), the caller the first half and the worker the second. Each thread
    packs into its own part of the workspace, as for a split product; when any product is
    too small to be split (`split_eligible`), the caller runs both halves, one after the
    other, in the first part."""
    b = kb.builder
    module = kb.function.module
    rows_kb = KernelBuilder(module, f"{kb.function.name}.rows", kb.buffers, kb.flags, extra=3)
    first, count, thread = rows_kb.extra
    rb = rows_kb.builder
    rows_kb.as_written = True  # calls, and the maps of the rows if written in vectors
    for member in kernel.members:
        product, epilogue = member.product, member.epilogue
        if _in_program(product) is not None or _narrow_when_small(product):
            raise AssertionError(f"a product of the program's own in rows: {product}")  # halve_rows excludes them
        serial = declare_matmul(module, product.out.dtype, False, False, one_thread=True)
        rb.call(serial, _library_arguments(rows_kb, product, rows=(first, count), thread=thread))
        cols = rows_kb.index(product.out.shape[1])
        rows_kb.as_written &= _block_map(rows_kb, epilogue, first, count, ir.Constant(I64, 0), cols)
    rows_kb.finish()
    # Chunk i runs rows i·half to min((i + 1)·half, M), on the thread given.
    chunk = mark_as_written(chunk_function(module, f"{kb.function.name}.chunk"))
    cb = FoldingBuilder(chunk.append_basic_block("entry"))
    raw, index, on_thread = chunk.args
    total = emit_index(cb, sympy.sympify(kernel.members[0].product.out.shape[0]), _context_n(cb, raw, kb.buffers))
    half = cb.sdiv(cb.add(total, ir.Constant(I64, 1)), ir.Constant(I64, 2))
    start = cb.mul(index, half)
    left = cb.sub(total, start)
    size = cb.select(cb.icmp_signed("<", left, half), left, half)
    _call_from_context(cb, raw, kb.buffers, rows_kb, [start, size, on_thread])
    cb.ret_void()
    split = functools.reduce(b.and_, [_splits(kb, member.product) for member in kernel.members])
    emit_parallel_for(b, chunk, _store_context(kb, kb.buffers), ir.Constant(I64, 2), split)
    kb.as_written = True  # the chunks' calls


def _context_n(b: ir.IRBuilder, raw: ir.Value, buffers: list) -> ir.Value:
    """The batch size stored in a context of ``buffers`` (see `_store_context`)."""
    context = _context_type(buffers)
    return b.load(b.gep(b.bitcast(raw, context.as_pointer()), [ir.Constant(I32, 0), ir.Constant(I32, len(buffers))]))


def emit_worth_pairing(b: ir.IRBuilder, first_flops: ir.Value, second_flops: ir.Value) -> ir.Value:
    """`codegen.schedule.worth_pairing` computed in IR, at the call's batch size (the tests
    compare the two)."""
    small = b.select(b.icmp_signed("<", first_flops, second_flops), first_flops, second_flops)
    large = b.select(b.icmp_signed("<", first_flops, second_flops), second_flops, first_flops)
    sizes = b.and_(
        b.icmp_signed(">=", small, ir.Constant(I64, PAIR_MIN_FLOPS)),
        b.icmp_signed("<=", large, ir.Constant(I64, PAIR_MAX_FLOPS)),
    )
    return b.and_(sizes, b.icmp_signed(">=", b.mul(small, ir.Constant(I64, 5)), b.mul(large, ir.Constant(I64, 4))))


def _flops(kb: KernelBuilder, kernel) -> ir.Value:
    """``2 M N K`` of a product (or a product with an epilogue), at the call's batch size."""
    m, n, k = _dims(kb, product_of(kernel))
    b = kb.builder
    return b.mul(b.mul(b.mul(m, n), k), ir.Constant(I64, 2))


def _block_map(kb: KernelBuilder, kernel: Map, row: ir.Value, rows: ir.Value, col: ir.Value, cols: ir.Value) -> bool:
    """The map on rows ``row .. row+rows`` and columns ``col .. col+cols`` of its
    two-dimensional result; return whether it was written in vectors. Each row is computed
    in vectors where its views allow (`rows_in_vectors`), else left to LLVM to widen. A
    block of a few vectors' width (``cols`` the result's constant width, as when the block
    is the whole result) is a branch of its own, whose rows are those vectors without a
    loop: the loop over two vectors of columns made the tiny step 8% slower."""
    b = kb.builder
    views = [kernel.out, *kernel.inputs]
    offsets = [kb.index(v.offset) for v in views]
    row_steps = [kb.index(v.strides[0]) for v in views]
    col_steps = [kb.index(v.strides[1]) for v in views]
    width = constant_value(cols)
    in_vectors = (width is None or width > 1) and not calls_libm(kernel.fn.body)  # one column: LLVM's
    in_vectors = in_vectors and rows_in_vectors([v.strides[1] for v in views], [v.dtype for v in views])

    def body(values, width=None):
        return _map_value(kb, kernel, values, width)

    def each_row(r, count):
        starts = [b.add(offset, b.mul(r, step)) for offset, step in zip(offsets, row_steps)]
        if in_vectors:
            emit_row_in_vectors(kb, views, starts, [v.strides[1] == 1 for v in views], col, count, body, body)
            return

        def each_col(c, _):
            at = [b.add(start, b.mul(c, step)) for start, step in zip(starts, col_steps)]
            values = [kb.load(view, linear) for view, linear in zip(kernel.inputs, at[1:])]
            kb.store(kernel.out, at[0], _map_value(kb, kernel, values))
            return []

        emit_loop(b, col, b.add(col, count), each_col)

    def all_rows(count):
        emit_loop(b, row, b.add(row, rows), lambda r, _: each_row(r, count) or [])

    full = kernel.out.shape[1]
    full = int(full) if isinstance(full, (int, sympy.Integer)) else None
    lanes = matmul_config(kernel.out.dtype).lanes if in_vectors else 0
    if in_vectors and width is None and full is not None and full <= SHORT_ROW_VECTORS * lanes:
        with b.if_else(b.icmp_signed("==", cols, ir.Constant(I64, full))) as (whole, part):
            with whole:
                all_rows(ir.Constant(I64, full))
            with part:
                all_rows(cols)
    else:
        all_rows(cols)
    return in_vectors


def _matvec(kb: KernelBuilder, kernel: Matmul) -> None:
    """``out[i] = sum over k of op(a)[i, k] op(b)[k]``, the product of a matrix and a vector:
    the output layer of a regression net (``h·W`` with one column) and its weight gradient
    (``hᵀ·δ``). The tiles of the library's kernel are at least eight columns wide, so a single
    column took 0.35-0.5 µs for 32 x 16 there; these loops, vectorised by LLVM, take a
    quarter to a half of that.

    When op(a) is contiguous along k, each output is a sum along a row (a dot product);
    otherwise the columns of op(a) are scaled by b[k] and added into the output in turn,
    which is contiguous along i."""
    b = kb.builder
    rows = kb.index(kernel.out.shape[0])
    inner = kb.index(kernel.a.shape[0] if kernel.trans_a else kernel.a.shape[1])
    a_row, a_col = kernel.a.strides
    a_i, a_k = (a_col, a_row) if kernel.trans_a else (a_row, a_col)
    b_k = kernel.b.strides[1] if kernel.trans_b else kernel.b.strides[0]
    starts = {v: kb.index(v.offset) for v in (kernel.a, kernel.b, kernel.out)}
    a_i, a_k, b_k, o_i = (kb.index(s) for s in (a_i, a_k, b_k, kernel.out.strides[0]))

    def a_at(i, k):
        return kb.load(kernel.a, b.add(starts[kernel.a], b.add(b.mul(i, a_i), b.mul(k, a_k))))

    def b_at(k):
        return kb.load(kernel.b, b.add(starts[kernel.b], b.mul(k, b_k)))

    def out_at(i):
        return b.add(starts[kernel.out], b.mul(i, o_i))

    zero = ir.Constant(element_type(kernel.out.dtype), 0.0)
    if kernel.a.strides[0 if kernel.trans_a else 1] == 1:  # a dot product per output

        def each_row(i):
            def add_term(k, totals):
                return [b.fadd(totals[0], b.fmul(a_at(i, k), b_at(k), flags=kb.flags), flags=kb.flags)]

            # a running sum in a register, which LLVM vectorises when the flags allow reassociation
            (total,) = kb.loop_carrying(inner, [zero], add_term)
            kb.store(kernel.out, out_at(i), total)

        kb.loop(rows, each_row)
        return
    kb.loop(rows, lambda i: kb.store(kernel.out, out_at(i), zero))

    def each_k(k):
        scale = b_at(k)

        def each_i(i):
            product = b.fmul(a_at(i, k), scale, flags=kb.flags)
            kb.store(kernel.out, out_at(i), b.fadd(kb.load(kernel.out, out_at(i)), product, flags=kb.flags))

        kb.loop(rows, each_i)

    kb.loop(inner, each_k)


# Products with at most this many terms per element (a constant K) are maps over the output.
FEW_TERMS = 4


# ``Aᵀ·B`` with at most this many output columns and a whole number of vectors of rows is a
# loop of the program's own, vectorised along the rows (one accumulator per column).
NARROW_COLUMNS = 12
# ``A·B`` with at most this many columns, a whole number of vectors, is one too when it is
# too small to be split between the threads (`_narrow_when_small`).
SMALL_COLUMNS = 16


def _in_program(kernel: Matmul):
    """The emitter of a product computed by the program's own loops, or None for the library's.
    An emitter returns whether its loops are written in vectors (None counts as not)."""
    if kernel.out.shape[1] == 1:
        return _matvec
    inner = kernel.a.shape[0] if kernel.trans_a else kernel.a.shape[1]
    if isinstance(inner, (int, sympy.Integer)) and int(inner) <= FEW_TERMS:
        return lambda kb, kernel: _few_terms(kb, kernel, int(inner))
    if _narrow_transposed(kernel):
        return _narrow_columns
    if _narrow_plain(kernel):
        return _narrow_rows
    return None


def _narrow_transposed(kernel: Matmul) -> bool:
    """``out = aᵀ·b`` (a weight gradient ``hᵀ·δ``) with few constant columns, a constant
    number of rows that is a multiple of the vector width, and unit steps along the rows of
    ``out`` in ``a`` and along the columns in ``b`` and ``out``."""
    rows, cols = kernel.out.shape
    if not (kernel.trans_a and not kernel.trans_b):
        return False
    if not all(isinstance(d, (int, sympy.Integer)) for d in (rows, cols)) or not 1 < int(cols) <= NARROW_COLUMNS:
        return False
    unit = kernel.a.strides[1] == 1 and kernel.b.strides[1] == 1 and kernel.out.strides[1] == 1
    return unit and int(rows) % matmul_config(kernel.out.dtype).lanes == 0


def library_matmuls(program: Program) -> set[tuple[str, bool, bool]]:
    """``(dtype, trans_a, trans_b)`` of each library variant the program's code calls."""
    products = [product_of(k) for k in leaf_kernels(program.kernels)]
    return {(k.out.dtype, k.trans_a, k.trans_b) for k in products if isinstance(k, Matmul) and _in_program(k) is None}


def _few_terms(kb: KernelBuilder, kernel: Matmul, terms: int) -> None:
    """``out[i, j] = sum over k < terms of op(a)[i, k] op(b)[k, j]`` for a small constant K,
    unrolled, as a map over the output instead of a call of the library's kernel: an outer
    product (K = 1: ``δ·Wᵀ`` behind a one-column layer) or the first layer of a net with a
    few input features (``x·W1``, K = 2 in the tiny workload: 0.16-0.19 → 0.12 µs)."""
    b = kb.builder
    rows, cols = (kb.index(d) for d in kernel.out.shape)
    a_i, a_k = kernel.a.strides[::-1] if kernel.trans_a else kernel.a.strides
    b_k, b_j = kernel.b.strides[::-1] if kernel.trans_b else kernel.b.strides
    a_i, a_k, b_k, b_j = (kb.index(x) for x in (a_i, a_k, b_k, b_j))
    o_i, o_j = (kb.index(x) for x in kernel.out.strides)
    a0, b0, o0 = (kb.index(v.offset) for v in (kernel.a, kernel.b, kernel.out))

    def each_row(i):
        row_a = b.add(a0, b.mul(i, a_i))
        left = [kb.load(kernel.a, b.add(row_a, b.mul(ir.Constant(I64, k), a_k))) for k in range(terms)]
        row = b.add(o0, b.mul(i, o_i))

        def each_col(j):
            col_b = b.add(b0, b.mul(j, b_j))
            total = None
            for k in range(terms):
                right = kb.load(kernel.b, b.add(col_b, b.mul(ir.Constant(I64, k), b_k)))
                product = b.fmul(left[k], right, flags=kb.flags)
                total = product if total is None else b.fadd(total, product, flags=kb.flags)
            kb.store(kernel.out, b.add(row, b.mul(j, o_j)), total)

        kb.loop(cols, each_col)

    kb.loop(rows, each_row)


def _broadcast(b: ir.IRBuilder, value: ir.Value, width: int) -> ir.Value:
    """``value`` as a vector of ``width`` lanes: itself if it is one already, else `_splat`."""
    return value if isinstance(value.type, ir.VectorType) else _splat(b, value, width)


def _splat(b: ir.IRBuilder, value: ir.Value, width: int) -> ir.Value:
    """A vector of ``width`` copies of ``value`` (a broadcast)."""
    vector = ir.VectorType(value.type, width)
    first = b.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(I32, 0))
    return b.shuffle_vector(
        first, ir.Constant(vector, ir.Undefined), ir.Constant(ir.VectorType(I32, width), [0] * width)
    )


def _narrow_plain(kernel: Matmul) -> bool:
    """``out = a·b`` (an output layer ``h·W``) with few constant columns, not a whole number of
    vectors, and unit steps along k in ``a`` and along the columns in ``b`` and ``out``."""
    cols = kernel.out.shape[1]
    if kernel.trans_a or kernel.trans_b or not isinstance(cols, (int, sympy.Integer)):
        return False
    if not 1 < int(cols) <= NARROW_COLUMNS or int(cols) % matmul_config(kernel.out.dtype).lanes == 0:
        return False
    return kernel.a.strides[1] == 1 and kernel.b.strides[1] == 1 and kernel.out.strides[1] == 1


# Rows of ``out`` computed together by `_narrow_rows`: each load of a row of ``b`` serves them all.
NARROW_ROW_BLOCK = 4
# Steps along k per iteration of the narrow products' loops: their chains of additions into
# a few accumulators need several steps in flight (64 x 10 x 64, `_narrow_rows`: 2.46 µs
# with one step per iteration, 1.98 µs as LLVM unrolled it).
NARROW_K_UNROLL = 4


def _narrow_rows(kb: KernelBuilder, kernel: Matmul) -> bool:
    """``out[i, :] = sum over k of a[i, k] b[k, :]`` for `_narrow_plain` products: a row of ``out``
    is held as vectors of exactly its width (10 columns: 8 + 2 lanes), so no load or store
    needs a mask, and `NARROW_ROW_BLOCK` rows share each load of ``b[k, :]``. The library's
    tiles computed 10 columns as two 8-lane vectors, masked at every load of ``b`` and every
    store: 32 x 10 x 64 took 1.2-1.35 µs there. Returns True: its loops are in vectors."""
    b = kb.builder
    ty = element_type(kernel.out.dtype)
    lanes = matmul_config(kernel.out.dtype).lanes
    cols = int(kernel.out.shape[1])
    pieces = vector_pieces(cols, lanes)  # (first column, width)
    rows, inner = kb.index(kernel.out.shape[0]), kb.index(kernel.a.shape[1])
    lda, ldb, ldo = (kb.index(v.strides[0]) for v in (kernel.a, kernel.b, kernel.out))
    a0, b0, o0 = (kb.index(v.offset) for v in (kernel.a, kernel.b, kernel.out))

    def vector_at(view, at, width):
        return _vector_address(kb, view, at, width)

    def rows_from(first, count):
        """The ``count`` rows of ``out`` from row ``first``."""
        starts = [b.add(first, ir.Constant(I64, r)) for r in range(count)]
        zeros = [ir.Constant(ir.VectorType(ty, w), [ir.Constant(ty, 0.0)] * w) for _, w in pieces] * count

        def each_k(k, totals):
            row_b = b.add(b0, b.mul(k, ldb))
            parts = [
                b.load(vector_at(kernel.b, b.add(row_b, ir.Constant(I64, c)), w), align=_align(kernel.b))
                for c, w in pieces
            ]
            updated = []
            for r, row in enumerate(starts):
                scale = kb.load(kernel.a, b.add(a0, b.add(b.mul(row, lda), k)))
                for p, (part, (_, w)) in enumerate(zip(parts, pieces)):
                    total = totals[r * len(pieces) + p]
                    updated.append(b.fadd(total, b.fmul(_splat(b, scale, w), part, flags=kb.flags), flags=kb.flags))
            return updated

        totals = kb.loop_unrolled(inner, zeros, each_k, NARROW_K_UNROLL)
        for r, row in enumerate(starts):
            for p, (c, w) in enumerate(pieces):
                at = b.add(o0, b.add(b.mul(row, ldo), ir.Constant(I64, c)))
                b.store(totals[r * len(pieces) + p], vector_at(kernel.out, at, w), align=_align(kernel.out))

    block = ir.Constant(I64, NARROW_ROW_BLOCK)
    blocks = b.sdiv(rows, block)
    kb.loop(blocks, lambda index: rows_from(b.mul(index, block), NARROW_ROW_BLOCK))
    done = b.mul(blocks, block)
    kb.loop(b.sub(rows, done), lambda extra: rows_from(b.add(done, extra), 1))
    return True


def _narrow_columns(kb: KernelBuilder, kernel: Matmul) -> bool:
    """``out[i, j] = sum over k of a[k, i] b[k, j]`` for `_narrow_transposed` products: for each
    block of rows (one vector of ``a[k, i:i+lanes]``), one vector accumulator per column,
    each step along k adding ``a[k, block] · b[k, j]``. The library's tiles are 16 columns
    wide, so 10 columns took two vectors with a masked load of ``b`` and a masked store of
    ``out`` at every step: 64 x 10 x 32 ran at 26 GFLOP/s there. Returns True: its loops are
    in vectors."""
    b = kb.builder
    ty = element_type(kernel.out.dtype)
    lanes = matmul_config(kernel.out.dtype).lanes
    vector = ir.VectorType(ty, lanes)
    rows, cols = (int(d) for d in kernel.out.shape)
    inner = kb.index(kernel.a.shape[0])
    lda, ldb, ldo = (kb.index(v.strides[0]) for v in (kernel.a, kernel.b, kernel.out))
    a0, b0, o0 = (kb.index(v.offset) for v in (kernel.a, kernel.b, kernel.out))
    zero = ir.Constant(vector, [ir.Constant(ty, 0.0)] * lanes)

    def each_block(block):
        first_row = b.mul(block, ir.Constant(I64, lanes))

        def each_k(k, totals):
            row_a = b.add(a0, b.add(b.mul(k, lda), first_row))
            pointer = b.bitcast(kb.address(kernel.a, row_a), vector.as_pointer())
            values = b.load(pointer, align=_align(kernel.a))
            row_b = b.add(b0, b.mul(k, ldb))
            updated = []
            for j, total in enumerate(totals):
                scale = _splat(b, kb.load(kernel.b, b.add(row_b, ir.Constant(I64, j))), lanes)
                updated.append(b.fadd(total, b.fmul(values, scale, flags=kb.flags), flags=kb.flags))
            return updated

        totals = kb.loop_unrolled(inner, [zero] * cols, each_k, NARROW_K_UNROLL)
        row_starts = [b.add(o0, b.mul(b.add(first_row, ir.Constant(I64, lane)), ldo)) for lane in range(lanes)]
        _store_columns(kb, kernel.out, row_starts, totals)

    kb.loop(ir.Constant(I64, rows // lanes), each_block)
    return True


def _store_columns(kb: KernelBuilder, out: View, row_starts: list[ir.Value], columns: list[ir.Value]) -> None:
    """Store vectors that each hold one column of a block of rows (``columns[j][r]`` goes to
    ``out[row_starts[r] + j]``): each square block of them transposed by shuffles and stored
    as rows, the columns left over element by element. Storing all of them element by element
    made ten columns 80 scalar stores, a fifth of the mnist step's IR."""
    b = kb.builder
    lanes = len(row_starts)
    whole = len(columns) - len(columns) % lanes
    for first in range(0, whole, lanes):
        for start, row in zip(row_starts, transpose_block(b, columns[first : first + lanes])):
            b.store(row, _vector_address(kb, out, b.add(start, ir.Constant(I64, first)), lanes), align=_align(out))
    for j in range(whole, len(columns)):
        for lane, start in enumerate(row_starts):
            kb.store(out, b.add(start, ir.Constant(I64, j)), b.extract_element(columns[j], ir.Constant(I32, lane)))


# -- reductions -----------------------------------------------------------------------------------------
def _reduce(kb: KernelBuilder, kernel: Reduce) -> None:
    start = kb.index(kernel.src.offset)

    def vector(linear, width):
        return _load_vector(kb, kernel.src, kb.builder.add(start, linear), width)

    vector_at = vector if kernel.src.dtype == kernel.out.dtype else None
    _reduction(kb, kernel, lambda linear: kb.load(kernel.src, kb.builder.add(start, linear)), vector_at)


def _map_reduce(kb: KernelBuilder, kernel: MapReduce) -> None:
    """A reduction whose source values come from the map's body, evaluated in registers."""
    b = kb.builder
    starts = [kb.index(v.offset) for v in kernel.inputs]

    def value(linear):
        return _map_value(kb, kernel, [kb.load(v, b.add(start, linear)) for v, start in zip(kernel.inputs, starts)])

    def vector(linear, width):
        loads = [_load_vector(kb, v, b.add(start, linear), width) for v, start in zip(kernel.inputs, starts)]
        return _map_value(kb, kernel, loads, width)

    same_dtype = all(v.dtype == kernel.out.dtype for v in kernel.inputs)
    _reduction(kb, kernel, value, vector if same_dtype and not calls_libm(kernel.fn.body) else None)


def _load_vector(kb: KernelBuilder, view: View, linear: ir.Value, width: int) -> ir.Value:
    """``width`` consecutive elements of ``view`` from ``linear``, as one vector."""
    return kb.builder.load(_vector_address(kb, view, linear, width), align=_align(view))


def _fused_map(kb: KernelBuilder, kernel: FusedMap) -> None:
    """The members of a fused kernel in one loop over its elements, cut in `CHUNKS` chunks
    that both threads run when there are enough elements (`MIN_ELEMENTS`) and a worker is
    awake. Each chunk sums into its own partial, and the partials are added in chunk order
    afterwards: the same chunks and the same order whichever thread runs them, so results do
    not depend on the worker."""
    b = kb.builder
    reductions = [m for m in kernel.members if isinstance(m, (Reduce, MapReduce))]
    context = ir.LiteralStructType([I8P] * (len(kb.buffers) + len(reductions)) + [I64, I64, I64])
    chunk = chunk_function(kb.function.module, f"{kb.function.name}.chunk")
    _emit_fused_chunk(chunk, kernel, kb.buffers, reductions, context, kb.flags)
    size = kb.index(kernel.size)
    # Chunk boundaries on multiples of 64 elements (a cache line of doubles times eight).
    line = ir.Constant(I64, 64)
    half = b.sdiv(b.add(size, ir.Constant(I64, CHUNKS - 1)), ir.Constant(I64, CHUNKS))
    width = b.mul(b.sdiv(b.add(half, ir.Constant(I64, 63)), line), line)
    width = b.select(b.icmp_signed(">", width, ir.Constant(I64, 0)), width, line)
    count = b.sdiv(b.add(size, b.sub(width, ir.Constant(I64, 1))), width)
    count = b.select(b.icmp_signed(">", count, ir.Constant(I64, 0)), count, ir.Constant(I64, 0))
    partials = []
    for member in reductions:
        ty = element_type(member.out.dtype)
        partial = b.alloca(ty, size=CHUNKS)
        for index in range(CHUNKS):  # chunks that do not exist add the identity
            b.store(ir.Constant(ty, REDUCTIONS[member.op][0]), b.gep(partial, [ir.Constant(I64, index)]))
        partials.append(partial)
    ctx = b.alloca(context)
    fields = [*(kb.pointers[buffer] for buffer in kb.buffers), *partials]
    for index, pointer in enumerate(fields):
        b.store(b.bitcast(pointer, I8P), b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, index)]))
    for index, value in enumerate([kb.n, size, width], start=len(fields)):
        b.store(value, b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, index)]))
    split = b.icmp_signed(">=", size, ir.Constant(I64, MIN_ELEMENTS))
    emit_parallel_for(b, chunk, ctx, count, split)
    for member, partial in zip(reductions, partials):
        combine = REDUCTIONS[member.op][1]
        total = b.load(partial)
        for index in range(1, CHUNKS):
            total = combine(b, kb.flags, total, b.load(b.gep(partial, [ir.Constant(I64, index)])))
        kb.store(member.out, kb.index(member.out.offset), total)


def _emit_fused_chunk(fn: ir.Function, kernel: FusedMap, buffers: list, reductions: list, context, flags) -> None:
    """``chunk(ctx, index, thread)``: the fused loop over chunk ``index`` of the elements; a
    kept buffer's values pass from member to member in registers, each view read from memory
    is loaded once per element, and each sum is a register until it goes to its partial."""
    b = FoldingBuilder(fn.append_basic_block("entry"))
    raw, index, _thread = fn.args
    ctx = b.bitcast(raw, context.as_pointer())

    def field(position: int) -> ir.Value:
        return b.load(b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, position)]))

    pointers = {id(buf): b.bitcast(field(k), element_type(buf.dtype).as_pointer()) for k, buf in enumerate(buffers)}
    partials = [
        b.bitcast(field(len(buffers) + k), element_type(m.out.dtype).as_pointer()) for k, m in enumerate(reductions)
    ]
    n, size, width = (field(len(buffers) + len(reductions) + k) for k in range(3))
    start = b.mul(index, width)
    stop = b.add(start, width)
    stop = b.select(b.icmp_signed("<", stop, size), stop, size)
    offsets = {view: emit_index(b, sympy.sympify(view.offset), n) for view in [*kernel.inputs, *kernel.results]}
    kept = {id(buffer) for buffer in kernel.kept}

    def at(view: View, i: ir.Value) -> ir.Value:
        return b.gep(pointers[id(view.buffer)], [b.add(offsets[view], i)], inbounds=True)

    identities = [ir.Constant(element_type(m.out.dtype), REDUCTIONS[m.op][0]) for m in reductions]

    def each(i, sums):
        loaded, registers, updated = {}, {}, []

        def read(view: View, dtype: str) -> ir.Value:
            if id(view.buffer) in kept:
                value, source = registers[id(view.buffer)]
            else:
                if view not in loaded:
                    loaded[view] = b.load(at(view, i), align=_align(view))
                value, source = loaded[view], view.dtype
            return convert(b, value, source, dtype)

        for member in kernel.members:
            dtype = member.out.dtype
            if isinstance(member, Reduce):
                value = read(member.src, dtype)
            else:
                env = {s: read(v, dtype) for s, v in zip(member.fn.symbols, member.inputs)}
                value = ExprEmitter(b, element_type(dtype), env, flags)(member.fn.body)
            if id(member.out.buffer) in kept:
                registers[id(member.out.buffer)] = (value, dtype)
            elif isinstance(member, (Reduce, MapReduce)):
                updated.append(REDUCTIONS[member.op][1](b, flags, sums[len(updated)], value))
            else:
                b.store(value, at(member.out, i), align=_align(member.out))
        return updated

    sums = emit_loop(b, start, stop, each, identities)
    for acc, partial in zip(sums, partials):
        b.store(acc, b.gep(partial, [index]))
    b.ret_void()


REDUCTIONS = {  # op: (identity, combine(builder, flags, accumulated, new))
    "sum": (0.0, lambda b, flags, x, y: b.fadd(x, y, flags=flags)),
    "max": (float("-inf"), lambda b, flags, x, y: b.select(b.fcmp_unordered(">", y, x), y, x)),
}


def _reduction(kb: KernelBuilder, kernel, value_at, vector_at=None) -> None:
    """``out[o, i] = op over r of value_at(o·size·inner + r·inner + i)``.

    The loop over ``r`` is outside the loop over ``i``, so a reduction over leading axes (a
    bias gradient) vectorises along ``i``; with ``inner == 1`` LLVM vectorises the sum over
    ``r`` itself, as fast-math lets it reassociate. With ``vector_at(linear, width)`` (the
    values from ``linear`` on, as a vector), a short row (`_short_row_reduction`) and a few
    columns (`_columns_in_vectors`) are reduced as vectors.
    """
    b = kb.builder
    start, combine = REDUCTIONS[kernel.op]
    identity = ir.Constant(element_type(kernel.out.dtype), start)
    columns = int(kernel.inner) if isinstance(kernel.inner, (int, sympy.Integer)) else 0
    lanes = matmul_config(kernel.out.dtype).lanes if kernel.out.dtype in ("float32", "float64") else 0
    if vector_at is not None and 1 < columns <= REGISTER_VECTORS * lanes:
        _columns_in_vectors(kb, kernel, vector_at, identity, combine, lanes)
        kb.as_written = True
        return
    if 1 < columns <= REGISTER_COLUMNS:
        _reduction_in_registers(kb, kernel, value_at, identity, combine)
        return
    pieces = short_row_pieces([kernel.size], [[1]], [kernel.out.dtype]) if kernel.inner == 1 else None
    if vector_at is not None and pieces and "reassoc" in kb.flags:
        _short_row_reduction(kb, kernel, vector_at, pieces, combine)
        kb.as_written = True
        return
    outer, size, inner = kb.index(kernel.outer), kb.index(kernel.size), kb.index(kernel.inner)
    out0 = kb.index(kernel.out.offset)

    def each_outer(o):
        out_row = b.add(out0, b.mul(o, inner))
        block = b.mul(o, b.mul(size, inner))
        kb.loop(inner, lambda i: kb.store(kernel.out, b.add(out_row, i), identity))

        def each_r(r):
            row = b.add(block, b.mul(r, inner))

            def each_i(i):
                at = b.add(out_row, i)
                kb.store(kernel.out, at, combine(b, kb.flags, kb.load(kernel.out, at), value_at(b.add(row, i))))

            kb.loop(inner, each_i)

        kb.loop(size, each_r)

    kb.loop(outer, each_outer)


def _short_row_reduction(kb: KernelBuilder, kernel, vector_at, pieces, combine) -> None:
    """``out[o] = op over the row o`` for a short constant row (`short_row_pieces`: the 10
    classes of a softmax's sums and maxima): each piece of the row loaded as one vector and
    folded in halves (a shuffle tree), then the pieces combined. This adds in another order
    than the loop, so only with fast-math's reassociation."""
    b = kb.builder
    size = int(kernel.size)
    out0 = kb.index(kernel.out.offset)

    def each_row(o):
        row = b.mul(o, ir.Constant(I64, size))
        totals = [
            _fold(b, kb.flags, vector_at(b.add(row, ir.Constant(I64, first)), width), width, combine)
            for first, width in pieces
        ]
        total = functools.reduce(lambda x, y: combine(b, kb.flags, x, y), totals)
        kb.store(kernel.out, b.add(out0, o), total)

    kb.loop(kb.index(kernel.outer), each_row)


def _fold(b: ir.IRBuilder, flags, vector: ir.Value, width: int, combine) -> ir.Value:
    """``combine`` over the lanes of ``vector``: halves combined while the width is even,
    then the lanes left one by one."""
    while width % 2 == 0:
        half = width // 2
        low, high = (
            b.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(I32, half), list(range(start, start + half))))
            for start in (0, half)
        )
        vector, width = combine(b, flags, low, high), half
    lanes = [b.extract_element(vector, ir.Constant(I32, lane)) for lane in range(width)]
    return functools.reduce(lambda x, y: combine(b, flags, x, y), lanes)


# A reduction over leading axes with at most this many columns (a bias gradient) keeps each
# column's running value in a register instead of adding into the output at every row.
REGISTER_COLUMNS = 32


# A reduction over leading axes of at most this many vectors of columns (a bias gradient of
# 64 float32) keeps them in vector registers (AVX2 has 16) through the loop over the rows.
REGISTER_VECTORS = 8


def _columns_in_vectors(kb: KernelBuilder, kernel, vector_at, identity, combine, lanes: int) -> None:
    """`_reduction` for a few constant columns: the row's columns as vectors of the host's
    width (and one of the rest), each a running value carried through the loop over ``r``
    and stored once. Each column is combined in the order of the rows, as in the loop. The
    output's load and store at every row of the loop were a dependency chain, and LLVM
    needed its unroller to turn the row's columns into vectors: 64 columns of 64 rows took
    0.21 µs unrolled and 0.37 µs not."""
    b = kb.builder
    columns = int(kernel.inner)
    pieces = vector_pieces(columns, lanes)
    outer, size = kb.index(kernel.outer), kb.index(kernel.size)
    out0 = kb.index(kernel.out.offset)
    ty = element_type(kernel.out.dtype)

    def each_outer(o):
        block = b.mul(o, b.mul(size, ir.Constant(I64, columns)))

        def each_row(r, totals):
            row = b.add(block, b.mul(r, ir.Constant(I64, columns)))
            values = [vector_at(b.add(row, ir.Constant(I64, first)), width) for first, width in pieces]
            return [combine(b, (), total, value) for total, value in zip(totals, values)]

        start = [ir.Constant(ir.VectorType(ty, width), [identity] * width) for _, width in pieces]
        totals = kb.loop_carrying(size, start, each_row)
        out_row = b.add(out0, b.mul(o, ir.Constant(I64, columns)))
        for (first, width), total in zip(pieces, totals):
            address = _vector_address(kb, kernel.out, b.add(out_row, ir.Constant(I64, first)), width)
            b.store(total, address, align=_align(kernel.out))

    kb.loop(outer, each_outer)


def _reduction_in_registers(kb: KernelBuilder, kernel, value_at, identity, combine) -> None:
    """`_reduction` for a small constant ``inner``: one accumulator (a phi) per column, carried
    through the loop over ``r``, stored once. The row's loads are consecutive, so LLVM's SLP
    vectoriser turns the accumulators into vectors: a 32 x 16 column sum went from 0.17-0.20
    to 0.02-0.05 µs, where the output's load and store at every row were a dependency chain."""
    b = kb.builder
    width = int(kernel.inner)
    outer, size = kb.index(kernel.outer), kb.index(kernel.size)
    out0 = kb.index(kernel.out.offset)

    def each_outer(o):
        block = b.mul(o, b.mul(size, ir.Constant(I64, width)))

        def each_row(r, totals):
            row = b.add(block, b.mul(r, ir.Constant(I64, width)))
            values = [value_at(b.add(row, ir.Constant(I64, i))) for i in range(width)]
            # No fast-math flags: with reassociation allowed, the loop vectoriser turned each
            # column's chain into a reduction over r of strided loads, four times slower.
            return [combine(b, (), total, value) for total, value in zip(totals, values)]

        totals = kb.loop_carrying(size, [identity] * width, each_row)
        out_row = b.add(out0, b.mul(o, ir.Constant(I64, width)))
        for i, total in enumerate(totals):
            kb.store(kernel.out, b.add(out_row, ir.Constant(I64, i)), total)

    kb.loop(outer, each_outer)


# -- indexing -------------------------------------------------------------------------------------------
def _in_range(kb: KernelBuilder, index: ir.Value, bound: int):
    b = kb.builder
    ok = b.and_(b.icmp_signed(">=", index, ir.Constant(I64, 0)), b.icmp_signed("<", index, ir.Constant(I64, bound)))
    kb.fail(b.not_(ok))
    return b.select(ok, index, ir.Constant(I64, 0))  # a bad index reads row 0, never outside


def _gather(kb: KernelBuilder, kernel: Gather) -> None:
    b = kb.builder
    count = kb.index(sympy.Mul(*kernel.indices.shape))
    length = kb.index(kernel.row_length)
    t0, i0, o0 = kb.index(kernel.table.offset), kb.index(kernel.indices.offset), kb.index(kernel.out.offset)

    def each(i):
        row = _in_range(kb, kb.load(kernel.indices, b.add(i0, i)), kernel.rows)
        src, dst = b.add(t0, b.mul(row, length)), b.add(o0, b.mul(i, length))
        kb.loop(length, lambda j: kb.store(kernel.out, b.add(dst, j), kb.load(kernel.table, b.add(src, j))))

    kb.loop(count, each)


def _scatter_add(kb: KernelBuilder, kernel: ScatterAdd) -> None:
    b = kb.builder
    count = kb.index(sympy.Mul(*kernel.indices.shape))
    length = kb.index(kernel.row_length)
    v0, i0, o0 = kb.index(kernel.values.offset), kb.index(kernel.indices.offset), kb.index(kernel.out.offset)

    def each(i):
        row = _in_range(kb, kb.load(kernel.indices, b.add(i0, i)), kernel.rows)
        src, dst = b.add(v0, b.mul(i, length)), b.add(o0, b.mul(row, length))

        def add(j):
            at = b.add(dst, j)
            kb.store(kernel.out, at, b.fadd(kb.load(kernel.out, at), kb.load(kernel.values, b.add(src, j))))

        kb.loop(length, add)

    kb.loop(count, each)


def _one_hot(kb: KernelBuilder, kernel: OneHot) -> None:
    b = kb.builder
    ty = element_type(kernel.out.dtype)
    count = kb.index(sympy.Mul(*kernel.labels.shape))
    depth = ir.Constant(I64, kernel.depth)
    l0, o0 = kb.index(kernel.labels.offset), kb.index(kernel.out.offset)

    pieces = short_row_pieces([kernel.depth], [[1]], [kernel.out.dtype])

    def each(i):
        label = kb.load(kernel.labels, b.add(l0, i))
        ok = b.and_(b.icmp_signed(">=", label, ir.Constant(I64, 0)), b.icmp_signed("<", label, depth))
        kb.fail(b.not_(ok))
        row = b.add(o0, b.mul(i, depth))
        if not pieces:
            kb.loop(depth, lambda k: kb.store(kernel.out, b.add(row, k), b.uitofp(b.icmp_signed("==", label, k), ty)))
            return
        for first, width in pieces:  # a short row (ten classes) as vectors: label == (first, first + 1, ...)
            classes = ir.Constant(ir.VectorType(I64, width), list(range(first, first + width)))
            row_of_ones = b.uitofp(b.icmp_signed("==", _splat(b, label, width), classes), ir.VectorType(ty, width))
            address = _vector_address(kb, kernel.out, b.add(row, ir.Constant(I64, first)), width)
            b.store(row_of_ones, address, align=_align(kernel.out))

    kb.loop(count, each)
    kb.as_written = bool(pieces)


# -- random numbers ---------------------------------------------------------------------------------------
def _u64(value: int) -> ir.Constant:
    """A uint64 constant; LLVM's i64 has no sign, but llvmlite prints the Python int as given."""
    return ir.Constant(I64, value - (1 << 64) if value >= 1 << 63 else value)


def _mix64(b: ir.IRBuilder, z: ir.Value) -> ir.Value:
    """splitmix64's finaliser, as :func:`symbackprop.random.mix64` (i64 arithmetic wraps)."""
    for shift, multiplier in MIX_STEPS:
        z = b.mul(b.xor(z, b.lshr(z, _u64(shift))), _u64(multiplier))
    return b.xor(z, b.lshr(z, _u64(FINAL_SHIFT)))


def _random_uniform(kb: KernelBuilder, kernel: RandomUniform) -> None:
    """The key is hashed once from the counter's float64 bits; then each element is one
    addition, the finaliser and an exact conversion, integer vector code throughout."""
    b = kb.builder
    counter = kb.load(kernel.counter, kb.index(kernel.counter.offset))
    bits = b.bitcast(convert(b, counter, kernel.counter.dtype, "float64"), I64)
    key = _mix64(b, b.add(_u64(seed_key(kernel.seed)), b.mul(bits, _u64(GAMMA))))
    ty = element_type(kernel.out.dtype)
    fraction = FRACTION_BITS[kernel.out.dtype]
    scale = ir.Constant(ty, 2.0**-fraction)
    start = kb.index(kernel.out.offset)

    def element(i, word):
        # The top bits are below 2**53, so the signed conversion is exact (and cheaper than unsigned).
        value = b.fmul(b.sitofp(b.lshr(_mix64(b, word), _u64(64 - fraction)), ty), scale)
        kb.store(kernel.out, b.add(start, i), value)

    count = kb.index(sympy.Mul(*kernel.out.shape))
    _counted_loop(kb, count, b.add(key, _u64(GAMMA)), _u64(GAMMA), element)


def _counted_loop(kb: KernelBuilder, count: ir.Value, first: ir.Value, step: ir.Value, body) -> None:
    """``for i in range(count): body(i, first + i·step)``, the second value carried from one
    iteration to the next: an addition where ``i·step`` would be a 64-bit multiply per element,
    which x86 vectorises natively only with AVX-512DQ."""

    def each(i, carried):
        body(i, carried[0])
        return [kb.builder.add(carried[0], step)]

    kb.loop_carrying(count, [first], each)


emitters = {
    Map: _map,
    Copy: _copy,
    Fill: _fill,
    Matmul: _matmul,
    MatmulMap: _matmul_map,
    Concurrent: _concurrent,
    RowHalves: _row_halves,
    Reduce: _reduce,
    MapReduce: _map_reduce,
    FusedMap: _fused_map,
    Gather: _gather,
    ScatterAdd: _scatter_add,
    OneHot: _one_hot,
    RandomUniform: _random_uniform,
}


def kernel_buffers(kernel) -> list:
    if isinstance(kernel, (Concurrent, RowHalves)):
        return [b for member in leaf_kernels([kernel]) for b in kernel_buffers(member)]
    views = [v for v in vars(kernel).values() if isinstance(v, View)] + list(getattr(kernel, "inputs", []))
    views += getattr(kernel, "results", [])  # a fused kernel's outputs
    work = [kernel.work] if getattr(kernel, "work", None) is not None else []
    return [v.buffer for v in views] + work


def emit_program(program: Program, name: str = "run", flags=FAST, profile: bool = False) -> ir.Module:
    """The LLVM module of a program: one internal function per kernel and ``i32 name(i8**, i64)``.

    With ``profile``, each kernel call is timed into counters that `codegen.profile` reads.
    The library variants the program calls start compiling in a helper process meanwhile
    (`codegen.library.prefetch`); they must be loaded before the program's code is."""
    prefetch(library_matmuls(program))
    module = ir.Module(name=name)
    run = ir.Function(module, ir.FunctionType(I32, [I8P.as_pointer(), I64]), name=name)
    table, n = run.args
    builder = FoldingBuilder(run.append_basic_block("entry"))
    status = builder.alloca(I32)
    builder.store(ir.Constant(I32, 0), status)
    pointers = {}
    unbound = ir.Constant(ir.IntType(1), 0)
    for buffer in program.buffers:
        raw = builder.load(builder.gep(table, [ir.Constant(I64, buffer.slot)]))
        unbound = builder.or_(unbound, builder.icmp_unsigned("==", raw, ir.Constant(I8P, None)))
        pointers[buffer] = builder.bitcast(raw, element_type(buffer.dtype).as_pointer())
    # A null address would have the kernels write through it: return before any of them
    # runs (a compare per buffer, where a check of the table in Python costs a microsecond).
    with builder.if_then(unbound, likely=False):
        builder.ret(ir.Constant(I32, STATUS_UNBOUND))
    emitted: dict[tuple, ir.Function] = {}
    timer = ProfileEmitter(module, name, len(program.kernels)) if profile else None
    for index, kernel in enumerate(program.kernels):
        buffers = list(dict.fromkeys(kernel_buffers(kernel)))
        signature = kernel_signature(kernel, buffers)
        fn = emitted.get(signature)
        if fn is None:  # identical kernels on other buffers (the layers of a deep net) share code
            kb = KernelBuilder(module, f"{name}_k{index}_{type(kernel).__name__.lower()}", buffers, flags)
            emitters[type(kernel)](kb, kernel)
            fn = emitted[signature] = kb.finish()
            # Each kernel runs once per call, so a call costs nothing, while inlining them all
            # into one function had LLVM's function passes go over its whole body again
            # after each inlining round.
            fn.attributes.add("noinline")
        started = timer.start(builder) if timer else None
        builder.call(fn, [pointers[b] for b in buffers] + [n, status])
        if timer:
            timer.stop(builder, index, started)
    builder.ret(builder.load(status))
    mark_as_written(run)  # calls, and no loops
    return module


def kernel_signature(kernel, buffers: list) -> tuple:
    """The kernel as a key with each buffer named by its position among the kernel's buffers:
    equal signatures mean the same code applies.

    Scalar bodies stay SymPy expressions, compared by structure: printing them (a
    signature of text) was a quarter of the emission of the mnist step.
    """
    position = {b: i for i, b in enumerate(buffers)}
    parts: list = [type(kernel).__name__]
    for field, value in vars(kernel).items():
        views = value if isinstance(value, list) else [value]
        if views and all(isinstance(v, View) for v in views):
            for v in views:
                parts.append((field, position[v.buffer], v.dtype, v.shape, v.strides, v.offset))
        elif hasattr(value, "slot"):  # a buffer, such as the matmul workspace
            parts.append((field, position[value]))
        elif hasattr(value, "body"):  # a scalar function
            parts.append((field, value.symbols, value.body))
        elif isinstance(value, KERNELS):  # a MatmulMap's product and epilogue
            parts.append((field, kernel_signature(value, buffers)))
        else:
            parts.append(f"{field}:{value}")
    return tuple(parts)
