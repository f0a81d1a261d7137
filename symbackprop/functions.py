"""The public operations on tensors, each a composition of primitives.

Elementwise functions are ``map`` nodes over a SymPy body (see :mod:`symbackprop.scalar`);
Python numbers mixed into arithmetic are folded into the body, so ``1 - h**2`` is one
node whose body reads ``1 - t**2``. Operands are broadcast explicitly with NumPy's rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sympy

from .errors import GraphError
from .graph import Tensor, as_tensor, batch_size, make_node
from .scalar import ScalarFunction, make_function, real_symbols
from .scalar import sigmoid as _sigmoid
from .scalar import softplus as _softplus
from .shapes import broadcast_shapes, check_dtype, format_shape, normalize_axes

t, a, b, c = real_symbols("t a b c")


def _unary(name, body):
    return ScalarFunction(name, (t,), body)


def _binary(name, body):
    return ScalarFunction(name, (a, b), body)


# The scalar bodies of the built-in elementwise functions.
ADD = _binary("add", a + b)
SUBTRACT = _binary("subtract", a - b)
MULTIPLY = _binary("multiply", a * b)
DIVIDE = _binary("divide", a / b)
POWER = _binary("power", a**b)
MAXIMUM = _binary("maximum", sympy.Max(a, b))
MINIMUM = _binary("minimum", sympy.Min(a, b))
NEGATIVE = _unary("negative", -t)
EXP = _unary("exp", sympy.exp(t))
LOG = _unary("log", sympy.log(t))
SQRT = _unary("sqrt", sympy.sqrt(t))
ABS = _unary("abs", sympy.Abs(t))
TANH = _unary("tanh", sympy.tanh(t))
SIGMOID = _unary("sigmoid", _sigmoid(t))
RELU = _unary("relu", sympy.Max(t, 0))
SOFTPLUS = _unary("softplus", _softplus(t))
WHERE = ScalarFunction("where", (c, a, b), sympy.Piecewise((a, sympy.Ne(c, 0)), (b, True)))
BCE_WITH_LOGITS = ScalarFunction("bce_logits", (a, b), _softplus(a) - a * b)


def _number(value) -> sympy.Expr:
    """A Python number as an exact SymPy number where its decimal form is short."""
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, (int, np.integer)):
        return sympy.Integer(int(value))
    text = repr(float(value))
    if "e" not in text and "inf" not in text and "nan" not in text and len(text) <= 8:
        return sympy.Rational(text)
    return sympy.Float(float(value))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, np.ndarray)


def apply(fn: ScalarFunction, *operands) -> Tensor:
    """Apply a scalar function elementwise, broadcasting the operands.

    Python numbers are substituted into the body instead of becoming tensors.
    """
    numbers = {i: _number(x) for i, x in enumerate(operands) if _is_number(x)}
    if numbers and len(numbers) < len(operands):
        kept = [s for i, s in enumerate(fn.symbols) if i not in numbers]
        body = fn.body.xreplace({fn.symbols[i]: v for i, v in numbers.items()})
        fn = ScalarFunction(fn.name, kept, body)
        operands = [x for i, x in enumerate(operands) if i not in numbers]
    like = next((x for x in operands if isinstance(x, Tensor)), None)
    tensors = [as_tensor(x, like) for x in operands]
    shape = broadcast_shapes([x.shape for x in tensors], f"{fn.name} of {', '.join(x.label for x in tensors)}")
    dtype = "float64" if any(x.dtype == "float64" for x in tensors) else "float32"
    fitted = []
    for x in tensors:
        if x.dtype == "int64":
            raise GraphError(
                f"{fn.name}: operand {x.label} {format_shape(x.shape)} is int64; elementwise "
                "functions need float32 or float64 (use .astype('float32'))"
            )
        fitted.append(broadcast_to(cast(x, dtype), shape))
    return make_node("map", fitted, fn=fn)


# -- arithmetic -----------------------------------------------------------------------
def add(x, y):
    return apply(ADD, x, y)


def subtract(x, y):
    return apply(SUBTRACT, x, y)


def multiply(x, y):
    return apply(MULTIPLY, x, y)


def divide(x, y):
    return apply(DIVIDE, x, y)


def power(x, y):
    return apply(POWER, x, y)


def negative(x):
    return apply(NEGATIVE, x)


# -- elementwise functions --------------------------------------------------------------
def exp(x: Tensor) -> Tensor:
    """Elementwise ``e**x``."""
    return apply(EXP, x)


def log(x: Tensor) -> Tensor:
    """Elementwise natural logarithm."""
    return apply(LOG, x)


def sqrt(x: Tensor) -> Tensor:
    """Elementwise square root."""
    return apply(SQRT, x)


def abs(x: Tensor) -> Tensor:  # noqa: A001 - NumPy's name
    """Elementwise ``|x|``; its derivative is ``sign(x)``, 0 at 0."""
    return apply(ABS, x)


def tanh(x: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent.

    >>> import symbackprop as sb
    >>> sb.tanh(sb.input("x", (None, 3))).shape
    (None, 3)
    """
    return apply(TANH, x)


