"""Accuracy of the emitted vector math against NumPy in float64, in float32 and float64.

Each function runs compiled in a loop over many points: a sweep over bit patterns (so every
exponent, subnormals, infinities and NaNs are met), uniform points in the interesting range,
and hand-picked edge cases. Normal results must be within a few ulp; subnormal results
within one subnormal step; zeros, infinities and NaNs must match exactly, sign included.
"""

import ctypes
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from codegen import vecmath
from codegen.jit import compile_ir
from codegen.loops import emit_map_kernel
from codegen.target import host_spec

VOIDP, I64 = ctypes.c_void_p, ctypes.c_int64

# Bound on the max relative error of normal results, in units of machine epsilon
# (2**-23 for float32, 2**-52 for float64): 3.6e-7 and 1.8e-15.
MAX_EPS = {"float32": 3, "float64": 8}
UNARY = ["exp", "log", "tanh", "sigmoid"]
POWI_EXPONENTS = [-3, -2, -1, 0, 1, 2, 3, 5, 8, 13]
POW_CONSTANT = 2.5


def _build(dtype):
    module = ir.Module()
    width = 8
    for name in UNARY:
        emit_map_kernel(module, name, getattr(vecmath, name), dtype)
        emit_map_kernel(module, f"{name}_vec", getattr(vecmath, name), dtype, vector_width=width)
    emit_map_kernel(module, "sqrt", vecmath.sqrt, dtype)
    emit_map_kernel(module, "pow", vecmath.pow, dtype, arity=2)
    emit_map_kernel(module, "pow_vec", vecmath.pow, dtype, arity=2, vector_width=width)
    emit_map_kernel(module, "pow_const", lambda b, x: vecmath.pow(b, x, POW_CONSTANT), dtype)
    for n in POWI_EXPONENTS:
        emit_map_kernel(module, f"powi_{n}".replace("-", "m"), lambda b, x, n=n: vecmath.powi(b, x, n), dtype)
    return compile_ir(module)


@pytest.fixture(scope="module", params=["float32", "float64"])
def compiled(request):
    return request.param, _build(request.param)


def _apply(cm, name, *inputs):
    out = np.empty_like(inputs[0])
    fn = cm.function(name, None, *[VOIDP] * (len(inputs) + 1), I64)
    fn(out.ctypes.data, *[x.ctypes.data for x in inputs], out.size)
    return out


# --------------------------------------------------------------------------- reference


def _reference(name, x):
    with np.errstate(all="ignore"):
        x = x.astype(np.float64)
        if name == "sigmoid":
            e = np.exp(-np.abs(x))
            return np.where(x >= 0, 1.0, e) / (1.0 + e)
        return getattr(np, name)(x)


def _check(x, got, ref, dtype, tiny_rel=0.0):
    """Assert exact specials and near subnormals; return the max relative error of normal results.

    Subnormal results may be off by one subnormal step plus ``tiny_rel`` relative.
    """
    with np.errstate(all="ignore"):
        return _check_quietly(x, got, ref, dtype, tiny_rel)


def _check_quietly(x, got, ref, dtype, tiny_rel):
    info = np.finfo(dtype)
    expected = ref.astype(dtype)
    finite = np.isfinite(expected)
    normal = finite & (np.abs(expected) >= info.tiny)
    tiny = finite & ~normal & (ref != 0)
    exact = ~normal & ~tiny
    same = ((got == expected) & (np.signbit(got) == np.signbit(expected))) | (np.isnan(got) & np.isnan(expected))
    bad = exact & ~same
    assert not bad.any(), f"special values differ at x={x[bad][:5]}: got {got[bad][:5]}, expected {expected[bad][:5]}"
    allowed = info.smallest_subnormal + (tiny_rel * np.abs(ref))[tiny]
    step = np.abs(got[tiny].astype(np.float64) - ref[tiny])
    assert (step <= allowed).all(), f"subnormal results off by up to {step.max()} at x={x[tiny][step > allowed][:5]}"
    rel = np.abs(got[normal].astype(np.float64) - ref[normal]) / np.abs(ref[normal])
    return float(rel.max()) if rel.size else 0.0


# --------------------------------------------------------------------------- inputs


