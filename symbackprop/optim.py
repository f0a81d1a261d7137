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

The conventions are PyTorch's (``torch.optim``), so results agree with it.

>>> import symbackprop as sb
>>> opt = sb.optim.Momentum(lr=0.1, momentum=0.9)
>>> print(opt.formula())
v ← μ·v + g
w ← w − η·v
>>> opt.update_rules()["w"]
momentum_w: (w, g, v) -> w - (g + 9*v/10)/10
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
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .errors import GraphError
from .functions import _number, apply, cast
from .graph import Tensor, input
from .scalar import ScalarFunction, real_symbols
from .shapes import format_shape

__all__ = ["SGD", "Adam", "AdamW", "Momentum", "Optimizer", "RMSProp", "RuleFormula", "StepGraph"]

# -- symbols -----------------------------------------------------------------------------------
w, g, m, v, t = real_symbols("w g m v t")
m_hat, v_hat = sympy.symbols("m̂ v̂")  # named intermediates; update_rules substitutes them away

# hyper-parameter: (symbol as printed, LaTeX, allowed range)
HYPER = {
    "lr": ("η", r"\eta", "positive"),
    "momentum": ("μ", r"\mu", "fraction"),
    "beta1": ("β₁", r"\beta_{1}", "fraction"),
    "beta2": ("β₂", r"\beta_{2}", "fraction"),
    "rho": ("ρ", r"\rho", "fraction"),
    "eps": ("ε", r"\varepsilon", "positive"),
    "weight_decay": ("λ", r"\lambda", "non_negative"),
}
RANGES = {
    "positive": (lambda x: x > 0, "> 0"),
    "fraction": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "non_negative": (lambda x: x >= 0, ">= 0"),
}
HYPER_SYMBOLS = {name: sympy.Symbol(text) for name, (text, _, _) in HYPER.items()}
eta, mu, beta1, beta2, rho, epsilon, lam = HYPER_SYMBOLS.values()

QUANTITIES = {"w": w, "m": m, "v": v, "m̂": m_hat, "v̂": v_hat}
LATEX_NAMES = {text: latex for text, latex, _ in HYPER.values()} | {"m̂": r"\hat{m}", "v̂": r"\hat{v}"}

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


# -- printing ------------------------------------------------------------------------------------
_RAISABLE = "0123456789-t"
_SUPERSCRIPTS = str.maketrans(_RAISABLE, "⁰¹²³⁴⁵⁶⁷⁸⁹⁻ᵗ")


def _negated(term: sympy.Expr) -> sympy.Expr | None:
    """``b`` for an unevaluated ``-1·b`` (keeping the order of b's factors), else None."""
    if isinstance(term, sympy.Mul) and term.args[0] == -1:
        rest = term.args[1:]
        return rest[0] if len(rest) == 1 else sympy.Mul(*rest, evaluate=False)
    return None


class RulePrinter(StrPrinter):
    """Rules as written: terms in their order, ``·``, ``−``, ``√v``, ``β₁ᵗ``, ``g²``."""

    def _print_Add(self, e, order=None):  # noqa: N802 - SymPy dispatches on the class name
        text = self._print(e.args[0])
        for term in e.args[1:]:
            negated = _negated(term)
            if negated is None:
                text += " + " + self._print(term)
            else:
                text += " − " + self.parenthesize(negated, PRECEDENCE["Add"])
        return text

    def _print_Mul(self, e):  # noqa: N802 - SymPy dispatches on the class name
        negated = _negated(e)
        if negated is not None:
            return "-" + self.parenthesize(negated, PRECEDENCE["Mul"], strict=True)
        upper = [f for f in e.args if not (f.is_Pow and f.exp == -1)]
        lower = [f.base for f in e.args if f.is_Pow and f.exp == -1]
        text = "·".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=True) for f in upper) or "1"
        if len(lower) == 1:
            text += "/" + self.parenthesize(lower[0], PRECEDENCE["Mul"])
        elif lower:
            text += "/(" + "·".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=True) for f in lower) + ")"
        return text

    def _print_Pow(self, e, rational=False):  # noqa: N802 - SymPy dispatches on the class name
        base, power = e.args
        if power == sympy.S.Half:
            return "√" + self.parenthesize(base, PRECEDENCE["Pow"])
        if set(str(power)) <= set(_RAISABLE):
            return self.parenthesize(base, PRECEDENCE["Pow"]) + str(power).translate(_SUPERSCRIPTS)
        return super()._print_Pow(e, rational)


