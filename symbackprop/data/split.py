"""Seeded train/test splits, stratified by class when the labels are classes."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .convert import is_class_labels
from .errors import DataError


class Split(NamedTuple):
    """A data set cut in two: ``train`` and ``test``, each an ``(X, y)`` pair of arrays."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def _test_counts(counts: np.ndarray, n_test: int) -> np.ndarray:
    """How many examples of each class go to the test set: each class its share of
    ``n_test``, rounded so that the shares add up to exactly ``n_test`` (the leftover goes to
    the classes whose shares were rounded down the most)."""
    share = counts * (n_test / counts.sum())
    taken = np.floor(share).astype(np.int64)
    leftover = n_test - int(taken.sum())
    taken[np.argsort(-(share - taken), kind="stable")[:leftover]] += 1
    return taken


def _stratified_test_indices(y: np.ndarray, n_test: int, rng: np.random.Generator) -> np.ndarray:
    _, classes, counts = np.unique(y, return_inverse=True, return_counts=True)
    # Shuffle, then group by class keeping the shuffled order: the first examples of each
    # class's group are a random sample of that class.
    shuffled = rng.permutation(len(y))
    grouped = shuffled[np.argsort(classes[shuffled], kind="stable")]
    group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_class = np.arange(len(y)) - group_start[classes[grouped]]
    return grouped[rank_in_class < _test_counts(counts, n_test)[classes[grouped]]]


def train_test_split(x, y, test_fraction: float = 0.2, seed: int = 0, stratify: bool | None = None) -> Split:
    """Split examples ``x`` and labels ``y`` at random into a train and a test set.

    ``round(len(x) * test_fraction)`` examples go to the test set. With ``stratify`` each
    class keeps its proportion in both sets; by default it is on when ``y`` holds class
    labels (a 1-D array of whole numbers) and off for other targets. The same ``seed``
    gives the same split; both sets come out shuffled.

    >>> import numpy as np
    >>> X, y = np.arange(20).reshape(10, 2), np.array([0] * 5 + [1] * 5)
    >>> split = train_test_split(X, y, test_fraction=0.4, seed=1)
    >>> X_train, y_train = split.train
    >>> X_train.shape, np.bincount(split.test[1])
    ((6, 2), array([2, 2]))
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise DataError(
            f"expected x and y with one label per example, found shapes {x.shape} and {y.shape}",
            where="train_test_split",
        )
    if not 0 < test_fraction < 1:
        raise DataError(f"expected a test_fraction between 0 and 1, found {test_fraction!r}", where="train_test_split")
    n_test = round(len(x) * test_fraction)
    if not 0 < n_test < len(x):
        raise DataError(
            f"a test_fraction of {test_fraction} of {len(x)} examples leaves the train or the test set empty",
            where="train_test_split",
        )
    rng = np.random.default_rng(seed)
    stratify = is_class_labels(y) if stratify is None else stratify
    test = _stratified_test_indices(y, n_test, rng) if stratify else rng.permutation(len(x))[:n_test]
    in_test = np.zeros(len(x), dtype=bool)
    in_test[test] = True
    train_order = rng.permutation(np.flatnonzero(~in_test))
    test_order = rng.permutation(np.flatnonzero(in_test))
    return Split(train=(x[train_order], y[train_order]), test=(x[test_order], y[test_order]))