def sigmoid(x: Tensor) -> Tensor:
    """Elementwise logistic function ``1/(1 + exp(-x))``."""
    return apply(SIGMOID, x)


def relu(x: Tensor) -> Tensor:
    """Elementwise ``max(x, 0)``; the derivative at 0 is taken to be 0."""
    return apply(RELU, x)


def leaky_relu(x: Tensor, alpha: float = 0.01) -> Tensor:
    """Elementwise ``x`` for ``x > 0`` and ``alpha*x`` otherwise."""
    slope = _number(alpha)
    fn = _unary("leaky_relu", sympy.Piecewise((t, t > 0), (slope * t, True)))
    return apply(fn, x)


def softplus(x: Tensor) -> Tensor:
    """Elementwise ``log(1 + exp(x))``, evaluated without overflow."""
    return apply(SOFTPLUS, x)


def maximum(x, y) -> Tensor:
    """Elementwise maximum; at ties the gradient goes to neither operand."""
    return apply(MAXIMUM, x, y)


def minimum(x, y) -> Tensor:
    """Elementwise minimum; at ties the gradient goes to neither operand."""
    return apply(MINIMUM, x, y)


def where(condition, x, y) -> Tensor:
    """Elementwise ``x`` where ``condition`` is non-zero, else ``y``.

    >>> import symbackprop as sb
    >>> v = sb.input("v", (4,))
    >>> sb.evaluate(sb.where(v, 1.0, -1.0), {v: [0, 2, 0, -3]}).tolist()
    [-1.0, 1.0, -1.0, 1.0]
    """
    if isinstance(condition, Tensor) and condition.dtype == "int64":
        condition = cast(condition, "float32")
    return apply(WHERE, condition, x, y)


class Function:
    """A user-defined elementwise function with a SymPy body; see :func:`function`."""

    def __init__(self, scalar: ScalarFunction):
        self.scalar = scalar

    @property
    def name(self) -> str:
        return self.scalar.name

    def __call__(self, *operands) -> Tensor:
        return apply(self.scalar, *operands)

    def derivative(self, arg: int | sympy.Symbol | str = 0) -> sympy.Expr:
        """The partial derivative SymPy found with respect to one argument."""
        index = self._index(arg)
        return self.scalar.partial(index).body

    def _index(self, arg) -> int:
        names = [s.name for s in self.scalar.symbols]
        key = arg.name if isinstance(arg, sympy.Symbol) else arg
        if isinstance(key, str) and key in names:
            return names.index(key)
        if isinstance(key, int) and 0 <= key < len(names):
            return key
        raise GraphError(f"function {self.name!r}: no argument {arg!r}; its arguments are {names}")

    def __repr__(self) -> str:
        args = ", ".join(s.name for s in self.scalar.symbols)
        return f"{self.name}({args}) = {self.scalar.body}"


