"""Dropout: a random mask over activations while training, drawn anew at every step."""

from __future__ import annotations

import itertools
import numbers

import sympy

from ..errors import GraphError
from ..functions import _number, apply
from ..graph import Tensor
from ..random import check_seed, random_uniform
from ..scalar import ScalarFunction, real_symbols
from .module import Module

_x, _u = real_symbols("x u")

# Seeds for Dropout layers made without one: each layer of a process its own, in the order
# they are made, so a script that builds its model the same way draws the same masks.
_unseeded = itertools.count(1_000_003)


class Dropout(Module):
    """Inverted dropout: in training mode ``x·[u ≥ rate]/(1 − rate)``, in evaluation mode ``x``.

    ``u`` is ``sb.random_uniform(x.shape, seed)``, counted by the step number
    (:func:`symbackprop.step_number`), so every training step, and every minibatch of a
    compiled epoch, draws a new mask, and the same seed draws the same masks again.
    Surviving elements are scaled by ``1/(1 − rate)`` so that the expected value of each
    element is unchanged and evaluation needs no rescaling. The mask and the scaling are
    one elementwise map of ``x`` and ``u``, so the gradient with respect to ``x`` is the
    mask times ``1/(1 − rate)``.

    Layers with equal seeds draw equal numbers for equal shapes; a layer made without a seed
    gets one of its own, counted in the order layers are made. Outside a compiled training
    step, feed the step number as the input ``"step"``.

    >>> import numpy as np, symbackprop as sb
    >>> drop = sb.nn.Dropout(0.5, seed=1)
    >>> x = sb.input("x", (None, 4))
    >>> print(sb.formula(drop(x)))
    y = 2·x ⊙ [U(seed 1, step) − 1/2 ≥ 0]
    >>> sb.evaluate(drop(x), {x: np.ones((2, 4)), "step": 1.0})
    array([[2., 0., 0., 0.],
           [2., 2., 2., 2.]], dtype=float32)
    >>> drop.eval()(x) is x
    True
    """

    def __init__(self, rate: float, seed: int | None = None):
        if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0 <= rate < 1:
            raise GraphError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = check_seed(next(_unseeded) if seed is None else seed, "Dropout")
        # Heaviside(·, 1) is 1 at 0: an element survives when u ≥ rate, with probability 1 − rate.
        rate_number = _number(rate)
        body = _x * sympy.Heaviside(_u - rate_number, 1) / (1 - rate_number)
        self.mask = ScalarFunction("dropout", (_x, _u), body)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype not in ("float32", "float64"):
            raise GraphError(f"{self.summary()}: input {x.label} is {x.dtype}, expected float32 or float64")
        if not self.training or self.rate == 0:
            return x
        return apply(self.mask, x, random_uniform(x.shape, self.seed, dtype=x.dtype))

    def extra_repr(self) -> str:
        return f"rate={self.rate}, seed={self.seed}"
