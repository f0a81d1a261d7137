"""LLVM IR text of llvmlite modules and functions, written faster than llvmlite writes it.

Every module reaches LLVM as text. llvmlite's printer formats each operand through
`str.format` and a chain of cached-string lookups, and took more than half of the time that
the kernel library spends in Python (0.08 of 0.13 s for a float32 training step's modules;
0.045 s with this writer) and 0.03 s of the mnist program's emission (0.022-0.026 s). `IRWriter` writes the instructions that the code
generator emits with one f-string each, remembering the text of every type it has seen;
it takes each value's name and each constant's text from llvmlite (`get_reference`), and
any other instruction, and everything outside function bodies (declarations, globals,
metadata), is llvmlite's own text. LLVM reads the two texts the same:
``tests/codegen/test_ir_text.py`` compares LLVM's parse of each, for the library and for
programs.
"""

from __future__ import annotations

import re

import llvmlite.ir as ir
from llvmlite.ir import instructions as ins

__all__ = ["IRWriter", "module_text", "header_lines", "metadata_lines"]

# Names that LLVM reads unquoted; any other label is quoted, with `\` and `"` escaped.
_PLAIN_NAME = re.compile(r"[-a-zA-Z$._][-a-zA-Z$._0-9]*$")


def module_text(module: ir.Module) -> str:
    """The IR of ``module`` as text that LLVM reads as it reads ``str(module)``.

    >>> m = ir.Module(name="m")
    >>> f = ir.Function(m, ir.FunctionType(ir.DoubleType(), [ir.DoubleType()]), name="twice")
    >>> b = ir.IRBuilder(f.append_basic_block("entry"))
    >>> b.ret(b.fadd(f.args[0], f.args[0], name="y"))  # doctest: +ELLIPSIS
    <ir.Ret ...>
    >>> print(module_text(m).split("{")[1].strip())
    entry:
      %"y" = fadd double %".1", %".1"
      ret double %"y"
    }
    """
    return IRWriter().module(module)