def function(name: str, expr, args: Sequence[sympy.Symbol]) -> Function:
    """Define a differentiable elementwise function from a SymPy expression.

    All partial derivatives come from ``sympy.diff``; they are derived at once, so a body
    SymPy cannot differentiate is refused here rather than during training.

    >>> import sympy, symbackprop as sb
    >>> t = sympy.Symbol("t")
    >>> swish = sb.function("swish", t / (1 + sympy.exp(-t)), [t])
    >>> swish.derivative()
    t*exp(-t)/(1 + exp(-t))**2 + 1/(1 + exp(-t))
    """
    return Function(make_function(name, expr, args))


# -- dtype and structure ----------------------------------------------------------------
def cast(x: Tensor, dtype: str) -> Tensor:
    """``x`` converted to ``dtype`` (float32, float64 or int64)."""
    dtype = check_dtype(dtype, f"cast of {x.label}")
    return x if x.dtype == dtype else make_node("cast", [x], dtype=dtype)


def stop_gradient(x: Tensor) -> Tensor:
    """``x`` itself, but gradients do not flow through it."""
    return make_node("stop_gradient", [x])


def broadcast_to(x: Tensor, shape) -> Tensor:
    """``x`` broadcast to ``shape`` with NumPy's rules."""
    shape = tuple(shape)
    return x if x.shape == shape else make_node("broadcast", [x], shape=shape)


def reshape(x: Tensor, shape) -> Tensor:
    """``x`` with a new shape of the same size; one ``-1`` is inferred, ``None`` is the batch."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) or shape is None else tuple(shape)
    if shape.count(-1) > 1:
        raise GraphError(f"reshape of {x.label}: at most one -1 in {shape}")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d not in (-1, None)], dtype=np.int64))
        total = int(np.prod([d for d in x.shape if d is not None], dtype=np.int64))
        if known == 0 or total % known:
            raise GraphError(f"reshape: cannot reshape {x.label} {format_shape(x.shape)} to {shape}")
        shape = tuple(total // known if d == -1 else d for d in shape)
    for d in shape:
        if d is not None and (not isinstance(d, (int, np.integer)) or d <= 0):
            raise GraphError(f"reshape of {x.label}: bad dimension {d!r} in {shape}")
    shape = tuple(None if d is None else int(d) for d in shape)
    return x if x.shape == shape else make_node("reshape", [x], shape=shape)


def transpose(x: Tensor, axes=None) -> Tensor:
    """Permute the axes (reverse them by default); ``x.T`` is the same."""
    if axes is None:
        perm = tuple(reversed(range(x.ndim)))
    else:
        axes = tuple(axes)
        if any(not isinstance(p, (int, np.integer)) or not -x.ndim <= p < x.ndim for p in axes):
            raise GraphError(f"transpose of {x.label}: axes {axes!r} are out of range for a tensor of rank {x.ndim}")
        perm = tuple(int(p) % x.ndim for p in axes)
    return x if perm == tuple(range(x.ndim)) else make_node("transpose", [x], perm=perm)


def matmul(x, y) -> Tensor:
    """Matrix product; a vector operand is treated as a row (left) or a column (right).

    >>> import symbackprop as sb
    >>> (sb.input("x", (None, 4)) @ sb.param("W", (4, 3))).shape
    (None, 3)
    """
    x, y = as_tensor(x, y if isinstance(y, Tensor) else None), as_tensor(y, x if isinstance(x, Tensor) else None)
    if x.ndim == 1 or y.ndim == 1:
        left = reshape(x, (1,) + x.shape) if x.ndim == 1 else x
        right = reshape(y, y.shape + (1,)) if y.ndim == 1 else y
        out = matmul(left, right)
        keep = ([] if x.ndim == 1 else [out.shape[0]]) + ([] if y.ndim == 1 else [out.shape[1]])
        return reshape(out, tuple(keep))
    return make_node("matmul", [x, y])


# -- reductions ---------------------------------------------------------------------------
def _reduce(op, x, axis, keepdims):
    axes = normalize_axes(axis, x.ndim, f"{op} of {x.label}")
    if not axes:
        return x
    return make_node(op, [x], axes=axes, keepdims=bool(keepdims))


def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """Sum over ``axis`` (all axes by default)."""
    return _reduce("sum", x, axis, keepdims)


def max(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """Maximum over ``axis``; the gradient is shared equally between tied maxima."""
    return _reduce("max", x, axis, keepdims)


def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``; over the batch dimension it divides by the batch size ``n``."""
    axes = normalize_axes(axis, x.ndim, f"mean of {x.label}")
    count = int(np.prod([x.shape[i] for i in axes if x.shape[i] is not None], dtype=np.int64))
    total = sum(x, axes, keepdims)
    if any(x.shape[i] is None for i in axes):
        n = batch_size(x.dtype)
        return total / (n if count == 1 else n * count)
    return total if count == 1 else total / count


