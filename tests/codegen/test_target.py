"""Target description, 512-bit vector preference, and the optimisation pipeline."""

import platform
import re
import threading

import llvmlite.binding as llvm
import pytest

from codegen.target import (
    TargetSpec,
    code_generation,
    emit_assembly,
    host_spec,
    host_target_machine,
    optimize,
    prepare_module,
    target_machine,
    vector_features,
)


def test_host_spec_uses_host_cpu_name_and_features():
    spec = host_spec()
    assert spec.cpu == llvm.get_host_cpu_name()
    assert spec.triple == llvm.get_process_triple()
    host_flags = set(llvm.get_host_cpu_features().flatten().split(","))
    assert host_flags <= set(spec.features.split(","))


@pytest.mark.parametrize(
    "features, expected",
    [
        ("+avx2,+fma", "+avx2,+fma"),
        ("+avx2,-avx512f", "+avx2,-avx512f"),
        ("+avx512f", "+avx512f,-prefer-256-bit"),
        ("+avx512f,-prefer-256-bit", "+avx512f,-prefer-256-bit"),
        ("", ""),
    ],
)
def test_vector_features_drops_256_bit_preference_only_with_avx512(features, expected):
    assert vector_features(features) == expected


def _register_counts(vadd_ir, spec):
    module = llvm.parse_assembly(vadd_ir)
    machine = target_machine(spec)
    optimize(module, machine=machine)
    asm = emit_assembly(module, machine)
    return {reg: len(re.findall(rf"%{reg}\d", asm)) for reg in ("xmm", "ymm", "zmm")}


def test_avx512_cpu_gets_zmm_loops_only_with_adjusted_features(vadd_ir):
    # Assembly for another CPU can be generated (not run) on any x86-64 host.
    if not host_spec().triple.startswith("x86_64"):
        pytest.skip("x86-64 only")
    triple = host_spec().triple
    plain = _register_counts(vadd_ir, TargetSpec(triple, "skylake-avx512", "+avx512f"))
    adjusted = _register_counts(vadd_ir, TargetSpec(triple, "skylake-avx512", vector_features("+avx512f")))
    print(f"skylake-avx512 as tuned by LLVM: {plain}; with -prefer-256-bit: {adjusted}")
    assert plain["zmm"] == 0 and plain["ymm"] > 0
    assert adjusted["zmm"] > 0


def test_optimize_vectorizes_for_the_host_and_can_be_told_not_to(vadd_ir):
    lanes = host_spec().vector_bits // 32
    vectorized = str(optimize(llvm.parse_assembly(vadd_ir)))
    scalar = str(optimize(llvm.parse_assembly(vadd_ir), vectorize=False))
    assert f"<{lanes} x float>" in vectorized
    assert "x float>" not in scalar
    assert host_spec().triple in vectorized


@pytest.mark.parametrize("level", [-1, 4, 2.5])
def test_optimize_rejects_bad_speed_level(vadd_ir, level):
    with pytest.raises(ValueError, match="speed_level"):
        optimize(llvm.parse_assembly(vadd_ir), level)


_TWO_FUNCTIONS = """
define internal i32 @helper(i32 %x) {
  %a = add i32 %x, 0
  %b = mul i32 %a, 1
  ret i32 %b
}
define internal i32 @kept.helper(i32 %x) {
  %a = add i32 %x, 0
  %b = mul i32 %a, 1
  ret i32 %b
}
define i32 @entry(i32 %x) {
  %y = call i32 @helper(i32 %x)
  %z = call i32 @kept.helper(i32 %y)
  ret i32 %z
}
"""


def _body(module: llvm.ModuleRef, name: str) -> str:
    return str(module.get_function(name))


def test_per_function_pipeline_simplifies_each_function_without_inlining():
    module = optimize(llvm.parse_assembly(_TWO_FUNCTIONS), interprocedural=False, as_written=("kept.",))
    assert "ret i32 %x" in _body(module, "helper")  # simplified in place
    assert "add i32 %x, 0" in _body(module, "kept.helper")  # left as written
    assert "call i32 @helper" in _body(module, "entry")  # nothing inlined
    inlined = optimize(llvm.parse_assembly(_TWO_FUNCTIONS))
    assert "call" not in _body(inlined, "entry")


def test_as_written_needs_the_per_function_pipeline():
    with pytest.raises(ValueError, match="interprocedural=False"):
        optimize(llvm.parse_assembly(_TWO_FUNCTIONS), as_written=("kept.",))


# x[i] = x[i] * 3 for i < 16 (a constant count), and the same loop asking to be unrolled twice.
_CONSTANT_LOOP = """
define void @{name}(ptr noalias %x) {{
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  %p = getelementptr float, ptr %x, i64 %i
  %v = load float, ptr %p, align 4
  %w = fmul float %v, 3.0
  store float %w, ptr %p, align 4
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, 16
  br i1 %more, label %loop, label %exit{hint}
exit:
  ret void
}}
{metadata}
"""


def _stores(name: str, unroll: bool, hint: str = "", metadata: str = "") -> int:
    module = llvm.parse_assembly(_CONSTANT_LOOP.format(name=name, hint=hint, metadata=metadata))
    return _body(optimize(module, vectorize=False, unroll=unroll), name).count("store float")


def test_unrolling_left_to_llvm_or_only_where_a_loop_asks():
    assert _stores("free", unroll=True) == 16  # LLVM's choice: a constant count, fully unrolled
    assert _stores("kept", unroll=False) == 1  # no unrolling but where asked
    asked = ", !llvm.loop !0", '!0 = distinct !{!0, !1}\n!1 = !{!"llvm.loop.unroll.count", i32 2}'
    assert _stores("asked", False, *asked) == 2


# Every third double of an array, summed: loop strength reduction makes the index a pointer
# that steps by 24 bytes; without it the loop multiplies its counter by 3 (x86: one lea).
_STRIDED_SUM = """
define double @strided(ptr noalias %a, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %s = phi double [0.0, %entry], [%sum, %loop]
  %j = mul i64 %i, 3
  %p = getelementptr double, ptr %a, i64 %j
  %x = load double, ptr %p
  %sum = fadd double %s, %x
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %loop, label %exit
exit:
  ret double %sum
}
"""


def _strided_assembly() -> str:
    module = llvm.parse_assembly(_STRIDED_SUM)
    prepare_module(module)
    return host_target_machine().emit_assembly(module)  # LLVM's own call: flags as they stand


def test_code_generation_sets_its_flags_only_while_a_block_is_open_in_any_thread():
    outside = _strided_assembly()
    with code_generation():
        inside = _strided_assembly()
    assert inside != outside
    assert _strided_assembly() == outside  # LLVM's defaults restored
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "addq\t$24" in outside and "addq\t$24" not in inside

    entered, release = threading.Event(), threading.Event()

    def other_thread():
        with code_generation():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert entered.wait(10)
        with code_generation():
            assert _strided_assembly() == inside
        assert _strided_assembly() == inside  # the other thread's block is still open
    finally:
        release.set()
        thread.join()
    assert _strided_assembly() == outside


def test_code_generation_flags_are_part_of_the_cache_token():
    assert "codegen=-disable-lsr=true" in host_spec().cache_token()
