"""Issue 22: millions of runs cost columns, never an object per run.

A kdump bitmap that alternates every frame claims one run per two frames (a
16 MiB file: 3.4e7 runs of dumped pages and as many excluded ones); a
``.tsd`` may hold EXCLUDED records of 65,536 runs each, or a memory map of
4 Mi ranges in one record; a ``--split`` set may claim a huge machine.  The
runs are numpy columns end to end (``tsd.table.RunList``), at most
``limits.MAX_RUNS`` per list: past it a kdump file is refused with one line,
a ``.tsd`` record is reported and ignored.  Each file is made here, driven
through the CLI in a child process, and its peak RSS held under the budget
(``tests/_budget.py``).  The columns are checked against the plain algebra
they replace at the end.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import ConflictError, FormatError
from tsubaki_forensics.limits import MAX_RUNS
from tsubaki_forensics.tsd import TsdWriter
from tsubaki_forensics.tsd import completeness as C
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.tsd.pages import page_counts
from tsubaki_forensics.tsd.reader import _merge_excluded_columns, merge_excluded
from tsubaki_forensics.tsd.records import ExcludedRange, MemoryMap, PageClass
from tsubaki_forensics.tsd.table import RunList
from tsubaki_forensics.vmcore.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER

from _budget import BUDGET, assert_one_line_error, run_cli

PS = 4096


def write_alternating_kdump(path, pfns: int, *, split: tuple[int, int] | None = None,
                            valid: int = 0xFF, dumped: int = 0x55) -> None:
    """A kdump header over ``pfns`` frames whose bitmaps repeat the bytes
    ``valid`` and ``dumped`` (0x55: every other frame), no page descriptors
    (the dumped pages are missing: cut short).  ``split``: one file of a
    ``--split`` set holding that pfn range, its bitmaps sparse (all zero but
    frame 0's memory bit) so that the set claims a machine for free."""
    bitmap = -(-pfns // 8 // PS) * PS
    uts = b"".join(f.ljust(65, b"\0") for f in (b"Linux", b"x", b"6.1.0", b"#1", b"x86_64", b""))
    head = DISK_DUMP_HEADER.pack(b"KDUMP   ", 6, uts, 0, 0, 0, PS, 1, 2 * bitmap // PS, 0, 0, 0, 0, 0, 1)
    start, end = split or (0, pfns)
    sub = KDUMP_SUB_HEADER.pack(0, 31, int(split is not None), start, end, 0, 0, 0, 0, 0, 0, start, end, pfns)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(PS)
        f.write(sub)
        f.seek(2 * PS)
        if split is not None:
            f.write(b"\x01")
            f.truncate(2 * PS + 2 * bitmap)
            return
        f.write(bytes([valid]) * bitmap)
        f.write(bytes([dumped]) * bitmap)


# -- 1. kdump bitmaps ---------------------------------------------------------------


@pytest.fixture(scope="module")
def alternating_16m(tmp_path_factory):
    """16 MiB: 2^26 frames, every other one dumped (3.4e7 runs of each kind).
    On main: ``inspect`` died of MemoryError at a 4 GB address-space limit
    (3.7 GiB RSS, 11 s)."""
    path = tmp_path_factory.mktemp("alt") / "alt16.kdump"
    write_alternating_kdump(path, 1 << 26)
    return path


@pytest.mark.parametrize("command", ["inspect", "verify", "import"])
def test_an_alternating_kdump_bitmap_is_refused_in_one_line(alternating_16m, tmp_path, command):
    out = ["-o", tmp_path / "out.tsd"] if command == "import" else []
    run = run_cli(command, alternating_16m, *out)
    assert_one_line_error(run, needle=f"more than {MAX_RUNS}")
    assert not (tmp_path / "out.tsd").exists()


@pytest.fixture(scope="module")
def alternating_at_the_bound(tmp_path_factory):
    """2 * MAX_RUNS frames alternating: exactly MAX_RUNS runs of excluded and of
    missing pages (512 KiB), the most a file may have: read, under the budget."""
    path = tmp_path_factory.mktemp("alt") / "alt.kdump"
    write_alternating_kdump(path, 2 * MAX_RUNS)
    return path


@pytest.mark.parametrize("command", ["inspect", "verify", "import"])
def test_an_alternating_kdump_at_the_bound_reads_under_the_budget(alternating_at_the_bound, tmp_path, command):
    out = tmp_path / "out.tsd"
    run = run_cli(command, alternating_at_the_bound, *(["-o", out] if command == "import" else []),
                  timeout=300, stdout=None if command != "inspect" else None)
    assert "Traceback" not in run.stderr
    assert run.returncode in ((0,) if command != "verify" else (4, 5)), run.stderr[-2000:]
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    half = MAX_RUNS * PS
    if command == "inspect":
        assert f"{MAX_RUNS} range(s)" in run.stdout  # the missing runs, counted from columns
    if command == "import":
        run = run_cli("inspect", "--format", "json", out, timeout=300)
        assert run.returncode == 0 and run.peak_rss < BUDGET, (run.stderr[-2000:], run.peak_rss >> 20)
        head = run.stdout[:run.stdout.index('"ranges"')]  # memory.pages comes before the streams
        assert f'"excluded_bytes": {half}' in head.replace("\n", " ").replace("  ", " ") or \
            f'"excluded_bytes":{half}' in head



def test_the_bound_on_runs_grows_with_the_input(tmp_path):
    """MAX_RUNS bounds a small (maybe crafted) file only: a big dump of a big,
    fragmented machine may hold one run per BYTES_PER_RUN bytes of itself.
    The same bitmaps (8 runs past MAX_RUNS) are refused in a 512 KiB file and
    read once the file is as large as a real dump holding that many runs would
    be (a sparse tail: its size is what counts, never its bytes)."""
    from tsubaki_forensics.limits import BYTES_PER_RUN, max_runs
    from tsubaki_forensics.vmcore.kdump import KdumpFile

    runs = MAX_RUNS + 8
    path = tmp_path / "big.kdump"
    write_alternating_kdump(path, 2 * runs)
    with KdumpFile(path) as dump, pytest.raises(FormatError, match=f"more than {MAX_RUNS} excluded runs"):
        dump.excluded_ranges()
    with open(path, "r+b") as f:
        f.truncate(runs * BYTES_PER_RUN)
    assert max_runs(runs * BYTES_PER_RUN) == runs
    with KdumpFile(path) as dump:
        excluded = dump.excluded_ranges()
        assert len(excluded) == runs
        assert excluded[-1] == ((2 * runs - 1) * PS, PS)  # frames 1, 3, 5, ... are not dumped

# -- 2. a .tsd of millions of EXCLUDED runs, a map of millions of ranges --------------------------


@pytest.fixture(scope="module")
def excluded_2m(tmp_path_factory):
    """2 * MAX_RUNS EXCLUDED runs (every other page of a 16 GiB map), 32 MiB in
    32 records: the first MAX_RUNS are read as columns, the records past them
    reported and ignored (their pages then count as missing)."""
    path = tmp_path_factory.mktemp("exc") / "exc.tsd"
    n = 2 * MAX_RUNS
    mm = MemoryMap.from_ranges([(0, 2 * n * PS)], dump_level=31)
    with TsdWriter(path, producer="test", threads=0, memory_map=mm) as w:
        for i in range(n):
            w.write_excluded(2 * i * PS, PS, PageClass.FREE)
    return path


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_millions_of_excluded_runs_read_under_the_budget(excluded_2m, command):
    run = run_cli(command, excluded_2m, timeout=300)
    assert "Traceback" not in run.stderr
    # inspect: incomplete (exit 0); verify: the 16 records past the bound are damage (exit 2, one line)
    assert run.returncode == (0 if command == "inspect" else 2), run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == (0 if command == "inspect" else 1), run.stderr[-2000:]
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    said = run.stdout + run.stderr
    assert f"EXCLUDED runs past {MAX_RUNS}" in said  # the records past the bound, named


def _map_file(path, ranges: int) -> None:
    """A .tsd whose memory map has ``ranges`` one-page ranges with holes between."""
    starts = np.arange(ranges, dtype=np.uint64) * np.uint64(2 * PS)
    mm = MemoryMap(RunList(starts, np.full(ranges, PS, np.uint64)), 1)
    with TsdWriter(path, producer="test", threads=0, memory_map=mm) as w:
        w.write_zero(0, PS)


@pytest.mark.parametrize("ranges", [MAX_RUNS, MAX_RUNS + 1])
def test_a_memory_map_of_a_million_ranges_reads_under_the_budget(tmp_path, ranges):
    """A map at the bound is read as columns (every range but one missing: a
    GapList); one range more and the map is reported and ignored (the total
    is then unknown, said so)."""
    path = tmp_path / "map.tsd"
    _map_file(path, ranges)
    run = run_cli("inspect", path, timeout=300)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    if ranges == MAX_RUNS:
        assert f"in {ranges} ranges" in run.stdout and f"in {ranges - 1} range(s)" in run.stdout
    else:
        assert f"more than {MAX_RUNS}" in run.stdout
        assert "total is unknown" in run.stdout


# -- 3. --split sets claiming a huge machine ------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "verify", "import"])
def test_a_split_set_claiming_a_huge_machine_costs_no_memory(tmp_path, command):
    """Two files of a --split set claiming 2^27 frames (512 GiB; 16 MiB sparse
    each): the set built a byte-per-frame mask of memory, of dumped pages per
    file and of the union, and a pfn per dumped page (see RELIABILITY.md);
    now every mask is a slice at a time across the files."""
    frames = 1 << 27
    paths = [tmp_path / "s1", tmp_path / "s2"]
    write_alternating_kdump(paths[0], frames, split=(0, frames // 2))
    write_alternating_kdump(paths[1], frames, split=(frames // 2, frames))
    out = ["-o", tmp_path / "out.tsd"] if command == "import" else []
    run = run_cli(command, *paths, *out, timeout=300)
    assert run.returncode in (0, 4, 5) and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"


# -- the columns agree with the plain algebra ----------------------------------------------------


runs_st = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 6), st.sampled_from([2, 3, 5])),
                   max_size=30)


def _excluded(rows) -> list[ExcludedRange]:
    """Sorted, disjoint ExcludedRanges from (page, pages, class) rows."""
    out, pos = [], 0
    for page, pages, cls in sorted(rows):
        page = max(page, pos)
        out.append(ExcludedRange(page * PS, pages * PS, PageClass(cls)))
        pos = page + pages
    return out


class _File:
    def __init__(self, name, excluded, columns: bool):
        self.name = name
        self.excluded = R.excluded_list(
            np.array([r.paddr for r in excluded], np.uint64), np.array([r.length for r in excluded], np.uint64),
            np.array([int(r.cls) for r in excluded], np.uint32)) if columns else excluded


@settings(max_examples=200, deadline=None)
@given(runs_st, runs_st)
def test_merged_excluded_columns_equal_the_list_merge(a, b):
    files = [_File("a", _excluded(a), False), _File("b", _excluded(b), False)]
    try:
        want = merge_excluded(files)
    except ConflictError:
        with pytest.raises(ConflictError):
            _merge_excluded_columns([_File("a", _excluded(a), True), _File("b", _excluded(b), True)])
        return
    got = _merge_excluded_columns([_File("a", _excluded(a), True), _File("b", _excluded(b), False)])
    assert list(got) == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.integers(0, 20), st.integers(2**52 - 20, 2**52 - 1)),
                          st.integers(0, 3), st.integers(0, 9)), max_size=12))
