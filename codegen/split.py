"""A program's LLVM module as several modules, for LLVM to compile side by side.

LLVM compiles a module on one core, and it is most of the time a new program takes to
compile. A program's kernels are functions of their own that ``run`` calls and never
inlines (`codegen.emit.emit_program`), so nothing is lost when they live in other modules:
`split_module` deals the kernels, each with the internal functions that only it reaches
(a product's map of a block, the chunks of a pair), to modules of about equal cost; the
first module keeps every function that is not internal (``run``, ``epoch``) and what they
share. The modules compile in parallel threads (`codegen.llvm_threads`) and load into one
engine, which links them.

Functions emitted as they should run (`mark_as_written`: their loops over elements written
in vectors, or no such loops at all) go to modules of their own, named so (`is_as_written`),
which compile without optimisation passes: the optimiser would only re-derive that code,
at about five times the cost per line of IR of generating it. The others, plain scalar
loops for LLVM to vectorise, go through the optimiser.
"""

from __future__ import annotations

import re

import llvmlite.ir as ir

from .ir_text import IRWriter, header_lines, metadata_lines

__all__ = ["split_module", "mark_as_written", "is_as_written"]

# A reference to a global value in LLVM IR as llvmlite writes it: @"name" or @name.
_REFERENCE = re.compile(r'@"((?:[^"\\]|\\.)*)"|@([-a-zA-Z$._][-a-zA-Z$._0-9]*)')
_LOCAL = ("internal", "private")


# What a line of IR costs LLVM through the optimiser, against a line compiled as written: the
# mnist step's scalar loops took 0.21 ms a line (the vectorised code the passes make, then
# its code generation), its kernels written in vectors 0.04 ms.
OPTIMISED_COST = 5
# The end of the name of a module that compiles as written (see `is_as_written`).
AS_WRITTEN_SUFFIX = ".as_written"
_MARK = "_symbackprop_as_written"


def mark_as_written(function: ir.Function) -> ir.Function:
    """Mark ``function`` as emitted the way it should run: `split_module` puts it in a module
    compiled without optimisation passes if the functions it calls are marked too.

    >>> f = mark_as_written(ir.Function(ir.Module(), ir.FunctionType(ir.VoidType(), []), "f"))
    >>> _marked(f)
    True
    """
    setattr(function, _MARK, True)
    return function


def _marked(function: ir.Function) -> bool:
    return getattr(function, _MARK, False)


