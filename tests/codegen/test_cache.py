"""The on-disk object-code cache: hits across processes, keys, damaged files, switches."""

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from codegen import cache
from codegen.jit import (
    CompileOptions,
    UnresolvedSymbolError,
    compile_ir,
    compile_keyed,
    compile_keyed_group,
    store_keyed,
)
from codegen.objfile import read_symbols
from codegen.target import TargetSpec, host_spec

REPO_ROOT = Path(__file__).resolve().parents[2]

# Compiles the sample kernel, runs it, and reports where its code came from.
CHILD = """
import ctypes, json, sys
import numpy as np
from codegen import cache
from codegen.jit import compile_ir
cm = compile_ir(sys.stdin.read())
a = np.arange(8, dtype=np.float32)
out = np.empty_like(a)
cm.function("vadd", None, *[ctypes.c_void_p] * 3, ctypes.c_int64)(out.ctypes.data, a.ctypes.data, a.ctypes.data, 8)
print(json.dumps({"from_cache": cm.from_cache, "stats": cache.statistics(), "out": out.tolist()}))
"""


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv(cache.DIR_VAR, str(directory))
    monkeypatch.delenv(cache.ENABLE_VAR, raising=False)
    cache.reset_statistics()
    return directory


def _entries(directory):
    return sorted(directory.glob("*.o")) if directory.exists() else []


def _run_child(vadd_ir, directory, debug="0"):
    env = dict(os.environ, SYMBACKPROP_CACHE_DIR=str(directory), SYMBACKPROP_DEBUG=debug)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", CHILD], input=vadd_ir, capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_second_process_loads_object_code_from_cache(vadd_ir, cache_dir):
    first, _ = _run_child(vadd_ir, cache_dir)
    second, log = _run_child(vadd_ir, cache_dir, debug="1")
    assert first["from_cache"] is False
    assert first["stats"]["stores"] == 1 and first["stats"]["hits"] == 0
    assert second["from_cache"] is True
    assert second["stats"] == {"hits": 1, "misses": 0, "stores": 0, "rejected": 0}
    assert "cache hit" in log and "] optimize" not in log and "] codegen" not in log
    assert first["out"] == second["out"] == [2.0 * i for i in range(8)]
    assert len(_entries(cache_dir)) == 1


def test_key_depends_on_ir_options_target_and_nothing_else(vadd_ir):
    spec = host_spec()
    options = CompileOptions().cache_token()
    key = cache.cache_key(vadd_ir, spec, options)
    assert key == cache.cache_key(vadd_ir, spec, options)
    variants = [
        cache.cache_key(vadd_ir.replace("fadd", "fsub"), spec, options),
        cache.cache_key(vadd_ir, spec, CompileOptions(speed_level=2).cache_token()),
        cache.cache_key(vadd_ir, spec, CompileOptions(vectorize=False).cache_token()),
        cache.cache_key(vadd_ir, TargetSpec(spec.triple, "generic", spec.features), options),
        cache.cache_key(vadd_ir, TargetSpec(spec.triple, spec.cpu, spec.features + ",-avx2"), options),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_changed_options_compile_to_a_new_entry(vadd_ir, cache_dir):
    assert compile_ir(vadd_ir).from_cache is False
    assert compile_ir(vadd_ir, options=CompileOptions(speed_level=2)).from_cache is False
    assert compile_ir(vadd_ir).from_cache is True
    assert len(_entries(cache_dir)) == 2
    assert cache.statistics()["stores"] == 2


def _damage_truncate(blob):
    return blob[: len(blob) // 2]


def _damage_flip_payload_byte(blob):
    middle = len(blob) - 100
    return blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1 :]


def _damage_header(blob):
    return b"garbage!" + blob[8:]


def _damage_empty(blob):
    return b""


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip_payload_byte, _damage_header, _damage_empty])
def test_damaged_entry_is_ignored_and_rebuilt(vadd_ir, cache_dir, damage):
    original = compile_ir(vadd_ir)
    (entry,) = _entries(cache_dir)
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    cache.reset_statistics()
    rebuilt = compile_ir(vadd_ir)
    assert rebuilt.from_cache is False
    assert cache.statistics()["rejected"] == 1 and cache.statistics()["stores"] == 1
    assert entry.read_bytes() == good
    assert rebuilt.object_code == original.object_code
    assert compile_ir(vadd_ir).from_cache is True


