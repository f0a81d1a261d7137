"""The program cache's fast paths: expressions stored so that loading does not evaluate them
again, and the source hash kept under the files' sizes and modification times."""

import os
import pickle

import numpy as np
import pytest
import sympy

import symbackprop as sb
from codegen import cache, program_cache
from codegen.program_cache import dumps, rebuild_expression
from symbackprop.scalar import sigmoid

t, u = sympy.symbols("t u", real=True)

BODIES = [
    t * sigmoid(t),
    sigmoid(t) * (1 - sigmoid(t)) * (t + 1),
    -2 * t / (1 + t**2) ** sympy.Rational(3, 2),
    sympy.tanh(t) ** 2 - sympy.Float("0.25") * u,
    sympy.Max(t, 0) + sympy.Heaviside(t, 0) * u,
    sympy.Piecewise((t, t > u), (u, True)),
    sympy.exp(-t) * sympy.log(1 + sympy.exp(t)) - sympy.sqrt(u),
    sympy.Lambda(t, t**2),  # no ``evaluate`` argument: stored as SymPy stores it
    sympy.Interval(0, t),
]


@pytest.mark.parametrize("body", BODIES, ids=str)
def test_expressions_come_back_identical(body):
    loaded = pickle.loads(dumps(body))
    assert loaded == body
    assert sympy.srepr(loaded) == sympy.srepr(body)
    assert loaded.free_symbols == body.free_symbols


class Reversed(sympy.Expr):
    """A class whose unevaluated form differs from its evaluated one: built with
    ``evaluate=False`` it takes its arguments in reverse."""

    def __new__(cls, *args, evaluate=True):
        return super().__new__(cls, *(args if evaluate else args[::-1]))


def test_an_expression_that_evaluate_false_would_change_is_stored_the_ordinary_way():
    x, y = sympy.symbols("x y")
    assert rebuild_expression(Reversed, (x, y)) != Reversed(x, y)
    loaded = pickle.loads(dumps(Reversed(x, y) + 1))
    assert loaded == Reversed(x, y) + 1
    assert loaded.args[1].args == (x, y)


def test_a_loaded_program_prints_and_runs_as_the_compiled_one(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.DIR_VAR, str(tmp_path))
    x = sb.input("x", (None, 3))
    w = sb.param("w", (3, 2), init=np.arange(6.0).reshape(3, 2) / 10)
    out = sb.softplus(x @ w) * sb.sigmoid(x @ w) - sb.relu(x @ w) ** 3
    targets = [out, *sb.grad(out.sum(), [w])]
    first = sb.compile(targets, inputs=[x])
    cache.reset_statistics()
    second = sb.compile(targets, inputs=[x])
    assert cache.statistics()["hits"] == 1 + len(second.compiled.keys)  # the program and its modules' code
    assert second.llvm_ir == first.llvm_ir and second.compiled.keys == first.compiled.keys
    assert second.kernel_ir == first.kernel_ir
    data = np.linspace(-2, 2, 12).reshape(4, 3).astype(np.float32)
    for a, b in zip(first(data), second(data)):
        np.testing.assert_array_equal(a, b)


def test_the_source_hash_is_read_back_while_the_files_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.DIR_VAR, str(tmp_path))
    expected = program_cache._content_hash(program_cache._source_files())
    cache.reset_statistics()
    assert program_cache.source_token.__wrapped__() == expected
    assert cache.statistics()["stores"] == 1
    assert program_cache.source_token.__wrapped__() == expected
    assert cache.statistics()["hits"] == 1


def test_an_edited_file_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.DIR_VAR, str(tmp_path))
    package = tmp_path / "package"
    package.mkdir()
    module = package / "module.py"
    module.write_text("A = 1\n")
    monkeypatch.setattr(program_cache, "_source_files", lambda: list(os.scandir(package)))
    before = program_cache.source_token.__wrapped__()
    module.write_text("A = 2\n")  # same size; a later modification time
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000))
    after = program_cache.source_token.__wrapped__()
    assert after != before
    assert after == program_cache._content_hash(list(os.scandir(package)))


def test_without_the_cache_the_source_is_hashed_every_time(monkeypatch):
    monkeypatch.setenv(cache.ENABLE_VAR, "0")
    cache.reset_statistics()
    assert program_cache.source_token.__wrapped__() == program_cache._content_hash(program_cache._source_files())
    assert cache.statistics() == {"hits": 0, "misses": 0, "stores": 0, "rejected": 0}
