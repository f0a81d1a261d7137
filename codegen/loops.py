"""Elementwise loop kernels over contiguous buffers: ``out[i] = f(in0[i], in1[i], ...)``.

The smallest useful kernel shape, used to test and benchmark the vector math and the JIT.
With ``vector_width`` the body works on explicit ``<W x T>`` vectors with a scalar tail;
without it the body is scalar and LLVM's loop vectorizer does the widening.
"""

from __future__ import annotations

from collections.abc import Callable

import llvmlite.ir as ir

__all__ = ["float_dtype_name", "llvm_float_type", "emit_map_kernel", "set_loop_hints"]

_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


class _LoopID(ir.MDValue):
    """A distinct loop identifier node ``!n = !{!n, !hint, ...}``, as ``llvm.loop`` requires.

    It refers to itself, so it is compared and hashed by identity (the base class hashes
    its operands, which would recurse).
    """

    def __init__(self, module: ir.Module, hints: list[ir.MDValue]):
        super().__init__(module, [], name=str(len(module.metadata)))
        self.operands = (self, *hints)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def set_loop_hints(branch: ir.Instruction, hints: dict[str, bool | int | None]) -> None:
    """Give the loop whose back edge is ``branch`` LLVM's loop hints (``llvm.loop`` metadata):
    each a name and a bool (as i1), an int (as i32) or None (the name alone).

    >>> fn = ir.Function(ir.Module(), ir.FunctionType(ir.VoidType(), []), "spin")
    >>> b = ir.IRBuilder(fn.append_basic_block())
    >>> set_loop_hints(b.branch(b.block), {"llvm.loop.unroll.count": 4, "llvm.loop.vectorize.enable": False})
    >>> for line in str(fn.module).splitlines()[-3:]:
    ...     print(line)
    !0 = !{ !"llvm.loop.unroll.count", i32 4 }
    !1 = !{ !"llvm.loop.vectorize.enable", i1 0 }
    !2 = !{ !2, !0, !1 }
    """
    module = branch.parent.parent.module
    nodes = []
    for name, value in hints.items():
        operands = [ir.MetaDataString(module, name)]
        if isinstance(value, bool):
            operands.append(ir.Constant(_I1, int(value)))
        elif value is not None:
            operands.append(ir.Constant(_I32, value))
        nodes.append(module.add_metadata(operands))
    branch.set_metadata("llvm.loop", _LoopID(module, nodes))


# The floating-point dtypes the code generator emits: LLVM type and bytes per element.
FLOAT_DTYPES = {"float32": (ir.FloatType, 4), "float64": (ir.DoubleType, 8)}


def float_dtype_name(dtype) -> str:
    """``"float32"`` or ``"float64"`` for a dtype given by name or as NumPy would take it.

    The names themselves are read without importing NumPy, which the kernel library's
    helper process does not otherwise need (0.07 s of its start).

    Examples
    --------
    >>> import numpy as np
    >>> float_dtype_name("float32"), float_dtype_name(np.float64), float_dtype_name("f4")
    ('float32', 'float64', 'float32')
    """
    if not (isinstance(dtype, str) and dtype in FLOAT_DTYPES):
        import numpy  # only for what is not a plain name

        dtype = numpy.dtype(dtype).name
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def llvm_float_type(dtype) -> ir.Type:
    """Return the LLVM type of a floating dtype (float32 or float64, see `float_dtype_name`).

    Examples
    --------
    >>> import numpy as np
    >>> str(llvm_float_type("float32")), str(llvm_float_type(np.float64))
    ('float', 'double')
    """
    return FLOAT_DTYPES[float_dtype_name(dtype)][0]()


def emit_map_kernel(
    module: ir.Module,
    name: str,
    body: Callable[..., ir.Value],
    dtype,
    arity: int = 1,
    vector_width: int | None = None,
) -> ir.Function:
    """Add ``void name(T* out, T* in0, ..., i64 n)`` applying ``body`` elementwise.

    Parameters
    ----------
    module : llvmlite.ir.Module
        Module to add the function to.
    name : str
        Function name.
    body : callable
        ``body(builder, *values) -> value``, called with scalar values and, when
        ``vector_width`` is given, also with vector values.
    dtype : numpy dtype or str
        float32 or float64, for every buffer.
    arity : int
        Number of input buffers.
    vector_width : int, optional
        Lanes of the explicit vector loop; None leaves widening to LLVM.

    Returns
    -------
    llvmlite.ir.Function

    Examples
    --------
    >>> m = ir.Module()
    >>> fn = emit_map_kernel(m, "double_it", lambda b, x: b.fadd(x, x), "float64")
    >>> [str(a.type) for a in fn.args]
    ['double*', 'double*', 'i64']
    """
    if arity < 1:
        raise ValueError(f"arity must be at least 1, got {arity}")
    if vector_width is not None and (vector_width < 2 or vector_width & (vector_width - 1)):
        raise ValueError(f"vector_width must be a power of two >= 2, got {vector_width}")
    scalar = llvm_float_type(dtype)
    align = FLOAT_DTYPES[float_dtype_name(dtype)][1]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [scalar.as_pointer()] * (arity + 1) + [_I64]), name=name)
    out, *inputs, n = fn.args
    entry = fn.append_basic_block("entry")
    builder = ir.IRBuilder(entry)
    start = ir.Constant(_I64, 0)
    if vector_width is not None:
        start = _emit_loop(builder, fn, body, out, inputs, n, start, scalar, align, vector_width)
    _emit_loop(builder, fn, body, out, inputs, n, start, scalar, align, 1)
    builder.ret_void()
    return fn


def _emit_loop(builder, fn, body, out, inputs, n, start, scalar, align, width) -> ir.Value:
    """Emit one counted loop stepping by ``width``; return the index it stops at."""
    origin = builder.block
    cond = fn.append_basic_block(f"cond{width}")
    loop = fn.append_basic_block(f"body{width}")
    done = fn.append_basic_block(f"done{width}")
    builder.branch(cond)
    builder.position_at_end(cond)
    index = builder.phi(_I64, name=f"i{width}")
    index.add_incoming(start, origin)
    # Run while index + width <= n, which for width 1 is index < n.
    fits = builder.icmp_signed("<=", builder.add(index, ir.Constant(_I64, width)), n)
    builder.cbranch(fits, loop, done)
    builder.position_at_end(loop)
    ty = scalar if width == 1 else ir.VectorType(scalar, width)
    pointers = [builder.bitcast(builder.gep(p, [index]), ty.as_pointer()) for p in (out, *inputs)]
    values = [builder.load(p, align=align) for p in pointers[1:]]
    builder.store(body(builder, *values), pointers[0], align=align)
    index.add_incoming(builder.add(index, ir.Constant(_I64, width)), builder.block)
    builder.branch(cond)
    builder.position_at_end(done)
    return index
