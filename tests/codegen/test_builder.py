"""The folding IR builder: integer identities and constants give values, everything else an instruction."""

import ctypes

import llvmlite.ir as ir
import pytest

from codegen.builder import FoldingBuilder
from codegen.jit import compile_ir

I32, I64, F64 = ir.IntType(32), ir.IntType(64), ir.DoubleType()


def _builder(*arg_types):
    fn = ir.Function(ir.Module(), ir.FunctionType(arg_types[0], arg_types), "f")
    return FoldingBuilder(fn.append_basic_block()), fn.args


@pytest.mark.parametrize(
    "op, left, right, expected",
    [
        ("add", 2, 3, 5),
        ("sub", 2, 3, -1),
        ("mul", -4, 5, -20),
        ("add", 2**63 - 1, 1, -(2**63)),
        ("mul", 2**32, 2**32, 0),
    ],
)
def test_constants_fold_and_wrap_as_llvm_does(op, left, right, expected):
    b, _ = _builder(I64)
    value = getattr(b, op)(ir.Constant(I64, left), ir.Constant(I64, right))
    assert isinstance(value, ir.Constant) and value.constant == expected
    assert not b.block.instructions


def test_identities_give_the_other_operand():
    b, (x,) = _builder(I64)
    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
    assert b.add(x, zero) is x and b.add(zero, x) is x and b.sub(x, zero) is x
    assert b.mul(x, one) is x and b.mul(one, x) is x
    assert b.mul(x, zero).constant == 0 and b.mul(zero, x).constant == 0
    assert not b.block.instructions


def test_everything_else_is_an_instruction():
    b, (x,) = _builder(I32)
    zero = ir.Constant(I32, 0)
    b.sub(zero, x)  # 0 - x is a negation, not x
    b.add(x, ir.Constant(I32, 2))
    b.mul(x, x)
    assert [i.opname for i in b.block.instructions] == ["sub", "add", "mul"]
    f, (y,) = _builder(F64)
    f.fadd(y, ir.Constant(F64, 0.0))  # x + 0.0 is not x for x = -0.0
    f.fmul(y, ir.Constant(F64, 1.0))
    assert len(f.block.instructions) == 2


def test_folded_code_computes_what_it_would_have():
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(I64, [I64, I64]), "offset")
    b = FoldingBuilder(fn.append_basic_block())
    x, stride = fn.args
    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
    # offset 0 + x * 1 + (3 * 4) * stride, as generic index arithmetic writes it
    b.ret(b.add(b.add(zero, b.mul(x, one)), b.mul(b.mul(ir.Constant(I64, 3), ir.Constant(I64, 4)), stride)))
    compiled = compile_ir(module, use_cache=False)
    offset = compiled.function("offset", ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    assert offset(5, 7) == 5 + 12 * 7
    assert str(fn).count(" = ") == 2  # the multiply by the stride and the add
