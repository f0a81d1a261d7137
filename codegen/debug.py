"""Debug output of the back end on stderr, controlled by ``SYMBACKPROP_DEBUG``.

Levels: 0 or unset, silent; 1, stage names and timings; 2, also the optimised LLVM IR;
3, also the assembly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Iterator

__all__ = ["debug_level", "log", "stage"]

ENV_VAR = "SYMBACKPROP_DEBUG"


def debug_level() -> int:
    """Return the level set in ``SYMBACKPROP_DEBUG``, read afresh on every call.

    Examples
    --------
    >>> isinstance(debug_level(), int)
    True
    """
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        warnings.warn(f"{ENV_VAR}={raw!r} is not an integer level 0-3; debug output is off", stacklevel=2)
        return 0


def log(level: int, message) -> None:
    """Print ``message`` to stderr when the debug level is at least ``level``; a callable
    ``message`` is called for the text only then (a program printed as text takes 8 ms).

    >>> log(4, lambda: 1 / 0)  # level 4 is never on: the message is not made
    """
    if debug_level() >= level:
        text = message() if callable(message) else message
        print(f"[symbackprop] {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Time a stage of compilation; record it in ``timings`` and log it at level 1.

    Examples
    --------
    >>> t = {}
    >>> with stage("parse", t):
    ...     pass
    >>> list(t)
    ['parse']
    """
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + elapsed
        log(1, f"{name:<12} {elapsed * 1e3:9.3f} ms")