class RuleLatexPrinter(LatexPrinter):
    """LaTeX of the rules, keeping the order written; Greek names become commands."""

    def __init__(self):
        super().__init__({"order": "none", "mul_symbol": None})

    def _print_Symbol(self, e, style="plain"):  # noqa: N802 - SymPy dispatches on the class name
        return LATEX_NAMES.get(e.name) or super()._print_Symbol(e, style)


_TEXT, _LATEX = RulePrinter(), RuleLatexPrinter()


class RuleFormula:
    """An optimizer's rules: ``x ← ...`` for updated quantities, ``x̂ = ...`` for named
    intermediates. ``str()`` is plain text, ``.latex()`` LaTeX; a notebook renders it.
    """

    def __init__(self, lines: Sequence[tuple[str, str, sympy.Expr]]):
        self.lines = list(lines)  # (name, "←" or "=", expression)

    def __str__(self) -> str:
        return "\n".join(f"{name} {arrow} {_TEXT.doprint(expr)}" for name, arrow, expr in self.lines)

    def __repr__(self) -> str:
        return str(self)

    def latex(self) -> str:
        arrows = {"←": r"\leftarrow", "=": "="}
        rows = [
            f"{_LATEX.doprint(QUANTITIES[name])} &{arrows[arrow]} {_LATEX.doprint(expr)}"
            for name, arrow, expr in self.lines
        ]
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"


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


