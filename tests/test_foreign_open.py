"""``inspect``, ``verify`` and ``export`` open kdump, flattened and ELF files directly
(one opening path: vmcore/foreign.py), on files the tests build (kdump_synth).

makedumpfile's own output of real crashes: test_kdump_real.py and
test_foreign_real.py.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tsubaki_forensics.errors import ExcludedPageError, NotCollectedError
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.tsd.records import PageClass
from tsubaki_forensics.vmcore import ElfVmcore
from tsubaki_forensics.vmcore.foreign import open_any
from tsubaki_forensics.vmcore.kdump import DISK_DUMP_HEADER
from tsubaki_forensics.vmcore.verify import verify_any

from _cli import run_cli
from kdump_synth import PS, build_kdump, flatten, sample_memory

VALID, DUMPED, CONTENTS = sample_memory()
RAW = build_kdump(VALID, DUMPED, CONTENTS, codec="zlib")
EXCLUDED_PAGES = int((VALID & ~DUMPED).sum())


def _desc_offset(blob: bytes) -> int:
    """Where the page descriptors start, from the file's own header."""
    fields = DISK_DUMP_HEADER.unpack_from(blob)
    sub_hdr_size, bitmap_blocks = fields[7], fields[8]
    return (1 + sub_hdr_size + bitmap_blocks) * PS


def test_desc_offset_reads_the_header():
    sub_hdr, blocks = 2, 2  # kdump_synth: VMCOREINFO and notes fit one block after the sub header
    assert _desc_offset(RAW) == (1 + sub_hdr + blocks) * PS
    off, size, flags, _ = struct.unpack_from("<qIIQ", RAW, _desc_offset(RAW))
    assert off == _desc_offset(RAW) + 24 * int(DUMPED.sum()) and 0 < size <= PS and flags == 1


@pytest.mark.parametrize("flat", [False, True])
def test_inspect_json_counts_excluded_apart_from_missing(tmp_path, flat):
    path = tmp_path / "dump.202612030000"
    path.write_bytes(flatten(RAW) if flat else RAW)
    d = json.loads(run_cli("inspect", path, "--format", "json").stdout)
    m = d["memory"]
    assert d["format"].startswith("kdump-flattened" if flat else "kdump-compressed")
    assert d["status"] == "complete" and m["missing_bytes"] == 0
    assert m["excluded_bytes"] == EXCLUDED_PAGES * PS
    assert m["present_bytes"] == int(DUMPED.sum()) * PS
    assert m["pages"]["excluded"]["unknown"] == EXCLUDED_PAGES
    text = run_cli("inspect", path).stdout
    assert text.startswith("status         COMPLETE") and "excluded by the dump level" in text


