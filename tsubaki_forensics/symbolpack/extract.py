"""Build a symbol pack from a DWARF vmlinux, with drgn reading the DWARF.

The pack holds what the analyses look up (:mod:`.lookups`, recorded while
they ran on real crashes) and everything those types reach: the closure
of member, pointer, array, typedef and function-parameter types.  drgn
gives one ``Type`` per DWARF unit, so the same ``struct list_head`` appears
hundreds of times; types are merged by a key (named struct, union and enum
by kind, tag, size and member names; the rest by structure), which turns
~170,000 DWARF types reachable from ``struct task_struct`` into ~7,000.
Objects keep their link-time address (the reader adds ``KERNELOFFSET``);
symbols are the ELF symbol table's functions, objects and labels, as
kallsyms would list them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import drgn

from ..drgn_bridge.debuginfo import elf_arch, read_build_id
from ..drgn_bridge.program import ARCHITECTURES
from ..errors import DebugInfoError
from .lookups import LOOKUP_OBJECTS, LOOKUP_TYPES

__all__ = ["build_pack", "program_for_vmlinux", "TypeEncoder"]

K = drgn.TypeKind
_COMPOUND = {K.STRUCT: "struct", K.UNION: "union", K.CLASS: "class"}
_SYMBOL_KINDS = {drgn.SymbolKind.FUNC: "f", drgn.SymbolKind.OBJECT: "o", drgn.SymbolKind.UNKNOWN: "u",
                 drgn.SymbolKind.TLS: "t"}
_BINDINGS = {drgn.SymbolBinding.LOCAL: "l", drgn.SymbolBinding.GLOBAL: "g", drgn.SymbolBinding.WEAK: "w",
             drgn.SymbolBinding.UNIQUE: "u", drgn.SymbolBinding.UNKNOWN: "?"}


def program_for_vmlinux(vmlinux: Path) -> tuple[drgn.Program, str]:
    """A drgn program that reads only the vmlinux's DWARF (no memory), and its build id.

    drgn accepts a kernel's debug info only for a kernel program, so this one
    gets a minimal VMCOREINFO of that build with ``KERNELOFFSET=0``: every
    address is the link-time one.
    """
    build_id = read_build_id(vmlinux)
    if not build_id:
        raise DebugInfoError(f"{vmlinux} has no build id (not a kernel vmlinux?)")
    machine = ARCHITECTURES.get(elf_arch(vmlinux) or "")
    if machine is None:
        raise DebugInfoError(f"{vmlinux} is a {elf_arch(vmlinux) or 'non-ELF'} file; symbol packs are cut "
                             f"from x86_64 and aarch64 kernels")
    platform = drgn.Platform(machine, drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    prog = drgn.Program(platform)
    info = (f"OSRELEASE=unknown\nPAGESIZE=4096\nBUILD-ID={build_id}\nSYMBOL(swapper_pg_dir)=ffffffff82000000\n"
            "NUMBER(phys_base)=0\nKERNELOFFSET=0\n")
    prog.set_linux_kernel_custom(info.encode(), False)
    # Only the kernel module, from this file: no search for loadable modules
    # (there is no memory to list them from).
    kernel = prog.main_module("kernel", create=True)
    try:
        kernel.try_file(str(vmlinux))
    except (drgn.MissingDebugInfoError, OSError, ValueError) as e:
        raise DebugInfoError(f"drgn cannot read {vmlinux}: {e}") from e
    if kernel.debug_file_status != drgn.ModuleFileStatus.HAVE:
        raise DebugInfoError(f"{vmlinux} is not the debug file of build id {build_id} (no DWARF?)")
    try:
        prog.type("struct task_struct")
    except LookupError as e:
        raise DebugInfoError(f"{vmlinux} has no DWARF type information (struct task_struct not found)") from e
    return prog, build_id


class TypeEncoder:
    """drgn types -> pack type records (a list; a reference is ``id * 16 + qualifiers``)."""

    def __init__(self) -> None:
        self.records: list[list[Any]] = []
        self._by_key: dict[Any, int] = {}
        self._by_ptr: dict[int, int] = {}
        self._keys: dict[int, Any] = {}
        self._todo: list[tuple[int, drgn.Type]] = []

    def ref(self, t: drgn.Type) -> int:
        """A reference to ``t`` (queued for encoding if new)."""
        return self._id(t.unqualified()) * 16 + t.qualifiers.value

    def run(self) -> None:
        """Encode every queued type and everything it reaches."""
        while self._todo:
            type_id, t = self._todo.pop()
            self.records[type_id] = self._record(t)

    def _id(self, t: drgn.Type) -> int:
        ptr = t._ptr
        found = self._by_ptr.get(ptr)
        if found is None:
            key = self._key(t)
            found = self._by_key.get(key)
            if found is None:
                found = self._by_key[key] = len(self.records)
                self.records.append([])
                self._todo.append((found, t))
            self._by_ptr[ptr] = found
        return found

    def _key(self, t: drgn.Type) -> Any:
        """Equal for the copies of one type in several DWARF units (see the module docstring)."""
        ptr = t._ptr
        key = self._keys.get(ptr)
        if key is None:
            key = self._keys[ptr] = self._make_key(t)
        return key

    def _qkey(self, t: drgn.Type) -> Any:
        return (self._key(t.unqualified()), t.qualifiers.value)

    def _make_key(self, t: drgn.Type) -> Any:
        kind = t.kind
        if kind in _COMPOUND:
            complete = t.is_complete()
            if t.tag is not None:  # shallow: a named type is known by its name and layout
                return (kind.value, t.tag, t.size if complete else None,
                        tuple(m.name for m in t.members) if complete else None)
            return (kind.value, None, t.size, tuple((m.name, m.bit_offset, m.bit_field_size, self._qkey(m.type))
                                                    for m in t.members))
        if kind == K.ENUM:
            return (kind.value, t.tag, tuple((e.name, e.value) for e in t.enumerators) if t.is_complete() else None)
        if kind in (K.POINTER, K.TYPEDEF):
            return (kind.value, t.size if kind == K.POINTER else t.name, self._qkey(t.type))
        if kind == K.ARRAY:
            return (kind.value, t.length, self._qkey(t.type))
        if kind == K.FUNCTION:
            return (kind.value, self._qkey(t.type), tuple(self._qkey(p.type) for p in t.parameters), t.is_variadic)
        if kind in (K.INT, K.BOOL, K.FLOAT):
            return (kind.value, t.name, t.size, getattr(t, "is_signed", None))
        return (kind.value,)

    def _record(self, t: drgn.Type) -> list[Any]:
        kind = t.kind
        if kind in _COMPOUND:
            if not t.is_complete():
                return [_COMPOUND[kind], t.tag, None, None]
            members = [[m.name, self.ref(m.type), m.bit_offset, m.bit_field_size or 0] for m in t.members]
            return [_COMPOUND[kind], t.tag, t.size, members]
        if kind == K.ENUM:
            if not t.is_complete():
                return ["enum", t.tag, None, None]
            return ["enum", t.tag, self.ref(t.type), [[e.name, e.value] for e in t.enumerators]]
        if kind == K.POINTER:
            return ["ptr", t.size, self.ref(t.type)]
        if kind == K.ARRAY:
            return ["array", t.length, self.ref(t.type)]
        if kind == K.TYPEDEF:
            return ["typedef", t.name, self.ref(t.type)]
        if kind == K.FUNCTION:
            return ["func", self.ref(t.type), [[p.name, self.ref(p.type)] for p in t.parameters], t.is_variadic]
        if kind == K.INT:
            return ["int", t.name, t.size, t.is_signed]
        if kind == K.BOOL:
            return ["bool", t.name, t.size]
        if kind == K.FLOAT:
            return ["float", t.name, t.size]
        if kind == K.VOID:
            return ["void"]
        raise DebugInfoError(f"cannot pack a {kind.name} type ({t})")


def _names(records: list[list[Any]]) -> tuple[dict[str, int], list[str]]:
    """Lookup names (``struct task_struct``, ``u64``) -> type id; names defined several ways."""
    names: dict[str, int] = {}
    ambiguous: set[str] = set()
    prefix = {"struct": "struct ", "union": "union ", "class": "class ", "enum": "enum "}
    for type_id, r in enumerate(records):
        kind = r[0]
        if kind in prefix and r[1]:
            name = prefix[kind] + r[1]
        elif kind in ("typedef", "int", "bool", "float") and r[1]:
            name = r[1]
        else:
            continue
        old = names.get(name)
        if old is None:
            names[name] = type_id
        elif kind in prefix and records[old][2] is None and r[2] is not None:
            names[name] = type_id  # a complete definition wins over a declaration
        elif kind in prefix and r[2] is not None:
            ambiguous.add(name)
    return names, sorted(ambiguous)


def _lookup_type(prog: drgn.Program, name: str) -> drgn.Type | None:
    try:
        return prog.type(name)
    except (LookupError, SyntaxError):
        return None


def build_pack(vmlinux: Path, extra_types: Iterable[str] = (), extra_objects: Iterable[str] = ()) -> dict[str, Any]:
    """The pack dict for ``vmlinux`` (see :mod:`.fileformat` and docs/SELFCONTAINED.md).

    :param extra_types: more type names to include (``struct foo``, ``foo_t``).
    :param extra_objects: more global variables, functions or constants.
    :raises DebugInfoError: not a vmlinux with DWARF.
    """
    prog, build_id = program_for_vmlinux(Path(vmlinux))
    enc = TypeEncoder()
    wanted_types = sorted(set(LOOKUP_TYPES) | set(extra_types))
    wanted_objects = sorted(set(LOOKUP_OBJECTS) | set(extra_objects))
    missing_types, missing_objects = [], []
    for name in wanted_types:
        t = _lookup_type(prog, name)
        if t is None:
            missing_types.append(name)
        else:
            enc.ref(t)
    objects: dict[str, list[Any]] = {}
    for name in wanted_objects:
        try:
            obj = prog.object(name)
        except LookupError:
            missing_objects.append(name)
            continue
        ref = enc.ref(obj.type_)
        if obj.address_ is not None:
            kind = "f" if obj.type_.kind == K.FUNCTION else "v"
            objects[name] = [kind, ref, obj.address_]
        else:
            objects[name] = ["c", ref, obj.value_()]
    enc.run()
    names, ambiguous = _names(enc.records)
    syms = sorted((s for s in prog.symbols() if s.kind in _SYMBOL_KINDS and s.name), key=lambda s: s.address)
    addresses, last = [], 0
    for s in syms:
        addresses.append(s.address - last)
        last = s.address
    return {
        "kernel": {"build_id": build_id, "arch": "x86_64", "vmlinux": Path(vmlinux).name},
        "types": enc.records,
        "names": names,
        "ambiguous": ambiguous,
        "objects": objects,
        "symbols": {
            "names": [s.name for s in syms],
            "address_deltas": addresses,
            "sizes": [s.size for s in syms],
            "kinds": "".join(_SYMBOL_KINDS[s.kind] for s in syms),
            "bindings": "".join(_BINDINGS[s.binding] for s in syms),
        },
        "requested": {"types": wanted_types, "objects": wanted_objects},
        "not_in_vmlinux": {"types": missing_types, "objects": missing_objects},
    }
