"""Symbol packs without a real kernel: the file format, type round trips, relocation, CLI errors."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import drgn
import pytest
import xxhash
import zstandard

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.errors import UnsupportedVersionError
from tsubaki_forensics.selfcontained.compare import compare_types
from tsubaki_forensics.symbolpack import DUMP_PROPERTY, SymbolPackError, pack_from_dump, read_pack, write_pack
from tsubaki_forensics.symbolpack.extract import TypeEncoder, _names
from tsubaki_forensics.symbolpack.fileformat import HEADER, MAGIC, MAX_CONTENT, decode_pack, encode_pack
from tsubaki_forensics.symbolpack.finders import KERNEL_MAP, PackObjects, PackTypes, pack_symbols, relocate

C = drgn.Language.C


def _program() -> drgn.Program:
    return drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))


def _minimal_pack(**extra) -> dict:
    pack = {"kernel": {"build_id": "ab" * 20, "arch": "x86_64"}, "types": [["void"]], "names": {},
            "objects": {}, "symbols": {"names": [], "address_deltas": [], "sizes": [], "kinds": "", "bindings": ""}}
    pack.update(extra)
    return pack


def _sample_types(prog: drgn.Program) -> dict[str, drgn.Type]:
    """A small C world with the shapes the kernel has: recursion, bit fields, anonymous unions,
    qualifiers, typedef chains, enums, function pointers, flexible and nested arrays."""
    ulong = prog.int_type("unsigned long", 8, False, language=C)
    uint = prog.int_type("unsigned int", 4, False, language=C)
    char = prog.int_type("char", 1, True, language=C)
    u64 = prog.typedef_type("u64", prog.typedef_type("__u64", ulong, language=C), language=C)
    state = prog.enum_type("pid_type", uint, [drgn.TypeEnumerator("PIDTYPE_PID", 0),
                                              drgn.TypeEnumerator("PIDTYPE_MAX", 4)], language=C)
    node = prog.struct_type("list_head", 16, [
        drgn.TypeMember(lambda: prog.pointer_type(node, language=C), "next", 0),
        drgn.TypeMember(lambda: prog.pointer_type(node, language=C), "prev", 64)], language=C)
    fn = prog.function_type(prog.int_type("int", 4, True, language=C),
                            [drgn.TypeParameter(prog.pointer_type(char.qualified(drgn.Qualifiers.CONST), language=C),
                                                "fmt")], True, language=C)
    anon = prog.union_type(None, 8, [drgn.TypeMember(u64, "a", 0), drgn.TypeMember(ulong, "b", 0)], language=C)
    task = prog.struct_type("task", 96, [
        drgn.TypeMember(uint.qualified(drgn.Qualifiers.VOLATILE), "__state", 0),
        drgn.TypeMember(drgn.Object(prog, uint, bit_field_size=3), "flags", 32),
        drgn.TypeMember(drgn.Object(prog, uint, bit_field_size=5), "more", 35),
        drgn.TypeMember(node, "tasks", 64),
        drgn.TypeMember(anon, None, 192),
        drgn.TypeMember(prog.array_type(prog.array_type(char, 8, language=C), 2, language=C), "comm", 256),
        drgn.TypeMember(state, "type", 384),
        drgn.TypeMember(prog.pointer_type(fn, language=C), "printk", 448),
        drgn.TypeMember(prog.pointer_type(prog.struct_type("opaque", language=C), language=C), "priv", 512),
        drgn.TypeMember(prog.array_type(ulong, None, language=C), "tail", 576),
    ], language=C)
    return {"struct task": task, "struct list_head": node, "u64": u64, "enum pid_type": state}


def test_format_round_trip_and_header(tmp_path):
    pack = _minimal_pack()
    data = encode_pack(pack)
    assert data[:8] == MAGIC and HEADER.unpack_from(data)[1:3] == (1, 0)
    assert decode_pack(data) == pack
    path = tmp_path / "k.tsp"
    assert write_pack(pack, path) == path.stat().st_size
    assert read_pack(path) == pack


def _with_header(data: bytes, **fields) -> bytes:
    names = ["magic", "major", "minor", "reserved", "length", "content", "checksum"]
    values = dict(zip(names, HEADER.unpack_from(data)))
    values.update(fields)
    return HEADER.pack(*(values[n] for n in names)) + data[HEADER.size:]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:10], "truncated"),
    (lambda d: b"\x00" * 8 + d[8:], "bad magic"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum mismatch"),
    (lambda d: _with_header(d, content=MAX_CONTENT + 1), "exceeds"),
    (lambda d: _with_header(d, content=5), "content"),
])
def test_damaged_packs_are_refused(damage, message):
    with pytest.raises(SymbolPackError, match=message):
        decode_pack(damage(encode_pack(_minimal_pack())))


def test_later_major_version_is_refused_and_later_minor_read():
    data = encode_pack(_minimal_pack())
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        decode_pack(_with_header(data, major=2))
    assert decode_pack(_with_header(data, minor=7)) == _minimal_pack()


def test_content_that_is_not_a_pack_is_refused():
    payload = zstandard.ZstdCompressor().compress(b'{"kernel": {}}')
    data = HEADER.pack(MAGIC, 1, 0, 0, len(payload), 14, xxhash.xxh64_intdigest(payload)) + payload
    with pytest.raises(SymbolPackError, match="missing sections"):
        decode_pack(data)
    text = b"\xff\xfe not json"
    bad = zstandard.ZstdCompressor().compress(text)
    data = HEADER.pack(MAGIC, 1, 0, 0, len(bad), len(text), xxhash.xxh64_intdigest(bad)) + bad
    with pytest.raises(SymbolPackError, match="unreadable"):
        decode_pack(data)


def test_types_round_trip_through_a_pack():
    """Encode drgn types, decode them in another program: the same layouts, spelled the same."""
    source = _sample_types(_program())
    enc = TypeEncoder()
    for t in source.values():
        enc.ref(t)
    enc.run()
    names, ambiguous = _names(enc.records)
    assert ambiguous == [] and {"struct task", "struct list_head", "u64", "__u64", "enum pid_type"} <= names.keys()
    decoded = encode_pack(_minimal_pack(types=enc.records, names=names))  # through the file format too
    target = _program()
    types = PackTypes(target, decode_pack(decoded))
    target.register_type_finder("pack", types.find, enable_index=0)
    for name, t in source.items():
        assert compare_types(target.type(name), t) == [], name
    task = target.type("struct task")
    assert task.member("flags").bit_field_size == 3 and task.member("more").bit_offset == 35
    assert task.member("tasks").type.member("next").type.type._ptr == target.type("struct list_head")._ptr  # one type, cached
    assert task.member("comm").type.type.length == 8 and task.member("tail").type.length is None
    assert not task.member("priv").type.type.is_complete()
    assert task.member("printk").type.type.is_variadic
    assert target.type("u64").type.name == "__u64"


def test_copies_of_one_type_are_merged_and_distinct_ones_kept():
    prog = _program()
    ulong = prog.int_type("unsigned long", 8, False, language=C)
    a1 = prog.struct_type("irq_info", 8, [drgn.TypeMember(ulong, "x", 0)], language=C)
    a2 = prog.struct_type("irq_info", 8, [drgn.TypeMember(ulong, "x", 0)], language=C)  # another DWARF unit's copy
    b = prog.struct_type("irq_info", 16, [drgn.TypeMember(ulong, "y", 0)], language=C)  # another definition
    enc = TypeEncoder()
    refs = [enc.ref(t) for t in (a1, a2, b)]
    enc.run()
    assert refs[0] == refs[1] != refs[2]
    assert _names(enc.records)[1] == ["struct irq_info"]


def test_relocation_spares_per_cpu_offsets():
    assert relocate(0x31980, 0x38600000) == 0x31980  # runqueues: an offset into each CPU's area
    assert relocate(0xFFFFFFFF82A1AA40, 0x38600000) == 0xFFFFFFFFBB01AA40
    assert relocate(KERNEL_MAP, 0x1000) == KERNEL_MAP + 0x1000


def test_objects_and_symbols_are_served_relocated():
    prog = _program()
    enc = TypeEncoder()
    ulong = enc.ref(prog.int_type("unsigned long", 8, False, language=C))
    enc.run()
    pack = _minimal_pack(types=enc.records, objects={"jiffies": ["v", ulong, 0xFFFFFFFF82A079C0],
                                                     "runqueues": ["v", ulong, 0x31980],
                                                     "PAGE_SHIFT_X": ["c", ulong, 12]},
                         symbols={"names": ["_text", "panic"], "address_deltas": [0xFFFFFFFF81000000, 0x9CCF31],
                                  "sizes": [0, 300], "kinds": "uf", "bindings": "gg"})
    objects = PackObjects(prog, pack, PackTypes(prog, pack), 0x38600000)
    prog.register_object_finder("pack", objects.find, enable_index=0)
    assert prog["jiffies"].address_ == 0xFFFFFFFFBB0079C0
    assert prog["runqueues"].address_ == 0x31980
    assert prog["PAGE_SHIFT_X"].value_() == 12
    with pytest.raises(LookupError):
        prog.object("jiffies", drgn.FindObjectFlags.FUNCTION)
    index = pack_symbols(pack, 0x38600000).index
    (panic,) = index(prog, "panic", None, True)
    assert panic.address == 0xFFFFFFFF819CCF31 + 0x38600000 and panic.kind == drgn.SymbolKind.FUNC
    assert index(prog, None, panic.address + 10, True)[0].name == "panic"


def test_pack_from_dump_properties():
    pack = _minimal_pack()
    dump = SimpleNamespace(properties={DUMP_PROPERTY: base64.b64encode(encode_pack(pack)).decode()})
    assert pack_from_dump(dump) == pack
    assert pack_from_dump(SimpleNamespace(properties={})) is None
    assert pack_from_dump(SimpleNamespace(symbolpack=encode_pack(pack), properties={})) == pack  # METADATA kind
    with pytest.raises(SymbolPackError, match="base64"):
        pack_from_dump(SimpleNamespace(properties={DUMP_PROPERTY: "not base64!"}))


def test_cli_errors_are_one_line(tmp_path, capsys):
    not_pack = tmp_path / "x.tsp"
    not_pack.write_bytes(b"hello")
    for args, message in ((["symbols", "info", str(not_pack)], "truncated"),
                          (["symbols", "pack", str(tmp_path / "missing")], "does not exist"),
                          (["symbols", "pack", str(not_pack), "-o", str(tmp_path / "o.tsp")], "no build id"),
                          (["symbols", "info", str(not_pack), "--format", "xml"], "--format")):
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_pack_carries_every_global_the_btf_route_types():
    """A symbol pack answers what the self-contained route answers: every global
    of GLOBAL_TYPES (crash's sys/kmem -i summary included) is looked up when a
    pack is built, so the pack route loses nothing the BTF route has."""
    from tsubaki_forensics.selfcontained.objects import GLOBAL_TYPES
    from tsubaki_forensics.symbolpack.lookups import LOOKUP_OBJECTS

    assert set(GLOBAL_TYPES) - set(LOOKUP_OBJECTS) == set()
