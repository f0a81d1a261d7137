"""SymPy expressions to LLVM IR: scalar bodies of maps, and integer size expressions.

``body_rules`` maps a SymPy class to an emitter ``(emit, expr) -> value``; a body is first
put through ``sympy.cse`` so shared subexpressions are computed once. Transcendental
functions come from :mod:`codegen.vecmath` (inline, vectorisable); the few without an
inline version call the C library, which the JIT resolves in the running process.
"""

from __future__ import annotations

import functools
import math

import llvmlite.ir as ir
import sympy

from symbackprop.scalar import sigmoid, softplus

from . import vecmath

I64 = ir.IntType(64)


class UnsupportedExpressionError(NotImplementedError):
    """A body uses a SymPy function the code generator has no rule for."""


# Functions without an inline version: called from the C library (double and float names).
LIBM = {
    sympy.sin: ("sin", "sinf"),
    sympy.cos: ("cos", "cosf"),
    sympy.tan: ("tan", "tanf"),
    sympy.asin: ("asin", "asinf"),
    sympy.acos: ("acos", "acosf"),
    sympy.atan: ("atan", "atanf"),
    sympy.sinh: ("sinh", "sinhf"),
    sympy.cosh: ("cosh", "coshf"),
    sympy.asinh: ("asinh", "asinhf"),
    sympy.atanh: ("atanh", "atanhf"),
    sympy.erf: ("erf", "erff"),
    sympy.erfc: ("erfc", "erfcf"),
}


def calls_libm(expr: sympy.Expr) -> bool:
    """Whether a body calls a function of the C library (`LIBM`), which takes one scalar at a
    time: such a body cannot be emitted on vectors.

    >>> x = sympy.Symbol("x")
    >>> calls_libm(sympy.tanh(x) + 1), calls_libm(sympy.sin(x))
    (False, True)
    """
    return any(type(f) in LIBM for f in expr.atoms(sympy.Function))


# Fast-math flags for arithmetic: contraction into FMA and reassociation (which lets LLVM
# vectorise reductions). Strict mode (flags=()) keeps IEEE order for gradient checks.
FAST = ("contract", "reassoc", "nsz")


class ExprEmitter:
    """Emits SymPy expressions with ``builder``, symbols bound to IR values in ``env``."""

    def __init__(self, builder: ir.IRBuilder, ty: ir.Type, env: dict, flags=FAST):
        self.builder, self.ty, self.env, self.flags = builder, ty, dict(env), tuple(flags)

    def const(self, value: float) -> ir.Constant:
        return ir.Constant(self.ty, float(value))

    def __call__(self, expr: sympy.Expr) -> ir.Value:
        replacements, (reduced,) = sympy.cse([expr], symbols=sympy.numbered_symbols("_cse"))
        for symbol, value in replacements:
            self.env[symbol] = self.emit(value)
        return self.emit(reduced)

    def emit(self, expr) -> ir.Value:
        if expr in self.env:
            return self.env[expr]
        if expr.is_Number or expr in (sympy.pi, sympy.E):
            return self.const(float(expr))
        for cls in type(expr).__mro__:
            rule = body_rules.get(cls)
            if rule is not None:
                return rule(self, expr)
        if type(expr) in LIBM:
            return self.libm(type(expr), expr.args[0])
        raise UnsupportedExpressionError(f"the code generator has no rule for {type(expr).__name__} in {expr}")

    # -- helpers ----------------------------------------------------------------------------------
    def fold(self, op, args):
        values = [self.emit(a) for a in args]
        result = values[0]
        for value in values[1:]:
            result = op(result, value, flags=self.flags)
        return result

    def select(self, condition, a, b):
        return self.builder.select(condition, a, b)

    def compare(self, op, a, b):
        return self.builder.fcmp_ordered(op, a, b) if op != "!=" else self.builder.fcmp_unordered(op, a, b)

    def libm(self, function, arg):
        double, single = LIBM[function]
        name = double if self.ty == ir.DoubleType() else single
        module = self.builder.module
        callee = module.globals.get(name)
        if callee is None:
            callee = ir.Function(module, ir.FunctionType(self.ty, [self.ty]), name=name)
            # Pure as far as this code is concerned (errno is never read): LLVM may then hoist
            # a call on loop-invariant values, such as cos of the step number in a learning-rate
            # schedule, out of the elementwise loop instead of calling it once per element.
            callee.attributes.add("readnone")
            callee.attributes.add("nounwind")
        return self.builder.call(callee, [self.emit(arg)])

    def intrinsic(self, name, *values):
        """A call of ``llvm.<name>`` overloaded on this emitter's type (a float or a vector)."""
        module = self.builder.module
        full = f"llvm.{name}.{vecmath.intrinsic_suffix(self.ty)}"
        fn = module.globals.get(full)
        if fn is None:
            fn = ir.Function(module, ir.FunctionType(self.ty, [self.ty] * len(values)), name=full)
        return self.builder.call(fn, list(values))


def _mul(e: ExprEmitter, expr):
    numerator, denominator = [], []
    for factor in expr.args:
        if factor.is_Pow and factor.exp.is_Number and factor.exp < 0:
            denominator.append(factor.base ** (-factor.exp))
        else:
            numerator.append(factor)
    top = e.fold(e.builder.fmul, numerator) if numerator else e.const(1.0)
    if not denominator:
        return top
    return e.builder.fdiv(top, e.fold(e.builder.fmul, denominator), flags=e.flags)


