"""Printing of update rules and learning-rate schedules as written on paper.

SymPy's printers reorder terms and write ``**``; these keep the order in which a rule was
written (its expressions are built unevaluated), and write ``·``, ``−``, ``√v``, ``β₁ᵗ``,
``0.5^⌊t/10⌋``, ``min(t, 100)`` and ``π``. Numbers whose decimal form is exact print as
decimals (``1/20`` as ``0.05``), since that is how hyper-parameters are given.

>>> import sympy
>>> t = sympy.Symbol("t")
>>> with sympy.evaluate(False):
...     expr = sympy.Rational(1, 10) * sympy.Rational(1, 2) ** sympy.floor((t - 1) / 10)
>>> print(RulePrinter().doprint(expr))
0.1·0.5^⌊(t − 1)/10⌋
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

__all__ = ["RuleFormula", "RuleLatexPrinter", "RulePrinter"]

_RAISABLE = "0123456789-t"
_SUPERSCRIPTS = str.maketrans(_RAISABLE, "⁰¹²³⁴⁵⁶⁷⁸⁹⁻ᵗ")


def _negated(term: sympy.Expr) -> sympy.Expr | None:
    """``b`` for a negative number ``-b`` or an unevaluated ``-k·b`` (keeping the order of
    b's factors), else None: the term is then written after a minus sign."""
    if term.is_Number and term < 0:
        return -term
    if isinstance(term, sympy.Mul) and term.args[0].is_Number and term.args[0] < 0:
        coefficient, rest = -term.args[0], term.args[1:]
        if coefficient != 1:
            rest = (coefficient, *rest)
        return rest[0] if len(rest) == 1 else sympy.Mul(*rest, evaluate=False)
    return None


def _is_divisor(factor: sympy.Expr) -> bool:
    """Whether a factor is written under a fraction bar: a power with a negative exponent."""
    return factor.is_Pow and factor.exp.is_Number and factor.exp < 0


def _is_decimal(number: sympy.Expr) -> bool:
    """Whether a factor is a fraction that prints as a decimal."""
    return number.is_Rational and not number.is_Integer and _decimal_text(number) is not None


def _decimal_text(number: sympy.Rational) -> str | None:
    """A rational as its shortest decimal if that is exact (``1/20`` as ``0.05``), else None."""
    if number.q == 1:
        return str(number.p)
    text = repr(float(number))
    return text if "inf" not in text and sympy.Rational(text) == number else None


def _numbers_last(args):
    """``min``/``max`` arguments with the numbers after the expressions, as usually written."""
    return sorted(args, key=lambda a: a.is_Number)


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
        upper = [f for f in e.args if not _is_divisor(f)]
        lower = [f.base if f.exp == -1 else sympy.Pow(f.base, -f.exp) for f in e.args if _is_divisor(f)]
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
        if base.is_Number and base > 0 and "/" not in self._print(base):
            base_text = self._print(base)  # 0.5^t needs no parentheses around 0.5
        else:
            base_text = self.parenthesize(base, PRECEDENCE["Pow"])
        if set(str(power)) <= set(_RAISABLE):
            return base_text + str(power).translate(_SUPERSCRIPTS)
        return base_text + "^" + self.parenthesize(power, PRECEDENCE["Pow"])

    def _print_Rational(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return _decimal_text(e) or super()._print_Rational(e)

    def _print_Float(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return repr(float(e))

    def _print_Pi(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return "π"

    def _print_floor(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return f"⌊{self._print(e.args[0])}⌋"

    def _print_ceiling(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return f"⌈{self._print(e.args[0])}⌉"

    def _print_Min(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return "min(" + ", ".join(self._print(a) for a in _numbers_last(e.args)) + ")"

    def _print_Max(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return "max(" + ", ".join(self._print(a) for a in _numbers_last(e.args)) + ")"


class RuleLatexPrinter(LatexPrinter):
    """LaTeX of the rules, keeping the order written; ``names`` maps a symbol's name to its
    LaTeX (``"η"`` to ``\\eta``)."""

    def __init__(self, names: Mapping[str, str] | None = None):
        super().__init__({"order": "none", "mul_symbol": None})
        self.names = dict(names or {})

    def _print_Symbol(self, e, style="plain"):  # noqa: N802 - SymPy dispatches on the class name
        return self.names.get(e.name) or super()._print_Symbol(e, style)

    def _print_Rational(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return _decimal_text(e) or super()._print_Rational(e)

    def _print_Float(self, e):  # noqa: N802 - SymPy dispatches on the class name
        return repr(float(e))

    def _print_Mul(self, e):  # noqa: N802 - SymPy dispatches on the class name
        # SymPy's printer moves a rational factor into a fraction (0.1·x as x/10); a decimal
        # factor stays where it was written instead, with a dot before a following number.
        if not any(_is_decimal(f) for f in e.args) or _negated(e) is not None:
            return super()._print_Mul(e)
        upper = [f for f in e.args if not _is_divisor(f)]
        lower = [f.base if f.exp == -1 else sympy.Pow(f.base, -f.exp) for f in e.args if _is_divisor(f)]
        top = self._product(upper)
        return rf"\frac{{{top}}}{{{self._product(lower)}}}" if lower else top

    def _product(self, factors) -> str:
        text = ""
        for factor in factors:
            part = self.parenthesize(factor, PRECEDENCE["Mul"], strict=True)
            text += (r" \cdot " if part[0].isdigit() else " ") + part if text else part
        return text

    def _print_Pow(self, e):  # noqa: N802 - SymPy dispatches on the class name
        base, power = e.args
        if (_is_decimal(base) and base > 0) or (base.is_Integer and base > 0 and power.is_Integer):
            return f"{self._print(base)}^{{{self._print(power)}}}"  # 0.5^{t} and 10^{-6} as written
        return super()._print_Pow(e)

    def _print_Min(self, e, exp=None):  # noqa: N802 - SymPy dispatches on the class name
        return self._min_max(r"\min", e)

    def _print_Max(self, e, exp=None):  # noqa: N802 - SymPy dispatches on the class name
        return self._min_max(r"\max", e)

    def _min_max(self, name: str, e) -> str:
        return name + r"\left(" + ", ".join(self._print(a) for a in _numbers_last(e.args)) + r"\right)"


class RuleFormula:
    """Rules: ``x ← ...`` for updated quantities, ``x = ...`` for named intermediates.
    ``str()`` is plain text, ``.latex()`` LaTeX; a notebook renders it.

    ``lines`` are ``(name, arrow, expression)``; ``latex_names`` maps names and symbol
    names to LaTeX.

    >>> import sympy
    >>> w, g, eta = sympy.symbols("w g η")
    >>> with sympy.evaluate(False):
    ...     rule = RuleFormula([("w", "←", w - eta * g)], {"η": r"\\eta"})
    >>> print(rule)
    w ← w − η·g
    >>> print(rule.latex())
    \\begin{aligned}
    w &\\leftarrow w - \\eta g
    \\end{aligned}
    """

    def __init__(self, lines: Sequence[tuple[str, str, sympy.Expr]], latex_names: Mapping[str, str] | None = None):
        self.lines = list(lines)  # (name, "←" or "=", expression)
        self.latex_names = dict(latex_names or {})

    def __str__(self) -> str:
        text = RulePrinter()
        return "\n".join(f"{name} {arrow} {text.doprint(expr)}" for name, arrow, expr in self.lines)

    def __repr__(self) -> str:
        return str(self)

    def latex(self) -> str:
        printer = RuleLatexPrinter(self.latex_names)
        arrows = {"←": r"\leftarrow", "=": "="}
        rows = [
            f"{self.latex_names.get(name, name)} &{arrows[arrow]} {printer.doprint(expr)}"
            for name, arrow, expr in self.lines
        ]
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"
