"""What ``inspect`` shows of a dump: one :class:`DumpDescription`, typed, rendered in ``render/``.

``vmcore/describe.py`` builds it from any opened dump (``.tsd`` or foreign);
``render/inspect.py`` prints it as text or as the JSON of docs/JSON.md.  The
per-range parts stay the dump's own lazy sequences (a dump of a million
records lists a million ranges: they are made one at a time as they are
written, issue 22), typed by the small Protocols below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["DumpDescription", "DumpEvent", "DumpFileSummary", "DumpProblem", "MapSummary",
           "MemoryGap", "MemorySummary", "NotesSummary", "PageCounts", "PresentRange"]


@dataclass(frozen=True)
class PageCounts:
    """Pages of the memory map at the dump level: ``kept`` and ``excluded`` per page class
    (makedumpfile's classes; ``collect`` counts them the same way)."""

    total: int
    kept: int
    excluded: Mapping[str, int] = field(default_factory=dict)


class PresentRange(Protocol):
    """A present range of physical memory (``kind``: ``"data"`` or ``"zero"``)."""

    start: int
    length: int
    kind: str


class MemoryGap(Protocol):
    """A range the dump should hold and does not (``kind``: ``"absent"`` or ``"unreadable"``)."""

    start: int
    length: int
    kind: str
    reason: str


@dataclass(frozen=True)
class DumpFileSummary:
    """One file of the dump."""

    path: str
    nbytes: int  # JSON "bytes"
    footer: bool  # closed properly (a .tsd END record); False: recovered by scan
    memory_records: int


@dataclass(frozen=True)
class NotesSummary:
    """The ELF notes: their bytes, how many, how many NT_PRSTATUS (one per CPU)."""

    nbytes: int
    count: int
    prstatus: int


@dataclass(frozen=True)
class MapSummary:
    """The memory map the dump was written against (format 1.3 and later)."""

    dump_level: int
    ranges: Sequence[tuple[int, int]]  # (start, length): a tuple, or the map's columns (a RunList)
    excluded: Sequence[tuple[int, int, int]]  # (start, length, level bit)
    nbytes: int


@dataclass(frozen=True)
class MemorySummary:
    """How much memory is present, measured against the memory map (FORMAT.md §7.4).

    :param ranges: every present range, in address order (the dump's lazy sequence).
    :param missing: every range the map asks for that is not present.
    :param missing_records: the MISSING records, ``(start, length, reason)``.
    """

    dump_level: int | None
    pages: PageCounts | None
    excluded_bytes: int
    present_bytes: int
    data_bytes: int
    zero_bytes: int
    expected_bytes: int | None
    missing_bytes: int
    missing_bytes_exact: bool
    completeness_percent: float | None
    complete: bool | None
    completeness_at_most_percent: float | None
    completeness_reason: str
    memory_map: MapSummary | None
    outside_map_bytes: int
    compression_ratio: float | None
    ranges: Sequence[PresentRange]
    missing: Sequence[MemoryGap]
    missing_records: Sequence[tuple[int, int, str]]


@dataclass(frozen=True)
class DumpEvent:
    """An EVENT record (the monitor's timeline), as the dump stores it."""

    time_s: float
    kind: str
    fields: Mapping[str, object]


@dataclass(frozen=True)
class DumpProblem:
    """Something wrong with a file of the dump (a cut, a bad record)."""

    path: str
    offset: int
    message: str


@dataclass(frozen=True)
class DumpDescription:
    """Everything ``inspect`` says about one dump.

    :param status: ``"complete"``, ``"incomplete"`` or ``"unknown"``.
    :param format: ``"1.4"`` for a ``.tsd``; a foreign file names its own (``"ELF vmcore"``).
    :param created: ISO 8601, UTC.
    """

    status: str
    complete: bool | None
    dump_id: str
    format: str
    arch: str
    page_size: int
    endian: str
    producer: str
    created: str
    files: tuple[DumpFileSummary, ...]
    kernel_release: str | None
    vmcoreinfo_bytes: int
    notes: NotesSummary
    properties: Mapping[str, str]
    memory: MemorySummary
    events: tuple[DumpEvent, ...]
    problems: tuple[DumpProblem, ...]

    @property
    def is_tsd(self) -> bool:
        """A ``.tsd`` names its format by version; a foreign file by name (no records, no footer)."""
        return self.format[:1].isdigit()