class IRWriter:
    """Writes modules and functions as LLVM IR text.

    A writer remembers the text of each type and of each function body it has written, so
    a function written again (after its linkage changed, say) costs only its first line.
    Keep one no longer than the module it writes: types are remembered by identity.
    """

    def __init__(self) -> None:
        self._types: dict[int, str] = {}
        self._bodies: dict[int, str] = {}
        # The instruction classes the code generator emits, and how each is written.
        self._rules = {
            ins.Instruction: self._generic,
            ins.CastInstr: self._cast,
            ins.LoadInstr: self._load,
            ins.StoreInstr: self._store,
            ins.GEPInstr: self._gep,
            ins.PhiInstr: self._phi,
            ins.Branch: self._terminator,
            ins.ConditionalBranch: self._terminator,
            ins.Ret: self._ret,
            ins.SelectInstr: self._select,
            ins.ICMPInstr: self._compare,
            ins.FCMPInstr: self._compare,
            ins.ShuffleVector: self._operand_list,
            ins.InsertElement: self._operand_list,
            ins.ExtractElement: self._operand_list,
            ins.CallInstr: self._call,
        }

    def module(self, module: ir.Module) -> str:
        """The whole module, laid out as llvmlite lays it out."""
        lines = header_lines(module, module.name)
        lines += [self.function(v) if isinstance(v, ir.Function) else str(v) for v in module.globals.values()]
        lines += metadata_lines(module)
        return "\n".join(lines)

    def function(self, function: ir.Function) -> str:
        """A function's definition, or its declaration if it has no body."""
        prototype: list[str] = []
        function.descr_prototype(prototype)
        if not function.blocks:
            return prototype[0]
        body = self._bodies.get(id(function))
        if body is None:
            body = self._bodies[id(function)] = self._body(function)
        return f"{prototype[0]}{{\n{body}}}\n"

    def _body(self, function: ir.Function) -> str:
        rules = self._rules
        lines = []
        for block in function.blocks:
            lines.append(f"{_label(block.name)}:\n")
            for instruction in block.instructions:
                rule = rules.get(type(instruction))
                lines.append(f"  {rule(instruction) if rule is not None else instruction}\n")
        return "".join(lines)

    # -- operands -------------------------------------------------------------------------
    def _type(self, t: ir.Type) -> str:
        text = self._types.get(id(t))
        if text is None:
            text = self._types[id(t)] = str(t)
        return text

    def _typed(self, value) -> str:
        """An operand as ``type reference``, where the instruction does not imply its type."""
        return f"{self._type(value.type)} {value.get_reference()}"

    @staticmethod
    def _metadata(instruction) -> str:
        if not instruction.metadata:
            return ""
        return "".join(f", !{key} {node.get_reference()}" for key, node in instruction.metadata.items())

    @staticmethod
    def _named(instruction, text: str) -> str:
        """``%name = text`` for an instruction with a value, ``text`` for one without."""
        if isinstance(instruction.type, ir.VoidType):
            return text
        return f"{instruction.get_reference()} = {text}"

    # -- instructions ---------------------------------------------------------------------
    def _generic(self, instruction) -> str:
        """Arithmetic and logic: ``opname flags type a, b``."""
        opname = " ".join([instruction.opname, *instruction.flags])
        operands = ", ".join([op.get_reference() for op in instruction.operands])
        text = f"{opname} {self._type(instruction.type)} {operands}{self._metadata(instruction)}"
        return self._named(instruction, text)

    def _cast(self, instruction) -> str:
        (value,) = instruction.operands
        text = f"{instruction.opname} {self._typed(value)} to {self._type(instruction.type)}"
        return self._named(instruction, text + self._metadata(instruction))

    def _load(self, instruction) -> str:
        (pointer,) = instruction.operands
        align = "" if instruction.align is None else f", align {instruction.align}"
        text = f"load {self._type(instruction.type)}, {self._typed(pointer)}{align}"
        return self._named(instruction, text + self._metadata(instruction))

    def _store(self, instruction) -> str:
        value, pointer = instruction.operands
        align = "" if instruction.align is None else f", align {instruction.align}"
        return f"store {self._typed(value)}, {self._typed(pointer)}{align}{self._metadata(instruction)}"

    def _gep(self, instruction) -> str:
        op = "getelementptr inbounds" if instruction.inbounds else "getelementptr"
        indices = ", ".join([self._typed(index) for index in instruction.indices])
        text = f"{op} {self._type(instruction.source_etype)}, {self._typed(instruction.pointer)}, {indices}"
        return self._named(instruction, text + self._metadata(instruction))

    def _phi(self, instruction) -> str:
        flags = "".join(f"{flag} " for flag in instruction.flags)
        incoming = ", ".join([f"[{v.get_reference()}, {b.get_reference()}]" for v, b in instruction.incomings])
        text = f"phi {flags}{self._type(instruction.type)} {incoming}"
        return self._named(instruction, text + self._metadata(instruction))

    def _terminator(self, instruction) -> str:
        operands = ", ".join([self._typed(op) for op in instruction.operands])
        return f"{instruction.opname} {operands}{self._metadata(instruction)}"

    def _ret(self, instruction) -> str:
        value = instruction.return_value
        operand = "" if value is None else f" {self._typed(value)}"
        return f"{instruction.opname}{operand}{self._metadata(instruction)}"

    def _select(self, instruction) -> str:
        flags = "".join(f"{flag} " for flag in instruction.flags)
        operands = ", ".join([self._typed(op) for op in instruction.operands])
        return self._named(instruction, f"select {flags}{operands}{self._metadata(instruction)}")

    def _compare(self, instruction) -> str:
        flags = "".join(f" {flag}" for flag in instruction.flags)
        lhs, rhs = instruction.operands
        text = f"{instruction.opname}{flags} {instruction.op} {self._typed(lhs)}, {rhs.get_reference()}"
        return self._named(instruction, text + self._metadata(instruction))

    def _operand_list(self, instruction) -> str:
        """``opname type a, type b, ...``: the vector element and shuffle instructions."""
        operands = ", ".join([self._typed(op) for op in instruction.operands])
        return self._named(instruction, f"{instruction.opname} {operands}{self._metadata(instruction)}")

    def _call(self, instruction) -> str:
        rare = instruction.arg_attributes, instruction.cconv, instruction.tail, instruction.attributes
        if any(rare) or instruction.fastmath:
            return str(instruction)  # forms the code generator does not emit: llvmlite's text
        callee_type = instruction.callee.function_type
        returned = callee_type if callee_type.var_arg else callee_type.return_type
        arguments = ", ".join([self._typed(argument) for argument in instruction.args])
        text = f"call {self._type(returned)} {instruction.callee.get_reference()}({arguments})"
        return self._named(instruction, text + self._metadata(instruction))


def header_lines(module: ir.Module, name: str) -> list[str]:
    """The lines before a module's global values: its name (``name``), target and types."""
    lines = [
        f'; ModuleID = "{name}"',
        f'target triple = "{module.triple}"',
        f'target datalayout = "{module.data_layout}"',
        "",
    ]
    return lines + [t.get_declaration() for t in module.context.identified_types.values()]


def metadata_lines(module: ir.Module) -> list[str]:
    """The module's named metadata, then its numbered metadata nodes."""
    lines = [
        f"!{name} = !{{ {', '.join(op.get_reference() for op in node.operands)} }}"
        for name, node in module.namedmetadata.items()
    ]
    return lines + [str(node) for node in module.metadata]


def _label(name: str) -> str:
    """A block's label as LLVM reads it."""
    if _PLAIN_NAME.match(name):
        return name
    return '"' + name.replace("\\", "\\5c").replace('"', "\\22") + '"'
