"""drgn types built from the kernel's BTF, served through a type finder.

drgn 0.3.0 reads types only from DWARF, but it asks registered type finders
(``prog.register_type_finder``) for any name its DWARF index does not know.
:class:`BtfTypes` answers them from a :class:`~.btf.Btf`: one drgn
``Type`` per BTF id, built on first use and cached; struct and union member
types are lazy, so recursive structures (``struct task_struct`` points to
itself) cost nothing until a member is touched.

Known differences from the DWARF view, all reported by
:func:`~tsubaki_forensics.selfcontained.attach_selfcontained`:

- BTF stores ``T x[0]`` and the flexible ``T x[]`` the same way (0
  elements); both become an incomplete array here, as DWARF gives ``[]``.
- BTF has no source locations, no inline-function records and no
  enumerators of enums that pahole dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import drgn

from .btf import Btf, BtfKind, BtfType, IntEncoding

__all__ = ["BtfTypes"]

_QUALIFIERS = {
    BtfKind.CONST: drgn.Qualifiers.CONST,
    BtfKind.VOLATILE: drgn.Qualifiers.VOLATILE,
    BtfKind.RESTRICT: drgn.Qualifiers.RESTRICT,
}
# drgn.TypeKind asked by the finder -> the BTF kinds that can answer it.
_FINDER_KINDS = {
    drgn.TypeKind.STRUCT: (BtfKind.STRUCT, BtfKind.FWD),
    drgn.TypeKind.UNION: (BtfKind.UNION, BtfKind.FWD),
    drgn.TypeKind.ENUM: (BtfKind.ENUM, BtfKind.ENUM64),
    drgn.TypeKind.TYPEDEF: (BtfKind.TYPEDEF,),
    drgn.TypeKind.INT: (BtfKind.INT,),
    drgn.TypeKind.BOOL: (BtfKind.INT,),
    drgn.TypeKind.FLOAT: (BtfKind.FLOAT,),
}
# The integer type an enum is compatible with, by (size, signed); BTF keeps
# only the size and signedness, so these are the C names DWARF gives them.
_ENUM_INT_NAMES = {
    (1, False): "unsigned char", (1, True): "signed char",
    (2, False): "unsigned short", (2, True): "short",
    (4, False): "unsigned int", (4, True): "int",
    (8, False): "unsigned long", (8, True): "long",
}
C = drgn.Language.C


class BtfTypes:
    """Builds and caches drgn types for one program from one BTF blob.

    Use :meth:`find` as the type finder: ``prog.register_type_finder("btf",
    types.find, enable_index=-1)``.
    """

    def __init__(self, prog: drgn.Program, btf: Btf) -> None:
        self.prog = prog
        self.btf = btf
        self._cache: dict[int, drgn.Type] = {}
        self.lookups = 0
        self.misses: set[str] = set()

    # -- the finder ------------------------------------------------------
    def find(self, prog: drgn.Program, kinds: drgn.TypeKindSet, name: str, filename: str | None) -> drgn.Type | None:
        """``register_type_finder`` callback: the BTF type called ``name``.

        BTF has no file names, so ``filename`` (drgn's ``"type@file"`` syntax)
        can never be honoured: a lookup naming a file is not answered.
        """
        if filename is not None:
            return None
        self.lookups += 1
        for kind in kinds:
            type_id = self.lookup(kind, name)
            if type_id is not None:
                return self.build(type_id)
        self.misses.add(name)
        return None

    def lookup(self, kind: drgn.TypeKind, name: str) -> int | None:
        """The BTF id that best answers ``kind name``: the first complete definition,
        else a forward declaration (an incomplete type)."""
        found = self.candidates(kind, name)
        if found:
            return found[0]
        for type_id in self.btf.ids(name, *_FINDER_KINDS.get(kind, ())):
            t = self.btf.type(type_id)
            if t.kind == BtfKind.FWD and (kind == drgn.TypeKind.UNION) == t.kind_flag:
                return type_id
            if t.kind in (BtfKind.ENUM, BtfKind.ENUM64) and kind == drgn.TypeKind.ENUM:
                return type_id  # an enum declared but never defined
        return None

    def candidates(self, kind: drgn.TypeKind, name: str) -> list[int]:
        """Every complete BTF definition of ``kind name`` (more than one: the name is ambiguous)."""
        found = []
        for type_id in self.btf.ids(name, *_FINDER_KINDS.get(kind, ())):
            t = self.btf.type(type_id)
            if t.kind == BtfKind.FWD or (t.kind in (BtfKind.ENUM, BtfKind.ENUM64) and not t.vlen):
                continue
            if t.kind == BtfKind.INT and (kind == drgn.TypeKind.BOOL) != bool(t.encoding & IntEncoding.BOOL):
                continue
            found.append(type_id)
        return found

    def ambiguous(self) -> list[str]:
        """``struct``/``union``/``enum`` names with several different BTF definitions.

        BTF deduplication keeps one definition per distinct layout, so two
        definitions of one name are two different types (``struct irq_info``
        of two drivers).  The finder serves the first; DWARF lookups also pick
        one of them, and only DWARF can tell them apart by file (``type@file``).
        """
        names = []
        for prefix, btf_kind in (("struct", BtfKind.STRUCT), ("union", BtfKind.UNION), ("enum", BtfKind.ENUM)):
            seen: dict[str, int] = {}
            for type_id in self.btf.iter_kind(btf_kind):
                t = self.btf.type(type_id)
                if t.name and t.vlen:
                    seen[t.name] = seen.get(t.name, 0) + 1
            names += [f"{prefix} {n}" for n, count in seen.items() if count > 1]
        return sorted(names)

    # -- building --------------------------------------------------------
    def build(self, type_id: int) -> drgn.Type:
        """The drgn type for BTF id ``type_id`` (0 is ``void``)."""
        if type_id == 0:
            return self.prog.void_type(language=C)
        cached = self._cache.get(type_id)
        if cached is None:
            cached = self._cache[type_id] = self._build(self.btf.type(type_id))
        return cached

    def _lazy(self, type_id: int, bitfield_size: int | None = None) -> Callable[[], drgn.Type | drgn.Object]:
        if bitfield_size is None:
            return lambda: self.build(type_id)
        return lambda: drgn.Object(self.prog, self.build(type_id), bit_field_size=bitfield_size)

    def _build(self, t: BtfType) -> drgn.Type:
        prog = self.prog
        kind = t.kind
        if kind == BtfKind.INT:
            if t.encoding & IntEncoding.BOOL:
                return prog.bool_type(t.name or "_Bool", t.size, language=C)
            return prog.int_type(t.name or f"int{t.size * 8}", t.size, t.is_signed, language=C)
        if kind == BtfKind.FLOAT:
            return prog.float_type(t.name or f"float{t.size * 8}", t.size, language=C)
        if kind == BtfKind.PTR:
            return prog.pointer_type(self.build(t.ref), language=C)
        if kind == BtfKind.ARRAY:
            length = t.nelems or None  # [0] and [] are both 0 in BTF
            return prog.array_type(self.build(t.elem_type), length, language=C)
        if kind in (BtfKind.STRUCT, BtfKind.UNION):
            members = [drgn.TypeMember(self._lazy(m.type_id, m.bitfield_size), m.name, m.bit_offset) for m in t.members]
            make = prog.struct_type if kind == BtfKind.STRUCT else prog.union_type
            return make(t.name, t.size, members, language=C)
        if kind in (BtfKind.ENUM, BtfKind.ENUM64):
            if not t.vlen:
                return prog.enum_type(t.name, language=C)
            compatible = prog.int_type(_ENUM_INT_NAMES[(t.size, t.is_signed)], t.size, t.is_signed, language=C)
            enumerators = [drgn.TypeEnumerator(e.name, e.value) for e in t.enumerators]
            return prog.enum_type(t.name, compatible, enumerators, language=C)
        if kind == BtfKind.FWD:
            return self._forward(t)
        if kind == BtfKind.TYPEDEF:
            return prog.typedef_type(t.name, self.build(t.ref), language=C)
        if kind in _QUALIFIERS:
            inner = self.build(t.ref)
            return inner.qualified(inner.qualifiers | _QUALIFIERS[kind])
        if kind == BtfKind.TYPE_TAG:
            return self.build(t.ref)  # an annotation (e.g. __user): no C type of its own
        if kind == BtfKind.FUNC:
            return self.build(t.ref)
        if kind == BtfKind.FUNC_PROTO:
            variadic = t.is_variadic
            params = t.params[:-1] if variadic else t.params
            parameters = [drgn.TypeParameter(self._lazy(p.type_id), p.name) for p in params]
            return prog.function_type(self.build(t.ref), parameters, variadic, language=C)
        raise TypeError(f"BTF type {t.id} is a {kind.name}, which is not a C type")

    def _forward(self, t: BtfType) -> drgn.Type:
        """A forward declaration: the complete type of that name, if BTF has one."""
        kind = drgn.TypeKind.UNION if t.kind_flag else drgn.TypeKind.STRUCT
        if t.name:
            complete = self.lookup(kind, t.name)
            if complete is not None and self.btf.kind(complete) != BtfKind.FWD:
                return self.build(complete)
        make = self.prog.union_type if t.kind_flag else self.prog.struct_type
        return make(t.name, language=C)
