"""Check BTF-built drgn types against the DWARF view of the same kernel.

Self-contained analysis is only as good as its types, so every type the
BTF finder builds can be compared, field by field, with the type drgn reads
from the DWARF vmlinux: kind, size, member names, bit offsets, bit-field
sizes, the spelled types of members, enumerators, array lengths, function
parameters.  Used by the tests and by ``bench/selfcontained_types.py``;
pure drgn ``Type`` comparisons, no memory reads.

Known, documented differences of BTF itself are reported with the prefix
``known:`` so a caller can count them apart: BTF stores ``T x[0]`` and
``T x[]`` alike, and pahole flattens multi-dimensional arrays
(``char [2][40]`` becomes ``char [80]``).
"""

from __future__ import annotations

import drgn

__all__ = ["KNOWN", "compare_types"]

KNOWN = "known:"
_SIZED = {drgn.TypeKind.INT, drgn.TypeKind.BOOL, drgn.TypeKind.FLOAT, drgn.TypeKind.STRUCT, drgn.TypeKind.UNION,
          drgn.TypeKind.POINTER}


def _spelling(t: drgn.Type) -> str:
    try:
        return t.type_name()
    except (ValueError, TypeError):
        return f"<{t.kind.name.lower()}>"


def _flat(t: drgn.Type) -> tuple[int | None, str]:
    """(total elements, innermost element spelling) of a possibly nested array."""
    count: int | None = 1
    while t.kind == drgn.TypeKind.ARRAY:
        count = None if t.length is None or count is None else count * t.length
        t = t.type
    return count, _spelling(t)


def _known_array_difference(btf: drgn.Type, dwarf: drgn.Type) -> bool:
    """``[]`` for ``[0]``, or a flattened multi-dimensional array (BTF limits)."""
    btf, dwarf = btf.unqualified(), dwarf.unqualified()
    if btf.kind == dwarf.kind == drgn.TypeKind.POINTER:
        return _known_array_difference(btf.type, dwarf.type)
    if not btf.kind == dwarf.kind == drgn.TypeKind.ARRAY:
        return False
    if btf.length is None and dwarf.length == 0:
        return _spelling(btf.type) == _spelling(dwarf.type)
    return btf.type.kind != drgn.TypeKind.ARRAY and _flat(btf) == _flat(dwarf)


def _is_anonymous_compound(t: drgn.Type) -> bool:
    u = t.unqualified()
    return u.kind in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION) and u.tag is None


def compare_types(btf: drgn.Type, dwarf: drgn.Type, where: str = "", depth: int = 0) -> list[str]:
    """Differences between a BTF-built type and its DWARF counterpart (empty if equal).

    Named member types are compared by spelling (``struct list_head``,
    ``long unsigned int``); anonymous struct/union members are compared
    recursively, so the whole layout of a named type is checked.
    """
    where = where or _spelling(dwarf)
    out: list[str] = []
    if btf.kind != dwarf.kind:
        return [f"{where}: kind {btf.kind.name} != {dwarf.kind.name}"]
    if btf.qualifiers != dwarf.qualifiers:
        out.append(f"{where}: qualifiers {btf.qualifiers!r} != {dwarf.qualifiers!r}")
    kind = dwarf.kind
    if kind in _SIZED and btf.is_complete() and dwarf.is_complete() and btf.size != dwarf.size:
        out.append(f"{where}: size {btf.size} != {dwarf.size}")
    if kind in (drgn.TypeKind.INT, drgn.TypeKind.BOOL, drgn.TypeKind.FLOAT):
        if btf.name != dwarf.name:
            out.append(f"{where}: name {btf.name!r} != {dwarf.name!r}")
        if kind == drgn.TypeKind.INT and btf.is_signed != dwarf.is_signed:
            out.append(f"{where}: signedness {btf.is_signed} != {dwarf.is_signed}")
    elif kind in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION):
        out += _compare_members(btf, dwarf, where, depth)
    elif kind == drgn.TypeKind.ENUM:
        if btf.is_complete() != dwarf.is_complete():
            out.append(f"{where}: complete {btf.is_complete()} != {dwarf.is_complete()}")
        elif dwarf.is_complete():
            if btf.type.size != dwarf.type.size or btf.type.is_signed != dwarf.type.is_signed:
                out.append(f"{where}: compatible type {_spelling(btf.type)} != {_spelling(dwarf.type)}")
            mine = [(e.name, e.value) for e in btf.enumerators]
            theirs = [(e.name, e.value) for e in dwarf.enumerators]
            if mine != theirs:
                out.append(f"{where}: enumerators differ ({len(mine)} vs {len(theirs)})")
    elif kind == drgn.TypeKind.TYPEDEF:
        if btf.name != dwarf.name or _spelling(btf.type) != _spelling(dwarf.type):
            out.append(f"{where}: typedef {btf.name} -> {_spelling(btf.type)} "
                       f"!= {dwarf.name} -> {_spelling(dwarf.type)}")
    elif kind == drgn.TypeKind.POINTER:
        if _spelling(btf.type) != _spelling(dwarf.type):
            out.append(f"{where}: points to {_spelling(btf.type)} != {_spelling(dwarf.type)}")
    elif kind == drgn.TypeKind.ARRAY:
        if _spelling(btf) != _spelling(dwarf):
            prefix = KNOWN + " " if _known_array_difference(btf, dwarf) else ""
            out.append(f"{prefix}{where}: array {_spelling(btf)} != {_spelling(dwarf)}")
    elif kind == drgn.TypeKind.FUNCTION:
        if _spelling(btf) != _spelling(dwarf):
            out.append(f"{where}: function {_spelling(btf)} != {_spelling(dwarf)}")
    return out


def _compare_members(btf: drgn.Type, dwarf: drgn.Type, where: str, depth: int) -> list[str]:
    if btf.is_complete() != dwarf.is_complete():
        return [f"{where}: complete {btf.is_complete()} != {dwarf.is_complete()}"]
    if not dwarf.is_complete():
        return []
    if len(btf.members) != len(dwarf.members):
        return [f"{where}: {len(btf.members)} members != {len(dwarf.members)}"]
    out: list[str] = []
    for mine, theirs in zip(btf.members, dwarf.members):
        at = f"{where}.{theirs.name or '<anonymous>'}"
        if (mine.name, mine.bit_offset, mine.bit_field_size) != (theirs.name, theirs.bit_offset, theirs.bit_field_size):
            out.append(f"{at}: (name, bit offset, bit field) {(mine.name, mine.bit_offset, mine.bit_field_size)} "
                       f"!= {(theirs.name, theirs.bit_offset, theirs.bit_field_size)}")
            continue
        if _is_anonymous_compound(theirs.type) and depth < 16:
            out += compare_types(mine.type, theirs.type, at, depth + 1)
        elif _spelling(mine.type) != _spelling(theirs.type):
            known = _known_array_difference(mine.type, theirs.type)
            out.append(f"{KNOWN + ' ' if known else ''}{at}: type {_spelling(mine.type)} != {_spelling(theirs.type)}")
    return out
