"""The kernel library's helper process: it compiles the modules a program calls (variants
and the kernel parts they link to) into the disk cache while the program compiles, and the
two processes split the modules."""

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import pytest

from codegen import cache, library
from codegen.matmul import MatmulKernels, emit_kernel_part, kernel_parts, matmul_workspace_size
from codegen.target import host_target_machine, prepare_module

CHILD = r"""
import json, sys, time
import numpy as np
import symbackprop as sb
from codegen import cache, library
x = sb.input("x", (None, 96), "float64")
w = sb.param("w", (96, 96), init="glorot_uniform", seed=0, dtype="float64")
sb_outputs = [x @ w, x.T @ x, x @ w.T]
if sys.argv[1] == "missing":
    sys.executable = "/nonexistent/python"  # a new interpreter cannot start
elif sys.argv[1] == "failing":
    sys.executable = "/bin/false"  # a new interpreter starts, compiles nothing and fails
elif sys.argv[1] == "failing fork":
    library._main = lambda *arguments: 1 / 0  # the forked helper fails at once
elif sys.argv[1] == "thread":
    import threading
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()  # no fork beside it
f = sb.compile(sb_outputs, inputs=[x])
X = np.random.default_rng(0).standard_normal((96, 96))
for got, want in zip(f(X), [X @ w.value, X.T @ X, X @ w.value.T]):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
print(json.dumps({"loaded": library.loaded(), "stats": cache.statistics()}))
"""


def run_child(tmp_path, mode: str, cwd=None, **env) -> tuple[dict, str]:
    environment = {"SYMBACKPROP_CACHE_DIR": str(tmp_path), "SYMBACKPROP_DEBUG": "1", **env}
    root = str(Path(__file__).resolve().parents[2])  # this checkout, ahead of the working directory
    completed = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r})\n{CHILD}", mode],
        env={**os.environ, **environment},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_a_cold_compile_shares_the_variants_with_a_helper(tmp_path, mode):
    result, log = run_child(tmp_path, "normal", SYMBACKPROP_COMPILE_HELPER={"fork": "1", "spawn": "spawn"}[mode])
    parts = [f"float64:{part}" for part in kernel_parts("float64")]
    units = ", ".join([*parts, "float64:nn", "float64:nt", "float64:tn"])
    # Started before the program was lowered, on the kernel parts, then handed its modules.
    standby = re.search(rf"library helper (\d+) \({mode}\) on standby, compiling {', '.join(parts)}\n", log)
    assert standby, log
    assert f"library helper {standby.group(1)} compiles {units}" in log
    assert {"sbp_matmul_float64_nn", "sbp_matmul_float64_nt", "sbp_matmul_float64_tn"} <= set(result["loaded"])
    assert not list(tmp_path.glob("*.claim-*"))  # every claim released
    # A second process finds everything in the cache: no helper, nothing compiled.
    again, log = run_child(tmp_path, "normal")
    assert "library helper" not in log and again["stats"]["stores"] == 0


