"""Named rewrites of a graph: stabilisation, elementwise fusion, simplification of fused bodies.

Each rewrite is a small function; :data:`PASSES` lists them in the order they run.
:func:`simplify` applies them and keeps a log of what each one changed, with the
expression before and after, so a user can see why the compiled graph differs from the
one they wrote.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sympy

from . import functions as F
from .graph import Tensor, const, make_node, topological_order
from .scalar import ScalarFunction, real_symbols, sigmoid, softplus

# -- scalar rules: identities that make a fused body numerically stable ----------------------------
_u, _v = sympy.Wild("u"), sympy.Wild("v")
# (name, pattern, replacement, functions the body must contain for the pattern to match):
# matching is slow, so a body without those functions is not searched at all.
BODY_RULES: tuple[tuple[str, object, object, tuple[type, ...]], ...] = (
    ("log_sigmoid", sympy.log(sigmoid(_u)), -softplus(-_u), (sympy.log, sigmoid)),
    ("log_one_minus_sigmoid", sympy.log(1 - sigmoid(_u)), -softplus(_u), (sympy.log, sigmoid)),
    ("softplus", sympy.log(1 + sympy.exp(_u)), softplus(_u), (sympy.log, sympy.exp)),
    ("sigmoid", 1 / (1 + sympy.exp(-_u)), sigmoid(_u), (sympy.exp,)),
    # e^u/(1 + e^u) matches the rule above as e^u·sigmoid(−u), which overflows for large u.
    (
        "sigmoid",
        lambda e: _exp_sigmoid_pair(e) is not None,
        lambda e: _merge_exp_sigmoid(e),
        (sympy.exp, sigmoid),
    ),
    ("log_softmax", sympy.log(sympy.exp(_u) / _v), _u - sympy.log(_v), (sympy.log, sympy.exp)),
)


def _exp_sigmoid_pair(expr):
    """The factors ``exp(u)`` and ``sigmoid(-u)`` of a product, if it has both."""
    if not expr.is_Mul:
        return None
    exps = {f.args[0]: f for f in expr.args if isinstance(f, sympy.exp)}
    for factor in expr.args:
        if isinstance(factor, sigmoid) and -factor.args[0] in exps:
            return exps[-factor.args[0]], factor
    return None


def _merge_exp_sigmoid(expr):
    """``exp(u)·sigmoid(-u)·rest`` as ``sigmoid(u)·rest``."""
    exp_factor, sigmoid_factor = _exp_sigmoid_pair(expr)
    rest = [f for f in expr.args if f is not exp_factor and f is not sigmoid_factor]
    return sympy.Mul(sigmoid(exp_factor.args[0]), *rest)


# Fused bodies larger than this are only tidied, not put through sympy.simplify (slow).
SIMPLIFY_MAX_OPS = 60
# A body composed with its producers is simplified only up to this size, to see whether
# recomputing the producers cancels work (σ·(1 − σ)·(y/σ − ...) becomes y − σ).
COMPOSE_SIMPLIFY_MAX_OPS = 30


@dataclass
class RewriteStep:
    """One change: the rule that made it and the expression before and after."""

    rule: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.rule}:\n    before: {self.before}\n    after:  {self.after}"


@dataclass
class Rewritten:
    """The outputs of :func:`simplify` and the log of the rewrites that produced them."""

    outputs: list[Tensor]
    log: list[RewriteStep] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(map(str, self.log)) or "(no rewrite applied)"

    def rules(self) -> list[str]:
        return [step.rule for step in self.log]


def _body_text(node: Tensor) -> str:
    if node.op != "map":
        return f"{node.label} {node.shape}"
    fn = node.attrs["fn"]
    return f"{fn.body}  over ({', '.join(i.label for i in node.inputs)})"


def _rebuild(outputs, transform: Callable[[Tensor, list[Tensor]], Tensor | None], origin: dict | None = None):
    """Rebuild bottom-up; ``transform(node, new_inputs)`` may return a replacement.

    ``origin``, when given, is filled with the original node of every rebuilt one.
    """
    new: dict[Tensor, Tensor] = {}
    for node in topological_order(outputs):
        inputs = [new[i] for i in node.inputs]
        replaced = transform(node, inputs)
        if replaced is None:
            replaced = node if inputs == list(node.inputs) else make_node(node.op, inputs, **node.attrs)
        new[node] = replaced
        if origin is not None:
            origin.setdefault(replaced, node)
    return [new[o] for o in outputs]


def _through_wrappers(node: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The map under broadcasts and reshapes of a single element, and the wrappers passed."""
    wrappers = []
    while node.op in ("broadcast", "reshape") and (node.op == "broadcast" or _is_single(node)):
        wrappers.append(node)
        node = node.inputs[0]
        if node.op == "broadcast":
            continue
        if not _is_single(node):
            break
    return node, wrappers


