"""A program's module split into modules that compile side by side: each parses alone,
together they define what the module did, kernels keep the functions only they call, and
the program computes the same numbers in parts as whole."""

import re

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import pytest

import symbackprop as sb
from codegen import compile as compile_module
from codegen import step as step_module
from codegen.split import split_module

DEFINED = re.compile(r'^define [^@]*@"([^"]+)"', re.M)


def mlp():
    """A two-layer step's program module (as emitted, before any split)."""
    x = sb.input("x", (None, 5))
    y = sb.input("y", (None,), "int64")
    W = sb.param("W", (5, 32), init="glorot_uniform", seed=0)
    V = sb.param("V", (32, 3), init="glorot_uniform", seed=1)
    loss = sb.softmax_cross_entropy(sb.tanh(x @ W) @ V, y)
    return loss, [x, y], [W, V]


@pytest.fixture
def emitted(monkeypatch):
    """The module of an mlp step, caught as the step's build emits it."""
    modules = []
    emit = step_module.emit_program

    def keep(*args, **kwargs):
        modules.append(emit(*args, **kwargs))
        return modules[-1]

    monkeypatch.setenv("SYMBACKPROP_CACHE", "0")
    monkeypatch.setattr(step_module, "emit_program", keep)
    loss, inputs, params = mlp()
    sb.compile_step(loss, inputs, params, sb.optim.SGD(lr=0.1))
    return modules[-1]


def defined(text):
    return DEFINED.findall(text)


def test_the_parts_parse_alone_and_define_every_function_once(emitted):
    whole = str(emitted)
    parts = split_module(emitted, 2)
    assert len(parts) == 2
    for part in parts:
        llvm.parse_assembly(part).verify()
    names = [name for part in parts for name in defined(part)]
    assert sorted(names) == sorted(defined(whole)) and len(names) == len(set(names))
    assert {"run", "epoch"} <= set(defined(parts[0]))
    assert str(emitted) == whole  # the module is left as it was


def test_a_kernel_keeps_the_functions_it_alone_calls(emitted):
    parts = split_module(emitted, 2)
    home = {name: index for index, part in enumerate(parts) for name in defined(part)}
    for name, index in home.items():
        if "." in name:  # a block map, an epilogue, a chunk: with the kernel it belongs to
            assert home[name.split(".")[0]] == index, name
    moved = [name for name in defined(parts[1]) if "." not in name]
    assert moved, "nothing left the first module"
    for name in moved:  # called from run: external where defined, declared where called
        assert re.search(rf'^define void @"{re.escape(name)}"', parts[1], re.M)
        assert re.search(rf'^declare void @"{re.escape(name)}"', parts[0], re.M)


def test_one_part_is_the_module_as_it_was(emitted):
    assert split_module(emitted, 1) == [str(emitted)]
    with pytest.raises(ValueError, match="parts must be at least 1"):
        split_module(emitted, 0)


def small_module(with_variable):
    """``run`` calling two internal kernels; the first reads an internal variable if asked."""
    module = ir.Module(name="small")
    i64 = ir.IntType(64)
    variable = ir.GlobalVariable(module, i64, "counter")
    variable.linkage, variable.initializer = "internal", ir.Constant(i64, 7)
    kernels = []
    for index in range(2):
        kernel = ir.Function(module, ir.FunctionType(i64, []), f"kernel{index}")
        kernel.linkage = "internal"
        b = ir.IRBuilder(kernel.append_basic_block())
        b.ret(b.load(variable) if with_variable and index == 0 else ir.Constant(i64, index + 1))
        kernels.append(kernel)
    run = ir.Function(module, ir.FunctionType(i64, []), "run")
    b = ir.IRBuilder(run.append_basic_block())
    b.ret(b.add(b.call(kernels[0], []), b.call(kernels[1], [])))
    return module


def test_a_kernel_that_reads_a_variable_of_the_module_stays_with_it():
    parts = split_module(small_module(with_variable=True), 2)
    assert defined(parts[0]) == ["kernel0", "run"] and defined(parts[1]) == ["kernel1"]
    assert '@"counter" = internal global' in parts[0] and "counter" not in parts[1]


@pytest.mark.parametrize("with_variable", [False, True])
def test_the_parts_link_into_one_engine(with_variable):
    import ctypes

    from codegen.jit import compile_ir

    parts = split_module(small_module(with_variable), 2)
    compiled = compile_ir(parts, use_cache=False)
    assert len(compiled.objects) == 2
    assert compiled.function("run", ctypes.c_int64)() == (9 if with_variable else 3)
    with pytest.raises(ValueError, match="compiled as 2 modules"):
        _ = compiled.object_code


@pytest.mark.parametrize("profile", [False, True])
def test_a_step_in_parts_trains_as_the_step_whole(monkeypatch, profile):
    monkeypatch.setenv("SYMBACKPROP_CACHE", "0")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    Y = rng.integers(0, 3, 40)
    trained = {}
    for parts in (1, 2):
        monkeypatch.setattr(compile_module, "program_parts", lambda parts=parts: parts)
        loss, inputs, params = mlp()
        step = sb.compile_step(loss, inputs, params, sb.optim.Momentum(lr=0.1), profile=profile)
        assert step.llvm_ir.count("; ModuleID") == parts
        losses = [step.epoch(X, Y, batch_size=8, shuffle=True, seed=0) for _ in range(3)]
        trained[parts] = (losses, [p.value.copy() for p in params])
        if profile:  # every kernel counted its calls: 3 epochs of 5 minibatches
            assert {row.calls for row in step.profile.rows} == {15}
    assert trained[1][0] == trained[2][0]
    for whole, split in zip(trained[1][1], trained[2][1]):
        np.testing.assert_array_equal(whole, split)
