"""The kernel IR: loop-nest kernels over views of buffers, and the program that runs them.

Sizes, strides and offsets are SymPy expressions of the batch size ``n`` (the symbol
:data:`N`), fixed when the program is called. A :class:`View` is NumPy's idea of an array:
a buffer, an offset, a shape and strides (in elements), so broadcasting, transposing,
reshaping and slicing cost nothing; kernels read views and write views.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from symbackprop.graph import Tensor
from symbackprop.scalar import ScalarFunction

N = sympy.Symbol("n", integer=True, positive=True)

ROLES = ("input", "param", "const", "state", "output", "temp", "workspace")


@dataclass(eq=False)
class Buffer:
    """A block of memory: its slot in the pointer table, dtype, size in elements and role."""

    slot: int
    dtype: str
    size: sympy.Expr
    role: str
    name: str
    node: Tensor | None = None  # the input, param or const it holds

    def __repr__(self) -> str:
        return f"{self.name}"


def row_major_strides(shape) -> tuple[sympy.Expr, ...]:
    strides, step = [], sympy.Integer(1)
    for dim in reversed(shape):
        strides.append(step)
        step = step * dim
    return tuple(reversed(strides))


def at_batch(size, batch: int) -> int:
    """A size, stride or offset (an int or a polynomial in ``n``) at one batch size.

    >>> at_batch(3 * N + 1, 2), at_batch(5, 2)
    (7, 5)
    """
    if isinstance(size, int):
        return size
    # xreplace, not subs: verification evaluates thousands of these, and subs is ten times slower.
    return int(sympy.sympify(size).xreplace({N: batch}))


@dataclass(frozen=True)
class View:
    """A strided window on a buffer."""

    buffer: Buffer
    shape: tuple
    strides: tuple
    offset: sympy.Expr = sympy.Integer(0)

    @classmethod
    def whole(cls, buffer: Buffer, shape) -> View:
        return cls(buffer, tuple(shape), row_major_strides(shape))

    @property
    def dtype(self) -> str:
        return self.buffer.dtype

    def extent(self, batch: int) -> tuple[int, int]:
        """The lowest and highest element this view touches, for a batch size."""
        low = high = at_batch(self.offset, batch)
        for dim, stride in zip(self.shape, self.strides):
            reach = (at_batch(dim, batch) - 1) * at_batch(stride, batch)
            low, high = (low + reach, high) if reach < 0 else (low, high + reach)
        return low, high

    def is_contiguous(self) -> bool:
        """Row-major and dense; axes of length 1 may have any stride."""
        expected = row_major_strides(self.shape)
        return all(d == 1 or sympy.simplify(s - e) == 0 for d, s, e in zip(self.shape, self.strides, expected))

    def __str__(self) -> str:
        where = f"+{self.offset}" if self.offset != 0 else ""
        dims = ",".join(map(str, self.shape))
        return f"{self.buffer.name}{where}[{dims}]" + ("" if self.is_contiguous() else f"/{self.strides}")


# -- kernels ----------------------------------------------------------------------------------------
@dataclass
class Map:
    """``out[i] = fn(inputs[0][i], ...)`` over the shape of ``out``; inputs may broadcast."""

    out: View
    inputs: list[View]
    fn: ScalarFunction

    def __str__(self) -> str:
        return f"map {self.out} = {self.fn.body} over ({', '.join(map(str, self.inputs))})"


@dataclass
class Copy:
    """``out[i] = src[i]``, converting the dtype; both may be strided."""

    out: View
    src: View

    def __str__(self) -> str:
        return f"copy {self.out} = {self.src}"


@dataclass
class Fill:
    """``out[i] = value``; the value may be the batch size ``n``."""

    out: View
    value: sympy.Expr

    def __str__(self) -> str:
        return f"fill {self.out} = {self.value}"


@dataclass
class Matmul:
    """``out = op(a)·op(b)`` on row-major matrices; op transposes when the flag is set."""

    out: View
    a: View
    b: View
    trans_a: bool
    trans_b: bool
    work: Buffer | None = None  # scratch for packed panels, sized when the batch size is known

    def dims(self, batch: int) -> tuple[int, int, int]:
        """``(M, N, K)`` for a batch size."""
        rows, cols = (int(sympy.sympify(d).subs(N, batch)) for d in self.out.shape)
        inner = self.a.shape[0] if self.trans_a else self.a.shape[1]
        return rows, cols, int(sympy.sympify(inner).subs(N, batch))

    def __str__(self) -> str:
        ta, tb = "ᵀ" if self.trans_a else "", "ᵀ" if self.trans_b else ""
        return f"matmul {self.out} = {self.a}{ta} · {self.b}{tb}"


@dataclass
class Reduce:
    """``out[o, i] = op over r of src[o, r, i]`` for a contiguous ``src`` of shape (outer, size, inner)."""

    out: View
    src: View
    op: str
    outer: sympy.Expr
    size: sympy.Expr
    inner: sympy.Expr

    def __str__(self) -> str:
        return f"reduce-{self.op} {self.out} = {self.src} as ({self.outer}, {self.size}, {self.inner})"


@dataclass
class MapReduce:
    """A reduction of a map computed on the fly: ``out[o, i] = op over r of fn(inputs[o, r, i])``;
    the inputs are contiguous, so the map's values never go to memory."""

    out: View
    inputs: list[View]
    fn: ScalarFunction
    op: str
    outer: sympy.Expr
    size: sympy.Expr
    inner: sympy.Expr

    def __str__(self) -> str:
        sources = ", ".join(map(str, self.inputs))
        return f"reduce-{self.op} {self.out} = {self.fn.body} over ({sources}) as ({self.outer}, {self.size}, {self.inner})"


