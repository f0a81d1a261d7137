"""Layer normalisation."""

from __future__ import annotations

from .. import functions as F
from ..graph import Tensor
from .module import Module, positive_ints


class LayerNorm(Module):
    """Normalise over the last axis, then scale and shift: ``γ ⊙ (x − μ)/√(σ² + eps) + β``.

    ``μ`` and ``σ²`` are the mean and the (biased) variance over the last axis of each
    example; ``gamma`` starts at ones and ``beta`` at zeros. Training and evaluation
    behave the same.

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 4))
    >>> y = sb.evaluate(sb.nn.LayerNorm(4)(x), {x: np.array([[1.0, 2.0, 3.0, 4.0]])})
    >>> np.round(y, 3).tolist()
    [[-1.342, -0.447, 0.447, 1.342]]
    """

    def __init__(self, features: int, eps: float = 1e-5, name: str | None = None, dtype: str = "float32"):
        (self.features,) = positive_ints(self, features=features)
        self.eps = float(eps)
        self.name = name
        self.gamma = self.add_param("gamma", (features,), init="ones", dtype=dtype)
        self.beta = self.add_param("beta", (features,), init="zeros", dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2:
            self.check_input(x, 2, "(batch, ..., features)")
        self.check_input(x, x.ndim, "(batch, ..., features)", self.features, self.gamma.dtype)
        centred = x - F.mean(x, axis=-1, keepdims=True)
        variance = F.mean(centred**2, axis=-1, keepdims=True)
        return centred / F.sqrt(variance + self.eps) * self.gamma + self.beta

    def extra_repr(self) -> str:
        return f"{self.features}, eps={self.eps:g}"
