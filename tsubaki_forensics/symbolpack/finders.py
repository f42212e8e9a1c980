"""Serve drgn a symbol pack: types, objects and symbols, as a vmlinux would.

The pack's addresses are link-time ones; the dump's ``KERNELOFFSET``
(KASLR) is added to every address in the kernel image (at or above
``__START_KERNEL_map``), not to per-CPU offsets (``runqueues`` is an offset
into each CPU's area, as in DWARF).  Types are built on first use and
cached; struct members and function parameters are lazy, so recursive
structures cost nothing until touched.  Unwinding uses drgn's built-in ORC
reader exactly as the self-contained route does
(:func:`~tsubaki_forensics.selfcontained.unwind.enable_orc`), with the
pack's symbols for the table bounds and ``_text``/``_end``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import drgn

from ..errors import DebugInfoError

__all__ = ["KERNEL_MAP", "PackTypes", "PackObjects", "image_base", "kernel_offset", "pack_symbols", "relocate"]

KERNEL_MAP = 0xFFFFFFFF80000000  # x86_64 __START_KERNEL_map: link addresses of the kernel image
# Where each architecture links its kernel image: x86_64's __START_KERNEL_map;
# arm64 links the image in the upper VA half (KIMAGE_VADDR, above the modules
# area), and per-CPU offsets are small numbers below either.
_IMAGE_BASE = {drgn.Architecture.X86_64: KERNEL_MAP, drgn.Architecture.AARCH64: 0xFFFF800000000000}
C = drgn.Language.C
_KINDS = {"f": drgn.SymbolKind.FUNC, "o": drgn.SymbolKind.OBJECT, "u": drgn.SymbolKind.UNKNOWN,
          "t": drgn.SymbolKind.TLS}
_BINDINGS = {"l": drgn.SymbolBinding.LOCAL, "g": drgn.SymbolBinding.GLOBAL, "w": drgn.SymbolBinding.WEAK,
             "u": drgn.SymbolBinding.UNIQUE, "?": drgn.SymbolBinding.UNKNOWN}
_FINDER_PREFIX = {drgn.TypeKind.STRUCT: "struct ", drgn.TypeKind.UNION: "union ", drgn.TypeKind.ENUM: "enum ",
                  drgn.TypeKind.CLASS: "class "}
_PLAIN = {drgn.TypeKind.TYPEDEF: "typedef", drgn.TypeKind.INT: "int", drgn.TypeKind.BOOL: "bool",
          drgn.TypeKind.FLOAT: "float"}


def kernel_offset(prog: drgn.Program) -> int:
    """KASLR offset from the program's VMCOREINFO (0 when absent)."""
    text = prog["VMCOREINFO"].string_().decode(errors="replace")
    m = re.search(r"^KERNELOFFSET=([0-9a-fA-F]+)$", text, re.M)
    return int(m.group(1), 16) if m else 0


def image_base(prog: drgn.Program) -> int:
    """The lowest link-time address of the kernel image on ``prog``'s architecture.

    :raises DebugInfoError: an architecture symbol packs do not support yet.
    """
    try:
        return _IMAGE_BASE[prog.platform.arch]
    except KeyError:
        raise DebugInfoError(f"symbol packs do not support {prog.platform.arch.name} dumps") from None


def relocate(address: int, offset: int, base: int = KERNEL_MAP) -> int:
    """A link-time address as it is in the running kernel (image addresses move by KASLR's offset)."""
    return address + offset if address >= base else address


