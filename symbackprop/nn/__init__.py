"""Layers and models built from symbackprop's primitives.

A layer is a :class:`Module`: calling it on a tensor builds graph nodes, so everything that
works on a hand-built graph (``sb.grad``, ``sb.formula``, ``sb.evaluate``, ``sb.compile``,
``sb.compile_step``) works on a model's output unchanged.

>>> import symbackprop as sb
>>> model = sb.nn.Sequential(sb.nn.Dense(4, 3, activation="relu"), sb.nn.Dense(3, 2))
>>> model(sb.input("x", (None, 4))).shape
(None, 2)
"""

from .activation import ACTIVATIONS, Activation, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .container import Sequential
from .dense import Dense
from .dropout import Dropout
from .module import Module, build

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Dense",
    "Dropout",
    "LeakyReLU",
    "LogSoftmax",
    "Module",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "build",
]
