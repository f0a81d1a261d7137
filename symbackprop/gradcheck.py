"""Gradient checking: reverse mode against central differences along random directions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .autodiff import grad
from .evaluate import evaluate
from .graph import Tensor, const, input, rebuild


class GradientCheckError(AssertionError):
    """Reverse-mode and numerical derivatives disagree; the message holds the report."""


@dataclass
class DirectionalCheck:
    order: int
    analytic: float
    numeric: float

    @property
    def error(self) -> float:
        return abs(self.analytic - self.numeric)

    def __str__(self) -> str:
        return f"order {self.order}: reverse mode {self.analytic:.10g}, central differences {self.numeric:.10g}, |difference| {self.error:.3g}"


def check_grads(
    y: Tensor,
    wrt: Sequence[Tensor],
    feeds: Mapping | None = None,
    order: int = 2,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    seed: int = 0,
) -> list[DirectionalCheck]:
    """Check ``grad(y, wrt)`` against central differences, in float64, to ``order``.

    Along a random direction ``v``, the directional derivative ``<grad y, v>`` is compared
    with ``(y(w + eps v) - y(w - eps v)) / (2 eps)``; for order 2 the same check is applied
    to ``<grad y, v>`` itself (a Hessian-vector product). Raises
    :class:`GradientCheckError` with a report when they disagree; returns the checks.

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 3))
    >>> w = sb.param("w", (3,), init="normal", seed=0)
    >>> checks = sb.check_grads(sb.tanh(x @ w).sum(), [w], {x: np.ones((2, 3))})
    >>> [c.order for c in checks]
    [1, 2]
    """
    wrt = [wrt] if isinstance(wrt, Tensor) else list(wrt)
    feeds = {(k.label if isinstance(k, Tensor) else k): v for k, v in (feeds or {}).items()}
    rng = np.random.default_rng(seed)

    # Turn each wrt tensor into a float64 input whose value we can move.
    points = evaluate(wrt, feeds) if wrt else []
    names = [f"wrt{i}:{t.label}" for i, t in enumerate(wrt)]
    stand_ins = [input(name, t.shape, "float64") for name, t in zip(names, wrt)]
    (y64,) = rebuild([y], dict(zip(wrt, stand_ins)), float_dtype="float64")
    base = {k: np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else v for k, v in feeds.items()}
    base.update({name: np.asarray(p, dtype=np.float64) for name, p in zip(names, points)})

    checks: list[DirectionalCheck] = []
    target = y64
    for current_order in range(1, order + 1):
        directions = [rng.standard_normal(np.shape(base[name])) for name in names]
        norm = np.sqrt(sum(float(np.sum(d * d)) for d in directions)) or 1.0
        directions = [d / norm for d in directions]
        grads = grad(target, stand_ins)
        analytic = float(sum(np.sum(g * d) for g, d in zip(evaluate(grads, base), directions)))
        numeric = (_shifted(target, base, names, directions, eps) - _shifted(target, base, names, directions, -eps)) / (
            2 * eps
        )
        check = DirectionalCheck(current_order, analytic, numeric)
        checks.append(check)
        if not check.error <= atol + rtol * max(abs(analytic), abs(numeric)):
            report = "\n".join(map(str, checks))
            raise GradientCheckError(
                f"gradient of {y.label} with respect to {[t.label for t in wrt]} is wrong at order "
                f"{current_order} (rtol {rtol}, atol {atol}):\n{report}"
            )
        # The next order checks the derivative of <grad y, v>; v is fed as an input because
        # its shape may hold the batch dimension.
        target = const(0.0, "float64")
        for index, (g, t, d) in enumerate(zip(grads, stand_ins, directions)):
            v = input(f"direction{current_order}:{index}", t.shape, "float64")
            base[v.label] = d
            target = target + (g * v).sum()
    return checks


def _shifted(y, base, names, directions, step):
    moved = dict(base)
    for name, d in zip(names, directions):
        moved[name] = base[name] + step * d
    return float(evaluate(y, moved))
