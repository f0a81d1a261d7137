"""Loss functions: scalar means over the batch, each a composition of primitives; and
penalties on parameters, to be added to a loss.

An elementwise loss is one ``map`` whose SymPy body is the loss of one element, so SymPy
derives its derivative and the formula printer shows it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import sympy

from . import functions as F
from .errors import GraphError
from .functions import _number
from .graph import Tensor
from .scalar import ScalarFunction, real_symbols
from .shapes import format_shape

__all__ = [
    "binary_cross_entropy",
    "huber",
    "l1_penalty",
    "l2_penalty",
    "mae",
    "mse",
    "softmax_cross_entropy",
]

prediction_symbol, target_symbol = real_symbols("a b")
ABSOLUTE_ERROR = ScalarFunction(
    "absolute_error", (prediction_symbol, target_symbol), sympy.Abs(prediction_symbol - target_symbol)
)


def _huber_body(delta: sympy.Expr) -> ScalarFunction:
    """One element's Huber loss. A Piecewise: SymPy differentiates each piece, giving
    ``p − y`` inside and ``δ·sign(p − y)`` outside, which meet at ``|p − y| = δ``."""
    error = prediction_symbol - target_symbol
    body = sympy.Piecewise((error**2 / 2, sympy.Abs(error) <= delta), (delta * (sympy.Abs(error) - delta / 2), True))
    return ScalarFunction("huber", (prediction_symbol, target_symbol), body)


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


def mae(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over every element, as ``torch.nn.functional.l1_loss``; the
    derivative of ``|p − y|`` at a tie is 0.

    >>> import numpy as np, symbackprop as sb
    >>> p, y = sb.input("p", (None,)), sb.input("y", (None,))
    >>> float(sb.evaluate(sb.mae(p, y), {p: np.array([1.0, 3.0]), y: np.array([0.0, 1.0])}))
    1.5
    """
    _check_same_shape("mae", prediction, target)
    return F.mean(F.apply(ABSOLUTE_ERROR, prediction, target))


def huber(prediction: Tensor, target: Tensor, delta: float = 1.0) -> Tensor:
    """Huber loss over every element, averaged, as ``torch.nn.functional.huber_loss``:
    ``(p − y)²/2`` where ``|p − y| <= δ`` and ``δ·(|p − y| − δ/2)`` beyond; its derivative
    is ``p − y`` clipped to ``[−δ, δ]``.

    >>> import numpy as np, symbackprop as sb
    >>> p, y = sb.input("p", (None,)), sb.input("y", (None,))
    >>> float(sb.evaluate(sb.huber(p, y), {p: np.array([0.5, 3.0]), y: np.array([0.0, 0.0])}))
    1.3125
    >>> print(sb.formula(sb.grad(sb.huber(p, y, delta=2.0), p)))
    ∂L/∂p = Piecewise((p − y, |p − y| <= 2), (2·sign(p − y), True))/n
    """
    _check_same_shape("huber", prediction, target)
    if not isinstance(delta, numbers.Real) or isinstance(delta, bool) or not math.isfinite(delta) or delta <= 0:
        raise GraphError(f"huber: delta must be a finite number > 0, got {delta!r}")
    return F.mean(F.apply(_huber_body(_number(delta)), prediction, target))


def l1_penalty(params: Tensor | Sequence[Tensor], scale: float) -> Tensor:
    """``scale·Σ|w|`` over every element of the given tensors (L1 regularisation, added to
    a loss); its gradient is ``scale·sign(w)``.

    >>> import numpy as np, symbackprop as sb
    >>> W = sb.param("W", (2,), init=np.array([1.0, -3.0]))
    >>> float(sb.evaluate(sb.l1_penalty([W], 0.5)))
    2.0
    """
    return _penalty("l1_penalty", params, scale, F.abs)


def l2_penalty(params: Tensor | Sequence[Tensor], scale: float) -> Tensor:
    """``scale·Σw²`` over every element of the given tensors (L2 regularisation, added to a
    loss); its gradient is ``2·scale·w``, so ``l2_penalty(params, λ/2)`` is the
    ``weight_decay=λ`` of :class:`~symbackprop.optim.SGD`.

    >>> import numpy as np, symbackprop as sb
    >>> W = sb.param("W", (2,), init=np.array([1.0, -3.0]))
    >>> float(sb.evaluate(sb.l2_penalty([W], 0.5)))
    5.0
    """
    return _penalty("l2_penalty", params, scale, lambda w: w * w)


def _penalty(name: str, params, scale, per_element) -> Tensor:
    tensors = [params] if isinstance(params, Tensor) else params
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise GraphError(f"{name}: params must be a tensor or a non-empty list of tensors, got {params!r}")
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, Tensor) or tensor.dtype == "int64":
            got = f"an int64 tensor {tensor.label}" if isinstance(tensor, Tensor) else repr(tensor)
            raise GraphError(f"{name}: params[{position}] must be a float tensor, got {got}")
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not math.isfinite(scale) or scale < 0:
        raise GraphError(f"{name}: scale must be a finite number >= 0, got {scale!r}")
    total = F.sum(per_element(tensors[0]))
    for tensor in tensors[1:]:
        total = total + F.sum(per_element(tensor))
    return scale * total
