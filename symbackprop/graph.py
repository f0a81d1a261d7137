"""Tensor nodes: immutable, hash-consed ``(op, inputs, attrs)`` with a static shape and dtype.

Building the same node twice returns the same object, so a graph shares its common
subexpressions by construction and nodes can be compared and hashed by identity.
"""

from __future__ import annotations

import itertools
import types
import weakref
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from . import init as initializers
from .errors import GraphError
from .ops import PRIMITIVES, shape_rules
from .shapes import check_dtype, check_shape, format_shape

_interned: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_param_ids = itertools.count()


class Tensor:
    """A node of the graph. Build tensors with :func:`input`, :func:`param`, :func:`const`
    and the operations on them; never call this class directly.

    Attributes: ``op`` (a name from :data:`symbackprop.ops.PRIMITIVES`), ``inputs``
    (a tuple of tensors), ``attrs`` (a read-only mapping), ``shape`` and ``dtype``.
    """

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "_value", "__weakref__")
    __array_ufunc__ = None  # make ``ndarray + tensor`` call Tensor.__radd__

    def __repr__(self) -> str:
        return f"<Tensor {self.label} {format_shape(self.shape)} {self.dtype}>"

    @property
    def label(self) -> str:
        """A short name for messages: a leaf's name, else the op (and function) that made it."""
        if "name" in self.attrs:
            return self.attrs["name"]
        if self.op == "map":
            return f"{self.attrs['fn'].name}(...)"
        if self.op == "const":
            return "const"
        if self.op == "batch_size":
            return "n"
        return f"{self.op}(...)"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    # -- parameters ---------------------------------------------------------------------
    @property
    def value(self) -> np.ndarray:
        """The NumPy array a parameter (or constant) holds; updated in place by training."""
        if self.op == "const":
            return self.attrs["value"].array
        if self.op != "param":
            raise AttributeError(f"{self.label} is made by {self.op!r}; only params and consts hold a value")
        return self._value

    @value.setter
    def value(self, array: object) -> None:
        if self.op != "param":
            raise AttributeError(f"{self.label}: only a param's value can be set")
        array = np.asarray(array)
        if array.shape != self.shape:
            raise GraphError(
                f"param {self.label}: the value has shape {array.shape}, expected {format_shape(self.shape)}"
            )
        # A copy: training updates the value in place, which must never write into the
        # caller's array (or into another param given the same array).
        self._value = np.array(array, dtype=self.dtype, order="C", copy=True)

    # -- operators: NumPy semantics, built from primitives in symbackprop.functions -----
    def __add__(self, other):
        return _functions().add(self, other)

    def __radd__(self, other):
        return _functions().add(other, self)

    def __sub__(self, other):
        return _functions().subtract(self, other)

    def __rsub__(self, other):
        return _functions().subtract(other, self)

    def __mul__(self, other):
        return _functions().multiply(self, other)

    def __rmul__(self, other):
        return _functions().multiply(other, self)

    def __truediv__(self, other):
        return _functions().divide(self, other)

    def __rtruediv__(self, other):
        return _functions().divide(other, self)

    def __pow__(self, other):
        return _functions().power(self, other)

    def __rpow__(self, other):
        return _functions().power(other, self)

    def __neg__(self):
        return _functions().negative(self)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        return _functions().matmul(self, other)

    def __rmatmul__(self, other):
        return _functions().matmul(other, self)

    def __getitem__(self, index):
        return _functions().getitem(self, index)

    def __bool__(self):
        raise TypeError("a Tensor has no truth value; use sb.where for conditions")

    def __iter__(self):
        raise TypeError("a Tensor cannot be iterated; slice it with t[i] instead")

    @property
    def T(self):  # noqa: N802 - NumPy's name
        return _functions().transpose(self)

    def transpose(self, *axes):
        return _functions().transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def sum(self, axis=None, keepdims=False):
        return _functions().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _functions().mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return _functions().max(self, axis, keepdims)

    def reshape(self, *shape):
        return _functions().reshape(self, shape[0] if len(shape) == 1 else shape)

    def astype(self, dtype):
        return _functions().cast(self, dtype)


def _functions():
    from . import functions  # the operators are compositions defined there

    return functions


class ConstValue:
    """A constant array made hashable by its bytes, so equal constants are one node."""

    __slots__ = ("array", "_key")

    def __init__(self, array: np.ndarray):
        self.array = array
        self.array.flags.writeable = False
        self._key = (array.dtype.str, array.shape, array.tobytes())

    def __eq__(self, other):
        return isinstance(other, ConstValue) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return repr(self.array.item()) if self.array.ndim == 0 else f"array{self.array.shape}"


def make_node(op: str, inputs: Sequence[Tensor] = (), **attrs) -> Tensor:
    """The one constructor of nodes: check shapes and dtypes, then intern the node."""
    if op not in PRIMITIVES:
        raise GraphError(f"unknown op {op!r}; the primitives are {PRIMITIVES}")
    inputs = tuple(inputs)
    for position, node in enumerate(inputs):
        if not isinstance(node, Tensor):
            raise GraphError(f"{op}: operand {position} is a {type(node).__name__}, expected a Tensor")
    key = (op, inputs, tuple(sorted(attrs.items())))
    node = _interned.get(key)
    if node is not None:
        return node
    shape, dtype = shape_rules[op](inputs, attrs)
    node = object.__new__(Tensor)
    node.op, node.inputs, node.attrs = op, inputs, types.MappingProxyType(attrs)
    node.shape, node.dtype = tuple(shape), dtype
    node._value = None
    _interned[key] = node
    return node


