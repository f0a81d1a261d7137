"""Learning-rate schedules: the learning rate as a SymPy expression of the step number ``t``.

An optimizer's ``lr`` may be a :class:`Schedule` instead of a number. Its expression is
substituted for ``η`` in the update rules, so a compiled training step computes the rate
from the step number it is fed anyway (no Python runs per step, also in the native epoch
loop), and ``optimizer.formula()`` prints it as ``η(t) = ...``.

``t`` is the number of the step being taken, counting from 1. Every schedule here gives
the rate that PyTorch's matching scheduler gives when ``scheduler.step()`` is called after
each ``optimizer.step()``: PyTorch's step ``k`` counts from 0, so its formulas read ``t − 1``
where ours do, and the first step uses the base rate.

>>> import symbackprop as sb
>>> decay = sb.schedules.step_decay(0.1, step_size=10, gamma=0.5)
>>> print(decay)
0.1·0.5^⌊(t − 0.5)/10⌋
>>> [decay(t) for t in (1, 10, 11, 21)]
[0.1, 0.1, 0.05, 0.025]
>>> print(sb.schedules.warmup(decay, 5))
min(t/5, 1)·0.1·0.5^⌊(t − 0.5)/10⌋
"""

from __future__ import annotations

import math
import numbers

import sympy

from .errors import GraphError
from .functions import _number
from .rule_printing import RuleLatexPrinter, RulePrinter
from .scalar import real_symbols

__all__ = ["Schedule", "ScheduleError", "constant", "cosine", "exponential", "step_decay", "t", "warmup"]

(t,) = real_symbols("t")  # the same symbol as the optimizers' step number


class ScheduleError(GraphError):
    """A schedule's argument or step number is not what it must be."""


class Schedule:
    """A learning rate as a function of the step number ``t`` (from 1).

    ``expr`` is a SymPy expression whose only symbol is :data:`t`, built unevaluated so
    that it prints as written; ``name`` is how the schedule was made, for ``repr``.
    Schedules compose by multiplication (with numbers or other schedules) and through
    :func:`warmup`.

    >>> import sympy, symbackprop as sb
    >>> from symbackprop.schedules import Schedule, t
    >>> inverse_sqrt = Schedule(0.1 / sympy.sqrt(t), "inverse_sqrt")
    >>> inverse_sqrt(4), inverse_sqrt.uses_step
    (0.05, True)
    >>> halved = inverse_sqrt * 0.5
    >>> print(halved)
    0.1·0.5/√t
    >>> halved(4)
    0.025
    """

    def __init__(self, expr, name: str | None = None):
        try:
            expr = sympy.sympify(expr)
        except (sympy.SympifyError, TypeError) as exc:
            raise ScheduleError(f"Schedule: {expr!r} is not a SymPy expression of t") from exc
        stray = expr.free_symbols - {t}
        if stray:
            raise ScheduleError(
                f"Schedule: the expression {expr} uses {sorted(map(str, stray))}; a schedule may use "
                "only the step number symbackprop.schedules.t"
            )
        self.expr = expr
        self.name = name or f"Schedule({expr})"
        self._value = sympy.lambdify([t], expr.doit(), modules="math")
        first = self._evaluate(1)
        if not (math.isfinite(first) and first > 0):
            raise ScheduleError(f"Schedule: {self.name} gives the rate {first!r} at t = 1; expected a finite rate > 0")

    @property
    def body(self) -> sympy.Expr:
        """The expression as update rules and compiled code compute it.

        Every power of a number to an exponent in ``t`` is written ``exp(exponent·ln base)``.
        Rational simplification would otherwise split ``0.9^(t − 1)`` into ``9ᵗ/(9·10ᵗ)``,
        whose two powers overflow float32 after 39 steps (inf/inf is NaN); one exponential
        of a decreasing exponent stays whole, and costs what a power costs.

        >>> import symbackprop as sb
        >>> sb.schedules.exponential(0.1, 0.9).body
        exp((t - 1)*log(9/10))/10
        """
        return self.expr.doit().replace(
            lambda e: e.is_Pow and e.base.is_Number and e.base > 0 and e.exp.has(t),
            lambda e: sympy.exp(e.exp * sympy.log(e.base)),
        )

    @property
    def uses_step(self) -> bool:
        """Whether the rate depends on ``t`` (a constant schedule does not)."""
        return self.expr.has(t)

    def _evaluate(self, step: int) -> float:
        try:
            return float(self._value(step))
        except (ValueError, ZeroDivisionError, OverflowError, TypeError) as exc:
            raise ScheduleError(f"{self.name}: cannot evaluate the rate at t = {step}: {exc}") from exc

    def __call__(self, step: int) -> float:
        """The rate at step ``step`` (an int >= 1), in float64."""
        if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 1:
            raise ScheduleError(f"{self.name}: the step number must be an int >= 1, got {step!r}")
        return self._evaluate(int(step))

    def __str__(self) -> str:
        return RulePrinter().doprint(self.expr)

    def __repr__(self) -> str:
        return self.name

    def latex(self) -> str:
        """The expression as LaTeX."""
        return RuleLatexPrinter().doprint(self.expr)

    def __mul__(self, other) -> Schedule:
        if isinstance(other, Schedule):
            factor, name = other.expr, repr(other)
        elif isinstance(other, numbers.Real) and not isinstance(other, bool):
            factor, name = _positive("Schedule *", "factor", other), repr(other)
        else:
            return NotImplemented
        with sympy.evaluate(False):
            expr = sympy.Mul(*_factors(self.expr), *_factors(factor))
        return Schedule(expr, f"{self.name} * {name}")

    __rmul__ = __mul__


