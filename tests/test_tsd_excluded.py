"""Dump levels in the format (1.4): EXCLUDED records, written and read on synthetic dumps.

Pages a dump level leaves out are recorded with their class (FORMAT.md §4.9),
so every reader tells "excluded by dump level 31 (user data)" apart from
"missing".  These tests build their dumps with the writer: a property test
over random layouts (excluded is never reported missing, missing never
excluded, counts add up, every read says the right thing), the export/import
round trip through an ELF and its TSUBAKI note, the older-reader path of a
MUST_UNDERSTAND record, crafted and truncated EXCLUDED bodies (one line,
never a traceback), and ``import -d``'s refusal and fallback on a VMCOREINFO
that lacks what classification needs.  Real crashes: test_dumplevel_real.py.
"""

from __future__ import annotations

import json
import uuid

import drgn
import numpy as np
import pytest
from _cli import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from tsubaki_forensics.drgn_bridge.program import segment_reader
from tsubaki_forensics.errors import ConflictError, ExcludedPageError, FormatError, NotCollectedError
from tsubaki_forensics.pageclass import PageClass as PageClassFromPageclass
from tsubaki_forensics.tsd import MemoryMap, TsdWriter, open_dump, open_file, verify_dump
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.tsd.pages import page_counts
from tsubaki_forensics.tsd.records import PageClass
from tsubaki_forensics.vmcore import ElfVmcore, write_elf_vmcore
from tsubaki_forensics.vmcore.filter_note import notes_for_export, parse_filter_note
from tsubaki_forensics.vmcore.importer import import_vmcore

from test_vmcore_elf import VMCOREINFO, qemu_style_elf, sample_notes

PAGE = 4096
DID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
EXCLUDABLE = [PageClass.CACHE, PageClass.CACHE_PRIVATE, PageClass.USER, PageClass.FREE,
              PageClass.HWPOISON, PageClass.OFFLINE]
# What each page of a synthetic layout is: data, zero, excluded (a class), or lost.
DATA, ZERO, MISSING, ABSENT = "data", "zero", "missing", "absent"
KINDS = [DATA, ZERO, MISSING, ABSENT, *EXCLUDABLE]


def run(*args, ok=True):
    """The installed console script, as a user runs it (never a traceback)."""
    return run_cli(*args, ok=ok)


