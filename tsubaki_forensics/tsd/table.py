"""Compact per-file record tables: one numpy row per record, not one object.

Why: a hostile (or merely odd) dump can hold a million tiny ZERO records in
96 MB; one Python object per record cost 12x the file (issue 22, finding 14).
A :class:`RecordTable` keeps each record in a 44-byte structured row and
builds :class:`RecordInfo` objects only for the rows a caller looks at, so
code that iterates a few records (or asks ``len``) keeps its list-like API.
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

__all__ = ["RecordInfo", "RecordTable", "TableBuilder", "RECORD_DTYPE"]


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """Where one record is and what it covers (for MEMORY, ZERO, MISSING)."""

    type: int
    flags: int
    offset: int
    size: int
    sequence: int | None = None
    paddr: int = 0
    length: int = 0


#: sequence -1 stands for None (records listed by the INDEX carry none).
RECORD_DTYPE = np.dtype([("type", "<u2"), ("flags", "<u2"), ("offset", "<u8"), ("size", "<u8"),
                         ("sequence", "<i8"), ("paddr", "<u8"), ("length", "<u8")])
_CHUNK = 4096


class RecordTable(Sequence):
    """A read-only sequence of :class:`RecordInfo` backed by a structured array."""

    __slots__ = ("rows",)

    def __init__(self, rows: np.ndarray | None = None) -> None:
        self.rows = rows if rows is not None else np.zeros(0, RECORD_DTYPE)

    @classmethod
    def of(cls, infos: Iterable[RecordInfo]) -> RecordTable:
        b = TableBuilder()
        for r in infos:
            b.append(r.type, r.flags, r.offset, r.size, r.sequence, r.paddr, r.length)
        return b.table()

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def _info(t: tuple) -> RecordInfo:
        return RecordInfo(t[0], t[1], t[2], t[3], None if t[4] < 0 else t[4], t[5], t[6])

    @overload
    def __getitem__(self, i: int) -> RecordInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[RecordInfo]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._info(t) for t in self.rows[i].tolist()]
        return self._info(self.rows[i].tolist())

    def __iter__(self) -> Iterator[RecordInfo]:
        for k in range(0, len(self.rows), _CHUNK):
            for t in self.rows[k:k + _CHUNK].tolist():
                yield self._info(t)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordTable):
            return bool(np.array_equal(self.rows, other.rows))
        if isinstance(other, Sequence):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"RecordTable({len(self)} records)"


class TableBuilder:
    """Accumulates records one at a time (the scan path) in typed arrays."""

    def __init__(self) -> None:
        self._cols = [array.array("H"), array.array("H"), array.array("Q"), array.array("Q"),
                      array.array("q"), array.array("Q"), array.array("Q")]

    def append(self, type: int, flags: int, offset: int, size: int, sequence: int | None,
               paddr: int, length: int) -> None:
        c = self._cols
        c[0].append(type)
        c[1].append(flags)
        c[2].append(offset)
        c[3].append(size)
        c[4].append(-1 if sequence is None else sequence)
        c[5].append(paddr)
        c[6].append(length)

    def __len__(self) -> int:
        return len(self._cols[0])

    def table(self) -> RecordTable:
        rows = np.zeros(len(self), RECORD_DTYPE)
        for name, col in zip(RECORD_DTYPE.names, self._cols):
            rows[name] = np.frombuffer(col, dtype=col.typecode) if len(col) else 0
        return RecordTable(rows)
