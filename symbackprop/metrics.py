"""Classification metrics on NumPy arrays: accuracy, the confusion matrix, per-class precision,
recall and F1, and printable reports.

Predictions are class labels ``(n,)`` or scores ``(n, k)`` (logits, probabilities, one-hot
rows), of which the argmax is taken; true labels may be given either way too. A class that
is never predicted has precision 0, one that never occurs has recall 0, and F1 is 0 where
precision and recall both are: no warnings, no NaN.

>>> import numpy as np
>>> from symbackprop import metrics
>>> logits = np.array([[2.0, 0.1], [0.3, 1.5], [1.0, 0.2]])
>>> metrics.accuracy([0, 1, 1], logits)
0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# How a labels argument is read, by its number of dimensions: labels as they are, or one
# row of scores per example, whose argmax is the label. The second value is how many
# classes the argument implies (a score row has one column per class).
_READERS = {
    1: lambda values: (values, 0),
    2: lambda values: (np.argmax(values, axis=1), values.shape[1]),
}


def _as_labels(name: str, values) -> tuple[np.ndarray, int]:
    array = np.asarray(values)
    if array.ndim not in _READERS or array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected class labels (n,) or scores (n, k), found {array.dtype} {array.shape}")
    if len(array) == 0:
        raise ValueError(f"{name}: expected at least one example, found none")
    if array.ndim == 2 and array.shape[1] == 1:
        # The argmax of one column is always 0: a single logit or probability is not a score row.
        raise ValueError(
            f"{name}: one score per example {array.shape} names no class; give labels (n,) "
            "(for a single logit: (scores > 0).astype(int)) or one score per class (n, k)"
        )
    labels, width = _READERS[array.ndim](array)
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError(f"{name}: expected whole-number class labels, found fractions (give scores as (n, k))")
    if labels.min() < 0:
        raise ValueError(f"{name}: expected class labels from 0, found {labels.min()}")
    return labels.astype(np.int64), width


def _labels_pair(y_true, y_pred, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Both arguments as int64 labels, checked against each other, and the number of classes."""
    true, true_width = _as_labels("y_true", y_true)
    pred, pred_width = _as_labels("y_pred", y_pred)
    if len(true) != len(pred):
        raise ValueError(
            f"y_true holds {len(true)} examples but y_pred holds {len(pred)}: expected one prediction each"
        )
    needed = max(int(true.max()) + 1, int(pred.max()) + 1, true_width, pred_width)
    if num_classes is None:
        return true, pred, needed
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < needed:
        raise ValueError(
            f"num_classes={num_classes!r} is too few: the labels and scores given need at least {needed} classes"
        )
    return true, pred, int(num_classes)