def _factors(expr: sympy.Expr) -> tuple[sympy.Expr, ...]:
    """The factors of a product, or the expression alone: products print flat, without parentheses."""
    return expr.args if isinstance(expr, sympy.Mul) else (expr,)


def _positive(owner: str, name: str, value, *, allow_zero: bool = False) -> sympy.Expr:
    """``value`` as an exact SymPy number, after checking it is a finite number > 0 (or >= 0)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ScheduleError(f"{owner}: {name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ScheduleError(f"{owner}: {name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return _number(value)


def _count(owner: str, name: str, value) -> sympy.Integer:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ScheduleError(f"{owner}: {name} must be an int >= 1, got {value!r}")
    return sympy.Integer(int(value))


def _fraction(owner: str, name: str, value) -> sympy.Expr:
    number = _positive(owner, name, value)
    if value > 1:
        raise ScheduleError(f"{owner}: {name} must be in (0, 1], got {value!r}")
    return number


def constant(lr: float) -> Schedule:
    """The same rate at every step: ``η(t) = lr``. An optimizer given it behaves as if
    given the number.

    >>> import symbackprop as sb
    >>> rate = sb.schedules.constant(0.01)
    >>> print(rate)
    0.01
    >>> rate(1000), rate.uses_step
    (0.01, False)
    """
    return Schedule(_positive("constant", "lr", lr), f"constant({lr!r})")


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """The rate times ``gamma`` after every ``step_size`` steps: ``lr·γ^⌊(t − 1)/s⌋``, as
    ``torch.optim.lr_scheduler.StepLR`` stepped once per optimizer step.

    It is written ``⌊(t − 0.5)/s⌋``, equal for whole ``t``: a quotient computed in floating
    point can land just under a whole number (``49·(1/49) < 1``), and the half step keeps
    it clear of every jump.

    >>> import symbackprop as sb
    >>> decay = sb.schedules.step_decay(1.0, step_size=49, gamma=0.5)
    >>> decay(49), decay(50)
    (1.0, 0.5)
    """
    owner = "step_decay"
    rate, size, factor = (
        _positive(owner, "lr", lr),
        _count(owner, "step_size", step_size),
        _fraction(owner, "gamma", gamma),
    )
    with sympy.evaluate(False):
        expr = rate * factor ** sympy.floor((t - sympy.S.Half) / size)
    return Schedule(expr, f"step_decay(lr={lr!r}, step_size={step_size!r}, gamma={gamma!r})")


def exponential(lr: float, gamma: float) -> Schedule:
    """The rate times ``gamma`` after every step: ``lr·γ^(t − 1)``, as
    ``torch.optim.lr_scheduler.ExponentialLR`` stepped once per optimizer step.

    >>> import symbackprop as sb
    >>> decay = sb.schedules.exponential(0.1, gamma=0.5)
    >>> print(decay)
    0.1·0.5^(t − 1)
    >>> decay(3)
    0.025
    """
    owner = "exponential"
    rate, factor = _positive(owner, "lr", lr), _fraction(owner, "gamma", gamma)
    with sympy.evaluate(False):
        expr = rate * factor ** (t - 1)
    return Schedule(expr, f"exponential(lr={lr!r}, gamma={gamma!r})")


def cosine(lr: float, total_steps: int, min_lr: float = 0.0) -> Schedule:
    """Half a cosine from ``lr`` down to ``min_lr`` over ``total_steps`` steps, then
    ``min_lr``: ``min_lr + (lr − min_lr)·(1 + cos(π·min(t − 1, T)/T))/2``.

    Up to ``t = T + 1`` this is ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=T,
    eta_min=min_lr)`` stepped once per optimizer step; after it PyTorch's rate rises again
    along the cosine, while this one stays at ``min_lr``.

    >>> import symbackprop as sb
    >>> decay = sb.schedules.cosine(0.1, total_steps=100, min_lr=0.01)
    >>> print(decay)
    0.01 + 0.045·(1 + cos(π·min(t − 1, 100)/100))
    >>> decay(1), round(decay(51), 12), decay(101), decay(500)
    (0.1, 0.055, 0.01, 0.01)
    """
    owner = "cosine"
    rate, steps = _positive(owner, "lr", lr), _count(owner, "total_steps", total_steps)
    floor_rate = _positive(owner, "min_lr", min_lr, allow_zero=True)
    if min_lr >= lr:
        raise ScheduleError(f"cosine: min_lr must be < lr, got min_lr={min_lr!r} and lr={lr!r}")
    half_range = (rate - floor_rate) / 2
    with sympy.evaluate(False):
        wave = half_range * (1 + sympy.cos(sympy.pi * sympy.Min(t - 1, steps) / steps))
        expr = floor_rate + wave if floor_rate else wave
    return Schedule(expr, f"cosine(lr={lr!r}, total_steps={total_steps!r}, min_lr={min_lr!r})")


def warmup(schedule: Schedule | float, warmup_steps: int) -> Schedule:
    """A linear warm-up: the schedule (or constant rate) scaled by ``min(t/W, 1)``, so the
    first step takes ``1/W`` of the rate and step ``W`` on the full rate.

    The factor is ``torch.optim.lr_scheduler.LinearLR(start_factor=1/W, total_iters=W − 1)``
    stepped once per optimizer step; warming up another schedule multiplies their rates, as
    PyTorch's ``ChainedScheduler`` does.

    >>> import symbackprop as sb
    >>> ramp = sb.schedules.warmup(0.1, warmup_steps=4)
    >>> print(ramp)
    min(t/4, 1)·0.1
    >>> [ramp(t) for t in range(1, 6)]
    [0.025, 0.05, 0.075, 0.1, 0.1]
    """
    if not isinstance(schedule, Schedule):
        schedule = Schedule(_positive("warmup", "lr", schedule), repr(schedule))
    steps = _count("warmup", "warmup_steps", warmup_steps)
    with sympy.evaluate(False):
        expr = sympy.Mul(sympy.Min(t / steps, 1), *_factors(schedule.expr))
    return Schedule(expr, f"warmup({schedule!r}, warmup_steps={warmup_steps!r})")