def test_excluded_columns_check_what_the_list_checks(rows):
    body = R.EXCLUDED_HEAD.pack(len(rows)) + b"".join(
        R.EXCLUDED_RUN.pack(a * (PS if k % 3 else 1), p, c) for k, (a, p, c) in enumerate(rows))
    try:
        want = R.unpack_excluded(body, PS)
    except FormatError as e:
        with pytest.raises(FormatError) as got:
            R.unpack_excluded_columns(body, PS)
        assert str(got.value) == str(e)
        return
    a, n, c = R.unpack_excluded_columns(body, PS)
    assert list(R.excluded_list(a, n, c)) == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=10),
       st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5), st.integers(0, 16)), max_size=6),
       st.booleans())
def test_map_columns_check_what_the_tuples_check(ranges, excluded, top):
    big = 2**64 - 60 * PS if top else 0
    ranges = [(big + a * PS, n * PS) for a, n in ranges]
    excluded = [(big + a * PS, n * PS, b) for a, n, b in excluded]
    mm = MemoryMap(tuple(ranges), 3, tuple(excluded))
    cols = MemoryMap(RunList(np.array([a for a, _ in ranges], np.uint64),
                             np.array([n for _, n in ranges], np.uint64)), 3,
        RunList(np.array([a for a, _, _ in excluded], np.uint64), np.array([n for _, n, _ in excluded], np.uint64),
                np.array([b for _, _, b in excluded], np.uint32)))
    try:
        body = R.pack_memory_map(mm)
    except ValueError as e:
        with pytest.raises(ValueError) as got:
            R.pack_memory_map(cols)
        assert str(got.value) == str(e)
        return
    assert R.pack_memory_map(cols) == body
    fields = struct.unpack_from("<III", body)
    assert fields[1:] == (len(ranges), len(excluded))


