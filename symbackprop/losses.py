"""Loss functions: scalar means over the batch, each a composition of primitives."""

from __future__ import annotations

from . import functions as F
from .errors import GraphError
from .graph import Tensor
from .shapes import format_shape


def _check_same_shape(name, prediction, target):
    if prediction.shape != target.shape:
        raise GraphError(
            f"{name}: the prediction {prediction.label} {format_shape(prediction.shape)} and the target "
            f"{target.label} {format_shape(target.shape)} must have the same shape"
        )


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every element.

    >>> import numpy as np, symbackprop as sb
    >>> p, y = sb.input("p", (None,)), sb.input("y", (None,))
    >>> float(sb.evaluate(sb.mse(p, y), {p: np.array([1.0, 3.0]), y: np.array([0.0, 1.0])}))
    2.5
    """
    _check_same_shape("mse", prediction, target)
    return F.mean((prediction - target) ** 2)


def softmax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of ``softmax(logits)`` against int64 class ``labels`` (or one-hot rows),
    averaged over the batch.

    >>> import numpy as np, symbackprop as sb
    >>> z, y = sb.input("z", (None, 3)), sb.input("y", (None,), dtype="int64")
    >>> round(float(sb.evaluate(sb.softmax_cross_entropy(z, y), {z: np.zeros((2, 3)), y: [0, 2]})), 4)
    1.0986
    """
    if logits.ndim != 2:
        raise GraphError(
            f"softmax_cross_entropy: logits {logits.label} must be (batch, classes), got {format_shape(logits.shape)}"
        )
    if labels.dtype == "int64":
        if labels.shape != logits.shape[:1]:
            raise GraphError(
                f"softmax_cross_entropy: labels {labels.label} {format_shape(labels.shape)} must have "
                f"shape {format_shape(logits.shape[:1])} to match logits {logits.label} {format_shape(logits.shape)}"
            )
        targets = F.one_hot(labels, logits.shape[1], logits.dtype)
    else:
        if labels.shape == logits.shape[:1]:
            raise GraphError(
                f"softmax_cross_entropy: labels {labels.label} {format_shape(labels.shape)} are {labels.dtype}; "
                f"class labels must be int64 (or give one-hot rows of shape {format_shape(logits.shape)})"
            )
        _check_same_shape("softmax_cross_entropy", logits, labels)
        targets = labels
    return F.mean(-(targets * F.log_softmax(logits, axis=1)).sum(axis=1))


def binary_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1], from the logits
    (stable for any logit), averaged over every element.

    >>> import numpy as np, symbackprop as sb
    >>> z, y = sb.input("z", (None,)), sb.input("y", (None,))
    >>> round(float(sb.evaluate(sb.binary_cross_entropy(z, y), {z: [0.0], y: [1.0]})), 4)
    0.6931
    """
    _check_same_shape("binary_cross_entropy", logits, targets)
    return F.mean(F.apply(F.BCE_WITH_LOGITS, logits, targets))