def test_the_helper_imports_this_package_not_one_in_the_working_directory(tmp_path):
    """A ``codegen`` package where the program runs (a user's own) is not the helper's."""
    decoy = tmp_path / "work" / "codegen"
    decoy.mkdir(parents=True)
    marker = tmp_path / "decoy imported"
    (decoy / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (decoy / "library.py").write_text("raise SystemExit(3)\n")
    result, log = run_child(tmp_path / "cache", "normal", cwd=tmp_path / "work")
    assert "library helper" in log and "exited with" not in log
    assert not marker.exists()
    assert "sbp_matmul_float64_nn" in result["loaded"]


def test_without_a_helper_or_with_a_failing_one_this_process_compiles(tmp_path):
    result, log = run_child(tmp_path / "off", "normal", SYMBACKPROP_COMPILE_HELPER="0")
    assert "library helper" not in log and "sbp_matmul_float64_nn" in result["loaded"]
    result, log = run_child(tmp_path / "missing", "missing", SYMBACKPROP_COMPILE_HELPER="spawn")
    assert "no library helper" in log and "sbp_matmul_float64_tn" in result["loaded"]
    if Path("/bin/false").exists():
        result, log = run_child(tmp_path / "failing", "failing", SYMBACKPROP_COMPILE_HELPER="spawn")
        assert "exited with 1" in log or "library helper" in log
        assert "sbp_matmul_float64_tn" in result["loaded"]
    result, log = run_child(tmp_path / "failing fork", "failing fork")
    assert "(fork) on standby" in log and "exited with 1" in log, log
    assert "sbp_matmul_float64_tn" in result["loaded"]
    assert not list((tmp_path / "failing fork").glob("*.claim-*"))


def test_beside_another_thread_the_helper_is_a_new_interpreter(tmp_path):
    """A forked child would lack the other thread, and any lock it held: no fork then."""
    result, log = run_child(tmp_path, "thread")
    assert "(spawn) on standby" in log and "exited with" not in log, log
    assert "sbp_matmul_float64_nt" in result["loaded"]


def test_prefetch_starts_nothing_for_loaded_or_cached_variants(monkeypatch):
    variant = ("float32", False, False)
    library.load_variant(*variant)
    assert not library.prefetch([variant])
    monkeypatch.setenv(library.HELPER_VAR, "off")
    assert not library.helper_enabled()
    assert not library.prefetch([("float64", True, True)])


def test_a_helper_on_standby_handed_nothing_exits(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBACKPROP_CACHE_DIR", str(tmp_path))
    started = []
    start = library._start_helper
    monkeypatch.setattr(library, "_start_helper", lambda *a, **k: started.append(start(*a, **k)) or started[-1])
    loaded = library._loaded
    monkeypatch.setattr(library, "_loaded", {})  # as in a process that has loaded nothing yet
    with library.helper_on_standby(["float64", "int32"]):
        assert library._standby is started[0]
    assert library._standby is None and started[0].wait(timeout=60) == 0
    # Let go at once, it stopped after the kernel part at hand, if it had begun one.
    assert len(list(tmp_path.glob("*.o"))) <= 1 and not list(tmp_path.glob("*.claim-*"))
    # Nothing to wait for: the library loaded in this process, or helpers off.
    monkeypatch.setattr(library, "_loaded", loaded)
    library.load_variants([("float32", *pair) for pair in library._STEP_TRANSPOSITIONS])
    with library.helper_on_standby(["float32"]):
        assert library._standby is None
    monkeypatch.setenv(library.HELPER_VAR, "0")
    with library.helper_on_standby(["float64"]):
        assert library._standby is None
    assert len(started) == 1


@pytest.mark.parametrize("group", [1, 12345])
def test_a_claim_is_taken_once_per_group_until_released(tmp_path, monkeypatch, group):
    monkeypatch.setenv("SYMBACKPROP_CACHE_DIR", str(tmp_path))
    key = "ab" * 32
    assert cache.claim(key, group) and not cache.claim(key, group)
    assert cache.claim(key, group + 1)  # another group's claim is another file
    cache.release(key, group)
    assert cache.claim(key, group)
    assert cache.clear() == 2 and not list(tmp_path.iterdir())


def test_variants_link_to_the_kernel_parts_they_share():
    # Parts first, each once, then the variants: every variant shares the micro-kernels, the
    # kernels on unpacked operands and the packing functions, and defines none of them.
    units = library._units([("float32", True, False), ("float32", False, True), ("float32", False, False)])
    parts = [f"float32:{part}" for part in kernel_parts("float32")]
    assert units == [*parts, "float32:nn", "float32:nt", "float32:tn"]
    assert {"float32:packing", "float32:kernels", "float32:direct"} <= set(parts)
    variant_ir = library._unit_ir("float64:nt")
    for part in kernel_parts("float64"):
        part_ir = library._unit_ir(f"float64:{part}")
        exported = re.findall(r'define void @"(matmul\.[^"]+)"', part_ir)
        assert exported and "define internal" not in part_ir, part
        for name in exported:  # each only declared by a variant that calls it
            assert f'declare void @"{name}"' in variant_ir or not _called_by_nt(name), name
    assert 'define void @"matmul.' not in variant_ir and 'define internal void @"matmul.' not in variant_ir


def _called_by_nt(name: str) -> bool:
    """Whether the nt variant calls a function of the parts: every kernel, and the packing
    functions that read panels across their source's rows (A, and B stored transposed)."""
    return not name.startswith("matmul.pack.") or name.endswith(".columns")


def test_no_module_holds_much_of_a_steps_library():
    # Two processes compile a library side by side, one module at a time, and the last
    # module one of them starts decides when both are done: none may be a large share.
    units = library._units([("float32", False, False), ("float32", False, True), ("float32", True, False)])
    sizes = {unit: len(library._unit_ir(unit)) for unit in units}
    assert max(sizes.values()) < sum(sizes.values()) / 4, sizes


# void f(M, N, K, A, lda, B, ldb, C, ldc, accumulate, work)
MATMUL_CALL = ctypes.CFUNCTYPE(
    None, *[ctypes.c_int64] * 3, *[ctypes.c_void_p, ctypes.c_int64] * 3, ctypes.c_int32, ctypes.c_void_p
)


@pytest.mark.parametrize("trans_a, trans_b", [(False, True), (True, False)])
def test_a_variant_on_its_parts_equals_one_module_with_everything(trans_a, trans_b):
    library.load_variants([("float64", trans_a, trans_b)])
    run = MATMUL_CALL(llvm.address_of_symbol(library.matmul_symbol("float64", trans_a, trans_b)))
    whole = MatmulKernels("float64", use_cache=False)  # the same kernels, all in one module
    rng = np.random.default_rng(1)
    for m, n, k in [(1, 1, 1), (7, 3, 5), (48, 10, 64), (130, 70, 90)]:
        a = rng.standard_normal((k, m) if trans_a else (m, k))
        b = rng.standard_normal((n, k) if trans_b else (k, n))
        got = np.empty((m, n))
        work = np.empty(matmul_workspace_size(m, n, k, "float64"))
        run(m, n, k, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], got.ctypes.data, n, 0, work.ctypes.data)
        np.testing.assert_array_equal(got, whole(a, b, trans_a=trans_a, trans_b=trans_b))


def test_an_unknown_kernel_part_is_refused():
    with pytest.raises(ValueError, match="part must be one of"):
        emit_kernel_part(ir.Module(), "float32", "micro")


def test_the_library_compiles_as_written():
    # Kernels, packing and drivers are written as they should run (their own pointers, their
    # own vectors): the optimiser is given nothing to do, and leaves every module as it is.
    host = host_target_machine()
    for unit in library._units([("float32", False, False), ("float64", True, True)]):
        module = llvm.parse_assembly(library._unit_ir(unit))
        prepare_module(module, host)
        written = str(module)
        library.LIBRARY_OPTIONS.optimize(module)
        assert str(module) == written, unit
