"""Optimizers as symbolic update rules.

An optimizer is a short list of rules over scalar symbols, written as on paper: the
parameter ``w``, its gradient ``g``, its state (``v``, or ``m`` and ``v``), the step
number ``t``, and hyper-parameters printed as Greek letters (η, μ, β₁, β₂, ε, λ, ρ).
The same rules give

- :meth:`Optimizer.formula`, the rules as text or LaTeX;
- :meth:`Optimizer.update_rules`, one :class:`~symbackprop.scalar.ScalarFunction` per
  updated quantity, over the *old* values only, with the hyper-parameters as numbers:
  what a compiler applies to every element in one pass;
- :meth:`Optimizer.step_graph`, graph nodes for one step, which the reference evaluator
  runs and a compiler compiles;
- :meth:`Optimizer.reference_step`, the same step written directly in NumPy, to check
  the rules against.

Every optimizer also takes a learning-rate schedule for ``lr`` (see
:mod:`symbackprop.schedules`) and ``clip_norm``, clipping of the gradients by their global
norm before the rules read them. The conventions are PyTorch's (``torch.optim``), so
results agree with it.

>>> import symbackprop as sb
>>> opt = sb.optim.Momentum(lr=0.1, momentum=0.9)
>>> print(opt.formula())
v ← μ·v + g
w ← w − η·v
>>> opt.update_rules()["w"]
momentum_w: (w, g, v) -> w - (g + 9*v/10)/10
>>> print(sb.optim.SGD(lr=sb.schedules.exponential(0.1, gamma=0.99), clip_norm=1.0).formula())
η(t) = 0.1·0.99^(t − 1)
g ← g·min(c/(‖g‖ + 10⁻⁶), 1)
w ← w − η·g
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import sympy
from sympy.core.parameters import distribute

from . import functions as F
from .errors import GraphError
from .functions import _number, apply, cast
from .graph import Tensor, input
from .rule_printing import RuleFormula
from .scalar import ScalarFunction, real_symbols
from .schedules import Schedule, t
from .shapes import format_shape

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Momentum",
    "Optimizer",
    "RMSProp",
    "RuleFormula",
    "StepGraph",
    "clip_by_global_norm",
]

# -- symbols -----------------------------------------------------------------------------------
w, g, m, v = real_symbols("w g m v")  # t, the step number, is the schedules' symbol
m_hat, v_hat = sympy.symbols("m̂ v̂")  # named intermediates; update_rules substitutes them away
grad_norm = sympy.Symbol("‖g‖")  # the global norm of all gradients, printed in the clipping rule

# hyper-parameter: (symbol as printed, LaTeX, allowed range)
HYPER = {
    "lr": ("η", r"\eta", "positive"),
    "momentum": ("μ", r"\mu", "fraction"),
    "beta1": ("β₁", r"\beta_{1}", "fraction"),
    "beta2": ("β₂", r"\beta_{2}", "fraction"),
    "rho": ("ρ", r"\rho", "fraction"),
    "eps": ("ε", r"\varepsilon", "positive"),
    "weight_decay": ("λ", r"\lambda", "non_negative"),
    "clip_norm": ("c", "c", "positive"),
}
RANGES = {
    "positive": (lambda x: x > 0, "> 0"),
    "fraction": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "non_negative": (lambda x: x >= 0, ">= 0"),
}
HYPER_SYMBOLS = {name: sympy.Symbol(text) for name, (text, _, _) in HYPER.items()}
eta, mu, beta1, beta2, rho, epsilon, lam, clip = HYPER_SYMBOLS.values()

QUANTITIES = {"w": w, "g": g, "m": m, "v": v, "m̂": m_hat, "v̂": v_hat}
LATEX_NAMES = {text: latex for text, latex, _ in HYPER.values()} | {
    "m̂": r"\hat{m}",
    "v̂": r"\hat{v}",
    "‖g‖": r"\lVert g \rVert",
    "η(t)": r"\eta(t)",
}

# -- the rules, in the order they are applied -----------------------------------------------------
# A rule may read the new value of a quantity updated above it, as on paper; update_rules
# substitutes those in. Unevaluated, so that SymPy keeps the terms in the order written.
with sympy.evaluate(False):
    RULES = {
        "sgd": (("w", w - eta * g),),
        "momentum": (("v", mu * v + g), ("w", w - eta * v)),
        "nesterov": (("v", mu * v + g), ("w", w - eta * (g + mu * v))),
        "adam": (
            ("m", beta1 * m + (1 - beta1) * g),
            ("v", beta2 * v + (1 - beta2) * g**2),
            ("m̂", m / (1 - beta1**t)),
            ("v̂", v / (1 - beta2**t)),
            ("w", w - eta * m_hat / (sympy.sqrt(v_hat) + epsilon)),
        ),
        "rmsprop": (("v", rho * v + (1 - rho) * g**2), ("w", w - eta * g / (sympy.sqrt(v) + epsilon))),
    }
    # AdamW decays the old w, outside the adaptive step (PyTorch: w ← w·(1 − ηλ), then Adam).
    RULES["adamw"] = RULES["adam"][:-1] + (("w", w - eta * (m_hat / (sympy.sqrt(v_hat) + epsilon) + lam * w)),)
    # L2 regularisation as PyTorch's SGD applies weight_decay: λ·w joins the gradient before
    # any rule reads it, so it also enters the momentum (unlike AdamW's decoupled decay).
    L2_RULE = ("g", g + lam * w)
    # Clipping by the global norm, as torch.nn.utils.clip_grad_norm_, whose 10⁻⁶ keeps the
    # quotient finite for zero gradients. Printed only: step_graph builds it from graph nodes,
    # since the norm reads every gradient and a rule reads one element.
    CLIP_RULE = ("g", g * sympy.Min(1, clip / (grad_norm + sympy.Pow(10, -6))))
CLIP_EPSILON = 1e-6  # the 10⁻⁶ of CLIP_RULE, as computed


# -- optimizers ----------------------------------------------------------------------------------
class StepGraph(NamedTuple):
    """The graph of one update (see :meth:`Optimizer.step_graph`)."""

    new_values: dict[Tensor, Tensor]  # param -> its new value
    new_states: dict[tuple[Tensor, str], Tensor]  # (param, state name) -> its new value
    state_inputs: dict[tuple[Tensor, str], Tensor]  # (param, state name) -> the input of its old value
    step_input: Tensor | None  # the scalar input t, or None when no rule uses it


def _check_hyper(owner: str, name: str, value) -> float:
    text, _, allowed = HYPER[name]
    inside, expected = RANGES[allowed]
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise GraphError(f"{owner}: {name} ({text}) must be a finite number {expected}, got {value!r}")
    if not inside(value):
        raise GraphError(f"{owner}: {name} ({text}) must be {expected}, got {value!r}")
    return float(value)


def _check_lr(owner: str, lr) -> float | Schedule:
    """A number, or a schedule that reads ``t``; a schedule that does not is its number."""
    if isinstance(lr, Schedule):
        return lr if lr.uses_step else _check_hyper(owner, "lr", lr(1))
    return _check_hyper(owner, "lr", lr)


def _l2(weight_decay) -> dict:
    """The ``weight_decay`` argument of an optimizer that adds it to the gradient: none at 0,
    so that the printed rules show no decay that does nothing."""
    return {} if isinstance(weight_decay, numbers.Real) and weight_decay == 0 else {"weight_decay": weight_decay}


class Optimizer(abc.ABC):
    """The shared machinery; a subclass names its table in :data:`RULES`, its state, and
    writes :meth:`_reference`, the same step in NumPy.

    ``lr`` is a number or a :class:`~symbackprop.schedules.Schedule`; ``clip_norm``, when
    given, scales all gradients by ``min(1, c/(‖g‖ + 10⁻⁶))`` first, ``‖g‖`` being the
    L2 norm of all of them together (see :func:`clip_by_global_norm`).
    """

    table: str
    state_names: tuple[str, ...] = ()
    clip_norm: float | None = None  # set from the hyper-parameters when given
    # Whether ``weight_decay`` is L2 added to the gradient (PyTorch's SGD) rather than decoupled.
    decay_in_gradient = False

    def __init__(self, lr, *, clip_norm: float | None = None, **hyper):
        owner = type(self).__name__
        self.hyper = {"lr": _check_lr(owner, lr)}
        self.hyper |= {name: _check_hyper(owner, name, value) for name, value in hyper.items()}
        if clip_norm is not None:
            self.hyper["clip_norm"] = _check_hyper(owner, "clip_norm", clip_norm)
        for name, value in self.hyper.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.hyper.items())
        return f"{type(self).__name__}({args})"

    @property
    def schedule(self) -> Schedule | None:
        """The learning-rate schedule, or None when ``lr`` is a number."""
        return self.lr if isinstance(self.lr, Schedule) else None

    def learning_rate(self, t: int | None = None) -> float:
        """The learning rate of step ``t`` (from 1); ``t`` is needed only with a schedule.

        >>> import symbackprop as sb
        >>> sb.optim.SGD(lr=sb.schedules.exponential(0.1, gamma=0.5)).learning_rate(3)
        0.025
        """
        return self.lr(t) if self.schedule is not None else self.lr

    @property
    def rules(self) -> tuple[tuple[str, sympy.Expr], ...]:
        """The rules as printed: ``(name, expression)`` in order, hyper-parameters as symbols."""
        l2 = (L2_RULE,) if self.decay_in_gradient and "weight_decay" in self.hyper else ()
        return l2 + RULES[self.table]

    @property
    def uses_step(self) -> bool:
        """Whether the update reads the step number ``t`` (Adam's bias correction, a schedule)."""
        return self.schedule is not None or any(expr.has(t) for _, expr in self.rules)

    @property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        """The arguments of every update rule: ``(w, g, *state, t)``, ``t`` only if used."""
        return (w, g, *(QUANTITIES[n] for n in self.state_names)) + ((t,) if self.uses_step else ())

    def formula(self) -> RuleFormula:
        """The rules as written on paper (``←`` updates, ``=`` names an intermediate), after
        the schedule ``η(t)`` and the clipping of ``g`` where the optimizer has them."""
        lines = []
        if self.schedule is not None:
            lines.append(("η(t)", "=", self.schedule.expr))
        if self.clip_norm is not None:
            lines.append(("g", "←", CLIP_RULE[1]))
        updated = {"w", "g", *self.state_names}
        lines += [(name, "←" if name in updated else "=", expr) for name, expr in self.rules]
        return RuleFormula(lines, LATEX_NAMES)

    def update_rules(self) -> dict[str, ScalarFunction]:
        """The new value of each state and of ``"w"``, as functions of the OLD values.

        Every function has the arguments :attr:`symbols`, ``(w, g, *state, t)``, and the
        hyper-parameters as numbers (a schedule as its
        :attr:`~symbackprop.schedules.Schedule.body`). Where the printed rules read a new
        state (``w ← w − η·v`` after ``v ← μ·v + g``), its expression is substituted in, so
        all updates of an element can be computed from the old values in one elementwise
        pass, in any order. States come first, ``"w"`` last. ``g`` is the gradient after
        clipping, which :meth:`step_graph` applies.
        """
        # Numbers as elementwise maps take them: exact where the decimal form is short.
        values = {
            HYPER_SYMBOLS[name]: value.body if isinstance(value, Schedule) else _number(value)
            for name, value in self.hyper.items()
        }
        new: dict[sympy.Symbol, sympy.Expr] = {}
        for name, expr in self.rules:
            new[QUANTITIES[name]] = expr.xreplace(new)  # one simultaneous pass: reads old values only
        prefix = type(self).__name__.lower()
        # Not simplified, and numbers not distributed over sums: a body keeps the structure of
        # its rule, so it rounds much as PyTorch's step does.
        with distribute(False):
            bodies = {name: new[QUANTITIES[name]].xreplace(values).doit() for name in (*self.state_names, "w")}
        return {name: ScalarFunction(f"{prefix}_{name}", self.symbols, body) for name, body in bodies.items()}

    @property
    def key(self) -> str:
        """Everything a compiled update depends on, as text: the update rules with their
        numbers, and the clipping, which happens before them. Compiled steps are cached
        under it.

        >>> import symbackprop as sb
        >>> sb.optim.SGD(lr=0.5, clip_norm=2.0).key
        'SGD;w=(w, g)->-g/2 + w;clip_norm=2.0'
        """
        rules = ";".join(f"{name}={fn.symbols}->{fn.text}" for name, fn in self.update_rules().items())
        return f"{type(self).__name__};{rules};clip_norm={self.clip_norm}"

    def init_state(self, param_value: np.ndarray) -> dict[str, np.ndarray]:
        """Zeros of the parameter's shape and dtype for every state (PyTorch starts there too)."""
        param_value = np.asarray(param_value)
        return {name: np.zeros(param_value.shape, param_value.dtype) for name in self.state_names}

    def init_states(self, params: Sequence[Tensor]) -> dict[tuple[Tensor, str], np.ndarray]:
        """The initial states of several params, keyed ``(param, name)`` as :meth:`step_graph` keys them."""
        return {(p, name): zeros for p in params for name, zeros in self.init_state(p.value).items()}

    def step_graph(self, params: Sequence[Tensor], grads: Sequence[Tensor], step: Tensor | None = None) -> StepGraph:
        """Graph nodes for one update of ``params`` by their gradients ``grads``.

        Each state of a param ``W`` is fed by a new input ``W.<name>`` (for example
        ``W1.m``) of the param's shape and dtype. If a rule or the schedule reads the step
        number, it is ``step``, or a new float64 scalar input named ``step`` (not ``t``:
        models often call their targets ``t``); it holds the number of the step being
        taken, from 1, and is cast to each param's dtype. With ``clip_norm``, the gradients
        are first scaled by :func:`clip_by_global_norm`. Each new value is one ``map``
        node whose function is the matching :meth:`update_rules` entry and whose operands
        are ``(param, grad, *states, step)``, in that order.

        >>> import numpy as np, symbackprop as sb
        >>> W = sb.param("W", (2,), init=np.array([1.0, 2.0]), dtype="float64")
        >>> opt = sb.optim.Adam(lr=0.1)
        >>> new_values, new_states, state_inputs, step = opt.step_graph([W], [W * 2])
        >>> sorted(name for _, name in state_inputs), step
        (['m', 'v'], <Tensor step () float64>)
        >>> feeds = {state_inputs[W, "m"]: np.zeros(2), state_inputs[W, "v"]: np.zeros(2), step: 1.0}
        >>> sb.evaluate(new_values[W], feeds)
        array([0.9, 1.9])
        """
        params, grads = _check_params(params, grads)
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        state_inputs, step = self.step_inputs(params, step)
        rules = self.update_rules()
        new_values, new_states = {}, {}
        for p, grad in zip(params, grads):
            states = [state_inputs[p, name] for name in self.state_names]
            operands = [p, grad, *states, *([cast(step, p.dtype)] if step is not None else [])]
            for name, fn in rules.items():
                if name == "w":
                    new_values[p] = apply(fn, *operands)
                else:
                    new_states[p, name] = apply(fn, *operands)
        return StepGraph(new_values, new_states, state_inputs, step)

    def step_inputs(self, params: Sequence[Tensor], step: Tensor | None = None):
        """The inputs :meth:`step_graph` feeds the state and the step number through:
        ``({(param, name): input}, step input or None)``, without building the update."""
        if self.uses_step:
            step = _check_step(step) if step is not None else input("step", (), "float64")
        else:
            step = None
        states = {(p, name): input(f"{p.label}.{name}", p.shape, p.dtype) for p in params for name in self.state_names}
        return states, step

    def reference_step(
        self,
        params: Sequence[Tensor],
        grad_values: Sequence[np.ndarray],
        states: dict[tuple[Tensor, str], np.ndarray],
        t: int | None = None,
    ) -> None:
        """One update in plain NumPy, written apart from the rules, to check them.

        Sets each ``param.value`` and replaces the entries of ``states`` (keyed
        ``(param, name)``, see :meth:`init_states`). ``t`` is the number of this step,
        from 1; only optimizers with :attr:`uses_step` need it.

        >>> import numpy as np, symbackprop as sb
        >>> W = sb.param("W", (2,), init=np.array([1.0, 2.0]))
        >>> opt = sb.optim.Momentum(lr=0.1)
        >>> states = opt.init_states([W])
        >>> for _ in range(2):
        ...     opt.reference_step([W], [np.ones(2)], states)
        >>> W.value, states[W, "v"]
        (array([0.71, 1.71], dtype=float32), array([1.9, 1.9], dtype=float32))
        """
        owner = type(self).__name__
        if self.uses_step and (not isinstance(t, numbers.Integral) or t < 1):
            raise GraphError(f"{owner}.reference_step: t must be the step number (an int >= 1), got {t!r}")
        if len(params) != len(grad_values):
            raise GraphError(f"{owner}.reference_step: {len(params)} params but {len(grad_values)} gradients")
        grad_values = [np.asarray(grad, dtype=p.dtype) for p, grad in zip(params, grad_values)]
        for p, grad in zip(params, grad_values):
            if grad.shape != p.shape:
                raise GraphError(
                    f"{owner}.reference_step: the gradient of {p.label} has shape {grad.shape}, expected {p.shape}"
                )
            missing = [name for name in self.state_names if (p, name) not in states]
            if missing:
                raise GraphError(
                    f"{owner}.reference_step: no state {missing} for {p.label}; start from init_states(params)"
                )
        if self.clip_norm is not None:
            grad_values = _clipped(grad_values, self.clip_norm)
        for p, grad in zip(params, grad_values):
            old = {name: states[p, name] for name in self.state_names}
            new_value, new_state = self._reference(p.value, grad, old, t)
            p.value = new_value
            states.update({(p, name): np.asarray(value, dtype=p.dtype) for name, value in new_state.items()})

    @abc.abstractmethod
    def _reference(self, w, g, state: Mapping[str, np.ndarray], t):
        """``(new w, new state)`` from arrays, in NumPy; each optimizer writes its own."""

    def _with_l2(self, w, g):
        """The gradient with ``λ·w`` added, for optimizers whose ``weight_decay`` is L2."""
        return g + self.weight_decay * w if self.decay_in_gradient and "weight_decay" in self.hyper else g


def clip_by_global_norm(grads: Sequence[Tensor], clip_norm: float) -> list[Tensor]:
    """The gradients scaled by ``min(1, c/(‖g‖ + 10⁻⁶))``, where ``‖g‖`` is the L2 norm of
    all of them together, as ``torch.nn.utils.clip_grad_norm_`` scales them.

    Graph nodes: one sum of squares per gradient, their total and the factor as float64
    scalars, and one broadcast product per gradient. The factor is 1 (up to the 10⁻⁶) when
    the norm is at most ``c``.

    >>> import numpy as np, symbackprop as sb
    >>> a, b = sb.input("a", (2,), "float64"), sb.input("b", (), "float64")
    >>> clipped = clip_by_global_norm([a, b], 1.0)
    >>> [sb.evaluate(x, {a: [3.0, 0.0], b: 4.0}).round(6).tolist() for x in clipped]
    [[0.6, 0.0], 0.8]
    """
    grads = list(grads)
    bound = _check_hyper("clip_by_global_norm", "clip_norm", clip_norm)
    if not grads or not all(isinstance(grad, Tensor) and grad.dtype != "int64" for grad in grads):
        raise GraphError(f"clip_by_global_norm: grads must be a non-empty list of float Tensors, got {grads!r}")
    squares = [cast(F.sum(grad * grad), "float64") for grad in grads]
    total = squares[0]
    for square in squares[1:]:
        total = total + square
    (s,) = real_symbols("s")  # the sum of all squares
    factor = sympy.Min(1, _number(bound) / (sympy.sqrt(s) + sympy.Float(CLIP_EPSILON)))
    scale = apply(ScalarFunction("clip_scale", (s,), factor), total)
    return [grad * cast(scale, grad.dtype) for grad in grads]


def _clipped(grads: list[np.ndarray], clip_norm: float) -> list[np.ndarray]:
    """:func:`clip_by_global_norm` in NumPy: the norm in float64, each gradient in its dtype."""
    norm = math.sqrt(math.fsum(float(np.sum(np.square(grad, dtype=np.float64))) for grad in grads))
    scale = min(1.0, clip_norm / (norm + CLIP_EPSILON))
    return [grad * grad.dtype.type(scale) for grad in grads]


def _check_params(params, grads) -> tuple[list[Tensor], list[Tensor]]:
    params, grads = list(params), list(grads)
    if len(params) != len(grads):
        raise GraphError(f"step_graph: {len(params)} params but {len(grads)} gradients")
    labels = set()
    for p, grad in zip(params, grads):
        if not isinstance(p, Tensor) or p.op != "param":
            raise GraphError(f"step_graph: {p!r} is not a param (made by sb.param)")
        if p.label in labels:
            raise GraphError(f"step_graph: two params are named {p.label!r}; their state inputs need distinct names")
        labels.add(p.label)
        if not isinstance(grad, Tensor) or grad.shape != p.shape or grad.dtype != p.dtype:
            got = f"{format_shape(grad.shape)} {grad.dtype}" if isinstance(grad, Tensor) else type(grad).__name__
            raise GraphError(
                f"step_graph: the gradient of {p.label} must be a Tensor {format_shape(p.shape)} {p.dtype}, got {got}"
            )
    return params, grads


def _check_step(step) -> Tensor:
    if not isinstance(step, Tensor) or step.shape != () or step.dtype == "int64":
        raise GraphError(f"step_graph: step must be a float scalar Tensor (shape ()), got {step!r}")
    return step


class SGD(Optimizer):
    """Plain gradient descent, ``w ← w − η·g``.

    ``weight_decay`` (λ) is L2 regularisation as ``torch.optim.SGD`` applies it: ``λ·w``
    is added to the gradient, the same as adding ``l2_penalty(params, λ/2)`` to the loss.
    (AdamW's decay is the decoupled kind.)

    >>> import symbackprop as sb
    >>> print(sb.optim.SGD(lr=0.1).formula())
    w ← w − η·g
    >>> print(sb.optim.SGD(lr=0.1, weight_decay=1e-4).formula())
    g ← g + λ·w
    w ← w − η·g
    """

    table = "sgd"
    decay_in_gradient = True

    def __init__(self, lr: float | Schedule, weight_decay: float = 0.0, clip_norm: float | None = None):
        super().__init__(lr, **_l2(weight_decay), clip_norm=clip_norm)

    def _reference(self, w, g, state, t):
        return w - self.learning_rate(t) * self._with_l2(w, g), {}


class Momentum(Optimizer):
    """Gradient descent with momentum, in PyTorch's form (``torch.optim.SGD`` with
    ``momentum``, no dampening): the velocity sums gradients, ``v ← μ·v + g``, and the
    step is ``η·v``. With ``nesterov=True`` the step looks ahead, ``η·(g + μ·v)``.
    ``weight_decay`` is L2 added to the gradient, as for :class:`SGD`.

    >>> import symbackprop as sb
    >>> print(sb.optim.Momentum(lr=0.1, nesterov=True).formula())
    v ← μ·v + g
    w ← w − η·(g + μ·v)
    """

    state_names = ("v",)
    decay_in_gradient = True

    def __init__(
        self,
        lr: float | Schedule,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
    ):
        if not isinstance(nesterov, bool):
            raise GraphError(f"Momentum: nesterov must be True or False, got {nesterov!r}")
        super().__init__(lr, momentum=momentum, **_l2(weight_decay), clip_norm=clip_norm)
        self.nesterov = nesterov
        self.table = "nesterov" if nesterov else "momentum"

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, nesterov={self.nesterov})"

    def _reference(self, w, g, state, t):
        g = self._with_l2(w, g)
        velocity = self.momentum * state["v"] + g
        step = g + self.momentum * velocity if self.nesterov else velocity
        return w - self.learning_rate(t) * step, {"v": velocity}


