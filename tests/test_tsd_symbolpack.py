"""The SYMBOLPACK METADATA kind (format 1.1): written, read, merged across the
files of one dump, skipped by readers that do not know it, and stored by
``symbols attach`` and ``collect --symbols``; the old base64 property is still read."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.errors import ConflictError
from tsubaki_forensics.symbolpack import DUMP_PROPERTY, pack_from_dump, read_pack
from tsubaki_forensics.symbolpack.fileformat import encode_pack
from tsubaki_forensics.tsd import TsdWriter, open_dump
from tsubaki_forensics.tsd import records as R

BUILD_ID = "ab" * 20


def _pack(build_id: str = BUILD_ID, **extra) -> dict:
    pack = {"kernel": {"build_id": build_id, "arch": "x86_64"}, "types": [["void"]], "names": {},
            "objects": {}, "symbols": {"names": [], "address_deltas": [], "sizes": [], "kinds": "", "bindings": ""}}
    pack.update(extra)
    return pack


def _write(path, dump_id, **metadata):
    with TsdWriter(path, dump_id=dump_id, threads=0) as w:
        w.write_metadata(**metadata)
        w.write_memory(0, bytes(range(256)) * 16)
    return path


def test_symbolpack_kind_is_the_next_free_value_and_bumps_the_minor_version():
    assert R.MetadataKind.SYMBOLPACK == 4 == R.MetadataKind.PROPERTIES + 1
    assert R.MetadataKind.MEMORY_MAP == 5  # 1.3 took the next value (test_tsd_memory_map.py)
    assert (R.FORMAT_MAJOR, R.FORMAT_MINOR) == (1, 1)


def test_symbolpack_record_round_trips(tmp_path):
    data = encode_pack(_pack())
    path = _write(tmp_path / "d.tsd", uuid.uuid4(), vmcoreinfo=b"OSRELEASE=6.1.0\n", symbolpack=data)
    for verify in (False, True):  # the footer path and the scan path
        with open_dump(path, verify=verify) as dump:
            assert dump.symbolpack == data and dump.problems == []
            assert dump.header.minor == R.FORMAT_MINOR
            assert DUMP_PROPERTY not in dump.properties
            assert pack_from_dump(dump) == _pack()
    with open_dump(_write(tmp_path / "none.tsd", uuid.uuid4(), vmcoreinfo=b"x")) as dump:
        assert dump.symbolpack is None and pack_from_dump(dump) is None


def test_a_file_without_a_pack_merges_with_one_that_has_it(tmp_path):
    dump_id, data = uuid.uuid4(), encode_pack(_pack())
    bare = _write(tmp_path / "a.tsd", dump_id, vmcoreinfo=b"OSRELEASE=6.1.0\n")
    carrying = _write(tmp_path / "b.tsd", dump_id, symbolpack=data)
    same = _write(tmp_path / "c.tsd", dump_id, symbolpack=data)
    for paths in ([bare, carrying], [carrying, bare], [bare, carrying, same]):
        with open_dump(paths) as dump:
            assert dump.symbolpack == data and dump.vmcoreinfo == b"OSRELEASE=6.1.0\n"


def test_two_different_packs_are_a_one_line_conflict_naming_both_files(tmp_path):
    dump_id = uuid.uuid4()
    a = _write(tmp_path / "a.tsd", dump_id, symbolpack=encode_pack(_pack()))
    b = _write(tmp_path / "b.tsd", dump_id, symbolpack=encode_pack(_pack("cd" * 20)))
    with pytest.raises(ConflictError) as info:
        open_dump([b, a])
    message = str(info.value)
    assert "symbol pack" in message and str(a) in message and str(b) in message and "\n" not in message


def test_unknown_metadata_kinds_are_skipped_so_a_1_0_reader_reads_1_1_files(tmp_path):
    """A 1.0 reader sees SYMBOLPACK as an unknown kind; this reader must skip such kinds likewise."""
    path = tmp_path / "d.tsd"
    with TsdWriter(path, dump_id=uuid.uuid4(), threads=0) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\n", properties={"k": "v"})
        w._record(R.RecordType.METADATA, R.pack_metadata(99, b"from a later minor version"))
        w.write_memory(0, b"\1" * 4096)
    for verify in (False, True):
        with open_dump(path, verify=verify) as dump:
            assert dump.problems == [] and dump.properties == {"k": "v"}
            assert dump.vmcoreinfo == b"OSRELEASE=6.1.0\n" and dump.symbolpack is None
            assert dump.memory.read(0, 4096) == b"\1" * 4096


def test_an_old_style_property_pack_is_still_read(tmp_path):
    """Companions written before format 1.1 carry the pack as a base64 property."""
    dump_id = uuid.uuid4()
    main_file = _write(tmp_path / "d.tsd", dump_id, vmcoreinfo=f"BUILD-ID={BUILD_ID}\n".encode())
    old = _write(tmp_path / "d.symbols.tsd", dump_id,
                 properties={DUMP_PROPERTY: base64.b64encode(encode_pack(_pack())).decode()})
    with open_dump([main_file, old]) as dump:
        assert dump.symbolpack is None and pack_from_dump(dump) == _pack()


def test_symbols_attach_writes_a_symbolpack_record(tmp_path, capsys):
    dump_id = uuid.uuid4()
    dump_path = _write(tmp_path / "d.tsd", dump_id, vmcoreinfo=f"OSRELEASE=6.1.0\nBUILD-ID={BUILD_ID}\n".encode())
    pack_path = tmp_path / "k.tsp"
    pack_path.write_bytes(encode_pack(_pack()))
    assert main(["symbols", "attach", str(pack_path), str(dump_path)]) == 0
    companion = tmp_path / "d.symbols.tsd"
    with open_dump([dump_path, companion]) as dump:
        assert dump.symbolpack == pack_path.read_bytes() and DUMP_PROPERTY not in dump.properties
    other = tmp_path / "other.tsp"
    other.write_bytes(encode_pack(_pack("cd" * 20)))
    capsys.readouterr()
    assert main(["symbols", "attach", str(other), str(dump_path), "-o", str(tmp_path / "x.tsd")]) == 1
    assert "build id" in capsys.readouterr().err and not (tmp_path / "x.tsd").exists()


@pytest.fixture()
def raw_image(tmp_path):
    """A 2 MiB raw image whose VMCOREINFO names a build id, plus its sidecar."""
    path = tmp_path / "mem.raw"
    path.write_bytes(b"\x5a" * (1 << 20) + bytes(1 << 20))
    sidecar = {"ranges": [{"paddr": 0, "length": 2 << 20, "offset": 0}],
               "vmcoreinfo": f"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nBUILD-ID={BUILD_ID}\n",
               "properties": {"boot_s": "1.0"}}
    (tmp_path / "mem.raw.json").write_text(json.dumps(sidecar))
    return path


def _collect(capsys, image, out, pack_path):
    code = main(["collect", str(image), "-o", str(out), "--symbols", str(pack_path), "--region-size", "1M",
                 "--reboot-mem", "1M", "--no-fsync", "--format", "json"])
    return code, capsys.readouterr().err


def test_collect_symbols_stores_the_pack_with_the_panic_notice(raw_image, tmp_path, capsys):
    pack_path = tmp_path / "k.tsp"
    pack_path.write_bytes(encode_pack(_pack()))
    code, err = _collect(capsys, raw_image, tmp_path / "d.tsd", pack_path)
    assert code == 0, err
    with open_dump(tmp_path / "d.tsd") as dump:
        assert dump.symbolpack == pack_path.read_bytes() and pack_from_dump(dump) == _pack()
        assert dump.vmcoreinfo.endswith(f"BUILD-ID={BUILD_ID}\n".encode())


@pytest.mark.parametrize("content, expect", [
    (None, "cannot read symbol pack"),
    (b"not a pack at all", "k.tsp"),
    (encode_pack(_pack("cd" * 20)), "build id"),
])
def test_collect_symbols_refuses_a_bad_or_foreign_pack_in_one_line(raw_image, tmp_path, capsys, content, expect):
    pack_path = tmp_path / "k.tsp"
    if content is not None:
        pack_path.write_bytes(content)
    code, err = _collect(capsys, raw_image, tmp_path / "d.tsd", pack_path)
    assert code == 1 and expect in err and "--symbols" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "d.tsd").exists()


@pytest.mark.realkernel
def test_collect_symbols_on_a_real_crash_then_analyze_without_vmlinux(real_crash, tmp_path, monkeypatch, capsys):
    pack_path, out = tmp_path / "k.tsp", tmp_path / "d.tsd"
    assert main(["symbols", "pack", str(real_crash.vmlinux), "-o", str(pack_path)]) == 0
    assert main(["collect", str(real_crash.vmcore), "-o", str(out), "--symbols", str(pack_path),
                 "--no-fsync", "--format", "json"]) == 0
    with open_dump(out) as dump:
        assert dump.symbolpack == pack_path.read_bytes()
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setenv("TSUBAKI_CACHE_DIR", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty))
    capsys.readouterr()
    assert main(["analyze", str(out), "--only", "panic", "--format", "json"]) == 0
    stdout, err = capsys.readouterr()
    assert "symbol pack: no vmlinux" in err
    (panic,) = [a for a in json.loads(stdout)["analyses"] if a["name"] == "panic"]
    assert panic["status"] == "ok", panic
    truth = real_crash.ground_truth["panic_message"]
    assert panic["facts"]["panic_message"] == "Kernel panic - not syncing: " + truth
    assert read_pack(pack_path)["kernel"]["build_id"] == real_crash.ground_truth["build_id"]
