"""What ``inspect`` says about an opened dump, as a typed :class:`DumpDescription`.

Any dump :func:`~tsubaki_forensics.vmcore.foreign.open_any` opens (``.tsd``,
ELF, kdump, LiME) has the same surface, so one builder serves them all;
``render/inspect.py`` prints the result.  The per-range parts stay the
dump's own sequences (a ``RangeList`` over numpy columns, a ``GapList``):
nothing here makes one object per range (issue 22).
"""

from __future__ import annotations

import datetime
from typing import Any

from ..contracts.inspect import (
    DumpDescription,
    DumpEvent,
    DumpFileSummary,
    DumpProblem,
    MapSummary,
    MemorySummary,
    NotesSummary,
    PageCounts,
)
from ..elfnotes import iter_notes, prstatus_notes
from ..tsd.pages import page_counts
from .importer import vmcoreinfo_fields

__all__ = ["describe_dump"]


def _runs(runs: Any) -> Any:
    """A map's ranges as a tuple, or the map's own columns (a RunList of
    millions of ranges is passed on, not copied into tuples)."""
    return runs if hasattr(runs, "starts") else tuple(tuple(r) for r in runs)


def describe_dump(dump: Any) -> DumpDescription:
    """Header, files, metadata, memory against the map, events and problems of ``dump``
    (a :class:`~tsubaki_forensics.tsd.Dump` or a ``ForeignDump``)."""
    mem = dump.memory
    ranges = mem.ranges()
    c = dump.completeness()
    present = mem.present_bytes
    file_bytes = sum(f.size for f in dump.files)
    info = vmcoreinfo_fields(dump.vmcoreinfo)
    notes = list(iter_notes(dump.notes)) if dump.notes else []
    h = dump.header
    mm = dump.memory_map
    pages = page_counts(mm, ranges, dump.excluded, h.page_size)
    memory = MemorySummary(
        # makedumpfile's -d level and its per-class page counts (docs/JSON.md);
        # None for files without a memory map (before 1.3)
        dump_level=mm.dump_level if mm is not None else None,
        pages=None if pages is None else PageCounts(pages["total"], pages["kept"], pages["excluded"]),
        excluded_bytes=c.excluded_bytes,
        present_bytes=present,
        data_bytes=present - mem.zero_bytes,
        zero_bytes=mem.zero_bytes,
        # measured against the memory map (FORMAT.md §7.4); without a map
        # (before 1.3) the total is unknown: percent None, the reason says why
        expected_bytes=c.expected_bytes,
        missing_bytes=c.missing_bytes,
        missing_bytes_exact=c.missing_exact,
        completeness_percent=c.percent,
        complete=c.complete,
        completeness_at_most_percent=c.at_most_percent,
        completeness_reason=c.reason,
        memory_map=None if mm is None else MapSummary(
            mm.dump_level, _runs(mm.ranges), _runs(mm.excluded), mm.total_bytes),
        outside_map_bytes=c.outside_map_bytes,
        compression_ratio=round(present / file_bytes, 3) if file_bytes else None,
        ranges=ranges,
        missing=c.gaps,
        missing_records=mem.missing_reasons(),
    )
    return DumpDescription(
        status=c.status,
        complete=c.complete,
        dump_id=str(dump.dump_id),
        format=getattr(h, "format", None) or f"{h.major}.{h.minor}",  # a foreign file names its own
        arch=h.arch,
        page_size=h.page_size,
        endian=h.endian.name.lower(),
        producer=h.producer,
        created=datetime.datetime.fromtimestamp(h.created_ns / 1e9, datetime.UTC).isoformat(),
        files=tuple(DumpFileSummary(f.name, f.size, f.has_footer, len(f.records)) for f in dump.files),
        kernel_release=dump.properties.get("kernel_release") or info.get("OSRELEASE"),
        vmcoreinfo_bytes=len(dump.vmcoreinfo or b""),
        notes=NotesSummary(len(dump.notes or b""), len(notes), len(prstatus_notes(dump.notes))),
        properties=dump.properties,
        memory=memory,
        events=tuple(DumpEvent(e.time_s, e.kind, e.fields) for e in dump.events),
        problems=tuple(DumpProblem(p.path, p.offset, p.message) for p in dump.problems),
    )
