"""A program's LLVM module as several modules, for LLVM to compile side by side.

LLVM compiles a module on one core, and it is most of the time a new program takes to
compile. A program's kernels are functions of their own that ``run`` calls and never
inlines (`codegen.emit.emit_program`), so nothing is lost when they live in other modules:
`split_module` deals the kernels, each with the internal functions that only it reaches
(a product's map of a block, the chunks of a pair), to modules of about equal size; the
first module keeps every function that is not internal (``run``, ``epoch``) and what they
share. The modules compile in parallel threads (`codegen.llvm_threads`) and load into one
engine, which links them.
"""

from __future__ import annotations

import re

import llvmlite.ir as ir

__all__ = ["split_module"]

# A reference to a global value in LLVM IR as llvmlite writes it: @"name" or @name.
_REFERENCE = re.compile(r'@"((?:[^"\\]|\\.)*)"|@([-a-zA-Z$._][-a-zA-Z$._0-9]*)')
_LOCAL = ("internal", "private")


def _references(text: str) -> set[str]:
    return {quoted or bare for quoted, bare in _REFERENCE.findall(text)}


def _size(text: str) -> int:
    """Instructions, roughly: lines that are not labels or braces."""
    return sum(1 for line in text.splitlines() if line.startswith("  "))


class _Groups:
    """Union-find over function names: functions that must share a module."""

    def __init__(self, names):
        self.parent = {name: name for name in names}

    def find(self, name: str) -> str:
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def join(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def split_module(module: ir.Module, parts: int) -> list[str]:
    """The IR of ``module`` as at most ``parts`` modules that together define what it did.

    Internal functions that call or name one another stay together; a group reached only
    from functions of other modules gets external linkage there, and a declaration where it
    is called. Functions that are not internal, global variables and the groups that name
    a variable the module defines stay in the first module. Every module carries all the
    metadata, so that references to it keep their numbers. One module (``parts`` of 1, or
    nothing to move) is ``[str(module)]``.

    Parameters
    ----------
    module : llvmlite.ir.Module
        The program's module; it is left as it was.
    parts : int
        How many modules at most (the threads that will compile them).

    Returns
    -------
    list of str
        The modules' IR texts, the first holding the module's external functions.

    Examples
    --------
    >>> m = ir.Module(name="demo")
    >>> void = ir.FunctionType(ir.VoidType(), [])
    >>> kernels = [ir.Function(m, void, f"k{i}") for i in range(2)]
    >>> run = ir.Function(m, void, "run")
    >>> b = ir.IRBuilder(run.append_basic_block())
    >>> for k in kernels:
    ...     k.linkage = "internal"
    ...     _ = ir.IRBuilder(k.append_basic_block()).ret_void()
    ...     _ = b.call(k, [])
    >>> _ = b.ret_void()
    >>> first, second = split_module(m, 2)
    >>> 'define void @"run"' in first, 'declare void @"k0"' in first, 'define void @"k0"' in second
    (True, True, True)
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts!r}")
    values = dict(module.globals)
    defined = {
        name: value for name, value in values.items() if isinstance(value, ir.Function) and not value.is_declaration
    }
    texts = {name: str(value) for name, value in defined.items()}
    references = {name: _references(text) - {name} for name, text in texts.items()}
    sizes = {name: _size(text) for name, text in texts.items()}
    movable = _movable_groups(values, texts, references, sizes)
    if parts == 1 or not movable:
        return [str(module)]
    modules = _deal(movable, sum(sizes.values()) - sum(size for _, size in movable), parts)
    home = {name: index for index, (group, _) in enumerate(modules[1:], 1) for name in group}
    crossing = {
        name
        for caller, names in references.items()
        for name in names
        if name in home and home.get(caller, 0) != home[name]
    }
    saved = {name: defined[name].linkage for name in crossing}
    try:
        for name in crossing:
            defined[name].linkage = ""  # external: called from another module
            texts[name] = str(defined[name])
    finally:
        for name, linkage in saved.items():
            defined[name].linkage = linkage
    return [_module_text(module, values, texts, references, home, index) for index in range(len(modules))]


def _movable_groups(values: dict, texts: dict, references: dict, sizes: dict) -> list[tuple[frozenset, int]]:
    """The groups of internal functions that may leave the first module, with their sizes."""
    local = {name for name in texts if values[name].linkage in _LOCAL}
    groups = _Groups(local)
    for name in local:
        for other in references[name] & local:
            groups.join(name, other)
    members: dict[str, set] = {}
    for name in local:
        members.setdefault(groups.find(name), set()).add(name)
    # A group that names a variable the module defines stays with it, in the first module.
    defines = {name for name, value in values.items() if not _is_declaration(value) and name not in texts}
    return [
        (frozenset(names), sum(sizes[n] for n in names))
        for _, names in sorted(members.items())
        if not any(references[n] & defines for n in names)
    ]


def _deal(groups: list[tuple[frozenset, int]], first_size: int, parts: int) -> list[tuple[set, int]]:
    """Groups dealt to ``parts`` modules, largest first, each to the smallest module so far;
    the first module starts with ``first_size``. Empty modules are dropped."""
    modules = [(set(), first_size)] + [(set(), 0) for _ in range(parts - 1)]
    for group, size in sorted(groups, key=lambda g: (-g[1], sorted(g[0]))):
        index = min(range(parts), key=lambda i: modules[i][1])
        names, total = modules[index]
        modules[index] = (names | group, total + size)
    return [modules[0]] + [m for m in modules[1:] if m[0]]


def _module_text(module: ir.Module, values: dict, texts: dict, references: dict, home: dict, index: int) -> str:
    """One module of the split: its own functions and what they use. The first has every
    global value that does not go elsewhere; the others declare what they use. Each has
    all of the metadata."""
    own = {name for name in texts if home.get(name, 0) == index}
    used = set().union(*(references[name] for name in own))
    name = module.name if index == 0 else f"{module.name}.{index}"
    lines = [
        f'; ModuleID = "{name}"',
        f'target triple = "{module.triple}"',
        f'target datalayout = "{module.data_layout}"',
    ]
    lines += [t.get_declaration() for t in module.get_identified_types().values()]
    for value_name, value in values.items():
        if value_name in own:
            lines.append(texts[value_name])
        elif value_name in texts:  # a function defined in another module
            if value_name in used:
                lines.append(_declaration(value))
        elif index == 0 or (value_name in used and _is_declaration(value)):
            lines.append(str(value))
    lines += [str(node) for node in module.metadata]
    lines += [
        f"!{key} = !{{ {', '.join(op.get_reference() for op in node.operands)} }}"
        for key, node in module.namedmetadata.items()
    ]
    return "\n".join(lines) + "\n"


def _is_declaration(value: ir.GlobalValue) -> bool:
    if isinstance(value, ir.Function):
        return value.is_declaration
    return value.initializer is None


def _declaration(function: ir.Function) -> str:
    """``declare`` of a function defined in another module."""
    return str(ir.Function(ir.Module(), function.function_type, function.name))