def test_intact_entry_that_is_not_an_object_file_is_rejected(vadd_ir, cache_dir):
    # Right header and checksum around bytes that are not ELF: only the object check catches it.
    key = compile_ir(vadd_ir).key
    cache.store(key, b"\x00" * 256)
    cache.reset_statistics()
    assert compile_ir(vadd_ir).from_cache is False
    assert cache.statistics()["rejected"] == 1
    read_symbols(cache.load(key))


def test_cache_switched_off_by_environment_writes_nothing(vadd_ir, cache_dir, monkeypatch):
    monkeypatch.setenv(cache.ENABLE_VAR, "0")
    assert compile_ir(vadd_ir).from_cache is False
    assert compile_ir(vadd_ir).from_cache is False
    assert not cache_dir.exists()
    assert cache.statistics() == {"hits": 0, "misses": 0, "stores": 0, "rejected": 0}


def test_use_cache_false_writes_nothing(vadd_ir, cache_dir):
    compile_ir(vadd_ir, use_cache=False)
    assert not cache_dir.exists()


def test_writes_leave_no_temporary_files(vadd_ir, cache_dir):
    compile_ir(vadd_ir)
    compile_ir(vadd_ir.replace("fadd", "fmul"))
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".o", ".o"]


def test_unwritable_cache_warns_and_still_compiles(vadd_ir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(cache.DIR_VAR, str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="cannot write the code cache"):
        cm = compile_ir(vadd_ir)
    assert cm.functions == ("vadd",)


def test_default_directory_follows_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.DIR_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "symbackprop"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "symbackprop"


def test_clear_removes_entries(vadd_ir, cache_dir):
    compile_ir(vadd_ir)
    assert cache.clear() == 1
    assert _entries(cache_dir) == []
    assert compile_ir(vadd_ir).from_cache is False


def _aged(path: Path, seconds_ago: float) -> None:
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def test_trim_deletes_the_least_recently_used_entries_down_to_four_fifths(cache_dir):
    keys = [f"{i:064x}" for i in range(10)]
    for age, key in enumerate(keys):
        assert cache.store(key, bytes(1000))
        _aged(cache_dir / f"{key}.o", 1000 - age)  # the first key the oldest
    assert cache.load(keys[0]) is not None  # used now: kept
    entry = (cache_dir / f"{keys[1]}.o").stat().st_size
    assert cache.trim(limit=20 * entry) == (0, 0)  # within the bound: nothing goes
    removed, freed = cache.trim(limit=5 * entry)
    assert (removed, freed) == (6, 6 * entry)  # down to 4 entries, 80% of the bound
    assert sorted(p.stem for p in _entries(cache_dir)) == sorted([keys[0], *keys[7:]])


def test_trim_removes_what_killed_processes_left_and_nothing_else(cache_dir):
    key = "ab" * 32
    assert cache.claim(key, 7) and cache.claim(key, 8)
    with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=f".{key[:16]}-", suffix=".tmp", delete=False) as tmp:
        tmp.write(b"half an entry")
    foreign = [cache_dir / "notes.tmp", cache_dir / "main.o", cache_dir / f"{key.upper()}.o"]
    for path in foreign:
        path.write_bytes(bytes(5000))
    for path in [*foreign, cache_dir / f"{key}.claim-7", Path(tmp.name)]:
        _aged(path, 7200)
    assert cache.trim(limit=1) == (2, len(b"half an entry"))
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([f"{key}.claim-8", *(p.name for p in foreign)])
    assert cache.entries() == (0, 0) and cache.clear() == 1  # the claim; a user's files stay
    assert sorted(cache_dir.iterdir()) == sorted(foreign)