def _bit_sweep(dtype, rng):
    if dtype == "float32":
        # Every 1021st bit pattern: all exponents, both signs, subnormals, infinities, NaNs.
        return np.arange(0, 2**32, 1021, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return rng.integers(0, 2**64, 2**20, dtype=np.uint64, endpoint=False).view(np.float64)


def _edge_cases(name, dtype):
    info = np.finfo(dtype)
    common = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, info.max, -info.max, info.tiny, -info.tiny]
    common += [info.smallest_subnormal, -info.smallest_subnormal, 3 * info.smallest_subnormal, info.eps, -info.eps]
    extra = {
        "float32": {
            "exp": [
                88.72283,
                88.72284,
                88.7229,
                89.0,
                -87.33654,
                -87.34,
                -100.0,
                -103.278,
                -103.9721,
                -103.9728,
                -104.0,
            ],
            "log": [1 + 2**-23, 1 - 2**-24, 0.70710677, 0.7071068, 1.4142135, 1.4142137, 2.0, 0.5, 1e-40, 1e-45],
            "tanh": [1e-40, 1e-30, 0.3, 0.55, 0.625, 8.0, 9.0, 9.01, 10.0, 20.0, 21.0, 1e30],
            "sigmoid": [16.0, 17.0, 88.0, 89.0, -88.0, -89.0, -100.0, -103.0, -104.0, -110.0, 1e30, -1e30],
        },
        "float64": {
            "exp": [709.782712893384, 709.7827128933841, 710.0, -708.3964, -708.4, -745.1332, -745.1333, -746.0],
            "log": [1 + 2**-52, 1 - 2**-53, 0.7071067811865475, 1.4142135623730951, 2.0, 0.5, 1e-310, 5e-324],
            "tanh": [1e-310, 1e-300, 0.3, 0.55, 0.625, 18.0, 19.0, 19.1, 20.0, 25.0, 1e300],
            "sigmoid": [36.0, 37.0, 709.0, 710.0, -709.0, -710.0, -740.0, -745.0, -746.0, 1e300, -1e300],
        },
    }[dtype][name]
    values = np.array(common + extra, dtype=dtype)
    return np.concatenate([values, -values])


def _uniform(name, dtype, rng, size=2**18):
    big = 89.0 if dtype == "float32" else 710.0
    if name == "exp":
        parts = [rng.uniform(-big - 15, big, size), rng.uniform(-1, 1, size)]
    elif name == "log":
        info = np.finfo(dtype)
        logs = rng.uniform(np.log(info.smallest_subnormal), np.log(info.max), size)
        parts = [np.exp(logs), 1 + rng.uniform(-0.35, 0.42, size)]
    elif name == "tanh":
        parts = [rng.uniform(-20, 20, size), 10 ** rng.uniform(-10, 0, size) * rng.choice([-1, 1], size)]
    else:
        parts = [rng.uniform(-big - 20, big + 20, size), rng.uniform(-6, 6, size)]
    return np.concatenate(parts).astype(dtype)


def _points(name, dtype):
    rng = np.random.default_rng(abs(hash((name, dtype))) % 2**32)
    return np.concatenate([_bit_sweep(dtype, rng), _uniform(name, dtype, rng), _edge_cases(name, dtype)])


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("variant", ["", "_vec"])
@pytest.mark.parametrize("name", UNARY)
def test_unary_function_accuracy(compiled, name, variant):
    dtype, cm = compiled
    x = _points(name, dtype)
    got = _apply(cm, name + variant, x)
    max_rel = _check(x, got, _reference(name, x), dtype)
    print(f"{name}{variant} {dtype}: max relative error {max_rel:.3g} ({max_rel / np.finfo(dtype).eps:.2f} eps)")
    assert max_rel <= MAX_EPS[dtype] * np.finfo(dtype).eps


def _function_body(module_text, name):
    start = module_text.index(f"@{name}(")
    return module_text[start : module_text.index("\n}\n", start)]


def test_float32_tanh_rational_fit_is_within_its_stated_error():
    """The fitted coefficients themselves, in float64: max relative error of x P(x²)/Q(x²)
    against tanh below 2.2e-8 on the whole clamped range, and the clamp where float32
    tanh is already 1."""
    x = np.concatenate([np.linspace(1e-6, vecmath.TANH32_CLAMP, 400_001), np.geomspace(1e-30, 1.0, 10_001)])
    t = x * x
    p = np.polynomial.polynomial.polyval(t, vecmath.TANH32_P)
    q = np.polynomial.polynomial.polyval(t, vecmath.TANH32_Q)
    assert np.max(np.abs(x * p / q / np.tanh(x) - 1)) < 2.2e-8
    assert np.float32(np.tanh(vecmath.TANH32_CLAMP)) == 1
    assert all(c > 0 for c in vecmath.TANH32_P + vecmath.TANH32_Q)  # no cancellation, Q >= 1


def test_scalar_loops_are_vectorized_without_library_calls(compiled):
    dtype, cm = compiled
    lanes = host_spec().vector_bits // np.dtype(dtype).itemsize // 8
    element = "float" if dtype == "float32" else "double"
    for name in UNARY + ["pow"]:
        body = _function_body(cm.optimized_ir, name)
        assert f"<{lanes} x {element}>" in body, f"{name} was not vectorized to {lanes} lanes"
    # Nothing left for libm: no call, and no indirect tail call, anywhere in the machine code.
    assert re.search(r"^\s*(call|jmpq?\s+\*)", cm.assembly, re.MULTILINE) is None


