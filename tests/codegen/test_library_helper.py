"""The kernel library's helper process: it compiles the variants a program calls into the
disk cache while the program compiles, and the two processes split the variants."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen import cache, library

CHILD = r"""
import json, sys, time
import numpy as np
import symbackprop as sb
from codegen import cache, library
x = sb.input("x", (None, 96), "float64")
w = sb.param("w", (96, 96), init="glorot_uniform", seed=0, dtype="float64")
sb_outputs = [x @ w, x.T @ x, x @ w.T]
if sys.argv[1] == "missing":
    sys.executable = "/nonexistent/python"  # the helper cannot start
elif sys.argv[1] == "failing":
    sys.executable = "/bin/false"  # the helper starts, compiles nothing and fails
f = sb.compile(sb_outputs, inputs=[x])
X = np.random.default_rng(0).standard_normal((96, 96))
for got, want in zip(f(X), [X @ w.value, X.T @ X, X @ w.value.T]):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
print(json.dumps({"loaded": library.loaded(), "stats": cache.statistics()}))
"""


def run_child(tmp_path, mode: str, **env) -> tuple[dict, str]:
    environment = {"SYMBACKPROP_CACHE_DIR": str(tmp_path), "SYMBACKPROP_DEBUG": "1", **env}
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


def test_a_cold_compile_shares_the_variants_with_a_helper(tmp_path):
    result, log = run_child(tmp_path, "normal")
    assert "library helper" in log and "compiles float64:nn, float64:nt, float64:tn" in log
    assert {"sbp_matmul_float64_nn", "sbp_matmul_float64_nt", "sbp_matmul_float64_tn"} <= set(result["loaded"])
    assert not list(tmp_path.glob("*.claim-*"))  # every claim released
    # A second process finds everything in the cache: no helper, nothing compiled.
    again, log = run_child(tmp_path, "normal")
    assert "library helper" not in log and again["stats"]["stores"] == 0


def test_without_a_helper_or_with_a_failing_one_this_process_compiles(tmp_path):
    result, log = run_child(tmp_path / "off", "normal", SYMBACKPROP_COMPILE_HELPER="0")
    assert "library helper" not in log and "sbp_matmul_float64_nn" in result["loaded"]
    result, log = run_child(tmp_path / "missing", "missing")
    assert "no library helper" in log and "sbp_matmul_float64_tn" in result["loaded"]
    if Path("/bin/false").exists():
        result, log = run_child(tmp_path / "failing", "failing")
        assert "exited with 1" in log or "library helper" in log
        assert "sbp_matmul_float64_tn" in result["loaded"]


def test_prefetch_starts_nothing_for_loaded_or_cached_variants(monkeypatch):
    variant = ("float32", False, False)
    library.load_variant(*variant)
    assert not library.prefetch([variant])
    monkeypatch.setenv(library.HELPER_VAR, "off")
    assert not library.helper_enabled()
    assert not library.prefetch([("float64", True, True)])


@pytest.mark.parametrize("group", [1, 12345])
def test_a_claim_is_taken_once_per_group_until_released(tmp_path, monkeypatch, group):
    monkeypatch.setenv("SYMBACKPROP_CACHE_DIR", str(tmp_path))
    key = "ab" * 32
    assert cache.claim(key, group) and not cache.claim(key, group)
    assert cache.claim(key, group + 1)  # another group's claim is another file
    cache.release(key, group)
    assert cache.claim(key, group)
    assert cache.clear() == 2 and not list(tmp_path.iterdir())