def _is_single(node: Tensor) -> bool:
    return all(d == 1 for d in node.shape)


# -- passes ------------------------------------------------------------------------------------------
def stabilise_logsumexp(outputs, log):
    """``log(sum(exp(x)))`` becomes ``m + log(sum(exp(x - m)))`` with ``m = max(x)``.

    The sum may feed any map whose body uses it only through ``log``, as a fused body does.
    """

    def transform(node, inputs):
        if node.op != "map":
            return None
        fn = node.attrs["fn"]
        body, symbols, new_inputs = fn.body, list(fn.symbols), list(inputs)
        for index, operand in enumerate(inputs):
            x, total = _exp_sum(operand)
            symbol = fn.symbols[index]
            if x is None or body.xreplace({sympy.log(symbol): sympy.Dummy()}).has(symbol):
                continue  # not a sum of exponentials, or used other than through log
            shifted = F.logsumexp(x, total.attrs["axes"], keepdims=True)
            shifted = F.broadcast_to(F.reshape(shifted, total.shape), operand.shape)
            stable = real_symbols(f"lse{index}")[0]
            body = body.xreplace({sympy.log(symbol): stable})
            symbols.append(stable)
            new_inputs.append(shifted)
            log.append(
                RewriteStep(
                    "logsumexp", f"log(sum(exp({x.label})))", f"m + log(sum(exp({x.label} - m))), m = max({x.label})"
                )
            )
        if body is fn.body:
            return None
        kept = [i for i, s in enumerate(symbols) if body.has(s)]
        rewritten = ScalarFunction(fn.name, [symbols[i] for i in kept], body)
        return make_node("map", [new_inputs[i] for i in kept], fn=rewritten)

    return _rebuild(outputs, transform)


def _exp_sum(node: Tensor):
    """``(x, the sum)`` when ``node`` is ``sum(exp(x))``, seen through broadcasts; else Nones."""
    total, _ = _through_wrappers(node)
    if total.op == "broadcast":
        total = total.inputs[0]
    if total.op != "sum" or total.inputs[0].op != "map" or total.inputs[0].attrs["fn"] is not F.EXP:
        return None, None
    x = total.inputs[0].inputs[0]
    if _is_shifted(x):
        return None, None
    return x, total


def _is_shifted(x: Tensor) -> bool:
    """``x`` is already ``y - max(y)``, as logsumexp and softmax make it."""
    if x.op != "map" or x.attrs["fn"] is not F.SUBTRACT:
        return False
    peak, _ = _through_wrappers(x.inputs[1])
    peak = peak.inputs[0] if peak.op == "broadcast" else peak
    return peak.op == "stop_gradient" and peak.inputs[0].op == "max"


def fuse_elementwise(outputs, log):
    """Merge chains of elementwise maps into one map whose body is the composed expression.

    A map is inlined into its consumer when that is its only use (so nothing is computed
    twice); broadcasts of maps are fused too, as broadcasting commutes with maps.
    """
    uses = Counter(i for node in topological_order(outputs) for i in node.inputs)
    keep = set(outputs)
    origin: dict[Tensor, Tensor] = {}

    def producer(node):
        """The map that makes ``node``, seen through broadcasts, if it is used only here."""
        inner, wrappers = _through_wrappers(node)
        chain = [origin.get(n, n) for n in [*wrappers, inner]]
        if inner.op != "map" or any(n in keep or uses[n] > 1 for n in chain):
            return None
        if wrappers and not (inner.shape == () or _is_single(inner) or wrappers == [node] and node.op == "broadcast"):
            return None
        return inner

    def transform(node, inputs):
        if node.op != "map":
            return None
        fused = _fuse(node.attrs["fn"], inputs, producer)
        if fused is None:
            return None
        fn, fused_inputs = fused
        out = make_node("map", fused_inputs, fn=fn) if fused_inputs else _constant(fn.body, node)
        log.append(
            RewriteStep("fuse_elementwise", _body_text(make_node("map", inputs, fn=node.attrs["fn"])), _body_text(out))
        )
        return out

    return _rebuild(outputs, transform, origin)


