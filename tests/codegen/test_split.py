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
from codegen.compile import AS_WRITTEN_OPTIONS, PROGRAM_OPTIONS
from codegen.ir_text import module_text
from codegen.split import is_as_written, mark_as_written, split_module

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
    assert 2 <= len(parts) <= 4  # at most two of each kind
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


def test_one_part_is_one_module_of_each_kind(emitted):
    parts = split_module(emitted, 1)
    assert [is_as_written(part) for part in parts] == [True, False]  # run and epoch are written as they run
    with pytest.raises(ValueError, match="parts must be at least 1"):
        split_module(emitted, 0)


def test_a_module_with_nothing_marked_in_one_part_is_the_module_as_it_was():
    module = small_module(with_variable=False)
    assert split_module(module, 1) == [module_text(module)]


def test_functions_marked_as_written_compile_without_passes(emitted):
    whole = str(emitted)
    parts = split_module(emitted, 2)
    written = [part for part in parts if is_as_written(part)]
    assert written and len(written) < len(parts)
    assert all('ModuleID = "run' in part and part.splitlines()[0].endswith('.as_written"') for part in written)
    kinds = {name: is_as_written(part) for part in parts for name in defined(part)}
    assert kinds["run"] and kinds["epoch"]
    # A product of the library with its map of each block: the kernel, the map and the
    # callback that unpacks the map's arguments go together, written in vectors.
    products = [name for name in kinds if name.endswith("_matmulmap") and f"{name}.block" in kinds]
    assert products and all(kinds[name] and kinds[f"{name}.block"] and kinds[f"{name}.epilogue"] for name in products)
    assert str(emitted) == whole


def test_each_module_of_a_step_compiles_with_the_options_of_its_kind(monkeypatch):
    monkeypatch.setenv("SYMBACKPROP_CACHE", "0")
    loss, inputs, params = mlp()
    step = sb.compile_step(loss, inputs, params, sb.optim.SGD(lr=0.1))
    texts = step.llvm_ir.split("; ModuleID")[1:]
    kinds = [AS_WRITTEN_OPTIONS if is_as_written("; ModuleID" + text) else PROGRAM_OPTIONS for text in texts]
    assert list(step.compiled.options) == kinds and AS_WRITTEN_OPTIONS in kinds and PROGRAM_OPTIONS in kinds


def test_a_group_is_written_only_if_each_of_its_functions_is():
    module = small_module(with_variable=False)
    kernel0, kernel1 = module.get_global("kernel0"), module.get_global("kernel1")
    mark_as_written(module.get_global("run"))
    mark_as_written(kernel0)
    parts = split_module(module, 1)
    home = {name: is_as_written(part) for part in parts for name in defined(part)}
    assert home == {"run": True, "kernel0": True, "kernel1": False}
    assert kernel1 is module.get_global("kernel1")


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
        assert parts <= step.llvm_ir.count("; ModuleID") <= 2 * parts  # at most parts of each kind
        losses = [step.epoch(X, Y, batch_size=8, shuffle=True, seed=0) for _ in range(3)]
        trained[parts] = (losses, [p.value.copy() for p in params])
        if profile:  # every kernel counted its calls: 3 epochs of 5 minibatches
            assert {row.calls for row in step.profile.rows} == {15}
    assert trained[1][0] == trained[2][0]
    for whole, split in zip(trained[1][1], trained[2][1]):
        np.testing.assert_array_equal(whole, split)
