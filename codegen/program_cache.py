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
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from symbackprop.graph import Tensor, const, topological_order
from symbackprop.text import to_text

from . import cache, debug
from .kernels import Program
from .target import host_spec, versions_token

FORMAT = 1


@functools.cache
def source_token() -> str:
    """A hash of the front end's and the back end's source: any edit changes every key."""
    digest = hashlib.sha256()
    for package in (Path(__file__).parent, Path(__file__).parent.parent / "symbackprop"):
        for path in sorted(package.glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


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


def store(key: str, program: Program, ir_text: str, inputs: Sequence[Tensor], params: Sequence[Tensor]) -> None:
    if not cache.cache_enabled():
        return
    tensors = _detach_tensors(program, list(inputs), list(params))
    try:
        payload = pickle.dumps((program, ir_text), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for buffer, node in zip(program.buffers, tensors):
            buffer.node = node
    cache.store(key, payload)


def load(key: str, inputs: Sequence[Tensor], params: Sequence[Tensor]) -> tuple[Program, str] | None:
    """The program and IR stored under ``key``, bound to these inputs and params; None on a miss."""
    if not cache.cache_enabled():
        return None
    payload = cache.load(key)
    if payload is None:
        return None
    try:
        program, ir_text = pickle.loads(payload)
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
    return program, ir_text
