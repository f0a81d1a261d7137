"""The IR writer: LLVM reads its text of every module as it reads llvmlite's."""

import llvmlite.binding as llvm
import llvmlite.ir as ir
import pytest

import symbackprop as sb
from codegen import compile as compile_module
from codegen import library
from codegen import step as step_module
from codegen.ir_text import IRWriter, module_text
from codegen.matmul import kernel_parts
from codegen.target import host_target_machine


def as_llvm_reads_it(text: str) -> str:
    host_target_machine()  # LLVM initialised
    return str(llvm.parse_assembly(text))


def assert_read_alike(module: ir.Module) -> None:
    ours = module_text(module)
    assert as_llvm_reads_it(ours) == as_llvm_reads_it(str(module))


def emitted_modules(monkeypatch, build) -> list[ir.Module]:
    """The program modules that ``build()`` emits (before any split)."""
    modules = []
    for owner in (step_module, compile_module):
        emit = owner.emit_program

        def keep(*args, emit=emit, **kwargs):
            modules.append(emit(*args, **kwargs))
            return modules[-1]

        monkeypatch.setattr(owner, "emit_program", keep)
    monkeypatch.setenv("SYMBACKPROP_CACHE", "0")
    build()
    assert modules
    return modules


def mlp(depth: int, dtype: str = "float32"):
    x = sb.input("x", (None, 9), dtype)
    y = sb.input("y", (None,), "int64")
    h, params = x, []
    for i in range(depth):
        W = sb.param(f"W{i}", (h.shape[1], 40), init="glorot_uniform", seed=i, dtype=dtype)
        b = sb.param(f"b{i}", (40,), dtype=dtype)
        h = sb.tanh(h @ W + b) if i % 2 else sb.relu(h @ W + b)
        params += [W, b]
    V = sb.param("V", (40, 4), init="glorot_uniform", seed=99, dtype=dtype)
    return sb.softmax_cross_entropy(h @ V, y), [x, y], [*params, V]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_module_of_the_kernel_library_reads_alike(monkeypatch, dtype):
    written = []

    def checked(module):
        assert_read_alike(module)
        written.append(module.name)
        return module_text(module)

    monkeypatch.setattr(library, "module_text", checked)
    units = [f"{dtype}:{part}" for part in kernel_parts(dtype)] + [f"{dtype}:{t}" for t in ("nn", "nt", "tn", "tt")]
    for unit in units:
        library._unit_ir(unit)
    assert written == units


@pytest.mark.parametrize("optimizer", [sb.optim.SGD(lr=0.1), sb.optim.Momentum(lr=0.1), sb.optim.Adam(lr=0.01)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_steps_read_alike(monkeypatch, optimizer, dtype):
    loss, inputs, params = mlp(3, dtype)
    build = lambda: sb.compile_step(loss, inputs, params, optimizer)  # noqa: E731
    for module in emitted_modules(monkeypatch, build):
        assert_read_alike(module)


def test_a_profiled_function_with_every_kind_of_kernel_reads_alike(monkeypatch):
    x = sb.input("x", (None, 17))
    W = sb.param("W", (17, 3), init="glorot_uniform", seed=0)
    z = x @ W
    outputs = [sb.sum(sb.exp(z) * sb.sigmoid(z)), sb.max(z, axis=1), sb.log(sb.softmax(z, axis=1)), sb.sqrt(x * x + 1)]
    build = lambda: sb.compile(outputs, inputs=[x], profile=True)  # noqa: E731
    for module in emitted_modules(monkeypatch, build):
        assert_read_alike(module)


def test_forms_the_code_generator_rarely_writes_read_alike():
    """Fast-math flags, metadata, quoted labels, calls with attributes, allocas, switches,
    globals and named metadata: each written by the writer's rules or by llvmlite."""
    m = ir.Module(name="forms")
    f64, i64 = ir.DoubleType(), ir.IntType(64)
    counter = ir.GlobalVariable(m, i64, "counter")
    counter.initializer = ir.Constant(i64, 0)
    callee = ir.Function(m, ir.FunctionType(f64, [f64, f64]), "callee")
    callee.attributes.add("nounwind")
    variadic = ir.Function(m, ir.FunctionType(ir.IntType(32), [i64], var_arg=True), "variadic")
    fn = ir.Function(m, ir.FunctionType(f64, [f64, i64]), "forms")
    x, n = fn.args
    entry, other, odd = (fn.append_basic_block(name) for name in ("entry", "other block", 'odd "name"'))
    b = ir.IRBuilder(entry)
    slot = b.alloca(f64, name="slot")
    b.store(x, slot, align=8)
    y = b.fadd(x, b.load(slot, align=8), name="y", flags=("fast",))
    vector = b.insert_element(ir.Constant(ir.VectorType(f64, 4), None), y, ir.Constant(ir.IntType(32), 0))
    shuffled = b.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(ir.IntType(32), 4), [3, 2, 1, 0]))
    lane = b.extract_element(shuffled, ir.Constant(ir.IntType(32), 0))
    called = b.call(callee, [lane, ir.Constant(f64, -0.0)], fastmath=("nnan",))
    tail = b.call(callee, [called, called], tail=True)
    b.call(variadic, [n, x])
    count = b.add(b.load(counter), n)
    b.store(count, counter)
    chosen = b.select(b.fcmp_ordered("<", tail, x, flags=("nnan",)), tail, x)
    loop = b.branch(other)
    loop.set_metadata(
        "llvm.loop",
        m.add_metadata(
            [m.add_metadata([ir.MetaDataString(m, "llvm.loop.unroll.count"), ir.Constant(ir.IntType(32), 4)])]
        ),
    )
    b.position_at_end(other)
    phi = b.phi(f64, name="merged")
    phi.add_incoming(chosen, entry)
    switch = b.switch(n, odd)
    switch.add_case(ir.Constant(i64, 3), odd)
    b.position_at_end(odd)
    b.ret(b.fmul(phi, ir.Constant(f64, 0.1)))
    m.add_named_metadata("named", [ir.MetaDataString(m, "a")])
    assert_read_alike(m)


def test_a_function_written_again_changes_only_its_first_line():
    m = ir.Module()
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), []), "f")
    fn.linkage = "internal"
    ir.IRBuilder(fn.append_basic_block("entry")).ret_void()
    writer = IRWriter()
    internal = writer.function(fn)
    fn.linkage = ""
    external = writer.function(fn)
    assert internal.startswith("define internal void") and external.startswith("define void")
    assert internal.split("\n", 1)[1] == external.split("\n", 1)[1]
