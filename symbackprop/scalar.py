"""Scalar functions: the SymPy bodies that elementwise ops apply to every element.

A :class:`ScalarFunction` is a SymPy expression over a few real scalar symbols. Every
partial derivative is found by ``sympy.diff`` and cleaned so that only expressions the
evaluator and the code generator understand come out (see :func:`clean_derivative`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import sympy

from .errors import GraphError


class sigmoid(sympy.Function):  # noqa: N801 - named as printed
    """The logistic function ``1/(1+exp(-t))``, kept whole so formulas stay readable."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, t, **kwargs):
        return 1 / (1 + sympy.exp(-t))

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return self.args[0].is_real


class softplus(sympy.Function):  # noqa: N801 - named as printed
    """``log(1 + exp(t))``, whose derivative is ``sigmoid(t)``; evaluated without overflow."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, t, **kwargs):
        return sympy.log(1 + sympy.exp(t))

    def _eval_is_real(self):
        return self.args[0].is_real


def _np_sigmoid(t):
    # exp of a non-positive number only: no overflow warning for large |t|.
    e = np.exp(-np.abs(t))
    return np.where(t >= 0, 1 / (1 + e), e / (1 + e))


def _np_softplus(t):
    return np.logaddexp(0, t)


NUMPY_FUNCTIONS = {
    "sigmoid": _np_sigmoid,
    "softplus": _np_softplus,
    # NumPy has no erf; math.erf per element keeps GELU-like bodies evaluable.
    "erf": np.vectorize(math.erf, otypes=[float]),
}


def clean_derivative(expr: sympy.Expr, where: str) -> sympy.Expr:
    """Fix the conventions at kinks and refuse what no back end can evaluate.

    ``Heaviside(t)`` becomes ``Heaviside(t, 0)`` (so ``relu'(0) = 0``) and ``DiracDelta``
    becomes 0: derivatives are taken almost everywhere, as every framework does.
    """
    expr = expr.replace(sympy.DiracDelta, lambda *args: sympy.S.Zero)
    expr = expr.replace(  # SymPy stores Heaviside(t) as Heaviside(t, 1/2)
        lambda e: isinstance(e, sympy.Heaviside) and (len(e.args) == 1 or e.args[1] == sympy.S.Half),
        lambda e: sympy.Heaviside(e.args[0], 0),
    )
    leaks = expr.atoms(sympy.Derivative, sympy.Subs)
    if leaks:
        raise GraphError(
            f"{where}: SymPy left the unevaluated term {sorted(map(str, leaks))[0]}; give the "
            "function a closed-form derivative (for example a sympy.Function subclass with an "
            "fdiff method, and an _imp_ method so that NumPy can evaluate it)"
        )
    return expr


class ScalarFunction:
    """A named SymPy expression of real scalar symbols, applied elementwise.

    Instances are interned: equal ``(name, symbols, body)`` give the same object.
    """

    _interned: dict = {}

    def __new__(cls, name: str, symbols: Sequence[sympy.Symbol], body: sympy.Expr):
        key = (name, tuple(symbols), body)
        found = cls._interned.get(key)
        if found is not None:
            return found
        self = super().__new__(cls)
        self.name, self.symbols, self.body = name, tuple(symbols), body
        cls._interned[key] = self
        return self

    @functools.cached_property
    def text(self) -> str:
        """The body as text, printed once (SymPy's printer is slow and bodies repeat)."""
        return str(self.body)

    def __reduce__(self):
        return ScalarFunction, (self.name, self.symbols, self.body)

    @property
    def arity(self) -> int:
        return len(self.symbols)

    def __repr__(self) -> str:
        args = ", ".join(map(str, self.symbols))
        return f"{self.name}: ({args}) -> {self.body}"

    def __call__(self, *args: sympy.Expr) -> sympy.Expr:
        """The body with ``args`` substituted for the symbols (used to compose bodies)."""
        return self.body.xreplace(dict(zip(self.symbols, args)))

    @functools.cache  # noqa: B019 - interned objects live for the process anyway
    def partial(self, index: int) -> ScalarFunction:
        """The partial derivative with respect to argument ``index``, as a ScalarFunction."""
        symbol = self.symbols[index]
        where = f"derivative of {self.name} with respect to {symbol}"
        body = clean_derivative(sympy.diff(self.body, symbol), where)
        name = self.name if self.arity == 1 else f"{self.name}_{symbol}"
        return ScalarFunction(f"d{name}", self.symbols, body)

    @functools.cached_property
    def numpy(self) -> Callable:
        """The body compiled by ``sympy.lambdify`` for NumPy arrays."""
        return sympy.lambdify(self.symbols, self.body, modules=[NUMPY_FUNCTIONS, "numpy"])


def real_symbols(names: str) -> tuple[sympy.Symbol, ...]:
    """Real scalar symbols, so that SymPy simplifies ``sqrt(t**2)`` to ``|t|`` and so on."""
    return tuple(sympy.symbols(names, real=True, seq=True))


def make_function(name: str, expr: object, args: Sequence[sympy.Symbol]) -> ScalarFunction:
    """Validate a user's SymPy body and rename its symbols to real ones."""
    if not isinstance(name, str) or not name.isidentifier():
        raise GraphError(f"function name must be an identifier, got {name!r}")
    try:
        body = sympy.sympify(expr)
    except (sympy.SympifyError, TypeError) as exc:
        raise GraphError(f"function {name!r}: the body {expr!r} is not a SymPy expression") from exc
    args = tuple(args)
    if not args or not all(isinstance(a, sympy.Symbol) for a in args):
        raise GraphError(f"function {name!r}: args must be a non-empty list of sympy.Symbol, got {args!r}")
    if len(set(args)) != len(args):
        raise GraphError(f"function {name!r}: args {args!r} repeat a symbol")
    stray = body.free_symbols - set(args)
    if stray:
        raise GraphError(
            f"function {name!r}: the body uses {sorted(map(str, stray))}, which are not among "
            f"its args {[str(a) for a in args]}"
        )
    real = real_symbols(" ".join(a.name for a in args))
    body = body.xreplace(dict(zip(args, real)))
    fn = ScalarFunction(name, real, body)
    for index in range(fn.arity):  # derive every partial now: failures surface at definition
        fn.partial(index)
    return fn