def _fuse(fn: ScalarFunction, inputs: Sequence[Tensor], producer, depth: int | None = None):
    """Compose ``fn`` with the maps that produce its inputs, through at most ``depth`` levels
    of producers (all when None); None when nothing fuses."""
    leaves: dict[Tensor, sympy.Symbol] = {}
    fused_any = False

    def expression(node, shape, levels):
        nonlocal fused_any
        number = _scalar_constant(node)
        if number is not None:
            fused_any = True
            return number
        inner = producer(node) if levels != 0 else None
        if inner is not None:
            fused_any = True
            below = None if levels is None else levels - 1
            args = [expression(_fit(i, shape), shape, below) for i in inner.inputs]
            return inner.attrs["fn"](*args)
        if node not in leaves:
            leaves[node] = real_symbols(f"x{len(leaves)}")[0]
        return leaves[node]

    shape = inputs[0].shape
    body = fn(*[expression(i, shape, depth) for i in inputs])
    if not fused_any:
        return None
    return ScalarFunction("fused", tuple(leaves.values()), body), list(leaves)


def _scalar_constant(node: Tensor) -> sympy.Expr | None:
    """The number a constant holds, seen through broadcasts, if it holds a single one."""
    inner, _ = _through_wrappers(node)
    if inner.op != "const" or inner.value.size != 1 or inner.dtype == "int64":
        return None
    return (
        sympy.nsimplify(float(inner.value.flat[0]), rational=True)
        if float(inner.value.flat[0]).is_integer()
        else sympy.Float(float(inner.value.flat[0]))
    )


def _constant(body: sympy.Expr, like: Tensor) -> Tensor:
    return F.broadcast_to(const(float(body), like.dtype), like.shape)


def _fit(node, shape):
    return F.broadcast_to(node, shape) if node.shape != shape else node


def _apply_body_rules(body: sympy.Expr, log) -> sympy.Expr:
    body, steps = _body_rules_applied(body)
    log.extend(steps)
    return body


@functools.lru_cache(maxsize=4096)  # unrolled layers repeat their bodies; pattern matching is slow
def _body_rules_applied(body: sympy.Expr) -> tuple[sympy.Expr, tuple[RewriteStep, ...]]:
    steps = []
    for name, pattern, replacement, requires in BODY_RULES:
        if not all(body.has(function) for function in requires):
            continue
        rewritten = body.replace(pattern, replacement)
        if rewritten != body:
            steps.append(RewriteStep(name, str(body), str(rewritten)))
            body = rewritten
    return body, tuple(steps)


def stabilise_bodies(outputs, log):
    """Apply :data:`BODY_RULES` to each map body composed with the maps feeding it.

    Those producers are recomputed inside the body only where that pays: where a rule
    fires (``log(sigmoid(z))`` becomes ``-softplus(-z)``, which never overflows) or where
    the composed body simplifies to less work.
    """

    def producer(node):
        inner, wrappers = _through_wrappers(node)
        return inner if inner.op == "map" and (not wrappers or wrappers == [node]) else None

    def transform(node, inputs):
        if node.op != "map":
            return None
        # One level: a producer read by several maps is recomputed in each of them, so going
        # deeper would recompute whole chains (an unrolled LSTM's cell state over every step).
        fused = _fuse(node.attrs["fn"], inputs, producer, depth=1)
        if fused is None:
            return None
        fn, fused_inputs = fused
        if not fused_inputs:
            return _constant(fn.body, node)
        steps: list[RewriteStep] = []
        body = _apply_body_rules(fn.body, steps)
        if not steps:
            if sympy.count_ops(fn.body) > COMPOSE_SIMPLIFY_MAX_OPS:
                return None  # a large composition rarely cancels, and trying costs ~0.1 s
            body = _simplify(fn.body)
            if cost(body) >= cost(node.attrs["fn"].body):
                return None  # recomputing the producers buys neither stability nor work
            steps.append(RewriteStep("simplify_through_producers", _body_text(node), str(body)))
        log.extend(steps)
        return make_node("map", fused_inputs, fn=ScalarFunction(fn.name, fn.symbols, body))

    return _rebuild(outputs, transform)


