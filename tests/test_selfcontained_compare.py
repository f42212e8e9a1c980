"""The BTF-vs-DWARF type comparison finds real differences and tags BTF's own limits.

The real-kernel tests rely on ``compare_types`` returning nothing for equal
types, so these check, on hand-made drgn types, that it does report every
kind of difference it claims to check.
"""

from __future__ import annotations

import drgn
import pytest

from tsubaki_forensics.selfcontained.compare import KNOWN, compare_types
from tsubaki_forensics.selfcontained.verify import base_name


@pytest.fixture
def prog() -> drgn.Program:
    return drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))


def _struct(prog, members, size=16, tag="s"):
    uint = prog.int_type("unsigned int", 4, False)
    out = []
    for name, offset, *rest in members:
        type_ = rest[0] if rest and isinstance(rest[0], drgn.Type) else uint
        bits = rest[-1] if rest and isinstance(rest[-1], int) else None
        obj = drgn.Object(prog, type_, bit_field_size=bits) if bits else type_
        out.append(drgn.TypeMember(obj, name, offset))
    return prog.struct_type(tag, size, out)


def test_equal_types_have_no_differences(prog) -> None:
    a = _struct(prog, [("a", 0), ("b", 32, 3)])
    b = _struct(prog, [("a", 0), ("b", 32, 3)])
    assert compare_types(a, b) == []


@pytest.mark.parametrize(
    ("members", "size", "needle"),
    [
        ([("a", 0), ("b", 40, 3)], 16, "bit offset"),       # moved member
        ([("a", 0), ("b", 32, 4)], 16, "bit field"),         # other bit-field width
        ([("a", 0), ("c", 32, 3)], 16, "name"),              # renamed member
        ([("a", 0)], 16, "members"),                         # missing member
        ([("a", 0), ("b", 32, 3)], 24, "size"),              # other size
    ],
)
def test_every_layout_difference_is_reported(prog, members, size, needle) -> None:
    dwarf = _struct(prog, [("a", 0), ("b", 32, 3)])
    diffs = compare_types(_struct(prog, members, size), dwarf)
    assert diffs and not any(d.startswith(KNOWN) for d in diffs)
    assert any(needle in d for d in diffs)


def test_member_types_and_anonymous_members_are_compared(prog) -> None:
    long_ = prog.int_type("long", 8, True)
    anon_a = prog.union_type(None, 8, [drgn.TypeMember(long_, "x", 0)])
    anon_b = prog.union_type(None, 8, [drgn.TypeMember(long_, "y", 0)])
    a = prog.struct_type("s", 8, [drgn.TypeMember(anon_a, None, 0)])
    b = prog.struct_type("s", 8, [drgn.TypeMember(anon_b, None, 0)])
    assert any("s.<anonymous>.y" in d for d in compare_types(a, b))
    c = prog.struct_type("s", 8, [drgn.TypeMember(long_, "v", 0)])
    d = prog.struct_type("s", 8, [drgn.TypeMember(prog.pointer_type(long_), "v", 0)])
    assert any("type long != long *" in x for x in compare_types(c, d))


def test_enums_and_signedness(prog) -> None:
    uint, int_ = prog.int_type("unsigned int", 4, False), prog.int_type("int", 4, True)
    e1 = prog.enum_type("e", uint, [drgn.TypeEnumerator("A", 0), drgn.TypeEnumerator("B", 1)])
    e2 = prog.enum_type("e", uint, [drgn.TypeEnumerator("A", 0), drgn.TypeEnumerator("B", 2)])
    e3 = prog.enum_type("e", int_, [drgn.TypeEnumerator("A", 0), drgn.TypeEnumerator("B", 1)])
    assert compare_types(e1, e2) and compare_types(e1, e3) and not compare_types(e1, e1)
    assert compare_types(uint, prog.int_type("unsigned int", 4, True))


def test_btf_limits_are_tagged_known(prog) -> None:
    char = prog.int_type("char", 1, True)
    flat = prog.array_type(char, 80)
    nested = prog.array_type(prog.array_type(char, 40), 2)
    incomplete, zero = prog.array_type(char), prog.array_type(char, 0)
    for btf, dwarf in ((flat, nested), (incomplete, zero), (prog.pointer_type(incomplete), prog.pointer_type(zero))):
        a = prog.struct_type("s", 80, [drgn.TypeMember(btf, "m", 0)])
        b = prog.struct_type("s", 80, [drgn.TypeMember(dwarf, "m", 0)])
        diffs = compare_types(a, b)
        assert diffs and all(d.startswith(KNOWN) for d in diffs)
    wrong = prog.array_type(char, 79)  # not a flattening of [2][40]
    a = prog.struct_type("s", 80, [drgn.TypeMember(wrong, "m", 0)])
    b = prog.struct_type("s", 80, [drgn.TypeMember(nested, "m", 0)])
    assert not any(d.startswith(KNOWN) for d in compare_types(a, b))


def test_base_name_strips_only_gcc_clone_suffixes() -> None:
    assert base_name("__handle_sysrq.cold") == "__handle_sysrq"
    assert base_name("pvpanic_send_event.part.0") == "pvpanic_send_event"
    assert base_name("__alloc_pages_slowpath.constprop.0") == "__alloc_pages_slowpath"
    assert base_name("foo.isra.0.cold") == "foo"
    assert base_name("entry_SYSCALL_64_after_hwframe") == "entry_SYSCALL_64_after_hwframe"
    assert base_name("cold") == "cold"