def is_as_written(text: str) -> bool:
    """Whether a module of `split_module` holds functions emitted as they should run, to be
    compiled without optimisation passes (`codegen.compile.AS_WRITTEN_OPTIONS`).

    >>> is_as_written('; ModuleID = "run.1.as_written"\\n'), is_as_written('; ModuleID = "run.1"\\n')
    (True, False)
    """
    return text.partition("\n")[0].endswith(f'{AS_WRITTEN_SUFFIX}"')


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
    """The IR of ``module`` as modules that together define what it did: at most ``parts``
    of functions marked as written (`mark_as_written`) and ``parts`` of the others.

    Internal functions that call or name one another stay together; a group reached only
    from functions of other modules gets external linkage there, and a declaration where it
    is called. Functions that are not internal, global variables and the groups that name
    a variable the module defines stay in the first module. A group, or the first module,
    compiles as written only if each of its functions is marked so; each kind of module
    gets a share of the ``parts`` as large as its share of the cost (lines of IR, each of
    the optimised kind counting `OPTIMISED_COST`). Every module carries all the metadata, so
    that references to it keep their numbers. One module with nothing marked is its whole
    text, ``[module_text(module)]``. Functions are written by `codegen.ir_text.IRWriter`.

    Parameters
    ----------
    module : llvmlite.ir.Module
        The program's module; it is left as it was.
    parts : int
        How many modules of each kind at most (the threads that will compile them).

    Returns
    -------
    list of str
        The modules' IR texts, the first holding the module's external functions; the
        names of those to compile as written end in ``.as_written`` (`is_as_written`).

    Examples
    --------
    >>> m = ir.Module(name="demo")
    >>> void = ir.FunctionType(ir.VoidType(), [])
    >>> kernels = [ir.Function(m, void, f"k{i}") for i in range(2)]
    >>> run = mark_as_written(ir.Function(m, void, "run"))
    >>> b = ir.IRBuilder(run.append_basic_block())
    >>> for k in kernels:
    ...     k.linkage = "internal"
    ...     _ = ir.IRBuilder(k.append_basic_block()).ret_void()
    ...     _ = b.call(k, [])
    >>> _ = b.ret_void()
    >>> first, second = split_module(m, 1)  # one module of each kind
    >>> 'define void @"run"' in first, 'declare void @"k0"' in first, 'define void @"k0"' in second
    (True, True, True)
    >>> is_as_written(first), is_as_written(second)
    (True, False)
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts!r}")
    values = dict(module.globals)
    defined = {
        name: value for name, value in values.items() if isinstance(value, ir.Function) and not value.is_declaration
    }
    writer = IRWriter()
    texts = {name: writer.function(value) for name, value in defined.items()}
    references = {name: _references(text) - {name} for name, text in texts.items()}
    sizes = {name: _size(text) for name, text in texts.items()}
    movable = _movable_groups(values, texts, references, sizes)
    staying = set(texts).difference(*(names for names, _ in movable))
    first_written = all(_marked(defined[name]) for name in staying)
    groups = [(names, size, all(_marked(defined[name]) for name in names)) for names, size in movable]
    first_size = sum(sizes[name] for name in staying)
    modules = _deal(groups, (first_size, first_written), parts)
    if len(modules) == 1 and not first_written:
        return [writer.module(module)]
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
            texts[name] = writer.function(defined[name])  # the body as written before
    finally:
        for name, linkage in saved.items():
            defined[name].linkage = linkage
    return [
        _module_text(module, values, texts, references, home, index, written)
        for index, (_, written) in enumerate(modules)
    ]


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


def _cost(size: int, written: bool) -> int:
    return size if written else size * OPTIMISED_COST


def _deal(groups: list[tuple[frozenset, int, bool]], first: tuple[int, bool], parts: int) -> list[tuple[set, bool]]:
    """Groups ``(names, size, written)`` dealt to modules of their kind, largest first, each
    to the cheapest module of its kind so far. ``first`` is the size and kind of the first
    module, which may take groups of its kind; each kind has modules in proportion to its
    share of the cost, one at least if it has groups, ``parts`` at most. Returns each
    module's names and kind, the first module first; empty modules are dropped."""
    first_size, first_written = first
    total = _cost(first_size, first_written) + sum(_cost(size, written) for _, size, written in groups)
    modules = [[set(), _cost(first_size, first_written), first_written]]
    for kind in (False, True):
        kind_cost = sum(_cost(size, kind) for _, size, written in groups if written == kind)
        if not kind_cost:
            continue
        kind_cost += modules[0][1] if kind == first_written else 0
        wanted = max(1, min(parts, round(parts * kind_cost / total)))
        modules += [[set(), 0, kind] for _ in range(wanted - (kind == first_written))]
    for names, size, written in sorted(groups, key=lambda g: (-_cost(g[1], g[2]), sorted(g[0]))):
        cheapest = min((m for m in modules if m[2] == written), key=lambda m: m[1])
        cheapest[0] |= names
        cheapest[1] += _cost(size, written)
    return [(names, written) for index, (names, _, written) in enumerate(modules) if index == 0 or names]


def _module_text(
    module: ir.Module, values: dict, texts: dict, references: dict, home: dict, index: int, written: bool
) -> str:
    """One module of the split: its own functions and what they use. The first has every
    global value that does not go elsewhere; the others declare what they use. Each has
    all of the metadata."""
    own = {name for name in texts if home.get(name, 0) == index}
    used = set().union(*(references[name] for name in own))
    name = (module.name if index == 0 else f"{module.name}.{index}") + (AS_WRITTEN_SUFFIX if written else "")
    lines = header_lines(module, name)
    for value_name, value in values.items():
        if value_name in own:
            lines.append(texts[value_name])
        elif value_name in texts:  # a function defined in another module
            if value_name in used:
                lines.append(_declaration(value))
        elif index == 0 or (value_name in used and _is_declaration(value)):
            lines.append(str(value))
    lines += metadata_lines(module)
    return "\n".join(lines) + "\n"


def _is_declaration(value: ir.GlobalValue) -> bool:
    if isinstance(value, ir.Function):
        return value.is_declaration
    return value.initializer is None


def _declaration(function: ir.Function) -> str:
    """``declare`` of a function defined in another module."""
    return str(ir.Function(ir.Module(), function.function_type, function.name))
