"""Progress bars for long work, from tqdm: drawn on a terminal, silent anywhere else.

tqdm is used rather than a hand-written bar because it already handles what a bar on a
terminal needs to get right: redraw rate, terminal width, nested bars and notebooks.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

# How a ``progress=`` argument is read: "auto" draws only when stderr is a terminal (so logs,
# pipes and CI output carry no bar characters), True always draws, False never does.
MODES = {"auto": None, True: False, False: True}


def progress_bar(total: int, description: str, progress="auto", unit: str = "epoch"):
    """A bar of ``total`` steps on stderr; use it as a context manager and call ``update``.

    >>> with progress_bar(3, "demo", progress=False) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    >>> bar.disable  # not drawn: asked for no progress
    True
    """
    if progress not in MODES:
        raise ValueError(f"progress must be 'auto', True or False, got {progress!r}")
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        disable=MODES[progress],
        file=sys.stderr,
        leave=True,
        dynamic_ncols=True,
    )
