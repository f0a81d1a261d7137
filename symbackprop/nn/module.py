"""The ``Module`` base: a layer or model that builds graph nodes when called.

A module owns parameters (``sb.param`` tensors made at construction) and submodules, both
found from its attributes in definition order. Calling it on a tensor builds the graph of
its forward pass; nothing is computed until the graph is evaluated or compiled, so
``sb.grad``, ``sb.formula``, ``sb.evaluate`` and ``sb.compile_step`` work on its output as
on any hand-built graph.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import numpy as np

from ..errors import GraphError
from ..graph import Tensor, param
from ..shapes import format_shape

JSON_SCALARS = (str, int, float, bool, type(None))
BOOKKEEPING = frozenset({"_init_args", "_numbered_params", "_number"})  # attributes that are not members

# Every Module subclass by class name, then by where it is defined, so a description can be
# built again (see build()). Defining a class again in the same place (re-running a notebook
# cell) replaces it; two classes of one name from different places make the name ambiguous.
registry: dict[str, dict[str, type]] = {}


def is_param(value) -> bool:
    return isinstance(value, Tensor) and value.op == "param"


def json_value(value):
    """``value`` as plain JSON data (tuples become lists), or ``None`` if it has no JSON form.

    >>> json_value((3, 3)), json_value(np.float32(0.5)), json_value(np.zeros(2))
    ([3, 3], 0.5, None)
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, JSON_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        items = [json_value(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    return None


def positive_ints(module, **sizes) -> tuple[int, ...]:
    """The sizes as ints, or a clear error naming the one that is not a positive int.

    >>> positive_ints(Module(), rows=3, columns=np.int64(2))
    (3, 2)
    """
    checked = []
    for key, value in sizes.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise GraphError(f"{type(module).__name__}: {key} must be a positive int, got {value!r}")
        checked.append(int(value))
    return tuple(checked)


def derive_seed(seed: int | None, index: int) -> int | None:
    """An independent seed for a layer's ``index``-th parameter (``None`` stays unseeded).

    >>> derive_seed(0, 0) == derive_seed(0, 0) != derive_seed(0, 1), derive_seed(None, 0)
    (True, None)
    """
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class Module:
    """Base class of layers and models.

    Subclasses create their parameters in ``__init__`` (with :meth:`add_param`, or
    ``sb.param`` for names of their own) and implement :meth:`forward`. Submodules are
    attributes (or lists of modules); their parameters are listed under qualified names
    such as ``"encoder.W"``.

    >>> import symbackprop as sb
    >>> class Affine(sb.nn.Module):
    ...     def __init__(self, features):
    ...         self.add_param("scale", (features,), init="ones")
    ...         self.add_param("shift", (features,))
    ...
    ...     def forward(self, x):
    ...         return x * self.scale + self.shift
    >>> layer = Affine(3)
    >>> layer(sb.input("x", (None, 3))).shape
    (None, 3)
    >>> list(layer.parameters())
    ['scale', 'shift']
    >>> layer.describe()
    {'type': 'Affine', 'args': {'features': 3}, 'children': {}}
    """

    training: bool = True  # every module starts in training mode; see train() and eval()
    name: str | None = None  # a layer's own suffix for its parameter names; None: numbered by its parent

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        registry.setdefault(cls.__name__, {})[f"{cls.__module__}.{cls.__qualname__}"] = cls

    # -- construction ------------------------------------------------------------------------
    def __new__(cls, *args, **kwargs):
        # The constructor's arguments are kept so describe() can say how to rebuild the module.
        module = super().__new__(cls)
        object.__setattr__(module, "_init_args", (args, kwargs))
        return module

    def __setattr__(self, attr: str, value) -> None:
        object.__setattr__(self, attr, value)
        if isinstance(value, Module) or _is_module_list(value):
            self._number_layers()

    def add_param(self, attr: str, shape, init="zeros", seed: int | None = None, dtype: str = "float32", **init_args):
        """Make a parameter, store it as the attribute ``attr`` and return it.

        Its name in the graph (and in formulas) is ``attr`` for a standalone layer, ``attr``
        followed by the layer's number once the layer sits inside another module (``W1``,
        ``W2``; the parameter is then replaced by one of that name with the same value), or
        ``attr_name`` when the layer has a ``name``.
        """
        tensor = param(self._param_name(attr), shape, init=init, seed=seed, dtype=dtype, **init_args)
        object.__setattr__(self, attr, tensor)
        object.__setattr__(self, "_numbered_params", (*getattr(self, "_numbered_params", ()), attr))
        return tensor

    def _param_name(self, attr: str) -> str:
        if self.name is not None:
            return f"{attr}_{self.name}"
        number = getattr(self, "_number", None)
        return attr if number is None else f"{attr}{number}"

    def _renumber(self, number: int) -> None:
        """Give this layer's own parameters the names of layer ``number``, keeping their values."""
        if self.name is not None or getattr(self, "_number", None) == number:
            return
        object.__setattr__(self, "_number", number)
        for attr in getattr(self, "_numbered_params", ()):
            old = getattr(self, attr)
            if not is_param(old):  # replaced by the subclass since
                continue
            object.__setattr__(self, attr, param(self._param_name(attr), old.shape, init=old.value, dtype=old.dtype))

    def _number_layers(self) -> None:
        # Layers that own parameters are numbered 1, 2, ... in definition order across the whole
        # tree, so formulas read W1, W2 as in a textbook.
        owners = [m for m in self.modules() if getattr(m, "_numbered_params", ())]
        for number, module in enumerate(owners, start=1):
            module._renumber(number)

    # -- the graph -----------------------------------------------------------------------------
    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        if not isinstance(x, Tensor):
            raise GraphError(f"{self.summary()}: the input is a {type(x).__name__}, expected a symbackprop Tensor")
        return self.forward(x, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """Build the output tensor from the input tensor ``x``; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    # -- structure -------------------------------------------------------------------------------
    def members(self) -> Iterator[tuple[str, object]]:
        """``(name, value)`` for every attribute that may hold a parameter or submodule, in order."""
        for attr, value in vars(self).items():
            if attr in BOOKKEEPING:
                continue
            if _is_module_list(value):
                yield from ((f"{attr}.{i}", v) for i, v in enumerate(value))
            else:
                yield attr, value

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct submodules with their names."""
        return ((name, value) for name, value in self.members() if isinstance(value, Module))

    def modules(self) -> list[Module]:
        """This module and every submodule below it, each once, parents before children."""
        found: dict[int, Module] = {}
        stack = [self]
        while stack:
            module = stack.pop()
            if id(module) not in found:
                found[id(module)] = module
                stack.extend(reversed([child for _, child in module.named_children()]))
        return list(found.values())

    def parameters(self) -> dict[str, Tensor]:
        """Every parameter under its qualified name, in definition order (a shared one once).

        >>> import symbackprop as sb
        >>> model = sb.nn.Sequential(sb.nn.Dense(4, 3), sb.nn.ReLU(), sb.nn.Dense(3, 2))
        >>> {name: p.label for name, p in model.parameters().items()}
        {'0.W': 'W1', '0.b': 'b1', '2.W': 'W2', '2.b': 'b2'}
        """
        found: dict[str, Tensor] = {}
        seen: set[Tensor] = set()
        for name, tensor in self._named_params(""):
            if tensor not in seen:
                seen.add(tensor)
                found[name] = tensor
        return found

    def _named_params(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        for name, value in self.members():
            if is_param(value):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._named_params(f"{prefix}{name}.")

    # -- modes -------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every submodule; returns ``self``."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``) recursively; returns ``self``."""
        return self.train(False)

    # -- description ---------------------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor's arguments as JSON data, defaults filled in.

        Arguments without a JSON form (arrays, arbitrary callables, modules) are left out, so
        rebuilding uses their defaults; modules passed as arguments appear as children.
        """
        args, kwargs = self.__dict__.get("_init_args", ((), {}))
        try:
            bound = inspect.signature(type(self).__init__).bind(self, *args, **kwargs)
        except TypeError:
            return {}
        bound.apply_defaults()
        config = {}
        for key, value in list(bound.arguments.items())[1:]:
            kind = inspect.signature(type(self).__init__).parameters[key].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            data = json_value(value)
            if data is not None or value is None:
                config[key] = data
        return config

    def describe(self) -> dict:
        """A JSON-serialisable description: type, constructor arguments and children.

        Two modules with equal descriptions have the same architecture, so their parameters
        fit each other; :func:`symbackprop.nn.build` makes a new module from a description.

        >>> import json, symbackprop as sb
        >>> json.dumps(sb.nn.Sequential(sb.nn.Dense(2, 1)).describe())[:60]
        '{"type": "Sequential", "args": {}, "children": {"0": {"type"'
        """
        children = {name: child.describe() for name, child in self.named_children()}
        return {"type": type(self).__name__, "args": self.config(), "children": children}

    @classmethod
    def from_description(cls, description: dict, build_child) -> Module:
        """Make a module of this class from :meth:`describe`'s output; ``build_child`` builds a child.

        Modules that make their children in ``__init__`` are rebuilt from their arguments
        alone; containers given their children (:class:`Sequential`) override this.
        """
        return cls(**description["args"])

    # -- printing ----------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's one-line summary."""
        return ", ".join(f"{key}={value!r}" for key, value in self.config().items())

    def summary(self) -> str:
        """``Type(extra_repr)``: how the module is named in messages."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return self.summary()
        lines = [f"{type(self).__name__}("]
        lines += [f"  {line}" for line in self.extra_repr().splitlines()]
        for name, child in children:
            nested = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {nested}")
        return "\n".join(lines) + "\n)"

    # -- input checks shared by layers ----------------------------------------------------------------------
    def check_input(
        self, x: Tensor, rank: int, what: str, size: int | None = None, dtype=None, noun: str = "features"
    ) -> None:
        """Raise a clear error unless ``x`` has ``rank`` axes (described by ``what``), ``size``
        entries (``noun``) on its last axis if given, and a float (or the given) dtype."""
        if x.ndim != rank:
            raise GraphError(
                f"{self.summary()}: input {x.label} has shape {format_shape(x.shape)}, expected rank {rank} {what}"
            )
        if size is not None and x.shape[-1] != size:
            found = noun.removesuffix("s") if x.shape[-1] == 1 else noun
            raise GraphError(
                f"{self.summary()}: input {x.label} {format_shape(x.shape)} has {x.shape[-1]} {found}, expected {size}"
            )
        expected = dtype or ("float32", "float64")
        expected = (expected,) if isinstance(expected, str) else expected
        if x.dtype not in expected:
            raise GraphError(f"{self.summary()}: input {x.label} is {x.dtype}, expected {' or '.join(expected)}")


def _is_module_list(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Module) for v in value)


def build(description: dict, classes: dict[str, type] | None = None) -> Module:
    """A new module (fresh parameters) from a :meth:`Module.describe` description.

    Classes are found by name among every ``Module`` subclass defined so far; ``classes``
    maps names to classes where two classes share a name or a class is not imported.

    >>> import symbackprop as sb
    >>> model = sb.nn.Sequential(sb.nn.Dense(4, 8, activation="tanh"), sb.nn.Dense(8, 2))
    >>> copy = sb.nn.build(model.describe())
    >>> copy.describe() == model.describe()
    True
    """
    if not isinstance(description, dict) or not {"type", "args", "children"} <= set(description):
        raise GraphError(f"build: expected a description with 'type', 'args' and 'children', got {description!r}")
    name = description["type"]
    candidates = [classes[name]] if classes and name in classes else list(registry.get(name, {}).values())
    if len(candidates) != 1:
        reason = "is not a known Module class" if not candidates else "names several Module classes"
        raise GraphError(f"build: {name!r} {reason}; pass classes={{{name!r}: TheClass}}")
    return candidates[0].from_description(description, lambda child: build(child, classes))
