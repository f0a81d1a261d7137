"""Embedding tables."""

from __future__ import annotations

from .. import functions as F
from ..errors import GraphError
from ..graph import Tensor
from ..shapes import format_shape
from .module import Module, derive_seed, positive_ints


class Embedding(Module):
    """Rows of a ``(vocab, dim)`` table ``E`` picked by int64 indices: ``(n,)`` gives
    ``(n, dim)``, ``(n, T)`` gives ``(n, T, dim)``. ``E`` starts from ``N(0, 1)`` unless
    ``init`` says otherwise. Compiled calls check that fed indices lie in ``[0, vocab)``.

    >>> import numpy as np, symbackprop as sb
    >>> words = sb.input("words", (None, 5), dtype="int64")
    >>> table = sb.nn.Embedding(100, 8, seed=0)
    >>> table(words).shape
    (None, 5, 8)
    """

    def __init__(
        self, vocab: int, dim: int, init="normal", seed: int | None = None, name: str | None = None, dtype="float32"
    ):
        self.vocab, self.dim = positive_ints(self, vocab=vocab, dim=dim)
        self.name = name
        init_args = {"std": 1.0} if init == "normal" else {}
        self.E = self.add_param("E", (vocab, dim), init=init, seed=derive_seed(seed, 0), dtype=dtype, **init_args)

    def forward(self, indices: Tensor) -> Tensor:
        if indices.dtype != "int64":
            raise GraphError(
                f"{self.summary()}: indices {indices.label} {format_shape(indices.shape)} are {indices.dtype}, "
                "expected int64"
            )
        if indices.ndim not in (1, 2):
            raise GraphError(
                f"{self.summary()}: indices {indices.label} have shape {format_shape(indices.shape)}, "
                "expected (batch,) or (batch, time)"
            )
        return F.gather(self.E, indices)

    def extra_repr(self) -> str:
        return f"{self.vocab}, {self.dim}"
