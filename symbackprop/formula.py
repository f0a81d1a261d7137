"""Readable derivations: a graph and its gradients printed as mathematics.

:func:`formula` turns tensors into SymPy expressions over named quantities, in the
notation of a textbook: ``z1 = x·W1 + b1``, ``h1 = tanh(z1)``, ``δ2 = ∂L/∂z2``. Tensor
operations become opaque SymPy functions (``Dot``, ``T``, ``ReduceSum``, ...) so that SymPy can
simplify the elementwise algebra around them; broadcasting and casts are invisible, as on
paper. ``formula_rules`` maps each op to its conversion.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .autodiff import adjoint_of
from .graph import Tensor, topological_order
from .scalar import sigmoid, softplus


# -- tensor operations as opaque SymPy functions ----------------------------------------------
class TensorFunction(sympy.Function):
    """A tensor-level operation inside a formula; SymPy treats it as an opaque value."""

    is_real = True


class Dot(TensorFunction):
    nargs = 2


class T(TensorFunction):
    nargs = 1

    @classmethod
    def eval(cls, a):
        if isinstance(a, T):
            return a.args[0]
        return None


class ReduceSum(TensorFunction):
    """``ReduceSum(x, axes)``: the sum over the axes (a Tuple of ints)."""


class ReduceMax(TensorFunction):
    """``ReduceMax(x, axes)``: the maximum over the axes."""


class OneHot(TensorFunction):
    nargs = 1


class Softmax(TensorFunction):
    """``Softmax(x, axes)``: found in derived formulas by :func:`_name_softmax`."""


class LogSumExp(TensorFunction):
    """``LogSumExp(x, axes)``."""


class Uniform(TensorFunction):
    """``Uniform(seed, counter)``: a draw of ``random_uniform``, printed ``U(seed 3, step)``."""

    nargs = 2


class Op(TensorFunction):
    """Any other tensor op, printed as ``name(args)``: ``Op(Symbol('reshape'), x, shape)``."""


# -- conversion of each op -----------------------------------------------------------------------
def _axes(node):
    return sympy.Tuple(*node.attrs["axes"])


def _opaque(name):
    return lambda node, args: Op(sympy.Symbol(name), *args)


def _const(node, args):
    value = node.value
    if value.ndim == 0 or np.all(value == value.flat[0]):
        number = float(value.flat[0])
        return sympy.Integer(int(number)) if number.is_integer() else sympy.Float(number, 6)
    return sympy.Symbol(f"C{value.shape}")


def _reshape(node, args):
    squeeze = [d for d in node.shape if d != 1] == [d for d in node.inputs[0].shape if d != 1]
    return args[0] if squeeze else Op(sympy.Symbol("reshape"), args[0], sympy.Tuple(*node.shape))


formula_rules = {
    "input": lambda node, args: sympy.Symbol(node.label, real=True),
    "param": lambda node, args: sympy.Symbol(node.label, real=True),
    "const": _const,
    "batch_size": lambda node, args: sympy.Symbol("n", positive=True),
    "map": lambda node, args: node.attrs["fn"](*args),
    "matmul": lambda node, args: Dot(*args),
    "sum": lambda node, args: ReduceSum(args[0], _axes(node)),
    "max": lambda node, args: ReduceMax(args[0], _axes(node)),
    "broadcast": lambda node, args: args[0],
    "reshape": _reshape,
    "transpose": lambda node, args: T(args[0]) if node.ndim == 2 else Op(sympy.Symbol("transpose"), args[0]),
    "slice": _opaque("slice"),
    "unslice": _opaque("unslice"),
    "concat": _opaque("concat"),
    "gather": _opaque("gather"),
    "scatter_add": _opaque("scatter_add"),
    "one_hot": lambda node, args: OneHot(args[0]),
    "cast": lambda node, args: args[0],
    "stop_gradient": lambda node, args: args[0],
    "random_uniform": lambda node, args: Uniform(sympy.Integer(node.attrs["seed"]), args[0]),
}


# -- naming: z for affine maps, h for activations, δ for their gradients ----------------------
def _is_affine(node) -> bool:
    if node.op == "matmul":
        return True
    if node.op == "map" and node.attrs["fn"].name == "add" and len(node.inputs) == 2:
        return any(i.op == "matmul" for i in node.inputs)
    return False


def _forward_nodes(targets: Sequence[Tensor]) -> list[Tensor]:
    """The nodes of the forward pass: those of the differentiated ``y`` for gradients."""
    losses = [adjoint_of[t][1] for t in targets if t in adjoint_of]
    return topological_order(losses) if losses else topological_order(targets)


def _names(targets: Sequence[Tensor]) -> dict[Tensor, sympy.Symbol]:
    """Names for the intermediates worth naming, numbered by layer."""
    forward = _forward_nodes(targets)
    in_affine = {i for node in forward if _is_affine(node) and node.op == "map" for i in node.inputs}
    names: dict[Tensor, sympy.Symbol] = {}
    for node in forward:
        if _is_affine(node) and node not in in_affine:
            names[node] = sympy.Symbol(f"z{len(names) + 1}", real=True)
    layers = dict(names)
    for node in forward:
        if node.op == "map" and len(node.inputs) == 1 and node.inputs[0] in layers:
            names[node] = sympy.Symbol(f"h{str(layers[node.inputs[0]])[1:]}", real=True)
    for node in topological_order(targets):
        forward_node = adjoint_of.get(node, (None,))[0]
        if forward_node in layers and node not in names:
            names[node] = sympy.Symbol(f"δ{str(layers[forward_node])[1:]}", real=True)
    return names


def _loss_label(y: Tensor, names) -> str:
    return str(names[y]) if y in names else "L"


# -- display rules applied to the SymPy expressions ------------------------------------------------
def _name_softmax(expr: sympy.Expr) -> sympy.Expr:
    """``exp(x - max x)/Σ exp(x - max x)`` is shown as ``softmax(x)`` and ``max x + log Σ exp(x - max x)``
    as ``logsumexp(x)``."""
    for total in expr.atoms(ReduceSum):
        body, axes = total.args
        if not isinstance(body, sympy.exp):
            continue
        peaks = [m for m in body.args[0].atoms(ReduceMax) if m.args[1] == axes]
        if len(peaks) != 1 or sympy.expand(body.args[0] + peaks[0] - peaks[0].args[0]) != 0:
            continue
        x, peak = peaks[0].args[0], peaks[0]
        row_total = sympy.Dummy("S", positive=True)
        expr = expr.xreplace({total: row_total})
        expr = expr.xreplace({sympy.log(row_total): LogSumExp(x, axes) - peak})
        expr = expr.xreplace({body: Softmax(x, axes) * row_total})
        expr = expr.xreplace({row_total: total})
    return expr


def _sum_of_one_hot(expr: sympy.Expr) -> sympy.Expr:
    """A row of a one-hot matrix sums to one: ``Σ_classes onehot(y)·c = c`` for a scalar ``c``."""

    def fold(body, axes):
        factors = sympy.Mul.make_args(sympy.factor_terms(body))
        hot = [f for f in factors if isinstance(f, OneHot)]
        rest = sympy.Mul(*[f for f in factors if not isinstance(f, OneHot)])
        scalar = all(s.name == "n" for s in rest.free_symbols)
        return rest if len(hot) == 1 and scalar else ReduceSum(body, axes)

    return expr.replace(ReduceSum, fold)


def _absorb_sign(expr: sympy.Expr) -> sympy.Expr:
    """``-(y - p)/n`` reads better as ``(p - y)/n`` and ``-Σ(-a - b)`` as ``Σ(a + b)``:
    a minus sign goes into a sum or a difference."""

    def into_total(mul):
        coefficient, factors = mul.as_coeff_mul()
        totals = [f for f in factors if isinstance(f, ReduceSum)]
        if coefficient >= 0 or len(totals) != 1 or not totals[0].args[0].could_extract_minus_sign():
            return mul
        others = [f for f in factors if f is not totals[0]]
        return sympy.Mul(-coefficient, ReduceSum(-totals[0].args[0], totals[0].args[1]), *others)

    def into_difference(mul):
        coefficient, factors = mul.as_coeff_mul()
        sums = [f for f in factors if isinstance(f, sympy.Add)]
        if coefficient >= 0 or len(sums) != 1:
            return mul
        others = [f for f in factors if f is not sums[0]]
        return sympy.Mul(-coefficient, -sums[0], *others, evaluate=False)

    expr = expr.replace(lambda e: isinstance(e, sympy.Mul), into_total)
    return expr.replace(lambda e: isinstance(e, sympy.Mul), into_difference)


DISPLAY_RULES = (_name_softmax, _sum_of_one_hot)


def _tidy(expr: sympy.Expr) -> sympy.Expr:
    for rule in DISPLAY_RULES:
        expr = rule(expr)
    return _absorb_sign(sympy.factor_terms(sympy.together(expr)))


# -- printing ---------------------------------------------------------------------------------------
_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class FormulaPrinter(StrPrinter):
    """Plain-text mathematics: ``·`` for matrix products, ``⊙`` for elementwise ones."""

    def _print_Dot(self, e):
        return "·".join(self.parenthesize(a, 51) for a in e.args)

    def _print_T(self, e):
        inner = self._print(e.args[0])
        return f"{inner}ᵀ" if isinstance(e.args[0], sympy.Symbol) else f"({inner})ᵀ"

    def _print_ReduceSum(self, e):
        return f"Σ{_axes_text(e.args[1])}({self._print(e.args[0])})"

    def _print_ReduceMax(self, e):
        return f"max{_axes_text(e.args[1])}({self._print(e.args[0])})"

    def _print_OneHot(self, e):
        return f"onehot({self._print(e.args[0])})"

    def _print_Softmax(self, e):
        return f"softmax({self._print(e.args[0])})"

    def _print_LogSumExp(self, e):
        return f"logsumexp({self._print(e.args[0])})"

    def _print_Op(self, e):
        return f"{e.args[0]}({', '.join(self._print(a) for a in e.args[1:])})"

    def _print_Uniform(self, e):
        return f"U(seed {e.args[0]}, {self._print(e.args[1])})"

    def _print_Heaviside(self, e):
        return f"[{self._print(e.args[0])} {_heaviside_relation(e, '≥')} 0]"

    def _print_Abs(self, e):
        return f"|{self._print(e.args[0])}|"

    def _print_Max(self, e):
        return f"max({', '.join(self._print(a) for a in sorted(e.args, key=lambda a: a.is_number))})"

    def _print_Min(self, e):
        return f"min({', '.join(self._print(a) for a in sorted(e.args, key=lambda a: a.is_number))})"

    def _print_Mul(self, e):
        coefficient, factors = e.as_coeff_mul()
        upper = [f for f in factors if not (f.is_Pow and f.exp.is_negative)]
        lower = [f.base**-f.exp for f in factors if f.is_Pow and f.exp.is_negative]
        sign = "-" if coefficient < 0 else ""
        if abs(coefficient) != 1 or not upper:
            upper.insert(0, abs(coefficient))
        top = self._join_product(upper)
        if (lower or sign) and len(upper) == 1 and isinstance(upper[0], sympy.Add):
            top = f"({top})"  # a lone sum is bracketed only when something multiplies it
        text = sign + top
        if lower:
            below = self._join_product(lower)
            text += "/" + (f"({below})" if len(lower) > 1 or isinstance(lower[0], sympy.Add) else below)
        return text

    scalar_view = False  # every symbol is a scalar: no ⊙

    def _join_product(self, factors):
        factors = sorted(factors, key=lambda f: (not f.is_number, not f.has(Dot)))
        numbers = [self._print(f) for f in factors if not _is_tensor(f)]
        tensors = [
            self.parenthesize(f, 45) if isinstance(f, sympy.Add) and len(factors) > 1 else self._print(f)
            for f in factors
            if _is_tensor(f)
        ]
        hadamard = "·" if self.scalar_view else " ⊙ "
        return "·".join(numbers + [hadamard.join(tensors)] if tensors else numbers)

    def _print_Pow(self, e, rational=False):
        base, power = e.args
        if power.is_negative:
            return f"1/{self.parenthesize(base**-power, 51)}"
        if power.is_Integer and 1 < power < 10:
            return f"{self.parenthesize(base, 60)}{str(power).translate(_SUPERSCRIPTS)}"
        return super()._print_Pow(e, rational)

    def _print_Add(self, e, order=None):
        terms = _ordered_terms(e)
        text = self._print(terms[0])
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                text += " − " + self.parenthesize(-term, 45)
            else:
                text += " + " + self._print(term)
        return text


def _heaviside_relation(e, at_least: str) -> str:
    """``Heaviside(x, 1)`` (dropout's mask, 1 at 0) is ``[x ≥ 0]``; with 0 at 0 it is ``[x > 0]``."""
    return at_least if len(e.args) > 1 and e.args[1] == 1 else ">"


def _ordered_terms(add):
    """Terms as a person writes them: products with matrices first, subtracted terms last."""
    return sorted(add.args, key=lambda t: (not t.has(Dot), t.could_extract_minus_sign(), t.is_number))


def _axes_text(axes):
    return "".join(str(int(a)).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")) for a in axes)


def _is_tensor(factor) -> bool:
    return not factor.is_number and bool(factor.free_symbols - {sympy.Symbol("n", positive=True)})


class FormulaLatexPrinter(LatexPrinter):
    """LaTeX with ``^\\top``, ``\\odot`` and ``\\delta``; names like W1 become ``W_{1}``."""

    def _print_Dot(self, e):
        return " ".join(self.parenthesize(a, 45) for a in e.args)

    def _print_T(self, e):
        inner = self._print(e.args[0])
        return f"{inner}^{{\\top}}" if isinstance(e.args[0], sympy.Symbol) else f"\\left({inner}\\right)^{{\\top}}"

    def _print_ReduceSum(self, e):
        return f"\\sum_{{{','.join(str(int(a)) for a in e.args[1])}}} {self.parenthesize(e.args[0], 45)}"

    def _print_ReduceMax(self, e):
        return f"\\max_{{{','.join(str(int(a)) for a in e.args[1])}}} {self.parenthesize(e.args[0], 45)}"

    def _print_OneHot(self, e):
        return f"\\operatorname{{onehot}}\\left({self._print(e.args[0])}\\right)"

    def _print_Softmax(self, e):
        return f"\\operatorname{{softmax}}\\left({self._print(e.args[0])}\\right)"

    def _print_LogSumExp(self, e):
        return f"\\operatorname{{logsumexp}}\\left({self._print(e.args[0])}\\right)"

    def _print_Op(self, e):
        args = ", ".join(self._print(a) for a in e.args[1:])
        return f"\\operatorname{{{e.args[0]}}}\\left({args}\\right)"

    def _print_sigmoid(self, e, exp=None):
        return f"\\sigma\\left({self._print(e.args[0])}\\right)"

    def _print_Uniform(self, e):
        return f"U_{{{e.args[0]}}}\\left({self._print(e.args[1])}\\right)"

    def _print_Heaviside(self, e, exp=None):
        relation = _heaviside_relation(e, r"\geq")
        return f"\\left[{self._print(e.args[0])} {relation} 0\\right]"

    def _print_Symbol(self, e, style="plain"):
        return super()._print_Symbol(sympy.Symbol(e.name.replace("δ", "delta")), style)

    def _print_Add(self, e, order=None):
        terms = _ordered_terms(e)
        text = self._print(terms[0])
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                text += " - " + self.parenthesize(-term, 45)
            else:
                text += " + " + self._print(term)
        return text

    def _print_Mul(self, e):
        numerator, denominator = sympy.fraction(e)
        if denominator != 1:
            return f"\\frac{{{self._print(numerator)}}}{{{self._print(denominator)}}}"
        coefficient, factors = e.as_coeff_mul()
        factors = sorted(factors, key=lambda f: not f.has(Dot))
        tensors = sum(1 for f in factors if _is_tensor(f))
        parts = [
            self.parenthesize(f, 45) if isinstance(f, (sympy.Add, Dot)) and len(factors) > 1 else self._print(f)
            for f in factors
        ]
        text = (" \\odot " if tensors > 1 else " ").join(parts)
        if coefficient == -1:
            return "-" + text
        return text if coefficient == 1 else f"{self._print(coefficient)} {text}"


class ScalarFormulaPrinter(FormulaPrinter):
    """For the expanded view, where every symbol is one number."""

    scalar_view = True


_PRINT = FormulaPrinter({"order": "none"})
_PRINT_SCALAR = ScalarFormulaPrinter({"order": "none"})
_LATEX = FormulaLatexPrinter({"mul_symbol": None})


def _label_latex(label: str) -> str:
    match = re.fullmatch(r"∂(\w+)/∂(.+)", label)
    if match:
        return rf"\frac{{\partial {_LATEX._print(sympy.Symbol(match[1]))}}}{{\partial {_LATEX._print(sympy.Symbol(match[2]))}}}"
    return _LATEX._print(sympy.Symbol(label.replace("δ", "delta")))


class Formula:
    """A derivation: named intermediate definitions, then the requested results.

    ``str(f)`` is plain text, ``f.latex()`` LaTeX, ``f.sympy()`` a list of ``sympy.Eq``
    a user can manipulate; in a notebook it renders as LaTeX.
    """

    def __init__(
        self, definitions: list[tuple[str, sympy.Expr]], results: list[tuple[str, sympy.Expr]], scalar: bool = False
    ):
        self.definitions, self.results, self.scalar = definitions, results, scalar

    def lines(self) -> list[tuple[str, sympy.Expr]]:
        return self.definitions + self.results

    def __str__(self) -> str:
        printer = _PRINT_SCALAR if self.scalar else _PRINT
        return "\n".join(f"{label} = {printer.doprint(expr)}" for label, expr in self.lines())

    def __repr__(self) -> str:
        return str(self)

    def latex(self) -> str:
        rows = [f"{_label_latex(label)} &= {_LATEX.doprint(expr)}" for label, expr in self.lines()]
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"

    def sympy(self) -> list[sympy.Eq]:
        return [sympy.Eq(sympy.Symbol(label), expr, evaluate=False) for label, expr in self.lines()]

    def __getitem__(self, label: str) -> sympy.Expr:
        for name, expr in self.lines():
            if name == label:
                return expr
        raise KeyError(f"no line {label!r}; the lines are {[name for name, _ in self.lines()]}")


def formula(targets, expand: bool = False) -> Formula:
    """The derivation of tensors (typically gradients) as readable mathematics.

    Intermediates are named as in a textbook: ``z1 = x·W1 + b1`` for affine maps,
    ``h1 = tanh(z1)`` for their activations, ``δ1 = ∂L/∂z1`` for their gradients;
    gradients returned by :func:`grad` are labelled ``∂L/∂W1``. With ``expand=True``
    every element is written out over scalar symbols (for small shapes), see
    :func:`symbackprop.expanded.expanded_formula`.

    >>> import symbackprop as sb
    >>> z, y = sb.input("z", (None,)), sb.input("y", (None,))
    >>> (gz,) = sb.grad(sb.binary_cross_entropy(z, y), [z])
    >>> print(sb.formula(gz))
    ∂L/∂z = (sigmoid(z) − y)/n
    """
    single = isinstance(targets, Tensor)
    targets = [targets] if single else list(targets)
    if expand:
        from .expanded import expanded_formula

        return expanded_formula(targets)
    names = _names(targets)
    exprs: dict[Tensor, sympy.Expr] = {}
    definitions = []
    for node in topological_order(targets):
        expr = formula_rules[node.op](node, [exprs[i] for i in node.inputs])
        if node in names:
            definitions.append((str(names[node]), _tidy(_substitute_names(expr, definitions))))
            expr = names[node]
        exprs[node] = expr
    results = []
    defined = dict(definitions)
    for target in targets:
        label = _result_label(target, names)
        if target in names:  # a named tensor asked for: its definition is the result
            results.append((label, defined[str(names[target])]))
        else:
            results.append((label, _tidy(_substitute_names(exprs[target], definitions))))
    shown = {lbl for lbl, _ in results}
    used = _used_definitions(definitions, [e for _, e in results])
    return Formula([d for d in definitions if d[0] in used and d[0] not in shown], results)


def _result_label(target, names):
    if target in adjoint_of:
        forward, y = adjoint_of[target]
        wrt = str(names.get(forward, forward.label))
        return f"∂{_loss_label(y, names)}/∂{wrt}"
    if target.op in ("input", "param") or target in names:
        return str(names.get(target, target.label))
    return "L" if target.shape == () else "y"


def _substitute_names(expr, definitions):
    """Write activations as their names: ``1 - tanh(z1)**2`` becomes ``1 - h1**2``."""
    swaps = {value: sympy.Symbol(name, real=True) for name, value in definitions if name.startswith("h")}
    return expr.xreplace(swaps) if swaps else expr


def _used_definitions(definitions, roots):
    by_name = dict(definitions)
    used, stack = set(), [s for e in roots for s in e.free_symbols]
    while stack:
        name = str(stack.pop())
        if name in by_name and name not in used:
            used.add(name)
            stack.extend(by_name[name].free_symbols)
    return used


__all__ = ["Formula", "formula", "formula_rules", "sigmoid", "softplus"]
