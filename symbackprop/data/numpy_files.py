"""Loaders for a user's NumPy files: one ``.npz`` archive, or a pair of ``.npy`` arrays."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .convert import as_features, as_targets, check_same_length
from .errors import DataError

# What np.load raises on a file it cannot read as NumPy data: not a .npy/.npz file (read as
# a pickle, which is refused), an object array (refused for the same reason), a damaged archive,
# a truncated array.
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile)


def _open(path, expected: str):
    """``np.load`` with pickles refused, its errors turned into `DataError` naming ``path``."""
    if not os.path.isfile(path):
        raise DataError(f"no such file (expected {expected})", path)
    try:
        return np.load(path, allow_pickle=False)
    except _UNREADABLE as error:
        raise DataError(f"cannot be read as {expected} ({error})", path) from None


def _read_array(path) -> np.ndarray:
    loaded = _open(path, "a .npy array")
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise DataError("is an .npz archive, expected a .npy array (use load_npz)", path)
    return loaded


def load_npz(path: str | os.PathLike, x: str = "x", y: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Examples and labels from the arrays named ``x`` and ``y`` of an ``.npz`` archive (as
    written by ``np.savez``).

    Returns ``(X, y)``: X as float32 (a 1-D array becomes one column), y as int64 class labels
    when it is a 1-D array of whole numbers at least 0, else as float32 targets. Raises
    `DataError` naming the file and the key when the file is missing or unreadable, a key
    is absent, the arrays hold something other than finite numbers, or their lengths differ.

    >>> import numpy as np, os, tempfile
    >>> from symbackprop.data import load_npz
    >>> path = os.path.join(tempfile.mkdtemp(), "points.npz")
    >>> np.savez(path, inputs=np.zeros((3, 2)), labels=[0, 1, 1])
    >>> X, y = load_npz(path, x="inputs", y="labels")
    >>> X.shape, X.dtype, y.dtype
    ((3, 2), dtype('float32'), dtype('int64'))
    >>> load_npz(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    symbackprop.data.errors.DataError: ...points.npz, key 'x': no such array (the archive holds 'inputs', 'labels')
    """
    archive = _open(path, "an .npz archive")
    if isinstance(archive, np.ndarray):
        raise DataError("is a single .npy array, expected an .npz archive (use load_npy)", path)
    with archive:
        arrays = {}
        for key in (x, y):
            if key not in archive.files:
                held = ", ".join(map(repr, archive.files)) or "no arrays"
                raise DataError(f"no such array (the archive holds {held})", path, f"key {key!r}")
            try:
                arrays[key] = archive[key]
            except _UNREADABLE as error:
                raise DataError(f"cannot be read ({error})", path, f"key {key!r}") from None
    features = as_features(arrays[x], path, f"key {x!r}")
    labels = as_targets(arrays[y], path, f"key {y!r}")
    check_same_length(features, labels, path)
    return features, labels


def load_npy(x_path: str | os.PathLike, y_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Examples and labels from two ``.npy`` files (as written by ``np.save``), with the
    conversions and errors of `load_npz`.

    >>> import numpy as np, os, tempfile
    >>> from symbackprop.data import load_npy
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "x.npy"), np.linspace(0, 1, 4))
    >>> np.save(os.path.join(folder, "y.npy"), np.linspace(0, 1, 4) ** 2)
    >>> X, y = load_npy(os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy"))
    >>> X.shape, y.shape, y.dtype
    ((4, 1), (4,), dtype('float32'))
    """
    features = as_features(_read_array(x_path), x_path)
    labels = as_targets(_read_array(y_path), y_path)
    check_same_length(features, labels, y_path)
    return features, labels
