"""Modules compiled in parallel threads: the same object code as one after the other, errors
raised in the caller's thread, and a fallback where threads are not available."""

import ctypes
import threading

import llvmlite.binding as llvm
import pytest

from codegen import cache, jit, library, llvm_threads
from codegen.jit import CompileError, CompileOptions, compile_ir, keyed_cache_key, store_keyed_all

pytestmark = pytest.mark.skipif(not llvm_threads.available(), reason="llvmlite's C functions are not reachable")

SCALE = """
define void @scale{0}(float* noalias %out, float* noalias %in, i64 %n) {{
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %p = getelementptr inbounds float, float* %in, i64 %i
  %x = load float, float* %p
  %y = fmul float %x, {0}.0
  %q = getelementptr inbounds float, float* %out, i64 %i
  store float %y, float* %q
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}}
"""
MODULES = [SCALE.format(k) for k in (2, 3, 5, 7)]


def sequential(texts, options=None):
    options = options or CompileOptions()
    return [jit._compile_object(text, options, {})[0] for text in texts]


@pytest.mark.parametrize(
    "options",
    [
        CompileOptions(),
        CompileOptions(speed_level=2, vectorize=False, unroll=False),
        CompileOptions(interprocedural=False, as_written=("scale3",)),  # the per-function pipeline
    ],
)
def test_threads_make_the_object_code_of_one_module_after_the_other(options):
    threaded = llvm_threads.compile_modules(MODULES, options)
    assert [code for code, _ in threaded] == sequential(MODULES, options)


def test_the_kernel_library_compiles_in_threads_as_one_module_after_the_other():
    texts = [library._unit_ir(unit) for unit in ("float64:kernels", "float64:direct", "float64:nt")]
    threaded = llvm_threads.compile_modules(texts, library.LIBRARY_OPTIONS)
    assert [code for code, _ in threaded] == sequential(texts, library.LIBRARY_OPTIONS)


def test_the_optimised_ir_is_kept_when_asked():
    (code, optimised), *_ = llvm_threads.compile_modules(MODULES[:2], CompileOptions(), keep_ir=True)
    assert code and "define void @scale2" in optimised and " x float>" in optimised  # vectorised


@pytest.mark.parametrize(
    "broken, message",
    [
        ("define void @f() { ret i32 0 }", "invalid LLVM IR"),  # does not parse
        ("define i32 @f() {\nentry:\n  ret i32 %x\n}", "invalid LLVM IR"),  # an undefined value
    ],
)
def test_a_module_that_does_not_compile_raises_in_the_calling_thread(broken, message):
    for position in (0, 1):  # in a thread of its own, or in the caller's
        texts = [MODULES[0], MODULES[1]]
        texts[position] = broken
        with pytest.raises(CompileError, match=message):
            llvm_threads.compile_modules(texts, CompileOptions())
    assert not any(thread.name == "llvm-compile" for thread in threading.enumerate())  # all joined


def test_other_threads_may_use_llvmlite_meanwhile():
    """A thread parsing through llvmlite's locked functions, while modules compile."""
    stop, parsed = threading.Event(), []

    def parse():
        while not stop.is_set():
            parsed.append(str(llvm.parse_assembly(MODULES[0])).count("fmul"))

    reader = threading.Thread(target=parse)
    reader.start()
    try:
        for _ in range(3):
            assert [code for code, _ in llvm_threads.compile_modules(MODULES, CompileOptions())] == sequential(MODULES)
    finally:
        stop.set()
        reader.join()
    assert parsed and set(parsed) == {1}


def test_without_threads_the_modules_compile_one_after_the_other(monkeypatch):
    expected = compile_ir(MODULES, use_cache=False)
    monkeypatch.setattr(llvm_threads, "_C", None)
    assert not llvm_threads.available()
    with pytest.raises(RuntimeError, match="not reachable"):
        llvm_threads.compile_modules(MODULES, CompileOptions())
    compiled = compile_ir(MODULES, use_cache=False)
    assert compiled.objects == expected.objects
    data = (ctypes.c_float * 4)(1, 2, 3, 4)
    out = (ctypes.c_float * 4)()
    compiled.function("scale7", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(out, data, 4)
    assert list(out) == [7, 14, 21, 28]


def test_a_list_of_modules_loads_what_the_cache_has_and_compiles_the_rest(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMBACKPROP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMBACKPROP_CACHE", "1")
    first = compile_ir(MODULES[:2])
    mixed = compile_ir(MODULES[1:3])
    assert not mixed.from_cache and mixed.keys[0] == first.keys[1]
    assert compile_ir(MODULES[1:3]).from_cache
    with pytest.raises(ValueError, match="empty"):
        compile_ir([])


def test_keyed_modules_are_stored_a_few_at_a_time(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMBACKPROP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMBACKPROP_CACHE", "1")
    builds = {f"scale by {k}": (lambda k=k: SCALE.format(k)) for k in (2, 3, 5)}
    assert store_keyed_all({"scale by 2": builds["scale by 2"]}) == ["scale by 2"]
    assert store_keyed_all(builds, threads=2) == ["scale by 3", "scale by 5"]  # the first was there
    assert store_keyed_all(builds) == []
    for identity, build in builds.items():
        stored = cache.load(keyed_cache_key(identity))
        assert stored == sequential([build()])[0]