class _Mem:
    """A memory of present ranges (Range-like) and MISSING tuples."""

    def __init__(self, present, missing):
        from tsubaki_forensics.tsd.memory import Range

        self._ranges = [Range(a, n, "zero" if z else "data") for a, n, z in present]
        self._missing = missing

    def ranges(self):
        return self._ranges

    def missing_reasons(self):
        return list(self._missing)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 8)), min_size=1, max_size=6),
       runs_st, st.lists(st.tuples(st.integers(0, 60), st.integers(1, 4), st.booleans()), max_size=8),
       st.lists(st.tuples(st.integers(0, 60), st.integers(1, 4)), max_size=4))
def test_completeness_and_pages_from_columns_equal_the_lists(mapped, excl, present, missing):
    mm_list = MemoryMap.from_ranges([(a * PS, n * PS) for a, n in mapped], dump_level=31)
    mm_cols = MemoryMap(RunList(np.array([a for a, _ in mm_list.ranges], np.uint64),
                                np.array([n for _, n in mm_list.ranges], np.uint64)), 31)
    ex = _excluded(excl)
    ex_cols = _File("x", ex, True).excluded
    seen, pres = set(), []
    for a, n, z in sorted(present):
        if all(p not in seen for p in range(a, a + n)):
            seen.update(range(a, a + n))
            pres.append((a * PS, n * PS, z))
    mem = _Mem(pres, [(a * PS, n * PS, "lost") for a, n in missing])
    want = C.measure(mem, mm_list, excluded=ex)
    got = C.measure(mem, mm_cols, excluded=ex_cols)
    assert got == want or (got.gaps == want.gaps and got.reason == want.reason)
    assert page_counts(mm_cols, mem.ranges(), ex_cols, PS) == page_counts(mm_list, mem.ranges(), ex, PS)