def test_sqrt_is_correctly_rounded(compiled):
    dtype, cm = compiled
    x = _points("log", dtype)
    with np.errstate(invalid="ignore"):
        expected = np.sqrt(x)
    got = _apply(cm, "sqrt", x)
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("variant", ["pow", "pow_vec"])
def test_pow_accuracy_grows_only_with_y_log_x(compiled, variant):
    dtype, cm = compiled
    rng = np.random.default_rng(1)
    size = 2**17
    x = 10 ** rng.uniform(-4, 4, size)
    y = rng.uniform(-8, 8, size)
    # Negative bases with integer exponents, and exponents that overflow and underflow.
    x = np.concatenate([x, -x[:1000], x[:1000]]).astype(dtype)
    y = np.concatenate([y, np.round(y[:1000]), 40 * y[:1000]]).astype(dtype)
    got = _apply(cm, variant, x, y)
    with np.errstate(all="ignore"):
        ref = np.power(x.astype(np.float64), y.astype(np.float64))
        scale = 1 + np.abs(y * np.log(np.abs(x.astype(np.float64))))
    _check(x, got, ref, dtype, tiny_rel=2 * np.finfo(dtype).eps * scale)
    finite = np.isfinite(ref) & (np.abs(ref) >= np.finfo(dtype).tiny) & (np.abs(ref) <= np.finfo(dtype).max)
    rel = np.abs(got[finite] - ref[finite]) / np.abs(ref[finite]) / scale[finite]
    print(f"{variant} {dtype}: max relative error / (1 + |y log x|) = {rel.max():.3g}")
    assert rel.max() <= 2 * np.finfo(dtype).eps


def test_pow_special_values_match_c99(compiled):
    dtype, cm = compiled
    values = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 2.5, np.inf, -np.inf, np.nan]
    x, y = (a.ravel().astype(dtype) for a in np.meshgrid(values, values))
    got = _apply(cm, "pow", x, y)
    with np.errstate(all="ignore"):
        expected = np.power(x, y)
    same = np.isclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=0) & (np.signbit(got) == np.signbit(expected))
    same |= np.isnan(got) & np.isnan(expected)
    assert same.all(), list(zip(x[~same], y[~same], got[~same], expected[~same]))


@pytest.mark.parametrize("n", POWI_EXPONENTS)
def test_integer_powers(compiled, n):
    dtype, cm = compiled
    rng = np.random.default_rng(n + 100)
    x = np.concatenate([rng.uniform(-3, 3, 10000), [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan]]).astype(dtype)
    got = _apply(cm, f"powi_{n}".replace("-", "m"), x)
    with np.errstate(all="ignore"):
        ref = np.power(x.astype(np.float64), float(n))
    max_rel = _check(x, got, ref, dtype)
    assert max_rel <= (abs(n) + 1) * np.finfo(dtype).eps


def test_pow_with_constant_exponent(compiled):
    dtype, cm = compiled
    x = np.concatenate([np.linspace(0, 50, 10001), [-1.0, np.inf, np.nan]]).astype(dtype)
    got = _apply(cm, "pow_const", x)
    with np.errstate(all="ignore"):
        ref = np.power(x.astype(np.float64), POW_CONSTANT)
    assert _check(x, got, ref, dtype) <= 16 * np.finfo(dtype).eps


# --------------------------------------------------------------------------- bad input


def _builder(ty):
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ty, [ty]), "f")
    return ir.IRBuilder(fn.append_basic_block()), fn.args[0]


@pytest.mark.parametrize("name", UNARY + ["sqrt"])
def test_non_float_values_are_rejected(name):
    builder, arg = _builder(ir.IntType(32))
    with pytest.raises(TypeError, match="float, double or a vector"):
        vecmath.emit_unary(builder, name, arg)


def test_vector_types_keep_their_type():
    ty = ir.VectorType(ir.DoubleType(), 4)
    builder, arg = _builder(ty)
    for name in UNARY:
        assert vecmath.emit_unary(builder, name, arg).type == ty


def test_bad_exponents_and_names_are_rejected():
    builder, arg = _builder(ir.FloatType())
    with pytest.raises(TypeError, match="Python int"):
        vecmath.powi(builder, arg, 2.0)
    with pytest.raises(TypeError, match="pow exponent"):
        vecmath.pow(builder, arg, ir.Constant(ir.DoubleType(), 2.0))
    with pytest.raises(KeyError, match="cosh"):
        vecmath.emit_unary(builder, "cosh", arg)
    with pytest.raises(ValueError, match="positioned"):
        vecmath.exp(ir.IRBuilder(), arg)
