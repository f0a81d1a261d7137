"""Multi-output fusion: a map whose every reader is elementwise over the same elements runs
in one loop with its readers, and its values stay in registers.

``sum(x·sigmoid(x))`` and its gradient read ``sigmoid(x)`` twice, once in the sum and once
in the gradient map. Lowered kernel by kernel, that is three passes over memory and a
temporary as large as ``x``; fused, it is one pass that computes each sigmoid once, adds to
the sum and stores the gradient. The rule applies to any producer :class:`Map` writing a
temporary whose readers are all arithmetic maps or full sums over the same contiguous
elements, as long as moving them next to each other changes no other kernel's reads or
writes.
"""

from __future__ import annotations

import sympy

from .kernels import (
    Buffer,
    FusedMap,
    Map,
    MapReduce,
    Matmul,
    MatmulMap,
    Program,
    Reduce,
    View,
    buffers_overlap,
    kernel_reads,
    kernel_results,
    may_move_past,
)


def fuse_elementwise(program: Program, reductions: tuple[str, ...] = ("sum",)) -> None:
    """Fuse every eligible producer map with its readers, in place; drops the temporaries
    that no longer go to memory and renumbers the buffers' slots.

    Only the reductions named in ``reductions`` may join a fused loop: LLVM vectorises a
    loop with a sum only when it may reassociate (fast math), and a loop with a maximum not
    at all, and one scalar member would leave the whole loop scalar (a maximum fused with a
    tanh map ran ten times slower than the two apart).

    :func:`codegen.lower.lower` calls it on every program:

    >>> import symbackprop as sb
    >>> from codegen.lower import lower
    >>> x = sb.input("x", (None,))
    >>> s = sb.sigmoid(x)
    >>> [type(k).__name__ for k in lower([(x * s).sum(), s * (1 - s)], [x]).kernels]
    ['Map', 'MapReduce', 'FusedMap']
    """
    kept: list[Buffer] = []
    while (group := _next_group(program.kernels, reductions)) is not None:
        fused = _fused(group)
        kept += fused.kept
        last = max(_position(program.kernels, k) for k in group)
        program.kernels[last] = fused
        program.kernels = [k for k in program.kernels if all(k is not m for m in group)]
    if kept:
        program.buffers = [b for b in program.buffers if all(b is not k for k in kept)]
        for slot, buffer in enumerate(program.buffers):
            buffer.slot = slot


def _next_group(kernels: list, reductions: tuple[str, ...]) -> list | None:
    """A producer map and its readers (in program order), fusible into one loop; or None."""
    for start, producer in enumerate(kernels):
        if not isinstance(producer, Map) or producer.out.buffer.role != "temp":
            continue
        temp = producer.out.buffer
        users = [k for k in kernels if any(b is temp for b in _touched(k))]
        readers = [k for k in users if k is not producer]
        if not readers or any(any(r.buffer is temp for r in kernel_results(k)) for k in readers):
            continue  # nothing to fuse with, or another kernel also writes the temporary
        group = [producer, *readers]
        size = _elements(producer.out)
        if not all(_elementwise(k, size, reductions) for k in group) or not all(map(_cheap, readers)):
            continue
        if _movable(kernels, group, temp, start):
            return group
    return None


def _cheap(kernel) -> bool:
    """Whether a reader's body is arithmetic only: no function application and no power
    but integer ones. One loop evaluating two transcendental functions per element ran
    slower than two loops evaluating one each (tanh, then exp of it: 1.9 against 2.1 ms
    for 10⁶ float32), while the memory pass it saves costs a tenth of a millisecond."""
    body = getattr(kernel, "fn", None)
    if body is None:  # a plain reduction
        return True
    body = body.body
    return not body.atoms(sympy.Function) and all(p.exp.is_Integer for p in body.atoms(sympy.Pow))


def _elementwise(kernel, size, reductions: tuple[str, ...]) -> bool:
    """A map over ``size`` contiguous elements, or a reduction (one of ``reductions``) of
    such elements, or of a map of them, to one value."""
    if isinstance(kernel, Map):
        views = [kernel.out, *kernel.inputs]
    elif isinstance(kernel, (Reduce, MapReduce)) and kernel.op in reductions and kernel.outer == kernel.inner == 1:
        if not _same(kernel.size, size) or not _same(_elements(kernel.out), 1):
            return False
        views = member_inputs(kernel)
    else:
        return False
    return all(_same(_elements(v), size) and v.is_contiguous() for v in views)


