"""Lowering: a tensor graph becomes a :class:`~codegen.kernels.Program` of loop-nest kernels.

``lowering_rules`` maps each primitive op to ``(ctx, node, views) -> View``. Structural ops
(broadcast, reshape, transpose, slice) only make new views of their input; the others add a
kernel writing a fresh buffer. Temporary buffers are reused once their last reader is done.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from symbackprop.errors import MissingRuleError
from symbackprop.graph import Tensor, topological_order
from symbackprop.ops import PRIMITIVES
from symbackprop.scalar import ScalarFunction

from .fusion import fuse_elementwise, fuse_epilogues
from .kernels import (
    Buffer,
    Copy,
    Fill,
    Gather,
    Map,
    MapReduce,
    Matmul,
    N,
    OneHot,
    Program,
    RandomUniform,
    Reduce,
    ScatterAdd,
    View,
    kernel_reads,
    kernel_results,
)
from .schedule import halve_rows, pair_products


def symbolic_shape(shape) -> tuple:
    return tuple(N if d is None else sympy.Integer(d) for d in shape)


class Lowering:
    """The state of one lowering: buffers made so far, kernels in order, views of nodes."""

    def __init__(self):
        self.buffers: list[Buffer] = []
        self.kernels: list = []
        self.index_checks: list[tuple[Buffer, int]] = []
        self.views: dict[Tensor, View] = {}
        self.fusible: set[Tensor] = set()  # maps whose only reader is a reduction
        self.deferred: dict[Tensor, tuple] = {}  # such maps, not yet emitted

    def buffer(self, dtype: str, shape, role: str, name: str, node: Tensor | None = None) -> View:
        size = sympy.Mul(*shape) if shape else sympy.Integer(1)
        buffer = Buffer(len(self.buffers), dtype, size, role, name, node)
        self.buffers.append(buffer)
        return View.whole(buffer, shape)

    def temp(self, node: Tensor, shape=None) -> View:
        shape = symbolic_shape(node.shape) if shape is None else shape
        return self.buffer(node.dtype, shape, "temp", f"t{len(self.buffers)}")

    def workspace(self, dtype: str) -> Buffer:
        """The scratch buffer every matmul of one dtype shares (they run one after another)."""
        for buffer in self.buffers:
            if buffer.role == "workspace" and buffer.dtype == dtype:
                return buffer
        return self.buffer(dtype, (), "workspace", f"work_{dtype}").buffer

    def emit(self, kernel) -> View:
        self.kernels.append(kernel)
        return kernel.out

    def contiguous(self, view: View) -> View:
        """The view itself if dense and row-major, else a dense copy."""
        if view.is_contiguous():
            return view
        out = self.buffer(view.dtype, view.shape, "temp", f"t{len(self.buffers)}")
        return self.emit(Copy(out, view))


# -- rules: leaves ------------------------------------------------------------------------------------
def _leaf(role):
    def rule(ctx, node, views):
        return ctx.buffer(
            node.dtype,
            symbolic_shape(node.shape),
            role,
            node.label if role != "const" else f"c{len(ctx.buffers)}",
            node,
        )

    return rule


def _batch_size(ctx, node, views):
    return ctx.emit(Fill(ctx.temp(node), N))


# -- rules: views ---------------------------------------------------------------------------------------
def _broadcast(ctx, node, views):
    (src,) = views
    shape = symbolic_shape(node.shape)
    lead = len(shape) - len(src.shape)
    strides = [sympy.Integer(0)] * lead
    for dim, size, stride in zip(shape[lead:], src.shape, src.strides):
        strides.append(sympy.Integer(0) if size == 1 and dim != 1 else stride)
    return View(src.buffer, shape, tuple(strides), src.offset)


def _reshape(ctx, node, views):
    src = ctx.contiguous(views[0])
    return View(
        src.buffer, symbolic_shape(node.shape), View.whole(src.buffer, symbolic_shape(node.shape)).strides, src.offset
    )


def _transpose(ctx, node, views):
    (src,) = views
    perm = node.attrs["perm"]
    return View(src.buffer, tuple(src.shape[p] for p in perm), tuple(src.strides[p] for p in perm), src.offset)


def _slice(ctx, node, views):
    (src,) = views
    offset, strides = src.offset, []
    for (start, _stop, step), stride in zip(node.attrs["slices"], src.strides):
        offset = offset + start * stride
        strides.append(stride * step)
    return View(src.buffer, symbolic_shape(node.shape), tuple(strides), offset)


def _same(ctx, node, views):
    return views[0]


# -- rules: kernels -------------------------------------------------------------------------------------
def _map(ctx, node, views):
    fn = node.attrs["fn"]
    used = [i for i, s in enumerate(fn.symbols) if s in fn.body.free_symbols] or [0]
    if len(used) < fn.arity:  # operands the body ignores are neither read nor kept alive
        fn = ScalarFunction(fn.name, [fn.symbols[i] for i in used], fn.body)
        views = [views[i] for i in used]
    if node in ctx.fusible:
        ctx.deferred[node] = (list(views), fn)
        return None
    return ctx.emit(Map(ctx.temp(node), list(views), fn))


def _cast(ctx, node, views):
    return ctx.emit(Copy(ctx.temp(node), views[0]))


def _as_matrix(ctx, view: View):
    """``(row-major view, transposed?)`` for a matrix view, copying if neither layout fits."""
    rows, cols = view.shape
    if view.strides[1] == 1 and view.strides[0] != 0:
        return view, False
    if view.strides[0] == 1 and view.strides[1] != 0 and rows != 1:
        stored = View(view.buffer, (cols, rows), (view.strides[1], view.strides[0]), view.offset)
        return stored, True
    return ctx.contiguous(view), False


def _matmul(ctx, node, views):
    a, trans_a = _as_matrix(ctx, views[0])
    b, trans_b = _as_matrix(ctx, views[1])
    return ctx.emit(Matmul(ctx.temp(node), a, b, trans_a, trans_b, ctx.workspace(node.dtype)))


def _reduce(ctx, node, views):
    (src,) = views
    axes = node.attrs["axes"]
    if src is None:  # a map kept for fusion into this reduction
        fused = _map_reduce(ctx, node)
        if fused is not None:
            return fused
        src = ctx.emit(Map(ctx.temp(node.inputs[0]), *ctx.deferred.pop(node.inputs[0])))
    rank = len(src.shape)
    if list(axes) != list(range(axes[0], axes[0] + len(axes))):
        kept = [a for a in range(rank) if a not in axes]
        src = View(
            src.buffer,
            tuple(src.shape[p] for p in kept + list(axes)),
            tuple(src.strides[p] for p in kept + list(axes)),
            src.offset,
        )
        axes = tuple(range(len(kept), rank))
    src = ctx.contiguous(src)
    outer = sympy.Mul(*src.shape[: axes[0]])
    size = sympy.Mul(*src.shape[axes[0] : axes[-1] + 1])
    inner = sympy.Mul(*src.shape[axes[-1] + 1 :])
    return ctx.emit(Reduce(ctx.temp(node), src, node.op, outer, size, inner))


def _map_reduce(ctx, node):
    """One pass for ``sum(map(...))`` and ``max(map(...))`` over contiguous operands along a
    contiguous block of axes; None where that does not apply."""
    views, fn = ctx.deferred[node.inputs[0]]
    axes = node.attrs["axes"]
    if list(axes) != list(range(axes[0], axes[0] + len(axes))) or not all(v.is_contiguous() for v in views):
        return None
    del ctx.deferred[node.inputs[0]]
    shape = symbolic_shape(node.inputs[0].shape)
    outer = sympy.Mul(*shape[: axes[0]])
    size = sympy.Mul(*shape[axes[0] : axes[-1] + 1])
    inner = sympy.Mul(*shape[axes[-1] + 1 :])
    return ctx.emit(MapReduce(ctx.temp(node), list(views), fn, node.op, outer, size, inner))


def _unslice(ctx, node, views):
    out = ctx.temp(node)
    ctx.emit(Fill(out, sympy.Integer(0)))
    offset, strides = out.offset, []
    for (start, _stop, step), stride in zip(node.attrs["slices"], out.strides):
        offset = offset + start * stride
        strides.append(stride * step)
    ctx.emit(Copy(View(out.buffer, views[0].shape, tuple(strides), offset), views[0]))
    return out


def _concat(ctx, node, views):
    out = ctx.temp(node)
    axis, start = node.attrs["axis"], 0
    for src in views:
        width = int(src.shape[axis])
        offset = out.offset + start * out.strides[axis]
        shape = tuple(src.shape)
        ctx.emit(Copy(View(out.buffer, shape, out.strides, offset), src))
        start += width
    return out


def _gather(ctx, node, views):
    table, indices = ctx.contiguous(views[0]), ctx.contiguous(views[1])
    _check_indices(ctx, node.inputs[1], table.shape[0])
    row = sympy.Mul(*table.shape[1:])
    return ctx.emit(Gather(ctx.temp(node), table, indices, int(table.shape[0]), row))


def _scatter_add(ctx, node, views):
    values, indices = ctx.contiguous(views[0]), ctx.contiguous(views[1])
    out = ctx.temp(node)
    ctx.emit(Fill(out, sympy.Integer(0)))
    row = sympy.Mul(*out.shape[1:])
    return ctx.emit(ScatterAdd(out, values, indices, node.attrs["rows"], row))


def _one_hot(ctx, node, views):
    labels = ctx.contiguous(views[0])
    _check_indices(ctx, node.inputs[0], node.attrs["depth"])
    return ctx.emit(OneHot(ctx.temp(node), labels, node.attrs["depth"]))


def _random_uniform(ctx, node, views):
    return ctx.emit(RandomUniform(ctx.temp(node), views[0], node.attrs["seed"]))


def _check_indices(ctx, node: Tensor, bound: int):
    """Indices fed as inputs are range-checked in Python before the call, with a clear message."""
    if node.op == "input":
        ctx.index_checks.append((node.label, bound))


lowering_rules = {
    "input": _leaf("input"),
    "param": _leaf("param"),
    "const": _leaf("const"),
    "batch_size": _batch_size,
    "map": _map,
    "matmul": _matmul,
    "sum": _reduce,
    "max": _reduce,
    "broadcast": _broadcast,
    "reshape": _reshape,
    "transpose": _transpose,
    "slice": _slice,
    "unslice": _unslice,
    "concat": _concat,
    "gather": _gather,
    "scatter_add": _scatter_add,
    "one_hot": _one_hot,
    "cast": _cast,
    "stop_gradient": _same,
    "random_uniform": _random_uniform,
}
assert set(lowering_rules) == set(PRIMITIVES), "every primitive needs a lowering rule"


def lower(
    outputs: Sequence[Tensor], inputs: Sequence[Tensor], in_place: dict | None = None, *, reassociate: bool = True
) -> Program:
    """Lower the graph of ``outputs`` to a program.

    ``inputs`` fixes the order of the input buffers. ``in_place`` maps an output tensor to
    the input or param tensor whose buffer it overwrites (an optimizer's update); such a
    tensor must be made by an elementwise map, which is safe to run in place.
    ``reassociate`` says whether the code will be compiled with fast math, under which a
    sum may join a fused loop (see :func:`~codegen.fusion.fuse_elementwise`).
    """
    ctx = Lowering()
    in_place = dict(in_place or {})
    input_views = {}
    for node in inputs:
        input_views[node] = ctx.views[node] = lowering_rules[node.op](ctx, node, [])
    order = topological_order(list(outputs) + list(in_place))
    ctx.fusible = _maps_read_only_by_a_reduction(order, set(outputs) | set(in_place))
    for node in order:
        if node in ctx.views:
            continue
        rule = lowering_rules.get(node.op)
        if rule is None:
            raise MissingRuleError("lowering", node.op)
        ctx.views[node] = rule(ctx, node, [ctx.views[i] for i in node.inputs])
    _write_in_place(ctx, in_place)
    result = [_as_output(ctx, out, i) for i, out in enumerate(outputs)]
    program = Program(
        ctx.buffers, ctx.kernels, [input_views[i].buffer for i in inputs], result, _unique(ctx.index_checks)
    )
    fuse_elementwise(program, reductions=("sum",) if reassociate else ())
    fuse_epilogues(program)
    pair_products(program)
    program.verify()
    plan_memory(program)
    halve_rows(program)  # after the plan: a buffer that layers share row by row may be one
    program.verify()
    return program


def _maps_read_only_by_a_reduction(order, kept) -> set:
    readers: dict[Tensor, list[Tensor]] = {}
    for node in order:
        for i in node.inputs:
            readers.setdefault(i, []).append(node)
    return {
        node
        for node in order
        if node.op == "map"
        and node not in kept
        and len(readers.get(node, [])) == 1
        and readers[node][0].op in ("sum", "max")
    }


def _write_in_place(ctx, in_place):
    """Point the kernels that compute updates at the buffers they replace, and run them last.

    Every other kernel may read the old values, so updates go after all of them; among the
    updates, a kernel overwriting a buffer runs after the updates that still read it (an
    optimizer's ``w`` rule reads the old momentum that the momentum rule overwrites).
    """
    updates = []
    for new, old in in_place.items():
        target = ctx.views[old]
        kernel = next((k for k in ctx.kernels if k.out is ctx.views[new]), None)
        if isinstance(kernel, Map) and ctx.views[new].buffer.role == "temp" and _readers(ctx, kernel.out.buffer) == 0:
            ctx.kernels.remove(kernel)
            kernel.out = target
        else:
            kernel = Copy(target, ctx.views[new])
        updates.append(kernel)
    ctx.kernels.extend(_reads_before_writes(updates))


def _readers(ctx, buffer) -> int:
    return sum(1 for k in ctx.kernels if buffer in _reads(k))


def _reads_before_writes(updates: list) -> list:
    ordered, waiting = [], list(updates)
    while waiting:
        ready = [k for k in waiting if not any(k.out.buffer in _reads(other) for other in waiting if other is not k)]
        if not ready:
            raise ValueError("the in-place updates read each other's results in a cycle; compute them into temporaries")
        ordered.extend(ready)
        waiting = [k for k in waiting if k not in ready]
    return ordered


def _as_output(ctx, node, index) -> View:
    """Outputs get buffers of their own, filled with a copy where the result is a view."""
    view = ctx.views[node]
    out = ctx.buffer(node.dtype, view.shape, "output", f"out{index}")
    producer = next((k for k in ctx.kernels if k.out is view and view.buffer.role == "temp"), None)
    if producer is not None and sum(1 for k in ctx.kernels if k.out.buffer is view.buffer) == 1:
        view.buffer.role, view.buffer.name = "output", out.buffer.name
        ctx.buffers.remove(out.buffer)
        return view
    ctx.emit(Copy(out, view))
    return out


def _unique(items):
    return list(dict.fromkeys(items))


_reads = kernel_reads


def plan_memory(program: Program) -> None:
    """Share temporary buffers between tensors whose lifetimes do not overlap.

    A temporary is free after the last kernel reading it; a later temporary of the same
    dtype and size expression takes its slot. Kernels that write a buffer in several steps
    (fill then copy) keep it alive throughout, since liveness counts every access.
    """
    last_use: dict[Buffer, int] = {}
    first_write: dict[Buffer, int] = {}
    for step, kernel in enumerate(program.kernels):
        written = [view.buffer for view in kernel_results(kernel)]
        for buffer in [*_reads(kernel), *written]:
            last_use[buffer] = step
        for buffer in written:
            first_write.setdefault(buffer, step)
    free: dict[tuple, list[Buffer]] = {}
    replacement: dict[Buffer, Buffer] = {}
    releases: dict[int, list[Buffer]] = {}
    for buffer, step in last_use.items():
        if buffer.role == "temp":
            releases.setdefault(step, []).append(buffer)
    for step, kernel in enumerate(program.kernels):
        for buffer in [view.buffer for view in kernel_results(kernel)]:
            if buffer.role == "temp" and first_write.get(buffer) == step and buffer not in replacement:
                pool = free.get((buffer.dtype, buffer.size))
                if pool:
                    replacement[buffer] = pool.pop()
        for done in releases.get(step, []):
            free.setdefault((done.dtype, done.size), []).append(replacement.get(done, done))
    if not replacement:
        return
    for kernel in program.kernels:
        _move_views(kernel, replacement)
    program.buffers = [b for b in program.buffers if b not in replacement]
    for slot, buffer in enumerate(program.buffers):
        buffer.slot = slot


def _move_views(kernel, replacement: dict) -> None:
    """Point a kernel's views (and a fused kernel's members' views) at replacement buffers."""
    for name, value in list(vars(kernel).items()):
        if isinstance(value, View) and value.buffer in replacement:
            setattr(kernel, name, View(replacement[value.buffer], value.shape, value.strides, value.offset))
        elif name in ("inputs", "results"):  # lists of views: Map, MapReduce, FusedMap
            moved = [View(replacement.get(v.buffer, v.buffer), v.shape, v.strides, v.offset) for v in value]
            setattr(kernel, name, moved)
        elif name == "members":
            for member in value:
                _move_views(member, replacement)
        elif name in ("product", "epilogue", "first", "second"):  # MatmulMap, Concurrent
            _move_views(value, replacement)


def program_size(program: Program, batch: int) -> int:
    """Bytes of temporaries for one batch size (for reports)."""
    return sum(
        int(b.size.subs(N, batch)) * (4 if b.dtype == "float32" else 8) for b in program.buffers if b.role == "temp"
    )


__all__ = ["lower", "lowering_rules", "plan_memory", "program_size"]
