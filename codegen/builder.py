"""An IR builder that writes no integer identities.

Index arithmetic is emitted generically, as ``offset + i * stride``, and offsets of 0 and
strides of 1 are the common case: ``add i64 0, x`` and ``mul i64 x, 1`` were a tenth of
the mnist step's instructions, each printed by llvmlite, parsed by LLVM and removed again
by its first InstCombine. `FoldingBuilder` gives their value instead of an instruction.
Code compiled as written (`codegen.split`) meets no InstCombine at all: there a division
by a size known only as an instruction (``select true, 16, 1``) stayed a division.
"""

from __future__ import annotations

import operator

import llvmlite.ir as ir

__all__ = ["FoldingBuilder", "constant_value"]


def constant_value(value: ir.Value) -> int | None:
    """The value of an integer constant, or None for anything else.

    >>> constant_value(ir.Constant(ir.IntType(64), 5)), constant_value(ir.Constant(ir.DoubleType(), 5.0))
    (5, None)
    """
    if isinstance(value, ir.Constant) and isinstance(value.type, ir.IntType) and type(value.constant) is int:
        return value.constant
    return None


def _wrapped(value: int, bits: int) -> int:
    """``value`` as a ``bits``-wide two's complement integer, as LLVM's arithmetic wraps."""
    half = 1 << (bits - 1)
    return (value + half) % (1 << bits) - half


class FoldingBuilder(ir.IRBuilder):
    """`llvmlite.ir.IRBuilder` whose integer ``add``, ``sub``, ``mul`` and ``sdiv`` fold
    constants and identities (``x + 0``, ``x - 0``, ``x * 1``, ``x * 0``, ``x / 1``) instead
    of emitting them, as do signed comparisons of constants, ``and`` and ``or`` of a
    constant truth value, and a ``select`` on one.

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
    >>> b.select(b.icmp_signed(">", ir.Constant(i64, 16), ir.Constant(i64, 0)), x, ir.Constant(i64, 1)) is x
    True
    >>> b.sdiv(ir.Constant(i64, -7), ir.Constant(i64, 2))  # rounds toward zero, as LLVM does
    <ir.Constant type='i64' value=-3>
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

    def sdiv(self, lhs, rhs, name=""):
        folded = None if constant_value(rhs) == 0 else _folded(_divided, lhs, rhs, identity=1, commutes=False)
        return super().sdiv(lhs, rhs, name) if folded is None else folded

    def icmp_signed(self, cmpop, lhs, rhs, name=""):
        left, right = constant_value(lhs), constant_value(rhs)
        if left is None or right is None:
            return super().icmp_signed(cmpop, lhs, rhs, name)
        return ir.Constant(_I1, int(_COMPARISONS[cmpop](left, right)))

    def and_(self, lhs, rhs, name=""):
        folded = _truth_folded(lhs, rhs, identity=1)
        return super().and_(lhs, rhs, name) if folded is None else folded

    def or_(self, lhs, rhs, name=""):
        folded = _truth_folded(lhs, rhs, identity=0)
        return super().or_(lhs, rhs, name) if folded is None else folded

    def select(self, cond, lhs, rhs, name="", flags=()):
        truth = constant_value(cond) if cond.type == _I1 else None
        if truth is None:
            return super().select(cond, lhs, rhs, name, flags)
        return lhs if truth else rhs


_I1 = ir.IntType(1)
_COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    ">": operator.gt,
}


def _divided(left: int, right: int) -> int:
    """``left / right`` rounded toward zero, as LLVM's ``sdiv``."""
    quotient = abs(left) // abs(right)
    return quotient if (left < 0) == (right < 0) else -quotient


def _truth_folded(lhs, rhs, identity: int) -> ir.Value | None:
    """``lhs and rhs`` (``identity`` 1) or ``lhs or rhs`` (0) of truth values (``i1``) where
    one is a constant, else None."""
    if lhs.type != _I1:
        return None
    for constant, other in ((constant_value(lhs), rhs), (constant_value(rhs), lhs)):
        if constant is not None:
            return other if constant == identity else ir.Constant(_I1, constant)
    return None


def _folded(op, lhs, rhs, *, identity: int, commutes: bool, absorbing: int | None = None) -> ir.Value | None:
    """``op(lhs, rhs)`` without an instruction where integer algebra allows, else None."""
    if not isinstance(lhs.type, ir.IntType):
        return None
    left, right = constant_value(lhs), constant_value(rhs)
    if left is not None and right is not None:
        return ir.Constant(lhs.type, _wrapped(op(left, right), lhs.type.width))
    if absorbing is not None and absorbing in (left, right):
        return ir.Constant(lhs.type, absorbing)
    if right == identity:
        return lhs
    if commutes and left == identity:
        return rhs
    return None
