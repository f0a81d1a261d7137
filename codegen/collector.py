"""Python's cyclic garbage collector, paused while the compiler builds its objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]


@contextmanager
def paused() -> Iterator[None]:
    """Run the body with the cyclic collector off, and turn it back on after (if it was on).

    Building a program allocates some 10⁵ SymPy expressions and llvmlite IR objects that
    all live until the build ends, and each collection pass walked them again for nothing:
    a fifth of the build of the mnist training step (0.23 s; 0.18 s paused). Reference
    counting still frees what it can meanwhile; cycles wait for the next collection.

    Examples
    --------
    >>> with paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
