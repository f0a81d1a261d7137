"""Containers: modules made of other modules."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import GraphError
from ..graph import Tensor
from .module import Module


class Sequential(Module):
    """Layers applied one after another; their parameters are named ``"0.W"``, ``"2.b"``, ...

    Layers that own parameters are numbered from 1 in formulas (``W1``, ``b1``, ``W2``, ...)
    unless they were given a ``name``.

    >>> import symbackprop as sb
    >>> model = sb.nn.Sequential(sb.nn.Dense(4, 8, activation="tanh"), sb.nn.Dense(8, 2))
    >>> model
    Sequential(
      (0): Dense(4 -> 8, activation=tanh)
      (1): Dense(8 -> 2)
    )
    >>> model(sb.input("x", (None, 4))).shape
    (None, 2)
    >>> [p.label for p in model.parameters().values()]
    ['W1', 'b1', 'W2', 'b2']
    """

    def __init__(self, *layers: Module):
        for position, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise GraphError(
                    f"Sequential: layer {position} is a {type(layer).__name__}, expected a symbackprop.nn.Module "
                    "(wrap functions in sb.nn.Activation)"
                )
        self.layers = list(layers)

    def members(self) -> Iterator[tuple[str, object]]:
        return ((str(i), layer) for i, layer in enumerate(self.layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def config(self) -> dict:
        return {}

    def extra_repr(self) -> str:
        return ""

    @classmethod
    def from_description(cls, description: dict, build_child) -> Sequential:
        return cls(*(build_child(child) for child in description["children"].values()))
