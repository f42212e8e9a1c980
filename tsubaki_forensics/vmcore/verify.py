"""``verify`` for dump files that are not ``.tsd``: what can be checked, checked.

Why its own pass: opening a kdump file trusts its page descriptors and
decompresses a page only when it is read.  Here every descriptor is checked
against the file (its data lies after the descriptor table and inside the
file, its size is 1..page size, its flags name a known codec), the two
bitmaps against each other (every dumped page is memory), and every kept
page is decompressed and must give exactly one page.  A file cut short (or
written INCOMPLETE by makedumpfile) is *incomplete*: its descriptors or
data end together at the cut; a descriptor that points past the end while
later ones do not, into the headers, or with a bad size or codec, is
*damage*.  Excluded pages (the producer's dump level) are counted apart
from missing ones.  The result has the shape of
:class:`~tsubaki_forensics.tsd.verify.VerifyReport`, so ``verify`` prints and
exits the same way for every format (0 sound and whole, 2 damaged, 4
incomplete).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..tsd.completeness import Completeness, measure
from ..tsd.reader import Problem
from ..tsd.table import RunList, merge_runs

__all__ = ["verify_any", "verify_foreign", "ForeignVerifyReport", "ForeignFileReport"]

_CODEC_BITS = 0x01 | 0x02 | 0x04 | 0x20  # zlib, lzo, snappy, zstd (makedumpfile's DUMP_DH_COMPRESSED_*)
_LIST = 32  # damaged pages named one by one; the rest counted


@dataclass
class ForeignFileReport:
    """One file's summary (``verify --format json``'s ``files``)."""

    path: str
    size: int
    format: str
    memory_records: int = 0  # pages (kdump) or PT_LOAD segments (ELF) read and checked
    has_footer: bool = True  # these formats have none: never "cut" for lack of one
    index_matches: bool | None = None
    summary: str = ""


@dataclass
class ForeignVerifyReport:
    """:class:`~tsubaki_forensics.tsd.verify.VerifyReport`'s interface for a foreign file."""

    files: list[ForeignFileReport] = field(default_factory=list)
    damage: list[Problem] = field(default_factory=list)
    cut: list[Problem] = field(default_factory=list)
    completeness: Completeness | None = None

    @property
    def problems(self) -> list[Problem]:
        return self.damage + self.cut

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def incomplete(self) -> bool:
        c = self.completeness
        return bool(self.cut) or (c is not None and c.complete is False)

    @property
    def status(self) -> str:
        return "damaged" if self.damaged else "incomplete" if self.incomplete else "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verify_any(paths: list[str | os.PathLike[str]], *,
               progress: Callable[[int, int], None] | None = None) -> Any:
    """Verify the files of one dump, whatever their format (by magic)."""
    from ..tsd.verify import verify_dump
    from .foreign import tsd_or_kind

    if all(tsd_or_kind(Path(p)) == "tsd" for p in paths):
        return verify_dump(paths, progress=progress)
    return verify_foreign([Path(p) for p in paths], progress=progress)


def verify_foreign(paths: list[Path], *,
                   progress: Callable[[int, int], None] | None = None) -> ForeignVerifyReport:
    """Check an ELF vmcore or a kdump file (set); headers that do not parse raise FormatError."""
    from .foreign import open_foreign

    report = ForeignVerifyReport()
    with open_foreign(paths) as dump:
        if dump.kind in ("elf-vmcore", "lime"):  # memory as it lies in the file: every byte read
            _verify_elf(dump, report)
        else:
            _verify_kdump(dump, report, progress)
    return report


