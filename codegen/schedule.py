"""Pairing independent products, so that each thread runs one of them whole.

A product split between two threads pays for it: each thread pulls the operand it shares
from the other core's cache, and the faster half waits for the slower. Two products that
do not depend on each other need neither: the caller computes one, the worker the other,
each from operands in its own cache where it can. Backpropagation through a stack of
layers has such pairs all the way down: layer l + 1's weight gradient ``h_lᵀ·δ_{l+1}`` (with
the optimizer's update of ``W_{l+1}`` as its epilogue) and ``δ_{l-1} = (δ_l·W_lᵀ) ⊙ f'`` need
nothing from each other. (Layer l's own weight gradient cannot join the latter: its update
writes the ``W_l`` that ``δ_l·W_lᵀ`` reads.) `pair_products` moves the first such partner of
each product up next to it and joins the two in a :class:`~codegen.kernels.Concurrent`.
"""

from __future__ import annotations

import sympy

from .kernels import (
    Buffer,
    Concurrent,
    Matmul,
    MatmulMap,
    N,
    Program,
    RowHalves,
    buffers_overlap,
    kernel_reads,
    kernel_results,
    may_move_past,
    product_of,
)

# Products are paired when, at this batch size, each has PAIR_MIN_FLOPS to PAIR_MAX_FLOPS
# and the smaller at least four fifths of the larger's; the generated code checks the same
# at the actual batch size (`worth_pairing`) and otherwise runs the two one after the other,
# each split as it would be alone. The time of a pair is that of its larger product on one
# thread: two weight gradients of 1 and 2 GFLOPs (the wide network's) ran 30% slower paired
# than split. From about 8 MFLOPs (160³) a split product runs as fast as NumPy's.
PAIR_MIN_FLOPS = 200_000
PAIR_MAX_FLOPS = 8_000_000
REPRESENTATIVE_BATCH = 64


def pair_products(program: Program) -> None:
    """Join each product with the first later product it can run beside, in place.

    The partner moves up to the product: nothing between them may write what it reads or
    touch what it writes, and neither of the two may read or write what the other writes.
    Its workspace becomes a buffer of its own, as both pack their operands at once.

    >>> import symbackprop as sb
    >>> from codegen.lower import lower
    >>> x, d = sb.input("x", (None, 64)), sb.input("d", (None, 64))
    >>> w = sb.param("w", (64, 64), init="glorot_uniform", seed=0)
    >>> [type(k).__name__ for k in lower([x.T @ d, d @ w.T], [x, d]).kernels]
    ['Concurrent']
    """
    position = 0
    while position < len(program.kernels):
        first = program.kernels[position]
        if _is_product(first):
            later = program.kernels[position + 1 :]
            partner = _partner(first, later)
            if partner is not None:
                _own_workspace(program, partner)
                program.kernels[position] = Concurrent(first, partner)
                program.kernels = [k for k in program.kernels if k is not partner]
        position += 1


def _is_product(kernel) -> bool:
    return isinstance(kernel, (Matmul, MatmulMap))


def flops(kernel, batch: int) -> int:
    """``2 M N K`` of a product (or of a product with an epilogue) at a batch size."""
    m, n, k = product_of(kernel).dims(batch)
    return 2 * m * n * k


def worth_pairing(first_flops: int, second_flops: int) -> bool:
    """Whether two products of these sizes run better one per thread than one after the other.

    >>> worth_pairing(524288, 524288), worth_pairing(524288, 262144), worth_pairing(100, 100)
    (True, False, False)
    """
    small, large = sorted((first_flops, second_flops))
    return small >= PAIR_MIN_FLOPS and large <= PAIR_MAX_FLOPS and 5 * small >= 4 * large


def _partner(first, later: list):
    """The first later product that may run beside ``first`` (see `pair_products`), or None."""
    first_writes = [r.buffer for r in kernel_results(first)]
    first_reads = kernel_reads(first)
    for index, candidate in enumerate(later):
        if not _is_product(candidate) or not _balanced(first, candidate):
            continue
        writes = [r.buffer for r in kernel_results(candidate)]
        reads = kernel_reads(candidate)
        if buffers_overlap(reads + writes, first_writes) or buffers_overlap(writes, first_reads):
            continue
        if all(may_move_past(between, reads, writes) for between in later[:index]):
            return candidate
    return None


