"""Classification metrics: checked against scikit-learn on random labels, including classes
that are never predicted or never occur, and the printed tables."""

import warnings

import numpy as np
import pytest

from symbackprop.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    f1,
    format_confusion_matrix,
    precision,
    recall,
)

OURS = {"precision": precision, "recall": recall, "f1": f1}


def _random_labels(seed, n=60, k=5):
    """True labels over all ``k`` classes; predictions that never say the last class."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n), rng.integers(0, k - 1, n)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("seed", range(4))
def test_against_sklearn_with_a_class_never_predicted(seed, no_warnings):
    skm = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = _random_labels(seed)
    assert accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert np.array_equal(confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred))
    theirs = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
    for name, ours in OURS.items():
        for average in (None, "macro", "weighted"):
            expected = theirs[name](y_true, y_pred, average=average, zero_division=0)
            assert np.allclose(ours(y_true, y_pred, average=average), expected), (name, average)
    assert precision(y_true, y_pred, average=None)[-1] == 0.0


def test_against_sklearn_with_a_class_never_occurring(no_warnings):
    skm = pytest.importorskip("sklearn.metrics")
    y_pred, y_true = _random_labels(11)  # now the last class is predicted but never true
    for name, ours in OURS.items():
        theirs = getattr(skm, f"{name}_score")
        assert np.allclose(ours(y_true, y_pred, average=None), theirs(y_true, y_pred, average=None, zero_division=0))
        assert ours(y_true, y_pred) == pytest.approx(theirs(y_true, y_pred, average="macro", zero_division=0))
    assert recall(y_true, y_pred, average=None)[-1] == 0.0


def test_scores_are_read_by_their_argmax():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 30)
    logits = rng.normal(size=(30, 4))
    labels = logits.argmax(axis=1)
    assert accuracy(y_true, logits) == accuracy(y_true, labels)
    assert np.array_equal(confusion_matrix(y_true, logits), confusion_matrix(y_true, labels, num_classes=4))
    assert np.array_equal(f1(np.eye(4)[y_true], logits, average=None), f1(y_true, labels, average=None, num_classes=4))


def test_score_columns_fix_the_number_of_classes():
    # Class 2 appears nowhere, but the scores have three columns.
    cm = confusion_matrix([0, 1], np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]))
    assert cm.shape == (3, 3)
    assert precision([0, 1], [0, 1], average=None, num_classes=4).tolist() == [1.0, 1.0, 0.0, 0.0]
    # A class that occurs nowhere does not pull the macro average down.
    assert precision([0, 1], [0, 1], num_classes=4) == 1.0


def test_whole_float_labels_are_accepted():
    assert accuracy(np.array([0.0, 1.0, 2.0]), [0, 1, 1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "call", "message"),
    [
        ([0, 1, 1], [0, 1], {}, "y_true holds 3 examples but y_pred holds 2"),
        (
            [0, 1],
            np.zeros((2, 2, 2)),
            {},
            r"y_pred: expected class labels \(n,\) or scores \(n, k\), found float64 \(2, 2, 2\)",
        ),
        ([0, 1], ["a", "b"], {}, "y_pred: expected class labels"),
        ([], [], {}, "y_true: expected at least one example"),
        ([0, -1], [0, 1], {}, "y_true: expected class labels from 0, found -1"),
        ([0, 1], [0.5, 1.0], {}, "y_pred: expected whole-number class labels, found fractions"),
        (
            [0, 3],
            [0, 1],
            {"num_classes": 3},
            "num_classes=3 is too few: the labels and scores given need at least 4 classes",
        ),
        ([0, 1], np.zeros((2, 5)), {"num_classes": 3}, "need at least 5 classes"),
    ],
)
def test_bad_arguments_say_what_was_expected(y_true, y_pred, call, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(y_true, y_pred, **call)


def test_unknown_average_lists_the_choices():
    with pytest.raises(
        ValueError, match="recall: expected average to be one of None, 'macro', 'weighted', found 'micro'"
    ):
        recall([0, 1], [0, 1], average="micro")


def test_classification_report_table():
    y_true = [0, 0, 1, 1, 1, 2, 2, 3]
    y_pred = [0, 1, 1, 1, 0, 2, 1, 0]  # class 3 is never predicted
    report = classification_report(y_true, y_pred, class_names=["zero", "one", "two", "three"])
    assert report == (
        "class      precision  recall    f1  support\n"
        "zero            0.33    0.50  0.40        2\n"
        "one             0.50    0.67  0.57        3\n"
        "two             1.00    0.50  0.67        2\n"
        "three           0.00    0.00  0.00        1\n"
        "macro avg       0.46    0.42  0.41        8\n"
        "accuracy: 0.50 (4 of 8)"
    )


def test_classification_report_numbers_match_the_functions():
    y_true, y_pred = _random_labels(5, n=40, k=3)
    lines = classification_report(y_true, y_pred, digits=4).splitlines()
    per_class = np.array([[float(cell) for cell in line.split()[1:4]] for line in lines[1:4]])
    expected = np.stack([OURS[name](y_true, y_pred, average=None) for name in ("precision", "recall", "f1")], axis=1)
    assert np.allclose(per_class, expected, atol=5e-5)
    macro = [float(cell) for cell in lines[4].split()[2:5]]
    assert np.allclose(macro, [OURS[name](y_true, y_pred) for name in ("precision", "recall", "f1")], atol=5e-5)
    assert lines[5] == f"accuracy: {accuracy(y_true, y_pred):.4f} ({int(np.sum(y_true == y_pred))} of 40)"


def test_class_names_must_match_the_classes():
    with pytest.raises(ValueError, match="too few"):
        classification_report([0, 2], [0, 1], class_names=["a", "b"])
    with pytest.raises(ValueError, match="expected 3 class names, one per class, found 2"):
        format_confusion_matrix(np.eye(3, dtype=int), class_names=["a", "b"])


def test_format_confusion_matrix_aligns_wide_counts():
    text = format_confusion_matrix(np.array([[1234, 5], [0, 7]]))
    assert text == "true \\ predicted     0  1\n0                 1234  5\n1                    0  7"


@pytest.mark.parametrize("cm", [np.zeros((2, 3), dtype=int), np.array([[1.5, 0], [0, 1]]), np.array([[1, -1], [0, 1]])])
def test_format_confusion_matrix_wants_square_counts(cm):
    with pytest.raises(ValueError, match=r"expected a square matrix of counts \(k, k\)"):
        format_confusion_matrix(cm)


def test_a_single_score_column_is_refused_not_argmaxed():
    with pytest.raises(ValueError, match=r"one score per example \(3, 1\) names no class"):
        accuracy([0, 1, 1], np.array([[0.2], [-0.1], [3.0]]))