def simplify_bodies(outputs, log):
    """Stabilise and simplify every map body with SymPy (``sympy.simplify`` on small bodies)."""

    def transform(node, inputs):
        if node.op != "map":
            return None
        fn = node.attrs["fn"]
        body = _apply_body_rules(fn.body, log)
        tidy = _simplify(body)
        if tidy == fn.body and inputs == list(node.inputs):
            return None
        if tidy != body:
            log.append(RewriteStep("simplify", str(body), str(tidy)))
        if tidy in fn.symbols:  # the map became the identity on one operand
            return _fit(inputs[fn.symbols.index(tidy)], node.shape)
        if tidy.is_number:
            return _constant(tidy, node)
        return make_node("map", inputs, fn=ScalarFunction(fn.name, fn.symbols, tidy))

    return _rebuild(outputs, transform)


# What each operation costs in generated code, roughly in multiplies: simplification must
# not trade 1 - tanh(x)**2 for 1/cosh(x)**2 (cosh has no inline version) or add divisions.
OP_COST = {
    "ADD": 1,
    "SUB": 1,
    "MUL": 1,
    "NEG": 1,
    "DIV": 4,
    "POW": 3,
    "EXP": 12,
    "LOG": 14,
    "TANH": 16,
    "SIGMOID": 16,
    "SOFTPLUS": 28,
}
DEFAULT_OP_COST = 40  # functions called from the C library


def cost(expr: sympy.Expr) -> float:
    """The estimated cost of evaluating ``expr`` once, by :data:`OP_COST`."""
    counts = sympy.count_ops(expr, visual=True)
    return float(counts.xreplace({s: OP_COST.get(s.name, DEFAULT_OP_COST) for s in counts.free_symbols}))


@functools.lru_cache(maxsize=4096)  # layers repeat their bodies; SymPy's simplify is slow
def _simplify(body: sympy.Expr) -> sympy.Expr:
    """The cheaper of the body and its rational simplification.

    ``cancel`` treats function applications such as ``sigmoid(x)`` as symbols, so it is fast
    and still does the algebra gradients need (``σ(1-σ)(y/σ - (1-y)/(1-σ))`` becomes
    ``y - σ``). ``sympy.simplify`` was measured to cost over half a second on a small MLP
    (most of it importing its submodules) for no gain on the bodies that reach here.
    A body without a division has nothing to cancel: pulling out common factors
    (``x·tanh(y) + tanh(y)**2`` becomes ``(x + tanh(y))·tanh(y)``) found as cheap a body as
    ``cancel`` did for each of the 173 such bodies the test suite derives, in a fifth of the
    time (most of a step's bodies: 0.05 of the mnist step's 0.06 s of simplification).

    >>> x, y = sympy.symbols("x y")
    >>> _simplify(x * sympy.tanh(y) + sympy.tanh(y) ** 2)
    (x + tanh(y))*tanh(y)
    >>> _simplify(x / (x * y + x))
    1/(y + 1)
    """
    if sympy.count_ops(body) > SIMPLIFY_MAX_OPS:
        return body
    divides = any(power.exp.is_negative for power in body.atoms(sympy.Pow))
    return min([body, sympy.factor_terms(sympy.cancel(body) if divides else body)], key=cost)


PASSES = (stabilise_logsumexp, fuse_elementwise, stabilise_bodies, simplify_bodies, stabilise_logsumexp)


def simplify(outputs) -> Rewritten:
    """Apply the rewrites of :data:`PASSES` and return the new outputs with a log.

    >>> import symbackprop as sb
    >>> z, y = sb.input("z", (None,)), sb.input("y", (None,))
    >>> (gz,) = sb.grad(sb.binary_cross_entropy(z, y), [z])
    >>> result = sb.simplify(gz)
    >>> result.outputs[0].attrs["fn"].body
    (-x2 + sigmoid(x1))/x0
    >>> print(sb.formula(result.outputs[0]))
    ∂L/∂z = (sigmoid(z) − y)/n
    """
    single = isinstance(outputs, Tensor)
    outputs = [outputs] if single else list(outputs)
    log: list[RewriteStep] = []
    current = outputs
    for rewrite in PASSES:
        current = rewrite(current, log)
    _carry_adjoints(outputs, current)
    return Rewritten(current, log)


def _carry_adjoints(old, new):
    """A rewritten gradient is still the gradient of the same thing, for formula labels."""
    from .autodiff import adjoint_of

    for before, after in zip(old, new):
        if before in adjoint_of:
            adjoint_of.setdefault(after, adjoint_of[before])