def _balanced(first, second) -> bool:
    return worth_pairing(flops(first, REPRESENTATIVE_BATCH), flops(second, REPRESENTATIVE_BATCH))


def _own_workspace(program: Program, kernel) -> None:
    product = product_of(kernel)
    if product.work is None:
        return
    name = f"{product.work.name}_second"
    buffer = next((b for b in program.buffers if b.name == name), None)
    if buffer is None:
        buffer = Buffer(len(program.buffers), product.work.dtype, sympy.Integer(1), "workspace", name)
        program.buffers.append(buffer)
    product.work = buffer


# A layer joins a run of `halve_rows` when its product has more columns and terms than
# these: such products go to the matmul library (the program's own loops for narrower
# ones, see `codegen.emit`, take no row range).
HALVES_MIN_COLUMNS = 16
HALVES_MIN_TERMS = 4


def halve_rows(program: Program) -> None:
    """Join each run of two or more consecutive layers that keep their values in their rows
    into one :class:`~codegen.kernels.RowHalves`, in place.

    A deep stack's forward pass is such a run: ``h_l = tanh(h_{l-1}·W_l + b_l)`` computes row
    r of ``h_l`` from row r of ``h_{l-1}``, so each thread can take half of the batch through
    every layer, sharing only the weights, where a product split by columns makes each
    thread read the half of ``h_{l-1}`` that the other computed, at every layer. A layer
    qualifies when its product is ``a·b`` with the batch along the rows of ``a`` and of the
    result (more than `HALVES_MIN_COLUMNS` columns and `HALVES_MIN_TERMS` terms). The run
    holds while every buffer a member writes is seen by all members through one same view
    over the batch, and no member multiplies by a buffer that another writes.

    >>> import symbackprop as sb
    >>> from codegen.lower import lower
    >>> x = sb.input("x", (None, 64))
    >>> w1, w2 = (sb.param(f"w{i}", (64, 64), init="glorot_uniform", seed=i) for i in (1, 2))
    >>> [type(k).__name__ for k in lower([sb.tanh(sb.tanh(x @ w1) @ w2)], [x]).kernels]
    ['RowHalves']
    """
    kernels, position = program.kernels, 0
    while position < len(kernels):
        run = []
        for kernel in kernels[position:]:
            if not _row_layer(kernel) or not _rows_stay_apart([*run, kernel]):
                break
            run.append(kernel)
        if len(run) >= 2:
            kernels[position : position + len(run)] = [RowHalves(run)]
        position += 1
    program.kernels = kernels


def _row_layer(kernel) -> bool:
    if not isinstance(kernel, MatmulMap):
        return False
    product = kernel.product
    if product.trans_a or product.trans_b or product.out.shape[0] != N or product.a.shape[0] != N:
        return False
    cols, terms = product.out.shape[1], product.a.shape[1]
    if not all(isinstance(d, (int, sympy.Integer)) for d in (cols, terms)):
        return False
    return int(cols) > HALVES_MIN_COLUMNS and int(terms) > HALVES_MIN_TERMS


def _rows_stay_apart(run: list) -> bool:
    """Whether each thread may run every member of ``run`` on its own rows (see `halve_rows`)."""
    written = {id(r.buffer) for member in run for r in kernel_results(member)}
    views: dict[int, object] = {}
    for member in run:
        if id(member.product.b.buffer) in written:
            return False
        for view in [*kernel_results(member), *member.inputs]:
            if id(view.buffer) not in written:
                continue
            if view.shape[0] != N or views.setdefault(id(view.buffer), view) != view:
                return False
    return True


__all__ = [
    "HALVES_MIN_COLUMNS",
    "HALVES_MIN_TERMS",
    "PAIR_MAX_FLOPS",
    "PAIR_MIN_FLOPS",
    "flops",
    "halve_rows",
    "pair_products",
    "worth_pairing",
]