def input(name: str, shape, dtype: str = "float32") -> Tensor:  # noqa: A001 - public API name
    """A named input: data fed at evaluation. ``None`` in the shape is the batch size.

    >>> import symbackprop as sb
    >>> sb.input("x", (None, 64))
    <Tensor x (n, 64) float32>
    """
    _check_name(name, "input")
    return make_node(
        "input", name=name, shape=check_shape(shape, f"input {name!r}"), dtype=check_dtype(dtype, f"input {name!r}")
    )


def param(name: str, shape, init="zeros", seed: int | None = None, dtype: str = "float32", **init_args) -> Tensor:
    """A named trainable parameter holding a NumPy value (``p.value``).

    ``init`` is an initialiser name (``zeros``, ``ones``, ``normal``, ``uniform``,
    ``glorot_uniform``, ``glorot_normal``, ``he_uniform``, ``he_normal``), an array, or a
    callable ``(shape, rng) -> array``. Each call makes a new parameter, even with the
    same name.

    >>> import symbackprop as sb
    >>> W = sb.param("W", (3, 2), init="glorot_uniform", seed=0)
    >>> W.value.shape, W.value.dtype
    ((3, 2), dtype('float32'))
    """
    _check_name(name, "param")
    where = f"param {name!r}"
    shape = check_shape(shape, where)
    if None in shape:
        raise GraphError(f"{where}: a parameter cannot have the batch dimension None in {shape}")
    dtype = check_dtype(dtype, where)
    node = make_node("param", name=name, shape=shape, dtype=dtype, uid=next(_param_ids))
    node.value = initializers.initial_value(init, shape, seed, where, **init_args)
    return node


def const(value, dtype: str | None = None) -> Tensor:
    """A constant tensor; equal constants are the same node.

    >>> import symbackprop as sb
    >>> sb.const(2.0) is sb.const(2.0)
    True
    """
    array = np.asarray(value)
    if dtype is None:
        # Python numbers and lists default to float32 like the rest of a graph; NumPy arrays
        # keep their float dtype; integers become int64.
        explicit64 = isinstance(value, (np.ndarray, np.floating)) and array.dtype == np.float64
        dtype = "int64" if array.dtype.kind in "iub" else "float64" if explicit64 else "float32"
    dtype = check_dtype(dtype, "const")
    array = np.array(array, dtype=dtype)
    return make_node("const", value=ConstValue(array), shape=array.shape, dtype=dtype)


def batch_size(dtype: str = "float32") -> Tensor:
    """The batch size ``n`` of an evaluation, as a scalar (used by means over the batch)."""
    return make_node("batch_size", dtype=check_dtype(dtype, "batch_size"))


def _check_name(name, kind):
    if not isinstance(name, str) or not name:
        raise GraphError(f"{kind} name must be a non-empty string, got {name!r}")


def as_tensor(value, like: Tensor | None = None) -> Tensor:
    """Tensors pass through; Python numbers and arrays become constants of ``like``'s dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float, np.number, np.ndarray, list, tuple)):
        dtype = like.dtype if like is not None and like.dtype != "int64" else None
        return const(value, dtype)
    raise GraphError(f"cannot use a {type(value).__name__} ({value!r}) as a tensor")


def topological_order(outputs: Iterable[Tensor]) -> list[Tensor]:
    """Every node the outputs depend on, inputs before the nodes that use them."""
    order, seen = [], set()
    for out in outputs:
        stack = [(out, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.inputs) if child not in seen)
    return order


def leaves(outputs: Iterable[Tensor], op: str) -> Iterator[Tensor]:
    """The leaves of kind ``op`` (``input`` or ``param``) the outputs depend on, in order."""
    return (node for node in topological_order(outputs) if node.op == op)


def rebuild(outputs: Sequence[Tensor], replace: dict | None = None, float_dtype: str | None = None) -> list[Tensor]:
    """A copy of the graph with some nodes replaced and, optionally, every float in one dtype.

    Parameters are kept (their values are shared) and cast where the dtype changes.
    """
    replace = dict(replace or {})
    new: dict[Tensor, Tensor] = {}

    def retype(dtype):
        return float_dtype if float_dtype and dtype in ("float32", "float64") else dtype

    for node in topological_order(outputs):
        if node in replace:
            new[node] = replace[node]
            continue
        attrs = dict(node.attrs)
        if "dtype" in attrs:
            attrs["dtype"] = retype(attrs["dtype"])
        if node.op == "param":
            new[node] = (
                node if retype(node.dtype) == node.dtype else make_node("cast", [node], dtype=retype(node.dtype))
            )
        elif node.op == "const":
            new[node] = const(node.value, retype(node.dtype))
        else:
            new[node] = make_node(node.op, [new[i] for i in node.inputs], **attrs)
    return [new[out] for out in outputs]