def page_bytes(i: int) -> bytes:
    return (i.to_bytes(4, "little") + b"tsubaki!") * (PAGE // 12) + bytes(PAGE % 12)


def write_layout(path, layout, *, base=0x100000, level=31, threads=0, chunk=8 * PAGE):
    """One file holding ``layout`` (a kind per page from ``base``), written in address order."""
    mm = MemoryMap.from_ranges([(base, len(layout) * PAGE)], dump_level=level)
    with TsdWriter(path, dump_id=DID, memory_map=mm, threads=threads, chunk_size=chunk) as w:
        w.write_metadata(vmcoreinfo=VMCOREINFO)
        for i, kind in enumerate(layout):
            addr = base + i * PAGE
            if kind == DATA:
                w.write_memory(addr, page_bytes(i))
            elif kind == ZERO:
                w.write_zero(addr, PAGE)
            elif kind == MISSING:
                w.write_missing(addr, PAGE, "read error")
            elif kind != ABSENT:
                w.write_excluded(addr, PAGE, kind)
    return mm


# -- the vocabulary --------------------------------------------------------------------

def test_pageclass_is_one_enum_at_the_bottom():
    assert PageClassFromPageclass is PageClass
    assert [c.key for c in EXCLUDABLE] == ["cache", "cache_private", "user", "free", "hwpoison",
                                           "offline"]
    assert PageClass.USER.label == "user data"


def test_level_1_files_hold_no_excluded_record_and_stay_1_3(tmp_path):
    write_layout(tmp_path / "a.tsd", [DATA, ZERO, DATA], level=1)
    f = open_file(tmp_path / "a.tsd", verify=True)
    assert (f.header.major, f.header.minor) == (1, R.FORMAT_MINOR_MAP)
    assert not f.excluded and not f.problems
    with TsdWriter(tmp_path / "b.tsd", memory_map=MemoryMap.from_ranges([(0, PAGE)])) as w:
        with pytest.raises(ValueError, match="dump level is above 1"):
            w.write_excluded(0, PAGE, PageClass.USER)


def test_excluded_records_are_flagged_must_understand_and_stamp_1_4(tmp_path):
    write_layout(tmp_path / "a.tsd", [DATA, PageClass.USER, PageClass.USER, PageClass.FREE, DATA])
    f = open_file(tmp_path / "a.tsd", verify=True)
    assert f.header.minor == R.FORMAT_MINOR_EXCLUDED
    infos = [r for r in open_file(tmp_path / "a.tsd").records]  # via the INDEX
    assert f.excluded == [R.ExcludedRange(0x101000, 2 * PAGE, PageClass.USER),
                          R.ExcludedRange(0x103000, PAGE, PageClass.FREE)]
    raw = (tmp_path / "a.tsd").read_bytes()
    at = raw.find(R.RECORD_MAGIC + R.RecordType.EXCLUDED.to_bytes(2, "little"))
    assert at > 0
    flags = int.from_bytes(raw[at + 6:at + 8], "little")
    assert flags & R.RecordFlags.MUST_UNDERSTAND
    assert all(r.type != R.RecordType.EXCLUDED for r in infos)  # memory records only


# -- the property: excluded is never missing, missing is never excluded -------------------

@settings(max_examples=60)
@given(layout=st.lists(st.sampled_from(KINDS), min_size=1, max_size=40),
       threads=st.sampled_from([0, 2]))
def test_excluded_is_never_missing_and_missing_never_excluded(tmp_path_factory, layout, threads):
    path = tmp_path_factory.mktemp("prop") / "d.tsd"
    base = 0x100000
    write_layout(path, layout, base=base, threads=threads)
    with open_dump(path) as dump:
        c = dump.completeness()
        lost = {i for i, k in enumerate(layout) if k in (MISSING, ABSENT)}
        gone = set()
        for g in c.gaps:
            gone |= set(range((g.start - base) // PAGE, (g.end - base) // PAGE))
        assert gone == lost
        excluded = {}
        for r in dump.excluded:
            for p in range((r.paddr - base) // PAGE, (r.end - base) // PAGE):
                excluded[p] = r.cls
        assert excluded == {i: k for i, k in enumerate(layout) if k in EXCLUDABLE}
        assert c.complete == (not lost)
        assert c.excluded_bytes == len(excluded) * PAGE
        assert c.missing_bytes == len(lost) * PAGE
        pages = page_counts(dump.memory_map, dump.memory.ranges(), dump.excluded, PAGE)
        assert pages["total"] == len(layout)
        for cls in EXCLUDABLE:
            assert pages["excluded"][cls.key] == layout.count(cls)
        assert pages["excluded"]["zero"] == layout.count(ZERO)
        assert pages["kept"] == layout.count(DATA) + len(lost)
        for i, kind in enumerate(layout):
            addr = base + i * PAGE + 8
            if kind == DATA:
                assert dump.memory.read(addr, 8) == page_bytes(i)[8:16]
            elif kind == ZERO:
                assert dump.memory.read(addr, 8) == bytes(8)
            elif kind in (MISSING, ABSENT):
                with pytest.raises(NotCollectedError) as e:
                    dump.memory.read(addr, 8)
                assert not isinstance(e.value, ExcludedPageError)
                assert "excluded" not in str(e.value)
            else:
                with pytest.raises(ExcludedPageError, match=f"excluded by dump level 31 \\({kind.label}\\)"):
                    dump.memory.read(addr, 8)
    report = verify_dump([path])
    assert not report.damaged
    assert report.status == ("incomplete" if lost else "ok")


def test_drgn_fault_names_the_class(tmp_path):
    write_layout(tmp_path / "d.tsd", [DATA, PageClass.USER, ABSENT])
    with open_dump(tmp_path / "d.tsd") as dump:
        read = segment_reader(dump.memory.read, PAGE)
        with pytest.raises(drgn.FaultError) as e:
            read(0x101010, 8, 0, True)
        assert e.value.message == "excluded by dump level 31 (user data)"
        assert e.value.address == 0x101010
        with pytest.raises(drgn.FaultError) as e:
            read(0x102000, 8, 0, True)
        assert "excluded" not in e.value.message


def test_several_files_merge_excluded_runs_and_refuse_two_classes(tmp_path):
    a, b, c = tmp_path / "a.tsd", tmp_path / "b.tsd", tmp_path / "c.tsd"
    write_layout(a, [DATA, PageClass.FREE, ABSENT, ABSENT])
    write_layout(b, [ABSENT, PageClass.FREE, PageClass.FREE, DATA])
    with open_dump([a, b]) as dump:
        assert dump.excluded == [R.ExcludedRange(0x101000, 2 * PAGE, PageClass.FREE)]
        assert dump.completeness().complete
    write_layout(c, [ABSENT, PageClass.USER, ABSENT, ABSENT])
    with pytest.raises(ConflictError, match=r"0x101000-0x102000 is excluded as (user data|free page) in .* but as (free page|user data)"):
        open_dump([a, c])


# -- round trip through an ELF --------------------------------------------------------

@settings(max_examples=20)
@given(layout=st.lists(st.sampled_from([DATA, ZERO, *EXCLUDABLE]), min_size=1, max_size=24),
       level=st.sampled_from([31, 30, 2, 8, 16]))
def test_level_n_dump_round_trips_through_export_and_import(tmp_path_factory, layout, level):
    d = tmp_path_factory.mktemp("rt")
    src, elf, back = d / "src.tsd", d / "x.elf", d / "back.tsd"
    write_layout(src, layout, level=level)
    with open_dump(src) as dump:
        notes = notes_for_export(b"", dump.memory_map, dump.excluded, PAGE)
        write_elf_vmcore(elf, dump.memory, dump.vmcoreinfo, notes)
        before = (dump.memory_map, dump.excluded,
                  page_counts(dump.memory_map, dump.memory.ranges(), dump.excluded, PAGE))
    with ElfVmcore(elf) as core:  # no PT_LOAD covers an excluded page
        for r in before[1]:
            with pytest.raises(NotCollectedError):
                core.read(r.paddr, 1)
    res = import_vmcore(elf, back, threads=0)
    assert res.dump_level == level
    with open_dump(back) as dump:
        after = (dump.memory_map, dump.excluded,
                 page_counts(dump.memory_map, dump.memory.ranges(), dump.excluded, PAGE))
        assert b"TSUBAKI" not in (dump.notes or b"")  # not kept as a note: it is the records
        for i, kind in enumerate(layout):
            if kind == DATA:
                assert dump.memory.read(0x100000 + i * PAGE, PAGE) == page_bytes(i)
        assert dump.completeness().complete
    assert after == before


def test_tsubaki_note_crafted_is_one_line(tmp_path):
    from tsubaki_forensics.vmcore.filter_note import NT_TSUBAKI_EXCLUDED, TSUBAKI_NOTE_NAME
    from tsubaki_forensics.vmcore.notes import build_note

    mm = MemoryMap.from_ranges([(0, 16 * PAGE)], dump_level=31)
    good = R.pack_memory_map(mm)
    for desc, why in [(b"\x01", "shorter than"),
                      ((999).to_bytes(4, "little") + (0).to_bytes(4, "little"), "memory map of 999 bytes runs past"),
                      ((len(good)).to_bytes(4, "little") + (1).to_bytes(4, "little") + good,
                       "runs past the descriptor"),
                      ((len(good)).to_bytes(4, "little") + (0).to_bytes(4, "little") + good + b"x",
                       "after the last")]:
        with pytest.raises(FormatError, match=why) as e:
            parse_filter_note(build_note(TSUBAKI_NOTE_NAME, NT_TSUBAKI_EXCLUDED, desc), PAGE)
        assert "\n" not in str(e.value) and str(e.value).startswith("ELF note TSUBAKI")


# -- older readers and damaged records -------------------------------------------------

def test_a_reader_that_does_not_know_the_type_reports_it_in_one_line(tmp_path):
    """What a 1.3 reader does with EXCLUDED (type 8, MUST_UNDERSTAND), shown with a
    type this reader does not know either: a one-line problem, verify exits 2."""
    path = tmp_path / "future.tsd"
    mm = MemoryMap.from_ranges([(0, PAGE)], dump_level=31)
    with TsdWriter(path, dump_id=DID, memory_map=mm, threads=0) as w:
        w.write_memory(0, page_bytes(0))
        w._record(99, b"a class of pages this reader cannot interpret",
                  flags=R.RecordFlags.MUST_UNDERSTAND)
    with open_dump(path) as dump:
        assert [p.message for p in dump.problems] == ["record of unknown type 99 must be understood"]
    proc = run("verify", path, ok=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "must be understood by the reader" in proc.stdout


def _excluded_file(tmp_path, body: bytes):
    path = tmp_path / "crafted.tsd"
    mm = MemoryMap.from_ranges([(0, 64 * PAGE)], dump_level=31)
    with TsdWriter(path, dump_id=DID, memory_map=mm, threads=0) as w:
        w.write_memory(0, page_bytes(0))
        w._record(R.RecordType.EXCLUDED, body, flags=R.RecordFlags.MUST_UNDERSTAND)
    return path


RUN = R.EXCLUDED_RUN.pack
CRAFTED = [
    (b"", "payload too short"),
    (b"\x01\x00", "payload too short"),
    (R.EXCLUDED_HEAD.pack(0), "declares 0 runs"),
    (R.EXCLUDED_HEAD.pack(R.MAX_EXCLUDED_RUNS + 1), "declares 65537 runs"),
    (R.EXCLUDED_HEAD.pack(2) + RUN(PAGE, 1, 4), "but holds 24 bytes"),
    (R.EXCLUDED_HEAD.pack(1) + RUN(PAGE, 1, 4) + b"x", "but holds 25 bytes"),
    (R.EXCLUDED_HEAD.pack(1) + RUN(PAGE + 1, 1, 4), "not page-aligned"),
    (R.EXCLUDED_HEAD.pack(1) + RUN(PAGE, 0, 4), "empty"),
    (R.EXCLUDED_HEAD.pack(2) + RUN(4 * PAGE, 2, 4) + RUN(5 * PAGE, 1, 4), "overlapping"),
    (R.EXCLUDED_HEAD.pack(2) + RUN(4 * PAGE, 1, 4) + RUN(PAGE, 1, 4), "out of order"),
    (R.EXCLUDED_HEAD.pack(1) + RUN((1 << 64) - PAGE, 2, 4), "beyond 2\\^64"),
    (R.EXCLUDED_HEAD.pack(1) + RUN(PAGE, 1, 0), "unknown page class 0"),
    (R.EXCLUDED_HEAD.pack(1) + RUN(PAGE, 1, 9), "unknown page class 9"),
    (R.EXCLUDED_HEAD.pack(1) + RUN(PAGE, 1, 255), "unknown page class 255"),
]


@pytest.mark.parametrize("body,why", CRAFTED)
def test_crafted_excluded_bodies_are_one_line_damage(tmp_path, body, why):
    with pytest.raises(FormatError, match=why) as e:
        R.unpack_excluded(body, PAGE)
    assert "\n" not in str(e.value)
    path = _excluded_file(tmp_path, body)
    with open_dump(path) as dump:  # opens; the bad record is a problem, its pages are absent
        assert len(dump.problems) == 1 and "\n" not in dump.problems[0].message
        assert dump.excluded == []
    report = verify_dump([path])
    assert report.damaged


def test_crafted_body_via_the_cli_is_one_line(tmp_path):
    path = _excluded_file(tmp_path, R.EXCLUDED_HEAD.pack(3) + RUN(PAGE, 1, 4))
    proc = run("verify", path, ok=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    proc = run("inspect", path, "--format", "json")
    assert "declares 3 runs" in json.loads(proc.stdout)["problems"][0]["message"]


def test_file_cut_inside_an_excluded_record_keeps_the_runs_before(tmp_path):
    path = tmp_path / "cut.tsd"
    mm = MemoryMap.from_ranges([(0, 16 * PAGE)], dump_level=31)
    with TsdWriter(path, dump_id=DID, memory_map=mm, threads=0) as w:
        w.write_excluded(0, PAGE, PageClass.FREE)
        w.write_memory(PAGE, page_bytes(1))
        w.write_excluded(2 * PAGE, PAGE, PageClass.USER)
        w.flush()
        cut = w.bytes_written - 4
    raw = path.read_bytes()[:cut]
    path.write_bytes(raw)
    with open_dump(path) as dump:
        assert dump.excluded == [R.ExcludedRange(0, PAGE, PageClass.FREE)]
        assert any("file ends inside a EXCLUDED record" in p.message for p in dump.problems)
        c = dump.completeness()
        assert c.missing_bytes == 14 * PAGE  # the cut run is missing: nothing says it was excluded
    assert verify_dump([path]).status == "incomplete"


def test_writer_merges_runs_and_splits_records(tmp_path):
    path = tmp_path / "many.tsd"
    n = R.MAX_EXCLUDED_RUNS + 5
    mm = MemoryMap.from_ranges([(0, 2 * n * PAGE)], dump_level=31)
    with TsdWriter(path, dump_id=DID, memory_map=mm, threads=0) as w:
        w.write_excluded(0, PAGE, PageClass.FREE)
        w.write_excluded(PAGE, PAGE, PageClass.FREE)  # merged with the one before
        for i in range(1, n):  # every other page: n runs of one page
            w.write_excluded(2 * i * PAGE, PAGE, PageClass.USER)
    f = open_file(path, verify=True)
    assert not f.problems
    assert len(f.excluded) == n
    assert f.excluded[0] == R.ExcludedRange(0, 2 * PAGE, PageClass.FREE)
    types = [r.type for r in open_file(path).records]
    assert R.RecordType.EXCLUDED not in types
    raw = path.read_bytes()
    assert raw.count(R.RECORD_MAGIC + R.RecordType.EXCLUDED.to_bytes(2, "little")) == 2


def test_write_file_pages_writes_each_class(tmp_path):
    src = tmp_path / "ram"
    data = b"".join(page_bytes(i) for i in range(64))
    data = data[:10 * PAGE] + bytes(6 * PAGE) + data[16 * PAGE:]
    src.write_bytes(data)
    cls = np.zeros(64, np.uint8)
    cls[2:5] = PageClass.USER
    cls[10:16] = PageClass.ZERO
    cls[30:60] = PageClass.FREE
    cls[63] = PageClass.ABSENT  # written as data
    mm = MemoryMap.from_ranges([(0x200000, 64 * PAGE)], dump_level=31)
    import os
    fd = os.open(src, os.O_RDONLY)
    try:
        with TsdWriter(tmp_path / "d.tsd", dump_id=DID, memory_map=mm, threads=2,
                       chunk_size=16 * PAGE) as w:
            st_ = w.write_file_pages(0x200000, fd, 0, 64 * PAGE, cls)
    finally:
        os.close(fd)
    assert st_.excluded_bytes == 33 * PAGE and st_.zero_bytes == 6 * PAGE
    with open_dump(tmp_path / "d.tsd") as dump:
        assert dump.excluded == [R.ExcludedRange(0x202000, 3 * PAGE, PageClass.USER),
                                 R.ExcludedRange(0x21e000, 30 * PAGE, PageClass.FREE)]
        for i in [0, 1, 5, 9, 16, 29, 60, 63]:
            assert dump.memory.read(0x200000 + i * PAGE, PAGE) == data[i * PAGE:(i + 1) * PAGE]
        assert dump.completeness().complete


# -- import -d on a VMCOREINFO that cannot be classified ---------------------------------

@pytest.fixture
def plain_elf(tmp_path):
    path = tmp_path / "plain.elf"
    qemu_style_elf(path, [(0, b"".join(page_bytes(i) for i in range(8)) + bytes(8 * PAGE))],
                   sample_notes())
    return path


def test_import_level_31_without_struct_page_fields_names_the_field(tmp_path, plain_elf):
    proc = run("import", plain_elf, "-o", tmp_path / "d.tsd", "-d", "31", ok=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "VMCOREINFO lacks" in proc.stderr
    assert not (tmp_path / "d.tsd").exists()


def test_import_fallback_level_1_warns_and_writes_level_1(tmp_path, plain_elf):
    out = tmp_path / "d.tsd"
    proc = run("import", plain_elf, "-o", out, "-d", "31", "--fallback-level-1", "--format", "json")
    warnings = [line for line in proc.stderr.splitlines() if line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "VMCOREINFO lacks" in warnings[0]
    assert json.loads(proc.stdout)["dump_level"] == 1
    info = json.loads(run("inspect", out, "--format", "json").stdout)
    assert info["format"] == "1.3"
    assert info["memory"]["dump_level"] == 1
    assert info["memory"]["pages"] == {"total": 16, "kept": 8, "excluded": {
        "zero": 8, "cache": 0, "cache_private": 0, "user": 0, "free": 0, "hwpoison": 0, "offline": 0,
        "unknown": 0}}


@pytest.mark.parametrize("level", ["-1", "32", "x"])
def test_import_refuses_a_level_outside_0_31(tmp_path, plain_elf, level):
    proc = run("import", plain_elf, "-o", tmp_path / "d.tsd", "-d", level, ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
