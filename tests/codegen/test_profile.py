"""Kernel timings of programs compiled with ``profile=True``."""

import numpy as np
import pytest

import symbackprop as sb
from codegen.profile import COUNTERS_SUFFIX


def _model():
    x, y = sb.input("x", (None, 3)), sb.input("y", (None, 1))
    W = sb.param("W", (3, 5), init="glorot_uniform", seed=0)
    V = sb.param("V", (5, 1), init="glorot_uniform", seed=1)
    return x, y, [W, V], sb.mse(sb.tanh(x @ W) @ V, y)


DATA = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3), np.linspace(0, 1, 8, dtype=np.float32)[:, None]


def test_every_kernel_is_counted_once_per_step_and_per_minibatch():
    x, y, params, loss = _model()
    step = sb.compile_step(loss, [x, y], params, sb.optim.SGD(lr=0.1), profile=True)
    for _ in range(3):
        step(*DATA)
    assert [row.calls for row in step.profile.rows] == [3] * len(step.program.kernels)
    step.epoch(*DATA, batch_size=2, shuffle=False)  # four minibatches
    assert {row.calls for row in step.profile.rows} == {7}
    assert all(row.seconds > 0 and row.per_call > 0 for row in step.profile.rows)
    assert step.profile.total == pytest.approx(sum(row.seconds for row in step.profile.rows))
    step.profile.reset()
    assert step.profile.total == 0 and {row.calls for row in step.profile.rows} == {0}


def test_rows_name_the_kernels_in_program_order_and_the_table_lists_them_slowest_first():
    x, y, params, loss = _model()
    f = sb.compile([loss, *sb.grad(loss, params)], inputs=[x, y], profile=True)
    f(*DATA)
    assert [row.kernel for row in f.profile.rows] == [str(k) for k in f.program.kernels]
    assert [row.index for row in f.profile.rows] == list(range(len(f.program.kernels)))
    lines = f.profile.table().splitlines()
    assert len(lines) == len(f.program.kernels) + 2  # header, one line per kernel, total
    slowest_first = [row.kernel for row in sorted(f.profile.rows, key=lambda row: -row.seconds)]
    one_line = [" ".join(part.strip() for part in kernel.splitlines()) for kernel in slowest_first]
    assert any("\n" in kernel for kernel in slowest_first)  # a product with its epilogue
    assert all(line.endswith(kernel) for line, kernel in zip(lines[1:-1], one_line))
    assert len(f.profile.table(top=2).splitlines()) == 4
    assert "kernels" in repr(f.profile)


def test_profiling_changes_no_result_and_is_compiled_apart():
    x, y, params, loss = _model()
    plain = sb.compile([loss, *sb.grad(loss, params)], inputs=[x, y])
    timed = sb.compile([loss, *sb.grad(loss, params)], inputs=[x, y], profile=True)
    for a, b in zip(plain(*DATA), timed(*DATA)):
        np.testing.assert_array_equal(a, b)
    assert plain.profile is None
    assert COUNTERS_SUFFIX not in plain.llvm_ir and COUNTERS_SUFFIX in timed.llvm_ir
