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
from .conv import Conv2D, conv2d
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .module import Module, build
from .normalization import LayerNorm
from .pool import AvgPool2D, Flatten, MaxPool2D
from .recurrent import GRU, LSTM, RNN

__all__ = [
    "ACTIVATIONS",
    "GRU",
    "LSTM",
    "RNN",
    "Activation",
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "LayerNorm",
    "LeakyReLU",
    "LogSoftmax",
    "MaxPool2D",
    "Module",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "build",
    "conv2d",
]