@dataclass
class Gather:
    """``out[i, :] = table[indices[i], :]``; an index out of range sets the error status."""

    out: View
    table: View
    indices: View
    rows: int
    row_length: sympy.Expr

    def __str__(self) -> str:
        return f"gather {self.out} = {self.table}[{self.indices}]"


@dataclass
class ScatterAdd:
    """``out[indices[i], :] += values[i, :]`` on a zeroed ``out``."""

    out: View
    values: View
    indices: View
    rows: int
    row_length: sympy.Expr

    def __str__(self) -> str:
        return f"scatter-add {self.out}[{self.indices}] += {self.values}"


@dataclass
class OneHot:
    """``out[i, k] = (labels[i] == k)``; a label out of range sets the error status."""

    out: View
    labels: View
    depth: int

    def __str__(self) -> str:
        return f"one-hot {self.out} = {self.labels} == 0..{self.depth - 1}"


@dataclass
class RandomUniform:
    """``out[i] = U(seed, counter)[i]`` over the flat index of a contiguous ``out``: the
    counter-based hash of :mod:`symbackprop.random`, bit for bit."""

    out: View
    counter: View
    seed: int

    def __str__(self) -> str:
        return f"random-uniform {self.out} = U(seed {self.seed}, {self.counter})"


@dataclass
class FusedMap:
    """Maps and full reductions over one contiguous iteration space, in one loop.

    ``members`` (each a :class:`Map`, or a :class:`Reduce` or :class:`MapReduce` to a
    scalar) run in order for
    each element ``i`` of ``size``; every view they use is contiguous with ``size``
    elements, so each reads and writes its element ``i``. Buffers in ``kept`` are written by
    one member and read by later ones within the same element: their values stay in
    registers and never go to memory (a sigmoid read by a loss and by its gradient is
    computed once). ``inputs`` are the views read from memory, ``results`` those written;
    ``out`` is the first result.

    ``str`` shows the members as they were before fusion, under one header:

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None,))
    >>> print(sb.compile([sb.tanh(x).sum(), sb.tanh(x) * 2], inputs=[x]).program.kernels[0])
    fused over n elements (t1 in registers):
        map t1[n] = tanh(t) over (x[n])
        reduce-sum out0[] = t1[n] as (1, n, 1)
        map out1[n] = 2*a over (t1[n])
    """

    inputs: list[View]
    results: list[View]
    members: list
    kept: list[Buffer]
    size: sympy.Expr

    @property
    def out(self) -> View:
        return self.results[0]

    def __str__(self) -> str:
        kept = ", ".join(b.name for b in self.kept)
        lines = [f"fused over {self.size} elements ({kept} in registers):"]
        return "\n    ".join(lines + [str(m) for m in self.members])


