"""Activation functions: the name table layers accept, and activation modules.

A layer's ``activation=`` is a name from :data:`ACTIVATIONS`, one of those functions
(``sb.tanh``), a user function from ``sb.function`` or any callable on tensors. Names and
user functions are written into descriptions, so a model using them can be rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

from .. import functions as F
from ..errors import GraphError
from ..functions import Function
from ..graph import Tensor
from ..scalar import sigmoid, softplus
from .module import Module

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": F.tanh,
    "relu": F.relu,
    "sigmoid": F.sigmoid,
    "softplus": F.softplus,
    "leaky_relu": F.leaky_relu,
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    "exp": F.exp,
    "abs": F.abs,
}
_NAMES = {fn: name for name, fn in ACTIVATIONS.items()}


def resolve_activation(spec, where: str) -> Callable[[Tensor], Tensor] | None:
    """The function an ``activation=`` argument stands for (``None`` for none).

    >>> import symbackprop as sb
    >>> resolve_activation("tanh", "Dense") is sb.tanh
    True
    """
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        if spec not in ACTIVATIONS:
            raise GraphError(f"{where}: unknown activation {spec!r}; expected one of {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[spec]
    if isinstance(spec, dict) and {"function", "args", "body"} <= set(spec):
        symbols = [sympy.Symbol(s) for s in spec["args"]]
        names = {"sigmoid": sigmoid, "softplus": softplus, **{s.name: s for s in symbols}}
        return F.function(spec["function"], sympy.sympify(spec["body"], locals=names), symbols)
    raise GraphError(f"{where}: activation {spec!r} is not a name, a function or a description of one")


def describe_activation(fn) -> str | dict | None:
    """The JSON form of an activation: its name, or a user function's name, arguments and body.

    >>> import sympy, symbackprop as sb
    >>> t = sympy.Symbol("t")
    >>> describe_activation(sb.function("swish", t * sb.scalar.sigmoid(t), [t]))
    {'function': 'swish', 'args': ['t'], 'body': 't*sigmoid(t)'}
    """
    if fn is None:
        return None
    if fn in _NAMES:
        return _NAMES[fn]
    if isinstance(fn, Function):
        return {"function": fn.name, "args": [s.name for s in fn.scalar.symbols], "body": str(fn.scalar.body)}
    return {"callable": getattr(fn, "__qualname__", type(fn).__name__)}


def activation_label(fn) -> str:
    """A short name of an activation for printing.

    >>> import symbackprop as sb
    >>> activation_label(sb.relu)
    'relu'
    """
    described = describe_activation(fn)
    return described if isinstance(described, str) else next(iter(described.values()))


class Activation(Module):
    """An activation function as a layer: ``Activation("tanh")``, ``Activation(sb.relu)``,
    ``Activation(my_function)``.

    >>> import symbackprop as sb
    >>> sb.nn.Activation("sigmoid")(sb.input("x", (None, 3))).shape
    (None, 3)
    """

    def __init__(self, fn):
        self.fn = resolve_activation(fn, "Activation")
        if self.fn is None:
            raise GraphError("Activation: needs a function, got None")

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def config(self) -> dict:
        return {"fn": describe_activation(self.fn)}

    def extra_repr(self) -> str:
        return activation_label(self.fn)


class _Named(Module):
    """An activation module with a fixed function and no arguments."""

    function: Callable[[Tensor], Tensor]

    def forward(self, x: Tensor) -> Tensor:
        return type(self).function(x)

    def extra_repr(self) -> str:
        return ""


class Tanh(_Named):
    """Elementwise ``tanh``; ``sb.nn.Tanh()(x)`` is ``sb.tanh(x)``.

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None, 3))
    >>> sb.nn.Tanh()(x) is sb.tanh(x)
    True
    """

    function = staticmethod(F.tanh)


class ReLU(_Named):
    """Elementwise ``max(x, 0)``.

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None, 3))
    >>> sb.nn.ReLU()(x) is sb.relu(x)
    True
    """

    function = staticmethod(F.relu)


class Sigmoid(_Named):
    """Elementwise ``1/(1 + exp(-x))``.

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None, 3))
    >>> sb.nn.Sigmoid()(x) is sb.sigmoid(x)
    True
    """

    function = staticmethod(F.sigmoid)


class Softplus(_Named):
    """Elementwise ``log(1 + exp(x))``.

    >>> import symbackprop as sb
    >>> x = sb.input("x", (None, 3))
    >>> sb.nn.Softplus()(x) is sb.softplus(x)
    True
    """

    function = staticmethod(F.softplus)


class LeakyReLU(Module):
    """Elementwise ``x`` for ``x > 0``, else ``alpha*x``.

    >>> import symbackprop as sb
    >>> x = sb.input("x", (3,))
    >>> sb.evaluate(sb.nn.LeakyReLU(0.1)(x), {x: [-2.0, 0.0, 3.0]}).tolist()
    [-0.2, 0.0, 3.0]
    """

    def __init__(self, alpha: float = 0.01):
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softmax(Module):
    """Softmax over ``axis`` (the last by default).

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 2))
    >>> sb.evaluate(sb.nn.Softmax()(x), {x: np.zeros((1, 2))}).tolist()
    [[0.5, 0.5]]
    """

    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    """``x - logsumexp(x)`` over ``axis`` (the last by default).

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 2))
    >>> np.exp(sb.evaluate(sb.nn.LogSoftmax()(x), {x: np.zeros((1, 2))})).tolist()
    [[0.5, 0.5]]
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.axis)