def accuracy(y_true, y_pred) -> float:
    """The fraction of examples whose predicted class is the true one.

    >>> accuracy([0, 1, 2, 2], [0, 2, 2, 2])
    0.75
    """
    true, pred, _ = _labels_pair(y_true, y_pred, None)
    return float(np.mean(true == pred))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts of examples by true class (rows) and predicted class (columns), int64
    ``(k, k)``. ``k`` is ``num_classes``, or else the fewest classes that hold every label
    (and every score column).

    >>> confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2])
    array([[1, 0, 0],
           [0, 0, 1],
           [0, 0, 2]])
    """
    true, pred, k = _labels_pair(y_true, y_pred, num_classes)
    return np.bincount(true * k + pred, minlength=k * k).reshape(k, k)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


# Each per-class score from the confusion matrix: the diagonal holds the true positives,
# column sums count predictions of a class, row sums its true examples (its support).
# F1, the harmonic mean of precision and recall, is written 2·TP / (predicted + support).
_SCORES = {
    "precision": lambda cm: _ratio(np.diag(cm), cm.sum(axis=0)),
    "recall": lambda cm: _ratio(np.diag(cm), cm.sum(axis=1)),
    "f1": lambda cm: _ratio(2 * np.diag(cm), cm.sum(axis=0) + cm.sum(axis=1)),
}

# How per-class scores are summarised. "macro" is the plain mean over the classes that occur
# in y_true or y_pred (a class that appears in neither has no score to speak of); "weighted"
# weights each class by its support.
_AVERAGES = {
    None: lambda scores, cm: scores,
    "macro": lambda scores, cm: float(scores[(cm.sum(axis=0) + cm.sum(axis=1)) > 0].mean()),
    "weighted": lambda scores, cm: float(np.average(scores, weights=cm.sum(axis=1))),
}


def _score(name: str, y_true, y_pred, average, num_classes):
    if not isinstance(average, (str, type(None))) or average not in _AVERAGES:
        raise ValueError(f"{name}: expected average to be one of {', '.join(map(repr, _AVERAGES))}, found {average!r}")
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return _AVERAGES[average](_SCORES[name](cm), cm)


def precision(y_true, y_pred, average: str | None = "macro", num_classes: int | None = None):
    """Of the examples predicted as a class, the fraction that belong to it; 0 for a class
    never predicted.

    ``average="macro"`` gives the mean over the classes that occur in ``y_true`` or
    ``y_pred`` (a float), ``"weighted"`` the mean weighted by each class's support, and
    ``None`` one score per class (float64 ``(k,)``, ``k`` as in `confusion_matrix`).

    >>> precision([0, 1, 2, 2], [0, 2, 2, 2], average=None)
    array([1.        , 0.        , 0.66666667])
    >>> round(precision([0, 1, 2, 2], [0, 2, 2, 2]), 4)
    0.5556
    """
    return _score("precision", y_true, y_pred, average, num_classes)


def recall(y_true, y_pred, average: str | None = "macro", num_classes: int | None = None):
    """Of the examples of a class, the fraction predicted as it; 0 for a class that never
    occurs in ``y_true``. ``average`` and ``num_classes`` as in `precision`.

    >>> recall([0, 1, 2, 2], [0, 2, 2, 2], average=None)
    array([1., 0., 1.])
    """
    return _score("recall", y_true, y_pred, average, num_classes)


def f1(y_true, y_pred, average: str | None = "macro", num_classes: int | None = None):
    """The harmonic mean of precision and recall per class; 0 where both are 0.
    ``average`` and ``num_classes`` as in `precision`.

    >>> f1([0, 1, 2, 2], [0, 2, 2, 2], average=None)
    array([1. , 0. , 0.8])
    """
    return _score("f1", y_true, y_pred, average, num_classes)


def _class_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(k)]
    if len(class_names) != k:
        raise ValueError(f"expected {k} class names, one per class, found {len(class_names)}")
    return [str(name) for name in class_names]


def _table(rows: list[list[str]]) -> str:
    """Rows of cells as aligned text: the first column to the left, the others to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:]))])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def classification_report(
    y_true, y_pred, class_names: Sequence[str] | None = None, num_classes: int | None = None, digits: int = 2
) -> str:
    """A table of precision, recall, F1 and support (the number of true examples) per class,
    their macro average (as `precision` and the others compute it), and the accuracy.

    ``class_names`` name the classes in order (and so fix their number); without them the
    classes are numbered. ``digits`` is the number of decimals shown.

    >>> print(classification_report([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], class_names=["cat", "dog", "bird"]))
    class      precision  recall    f1  support
    cat             1.00    1.00  1.00        1
    dog             1.00    0.50  0.67        2
    bird            0.67    1.00  0.80        2
    macro avg       0.89    0.83  0.82        5
    accuracy: 0.80 (4 of 5)
    """
    if class_names is not None:
        num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    names = _class_names(class_names, len(cm))
    scores = [_SCORES[name](cm) for name in ("precision", "recall", "f1")]
    support = cm.sum(axis=1)
    rows = [["class", "precision", "recall", "f1", "support"]]
    rows += [[name, *(f"{s[c]:.{digits}f}" for s in scores), str(support[c])] for c, name in enumerate(names)]
    rows.append(["macro avg", *(f"{_AVERAGES['macro'](s, cm):.{digits}f}" for s in scores), str(support.sum())])
    correct, total = int(np.trace(cm)), int(support.sum())
    return _table(rows) + f"\naccuracy: {correct / total:.{digits}f} ({correct} of {total})"


def format_confusion_matrix(cm, class_names: Sequence[str] | None = None) -> str:
    """A confusion matrix as an aligned table: true classes down the side, predicted classes
    across the top.

    >>> cm = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1])
    >>> print(format_confusion_matrix(cm, class_names=["cat", "dog", "bird"]))
    true \\ predicted  cat  dog  bird
    cat                 1    0     0
    dog                 0    1     1
    bird                0    0     2
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.dtype.kind not in "iu" or (cm < 0).any():
        raise ValueError(f"expected a square matrix of counts (k, k), found {cm.dtype} {cm.shape}")
    names = _class_names(class_names, len(cm))
    rows = [["true \\ predicted", *names]]
    rows += [[name, *map(str, counts)] for name, counts in zip(names, cm.tolist())]
    return _table(rows)