def test_verify_sound_cut_and_damaged(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(RAW)
    assert verify_any([path]).status == "ok"
    run = run_cli("verify", path)
    assert f"{int(DUMPED.sum())} of {int(DUMPED.sum())} dumped pages decompress" in run.stdout
    assert f"{EXCLUDED_PAGES} pages excluded by the producer" in run.stdout

    cut = tmp_path / "cut"
    cut.write_bytes(RAW[:len(RAW) - 3 * PS])  # inside the page data
    r = verify_any([cut])
    assert r.status == "incomplete" and not r.damage and r.completeness.missing_bytes > 0
    run = run_cli("verify", cut, ok=False)
    assert run.returncode == 4 and "cut short" in run.stdout and "Traceback" not in run.stderr

    base = _desc_offset(RAW)
    for i, patch, words in [(3, lambda o, s, f: (16, s, f), "overlap the headers"),
                            (5, lambda o, s, f: (o, PS + 1, f), "size is not"),
                            (7, lambda o, s, f: (o, s, 0x40), "no known codec"),
                            (2, lambda o, s, f: (1 << 40, s, f), "outside the file")]:
        bad = bytearray(RAW)
        o, s, f, pf = struct.unpack_from("<qIIQ", bad, base + 24 * i)
        struct.pack_into("<qIIQ", bad, base + 24 * i, *patch(o, s, f), pf)
        p = tmp_path / f"bad{i}"
        p.write_bytes(bytes(bad))
        r = verify_any([p])
        assert r.status == "damaged" and any(words in x.message for x in r.damage), r.problems
        pfn = int(np.flatnonzero(DUMPED)[i])
        assert any(f"{pfn:#x}" in x.message for x in r.damage)
        run = run_cli("verify", p, ok=False)
        assert run.returncode == 2 and "Traceback" not in run.stderr

    # page data that does not decompress: named with its address, the rest read
    bad = bytearray(RAW)
    o, s, f, _ = struct.unpack_from("<qIIQ", bad, base + 24 * 2)  # a text page: zlib-compressed
    bad[o:o + s] = bytes(s)
    p = tmp_path / "baddata"
    p.write_bytes(bytes(bad))
    r = verify_any([p])
    pfn = int(np.flatnonzero(DUMPED)[2])
    assert f == 1
    assert r.status == "damaged" and [x.offset for x in r.damage] == [pfn * PS]
    assert "does not decompress" in r.damage[0].message
    assert r.completeness.missing_bytes == PS


def test_export_kdump_directly_then_import_keeps_excluded(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(flatten(RAW, seed=7))
    elf = tmp_path / "out.elf"
    run_cli("export", path, "-o", elf)
    with ElfVmcore(elf) as e:
        for pfn, page in CONTENTS.items():
            assert e.read(pfn * PS, PS) == page
        held = {a // PS + i for a, n, _ in e.ranges() for i in range(n // PS)}
        assert held == set(CONTENTS)
    assert verify_any([elf]).status == "ok"
    run_cli("import", elf, "-o", tmp_path / "d.tsd")
    with open_dump([tmp_path / "d.tsd"]) as d:
        assert d.completeness().complete is True
        assert sum(r.length for r in d.excluded) == EXCLUDED_PAGES * PS
        assert {r.cls for r in d.excluded} == {PageClass.UNKNOWN}


def test_open_any_reads_excluded_as_excluded(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(RAW)
    with open_any([path]) as dump:
        assert dump.completeness().complete is True
        with pytest.raises(ExcludedPageError):
            dump.memory.read(31 * PS, 8)
        assert dump.dump_id.startswith("kdump-")
    from tsubaki_forensics.vmcore.foreign import foreign_identity

    assert foreign_identity(path)[0] == dump.dump_id  # triage and inspect name it alike


def test_mixed_tsd_and_kdump_is_one_line(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(RAW)
    run_cli("import", path, "-o", tmp_path / "d.tsd")
    run = run_cli("inspect", tmp_path / "d.tsd", path, ok=False)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "not one dump" in run.stderr


def _elf_with_tail(tmp_path):
    """An ELF vmcore (no TSUBAKI note) whose last PT_LOAD lacks its last 2 pages in
    the file (p_memsz beyond p_filesz), as makedumpfile -E writes left-out pages."""
    from elftools.elf.elffile import ELFFile

    from tsubaki_forensics.vmcore import write_elf_vmcore
    from tsubaki_forensics.vmcore.notes import build_note

    from kdump_synth import VMCOREINFO

    path = tmp_path / "dump"
    path.write_bytes(RAW)
    elf = tmp_path / "e.elf"
    with open_any([path]) as dump:
        write_elf_vmcore(elf, dump.memory, VMCOREINFO, build_note("VMCOREINFO", 0, VMCOREINFO),
                         arch="x86_64", page_size=PS)
    with open(elf, "rb") as f:
        e = ELFFile(f)
        loads = [(i, s) for i, s in enumerate(e.iter_segments()) if s["p_type"] == "PT_LOAD"]
        i, last = loads[-1]
        at = e["e_phoff"] + i * e["e_phentsize"] + 32  # p_filesz of a 64-bit program header
    blob = bytearray(elf.read_bytes())
    struct.pack_into("<Q", blob, at, last["p_filesz"] - 2 * PS)
    elf.write_bytes(bytes(blob))
    tail = last["p_paddr"] + last["p_filesz"] - 2 * PS
    return elf, tail


def test_elf_tails_import_as_excluded_not_zero(tmp_path):
    elf, tail = _elf_with_tail(tmp_path)
    with open_any([elf]) as dump:
        assert [(r.paddr, r.length) for r in dump.excluded] == [(tail, 2 * PS)]
        with pytest.raises(ExcludedPageError):
            dump.memory.read(tail, 8)
    run_cli("import", elf, "-o", tmp_path / "e.tsd")
    with open_dump([tmp_path / "e.tsd"]) as d:
        assert [(r.paddr, r.length, r.cls) for r in d.excluded] == [(tail, 2 * PS, PageClass.UNKNOWN)]
        assert d.completeness().complete is True and d.memory_map.dump_level == 31
        assert "unknown" in d.properties["dump_level"]
        with pytest.raises(ExcludedPageError):
            d.memory.read(tail, 8)
        assert d.memory.read(tail - PS, PS) == CONTENTS[tail // PS - 1]


@pytest.mark.parametrize("wrap", [False, True])
def test_collect_takes_a_kdump_file_as_its_source(tmp_path, wrap):
    """``collect``'s source registry opens kdump files by magic (the ``kdump`` source):
    the dump it writes holds every page the file kept, and nothing it left out."""
    import gzip

    from monitor_model.sources import DumpFileSource, open_source

    path = tmp_path / ("dump.gz" if wrap else "dump")
    path.write_bytes(gzip.compress(flatten(RAW)) if wrap else flatten(RAW))
    src = open_source(str(path))
    try:
        assert isinstance(src, DumpFileSource) and src.vmcoreinfo.startswith(b"OSRELEASE=")
        assert sum(n for _, n in src.ranges) == int(DUMPED.sum()) * PS
    finally:
        src.close()
    out = tmp_path / "c.tsd"
    run_cli("collect", path, "-o", out, "--region-size", "16K", "--reboot-mem", "64K", "--no-fsync")
    with open_dump([out]) as d:
        for pfn, page in CONTENTS.items():
            assert d.memory.read(pfn * PS, PS) == page
        with pytest.raises(NotCollectedError):  # left out by the file: never collected as zeros
            d.memory.read(31 * PS, 8)


def lime_image(ranges: list[tuple[int, bytes]]) -> bytes:
    """A LiME file: one 32-byte header (magic, version 1, first, last address) per range."""
    from tsubaki_forensics.vmcore.lime import LIME_HEADER, LIME_MAGIC

    return b"".join(LIME_HEADER.pack(LIME_MAGIC, 1, a, a + len(d) - 1) + d for a, d in ranges)


def _vmcoreinfo_page() -> bytes:
    """A page holding the kernel's vmcoreinfo_note as the kernel lays it out."""
    from tsubaki_forensics.vmcore.notes import build_note

    info = b"OSRELEASE=6.1.0-lime\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff8260a000\n"
    return (b"\xaa" * 100 + build_note("VMCOREINFO", 0, info)).ljust(PS, b"\0")


def test_lime_opens_imports_exports_and_cuts(tmp_path):
    rng = np.random.default_rng(18)
    low = rng.integers(0, 256, 16 * PS, dtype=np.uint8).tobytes()
    high = _vmcoreinfo_page() + bytes(3 * PS) + rng.integers(0, 256, 4 * PS, dtype=np.uint8).tobytes()
    blob = lime_image([(0, low), (1 << 20, high)])
    path = tmp_path / "mem.lime"
    path.write_bytes(blob)
    with open_any([path]) as dump:
        assert dump.vmcoreinfo.startswith(b"OSRELEASE=6.1.0-lime\n")
        assert dump.memory.read(0, len(low)) == low and dump.memory.read(1 << 20, len(high)) == high
        assert dump.completeness().complete is True
        with pytest.raises(NotCollectedError):
            dump.memory.read(len(low), 8)
    assert verify_any([path]).status == "ok"
    run_cli("import", path, "-o", tmp_path / "m.tsd")
    run_cli("export", tmp_path / "m.tsd", "-o", tmp_path / "m.elf")
    with ElfVmcore(tmp_path / "m.elf") as e:
        assert e.read(0, len(low)) == low and e.read(1 << 20, len(high)) == high
    # cut inside the second range: the first whole, the rest of the second missing
    cut = tmp_path / "cut.lime"
    cut.write_bytes(blob[:len(blob) - 5 * PS - 7])
    r = verify_any([cut])
    assert r.status == "incomplete" and r.completeness.missing_bytes == 5 * PS + 7
    run = run_cli("verify", cut, ok=False)
    assert run.returncode == 4
    # damaged headers: one line each
    for pos, value in [(0, b"XXXX"), (0, b"AVML"), (4, b"\x07\0\0\0"), (32 + len(low), b"\0\0\0\0")]:
        bad = bytearray(blob)
        bad[pos:pos + len(value)] = value
        p = tmp_path / f"bad{pos}-{value[0]}"
        p.write_bytes(bytes(bad))
        run = run_cli("inspect", p, ok=False)
        assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
        assert value != b"AVML" or "avml-convert" in run.stderr


def _span(blob: bytes) -> int:
    """Bytes up to the end of the page descriptors (headers, bitmaps, descriptors)."""
    return _desc_offset(blob) + 24 * int(DUMPED.sum())


from hypothesis import given  # noqa: E402  (the fuzz part of this file)
from hypothesis import strategies as st  # noqa: E402

from test_fuzz_tsd import fuzz_settings  # noqa: E402

FLAT = flatten(RAW, seed=3, rewrite_header=False)


@pytest.mark.parametrize("blob", [RAW, FLAT], ids=["kdump", "flattened"])
@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_verify_and_open_any_on_cut_and_flipped_files(tmp_path_factory, blob, data):
    """verify and the one opening path on cut files and on bit flips in headers,
    bitmaps and descriptors: a one-line TsubakiError, or a report whose cut and
    damage are named; never another exception (a traceback) or a hang."""
    from tsubaki_forensics.errors import TsubakiError

    raw = bytearray(blob[:data.draw(st.integers(1, len(blob)))] if data.draw(st.booleans()) else blob)
    for _ in range(data.draw(st.integers(0, 3))):
        if len(raw):
            raw[data.draw(st.integers(0, min(len(raw), _span(RAW) + 4096) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    p = tmp_path_factory.mktemp("fz") / "dump"
    p.write_bytes(bytes(raw))
    try:
        r = verify_any([p])
    except TsubakiError as e:
        assert "\n" not in str(e)
        return
    assert r.status in ("ok", "damaged", "incomplete")
    assert all("\n" not in x.message for x in r.problems)
    if r.status == "ok":
        assert r.completeness.complete is True
    with open_any([p]) as dump:
        c = dump.completeness()
        assert c.missing_bytes <= r.completeness.missing_bytes


def test_triage_discovery_finds_dump_files_by_magic_and_groups_split_sets(tmp_path):
    """A /var/crash-like directory: a --split set, a plain kdump file and a copy of
    it, a gzipped flattened file, a LiME image, dmesg text and a vmlinux-like ELF.
    Every dump is found by magic; the split files are one dump; the copy is a copy."""
    import gzip
    import shutil

    from tsubaki_forensics.triage.discover import find_files, group_dumps

    d = tmp_path / "crash"
    (d / "202612030000").mkdir(parents=True)
    for i, (a, b) in enumerate([(0, 17), (17, 45), (45, len(VALID))]):
        (d / "202612030000" / f"dump.part{i}").write_bytes(
            build_kdump(VALID, DUMPED, CONTENTS, codec="lzo", split=(a, b)))
    (d / "dump.plain").write_bytes(RAW)
    shutil.copy(d / "dump.plain", d / "copy-of-plain")
    (d / "dump.gz").write_bytes(gzip.compress(flatten(RAW)))
    (d / "mem.lime").write_bytes(lime_image([(0, bytes(PS))]))
    (d / "dmesg.202612030000").write_text("[    0.000000] Linux version\n")
    (d / "vmlinux").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00" + bytes(46))  # ET_EXEC
    files = find_files([str(d)])
    assert sorted(p.name for p in files) == ["copy-of-plain", "dump.gz", "dump.part0", "dump.part1",
                                             "dump.part2", "dump.plain", "mem.lime"]
    dumps, bad = group_dumps(files)
    assert not bad and len(dumps) == 4
    split = next(x for x in dumps if x.dump_id.startswith("kdump-split-"))
    assert sorted(p.rsplit("/", 1)[1] for p in split.parts) == ["dump.part0", "dump.part1", "dump.part2"]
    plain = next(x for x in dumps if any(p.endswith("dump.plain") for p in x.paths))
    assert len(plain.paths) == 2 and len(plain.parts) == 1  # the copy is the same dump
    with open_any([d / "202612030000" / f"dump.part{i}" for i in (2, 0, 1)]) as dump:
        assert dump.dump_id == split.dump_id


def test_cut_elf_reads_to_the_cut_in_every_command(tmp_path):
    """An ELF vmcore cut short (a /proc/vmcore copy on a full disk): inspect says
    INCOMPLETE, verify exits 4, import records the rest as MISSING, never zeros."""
    path = tmp_path / "dump"
    path.write_bytes(RAW)
    elf = tmp_path / "e.elf"
    run_cli("export", path, "-o", elf)
    blob = elf.read_bytes()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(blob[:len(blob) - 5 * PS - 100])
    d = json.loads(run_cli("inspect", cut, "--format", "json").stdout)
    assert d["status"] == "incomplete" and d["memory"]["missing_bytes"] > 0
    assert run_cli("verify", cut, ok=False).returncode == 4
    run = run_cli("import", cut, "-o", tmp_path / "c.tsd")
    assert "cut short" in run.stderr
    with open_dump([tmp_path / "c.tsd"]) as dump, ElfVmcore(cut) as core:
        c = dump.completeness()
        assert c.complete is False and c.missing_bytes == sum(n for _, n in core.cut_off)
        for pfn, page in CONTENTS.items():
            try:
                got = dump.memory.read(pfn * PS, PS)
            except NotCollectedError:
                assert any(a < pfn * PS + PS and pfn * PS < a + n for a, n in core.cut_off), pfn
                continue
            assert got == page
