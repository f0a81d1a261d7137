"""The rules every loader applies to the arrays it reads: numbers only, finite, features as
float32 rows, labels as int64 classes when they are whole numbers."""

from __future__ import annotations

import numpy as np

from .errors import DataError

# Booleans, signed and unsigned integers, floats: everything else (strings, objects,
# complex numbers, dates) is not data a network can be fed.
_NUMERIC_KINDS = "biuf"


def _numeric(values, path, where: str | None) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(f"expected numbers, found an array of {array.dtype}", path, where)
    if array.ndim == 0 or len(array) == 0:
        raise DataError(f"expected at least one example, found an array of shape {array.shape}", path, where)
    return array


def _check_finite(array: np.ndarray, path, where: str | None) -> None:
    bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad.any():
        place = ", ".join(part for part in (where, f"row {int(np.argmax(bad))}") if part)
        raise DataError("expected finite numbers, found nan or inf", path, place)


def is_class_labels(values: np.ndarray) -> bool:
    """Whether ``values`` read as class labels: one dimension, whole numbers, none negative.

    >>> import numpy as np
    >>> is_class_labels(np.array([0.0, 2.0, 1.0])), is_class_labels(np.array([0.5, 1.0]))
    (True, False)
    >>> is_class_labels(np.array([[0], [1]])), is_class_labels(np.array([-1, 1]))
    (False, False)
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in _NUMERIC_KINDS:
        return False
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)) and np.all(values >= 0))


def as_features(values, path=None, where: str | None = None) -> np.ndarray:
    """``values`` as a float32 array of examples: a 1-D array becomes one column, ``(n, 1)``.

    ``path`` and ``where`` (a key, a column) name the source in errors.

    >>> as_features([1, 2, 3]).shape
    (3, 1)
    >>> as_features([[1.0, float("nan")]], path="x.npy")
    Traceback (most recent call last):
    ...
    symbackprop.data.errors.DataError: x.npy, row 0: expected finite numbers, found nan or inf
    """
    array = _numeric(values, path, where)
    _check_finite(array, path, where)
    array = array.astype(np.float32)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def as_targets(values, path=None, where: str | None = None) -> np.ndarray:
    """``values`` as int64 class labels when they are a 1-D array of whole numbers at least 0,
    else as float32 targets of the same shape.

    >>> as_targets([0.0, 1.0, 2.0]).dtype, as_targets([0.5, 1.5]).dtype, as_targets([[0], [1]]).dtype
    (dtype('int64'), dtype('float32'), dtype('float32'))
    """
    array = _numeric(values, path, where)
    _check_finite(array, path, where)
    return array.astype(np.int64) if is_class_labels(array) else array.astype(np.float32)


def check_same_length(x: np.ndarray, y: np.ndarray, path=None, where: str | None = None) -> None:
    """Raise `DataError` unless ``x`` and ``y`` hold the same number of examples.

    >>> import numpy as np
    >>> check_same_length(np.zeros((3, 2)), np.zeros(2), path="set.npz")
    Traceback (most recent call last):
    ...
    symbackprop.data.errors.DataError: set.npz: expected one label per example, found 3 examples and 2 labels
    """
    if len(x) != len(y):
        raise DataError(f"expected one label per example, found {len(x)} examples and {len(y)} labels", path, where)