def member_inputs(kernel) -> list[View]:
    """The views a member of a fused kernel reads: a map's inputs, a reduction's source.

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None,))
    >>> (fused,) = sb.compile([sb.tanh(x).sum(), sb.tanh(x) * 2], inputs=[x]).program.kernels
    >>> [[str(v) for v in member_inputs(m)] for m in fused.members]
    [['x[n]'], ['t1[n]'], ['t1[n]']]
    """
    return [kernel.src] if isinstance(kernel, Reduce) else list(kernel.inputs)


def _movable(kernels: list, group: list, temp: Buffer, start: int) -> bool:
    """Whether the group can run as one kernel at its last member's place: the members read
    nothing another member writes (the temporary aside), and no kernel between them writes
    what they read or write, or reads what they write."""
    written = [r.buffer for k in group for r in kernel_results(k)]
    read = [b for k in group for b in kernel_reads(k) if b is not temp]
    if len({id(b) for b in written}) < len(written) or buffers_overlap(written, read):
        return False
    end = max(_position(kernels, k) for k in group)
    between = [other for other in kernels[start + 1 : end] if all(other is not k for k in group)]
    return all(may_move_past(other, read, written) for other in between)


def _fused(group: list) -> FusedMap:
    temp = group[0].out.buffer
    inputs = list(dict.fromkeys(v for k in group for v in member_inputs(k) if v.buffer is not temp))
    results = [k.out for k in group[1:]]
    return FusedMap(inputs, results, list(group), [temp], _elements(group[0].out))


def fuse_epilogues(program: Program) -> None:
    """Join each product with the map that first reads its result, where that map reads it
    element for element, into a :class:`~codegen.kernels.MatmulMap`, in place.

    A layer's ``tanh(x·W + b)``, its gradient's ``(δ·Wᵀ) ⊙ (1 − h²)`` and an optimizer's
    ``W − η·(hᵀ·δ)`` then run in the threads that computed the product, each on its block
    while the block is in that core's cache, instead of on one thread after the product,
    reading the other core's half. The map moves up to the product: nothing between them
    may write what the map reads, or touch what it writes.

    >>> import symbackprop as sb
    >>> from codegen.lower import lower
    >>> x = sb.input("x", (None, 8))
    >>> w = sb.param("w", (8, 8), init="glorot_uniform", seed=0)
    >>> [type(k).__name__ for k in lower([sb.tanh(x @ w)], [x]).kernels]
    ['MatmulMap']
    """
    position = 0
    while position < len(program.kernels):
        product = program.kernels[position]
        if isinstance(product, Matmul):
            later = program.kernels[position + 1 :]
            epilogue = _epilogue(product, later)
            if epilogue is not None:
                program.kernels[position] = MatmulMap(product, epilogue)
                program.kernels = [k for k in program.kernels if k is not epilogue]
        position += 1


def _epilogue(product: Matmul, later: list) -> Map | None:
    """The map that can run on the product's blocks (see `fuse_epilogues`), or None."""
    result = product.out.buffer
    index = next((i for i, k in enumerate(later) if any(b is result for b in _touched(k))), None)
    if index is None or not isinstance(later[index], Map):
        return None
    epilogue = later[index]
    views = [epilogue.out, *epilogue.inputs]
    if len(product.out.shape) != 2 or not all(_same_shape(v.shape, product.out.shape) for v in views):
        return None
    if any(v.buffer is result and v != product.out for v in epilogue.inputs):
        return None  # it reads the product's result at other elements than its own
    if buffers_overlap([epilogue.out.buffer], [product.a.buffer, product.b.buffer]):
        return None  # one thread's block of the map would overwrite what another thread multiplies
    reads, writes = [v.buffer for v in epilogue.inputs], [epilogue.out.buffer]
    return epilogue if all(may_move_past(between, reads, writes) for between in later[:index]) else None


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))


def _touched(kernel) -> list[Buffer]:
    return kernel_reads(kernel) + [r.buffer for r in kernel_results(kernel)]


def _position(kernels: list, kernel) -> int:
    return next(i for i, k in enumerate(kernels) if k is kernel)


def _elements(view: View) -> sympy.Expr:
    return sympy.Mul(*view.shape) if view.shape else sympy.Integer(1)


def _same(a, b) -> bool:
    return sympy.expand(sympy.sympify(a) - sympy.sympify(b)) == 0


__all__ = ["fuse_elementwise", "fuse_epilogues", "member_inputs"]