class Optimizer(abc.ABC):
    """The shared machinery; a subclass names its table in :data:`RULES`, its state, and
    writes :meth:`_reference`, the same step in NumPy.
    """

    table: str
    state_names: tuple[str, ...] = ()

    def __init__(self, **hyper):
        owner = type(self).__name__
        self.hyper = {name: _check_hyper(owner, name, value) for name, value in hyper.items()}
        for name, value in self.hyper.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.hyper.items())
        return f"{type(self).__name__}({args})"

    @property
    def rules(self) -> tuple[tuple[str, sympy.Expr], ...]:
        """The rules as printed: ``(name, expression)`` in order, hyper-parameters as symbols."""
        return RULES[self.table]

    @property
    def uses_step(self) -> bool:
        """Whether a rule reads the step number ``t`` (Adam's bias correction)."""
        return any(expr.has(t) for _, expr in self.rules)

    @property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        """The arguments of every update rule: ``(w, g, *state, t)``, ``t`` only if used."""
        return (w, g, *(QUANTITIES[n] for n in self.state_names)) + ((t,) if self.uses_step else ())

    def formula(self) -> RuleFormula:
        """The rules as written on paper (``←`` updates, ``=`` names an intermediate)."""
        updated = {"w", *self.state_names}
        return RuleFormula([(name, "←" if name in updated else "=", expr) for name, expr in self.rules])

    def update_rules(self) -> dict[str, ScalarFunction]:
        """The new value of each state and of ``"w"``, as functions of the OLD values.

        Every function has the arguments :attr:`symbols`, ``(w, g, *state, t)``, and the
        hyper-parameters as numbers. Where the printed rules read a new state (``w ← w −
        η·v`` after ``v ← μ·v + g``), its expression is substituted in, so all updates of
        an element can be computed from the old values in one elementwise pass, in any
        order. States come first, ``"w"`` last.
        """
        # Numbers as elementwise maps take them: exact where the decimal form is short.
        values = {HYPER_SYMBOLS[name]: _number(value) for name, value in self.hyper.items()}
        new: dict[sympy.Symbol, sympy.Expr] = {}
        for name, expr in self.rules:
            new[QUANTITIES[name]] = expr.xreplace(new)  # one simultaneous pass: reads old values only
        prefix = type(self).__name__.lower()
        # Not simplified, and numbers not distributed over sums: a body keeps the structure of
        # its rule, so it rounds much as PyTorch's step does.
        with distribute(False):
            bodies = {name: new[QUANTITIES[name]].xreplace(values).doit() for name in (*self.state_names, "w")}
        return {name: ScalarFunction(f"{prefix}_{name}", self.symbols, body) for name, body in bodies.items()}

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
        ``W1.m``) of the param's shape and dtype. If a rule reads the step number, it is
        ``step``, or a new float64 scalar input named ``step`` (not ``t``: models often
        call their targets ``t``); it holds the number of the step being taken, from 1,
        and is cast to each param's dtype. Each new value is one ``map`` node whose
        function is the matching :meth:`update_rules` entry and whose operands are
        ``(param, grad, *states, step)``, in that order.

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
        for p, grad in zip(params, grad_values):
            grad = np.asarray(grad, dtype=p.dtype)
            if grad.shape != p.shape:
                raise GraphError(
                    f"{owner}.reference_step: the gradient of {p.label} has shape {grad.shape}, expected {p.shape}"
                )
            missing = [name for name in self.state_names if (p, name) not in states]
            if missing:
                raise GraphError(
                    f"{owner}.reference_step: no state {missing} for {p.label}; start from init_states(params)"
                )
            old = {name: states[p, name] for name in self.state_names}
            new_value, new_state = self._reference(p.value, grad, old, t)
            p.value = new_value
            states.update({(p, name): np.asarray(value, dtype=p.dtype) for name, value in new_state.items()})

    @abc.abstractmethod
    def _reference(self, w, g, state: Mapping[str, np.ndarray], t):
        """``(new w, new state)`` from arrays, in NumPy; each optimizer writes its own."""


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

    >>> import symbackprop as sb
    >>> print(sb.optim.SGD(lr=0.1).formula())
    w ← w − η·g
    """

    table = "sgd"

    def __init__(self, lr: float):
        super().__init__(lr=lr)

    def _reference(self, w, g, state, t):
        return w - self.lr * g, {}


class Momentum(Optimizer):
    """Gradient descent with momentum, in PyTorch's form (``torch.optim.SGD`` with
    ``momentum``, no dampening): the velocity sums gradients, ``v ← μ·v + g``, and the
    step is ``η·v``. With ``nesterov=True`` the step looks ahead, ``η·(g + μ·v)``.

    >>> import symbackprop as sb
    >>> print(sb.optim.Momentum(lr=0.1, nesterov=True).formula())
    v ← μ·v + g
    w ← w − η·(g + μ·v)
    """

    state_names = ("v",)

    def __init__(self, lr: float, momentum: float = 0.9, nesterov: bool = False):
        if not isinstance(nesterov, bool):
            raise GraphError(f"Momentum: nesterov must be True or False, got {nesterov!r}")
        super().__init__(lr=lr, momentum=momentum)
        self.nesterov = nesterov
        self.table = "nesterov" if nesterov else "momentum"

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, nesterov={self.nesterov})"

    def _reference(self, w, g, state, t):
        velocity = self.momentum * state["v"] + g
        step = g + self.momentum * velocity if self.nesterov else velocity
        return w - self.lr * step, {"v": velocity}


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

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps)

    def _adam(self, w, g, state, t):
        first = self.beta1 * state["m"] + (1 - self.beta1) * g
        second = self.beta2 * state["v"] + (1 - self.beta2) * g * g
        # PyTorch's order of operations: √v / √(1 − β₂ᵗ) + ε, and η/(1 − β₁ᵗ) as one factor.
        denominator = np.sqrt(second) / math.sqrt(1 - self.beta2**t) + self.eps
        return w - (self.lr / (1 - self.beta1**t)) * first / denominator, {"m": first, "v": second}

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
        self, lr: float = 1e-3, weight_decay: float = 1e-2, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ):
        Optimizer.__init__(self, lr=lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2, eps=eps)

    def _reference(self, w, g, state, t):
        return self._adam(w * (1 - self.lr * self.weight_decay), g, state, t)


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

    def __init__(self, lr: float, rho: float = 0.9, eps: float = 1e-8):
        super().__init__(lr=lr, rho=rho, eps=eps)

    def _reference(self, w, g, state, t):
        second = self.rho * state["v"] + (1 - self.rho) * g * g
        return w - self.lr * g / (np.sqrt(second) + self.eps), {"v": second}