@pytest.mark.parametrize(("value", "expected"), [(None, 1024 * 2**20), ("0", None), ("0.5", 2**19), ("12", 12 * 2**20)])
def test_max_size_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(cache.MAX_SIZE_VAR, raising=False)
    else:
        monkeypatch.setenv(cache.MAX_SIZE_VAR, value)
    assert cache.max_size() == expected


@pytest.mark.parametrize("value", ["lots", "-5", "nan", "inf"])
def test_a_max_size_that_is_not_a_size_warns_and_counts_as_unset(monkeypatch, value):
    monkeypatch.setenv(cache.MAX_SIZE_VAR, value)
    with pytest.warns(RuntimeWarning, match="SYMBACKPROP_CACHE_MAX_MB"):
        assert cache.max_size() == cache.DEFAULT_MAX_MB * 2**20


def test_a_process_that_stored_trims_the_cache_when_it_exits(cache_dir):
    cache_dir.mkdir(parents=True)
    for i in range(4):  # old entries from earlier processes, 1 MB each
        (cache_dir / f"{i:064x}.o").write_bytes(bytes(2**20))
        _aged(cache_dir / f"{i:064x}.o", 1000)
    program = f"from codegen import cache; cache.store({'f' * 64!r}, bytes(100))"
    env = dict(os.environ, SYMBACKPROP_CACHE_DIR=str(cache_dir), SYMBACKPROP_CACHE_MAX_MB="2.5")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", program], env=env, timeout=120, check=True)
    assert sorted(p.stem for p in _entries(cache_dir))[-1] == "f" * 64  # its own entry stays
    assert sum(p.stat().st_size for p in _entries(cache_dir)) <= 0.8 * 2.5 * 2**20


def test_store_keyed_fills_the_cache_and_loads_nothing(vadd_ir, cache_dir, monkeypatch):
    built = []

    def build():
        built.append(1)
        return vadd_ir

    identity = f"store_keyed test {uuid.uuid4()}"
    assert store_keyed(identity, build) is True
    assert store_keyed(identity, build) is False  # there already: not built again
    assert len(built) == 1 and len(_entries(cache_dir)) == 1
    loaded = compile_keyed(identity, build)
    assert loaded.from_cache and len(built) == 1 and "vadd" in loaded.functions
    monkeypatch.setenv(cache.ENABLE_VAR, "0")
    assert store_keyed(f"{identity} again", build) is False and len(built) == 1


_CALLER = """
declare i64 @{callee}(i64)
define i64 @{caller}(i64 %x) {{
  %y = call i64 @{callee}(i64 %x)
  %z = add i64 %y, 1
  ret i64 %z
}}
"""
_CALLEE = "define i64 @{callee}(i64 %x) {{\n  %y = mul i64 %x, 3\n  ret i64 %y\n}}\n"


def test_a_keyed_group_loads_into_one_engine_that_links_it(cache_dir):
    tag = uuid.uuid4().hex[:8]
    names = {"caller": f"caller_{tag}", "callee": f"callee_{tag}"}
    identities = [f"group test {tag} callee", f"group test {tag} caller"]
    builds = {identities[0]: lambda: _CALLEE.format(**names), identities[1]: lambda: _CALLER.format(**names)}
    store_keyed(identities[0], builds[identities[0]])  # the callee cached, the caller not
    callee, caller = compile_keyed_group(builds)
    assert callee.from_cache and not caller.from_cache
    assert callee.functions == (names["callee"],) and caller.functions == (names["caller"],)
    assert caller.function(names["caller"], ctypes.c_int64, ctypes.c_int64)(14) == 43
    again = compile_keyed_group(builds)  # now both from the cache
    assert all(module.from_cache for module in again)
    assert again[1].function(names["caller"], ctypes.c_int64, ctypes.c_int64)(2) == 7
    with pytest.raises(UnresolvedSymbolError, match=names["callee"]):
        compile_keyed_group(
            {identities[1]: builds[identities[1]]}
        )  # the caller alone: its callee is not in the process
