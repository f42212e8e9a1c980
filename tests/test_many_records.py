"""Issue 22, finding 14: a dump of a million tiny records reads in bounded memory.

On main before the fix, ``inspect`` of 1,000,000 ZERO records (a 96 MB file)
peaked at 1.0 GiB: one Python object per record, per piece, per range
(``inspect --format json`` at 1.2 GiB, ``verify`` at 0.3 GiB after the first fix).  The
reader now keeps numpy columns (tsd/table.py, tsd/memory.py) and completeness
works on them (tsd/completeness.py); these tests hold that, and that the
vectorised interval algebra agrees with the plain one it replaced.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsubaki_forensics.tsd import TsdWriter, open_dump
from tsubaki_forensics.tsd import completeness as C
from tsubaki_forensics.tsd.memory import Range
from tsubaki_forensics.tsd.records import MemoryMap

from _budget import BUDGET, run_cli

STRIDE, LENGTH = 8192, 4096  # gaps between records: the writer cannot coalesce them


def write_zero_records(path, n: int) -> None:
    with TsdWriter(path, producer="test", threads=0) as w:
        for i in range(n):
            w.write_zero(i * STRIDE, LENGTH)


N = 1_000_000


@pytest.fixture(scope="module")
def million_zero(tmp_path_factory):
    """A 96 MB dump of a million ZERO records, built once for the module."""
    path = tmp_path_factory.mktemp("many") / "many.tsd"
    write_zero_records(path, N)
    return path


def test_inspect_of_a_million_zero_records_stays_under_the_budget(million_zero):
    run = run_cli("inspect", million_zero, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert f"{N} memory/zero/missing records" in run.stdout
    spans = [ln for ln in run.stdout.splitlines() if ln.startswith("  present ")]
    assert len(spans) == N  # every span listed, streamed
    assert spans[-1].split()[1] == f"{(N - 1) * STRIDE:#014x}-{(N - 1) * STRIDE + LENGTH:#014x}"
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"


def test_inspect_json_of_a_million_zero_records_stays_under_the_budget(million_zero):
    # 1.2 GiB before: a dict per range and the whole document as one string
    run = run_cli("inspect", "--format", "json", million_zero, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    info = json.loads(run.stdout)
    ranges = info["memory"]["ranges"]
    assert len(ranges) == N and info["files"][0]["memory_records"] == N
    assert ranges[0] == {"start": 0, "length": LENGTH, "kind": "zero"}
    assert ranges[-1] == {"start": (N - 1) * STRIDE, "length": LENGTH, "kind": "zero"}
    assert info["memory"]["zero_bytes"] == N * LENGTH and info["memory"]["missing"] == []


def test_verify_of_a_million_zero_records_stays_under_the_budget(million_zero):
    # 298 MiB before: the scan checked the INDEX by building an object per
    # entry, and reopening by the footer copied the entries (issue 22).
    run = run_cli("verify", million_zero, "--format", "json", timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    report = json.loads(run.stdout)
    assert report["status"] == "ok" and report["problems"] == []
    (f,) = report["files"]
    assert f["index_matches"] is True and f["has_footer"] is True
    assert report["completeness"]["present_bytes"] == N * LENGTH
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"


def test_a_million_holes_in_the_memory_map_stay_under_the_budget(tmp_path):
    # a hostile map: it lists the whole span, the records hold every other
    # page, so completeness finds a million gaps (inspect peaked at 0.9 GiB:
    # a Gap object, a tuple and a dict or line each; now gaps.GapList)
    path = tmp_path / "holes.tsd"
    with TsdWriter(path, producer="test", threads=0,
                   memory_map=MemoryMap.from_ranges([(0, N * STRIDE)], dump_level=31)) as w:
        for i in range(N):
            w.write_zero(i * STRIDE, LENGTH)
    run = run_cli("inspect", path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    missing = [ln for ln in run.stdout.splitlines() if ln.startswith("  missing ")]
    assert len(missing) == N and "INCOMPLETE" in run.stdout.splitlines()[0]
    assert missing[-1].split()[1] == f"{(N - 1) * STRIDE + LENGTH:#014x}-{N * STRIDE:#014x}"
    # the zero pages are counted from the numpy columns too (dump level 31 has bit 1)
    assert f"zero {N}" in run.stdout
    run = run_cli("verify", "--format", "json", path, timeout=600)
    assert run.returncode == 4, run.stderr[-2000:]  # incomplete, every record sound
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    c = json.loads(run.stdout)["completeness"]
    assert len(c["gaps"]) == N and c["missing_bytes"] == N * (STRIDE - LENGTH)
    assert c["gaps"][0] == {"start": LENGTH, "length": STRIDE - LENGTH, "kind": "absent", "reason": ""}


def test_records_ranges_and_completeness_keep_their_api(tmp_path):
    path = tmp_path / "few.tsd"
    with TsdWriter(path, producer="test", threads=0) as w:
        w.write_zero(0, 4096)
        w.write_memory(4096, b"\x01" * 4096)
        w.write_zero(3 * 4096, 4096)
        w.write_missing(5 * 4096, 4096, "bad page")
    with open_dump(path) as d:
        f = d.files[0]
        recs = list(f.records)
        assert [r.paddr for r in recs] == [0, 4096, 3 * 4096, 5 * 4096]
        assert f.records[-1] == recs[-1] and f.records[1:2] == recs[1:2] and len(f.records) == 4
        assert d.memory.ranges() == [Range(0, 4096, "zero"), Range(4096, 4096, "data"),
                                     Range(3 * 4096, 4096, "zero")]
        assert d.memory.ranges()[1].kind == "data"
        assert d.memory.missing_ranges() == [Range(5 * 4096, 4096, "missing")]
        assert d.memory.present_bytes == 3 * 4096 and d.memory.zero_bytes == 2 * 4096
        assert d.memory.read(4096 - 2, 4) == b"\0\0\x01\x01"
        c = d.completeness()
        assert (c.present_bytes, c.data_bytes, c.missing_bytes) == (3 * 4096, 4096, 4096)
        assert [(g.start, g.kind, g.reason) for g in c.gaps] == [(5 * 4096, "unreadable", "bad page")]


_edge = st.sampled_from([0, 1, 4095, 4096, 2**63, 2**64 - 4096, 2**64 - 1])
_pos = st.one_of(st.integers(0, 2**64 - 1), _edge, st.integers(0, 200))
_ranges = st.lists(st.tuples(_pos, st.integers(1, 2**64)).map(
    lambda t: (t[0], min(t[0] + t[1], 2**64))), max_size=12)


@given(_ranges, _ranges)
def test_vectorised_interval_algebra_matches_the_plain_one(xs, ys):
    x, y = C._merge(xs), C._merge(ys)
    raw = C._np_merge(np.array([a for a, _ in xs], np.uint64), np.array([b - 1 for _, b in xs], np.uint64))
    assert [(a, b + 1) for a, b in zip(raw[0].tolist(), raw[1].tolist())] == x
    assert C._np_size(raw) == C._size(x)
    assert C._np_overlap(y, raw) == C._size(C._intersect(x, y))
    assert C._np_minus(y, raw) == C._subtract(y, x)


_page = st.integers(0, 40).map(lambda p: p * 1024)  # quarter pages: pieces that straddle pages


@given(st.lists(st.tuples(_page, st.integers(1, 12).map(lambda n: n * 1024), st.booleans()), max_size=12),
       st.lists(st.tuples(_page, st.integers(1, 20).map(lambda n: n * 1024)), min_size=1, max_size=3),
       st.lists(st.tuples(_page, st.integers(1, 8).map(lambda n: n * 1024)), max_size=3))
def test_zero_page_count_from_columns_matches_the_plain_one(pieces, mapped, excluded):
    # page_counts on a RangeList (numpy, no object per range) == on Range objects
    from tsubaki_forensics.tsd.memory import RangeList
    from tsubaki_forensics.tsd.pages import page_counts
    from tsubaki_forensics.tsd.records import ExcludedRange, MemoryMap, PageClass

    ranges, pos = [], 0
    for gap, length, zero in pieces:  # disjoint, sorted, like PhysicalMemory.ranges()
        pos += gap
        ranges.append(Range(pos, length, "zero" if zero else "data"))
        pos += length
    cols = RangeList(np.array([r.start for r in ranges], np.uint64),
                     np.array([r.start + r.length - 1 for r in ranges], np.uint64),
                     np.array([r.kind == "zero" for r in ranges], bool))
    mm = MemoryMap.from_ranges(mapped, dump_level=31)
    ex = C._merge((a, a + n) for a, n in excluded)
    runs = [ExcludedRange(a, b - a, PageClass.FREE) for a, b in ex]
    assert page_counts(mm, cols, runs, 4096) == page_counts(mm, ranges, runs, 4096)


# -- MISSING records as columns (issue 22: "one object per MISSING record") --------

def _plain_gaps(absent, recorded):
    """The plain algebra the columns replaced: every gap named, with the reason
    of the first MISSING record (sorted) that meets it and says one."""
    failed = C._merge((a, a + n) for a, n, _ in recorded)
    reasons = sorted(recorded)
    out = []
    for a, b in C._intersect(absent, failed):
        why = next((r for s, n, r in reasons if s < b and a < s + n and r), "")
        out.append(C.Gap(a, b - a, "unreadable", why))
    out += [C.Gap(a, b - a, "absent") for a, b in C._subtract(absent, failed)]
    return sorted(out, key=lambda g: g.start)


class _Mem:
    def __init__(self, present, recorded):
        self._present, self._recorded = present, recorded

    def ranges(self):
        return self._present

    def missing_reasons(self):
        return self._recorded


def _as_columns(recorded):
    from tsubaki_forensics.tsd.table import MissingList, MissingReasons

    reasons = MissingReasons()
    for k, (_, _, why) in enumerate(recorded):
        reasons.add(1000 + k, why)
    cols = [(np.array([a for a, _, _ in recorded], np.uint64), np.array([n for _, n, _ in recorded], np.uint64),
             np.zeros(len(recorded), np.int32), reasons.index_of(np.arange(1000, 1000 + len(recorded))))]
    return MissingList.build(cols if recorded else [], [reasons])


_unit = st.integers(0, 30).map(lambda p: p * 512)


@given(st.lists(st.tuples(_unit, st.integers(1, 6).map(lambda n: n * 512), st.booleans()), max_size=8),
       st.lists(st.tuples(_unit, st.integers(1, 8).map(lambda n: n * 512),
                          st.sampled_from(["", "EIO", "bad sector", "timeout"])), max_size=8),
       st.lists(st.tuples(_unit, st.integers(1, 40).map(lambda n: n * 512)), max_size=3))
def test_gaps_named_by_missing_records_match_the_plain_algebra(pieces, recorded, mapped):
    present = C._merge((a, a + n) for a, n, _ in pieces)
    ranges = [Range(a, b - a, "data") for a, b in present]
    mm = MemoryMap.from_ranges(mapped, dump_level=1) if mapped else None
    for rec in (recorded, _as_columns(recorded)):
        c = C.measure(_Mem(ranges, rec), mm)
        if mm is not None:
            absent = C._subtract(C._merge((a, a + n) for a, n in mm.ranges), present)
            assert list(c.gaps) == _plain_gaps(absent, recorded)
        else:
            failed = C._subtract(C._merge((a, a + n) for a, n, _ in recorded), present)
            assert list(c.gaps) == _plain_gaps(failed, recorded)
            assert c.missing_bytes == C._size(failed)
    assert list(_as_columns(recorded)) == sorted(recorded)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4), st.sampled_from(["zero", "data", "missing"])),
                min_size=1, max_size=10))
def test_missing_ranges_from_columns_match_the_plain_subtraction(records):
    """``missing_ranges`` of a written dump: MISSING records less what other records hold."""
    import tempfile

    held_pages: set[int] = set()  # present records never overlap each other (that is a conflict)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/d.tsd"
        with TsdWriter(path, producer="test", threads=0) as w:
            for page, n, kind in records:
                if kind != "missing":
                    if held_pages & set(range(page, page + n)):
                        continue
                    held_pages |= set(range(page, page + n))
                if kind == "zero":
                    w.write_zero(page * 4096, n * 4096)
                elif kind == "data":
                    w.write_memory(page * 4096, bytes([page + 1]) * (n * 4096))
                else:
                    w.write_missing(page * 4096, n * 4096, f"lost {page}")
        with open_dump(path) as d:
            got = [(r.start, r.length, r.kind) for r in d.memory.missing_ranges()]
            held = C._merge((r.start, r.end) for r in d.memory.ranges())
            reasons = list(d.memory.missing_reasons())
    want = C._subtract(C._merge((a, a + n) for a, n, _ in reasons), held)
    assert got == [(a, b - a, "missing") for a, b in want]
    assert reasons == sorted((p * 4096, n * 4096, f"lost {p}") for p, n, k in records if k == "missing")


@pytest.fixture(scope="module")
def million_missing(tmp_path_factory):
    """140 MB: a million MISSING records, each with a reason of its own."""
    path = tmp_path_factory.mktemp("missing") / "missing.tsd"
    with TsdWriter(path, producer="test", threads=0) as w:
        for i in range(N):
            w.write_missing(i * STRIDE, LENGTH, f"read error at {i * STRIDE:#x}")
    return path


def test_inspect_json_of_a_million_missing_records_stays_under_the_budget(million_missing):
    """Before: a dict entry and a str per record, a tuple per record in memory
    and completeness, and a reason looked up per gap by a scan of every record
    (quadratic: ``inspect`` had not finished after 7 minutes, at 835 MiB)."""
    run = run_cli("inspect", "--format", "json", million_missing, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    mem = json.loads(run.stdout)["memory"]
    assert len(mem["missing_records"]) == N and len(mem["missing"]) == N
    last = (N - 1) * STRIDE
    assert mem["missing_records"][-1] == {"start": last, "length": LENGTH, "reason": f"read error at {last:#x}"}
    assert mem["missing"][-1] == {"start": last, "length": LENGTH, "kind": "unreadable",
                                  "reason": f"read error at {last:#x}"}


def test_verify_of_a_million_missing_records_stays_under_the_budget(million_missing):
    run = run_cli("verify", million_missing, timeout=600)
    assert run.returncode == 4, run.stderr[-2000:]  # sound, incomplete: every record says so
    assert "Traceback" not in run.stderr
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
