"""Compact per-file record tables: one numpy row per record, not one object.

Why: a hostile (or merely odd) dump can hold a million tiny ZERO records in
96 MB; one Python object per record cost 12x the file (issue 22, finding 14).
A :class:`RecordTable` keeps each record in a 44-byte structured row and
builds :class:`RecordInfo` objects only for the rows a caller looks at, so
code that iterates a few records (or asks ``len``) keeps its list-like API.

A table of at most :data:`SMALL_TABLE` records (every real dump: hundreds
to thousands) is a plain list of tuples instead, and numpy is imported only
if a caller asks for ``.rows``: importing numpy costs 50-80 ms and 12-17 MiB,
a fifth of what ``analyze`` adds to plain drgn (issue 21).
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RecordInfo", "RecordTable", "TableBuilder", "RECORD_DTYPE", "RECORD_FIELDS", "SMALL_TABLE",
           "record_dtype"]


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


#: The columns of a table row, in order (a small table's tuples, a big one's dtype).
RECORD_FIELDS = ("type", "flags", "offset", "size", "sequence", "paddr", "length")
_FORMATS = ("<u2", "<u2", "<u8", "<u8", "<i8", "<u8", "<u8")
#: Tables of at most this many records are lists of tuples, not numpy rows.
SMALL_TABLE = 1 << 14
_CHUNK = 4096
_dtype: Any = None


def record_dtype() -> np.dtype:
    """The numpy row of a big table (sequence -1 stands for None: records
    listed by the INDEX carry none); numpy is imported here, on first use."""
    global _dtype
    if _dtype is None:
        import numpy as np

        _dtype = np.dtype(list(zip(RECORD_FIELDS, _FORMATS)))
    return _dtype


def __getattr__(name: str) -> Any:
    if name == "RECORD_DTYPE":  # kept for callers of the numpy table; built on first use
        return record_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RecordTable(Sequence):
    """A read-only sequence of :class:`RecordInfo` backed by a structured
    array (``rows``) or, when small, by a list of tuples (``tuples``)."""

    __slots__ = ("_rows", "tuples")

    def __init__(self, rows: np.ndarray | None = None, *, tuples: list[tuple] | None = None) -> None:
        self._rows = rows
        #: the rows as tuples in :data:`RECORD_FIELDS` order, or None (a big table)
        self.tuples = tuples if rows is None else None
        if rows is None and tuples is None:
            self.tuples = []

    @property
    def rows(self) -> np.ndarray:
        """The table as a numpy structured array (built on first use for a small table)."""
        if self._rows is None:
            import numpy as np

            self._rows = np.array(self.tuples, record_dtype()) if self.tuples else np.zeros(0, record_dtype())
        return self._rows

    @rows.setter
    def rows(self, rows: np.ndarray) -> None:
        self._rows, self.tuples = rows, None

    @classmethod
    def of(cls, infos: Iterable[RecordInfo]) -> RecordTable:
        b = TableBuilder()
        for r in infos:
            b.append(r.type, r.flags, r.offset, r.size, r.sequence, r.paddr, r.length)
        return b.table()

    def __len__(self) -> int:
        return len(self.tuples) if self.tuples is not None else len(self._rows)

    @staticmethod
    def _info(t: tuple) -> RecordInfo:
        return RecordInfo(t[0], t[1], t[2], t[3], None if t[4] < 0 else t[4], t[5], t[6])

    @overload
    def __getitem__(self, i: int) -> RecordInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[RecordInfo]: ...

    def __getitem__(self, i):
        if self.tuples is not None:
            if isinstance(i, slice):
                return [self._info(t) for t in self.tuples[i]]
            return self._info(self.tuples[i])
        if isinstance(i, slice):
            return [self._info(t) for t in self._rows[i].tolist()]
        return self._info(self._rows[i].tolist())

    def __iter__(self) -> Iterator[RecordInfo]:
        if self.tuples is not None:
            for t in self.tuples:
                yield self._info(t)
            return
        for k in range(0, len(self._rows), _CHUNK):
            for t in self._rows[k:k + _CHUNK].tolist():
                yield self._info(t)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordTable):
            if self.tuples is not None and other.tuples is not None:
                return self.tuples == other.tuples
            import numpy as np

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
        if len(self) <= SMALL_TABLE:
            return RecordTable(tuples=list(zip(*self._cols)))
        import numpy as np

        rows = np.zeros(len(self), record_dtype())
        for name, col in zip(RECORD_FIELDS, self._cols):
            rows[name] = np.frombuffer(col, dtype=col.typecode) if len(col) else 0
        return RecordTable(rows)
