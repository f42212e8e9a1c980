"""The BTF reader and the drgn types built from it, on small BTF blobs.

The blobs are written by :class:`BtfWriter` below (from
Documentation/bpf/btf.rst), so every case says what it encodes; no binary is
committed.  Real-kernel checks are in test_selfcontained_real.py.
"""

from __future__ import annotations

import struct

import drgn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import FormatError
from tsubaki_forensics.selfcontained.btf import Btf, BtfError, BtfKind, IntEncoding
from tsubaki_forensics.selfcontained.objects import BtfObjects
from tsubaki_forensics.selfcontained.types import BtfTypes


class BtfWriter:
    """Writes BTF records one by one; each ``add_*`` returns the new type id."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.records: list[bytes] = []

    def s(self, text: str | None) -> int:
        if not text:
            return 0
        self.strings += text.encode() + b"\0"
        return len(self.strings) - len(text) - 1

    def _add(self, name: str | None, kind: BtfKind, vlen: int, size_or_type: int, trailer: bytes = b"",
             kflag: bool = False) -> int:
        info = (int(kflag) << 31) | (int(kind) << 24) | vlen
        self.records.append(struct.pack("<III", self.s(name), info, size_or_type) + trailer)
        return len(self.records)

    def int_(self, name: str, size: int, encoding: int = 0, bits: int | None = None) -> int:
        return self._add(name, BtfKind.INT, 0, size, struct.pack("<I", encoding << 24 | (bits or size * 8)))

    def ref(self, kind: BtfKind, target: int, name: str | None = None) -> int:
        return self._add(name, kind, 0, target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self._add(None, BtfKind.ARRAY, 0, 0, struct.pack("<III", elem, index, nelems))

    def compound(self, kind: BtfKind, name: str | None, size: int, members: list[tuple], kflag: bool = False) -> int:
        trailer = b""
        for m_name, m_type, bit_offset, *bits in members:
            offset = (bits[0] << 24 | bit_offset) if kflag else bit_offset
            trailer += struct.pack("<III", self.s(m_name), m_type, offset)
        return self._add(name, kind, len(members), size, trailer, kflag)

    def enum(self, name: str | None, size: int, values: list[tuple[str, int]], signed: bool = False) -> int:
        trailer = b"".join(struct.pack("<Ii", self.s(n), v) for n, v in values)
        return self._add(name, BtfKind.ENUM, len(values), size, trailer, signed)

    def enum64(self, name: str, values: list[tuple[str, int]], signed: bool = False) -> int:
        trailer = b"".join(struct.pack("<III", self.s(n), v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF) for n, v in values)
        return self._add(name, BtfKind.ENUM64, len(values), 8, trailer, signed)

    def fwd(self, name: str, union: bool = False) -> int:
        return self._add(name, BtfKind.FWD, 0, 0, kflag=union)

    def func_proto(self, ret: int, params: list[tuple[str | None, int]]) -> int:
        trailer = b"".join(struct.pack("<II", self.s(n), t) for n, t in params)
        return self._add(None, BtfKind.FUNC_PROTO, len(params), ret, trailer)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self._add(name, BtfKind.FUNC, linkage, proto)

    def var(self, name: str, type_id: int, linkage: int = 1) -> int:
        return self._add(name, BtfKind.VAR, 0, type_id, struct.pack("<I", linkage))

    def datasec(self, name: str, size: int, vars_: list[tuple[int, int, int]]) -> int:
        return self._add(name, BtfKind.DATASEC, len(vars_), size, b"".join(struct.pack("<III", *v) for v in vars_))

    def float_(self, name: str, size: int) -> int:
        return self._add(name, BtfKind.FLOAT, 0, size)

    def decl_tag(self, name: str, target: int, component: int) -> int:
        return self._add(name, BtfKind.DECL_TAG, 0, target, struct.pack("<i", component))

    def raw(self, kind_number: int) -> None:
        self.records.append(struct.pack("<III", 0, kind_number << 24, 0))

    def bytes(self, version: int = 1, magic: int = 0xEB9F, hdr_extra: bytes = b"") -> bytes:
        types = b"".join(self.records)
        hdr_len = 24 + len(hdr_extra)
        header = struct.pack("<HBBIIIII", magic, version, 0, hdr_len, 0, len(types), len(types), len(self.strings))
        return header + hdr_extra + types + bytes(self.strings)


def kernelish() -> tuple[BtfWriter, dict[str, int]]:
    """A miniature kernel: the shapes drgn helpers rely on."""
    w = BtfWriter()
    ids = {}
    ids["int"] = w.int_("int", 4, IntEncoding.SIGNED)
    ids["uint"] = w.int_("unsigned int", 4)
    ids["ulong"] = w.int_("long unsigned int", 8)
    ids["char"] = w.int_("char", 1, IntEncoding.SIGNED | IntEncoding.CHAR)
    ids["bool"] = w.int_("_Bool", 1, IntEncoding.BOOL)
    ids["task_ptr"] = w.ref(BtfKind.PTR, 0)  # patched below: points to struct task_struct
    ids["comm"] = w.array(ids["char"], ids["int"], 16)
    ids["flex"] = w.array(ids["ulong"], ids["int"], 0)
    ids["task"] = w.compound(BtfKind.STRUCT, "task_struct", 48, [
        ("__state", ids["uint"], 0, 0),
        ("on_cpu", ids["uint"], 32, 1),
        ("in_iowait", ids["uint"], 33, 1),
        ("parent", ids["task_ptr"], 64, 0),
        ("comm", ids["comm"], 128, 0),
        (None, 0, 256, 0),  # patched: anonymous union
        ("tail", ids["flex"], 384, 0),
    ], kflag=True)
    ids["anon"] = w.compound(BtfKind.UNION, None, 8, [("a", ids["ulong"], 0), ("b", ids["int"], 0)])
    ids["typedef"] = w.ref(BtfKind.TYPEDEF, ids["ulong"], "pid_t_ish")
    ids["const"] = w.ref(BtfKind.CONST, ids["typedef"])
    ids["volatile_const"] = w.ref(BtfKind.VOLATILE, ids["const"])
    ids["restrict_ptr"] = w.ref(BtfKind.RESTRICT, w.ref(BtfKind.PTR, ids["char"]))
    ids["pid_type"] = w.enum("pid_type", 4, [("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1), ("PIDTYPE_MAX", 4)])
    ids["signed_enum"] = w.enum("rpm_status", 4, [("RPM_INVALID", -1), ("RPM_ACTIVE", 0)], signed=True)
    ids["enum64"] = w.enum64("big", [("BIG_MASK", 0xFFFFF << 32), ("BIG_NEG", -2)], signed=True)
    ids["fwd"] = w.fwd("task_struct")
    ids["fwd_only"] = w.fwd("opaque")
    ids["proto"] = w.func_proto(ids["int"], [("fmt", w.ref(BtfKind.PTR, ids["const"])), (None, 0)])
    ids["func"] = w.func("printk", ids["proto"])
    ids["var"] = w.var("runqueues", ids["task"])
    ids["sec"] = w.datasec(".data..percpu", 4096, [(ids["var"], 128, 48)])
    ids["float"] = w.float_("double", 8)
    ids["tag"] = w.decl_tag("kfunc", ids["func"], -1)
    ids["type_tag"] = w._add("user", BtfKind.TYPE_TAG, 0, ids["char"])
    # patch the pointer and the anonymous member now that their targets exist
    w.records[ids["task_ptr"] - 1] = struct.pack("<III", 0, BtfKind.PTR << 24, ids["task"])
    rec = bytearray(w.records[ids["task"] - 1])
    struct.pack_into("<III", rec, 12 + 12 * 5, 0, ids["anon"], 256)
    w.records[ids["task"] - 1] = bytes(rec)
    return w, ids


@pytest.fixture
def prog() -> drgn.Program:
    return drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))


# -- the reader -------------------------------------------------------------

def test_reader_decodes_every_kind() -> None:
    w, ids = kernelish()
    btf = Btf(w.bytes())
    assert len(btf) == len(w.records) + 1
    t = btf.type(ids["int"])
    assert (t.kind, t.name, t.size, t.is_signed, t.int_bits) == (BtfKind.INT, "int", 4, True, 32)
    assert btf.type(ids["char"]).encoding == IntEncoding.SIGNED | IntEncoding.CHAR
    task = btf.type(ids["task"])
    assert task.kind_flag
    assert [m.name for m in task.members] == ["__state", "on_cpu", "in_iowait", "parent", "comm", None, "tail"]
    assert [(m.bit_offset, m.bitfield_size) for m in task.members[:3]] == [(0, None), (32, 1), (33, 1)]
    arr = btf.type(ids["comm"])
    assert (arr.elem_type, arr.index_type, arr.nelems) == (ids["char"], ids["int"], 16)
    assert [(e.name, e.value) for e in btf.type(ids["pid_type"]).enumerators][-1] == ("PIDTYPE_MAX", 4)
    assert [e.value for e in btf.type(ids["signed_enum"]).enumerators] == [-1, 0]
    assert [e.value for e in btf.type(ids["enum64"]).enumerators] == [0xFFFFF << 32, -2]
    proto = btf.type(ids["proto"])
    assert proto.is_variadic and proto.params[0].name == "fmt" and proto.ref == ids["int"]
    assert btf.type(ids["func"]).linkage == 1 and btf.type(ids["func"]).ref == ids["proto"]
    assert btf.type(ids["var"]).linkage == 1
    assert btf.type(ids["sec"]).secinfos[0].offset == 128
    assert btf.type(ids["tag"]).component_idx == -1
    assert btf.type(ids["fwd"]).kind == BtfKind.FWD and btf.type(ids["fwd"]).ref is None
    assert btf.ids("task_struct", BtfKind.STRUCT) == [ids["task"]]
    assert btf.ids("task_struct") == [ids["task"], ids["fwd"]]


def test_unsigned_enum_values_above_int_max() -> None:
    w = BtfWriter()
    e = w.enum("flags", 4, [("TOP", -0x80000000)])  # stored as the u32 0x80000000
    assert Btf(w.bytes()).type(e).enumerators[0].value == 0x80000000


def test_header_extension_is_skipped() -> None:
    w, ids = kernelish()
    btf = Btf(w.bytes(hdr_extra=bytes(8)))  # newer kernels add layout_off/layout_len
    assert btf.type(ids["task"]).name == "task_struct"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:10], "shorter than its"),
        (lambda b: b"\x00\x00" + b[2:], "bad BTF magic"),
        (lambda b: b[:2] + b"\x02" + b[3:], "BTF version 2"),
        (lambda b: b[:-5], "runs past the blob"),
    ],
)
def test_bad_headers_are_clear_errors(mutate, message) -> None:
    w, _ = kernelish()
    with pytest.raises(BtfError, match=message):
        Btf(mutate(w.bytes()))


def test_unknown_kind_and_truncated_record() -> None:
    w = BtfWriter()
    w.raw(31)
    with pytest.raises(BtfError, match="unknown BTF kind 31"):
        Btf(w.bytes())
    w = BtfWriter()
    w.int_("int", 4)
    blob = bytearray(w.bytes())
    struct.pack_into("<I", blob, 12, 14)  # type_len cuts the INT's trailer
    with pytest.raises(BtfError, match="truncated"):
        Btf(bytes(blob))


def test_errors_are_format_errors_and_ids_are_checked() -> None:
    w, _ = kernelish()
    btf = Btf(w.bytes())
    with pytest.raises(FormatError, match="does not exist"):
        btf.type(len(btf))
    with pytest.raises(BtfError, match="outside the string section"):
        btf.string(10**6)


# -- drgn types -------------------------------------------------------------

def test_struct_with_bitfields_recursion_and_anonymous_union(prog) -> None:
    w, ids = kernelish()
    types = BtfTypes(prog, Btf(w.bytes()))
    prog.register_type_finder("btf", types.find, enable_index=-1)
    task = prog.type("struct task_struct")
    assert task.size == 48
    on_cpu = task.member("on_cpu")
    assert (on_cpu.bit_offset, on_cpu.bit_field_size, on_cpu.type.type_name()) == (32, 1, "unsigned int")
    assert task.member("parent").type.type.type_name() == "struct task_struct"  # lazy recursion
    assert task.member("parent").type.type.size == 48
    assert task.member("comm").type.type_name() == "char [16]"
    assert task.member("b").offset == 32  # through the anonymous union
    assert task.member("tail").type.length is None  # [0] in BTF: incomplete, like DWARF's []
    assert types.build(ids["task"]) is types.build(ids["task"])  # built once, cached


def test_base_types_typedefs_qualifiers(prog) -> None:
    w, ids = kernelish()
    types = BtfTypes(prog, Btf(w.bytes()))
    prog.register_type_finder("btf", types.find, enable_index=-1)
    assert prog.type("unsigned long").size == 8 and not prog.type("unsigned long").is_signed
    assert prog.type("_Bool").kind == drgn.TypeKind.BOOL
    assert prog.type("char").is_signed
    assert prog.type("double").kind == drgn.TypeKind.FLOAT
    assert prog.type("pid_t_ish").type.type_name() == "unsigned long"
    vc = types.build(ids["volatile_const"])
    assert vc.qualifiers == drgn.Qualifiers.CONST | drgn.Qualifiers.VOLATILE and vc.kind == drgn.TypeKind.TYPEDEF
    assert types.build(ids["restrict_ptr"]).qualifiers == drgn.Qualifiers.RESTRICT
    assert types.build(ids["type_tag"]).type_name() == "char"  # tags are annotations, not types


def test_enums_forwards_functions(prog) -> None:
    w, ids = kernelish()
    types = BtfTypes(prog, Btf(w.bytes()))
    prog.register_type_finder("btf", types.find, enable_index=-1)
    pid_type = prog.type("enum pid_type")
    assert [(e.name, e.value) for e in pid_type.enumerators][0] == ("PIDTYPE_PID", 0)
    assert pid_type.type.type_name() == "unsigned int"
    assert prog.type("enum rpm_status").type.type_name() == "int"
    assert [e.value for e in prog.type("enum big").enumerators] == [0xFFFFF << 32, -2]
    assert types.build(ids["fwd"]).size == 48  # a forward declaration resolves to the definition
    assert not prog.type("struct opaque").is_complete()
    proto = types.build(ids["func"])
    assert proto.kind == drgn.TypeKind.FUNCTION and proto.is_variadic
    assert proto.parameters[0].name == "fmt" and proto.parameters[0].type.type_name() == "const pid_t_ish *"
    with pytest.raises(TypeError, match="not a C type"):
        types.build(ids["var"])
    assert types.find(prog, drgn.TypeKindSet({drgn.TypeKind.STRUCT}), "task_struct", "sched.c") is None


def test_objects_from_btf_and_kallsyms(prog) -> None:
    w, ids = kernelish()
    btf = Btf(w.bytes())
    types = BtfTypes(prog, btf)
    symbols = drgn.SymbolIndex([
        drgn.Symbol("runqueues", 0x31980, 48, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
        drgn.Symbol("printk", 0xFFFFFFFF81000000, 64, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.FUNC),
        drgn.Symbol("unknown_global", 0xFFFFFFFF82000000, 8, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
    ])
    objects = BtfObjects(prog, btf, types, symbols)
    prog.register_type_finder("btf", types.find, enable_index=-1)
    prog.register_object_finder("btf", objects.find, enable_index=-1)
    rq = prog.object("runqueues")
    assert rq.address_ == 0x31980 and rq.type_.type_name() == "struct task_struct"
    assert prog["PIDTYPE_MAX"].value_() == 4 and prog["RPM_INVALID"].value_() == -1
    assert prog.function("printk").address_ == 0xFFFFFFFF81000000
    with pytest.raises(LookupError):
        prog["unknown_global"]  # in kallsyms, but its type is unknown: never guessed
    assert objects.answered == {"runqueues": "btf-var", "PIDTYPE_MAX": "btf-enum", "RPM_INVALID": "btf-enum",
                                "printk": "btf-func"}


# -- property: any struct layout survives writer -> reader -> drgn ----------

member_strategy = st.lists(
    st.tuples(st.integers(0, 4000), st.one_of(st.none(), st.integers(1, 31))), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(member_strategy, st.booleans())
def test_struct_layouts_roundtrip(members, union) -> None:
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    w = BtfWriter()
    uint = w.int_("unsigned int", 4)
    kflag = any(bits for _, bits in members)
    spec = [(f"m{i}", uint, offset, bits or 0) for i, (offset, bits) in enumerate(members)]
    kind = BtfKind.UNION if union else BtfKind.STRUCT
    sid = w.compound(kind, "s", 512, spec, kflag=kflag)
    built = BtfTypes(prog, Btf(w.bytes())).build(sid)
    assert built.kind == (drgn.TypeKind.UNION if union else drgn.TypeKind.STRUCT)
    got = [(m.name, m.bit_offset, m.bit_field_size) for m in built.members]
    assert got == [(f"m{i}", offset, bits) for i, (offset, bits) in enumerate(members)]


def test_ambiguous_names_are_refused_and_percpu_uses_the_datasec_offset(prog) -> None:
    w, ids = kernelish()
    int_ = ids["int"]
    w.enum("shmem_param", 4, [("Opt_size", 3), ("Opt_same", 7)])
    w.enum("hugetlb_param", 4, [("Opt_size", 5), ("Opt_same", 7)])
    proto = w.func_proto(int_, [])
    w.func("mode_show", proto)
    btf = Btf(w.bytes())
    types = BtfTypes(prog, btf)
    symbols = drgn.SymbolIndex([
        drgn.Symbol("mode_show", 0xFFFFFFFF81000000, 16, drgn.SymbolBinding.LOCAL, drgn.SymbolKind.FUNC),
        drgn.Symbol("mode_show", 0xFFFFFFFF81000100, 16, drgn.SymbolBinding.LOCAL, drgn.SymbolKind.FUNC),
        drgn.Symbol("__per_cpu_start", 0, 0x1000, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
        # a static variable that shares the per-CPU variable's name
        drgn.Symbol("runqueues", 0xFFFFFFFF82000000, 48, drgn.SymbolBinding.LOCAL, drgn.SymbolKind.OBJECT),
        drgn.Symbol("runqueues", 128, 48, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
    ])
    objects = BtfObjects(prog, btf, types, symbols)
    prog.register_type_finder("btf", types.find, enable_index=-1)
    prog.register_object_finder("btf", objects.find, enable_index=-1)
    assert prog["Opt_same"].value_() == 7  # same value in both enums: served
    with pytest.raises(LookupError):
        prog["Opt_size"]  # 3 or 5: only DWARF's file names could tell
    with pytest.raises(LookupError):
        prog.function("mode_show")  # two static functions: which one is unknowable
    assert objects.ambiguous == {"Opt_size", "mode_show"}
    assert prog.object("runqueues").address_ == 128  # __per_cpu_start + the DATASEC offset


def test_iter_enumerators_agrees_with_full_decoding() -> None:
    w, _ = kernelish()
    btf = Btf(w.bytes())
    fast = list(btf.iter_enumerators())
    slow = [(i, e.name, e.value) for i in btf.iter_kind(BtfKind.ENUM, BtfKind.ENUM64) for e in btf.type(i).enumerators]
    assert fast == slow and ("RPM_INVALID", -1) in [(n, v) for _, n, v in fast]


def test_function_with_two_prototypes_is_refused(prog) -> None:
    w = BtfWriter()
    int_ = w.int_("int", 4, IntEncoding.SIGNED)
    w.func("show", w.func_proto(int_, []))
    w.func("show", w.func_proto(int_, [("x", int_)]))
    btf = Btf(w.bytes())
    types = BtfTypes(prog, btf)
    symbols = drgn.SymbolIndex([drgn.Symbol("show", 0x1000, 8, drgn.SymbolBinding.LOCAL, drgn.SymbolKind.FUNC)])
    objects = BtfObjects(prog, btf, types, symbols)
    prog.register_object_finder("btf", objects.find, enable_index=-1)
    with pytest.raises(LookupError):
        prog.function("show")
    assert objects.ambiguous == {"show"}
