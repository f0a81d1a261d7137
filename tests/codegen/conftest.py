"""Fixtures for the LLVM back-end tests: a private code cache and a sample loop kernel."""

import pytest

from codegen import cache

# out[i] = a[i] + b[i] for i < n, float32, written by hand so that the JIT tests do not
# depend on the kernel emitters.
VADD_IR = r"""
define void @vadd(ptr %out, ptr %a, ptr %b, i64 %n) {
entry:
  %nonempty = icmp sgt i64 %n, 0
  br i1 %nonempty, label %loop, label %exit
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  %pa = getelementptr float, ptr %a, i64 %i
  %pb = getelementptr float, ptr %b, i64 %i
  %po = getelementptr float, ptr %out, i64 %i
  %x = load float, ptr %pa, align 4
  %y = load float, ptr %pb, align 4
  %sum = fadd float %x, %y
  store float %sum, ptr %po, align 4
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %loop, label %exit
exit:
  ret void
}
"""


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Keep every test's cache writes out of the user's cache directory."""
    directory = tmp_path_factory.mktemp("code-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.DIR_VAR, str(directory))
        mp.delenv(cache.ENABLE_VAR, raising=False)
        mp.delenv("SYMBACKPROP_DEBUG", raising=False)
        yield directory


@pytest.fixture
def vadd_ir():
    return VADD_IR