@dataclass
class MatmulMap:
    """A product and a map of its result, run block by block: each block of ``product.out``
    is mapped by ``epilogue`` as soon as it is computed, by the thread that computed it.

    The epilogue is a :class:`Map` over the product's two-dimensional result that reads it
    element for element (and any other views, broadcast or not), and writes neither of the
    product's operands. Built by :func:`codegen.fusion.fuse_epilogues`:

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None, 64))
    >>> w = sb.param("w", (64, 64), init="glorot_uniform", seed=0)
    >>> print(sb.compile(sb.tanh(x @ w), inputs=[x]).program.kernels[0])
    matmul t2[n,64] = x[n,64] · w[64,64], each block then:
        map out0[n,64] = tanh(t) over (t2[n,64])
    """

    product: Matmul
    epilogue: Map

    @property
    def out(self) -> View:
        return self.epilogue.out

    @property
    def results(self) -> list[View]:
        return [self.product.out, self.epilogue.out]

    @property
    def inputs(self) -> list[View]:
        """The views read from memory: the operands, and what the map reads besides the product."""
        extra = [v for v in self.epilogue.inputs if v.buffer is not self.product.out.buffer]
        return [self.product.a, self.product.b, *extra]

    @property
    def work(self) -> Buffer | None:
        return self.product.work

    def dims(self, batch: int) -> tuple[int, int, int]:
        return self.product.dims(batch)

    def __str__(self) -> str:
        return f"{self.product}, each block then:\n    {self.epilogue}"


@dataclass
class Concurrent:
    """Two products that depend on nothing the other writes, one on each thread: the caller
    runs ``first`` and the worker ``second`` (each on one thread), or the caller both, in
    order, when the worker is not free or the two are not worth it (see
    :func:`codegen.schedule.pair_products`). ``second`` packs into a workspace of its own.

    Backpropagation through a stack of layers has such pairs: the product ``δ·Wᵀ`` that
    carries ``δ`` from layer l to the layer below, and layer l + 1's weight gradient ``hᵀ·δ``
    with its update.
    """

    first: Matmul | MatmulMap
    second: Matmul | MatmulMap

    @property
    def out(self) -> View:
        return self.first.out

    @property
    def results(self) -> list[View]:
        return [*kernel_results(self.first), *kernel_results(self.second)]

    @property
    def inputs(self) -> list[View]:
        return [*_read_views(self.first), *_read_views(self.second)]

    def __str__(self) -> str:
        lines = ["together:", *str(self.first).splitlines(), *str(self.second).splitlines()]
        return "\n    ".join(lines)


@dataclass
class RowHalves:
    """Products with their maps, each computing the rows of its result from the same rows of
    its first operand (layers over a batch): the caller runs every member on the first half
    of the rows, the worker on the second, with no hand-off between the members. Built by
    :func:`codegen.schedule.halve_rows` for runs of layers whose values stay in their rows.
    """

    members: list[MatmulMap]

    @property
    def out(self) -> View:
        return self.members[-1].out

    @property
    def results(self) -> list[View]:
        return [r for m in self.members for r in kernel_results(m)]

    @property
    def inputs(self) -> list[View]:
        return [v for m in self.members for v in _read_views(m)]

    def __str__(self) -> str:
        lines = ["each half of the rows on a thread of its own:"]
        lines += [line for m in self.members for line in str(m).splitlines()]
        return "\n    ".join(lines)


def product_of(kernel) -> Matmul:
    """The product of a :class:`Matmul` (itself) or of a :class:`MatmulMap`."""
    return kernel.product if isinstance(kernel, MatmulMap) else kernel


def _read_views(kernel) -> list[View]:
    """The views a kernel reads: its ``inputs`` and every other view but ``out``."""
    views = [v for name, v in vars(kernel).items() if isinstance(v, View) and name != "out"]
    return views + list(getattr(kernel, "inputs", []))


