"""Read the symbol table of an ELF64 object file: the functions it defines and the symbols it needs.

MCJIT aborts or crashes on a symbol it cannot resolve, and code generation can add calls
that are not in the IR (``memcpy``, ``expf`` for a scalarised ``llvm.exp``), so the only
complete list of what an object needs is its own symbol table. Every read is bounds-checked:
a malformed file raises `ObjectFormatError`, never anything worse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["ObjectFormatError", "ObjectSymbols", "read_symbols"]

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_SHT_SYMTAB = 2
_SHN_UNDEF = 0
_STB_GLOBAL = 1
_STB_WEAK = 2
_STT_FUNC = 2
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")


class ObjectFormatError(ValueError):
    """The bytes are not a well-formed little-endian ELF64 object file."""


@dataclass(frozen=True)
class ObjectSymbols:
    """Global symbols of an object file.

    Attributes
    ----------
    functions : tuple of str
        Functions defined with global binding (the callable entry points).
    undefined : tuple of str
        Symbols the object refers to but does not define (weak ones excluded).
    """

    functions: tuple[str, ...]
    undefined: tuple[str, ...]


def _unpack(fmt: struct.Struct, data: bytes, offset: int) -> tuple:
    if offset < 0 or offset + fmt.size > len(data):
        raise ObjectFormatError(f"truncated object file: need {fmt.size} bytes at offset {offset}, have {len(data)}")
    return fmt.unpack_from(data, offset)


def _c_string(data: bytes, start: int, end: int) -> str:
    stop = data.find(b"\0", start, end)
    if start >= end or stop < 0:
        raise ObjectFormatError(f"symbol name at offset {start} runs past its string table")
    return data[start:stop].decode("ascii", errors="replace")


def read_symbols(data: bytes) -> ObjectSymbols:
    """Return the defined functions and undefined symbols of an ELF64 object.

    Parameters
    ----------
    data : bytes
        Contents of a relocatable object file, as `TargetMachine.emit_object` returns.

    Returns
    -------
    ObjectSymbols

    Raises
    ------
    ObjectFormatError
        If ``data`` is not a little-endian ELF64 file or its tables are out of bounds.

    Examples
    --------
    >>> read_symbols(b"not an object")
    Traceback (most recent call last):
    ...
    codegen.objfile.ObjectFormatError: not an ELF file (magic b'not ')
    """
    if data[:4] != _ELF_MAGIC:
        raise ObjectFormatError(f"not an ELF file (magic {bytes(data[:4])!r})")
    if len(data) < 64 or data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        raise ObjectFormatError("only little-endian ELF64 objects are supported")
    (section_offset,) = _unpack(struct.Struct("<Q"), data, 0x28)
    entry_size, count = _unpack(struct.Struct("<HH"), data, 0x3A)
    if entry_size != _SECTION_HEADER.size:
        raise ObjectFormatError(f"unexpected section header size {entry_size}")
    sections = [_unpack(_SECTION_HEADER, data, section_offset + i * entry_size) for i in range(count)]
    functions: list[str] = []
    undefined: list[str] = []
    for header in sections:
        if header[1] != _SHT_SYMTAB:
            continue
        sym_offset, sym_size, link = header[4], header[5], header[6]
        if link >= len(sections):
            raise ObjectFormatError(f"symbol table links to missing section {link}")
        str_offset, str_size = sections[link][4], sections[link][5]
        str_end = str_offset + str_size
        if str_end > len(data):
            raise ObjectFormatError("string table runs past the end of the file")
        for pos in range(sym_offset, sym_offset + sym_size, _SYMBOL.size):
            name_index, info, _other, section_index, _value, _size = _unpack(_SYMBOL, data, pos)
            binding, kind = info >> 4, info & 0xF
            if name_index == 0 or binding not in (_STB_GLOBAL, _STB_WEAK):
                continue
            name = _c_string(data, str_offset + name_index, str_end)
            if section_index == _SHN_UNDEF:
                if binding == _STB_GLOBAL:
                    undefined.append(name)
            elif kind == _STT_FUNC:
                functions.append(name)
    return ObjectSymbols(tuple(functions), tuple(undefined))
