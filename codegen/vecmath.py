"""Vectorisable exp, log, tanh, sigmoid, pow and sqrt, emitted inline as LLVM IR.

LLVM has no vector libm here: ``llvm.exp`` on a vector becomes one ``expf`` call per lane.
These emitters produce branch-free IR (compares and selects instead of branches), so the
loop vectorizer turns a scalar loop over them into SIMD code, and the same functions accept
explicit vector values. Every function takes an `llvmlite.ir.IRBuilder` and a value of type
``float``, ``double`` or a vector of either, and returns a value of the same type.

Algorithms (see docs/backend-llvm.md for measured errors):

- exp: Cody-Waite reduction ``x = n ln2 + r`` with ``|r| <= ln2/2`` and ln2 split in two
  parts, Taylor polynomial for ``e^r``, and ``2^n`` applied as two exponent-field scalings
  so that results near overflow and in the subnormal range are right.
- log: exponent and mantissa read from the bits (subnormals pre-scaled by ``2^p``), mantissa
  ``m`` in ``[sqrt(1/2), sqrt(2))``, ``log(m) = 2 atanh(s)`` with ``s = (m-1)/(m+1)``.
- tanh: in float32, ``x P(x^2) / Q(x^2)`` with ``x`` clamped to ``[-9.02, 9.02]``, a rational
  fit of degree 4 over 4 in ``x^2`` (`TANH32_P`, `TANH32_Q`); in float64
  ``-expm1(-2|x|) / (2 + expm1(-2|x|))`` with the sign restored, where expm1 shares exp's
  reduction, so there is no cancellation for small ``|x|``.
- sigmoid: ``1/(1+e)`` for ``x >= 0`` and ``e/(1+e)`` for ``x < 0``, ``e = exp(-|x|)``,
  which never overflows and keeps full relative accuracy for large negative ``x``.
- pow: ``exp(y log|x|)`` with C99 rules for signs, zeros, infinities and NaN; integer
  exponents known in Python become multiplications (`powi`).

The numbers of polynomial terms are derived below from the truncation bounds of the series,
so each precision gets the fewest terms that keep truncation under a quarter ulp.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Callable
from decimal import Decimal, localcontext

import llvmlite.ir as ir

__all__ = ["exp", "log", "tanh", "sigmoid", "sqrt", "pow", "powi", "UNARY_FUNCTIONS", "emit_unary", "intrinsic_suffix"]


# --------------------------------------------------------------------------- constants


def _ln2() -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 50
        return Decimal(2).ln()


def _split(value: Decimal, bits: int) -> tuple[float, float]:
    """Split ``value`` (0.5 <= value < 1) into ``hi + lo`` with ``hi`` exact in ``bits`` bits."""
    hi = round(value * (1 << bits)) / (1 << bits)
    return hi, float(value - Decimal(hi))


def _terms_until(bound: Callable[[int], float], tolerance: float) -> int:
    """Smallest n >= 1 for which ``bound(n) <= tolerance``."""
    n = 1
    while bound(n) > tolerance:
        n += 1
    return n


class _Format:
    """Bit layout and series lengths of one floating-point format."""

    def __init__(self, bits: int, mantissa_bits: int, exponent_bias: int, ln2_hi_bits: int):
        self.bits = bits
        self.mantissa_bits = mantissa_bits
        self.bias = exponent_bias
        self.min_normal = 2.0 ** (1 - exponent_bias)
        # Quarter of an ulp at 1: the truncation budget of every series.
        tolerance = 2.0 ** (-mantissa_bits - 1) / 4
        # Cody-Waite: n * ln2_hi must be exact for every |n| the reduction meets (< 2^11),
        # and hi + lo carries ln2 to twice the working precision.
        self.ln2_hi, self.ln2_lo = _split(_ln2(), ln2_hi_bits)
        self.log2e = float(1 / _ln2())
        # exp(r), |r| <= rho: Lagrange remainder e^rho rho^(n+1)/(n+1)! relative to e^-rho.
        rho = 0.35
        degree = _terms_until(lambda n: math.exp(2 * rho) * rho ** (n + 1) / math.factorial(n + 1), tolerance)
        self.exp_coeffs = [1 / math.factorial(k) for k in range(degree, -1, -1)]
        # expm1(r) / r: same remainder relative to |r| e^-rho.
        degree = _terms_until(lambda n: math.exp(2 * rho) * rho**n / math.factorial(n + 1), tolerance)
        self.expm1_coeffs = [1 / math.factorial(k) for k in range(degree, 1, -1)]
        # 2 atanh(s) = 2s + 2s z Q(z), z = s^2 <= ((sqrt2-1)/(sqrt2+1))^2; Q(z) = sum z^(k-1)/(2k+1).
        z_max = ((math.sqrt(2) - 1) / (math.sqrt(2) + 1)) ** 2
        terms = _terms_until(lambda n: z_max ** (n + 1) / (2 * n + 3) / (1 - z_max), tolerance)
        self.log_coeffs = [1 / (2 * k + 1) for k in range(terms, 0, -1)]
        # exp() clamps its argument to these before converting n to an integer (fptosi of
        # NaN or out-of-range values is poison); both already give 0 and inf exactly.
        self.exp_lo, self.exp_hi = (-104.0, 89.0) if bits == 32 else (-746.0, 710.0)
        # tanh(20) rounds to 1 in both formats; clamping keeps expm1's 2^n a normal number.
        self.tanh_clamp = 20.0


_FLOAT = _Format(bits=32, mantissa_bits=23, exponent_bias=127, ln2_hi_bits=12)

# float32 tanh(x) = x P(x^2) / Q(x^2) on |x| <= TANH32_CLAMP, coefficients from the constant
# term up. Fitted here to tanh(x)/x on [0, 9.02] for the least maximum relative error, by
# iteratively reweighted linear least squares (P - f Q weighted by 1/(f Q) of the previous
# round, then Lawson's weights): 2.1e-8 (0.18 eps) in exact arithmetic, checked by the
# tests. All coefficients are positive, so both polynomials are sums of positive terms
# without cancellation and Q >= 1. Above 9.01, tanh rounds to 1 in float32, so the clamp
# is exact. Evaluated with FMA, the result is within 2.6 eps; this is about twice as
# fast as the expm1 form, which float64 keeps (a rational fit to 1e-16 would need far
# higher degrees).
TANH32_P = (
    0.9999999790657068,
    0.13379718070755656,
    0.003494034499866269,
    2.0583471732874784e-05,
    1.3319042424519978e-08,
)
TANH32_Q = (1.0, 0.4671303332248655, 0.02587107352416035, 0.0003283092373330673, 7.762010831476041e-07)
TANH32_CLAMP = 9.02
_DOUBLE = _Format(bits=64, mantissa_bits=52, exponent_bias=1023, ln2_hi_bits=40)


# --------------------------------------------------------------------------- emitter


def intrinsic_suffix(ty: ir.Type) -> str:
    """The suffix of an overloaded LLVM intrinsic's name for a float type or a vector of one
    (llvmlite's ``declare_intrinsic`` does not name vector types).

    >>> intrinsic_suffix(ir.FloatType()), intrinsic_suffix(ir.VectorType(ir.DoubleType(), 4))
    ('f32', 'v4f64')
    """
    lanes = ty.count if isinstance(ty, ir.VectorType) else None
    element = ty.element if lanes else ty
    names = {ir.FloatType: "f32", ir.DoubleType: "f64"}
    if type(element) not in names:
        raise TypeError(f"vector math needs float, double or a vector of them, got {ty}")
    return f"v{lanes}{names[type(element)]}" if lanes else names[type(element)]


class _Emitter:
    """Typed helpers around one builder for one float/double (vector) type."""

    def __init__(self, builder: ir.IRBuilder, value: ir.Value):
        if not isinstance(builder, ir.IRBuilder):
            raise TypeError(f"builder must be an llvmlite.ir.IRBuilder, got {type(builder).__name__}")
        if builder.block is None:
            raise ValueError("builder must be positioned in a basic block of a function")
        if not isinstance(value, ir.Value):
            raise TypeError(f"value must be an llvmlite.ir.Value, got {type(value).__name__}")
        ty = value.type
        lanes = ty.count if isinstance(ty, ir.VectorType) else None
        self.suffix = intrinsic_suffix(ty)
        self.fmt = _DOUBLE if self.suffix.endswith("f64") else _FLOAT
        int_element = ir.IntType(self.fmt.bits)
        self.b = builder
        self.ty = ty
        self.int_ty = ir.VectorType(int_element, lanes) if lanes else int_element
        self.module = builder.module

    # constants and intrinsics

    def f(self, value: float) -> ir.Constant:
        return ir.Constant(self.ty, float(value))

    def i(self, value: int) -> ir.Constant:
        return ir.Constant(self.int_ty, value)

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        full = f"llvm.{name}.{self.suffix}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(self.ty, [self.ty] * len(args)), name=full)
        return self.b.call(fn, list(args))

    # arithmetic; fmuladd lets LLVM fuse where the target has FMA and split where it has not

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.call("fmuladd", a, b, c)

    def horner(self, x: ir.Value, coeffs: list[float]) -> ir.Value:
        acc = self.f(coeffs[0])
        for c in coeffs[1:]:
            acc = self.fma(acc, x, self.f(c))
        return acc

    def select(self, cond: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(cond, a, b)

    def cmp(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered(op, a, b)

    def is_nan(self, x: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", x, x)

    def pow2(self, n: ir.Value) -> ir.Value:
        """2^n for integer n within the normal exponent range, built in the exponent field."""
        biased = self.b.add(n, self.i(self.fmt.bias))
        return self.b.bitcast(self.b.shl(biased, self.i(self.fmt.mantissa_bits)), self.ty)

    def reduce(self, x: ir.Value) -> tuple[ir.Value, ir.Value]:
        """Cody-Waite: return (n, r) with x = n ln2 + r, |r| <= ln2/2, n as an integer."""
        fmt = self.fmt
        n = self.call("rint", self.b.fmul(x, self.f(fmt.log2e)))
        r = self.fma(n, self.f(-fmt.ln2_hi), x)
        r = self.fma(n, self.f(-fmt.ln2_lo), r)
        return self.b.fptosi(n, self.int_ty), r


# --------------------------------------------------------------------------- functions


def exp(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Emit ``e**x``.

    Parameters
    ----------
    builder : llvmlite.ir.IRBuilder
        Positioned where the code goes.
    x : llvmlite.ir.Value
        float, double, or a vector of either.

    Returns
    -------
    llvmlite.ir.Value
        Same type as ``x``; inf above the overflow threshold, 0 below underflow, NaN for NaN.

    Examples
    --------
    >>> m = ir.Module()
    >>> fn = ir.Function(m, ir.FunctionType(ir.FloatType(), [ir.FloatType()]), "f")
    >>> b = ir.IRBuilder(fn.append_basic_block())
    >>> b.ret(exp(b, fn.args[0]))  # doctest: +ELLIPSIS
    <ir.Ret ...>
    """
    e = _Emitter(builder, x)
    fmt = e.fmt
    # Clamp with selects whose compare is false for NaN, so NaN becomes exp_lo and never
    # reaches fptosi; the final select puts the NaN back.
    xc = e.select(e.cmp(">", x, e.f(fmt.exp_lo)), x, e.f(fmt.exp_lo))
    xc = e.select(e.cmp("<", xc, e.f(fmt.exp_hi)), xc, e.f(fmt.exp_hi))
    n, r = e.reduce(xc)
    p = e.horner(r, fmt.exp_coeffs)
    # 2^n in two halves: each stays a normal number while their product reaches the
    # subnormal range (one rounding) and overflows to inf exactly when e^x does.
    n1 = builder.ashr(n, e.i(1))
    n2 = builder.sub(n, n1)
    y = builder.fmul(builder.fmul(p, e.pow2(n1)), e.pow2(n2))
    return e.select(e.is_nan(x), x, y)


def log(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Emit the natural logarithm.

    Returns -inf for +-0, NaN for negative x and NaN, +inf for +inf; subnormal x is exact
    to the same accuracy as normal x. See `exp` for the parameters.
    """
    e = _Emitter(builder, x)
    fmt, b = e.fmt, builder
    tiny = e.cmp("<", x, e.f(fmt.min_normal))
    xs = e.select(tiny, b.fmul(x, e.f(2.0**fmt.mantissa_bits)), x)
    exponent_shift = e.select(tiny, e.i(-fmt.mantissa_bits), e.i(0))
    # Subtracting the bits of sqrt(1/2) puts the octave boundary at sqrt(1/2): the shifted
    # exponent field is the exponent of x / sqrt(1/2), and adding the bits back to the
    # shifted mantissa rebuilds m in [sqrt(1/2), sqrt(2)).
    offset = e.i(_float_bits(math.sqrt(0.5), fmt))
    shifted = b.sub(b.bitcast(xs, e.int_ty), offset)
    exponent = b.add(b.ashr(shifted, e.i(fmt.mantissa_bits)), exponent_shift)
    mantissa_bits = b.add(b.and_(shifted, e.i((1 << fmt.mantissa_bits) - 1)), offset)
    f = b.fsub(b.bitcast(mantissa_bits, e.ty), e.f(1.0))
    s = b.fdiv(f, b.fadd(f, e.f(2.0)))
    z = b.fmul(s, s)
    # log(1+f) = 2s + 2s z Q(z) = f - s (f - 2 z Q(z)), since 2s = f - f s: the leading
    # term is f itself, exact, and only a small correction is rounded.
    correction = b.fmul(s, b.fsub(f, b.fmul(e.f(2.0), b.fmul(z, e.horner(z, fmt.log_coeffs)))))
    log_m = b.fsub(f, correction)
    ef = b.sitofp(exponent, e.ty)
    y = e.fma(ef, e.f(fmt.ln2_hi), e.fma(ef, e.f(fmt.ln2_lo), log_m))
    y = e.select(e.cmp("==", x, e.f(0.0)), e.f(-math.inf), y)
    y = e.select(e.cmp("<", x, e.f(0.0)), e.f(math.nan), y)
    y = e.select(e.cmp("==", x, e.f(math.inf)), e.f(math.inf), y)
    return e.select(e.is_nan(x), x, y)


def _expm1_nonpositive(e: _Emitter, y: ir.Value) -> ir.Value:
    """expm1(y) for y in [-2 tanh_clamp, 0]: 2^n expm1(r) + (2^n - 1)."""
    n, r = e.reduce(y)
    p = e.fma(e.b.fmul(r, r), e.horner(r, e.fmt.expm1_coeffs), r)
    scale = e.pow2(n)
    return e.fma(scale, p, e.b.fsub(scale, e.f(1.0)))


def tanh(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Emit the hyperbolic tangent; saturates to +-1, keeps the sign of zero, NaN for NaN.

    See `exp` for the parameters.
    """
    e = _Emitter(builder, x)
    if e.fmt is _FLOAT:
        return _tanh_rational(e, x)
    ax = e.call("fabs", x)
    ax = e.select(e.cmp("<", ax, e.f(e.fmt.tanh_clamp)), ax, e.f(e.fmt.tanh_clamp))
    em = _expm1_nonpositive(e, builder.fmul(ax, e.f(-2.0)))
    t = builder.fdiv(builder.fneg(em), builder.fadd(em, e.f(2.0)))
    y = e.call("copysign", t, x)
    return e.select(e.is_nan(x), x, y)


def _tanh_rational(e: _Emitter, x: ir.Value) -> ir.Value:
    """float32 tanh as ``x P(x^2) / Q(x^2)``; an odd function, so ``-0`` stays ``-0``."""
    b, limit = e.b, e.f(TANH32_CLAMP)
    xc = e.select(e.cmp("<", x, limit), x, limit)  # NaN becomes the limit here, and is put back below
    xc = e.select(e.cmp(">", xc, b.fneg(limit)), xc, b.fneg(limit))
    t = b.fmul(xc, xc)
    ratio = b.fdiv(e.horner(t, TANH32_P[::-1]), e.horner(t, TANH32_Q[::-1]))
    return e.select(e.is_nan(x), x, b.fmul(xc, ratio))


def sigmoid(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Emit the logistic function ``1 / (1 + exp(-x))`` without overflow for any x.

    See `exp` for the parameters.
    """
    e = _Emitter(builder, x)
    small = exp(builder, builder.fneg(e.call("fabs", x)))
    numerator = e.select(e.cmp(">=", x, e.f(0.0)), e.f(1.0), small)
    return builder.fdiv(numerator, builder.fadd(small, e.f(1.0)))


def sqrt(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Emit the square root (``llvm.sqrt``, which vectorises to one instruction)."""
    return _Emitter(builder, x).call("sqrt", x)


def powi(builder: ir.IRBuilder, x: ir.Value, n: int) -> ir.Value:
    """Emit ``x**n`` for a Python integer ``n`` by repeated squaring (and one division if n < 0).

    ``llvm.powi`` is avoided: it lowers to a compiler-rt call that may not be in the process.
    """
    e = _Emitter(builder, x)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"powi needs a Python int exponent, got {type(n).__name__}")
    result, square, k = None, x, abs(int(n))
    while k:
        if k & 1:
            result = square if result is None else builder.fmul(result, square)
        k >>= 1
        if k:
            square = builder.fmul(square, square)
    if result is None:
        return e.f(1.0)
    return builder.fdiv(e.f(1.0), result) if n < 0 else result


def pow(builder: ir.IRBuilder, x: ir.Value, y: ir.Value | float | int) -> ir.Value:
    """Emit ``x**y`` with C99 ``pow`` semantics for signs, zeros, infinities and NaN.

    Parameters
    ----------
    builder : llvmlite.ir.IRBuilder
    x : llvmlite.ir.Value
        Base: float, double, or a vector of either.
    y : llvmlite.ir.Value or float or int
        Exponent, of the type of ``x``, or a Python number. Integers up to 64 in magnitude
        become multiplications (`powi`).

    Notes
    -----
    For general y this is ``exp(y log|x|)``: the relative error grows with ``|y log x|``, about
    ``(1 + |y log x|)`` times the error of log, since log's error is scaled by y.
    """
    e = _Emitter(builder, x)
    if isinstance(y, numbers.Real) and not isinstance(y, bool):
        if float(y).is_integer() and abs(y) <= 64:
            return powi(builder, x, int(y))
        y = e.f(y)
    if not isinstance(y, ir.Value) or y.type != x.type:
        raise TypeError(f"pow exponent must be a number or a value of type {x.type}, got {getattr(y, 'type', y)!r}")
    b = builder
    ax = e.call("fabs", x)
    result = exp(b, b.fmul(y, log(b, ax)))
    y_integral = e.cmp("==", e.call("rint", y), y)
    half = b.fmul(y, e.f(0.5))
    y_odd = b.and_(y_integral, e.cmp("!=", e.call("rint", half), half))
    sign_set = b.icmp_signed("<", b.bitcast(x, e.int_ty), e.i(0))
    result = e.select(b.and_(sign_set, y_odd), b.fneg(result), result)
    finite_negative = b.and_(e.cmp("<", x, e.f(0.0)), e.cmp("!=", ax, e.f(math.inf)))
    result = e.select(b.and_(finite_negative, b.not_(y_integral)), e.f(math.nan), result)
    y_infinite = e.cmp("==", e.call("fabs", y), e.f(math.inf))
    one = b.or_(
        e.cmp("==", y, e.f(0.0)), b.or_(e.cmp("==", x, e.f(1.0)), b.and_(e.cmp("==", ax, e.f(1.0)), y_infinite))
    )
    return e.select(one, e.f(1.0), result)


def _float_bits(value: float, fmt: _Format) -> int:
    if fmt.bits == 32:
        return struct.unpack("<i", struct.pack("<f", value))[0]
    return struct.unpack("<q", struct.pack("<d", value))[0]


UNARY_FUNCTIONS: dict[str, Callable[[ir.IRBuilder, ir.Value], ir.Value]] = {
    "exp": exp,
    "log": log,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "sqrt": sqrt,
}


def emit_unary(builder: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """Emit the unary function called ``name`` (a key of `UNARY_FUNCTIONS`).

    Raises
    ------
    KeyError
        Naming the function and the known ones, if ``name`` is unknown.
    """
    try:
        fn = UNARY_FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"no vector math function {name!r}; known: {sorted(UNARY_FUNCTIONS)}") from None
    return fn(builder, x)