class PackTypes:
    """drgn types of one pack, for one program (``register_type_finder`` callback: :meth:`find`)."""

    def __init__(self, prog: drgn.Program, pack: dict[str, Any]) -> None:
        self.prog = prog
        self.records: list[list[Any]] = pack["types"]
        self.names: dict[str, int] = pack["names"]
        self._cache: dict[int, drgn.Type] = {}

    def find(self, prog: drgn.Program, kinds: drgn.TypeKindSet, name: str, filename: str | None) -> drgn.Type | None:
        if filename is not None:
            return None  # the pack keeps no file names
        for kind in kinds:
            type_id = self.names.get(_FINDER_PREFIX.get(kind, "") + name)
            if type_id is not None and self.records[type_id][0] == _PLAIN.get(kind, self.records[type_id][0]):
                t = self.build(type_id)
                if t.kind == kind:
                    return t
        return None

    def ref(self, ref: int) -> drgn.Type:
        """The type a pack reference names (``id * 16 + qualifiers``)."""
        t = self.build(ref >> 4)
        qualifiers = ref & 15
        return t.qualified(drgn.Qualifiers(qualifiers)) if qualifiers else t

    def build(self, type_id: int) -> drgn.Type:
        cached = self._cache.get(type_id)
        if cached is None:
            cached = self._cache[type_id] = self._build(self.records[type_id])
        return cached

    def _lazy(self, ref: int, bit_field_size: int = 0) -> Callable[[], drgn.Type | drgn.Object]:
        if not bit_field_size:
            return lambda: self.ref(ref)
        return lambda: drgn.Object(self.prog, self.ref(ref), bit_field_size=bit_field_size)

    def _build(self, r: list[Any]) -> drgn.Type:
        prog, kind = self.prog, r[0]
        if kind in ("struct", "union", "class"):
            make = {"struct": prog.struct_type, "union": prog.union_type, "class": prog.class_type}[kind]
            if r[2] is None:
                return make(r[1], language=C)
            members = [drgn.TypeMember(self._lazy(ref, bits), name, offset) for name, ref, offset, bits in r[3]]
            return make(r[1], r[2], members, language=C)
        if kind == "enum":
            if r[3] is None:
                return prog.enum_type(r[1], language=C)
            return prog.enum_type(r[1], self.ref(r[2]), [drgn.TypeEnumerator(n, v) for n, v in r[3]], language=C)
        if kind == "ptr":
            return prog.pointer_type(self.ref(r[2]), r[1], language=C)
        if kind == "array":
            return prog.array_type(self.ref(r[2]), r[1], language=C)
        if kind == "typedef":
            return prog.typedef_type(r[1], self.ref(r[2]), language=C)
        if kind == "func":
            params = [drgn.TypeParameter(self._lazy(ref), name) for name, ref in r[2]]
            return prog.function_type(self.ref(r[1]), params, r[3], language=C)
        if kind == "int":
            return prog.int_type(r[1], r[2], r[3], language=C)
        if kind == "bool":
            return prog.bool_type(r[1], r[2], language=C)
        if kind == "float":
            return prog.float_type(r[1], r[2], language=C)
        if kind == "void":
            return prog.void_type(language=C)
        raise DebugInfoError(f"symbol pack: unknown type record kind {kind!r}")


class PackObjects:
    """Globals, functions and constants of one pack (``register_object_finder`` callback: :meth:`find`)."""

    def __init__(self, prog: drgn.Program, pack: dict[str, Any], types: PackTypes, offset: int,
                 base: int = KERNEL_MAP) -> None:
        self.objects: dict[str, list[Any]] = pack["objects"]
        self.types = types
        self.offset = offset
        self.base = base
        self.answered: dict[str, str] = {}

    def find(self, prog: drgn.Program, name: str, flags: drgn.FindObjectFlags, filename: str | None) -> drgn.Object | None:
        entry = self.objects.get(name)
        if entry is None or filename is not None:
            return None
        kind, ref, value = entry
        wanted = {"v": drgn.FindObjectFlags.VARIABLE, "f": drgn.FindObjectFlags.FUNCTION,
                  "c": drgn.FindObjectFlags.CONSTANT}[kind]
        if not flags & wanted:
            return None
        self.answered[name] = kind
        if kind == "c":
            return drgn.Object(prog, self.types.ref(ref), value=value)
        return drgn.Object(prog, self.types.ref(ref), address=relocate(value, self.offset, self.base))


@dataclass(frozen=True)
class _Symbols:
    index: drgn.SymbolIndex
    count: int


def pack_symbols(pack: dict[str, Any], offset: int, base: int = KERNEL_MAP) -> _Symbols:
    """The pack's symbol table, relocated, as a drgn ``SymbolIndex`` (a symbol finder)."""
    table = pack["symbols"]
    symbols, address = [], 0
    for name, delta, size, kind, binding in zip(table["names"], table["address_deltas"], table["sizes"],
                                                table["kinds"], table["bindings"]):
        address += delta
        symbols.append(drgn.Symbol(name, relocate(address, offset, base), size, _BINDINGS[binding], _KINDS[kind]))
    return _Symbols(drgn.SymbolIndex(symbols), len(symbols))