def _verify_elf(dump: Any, report: ForeignVerifyReport) -> None:
    mem = dump.memory
    for p in dump.problems:  # an ELF or LiME file cut short: what it lacks is missing
        report.cut.append(Problem(str(dump.path), dump.files[0].size, p))
    for r in mem.ranges():  # every held byte readable (an I/O error names its place)
        for a in range(r.start, r.start + r.length, 64 << 20):
            try:
                mem.read(a, min(64 << 20, r.start + r.length - a))
            except OSError as e:
                report.damage.append(Problem(str(dump.path), a, f"physical {a:#x}: unreadable: {e}"))
    c = dump.completeness()
    report.completeness = c
    left_out = _total(dump.excluded)
    report.files.append(ForeignFileReport(
        str(dump.path), dump.files[0].size, dump.header.format, len(mem.ranges()),
        summary=f"{_mib(mem.present_bytes)} held in {len(mem.ranges())} ranges, "
                f"{_mib(left_out)} excluded by the producer"))


def _verify_kdump(dump: Any, report: ForeignVerifyReport,
                  progress: Callable[[int, int], None] | None) -> None:
    """Per file, one flag per page descriptor (sound so far), never one per pfn
    of the machine: a header claiming a huge machine costs time, not memory."""
    from .foreign import _Memory, _missing_runs
    from .kdump import PageDamage

    k = dump.reader
    files = getattr(k, "files", [k])
    ps = k.page_size
    bad_pfns: list[int] = []
    sound: dict[int, np.ndarray] = {}  # id(file) -> per descriptor: data in the file, sound so far
    for f in files:
        where = str(f.path)
        for p in f.problems:
            if "dumped pages are missing" in p:
                continue  # said precisely below, per descriptor
            (report.damage if "damaged" in p or "absurd" in p else report.cut).append(Problem(where, 0, p))
        damaged, absent, unwritten = _check_descriptors(f)
        ok = f._present.copy()  # descriptors past the table's readable end are not in it: missing
        ok[[i for i, _ in damaged]] = False
        for why in _group(f, damaged):
            report.damage.append(Problem(where, 0, why))
        n = f.dumped_count
        ok[unwritten] = False
        sound[id(f)] = ok
        cut = absent + len(unwritten)
        if cut:
            what = ("never written (makedumpfile marked the file INCOMPLETE)" if f.header.incomplete
                    else "the file ends before their descriptors or data (cut short)")
            report.cut.append(Problem(where, f.file_size, f"{cut} of {n} dumped pages missing: {what}"))
    total = sum(int(np.count_nonzero(ok)) for ok in sound.values())
    done = 0
    for f in files:
        ok = sound[id(f)]
        for pfns in f.pfn_slices_by_index(ok.copy()):
            for pfn in pfns.tolist():
                try:
                    f.read_page(pfn)
                except PageDamage as e:
                    bad_pfns.append(pfn)
                    ok[f._index(pfn)] = False
                    if len(bad_pfns) <= _LIST:
                        report.damage.append(Problem(str(f.path), pfn * ps, str(e)))
                if progress and done % 4096 == 0:
                    progress(done * ps, total * ps)
                done += 1
    if len(bad_pfns) > _LIST:
        report.damage.append(Problem(str(k.path), 0, f"... and {len(bad_pfns) - _LIST} more pages "
                                                     f"that do not decompress"))
    # the runs as columns, files joined by a merge of columns (never a tuple
    # per run: a bitmap alternating every frame, issue 22)
    by_file = [f.runs_by_index(sound[id(f)]) for f in files]
    good_runs = _join([g for g, _ in by_file])
    bad_runs = _join([b for _, b in by_file])
    del by_file
    mem = _Memory(k, good_runs, _missing_runs(bad_runs, "damaged or not in the kdump file"))
    report.completeness = measure(mem, dump.memory_map, dump.properties, excluded=dump.excluded)
    excluded = _total(dump.excluded) // ps
    lost = 0
    for f in files:
        good = int(np.count_nonzero(sound[id(f)]))
        lost += f.dumped_count - good
        report.files.append(ForeignFileReport(
            str(f.path), f.file_size, dump.header.format, good,
            summary=f"{good} of {f.dumped_count} dumped pages decompress to {ps} bytes"))
    report.files[-1].summary += (f"; {excluded} pages excluded by the producer (makedumpfile -d "
                                 f"{k.header.dump_level}), {lost} missing or damaged")


