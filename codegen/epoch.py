"""The native epoch loop: minibatches gathered from the whole data set and stepped, in one call.

``epoch(table, batch, count, order, sources, row_bytes, step, losses) -> status``: for each
minibatch, copy the rows ``order[start:start+n]`` of every source array into the step's
input buffers, set the step number, call ``run`` and add ``n`` times the loss to
``losses[0]``. Python only validates the data and makes the permutation.
"""

from __future__ import annotations

import llvmlite.ir as ir

from .builder import FoldingBuilder
from .emit import I8P, I32, I64, element_type, emit_loop
from .split import mark_as_written

F64 = ir.DoubleType()


def emit_epoch(
    module: ir.Module,
    run: ir.Function,
    input_slots: list[int],
    step_slot: int | None,
    loss_slot: int,
    loss_dtype: str,
    name: str = "epoch",
    row_bytes: list[int | None] | None = None,
) -> ir.Function:
    """Add the epoch loop over ``run`` to ``module``.

    ``row_bytes`` gives, per input, the bytes of one example when its shape fixes them (the
    caller checks the arrays' shapes): each row is then copied with a copy of that constant
    size, which LLVM writes as a few loads and stores, where a call of ``memcpy`` per row
    (two features of tiny's 32 examples: 64 calls per step) cost more than the copying.
    ``None`` entries take the size passed at run time."""
    i64p = I64.as_pointer()
    signature = ir.FunctionType(
        I32, [I8P.as_pointer(), I64, I64, i64p, I8P.as_pointer(), i64p, F64.as_pointer(), F64.as_pointer()]
    )
    fn = ir.Function(module, signature, name=name)
    table, batch, count, order, sources, row_bytes_arg, step_counter, losses = fn.args
    fixed_widths = list(row_bytes) if row_bytes is not None else [None] * len(input_slots)
    memcpy = module.declare_intrinsic("llvm.memcpy", [I8P, I8P, I64])
    b = FoldingBuilder(fn.append_basic_block("entry"))
    status = b.alloca(I32)
    b.store(ir.Constant(I32, 0), status)

    def loop(start, stop, step, body):
        emit_loop(b, start, stop, lambda i, carried: body(i) or [], step=step)

    def minibatch(start):
        left = b.sub(count, start)
        n = b.select(b.icmp_signed("<", left, batch), left, batch)
        for k, slot in enumerate(input_slots):
            dst = b.load(b.gep(table, [ir.Constant(I64, slot)]))
            src = b.load(b.gep(sources, [ir.Constant(I64, k)]))
            known = fixed_widths[k]
            width = (
                ir.Constant(I64, known) if known is not None else b.load(b.gep(row_bytes_arg, [ir.Constant(I64, k)]))
            )

            def copy_row(i, dst=dst, src=src, width=width):
                row = b.load(b.gep(order, [b.add(start, i)]))
                b.call(
                    memcpy,
                    [
                        b.gep(dst, [b.mul(i, width)]),
                        b.gep(src, [b.mul(row, width)]),
                        width,
                        ir.Constant(ir.IntType(1), 0),
                    ],
                )

            loop(ir.Constant(I64, 0), n, ir.Constant(I64, 1), copy_row)
        counter = b.fadd(b.load(step_counter), ir.Constant(F64, 1.0))
        b.store(counter, step_counter)
        if step_slot is not None:
            step_at = b.bitcast(b.load(b.gep(table, [ir.Constant(I64, step_slot)])), F64.as_pointer())
            b.store(counter, step_at)
        result = b.call(run, [table, n])
        b.store(b.or_(b.load(status), result), status)
        loss_at = b.bitcast(b.load(b.gep(table, [ir.Constant(I64, loss_slot)])), element_type(loss_dtype).as_pointer())
        loss = b.load(loss_at)
        loss = b.fpext(loss, F64) if loss_dtype == "float32" else loss
        b.store(b.fadd(b.load(losses), b.fmul(loss, b.sitofp(n, F64))), losses)

    loop(ir.Constant(I64, 0), count, batch, minibatch)
    b.ret(b.load(status))
    return mark_as_written(fn)  # its loops copy rows and call run: nothing to vectorise