def leaf_kernels(kernels: list) -> list:
    """The kernels, with each :class:`Concurrent` and :class:`RowHalves` replaced by its members."""
    leaves = []
    for kernel in kernels:
        if isinstance(kernel, Concurrent):
            leaves += [kernel.first, kernel.second]
        else:
            leaves += kernel.members if isinstance(kernel, RowHalves) else [kernel]
    return leaves


KERNELS = (
    Map,
    Copy,
    Fill,
    Matmul,
    Reduce,
    MapReduce,
    Gather,
    ScatterAdd,
    OneHot,
    RandomUniform,
    FusedMap,
    MatmulMap,
    Concurrent,
    RowHalves,
)


def kernel_results(kernel) -> list[View]:
    """The views a kernel writes: its ``out``, and for a fused kernel every result.

    >>> buffer = Buffer(0, "float32", N, "temp", "t0")
    >>> kernel_results(Fill(View.whole(buffer, (N,)), sympy.Integer(0)))[0].buffer is buffer
    True
    """
    return getattr(kernel, "results", None) or [kernel.out]


def kernel_reads(kernel) -> list[Buffer]:
    """The buffers a kernel reads (its ``inputs`` and any other view but ``out``).

    >>> a, b = (Buffer(i, "float32", N, "temp", f"t{i}") for i in range(2))
    >>> [r.name for r in kernel_reads(Copy(View.whole(b, (N,)), View.whole(a, (N,))))]
    ['t0']
    """
    return [v.buffer for v in _read_views(kernel)]


def buffers_overlap(a: list[Buffer], b: list[Buffer]) -> bool:
    """Whether any buffer is in both lists (buffers compare by identity)."""
    ids = {id(x) for x in a}
    return any(id(y) in ids for y in b)


def may_move_past(between, reads: list[Buffer], writes: list[Buffer]) -> bool:
    """Whether a kernel reading ``reads`` and writing ``writes`` may run before ``between``
    instead of after it: ``between`` writes none of them and reads none of ``writes``."""
    written = [r.buffer for r in kernel_results(between)]
    return not (buffers_overlap(written, reads + writes) or buffers_overlap(kernel_reads(between), writes))


@dataclass
class Program:
    """Kernels in order over a table of buffers; the result of lowering a graph."""

    buffers: list[Buffer]
    kernels: list
    inputs: list[Buffer]
    outputs: list[View]
    index_checks: list[tuple[Buffer, int]] = field(default_factory=list)  # (int input, bound)

    def __str__(self) -> str:
        lines = ["buffers:"]
        for b in self.buffers:
            lines.append(f"  {b.name}: {b.dtype}[{b.size}] {b.role}")
        lines.append("kernels:")
        lines.extend(f"  {k}" for k in self.kernels)
        lines.append("outputs: " + ", ".join(map(str, self.outputs)))
        return "\n".join(lines)

    def verify(self) -> None:
        """Check that every kernel reads buffers written before it (or given from outside) and
        that every view stays inside its buffer, for a few batch sizes: a view out of bounds
        would make native code write outside its memory."""
        ready = {b for b in self.buffers if b.role in ("input", "param", "const", "state")}
        for kernel in self.kernels:
            if not isinstance(kernel, KERNELS):
                raise TypeError(f"unknown kernel {kernel!r}")
            results = kernel_results(kernel)
            views = [v for v in vars(kernel).values() if isinstance(v, View)] + list(getattr(kernel, "inputs", []))
            for view in views + results:
                if all(view is not r for r in results) and view.buffer not in ready:
                    raise ValueError(f"kernel '{kernel}' reads {view.buffer.name} before it is written")
                for batch in (1, 2, 37):
                    low, high = view.extent(batch)
                    size = at_batch(view.buffer.size, batch)
                    if low < 0 or high >= size:
                        raise ValueError(
                            f"kernel '{kernel}': the view {view} leaves its buffer (size {size}) at n={batch}"
                        )
            ready.update(r.buffer for r in results)
