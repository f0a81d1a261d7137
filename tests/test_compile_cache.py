"""The compiler's caches across processes: a second process loads instead of compiling,
a changed graph or option misses, and a damaged entry is rebuilt."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import symbackprop as sb
    from codegen import cache, library
    library.load()  # the shared kernel library has entries of its own; count the program's only
    cache.reset_statistics()
    activation, fast = sys.argv[1], sys.argv[2] == "fast"
    x = sb.input("x", (None, 3))
    y = sb.input("y", (None,), "int64")
    W = sb.param("W", (3, 4), init="glorot_uniform", seed=0)
    V = sb.param("V", (4, 2), init="glorot_uniform", seed=1)
    loss = sb.softmax_cross_entropy(getattr(sb, activation)(x @ W) @ V, y)
    step = sb.compile_step(loss, [x, y], [W, V], sb.optim.Momentum(lr=0.1), fast_math=fast)
    X = np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)
    losses = [step(X, np.array([0, 1, 0, 1, 1])) for _ in range(3)]
    print(json.dumps({"stats": cache.statistics(), "losses": losses, "modules": len(step.compiled.keys)}))
    """
)


def run(tmp_path, activation="tanh", fast="fast"):
    env = dict(os.environ, SYMBACKPROP_CACHE_DIR=str(tmp_path), SYMBACKPROP_CACHE="1")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, activation, fast], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_program_and_its_object_code(tmp_path):
    first = run(tmp_path)
    entries = 1 + first["modules"]  # the program and its modules' object code
    assert first["stats"]["hits"] == 0 and first["stats"]["stores"] == entries
    second = run(tmp_path)
    assert second["stats"] == {"hits": entries, "misses": 0, "stores": 0, "rejected": 0}
    assert second["losses"] == first["losses"]


def test_a_changed_graph_or_option_does_not_hit_the_old_entries(tmp_path):
    run(tmp_path)
    other_graph = run(tmp_path, activation="sigmoid")
    assert other_graph["stats"]["hits"] == 0
    other_option = run(tmp_path, fast="strict")
    assert other_option["stats"]["hits"] == 0


def test_damaged_entries_are_ignored_and_rebuilt(tmp_path):
    first = run(tmp_path)
    for entry in Path(tmp_path).glob("*.o"):
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    again = run(tmp_path)
    entries = 1 + first["modules"]  # the program and its modules' object code, all rebuilt
    assert again["stats"]["rejected"] == entries
    assert again["losses"] == first["losses"]
    third = run(tmp_path)
    assert third["stats"]["hits"] == entries


VARIANTS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import symbackprop as sb
    from codegen import library
    features, hidden, outputs = map(int, sys.argv[1:])
    x = sb.input("x", (None, features))
    W = sb.param("W", (features, hidden), init="glorot_uniform", seed=0)
    V = sb.param("V", (hidden, outputs), init="glorot_uniform", seed=1)
    X = np.linspace(-1, 1, 5 * features, dtype=np.float32).reshape(5, features)
    if outputs == 1:
        y = sb.input("y", (None, 1))
        loss, Y = sb.mse(sb.tanh(x @ W) @ V, y), X[:, :1].copy()
    else:
        y = sb.input("y", (None,), "int64")
        loss, Y = sb.softmax_cross_entropy(sb.tanh(x @ W) @ V, y), np.array([0, 1, 0, 1, outputs - 1])
    step = sb.compile_step(loss, [x, y], [W, V], sb.optim.SGD(lr=0.1))
    print(json.dumps({"loaded": library.loaded(), "loss": step(X, Y)}))
    """
)


@pytest.mark.parametrize(
    "shape, expected",
    [
        # x·W, δ·Vᵀ and hᵀ·δ: three of the library's eight variants
        ((8, 16, 6), ["sbp_matmul_float32_nn", "sbp_matmul_float32_nt", "sbp_matmul_float32_tn"]),
        # two inputs and one output: x·W (two terms), h·V and hᵀ·δ (one column) and δ·Vᵀ (one
        # term) are loops of the program's own; only xᵀ·δ1, a sum over the batch, is not
        ((2, 16, 1), ["sbp_matmul_float32_tn"]),
    ],
)
def test_a_program_loads_only_the_matmul_variants_it_calls(tmp_path, shape, expected):
    """The same variants whether the step is emitted (first process) or comes from the
    program cache (second)."""
    env = dict(os.environ, SYMBACKPROP_CACHE_DIR=str(tmp_path), SYMBACKPROP_CACHE="1")
    results = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", VARIANTS_SCRIPT, *map(str, shape)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert results[0]["loaded"] == results[1]["loaded"] == expected
    assert results[0]["loss"] == results[1]["loss"]
