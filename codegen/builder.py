"""An IR builder that writes no integer identities.

Index arithmetic is emitted generically, as ``offset + i * stride``, and offsets of 0 and
strides of 1 are the common case: ``add i64 0, x`` and ``mul i64 x, 1`` were a tenth of
the mnist step's instructions, each printed by llvmlite, parsed by LLVM and removed again
by its first InstCombine. `FoldingBuilder` gives their value instead of an instruction.
"""

from __future__ import annotations

import operator

import llvmlite.ir as ir

__all__ = ["FoldingBuilder"]


def _integer(value: ir.Value) -> int | None:
    """The value of an integer constant, or None for anything else."""
    if isinstance(value, ir.Constant) and isinstance(value.type, ir.IntType) and type(value.constant) is int:
        return value.constant
    return None


def _wrapped(value: int, bits: int) -> int:
    """``value`` as a ``bits``-wide two's complement integer, as LLVM's arithmetic wraps."""
    half = 1 << (bits - 1)
    return (value + half) % (1 << bits) - half


class FoldingBuilder(ir.IRBuilder):
    """`llvmlite.ir.IRBuilder` whose integer ``add``, ``sub`` and ``mul`` fold constants
    and identities (``x + 0``, ``x - 0``, ``x * 1``, ``x * 0``) instead of emitting them.

    Floating-point operations are untouched (``x + 0.0`` is not ``x`` for ``x = -0.0``).

    Examples
    --------
    >>> i64 = ir.IntType(64)
    >>> fn = ir.Function(ir.Module(), ir.FunctionType(i64, [i64]), "f")
    >>> b = FoldingBuilder(fn.append_basic_block())
    >>> x = fn.args[0]
    >>> b.add(ir.Constant(i64, 0), b.mul(x, ir.Constant(i64, 1))) is x
    True
    >>> b.mul(ir.Constant(i64, 3), ir.Constant(i64, 4))
    <ir.Constant type='i64' value=12>
    >>> str(b.add(x, ir.Constant(i64, 2))).strip()
    '%".4" = add i64 %".1", 2'
    """

    def add(self, lhs, rhs, name=""):
        folded = _folded(operator.add, lhs, rhs, identity=0, commutes=True)
        return super().add(lhs, rhs, name) if folded is None else folded

    def sub(self, lhs, rhs, name=""):
        folded = _folded(operator.sub, lhs, rhs, identity=0, commutes=False)
        return super().sub(lhs, rhs, name) if folded is None else folded

    def mul(self, lhs, rhs, name=""):
        folded = _folded(operator.mul, lhs, rhs, identity=1, commutes=True, absorbing=0)
        return super().mul(lhs, rhs, name) if folded is None else folded


def _folded(op, lhs, rhs, *, identity: int, commutes: bool, absorbing: int | None = None) -> ir.Value | None:
    """``op(lhs, rhs)`` without an instruction where integer algebra allows, else None."""
    if not isinstance(lhs.type, ir.IntType):
        return None
    left, right = _integer(lhs), _integer(rhs)
    if left is not None and right is not None:
        return ir.Constant(lhs.type, _wrapped(op(left, right), lhs.type.width))
    if absorbing is not None and absorbing in (left, right):
        return ir.Constant(lhs.type, absorbing)
    if right == identity:
        return lhs
    if commutes and left == identity:
        return rhs
    return None
