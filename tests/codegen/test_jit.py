"""Compiling IR to callable native functions: results, errors, lifetime, inspection, debug output."""

import ctypes
import gc
import re
import weakref

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import pytest

from codegen.jit import CompileError, CompileOptions, UnresolvedSymbolError, compile_ir
from codegen.loops import emit_map_kernel
from codegen.objfile import read_symbols
from codegen.target import host_spec

VOIDP, I64 = ctypes.c_void_p, ctypes.c_int64


def _vadd(cm):
    return cm.function("vadd", None, VOIDP, VOIDP, VOIDP, I64)


@pytest.mark.parametrize("n", [0, 1, 3, 17, 129, 1000])
def test_vector_add_loop_matches_numpy(vadd_ir, n):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    # One extra element past the end checks that the loop writes exactly n elements.
    out = np.full(n + 1, 7.0, dtype=np.float32)
    _vadd(compile_ir(vadd_ir, use_cache=False))(out.ctypes.data, a.ctypes.data, b.ctypes.data, n)
    np.testing.assert_array_equal(out[:n], a + b)
    assert out[n] == 7.0


def test_compiles_llvmlite_module_objects():
    module = ir.Module()
    emit_map_kernel(module, "axpy", lambda b, x, y: b.fadd(b.fmul(x, ir.Constant(x.type, 3.0)), y), "float64", arity=2)
    cm = compile_ir(module, use_cache=False)
    x, y = np.arange(10.0), np.ones(10)
    out = np.empty(10)
    cm.function("axpy", None, VOIDP, VOIDP, VOIDP, I64)(out.ctypes.data, x.ctypes.data, y.ctypes.data, 10)
    np.testing.assert_array_equal(out, 3 * x + 1)
    assert cm.functions == ("axpy",)


@pytest.mark.parametrize("width", [None, 4, 16])
@pytest.mark.parametrize("n", [1, 3, 17, 129])
def test_map_kernel_handles_vector_body_and_tail(width, n):
    module = ir.Module()
    emit_map_kernel(module, "square", lambda b, x: b.fmul(x, x), "float32", vector_width=width)
    cm = compile_ir(module, use_cache=False)
    x = np.arange(n, dtype=np.float32) - 5
    out = np.zeros(n + 1, dtype=np.float32)
    cm.function("square", None, VOIDP, VOIDP, I64)(out.ctypes.data, x.ctypes.data, n)
    np.testing.assert_array_equal(out[:n], x * x)
    assert out[n] == 0


def test_unresolved_symbol_raises_before_loading_and_names_it():
    source = """
    declare double @sbp_no_such_function(double)
    define double @f(double %x) {
      %y = call double @sbp_no_such_function(double %x)
      ret double %y
    }
    """
    with pytest.raises(UnresolvedSymbolError, match="sbp_no_such_function") as info:
        compile_ir(source, use_cache=False)
    assert info.value.symbols == ("sbp_no_such_function",)


def test_symbols_added_to_the_process_resolve():
    callback_type = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)
    callback = callback_type(lambda x: 2 * x + 1)
    llvm.add_symbol("sbp_test_affine", ctypes.cast(callback, ctypes.c_void_p).value)
    source = """
    declare double @sbp_test_affine(double)
    define double @g(double %x) {
      %y = call double @sbp_test_affine(double %x)
      ret double %y
    }
    """
    cm = compile_ir(source, use_cache=False)
    assert cm.function("g", ctypes.c_double, ctypes.c_double)(4.0) == 9.0


def test_calls_added_by_code_generation_are_resolved():
    # llvm.exp has no vector or inline lowering: code generation turns it into a call to
    # libm's exp, a symbol that the IR never declares.
    source = """
    declare double @llvm.exp.f64(double)
    define double @e(double %x) {
      %y = call double @llvm.exp.f64(double %x)
      ret double %y
    }
    """
    cm = compile_ir(source, use_cache=False)
    assert read_symbols(cm.object_code).undefined == ("exp",)
    assert cm.function("e", ctypes.c_double, ctypes.c_double)(1.0) == pytest.approx(np.e, rel=1e-15)