def test_an_export_of_many_excluded_runs_keeps_them_as_columns(tmp_path):
    """``export`` writes a dump's EXCLUDED runs into its TSUBAKI ELF note and
    opening the ELF reads them back: 100,000 runs go through as columns (the
    note was read into a list of objects; a 64 MiB note holds 4 Mi runs)."""
    from tsubaki_forensics.vmcore.foreign import open_any

    n = 100_000
    src = tmp_path / "exc.tsd"
    mm = MemoryMap.from_ranges([(0, 2 * n * PS)], dump_level=31)
    with TsdWriter(src, producer="test", threads=0, memory_map=mm) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0-synthetic\nPAGESIZE=4096\n")
        for i in range(n):
            w.write_excluded(2 * i * PS, PS, PageClass.USER if i % 3 else PageClass.FREE)
        w.write_memory(PS, b"\x11" * PS)
    run = run_cli("export", src, "-o", tmp_path / "x.elf", timeout=300)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.peak_rss < BUDGET
    with open_any([src]) as a, open_any([tmp_path / "x.elf"]) as b:
        assert hasattr(b.excluded, "starts") and len(b.excluded) == len(a.excluded) == n
        assert np.array_equal(b.excluded.starts, a.excluded.starts)
        assert np.array_equal(b.excluded.tags, a.excluded.tags)
        assert b.memory.read(PS, PS) == b"\x11" * PS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 9)), max_size=25),
       st.lists(st.tuples(st.integers(0, 200), st.integers(1, 9)), max_size=25))
def test_set_difference_in_pieces_equals_it_whole(y, x):
    """``np_minus_set`` cuts a big ``y`` in pieces (working copies of a few
    MiB): with pieces of 2 ranges it gives what it gives whole."""
    def as_set(rows):
        return C._np_merge(np.array([a for a, _ in rows], np.uint64), np.array([a + n - 1 for a, n in rows], np.uint64))

    ys, xs = as_set(y), as_set(x)
    whole = C.np_minus_set(ys, xs)
    saved = C._MINUS_PIECE
    C._MINUS_PIECE = 2
    try:
        pieces = C.np_minus_set(ys, xs)
    finally:
        C._MINUS_PIECE = saved
    assert whole[0].tolist() == pieces[0].tolist() and whole[1].tolist() == pieces[1].tolist()