def _pow(e: ExprEmitter, expr):
    base, exponent = expr.args
    if exponent == sympy.S.Half:
        return vecmath.sqrt(e.builder, e.emit(base))
    if exponent == -sympy.S.Half:
        return e.builder.fdiv(e.const(1.0), vecmath.sqrt(e.builder, e.emit(base)), flags=e.flags)
    if exponent.is_Number:
        return vecmath.pow(e.builder, e.emit(base), float(exponent))
    if base == sympy.E:
        return vecmath.exp(e.builder, e.emit(exponent))
    return vecmath.pow(e.builder, e.emit(base), e.emit(exponent))


def _softplus(e: ExprEmitter, expr):
    # softplus(x) = max(x, 0) + log(1 + exp(-|x|)): exp never overflows.
    x = e.emit(expr.args[0])
    b = e.builder
    small = vecmath.exp(b, b.fneg(e.intrinsic("fabs", x)))
    return b.fadd(e.intrinsic("maxnum", x, e.const(0.0)), vecmath.log(b, b.fadd(small, e.const(1.0))))


def _min_max(pick):
    def rule(e: ExprEmitter, expr):
        values = [e.emit(a) for a in expr.args]
        result = values[0]
        for value in values[1:]:
            result = e.select(e.compare(pick, result, value), result, value)
        return result

    return rule


def _heaviside(e: ExprEmitter, expr):
    x = e.emit(expr.args[0])
    at_zero = e.const(float(expr.args[1])) if len(expr.args) > 1 else e.const(0.5)
    positive = e.select(e.compare(">", x, e.const(0.0)), e.const(1.0), e.const(0.0))
    return e.select(e.compare("==", x, e.const(0.0)), at_zero, positive)


def _sign(e: ExprEmitter, expr):
    x = e.emit(expr.args[0])
    positive = e.select(e.compare(">", x, e.const(0.0)), e.const(1.0), e.const(0.0))
    return e.select(e.compare("<", x, e.const(0.0)), e.const(-1.0), positive)


def _piecewise(e: ExprEmitter, expr):
    # Conditions are tested last to first so the first true one wins, as in SymPy.
    result = None
    for value, condition in reversed(expr.args):
        if condition == sympy.true:
            result = e.emit(value)
            continue
        chosen = e.emit(value)
        result = chosen if result is None else e.select(_condition(e, condition), chosen, result)
    return result if result is not None else e.const(math.nan)


RELATIONS = {sympy.Eq: "==", sympy.Ne: "!=", sympy.Gt: ">", sympy.Lt: "<", sympy.Ge: ">=", sympy.Le: "<="}
CONNECTIVES = {sympy.And: ir.IRBuilder.and_, sympy.Or: ir.IRBuilder.or_}


def _condition(e: ExprEmitter, condition):
    combine = CONNECTIVES.get(type(condition))
    if combine is not None:  # And and Or take any number of conditions
        values = [_condition(e, c) for c in condition.args]
        return functools.reduce(lambda x, y: combine(e.builder, x, y), values)
    op = RELATIONS.get(type(condition))
    if op is None:
        raise UnsupportedExpressionError(f"the code generator has no rule for the condition {condition}")
    return e.compare(op, e.emit(condition.lhs), e.emit(condition.rhs))


def _kronecker(e: ExprEmitter, expr):
    a, b = (e.emit(x) for x in expr.args)
    return e.select(e.compare("==", a, b), e.const(1.0), e.const(0.0))


body_rules = {
    sympy.Symbol: lambda e, expr: e.env[expr],
    sympy.Add: lambda e, expr: e.fold(e.builder.fadd, expr.args),
    sympy.Mul: _mul,
    sympy.Pow: _pow,
    sympy.exp: lambda e, expr: vecmath.exp(e.builder, e.emit(expr.args[0])),
    sympy.log: lambda e, expr: vecmath.log(e.builder, e.emit(expr.args[0])),
    sympy.tanh: lambda e, expr: vecmath.tanh(e.builder, e.emit(expr.args[0])),
    sigmoid: lambda e, expr: vecmath.sigmoid(e.builder, e.emit(expr.args[0])),
    softplus: _softplus,
    sympy.Abs: lambda e, expr: e.intrinsic("fabs", e.emit(expr.args[0])),
    sympy.Max: _min_max(">"),
    sympy.Min: _min_max("<"),
    sympy.Heaviside: _heaviside,
    sympy.sign: _sign,
    sympy.Piecewise: _piecewise,
    sympy.KroneckerDelta: _kronecker,
    sympy.floor: lambda e, expr: e.intrinsic("floor", e.emit(expr.args[0])),
    sympy.ceiling: lambda e, expr: e.intrinsic("ceil", e.emit(expr.args[0])),
}


def emit_index(builder: ir.IRBuilder, expr: sympy.Expr, n: ir.Value) -> ir.Value:
    """An integer expression of the batch size ``n`` (sizes, strides, offsets) as i64."""
    expr = sympy.expand(expr)
    if expr.is_Integer:
        return ir.Constant(I64, int(expr))
    if expr.is_Symbol:
        return n
    if expr.is_Add:
        values = [emit_index(builder, a, n) for a in expr.args]
        result = values[0]
        for v in values[1:]:
            result = builder.add(result, v)
        return result
    if expr.is_Mul:
        values = [emit_index(builder, a, n) for a in expr.args]
        result = values[0]
        for v in values[1:]:
            result = builder.mul(result, v)
        return result
    if expr.is_Pow and expr.exp.is_Integer and expr.exp > 0:
        base = emit_index(builder, expr.base, n)
        result = base
        for _ in range(int(expr.exp) - 1):
            result = builder.mul(result, base)
        return result
    raise UnsupportedExpressionError(f"cannot emit the size expression {expr}")