def _join(parts: list) -> RunList:
    """Run columns of the files of a --split set (each its own pfn range),
    sorted, touching ones joined: :func:`_merge` over columns."""
    if len(parts) == 1:
        return parts[0]
    s, n = merge_runs(np.concatenate([p.starts for p in parts]), np.concatenate([p.lengths for p in parts]))
    return RunList(s, n)


def _total(runs) -> int:
    """Bytes of (EXCLUDED) runs: by columns when they are columns."""
    if hasattr(runs, "total"):
        return runs.total()
    return sum(r.length for r in runs)


def _check_descriptors(f: Any) -> tuple[list[tuple[int, str]], int, np.ndarray]:
    """Damaged descriptors (index, why) of one kdump file, how many descriptors
    the table lacks at its end, and the indices whose data the file lacks
    (cut short, INCOMPLETE)."""
    n = f.dumped_count
    d = f.desc
    count = len(d)
    size = f._src.size
    table_end = f._desc_base + n * 24
    damaged: list[tuple[int, str]] = []
    if not count:
        return damaged, n, np.zeros(0, np.int64)
    off = d["offset"].astype(np.int64)
    sz = d["size"].astype(np.int64)
    flags = d["flags"].astype(np.int64)
    fits = (off > 0) & (sz > 0) & (off + sz <= size)
    if f._src.flat is not None:
        fits &= f._src.flat.covered_many(d["offset"], sz)
    if f.header.incomplete:  # never filled in: zeros, or past the end, after the last written one
        written = np.flatnonzero(fits)
        upto = int(written[-1]) + 1 if len(written) else 0
        return (_bad(f, off, sz, flags, table_end, fits, upto, damaged), n - count,
                np.arange(upto, count))
    # A cut file lacks a *suffix*: makedumpfile writes page data in pfn order,
    # except zero pages, whose descriptors all share the one zero page written first.
    values, counts = np.unique(off, return_counts=True)
    shared = np.isin(off, values[counts > 1])
    ok_idx = np.flatnonzero(fits & ~shared)
    last_ok = int(ok_idx[-1]) if len(ok_idx) else -1
    tail = np.zeros(count, bool)
    tail[last_ok + 1:] = ~fits[last_ok + 1:] & (off[last_ok + 1:] >= table_end)
    tail[last_ok + 1:] &= (sz[last_ok + 1:] > 0) & ((flags[last_ok + 1:] & ~_CODEC_BITS) == 0)
    keep = np.flatnonzero(~tail)
    _bad(f, off[keep], sz[keep], flags[keep], table_end, fits[keep], len(keep), damaged)
    damaged[:] = [(int(keep[i]), why) for i, why in damaged]
    return damaged, n - count, np.flatnonzero(tail)


def _bad(f: Any, off, sz, flags, table_end: int, fits, upto: int,
         damaged: list[tuple[int, str]]) -> list[tuple[int, str]]:
    ps = f.page_size
    checks = [(~fits[:upto], "its data lies outside the file"),
              (off[:upto] < table_end, "its data would overlap the headers or descriptor table"),
              ((sz[:upto] <= 0) | (sz[:upto] > ps), f"its size is not 1..{ps}"),
              ((flags[:upto] & ~_CODEC_BITS) != 0, "its flags name no known codec")]
    seen = set()
    for mask, why in checks:
        for i in np.flatnonzero(mask).tolist():
            if i not in seen:
                seen.add(i)
                damaged.append((i, why))
    damaged.sort()
    return damaged


def _group(f: Any, damaged: list[tuple[int, str]]):
    """One problem line per reason: the first pfns named, the rest counted."""
    by: dict[str, list[int]] = {}
    for i, why in damaged:
        by.setdefault(why, []).append(i)
    for why, indices in by.items():
        named = ", ".join(f"{p:#x}" for p in f.pfns_at(indices[:8]))
        more = f" and {len(indices) - 8} more" if len(indices) > 8 else ""
        yield f"damaged page descriptor for pfn {named}{more}: {why}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
