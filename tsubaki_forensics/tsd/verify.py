"""Check every byte of one dump: the engine behind ``tsubaki-forensics verify``.

Why a separate pass: opening a closed file trusts its INDEX and checks each
record only when memory is read.  Verification instead scans every record
(checksum, framing, sequence), decompresses every MEMORY frame (content size,
bomb limits), checks the INDEX against the scan, and merges the files to find
conflicting overlaps, so "exit 0" means every piece is sound.  It then
measures completeness against the dump's memory map (FORMAT.md §7.4), with
the records found damaged taken out: a sound but incomplete dump (cut short,
or missing memory the map lists) is told apart from a damaged one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ConflictError, FormatError
from . import records as R
from .completeness import Completeness
from .memory import decode_dedup, decode_memory
from .reader import Dump, Problem, RecordInfo, TsdFile
from .table import RecordTable

__all__ = ["verify_dump", "VerifyReport", "FileReport", "TRUNCATION_PROBLEMS"]

#: Problems that only say a file ends early (FORMAT.md §6: every prefix on a
#: record boundary is a valid dump; §7.2): a dump that has only these is
#: incomplete, not damaged.
TRUNCATION_PROBLEMS = ("no END footer", "file ends inside a ")


@dataclass
class FileReport:
    path: str
    size: int
    memory_records: int = 0
    has_footer: bool = False
    index_matches: bool | None = None  # None: no index to compare


@dataclass
class VerifyReport:
    files: list[FileReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: measured with damaged records taken out; None if the files cannot merge
    completeness: Completeness | None = None

    @property
    def damage(self) -> list[Problem]:
        """Problems other than a file ending early."""
        return [p for p in self.problems if not p.message.startswith(TRUNCATION_PROBLEMS)]

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def incomplete(self) -> bool:
        """Some file was cut short, or memory the map lists (or a MISSING record
        names) is not in the dump; an unknown total alone is not incomplete."""
        c = self.completeness
        return len(self.damage) < len(self.problems) or (c is not None and c.complete is False)

    @property
    def status(self) -> str:
        """"damaged" (wins), "incomplete", or "ok"."""
        return "damaged" if self.damaged else "incomplete" if self.incomplete else "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verify_dump(paths: list[str | os.PathLike[str]], *,
                progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Verify the files of one dump; bad input files raise FormatError."""
    report = VerifyReport()
    scanned: list[TsdFile] = []
    dedup: list[tuple[TsdFile, RecordInfo, list[tuple[int, int]]]] = []
    bad: set[tuple[str, int]] = set()  # (file, offset) of MEMORY records that do not decode
    try:
        for p in paths:
            scanned.append(TsdFile(p, verify=True))
        total = sum(f.size for f in scanned)
        done = 0
        for f in scanned:
            rep = FileReport(f.name, f.size, has_footer=f.has_footer)
            report.files.append(rep)
            report.problems.extend(f.problems)
            for rec in f.records:
                if rec.type != R.RecordType.MEMORY:
                    continue
                rep.memory_records += 1
                try:
                    _, payload = f.read_record(rec.offset)
                    m = R.unpack_memory(payload)
                    if m.codec == R.Codec.ZSTD_DEDUP:
                        refs, _ = decode_dedup(m, f.header.page_size)
                        dedup.append((f, rec, refs))
                    else:
                        decode_memory(m)
                except FormatError as e:
                    bad.add((f.name, rec.offset))
                    report.problems.append(Problem(f.name, rec.offset, f"MEMORY record "
                                                   f"(sequence {rec.sequence}): {_reason(e, f)}"))
                done += rec.size
                if progress:
                    progress(done, total)
            if f.has_footer:
                rep.index_matches = _compare_index(f, report)
        for f in scanned:  # a record that does not decode holds no memory
            gone = [off for name, off in bad if name == f.name]
            if gone:
                rows = f.records.rows
                f.records = RecordTable(rows[~np.isin(rows["offset"], np.array(gone, np.uint64))])
        try:
            dump = Dump(scanned)
        except (ConflictError, FormatError) as e:
            report.problems.append(Problem(",".join(f.name for f in scanned), 0, str(e)))
        else:
            _check_references(dump, dedup, report)
            report.completeness = dump.completeness()
    finally:
        for f in scanned:
            f.close()
    return report


def _check_references(dump: Dump, dedup: list, report: VerifyReport) -> None:
    """Every ZSTD_DEDUP reference must name a page stored literally by an
    earlier MEMORY record of the same file (FORMAT.md §4.1); otherwise the
    referencing record is damaged."""
    mem = dump.memory
    checks = []  # (file, source record offset, source, referencing record, page index)
    failed: dict[tuple[int, int], str] = {}
    for f, rec, refs in dedup:
        i = dump.files.index(f)
        for index, source in refs:
            try:
                src = mem._source_record(i, rec.offset, source)
            except FormatError as e:
                failed.setdefault((i, rec.offset), f"page {index} refers to page {source:#x}, "
                                                   f"which cannot be read: {e}")
                continue
            checks.append((i, src.offset, source, src, rec, index))
    # in source order, so that each source record is decompressed about once
    checks.sort(key=lambda c: (c[0], c[1], c[2]))
    for i, _, source, src, rec, index in checks:
        if (i, rec.offset) in failed:
            continue
        try:
            mem._page_of(i, src, source)
        except FormatError as e:
            failed[(i, rec.offset)] = (f"page {index} refers to page {source:#x}, "
                                       f"which cannot be read: {e}")
    by_key = {(dump.files.index(f), rec.offset): (f, rec) for f, rec, _ in dedup}
    for key in sorted(failed):
        f, rec = by_key[key]
        report.problems.append(Problem(f.name, rec.offset,
                                       f"MEMORY record (sequence {rec.sequence}): {failed[key]}"))


def _reason(e: Exception, f: TsdFile) -> str:
    text = str(e)
    return text[len(f.name) + 2:] if text.startswith(f.name + ": ") else text


def _compare_index(scanned: TsdFile, report: VerifyReport) -> bool:
    """The footer's INDEX must list exactly the memory records the scan found."""
    try:
        indexed = TsdFile(scanned.path, reasons=False)  # rows only (a million MISSING records)
    except FormatError as e:
        report.problems.append(Problem(scanned.name, 0, f"cannot reopen: {e}"))
        return False
    try:
        if not indexed.has_footer:
            report.problems.append(Problem(scanned.name, scanned.size - R.END_RECORD_SIZE,
                                           "END footer or INDEX is unusable"))
            return False
        # column by column, no tuple per record (a million records, issue 22)
        cols = ("type", "offset", "paddr", "length")
        a, b = scanned.records.rows, indexed.records.rows
        n = min(len(a), len(b))
        differs = np.zeros(n, bool)
        for c in cols:
            differs |= a[c][:n] != b[c][:n]
        if differs.any() or len(a) != len(b):
            k = int(np.argmax(differs)) if differs.any() else n
            where = int((a if k < len(a) else b)["offset"][k])
            report.problems.append(Problem(scanned.name, where,
                                           "INDEX disagrees with the records in the file"))
            return False
        return True
    finally:
        indexed.close()