class Adam(Optimizer):
    """Adam with bias correction, in PyTorch's form: ``ε`` is added to ``√v̂``, after the
    bias correction and outside the square root. ``t`` is the number of the step, from 1.

    >>> import symbackprop as sb
    >>> print(sb.optim.Adam().formula())
    m ← β₁·m + (1 − β₁)·g
    v ← β₂·v + (1 − β₂)·g²
    m̂ = m/(1 − β₁ᵗ)
    v̂ = v/(1 − β₂ᵗ)
    w ← w − η·m̂/(√v̂ + ε)
    """

    table = "adam"
    state_names = ("m", "v")

    def __init__(
        self,
        lr: float | Schedule = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        clip_norm: float | None = None,
    ):
        super().__init__(lr, beta1=beta1, beta2=beta2, eps=eps, clip_norm=clip_norm)

    def _adam(self, w, g, state, t):
        first = self.beta1 * state["m"] + (1 - self.beta1) * g
        second = self.beta2 * state["v"] + (1 - self.beta2) * g * g
        # PyTorch's order of operations: √v / √(1 − β₂ᵗ) + ε, and η/(1 − β₁ᵗ) as one factor.
        denominator = np.sqrt(second) / math.sqrt(1 - self.beta2**t) + self.eps
        return w - (self.learning_rate(t) / (1 - self.beta1**t)) * first / denominator, {"m": first, "v": second}

    _reference = _adam


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter), as ``torch.optim.AdamW``:
    the old ``w`` decays by ``η·λ·w`` beside the Adam step, instead of ``λ·w`` being added
    to the gradient. PyTorch's defaults: ``lr=1e-3``, ``weight_decay=1e-2``.

    >>> import symbackprop as sb
    >>> print(str(sb.optim.AdamW().formula()).splitlines()[-1])
    w ← w − η·(m̂/(√v̂ + ε) + λ·w)
    """

    table = "adamw"

    def __init__(
        self,
        lr: float | Schedule = 1e-3,
        weight_decay: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        clip_norm: float | None = None,
    ):
        Optimizer.__init__(self, lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2, eps=eps, clip_norm=clip_norm)

    def _reference(self, w, g, state, t):
        return self._adam(w * (1 - self.learning_rate(t) * self.weight_decay), g, state, t)


class RMSProp(Optimizer):
    """RMSProp, as ``torch.optim.RMSprop`` (whose ``alpha`` is ``rho`` here): ``ε`` is
    added to ``√v``, outside the square root; no momentum, not centered.

    >>> import symbackprop as sb
    >>> print(sb.optim.RMSProp(lr=0.01).formula())
    v ← ρ·v + (1 − ρ)·g²
    w ← w − η·g/(√v + ε)
    """

    table = "rmsprop"
    state_names = ("v",)

    def __init__(self, lr: float | Schedule, rho: float = 0.9, eps: float = 1e-8, clip_norm: float | None = None):
        super().__init__(lr, rho=rho, eps=eps, clip_norm=clip_norm)

    def _reference(self, w, g, state, t):
        second = self.rho * state["v"] + (1 - self.rho) * g * g
        return w - self.learning_rate(t) * g / (np.sqrt(second) + self.eps), {"v": second}
