"""On-disk cache of compiled object code, keyed by everything that determines the machine code.

Environment: ``SYMBACKPROP_CACHE=0`` turns the cache off; ``SYMBACKPROP_CACHE_DIR`` sets its
directory (default ``$XDG_CACHE_HOME/symbackprop``, else ``~/.cache/symbackprop``);
``SYMBACKPROP_CACHE_MAX_MB`` bounds its size (default 1024, ``0`` for no bound): a process
that stored something trims the cache when it exits, deleting the entries used least
recently (`trim`). Loading an entry marks it used (its modification time).

A file is ``<key>.o`` holding a fixed header (magic, format version, payload length, the
SHA-256 of the payload, the key) and then the object code. A file whose header or checksum
does not match is ignored and later overwritten: LLVM is never handed bytes that were not
verified, since a damaged object file can crash the process inside the loader. Writes go to
a temporary file in the same directory and are renamed into place, so readers never see a
half-written file, even with several processes compiling at once.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import re
import struct
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from codegen import debug
from codegen.target import TargetSpec, versions_token

__all__ = [
    "CACHE_FORMAT_VERSION",
    "cache_enabled",
    "cache_dir",
    "cache_key",
    "load",
    "store",
    "entries",
    "max_size",
    "trim",
    "clear",
    "statistics",
    "reset_statistics",
]

CACHE_FORMAT_VERSION = 1
ENABLE_VAR = "SYMBACKPROP_CACHE"
DIR_VAR = "SYMBACKPROP_CACHE_DIR"

MAX_SIZE_VAR = "SYMBACKPROP_CACHE_MAX_MB"
DEFAULT_MAX_MB = 1024
# A trim leaves the cache at this fraction of its bound, so that the next few stores do not
# each start another.
_TRIM_TO = 0.8
# Claims and temporary files older than this were left by processes that were killed.
_STALE_S = 3600.0

_MAGIC = b"SBPOBJC\0"
_HEADER = struct.Struct("<8sIQ32s64s")
_SUFFIX = ".o"

_stats = {"hits": 0, "misses": 0, "stores": 0, "rejected": 0}


def statistics() -> dict[str, int]:
    """Return counts of cache hits, misses, stores and rejected (corrupt) files in this process.

    Examples
    --------
    >>> sorted(statistics())
    ['hits', 'misses', 'rejected', 'stores']
    """
    return dict(_stats)


def reset_statistics() -> None:
    """Set all counts returned by `statistics` to zero."""
    for name in _stats:
        _stats[name] = 0


def cache_enabled() -> bool:
    """Return False when ``SYMBACKPROP_CACHE`` is ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get(ENABLE_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Return the cache directory (not created until something is stored).

    Examples
    --------
    >>> cache_dir().is_absolute()
    True
    """
    explicit = os.environ.get(DIR_VAR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "symbackprop"


def cache_key(ir_text: str, target: TargetSpec, options: str) -> str:
    """Return the hex SHA-256 naming the object code of ``ir_text`` built for ``target``.

    Parameters
    ----------
    ir_text : str
        LLVM IR as given to the compiler, before optimisation.
    target : TargetSpec
        CPU name, features, triple (`TargetSpec.cache_token`).
    options : str
        Optimisation options, as `codegen.jit.CompileOptions.cache_token` spells them.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> spec = TargetSpec("x86_64-unknown-linux-gnu", "znver3", "+avx2")
    >>> cache_key("ir", spec, "O3") == cache_key("ir", spec, "O2")
    False
    """
    digest = hashlib.sha256()
    for part in (f"format={CACHE_FORMAT_VERSION}", versions_token(), target.cache_token(), options, ir_text):
        data = part.encode("utf-8")
        # Length-prefix each part so that moving text from one part to the next changes the key.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def contains(key: str) -> bool:
    """Whether the cache (when enabled) has a file under ``key``; its content is checked
    only when it is loaded."""
    return cache_enabled() and _path(key).is_file()


def claim(key: str, group: int) -> bool:
    """Take the right to compile ``key`` among the processes of ``group`` (any number they
    agree on, such as a helper's process id); False if another took it first.

    Two processes that compile the same modules side by side each claim a module before
    compiling it, so that they split the work instead of doing it twice.
    """
    try:
        path = _path(key).with_name(f"{key}.claim-{group}")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError:
        return True  # a cache that cannot be written: compile, as without claims
    return True


def release(key: str, group: int) -> None:
    """Remove the claim of `claim` (the module is in the cache, or will not be)."""
    with contextlib.suppress(OSError):
        _path(key).with_name(f"{key}.claim-{group}").unlink()


def _path(key: str) -> Path:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"cache key must be 64 lowercase hex digits, got {key!r}")
    return cache_dir() / f"{key}{_SUFFIX}"


def _decode(blob: bytes, key: str) -> bytes | None:
    """Return the payload of a cache file, or None if it is not a complete, intact entry."""
    if len(blob) < _HEADER.size:
        return None
    magic, version, length, checksum, stored_key = _HEADER.unpack_from(blob)
    if magic != _MAGIC or version != CACHE_FORMAT_VERSION or stored_key != key.encode("ascii"):
        return None
    payload = blob[_HEADER.size :]
    if len(payload) != length or hashlib.sha256(payload).digest() != checksum:
        return None
    return payload


def load(key: str, validate: Callable[[bytes], object] | None = None) -> bytes | None:
    """Return the verified object code stored under ``key``, or None.

    Parameters
    ----------
    key : str
        From `cache_key`.
    validate : callable, optional
        Further check of an intact payload; raising ValueError rejects it.

    Returns
    -------
    bytes or None
        None on a miss. A damaged file counts as rejected, and as a miss.
    """
    path = _path(key)
    try:
        blob = path.read_bytes()
    except OSError:
        _stats["misses"] += 1
        debug.log(1, f"cache miss   {key[:16]} ({path.parent})")
        return None
    payload = _decode(blob, key)
    if payload is not None and validate is not None:
        try:
            validate(payload)
        except ValueError:
            payload = None
    if payload is None:
        _stats["rejected"] += 1
        _stats["misses"] += 1
        debug.log(1, f"cache reject {key[:16]}: damaged file {path}, rebuilding")
        return None
    _stats["hits"] += 1
    with contextlib.suppress(OSError):
        os.utime(path)  # used now: the last entry a trim deletes
    debug.log(1, f"cache hit    {key[:16]} ({path})")
    return payload


def store(key: str, payload: bytes) -> bool:
    """Write ``payload`` under ``key`` atomically; return False (with a warning) if it cannot.

    A cache that cannot be written never stops compilation.
    """
    path = _path(key)
    header = _HEADER.pack(_MAGIC, CACHE_FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest(), key.encode())
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{key[:16]}-", suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(header)
            tmp.write(payload)
        os.replace(tmp_name, path)
    except OSError as exc:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        warnings.warn(f"symbackprop: cannot write the code cache at {path.parent}: {exc}", RuntimeWarning, stacklevel=2)
        return False
    _stats["stores"] += 1
    debug.log(1, f"cache store  {key[:16]} ({len(payload)} bytes)")
    _trim_at_exit()
    return True


@functools.cache
def _trim_at_exit() -> None:
    """Trim the cache when this process exits (once, however much it stored)."""
    atexit.register(_trim_quietly)


def _trim_quietly() -> None:
    with contextlib.suppress(Exception):  # never fail a process on its way out
        trim()


# The names of the files this cache writes: entries, their claims, and temporary files.
_NAMES = re.compile(r"(?P<entry>[0-9a-f]{64}\.o)|(?P<claim>[0-9a-f]{64}\.claim-\d+)|(?P<tmp>\.[0-9a-f]{16}-\w+\.tmp)")


def _kind_of(name: str) -> str | None:
    """``"entry"``, ``"claim"`` or ``"tmp"`` for a file this cache writes, else None."""
    match = _NAMES.fullmatch(name)
    return match.lastgroup if match else None


def max_size() -> int | None:
    """The most bytes the cache keeps: ``SYMBACKPROP_CACHE_MAX_MB`` megabytes (default 1024);
    None when it is ``0`` (no bound). A value that is not a number warns and counts as unset.

    >>> max_size() is None or max_size() > 0
    True
    """
    raw = os.environ.get(MAX_SIZE_VAR, "").strip()
    if not raw:
        return DEFAULT_MAX_MB * 2**20
    try:
        megabytes = float(raw)
        if not megabytes >= 0 or megabytes == float("inf"):
            raise ValueError(raw)
    except ValueError:
        warnings.warn(
            f"symbackprop: {MAX_SIZE_VAR}={raw!r} is not a size in megabytes (a number, 0 for no bound); "
            f"using {DEFAULT_MAX_MB}",
            RuntimeWarning,
            stacklevel=2,
        )
        return DEFAULT_MAX_MB * 2**20
    return None if megabytes == 0 else int(megabytes * 2**20)


def trim(limit: int | None = None) -> tuple[int, int]:
    """Bound the cache: if its entries hold more than ``limit`` bytes (default `max_size`),
    delete the least recently used until they hold at most 80% of it; also delete claims
    and temporary files more than an hour old, which killed processes left. Return the
    number of files deleted and the bytes they held.

    An entry another process is about to load may go; that process then compiles it again.
    """
    directory = cache_dir()
    limit = max_size() if limit is None else limit
    if not directory.is_dir():
        return 0, 0
    now, entries, doomed = time.time(), [], []
    with os.scandir(directory) as listing:
        for item in listing:
            kind = _kind_of(item.name)
            if kind is None:
                continue  # not a file of this cache's: never touched
            with contextlib.suppress(OSError):
                status = item.stat()
                if kind == "entry":
                    entries.append((status.st_mtime, status.st_size, item.path))
                elif now - status.st_mtime > _STALE_S:
                    doomed.append((status.st_size, item.path))
    total = sum(size for _, size, _ in entries)
    if limit is not None and total > limit:
        entries.sort()  # least recently used first
        for _, size, path in entries:
            if total <= _TRIM_TO * limit:
                break
            doomed.append((size, path))
            total -= size
    removed = freed = 0
    for size, path in doomed:
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed, freed = removed + 1, freed + size
    if removed:
        debug.log(1, f"cache trim   {removed} files, {freed} bytes ({directory})")
    return removed, freed


def entries() -> tuple[int, int]:
    """The number of entries in `cache_dir` and their size in bytes.

    >>> count, size = entries()
    >>> count >= 0 and size >= 0
    True
    """
    directory = cache_dir()
    if not directory.is_dir():
        return 0, 0
    sizes = []
    for entry in directory.iterdir():
        if _kind_of(entry.name) == "entry":
            with contextlib.suppress(OSError):
                sizes.append(entry.stat().st_size)
    return len(sizes), sum(sizes)


def clear() -> int:
    """Delete every cache entry in `cache_dir`, with claims and temporary files; return how
    many files were removed. Files of other names are left alone."""
    removed = 0
    directory = cache_dir()
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        if _kind_of(entry.name) is not None and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
    return removed
