"""The loader for a user's CSV files of numbers, one example per row."""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from .convert import as_features, as_targets
from .errors import DataError


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# Whether the first row is a header, by the value of ``header``: never, always, or when one
# of its cells is not a number.
_HEADER_RULES = {
    None: lambda first: False,
    False: lambda first: False,
    True: lambda first: True,
    "auto": lambda first: not all(map(_is_number, first)),
}


def _read_rows(path, delimiter: str) -> list[tuple[int, list[str]]]:
    """The file's non-blank rows, each with its line number (from 1)."""
    if not os.path.isfile(path):
        raise DataError("no such file (expected a CSV file of numbers)", path)
    try:
        # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first cell.
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, delimiter=delimiter, skipinitialspace=True)
            return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot be read as a CSV text file ({error})", path) from None


def _check_widths(path, rows: list[tuple[int, list[str]]]) -> int:
    """The number of cells in every row, or `DataError` at the first row of another length."""
    first_line, first = rows[0]
    for line, row in rows:
        if len(row) != len(first):
            raise DataError(
                f"expected {len(first)} cells (as on line {first_line}), found {len(row)}", path, f"line {line}"
            )
    return len(first)


def _to_numbers(path, rows: list[tuple[int, list[str]]]) -> np.ndarray:
    """The rows as one float64 table, or `DataError` at the first cell that is not a finite number."""
    try:
        table = np.asarray([row for _, row in rows], dtype=np.float64)
    except ValueError:
        table = None  # NumPy says which text failed but not where: the loop below finds it
    if table is not None and np.isfinite(table).all():
        return table
    for line, row in rows:
        for column, cell in enumerate(row):
            if not _is_number(cell) or not math.isfinite(float(cell)):
                raise DataError(f"expected a finite number, found {cell!r}", path, f"line {line}, column {column}")
    # Python's float() read every cell that NumPy refused: use its reading.
    return np.array([[float(cell) for cell in row] for _, row in rows])


def _label_index(path, label_column: int | str, header_row: tuple[int, list[str]] | None, width: int) -> int:
    """The label column's index from 0, or `DataError` when there is no such column."""
    if isinstance(label_column, str):
        if header_row is None:
            raise DataError(
                f"label column {label_column!r} is a name, but the file has no header (give header=True or an index)",
                path,
            )
        line, names = header_row
        stripped = [name.strip() for name in names]
        if label_column not in stripped:
            raise DataError(
                f"no column named {label_column!r} in the header ({', '.join(stripped)})", path, f"line {line}"
            )
        return stripped.index(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, int) or not -width <= label_column < width:
        raise DataError(
            f"label column {label_column!r} does not exist: rows have {width} columns, "
            f"expected an index from {-width} to {width - 1} or a header name",
            path,
        )
    return label_column % width


def load_csv(
    path: str | os.PathLike, label_column: int | str = -1, header: bool | str | None = "auto", delimiter: str = ","
) -> tuple[np.ndarray, np.ndarray]:
    """Examples and labels from a CSV file of numbers, one example per row.

    ``label_column`` picks the label column by index (negative counts from the end) or by
    its name in the header; the other columns are the features. ``header`` says whether the
    first row holds column names: ``True``, ``None``/``False`` (no header), or ``"auto"``
    (when one of its cells is not a number). Blank lines are skipped.

    Returns ``(X, y)``: X float32 ``(n, columns - 1)``, y int64 class labels when every label
    is a whole number at least 0, else float32 targets. Raises `DataError` naming the file, the
    line and the column for a missing or empty file, rows of different lengths, cells that are
    not finite numbers, or a label column that does not exist.

    >>> import os, tempfile
    >>> from symbackprop.data import load_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "flowers.csv")
    >>> _ = open(path, "w").write("length,width,kind\\n5.1,3.5,0\\n6.2,2.9,1\\n")
    >>> X, y = load_csv(path, label_column="kind")
    >>> X.shape, X.dtype, y.tolist()
    ((2, 2), dtype('float32'), [0, 1])
    >>> _ = open(path, "a").write("5.9,three,2\\n")
    >>> load_csv(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    symbackprop.data.errors.DataError: ...flowers.csv, line 4, column 1: expected a finite number, found 'three'
    """
    if not isinstance(header, (bool, str, type(None))) or header not in _HEADER_RULES:
        raise DataError(f"expected header to be True, False, None or 'auto', found {header!r}", path)
    rows = _read_rows(path, delimiter)
    if not rows:
        raise DataError("the file is empty, expected rows of numbers", path)
    header_row = rows.pop(0) if _HEADER_RULES[header](rows[0][1]) else None
    if not rows:
        raise DataError("the file has a header but no rows of numbers", path)
    width = _check_widths(path, rows if header_row is None else [header_row, *rows])
    if width < 2:
        raise DataError(f"expected a label column and at least one feature column, found {width} column", path)
    column = _label_index(path, label_column, header_row, width)
    table = _to_numbers(path, rows)
    return as_features(np.delete(table, column, axis=1), path), as_targets(table[:, column], path, f"column {column}")