def test_invalid_ir_raises_compile_error():
    with pytest.raises(CompileError, match="invalid LLVM IR"):
        compile_ir("define i64 @f() { ret i32 0 }", use_cache=False)
    with pytest.raises(CompileError, match="invalid LLVM IR"):
        compile_ir("this is not IR", use_cache=False)


def test_bad_arguments_raise_type_and_value_errors(vadd_ir):
    with pytest.raises(TypeError, match="llvmlite.ir.Module or LLVM IR text"):
        compile_ir(b"bytes are not IR")
    with pytest.raises(TypeError, match="CompileOptions"):
        compile_ir(vadd_ir, options={"speed_level": 3})
    with pytest.raises(ValueError, match="speed_level"):
        CompileOptions(speed_level=5)
    with pytest.raises(TypeError, match="interprocedural must be a bool"):
        CompileOptions(interprocedural=0)
    with pytest.raises(TypeError, match="as_written must be a tuple"):
        CompileOptions(interprocedural=False, as_written="kernel.")
    with pytest.raises(ValueError, match="as_written needs interprocedural=False"):
        CompileOptions(as_written=("kernel.",))
    with pytest.raises(KeyError, match="no function 'vsub'.*vadd"):
        compile_ir(vadd_ir, use_cache=False).address("vsub")


def test_callable_keeps_engine_alive_and_nothing_else_does(vadd_ir):
    cm = compile_ir(vadd_ir, use_cache=False)
    alive = weakref.ref(cm)
    fn = _vadd(cm)
    del cm
    gc.collect()
    assert alive() is not None
    a = np.arange(5, dtype=np.float32)
    out = np.empty_like(a)
    fn(out.ctypes.data, a.ctypes.data, a.ctypes.data, 5)
    np.testing.assert_array_equal(out, 2 * a)
    del fn
    gc.collect()
    assert alive() is None


def test_inspection_strings(vadd_ir):
    cm = compile_ir(vadd_ir, use_cache=False)
    assert cm.ir == vadd_ir
    assert host_spec().triple in cm.optimized_ir
    assert "define void @vadd" in cm.optimized_ir
    lanes = host_spec().vector_bits // 32
    assert f"<{lanes} x float>" in cm.optimized_ir
    assert "vadd:" in cm.assembly
    if host_spec().vector_bits >= 256:
        assert re.search(r"vaddps\s+.*%ymm", cm.assembly)


def test_debug_levels_print_stages_ir_and_assembly(vadd_ir, monkeypatch, capsys):
    monkeypatch.setenv("SYMBACKPROP_DEBUG", "1")
    compile_ir(vadd_ir, use_cache=False)
    level1 = capsys.readouterr().err
    for stage in ("parse", "optimize", "codegen", "load"):
        assert f"] {stage}" in level1
    assert "define void @vadd" not in level1
    monkeypatch.setenv("SYMBACKPROP_DEBUG", "2")
    compile_ir(vadd_ir, use_cache=False)
    level2 = capsys.readouterr().err
    assert "optimized IR" in level2 and "define void @vadd" in level2 and "vadd:" not in level2
    monkeypatch.setenv("SYMBACKPROP_DEBUG", "3")
    compile_ir(vadd_ir, use_cache=False)
    level3 = capsys.readouterr().err
    assert "define void @vadd" in level3 and "vadd:" in level3
    monkeypatch.setenv("SYMBACKPROP_DEBUG", "0")
    compile_ir(vadd_ir, use_cache=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("SYMBACKPROP_DEBUG", "verbose")
    with pytest.warns(UserWarning, match="SYMBACKPROP_DEBUG='verbose'"):
        compile_ir(vadd_ir, use_cache=False)
    assert capsys.readouterr().err == ""
