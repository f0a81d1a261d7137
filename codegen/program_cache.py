"""The compiler's own cache: a lowered program and its LLVM IR, keyed by the request.

Object code is cached by :mod:`codegen.cache` under the hash of the IR, but producing the
IR (rewrites with SymPy, lowering, emission) costs far more than loading object code. This
cache keys the finished program by what determines it: the graph as text, the bytes of its
constants, the order of inputs and params, the options, the target CPU, the library
versions and the source of the compiler itself, so that editing the compiler, the graph
or an option never loads a stale program. Files go through :mod:`codegen.cache` (checksummed,
written atomically), and the tensors a program refers to are stored as positions and
restored from the caller's inputs and params.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sympy

from symbackprop.graph import Tensor, const, topological_order
from symbackprop.text import to_text

from . import cache, debug
from .kernels import Program
from .target import host_spec, versions_token

FORMAT = 3


def _source_files() -> list[os.DirEntry]:
    """The modules of the back end and the front end, in a fixed order."""
    files = []
    for package in (Path(__file__).parent, Path(__file__).parent.parent / "symbackprop"):
        with os.scandir(package) as entries:
            files += sorted((e for e in entries if e.name.endswith(".py")), key=lambda e: e.name)
    return files


def _content_hash(files: Sequence[os.DirEntry]) -> str:
    digest = hashlib.sha256()
    for entry in files:
        digest.update(entry.name.encode())
        digest.update(Path(entry.path).read_bytes())
    return digest.hexdigest()


@functools.cache
def source_token() -> str:
    """A hash of the front end's and the back end's source: any edit changes every key.

    Reading and hashing half a megabyte of source costs about 2 ms of every warm start, so
    the hash is kept in the cache under the files' paths, sizes and modification times,
    the test Python applies to its bytecode cache: an edit changes them and the source is
    hashed again, while an unchanged tree costs a ``stat`` per file.

    >>> len(source_token())
    64
    """
    files = _source_files()
    signature = "\n".join(f"{e.path}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for e in files)
    key = hashlib.sha256(f"format={FORMAT};source files;{signature}".encode()).hexdigest()
    stored = cache.load(key) if cache.cache_enabled() else None
    if stored is not None and len(stored) == 64:
        return stored.decode("ascii")
    token = _content_hash(files)
    if cache.cache_enabled():
        cache.store(key, token.encode("ascii"))
    return token


def request_key(
    kind: str, targets: Sequence[Tensor], inputs: Sequence[Tensor], params: Sequence[Tensor], options: str
) -> str:
    """64 hex digits naming one compilation request."""
    digest = hashlib.sha256()
    parts = [
        f"format={FORMAT}",
        kind,
        source_token(),
        versions_token(),
        host_spec().cache_token(),
        options,
        to_text(list(targets)),
    ]
    parts.append(";".join(f"{n.label}:{n.shape}:{n.dtype}" for n in inputs))
    parts.append(";".join(f"{p.label}:{p.shape}:{p.dtype}" for p in params))
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    for node in topological_order(list(targets)):
        if node.op == "const":
            digest.update(node.value.tobytes())
    return digest.hexdigest()


def _detach_tensors(program: Program, inputs, params) -> list:
    """Replace each buffer's tensor by a position (or a constant's value); return the tensors."""
    tensors = []
    for buffer in program.buffers:
        tensors.append(buffer.node)
        node = buffer.node
        if node is None:
            continue
        if node.op == "input":
            buffer.node = ("input", inputs.index(node))
        elif node.op == "param":
            buffer.node = ("param", params.index(node))
        else:
            buffer.node = ("const", np.array(node.value), node.dtype)
    return tensors


def rebuild_expression(cls: type, args: tuple) -> sympy.Basic:
    """A SymPy expression from its class and arguments, as stored: not evaluated again.

    SymPy pickles an expression as a call of its class, which simplifies the arguments
    once more and asks for their assumptions: three quarters of the time of loading a
    program. Stored expressions are already in canonical form, so building them with
    ``evaluate=False`` gives the same expression.

    >>> x = sympy.Symbol("x")
    >>> rebuild_expression(sympy.Mul, (sympy.Integer(2), x)) == 2 * x
    True
    """
    return cls(*args, evaluate=False)


class _ProgramPickler(pickle.Pickler):
    """Pickles SymPy expressions for `rebuild_expression`, where that gives them back unchanged."""

    def reducer_override(self, obj):
        if not isinstance(obj, sympy.Basic) or not obj.args:
            return NotImplemented  # atoms (symbols, numbers) and everything else: as usual
        cls = type(obj)
        try:
            same = rebuild_expression(cls, obj.args) == obj
        except (TypeError, ValueError, AttributeError):  # a class without an ``evaluate`` argument
            same = False
        return (rebuild_expression, (cls, obj.args)) if same else NotImplemented


def dumps(value) -> bytes:
    """``value`` pickled with SymPy expressions stored for a fast load (see `rebuild_expression`).

    >>> x = sympy.Symbol("x")
    >>> pickle.loads(dumps([sympy.exp(-x) + x**2])) == [sympy.exp(-x) + x**2]
    True
    """
    buffer = io.BytesIO()
    _ProgramPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def store(key: str, program: Program, ir_texts: list[str], inputs: Sequence[Tensor], params: Sequence[Tensor]) -> None:
    if not cache.cache_enabled():
        return
    tensors = _detach_tensors(program, list(inputs), list(params))
    try:
        payload = dumps((program, list(ir_texts)))
    finally:
        for buffer, node in zip(program.buffers, tensors):
            buffer.node = node
    cache.store(key, payload)


def load(key: str, inputs: Sequence[Tensor], params: Sequence[Tensor]) -> tuple[Program, list[str]] | None:
    """The program and its modules' IR stored under ``key``, bound to these inputs and params; None on a miss."""
    if not cache.cache_enabled():
        return None
    payload = cache.load(key)
    if payload is None:
        return None
    try:
        program, ir_texts = pickle.loads(payload)
        for buffer in program.buffers:
            if isinstance(buffer.node, tuple):
                kind, *where = buffer.node
                buffer.node = (
                    inputs[where[0]]
                    if kind == "input"
                    else params[where[0]]
                    if kind == "param"
                    else const(where[0], where[1])
                )
        program.inputs = [next(b for b in program.buffers if b.node is node) for node in inputs]
    except Exception as exc:  # an entry from an incompatible build: compile afresh
        debug.log(1, f"program cache entry {key[:16]} unusable ({exc}); recompiling")
        return None
    return program, ir_texts