def logsumexp(x: Tensor, axis=-1, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis``, computed as ``m + log(sum(exp(x - m)))``."""
    m = stop_gradient(max(x, axis, keepdims=True))
    out = m + log(sum(exp(x - m), axis, keepdims=True))
    return out if keepdims else reshape(out, sum(x, axis).shape)


def softmax(x: Tensor, axis=-1) -> Tensor:
    """``exp(x)/sum(exp(x))`` over ``axis``, shifted by the maximum for stability."""
    e = exp(x - stop_gradient(max(x, axis, keepdims=True)))
    return e / sum(e, axis, keepdims=True)


def log_softmax(x: Tensor, axis=-1) -> Tensor:
    """``x - logsumexp(x)`` over ``axis``."""
    return x - logsumexp(x, axis, keepdims=True)


# -- indexing -------------------------------------------------------------------------------
def one_hot(labels: Tensor, depth: int, dtype: str = "float32") -> Tensor:
    """Rows of the identity matrix picked by int64 ``labels``: shape ``labels.shape + (depth,)``."""
    if not isinstance(depth, (int, np.integer)) or depth <= 0:
        raise GraphError(f"one_hot of {labels.label}: depth must be a positive int, got {depth!r}")
    return make_node("one_hot", [labels], depth=int(depth), dtype=check_dtype(dtype, "one_hot"))


def gather(table: Tensor, indices: Tensor) -> Tensor:
    """Rows of ``table`` picked by int64 ``indices`` (an embedding lookup)."""
    return make_node("gather", [table, indices])


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    tensors = list(tensors)
    if not tensors:
        raise GraphError("concat: needs at least one tensor")
    axis = normalize_axes(axis, tensors[0].ndim, "concat")[0]
    return tensors[0] if len(tensors) == 1 else make_node("concat", tensors, axis=axis)


def getitem(x: Tensor, index) -> Tensor:
    """Basic slicing: ints, slices with positive steps, and ``...``."""
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        at = index.index(Ellipsis)
        fill = (slice(None),) * (x.ndim - len(index) + 1)
        index = index[:at] + fill + index[at + 1 :]
    if len(index) > x.ndim:
        raise GraphError(f"indexing {x.label} {format_shape(x.shape)}: too many indices {index!r}")
    slices, keep = [], []
    for axis, dim in enumerate(x.shape):
        item = index[axis] if axis < len(index) else slice(None)
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if dim is None or not -dim <= item < dim:
                raise GraphError(
                    f"indexing {x.label} {format_shape(x.shape)}: index {item} is out of range on axis {axis}"
                )
            start = int(item) % dim
            slices.append((start, start + 1, 1))
        elif isinstance(item, slice):
            if dim is None:
                if item != slice(None):
                    raise GraphError(f"indexing {x.label}: the batch axis can only be taken whole (:)")
                slices.append((0, None, 1))
            else:
                start, stop, step = item.indices(dim)
                if step <= 0:
                    raise GraphError(f"indexing {x.label}: only positive slice steps are supported, got {step}")
                slices.append((0, None, 1) if (start, stop, step) == (0, dim, 1) else (start, stop, step))
            keep.append(axis)
        else:
            raise GraphError(f"indexing {x.label}: unsupported index {item!r}; use ints, slices and ...")
    out = x
    if any(s != (0, None, 1) for s in slices):
        out = make_node("slice", [x], slices=tuple(slices))
    return reshape(out, tuple(out.shape[a] for a in keep))
