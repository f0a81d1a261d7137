"""The embedded default data set: 1,797 handwritten digits as 8x8 images."""

from __future__ import annotations

import functools
import gzip
import io
from importlib import resources

import numpy as np

from .errors import DataError
from .split import Split, train_test_split

_FILE = "digits.csv.gz"
_SIDE = 8
_MAX_COUNT = 16  # each pixel counts the set bits of a 4x4 block of the original 32x32 bitmap

# How the pixel rows are handed out: the 64 values as they are, or as one-channel images
# (NHWC, the layout of the convolution ops).
_SHAPES = {
    "flat": lambda pixels: pixels,
    "image": lambda pixels: pixels.reshape(-1, _SIDE, _SIDE, 1),
}


@functools.cache
def _table() -> np.ndarray:
    """The file's rows, parsed once per process: 64 pixel counts then the label."""
    packed = resources.files(__package__).joinpath(_FILE).read_bytes()
    table = np.loadtxt(io.BytesIO(gzip.decompress(packed)), delimiter=",", dtype=np.int64)
    table.setflags(write=False)
    return table


def load_digits(test_fraction: float = 0.2, seed: int = 0, shape: str = "flat", scale: bool = True) -> Split:
    """The handwritten digits shipped with symbackprop, split into train and test sets.

    1,797 digits, 8x8 images of pixel counts 0..16, with labels 0..9. Returns a `Split`:
    ``train`` and ``test`` are ``(X, y)`` pairs, X float32 of shape ``(n, 64)`` (``shape="flat"``)
    or ``(n, 8, 8, 1)`` (``shape="image"``, NHWC), scaled to [0, 1] when ``scale``, and y int64
    labels. The split is stratified by digit and the same ``seed`` gives the same split.

    Source: E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits", UCI
    Machine Learning Repository, 1998, doi:10.24432/C50P49, license CC BY 4.0 (the
    repository's test set, ``optdigits.tes``).

    >>> from symbackprop.data import load_digits
    >>> (X_train, y_train), (X_test, y_test) = load_digits()
    >>> X_train.shape, X_test.shape, X_train.dtype, y_train.dtype
    ((1438, 64), (359, 64), dtype('float32'), dtype('int64'))
    >>> float(X_train.min()), float(X_train.max())
    (0.0, 1.0)
    >>> load_digits(shape="image").train[0].shape
    (1438, 8, 8, 1)
    """
    if shape not in _SHAPES:
        raise DataError(
            f"expected shape to be one of {', '.join(map(repr, _SHAPES))}, found {shape!r}", where="load_digits"
        )
    table = _table()
    pixels = table[:, :-1].astype(np.float32)
    if scale:
        pixels /= _MAX_COUNT
    return train_test_split(_SHAPES[shape](pixels), table[:, -1].copy(), test_fraction=test_fraction, seed=seed)
