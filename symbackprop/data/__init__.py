"""Data for training and testing: the embedded handwritten digits, small synthetic sets, and
loaders for a user's NumPy and CSV files.

Every loader returns ``(X, y)`` pairs of NumPy arrays: X float32, y int64 class labels (for
`sb.softmax_cross_entropy`) or float32 targets. Problems with a file raise `DataError`
naming the file and the place in it.

>>> from symbackprop import data
>>> (X_train, y_train), (X_test, y_test) = data.load_digits(seed=1)
>>> X_train.shape, y_test.dtype
((1438, 64), dtype('int64'))
"""

from .csv_files import load_csv
from .digits import load_digits
from .errors import DataError
from .numpy_files import load_npy, load_npz
from .split import Split, train_test_split
from .synthetic import noisy_sine, two_spirals, xor

__all__ = [
    "DataError",
    "Split",
    "load_csv",
    "load_digits",
    "load_npy",
    "load_npz",
    "noisy_sine",
    "train_test_split",
    "two_spirals",
    "xor",
]
