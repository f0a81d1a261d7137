"""The one exception the data loaders raise."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Data could not be loaded or split: the message names the file, the place in it (a line,
    a column, a key) and what was expected there.

    >>> error = DataError("expected 3 cells, found 2", path="points.csv", where="line 4")
    >>> str(error)
    'points.csv, line 4: expected 3 cells, found 2'
    >>> error.path, error.where
    ('points.csv', 'line 4')
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None, where: str | None = None):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        self.where = where
        place = ", ".join(part for part in (self.path, where) if part)
        super().__init__(f"{place}: {problem}" if place else problem)
