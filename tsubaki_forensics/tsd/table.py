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
from typing import TYPE_CHECKING, Any, overload

from ..contracts.frozen import Frozen

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RecordInfo", "RecordTable", "TableBuilder", "RECORD_DTYPE", "RECORD_FIELDS", "SMALL_TABLE",
           "record_dtype", "MissingReasons", "MissingList", "ColumnSequence", "RunList", "merge_runs", "merge_inclusive"]


class RecordInfo(Frozen):
    """Where one record is and what it covers (for MEMORY, ZERO, MISSING).

    A :class:`~tsubaki_forensics.contracts.frozen.Frozen` record with slots,
    not a ``@dataclass(frozen=True, slots=True)`` (~0.8 ms at import, issue 21).
    """

    _fields = ("type", "flags", "offset", "size", "sequence", "paddr", "length")
    __slots__ = _fields
    type: int
    flags: int
    offset: int
    size: int
    sequence: int | None
    paddr: int
    length: int

    def __init__(self, type: int, flags: int, offset: int, size: int, sequence: int | None = None,
                 paddr: int = 0, length: int = 0) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "type", type)
        setattr_(self, "flags", flags)
        setattr_(self, "offset", offset)
        setattr_(self, "size", size)
        setattr_(self, "sequence", sequence)
        setattr_(self, "paddr", paddr)
        setattr_(self, "length", length)


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


class MissingReasons:
    """The reasons of one file's MISSING records, by record offset: one UTF-8
    blob and two integer columns, not a dict entry and a ``str`` per record
    (a million MISSING records, issue 22)."""

    __slots__ = ("_offsets", "_starts", "_ends", "_blob", "_sorted", "_at", "_last")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._offsets, self._ends, self._blob = array.array("Q"), array.array("Q"), bytearray()
        self._starts = array.array("Q")
        self._last: str | None = None  # a reason equal to the last one is stored once
        self._sorted = True
        self._at: dict[int, int] | None = None  # offset -> reason number, for get()

    def add(self, offset: int, reason: str) -> None:
        """The reason of the MISSING record at file ``offset``."""
        if self._offsets and offset <= self._offsets[-1]:
            self._sorted = False
        self._offsets.append(offset)
        if reason != self._last or not self._ends:  # a million records with one reason: its bytes once
            self._starts.append(len(self._blob))
            self._blob += reason.encode("utf-8", "surrogatepass")
            self._ends.append(len(self._blob))
            self._last = reason
        else:
            self._starts.append(self._starts[-1])
            self._ends.append(self._ends[-1])
        self._at = None

    def __len__(self) -> int:
        return len(self._offsets)

    def text(self, i: int) -> str:
        """Reason number ``i`` (in the order they were added)."""
        return self._blob[self._starts[i]:self._ends[i]].decode("utf-8", "surrogatepass")

    def nonempty(self, ids: np.ndarray) -> np.ndarray:
        """Per reason number in ``ids`` (-1: none): whether it says something."""
        import numpy as np

        if not len(self):
            return np.zeros(len(ids), bool)
        said = np.frombuffer(self._ends, np.uint64) > np.frombuffer(self._starts, np.uint64)
        out = said[np.maximum(ids, 0)]
        out &= ids >= 0
        return out

    def get(self, offset: int) -> str:
        """The reason of the record at ``offset`` ("" if none), without numpy:
        for small dumps (issue 21); the last one added for an offset wins."""
        if self._at is None:
            self._at = {off: k for k, off in enumerate(self._offsets)}
        k = self._at.get(offset)
        return "" if k is None else self.text(k)

    def index_of(self, offsets: np.ndarray) -> np.ndarray:
        """The reason number of each record offset in ``offsets`` (-1: none)."""
        import numpy as np

        have = np.frombuffer(self._offsets, np.uint64) if len(self) else np.zeros(0, np.uint64)
        order = None if self._sorted else np.argsort(have, kind="stable")
        keys = have if order is None else have[order]
        offsets = np.asarray(offsets, np.uint64)
        if order is None and len(keys) == len(offsets) and np.array_equal(keys, offsets):
            return np.arange(len(keys), dtype=np.int64)  # every record, in file order: the common case
        i = np.searchsorted(keys, offsets, "right") - 1  # the last one added for an offset wins
        found = (i >= 0) & (keys[np.maximum(i, 0)] == offsets) if len(keys) else np.zeros(len(offsets), bool)
        ids = np.full(len(offsets), -1, np.int64)
        ids[found] = i[found] if order is None else order[i[found]]
        return ids


class ColumnSequence(Sequence):
    """A read-only sequence over numpy columns whose items are built on demand:
    iterated a slice (4,096 items) at a time, so walking a million costs no
    list of a million, and equal to any sequence of the same items."""

    def __iter__(self):
        for k in range(0, len(self), 4096):
            yield from self[k:k + 4096]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class MissingList(ColumnSequence):
    """Every MISSING record of a dump as ``(paddr, length, reason)``, sorted: a
    read-only sequence over numpy columns, a tuple built only for the
    entries a caller looks at.  ``starts``/``lengths`` (uint64), and
    :meth:`reason` / :meth:`said` by position, serve callers that must not
    build an object per record (completeness, ``missing_ranges``)."""

    __slots__ = ("starts", "lengths", "_file", "_rid", "_reasons")

    def __init__(self, starts: np.ndarray, lengths: np.ndarray, file: np.ndarray, rid: np.ndarray,
                 reasons: Sequence[MissingReasons]) -> None:
        self.starts, self.lengths, self._file, self._rid, self._reasons = starts, lengths, file, rid, reasons

    @classmethod
    def build(cls, cols: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
              reasons: Sequence[MissingReasons]) -> MissingList:
        """From per-file (paddr, length, file number, reason number) columns, sorted
        as ``sorted()`` sorts the tuples: by paddr, length, then reason."""
        import numpy as np

        if not cols:
            z = np.zeros(0, np.uint64)
            return cls(z, z, np.zeros(0, np.int32), np.zeros(0, np.int64), reasons)
        starts, lengths, file, rid = (c[0] if len(c) == 1 else np.concatenate(c) for c in zip(*cols))
        if len(starts) > 1 and not (starts[1:] > starts[:-1]).all():  # one file in order: no sort
            order = np.lexsort((lengths, starts))
            starts, lengths, file, rid = starts[order], lengths[order], file[order], rid[order]
            del order
        out = cls(starts.astype(np.uint64, copy=False), lengths.astype(np.uint64, copy=False), file, rid, reasons)
        tie = np.flatnonzero((starts[1:] == starts[:-1]) & (lengths[1:] == lengths[:-1]))
        if len(tie):  # the same range recorded more than once: by reason, as sorted() would
            k = 0
            ties = tie.tolist()
            while k < len(ties):
                a = ties[k]
                b = a + 1
                while k + 1 < len(ties) and ties[k + 1] == b:
                    k += 1
                    b += 1
                group = sorted(range(a, b + 1), key=out.reason)
                out._file[a:b + 1] = out._file[group]
                out._rid[a:b + 1] = out._rid[group]
                k += 1
        return out

    def __len__(self) -> int:
        return len(self.starts)

    def reason(self, i: int) -> str:
        rid = int(self._rid[i])
        return self._reasons[int(self._file[i])].text(rid) if rid >= 0 else ""

    def said(self) -> np.ndarray:
        """Per entry: its reason is not empty."""
        import numpy as np

        if len(self._reasons) == 1:
            return self._reasons[0].nonempty(self._rid)
        out = np.zeros(len(self), bool)
        for f in np.unique(self._file).tolist():
            here = self._file == f
            out[here] = self._reasons[f].nonempty(self._rid[here])
        return out

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        return int(self.starts[i]), int(self.lengths[i]), self.reason(i)

    def __repr__(self) -> str:
        return repr(list(self)) if len(self) <= 16 else f"MissingList({len(self)} records)"



class RunList(ColumnSequence):
    """Runs ``(start, length)`` -- or ``(start, length, tag)``, or what ``make``
    builds of them -- over columns: a memory map's ranges, EXCLUDED runs, the
    runs of a kdump file's bitmaps.

    Why: a hostile file can hold millions of runs (a memory map of 4 Mi ranges
    in one 64 MiB METADATA record, EXCLUDED records of 65,536 runs each, a
    kdump bitmap alternating every frame), and one tuple per run costs
    ~120 bytes where a column costs 16 (issue 22).  The columns may be lists
    (a small map, issue 21: no numpy); ``starts``/``lengths``/``tags`` are
    numpy all the same, built on first use.  Items are built only for the
    runs a caller reads.
    """

    __slots__ = ("_cols", "_arrays", "_make")

    def __init__(self, starts: np.ndarray | list[int], lengths: np.ndarray | list[int],
                 tags: np.ndarray | list[int] | None = None, *, make: Any = None) -> None:
        self._cols = (starts, lengths, tags)
        self._make = make
        self._arrays = None if isinstance(starts, list) else self._cols

    @classmethod
    def of(cls, items: Iterable[tuple], *, tagged: bool = False, make: Any = None) -> RunList:
        """From ``(start, length[, tag])`` tuples (a small list: lists, no numpy)."""
        items = list(items)
        return cls([t[0] for t in items], [t[1] for t in items],
                   [t[2] for t in items] if tagged else None, make=make)

    @property
    def columnar(self) -> bool:
        """The columns are numpy arrays (a big list), not lists."""
        return not isinstance(self._cols[0], list)

    def _numpy(self) -> tuple:
        if self._arrays is None:
            import numpy as np

            s, n, t = self._cols
            self._arrays = (np.array(s, np.uint64), np.array(n, np.uint64),
                            None if t is None else np.array(t, np.uint32))
        return self._arrays

    @property
    def starts(self) -> np.ndarray:
        return self._numpy()[0]

    @property
    def lengths(self) -> np.ndarray:
        return self._numpy()[1]

    @property
    def tags(self) -> np.ndarray | None:
        return self._numpy()[2]

    def total(self) -> int:
        """The sum of the lengths, exactly (no object per run)."""
        n = self._cols[1]
        if isinstance(n, list):
            return sum(n)
        import numpy as np

        # in pieces: each piece's sum fits in a u64 when the runs are disjoint
        return sum(int(n[k:k + (1 << 20)].sum(dtype=np.uint64)) for k in range(0, len(n), 1 << 20))

    def __len__(self) -> int:
        return len(self._cols[0])

    def _item(self, a: int, n: int, t: int | None) -> Any:
        if self._make is not None:
            return self._make(a, n, t)
        return (a, n) if t is None else (a, n, t)

    def __getitem__(self, i):
        s, n, t = self._cols
        if isinstance(i, slice):
            ss, nn = s[i], n[i]
            ss, nn = (ss, nn) if isinstance(ss, list) else (ss.tolist(), nn.tolist())
            tt = [None] * len(ss) if t is None else (t[i] if isinstance(t, list) else t[i].tolist())
            return [self._item(a, b, c) for a, b, c in zip(ss, nn, tt)]
        if i < 0:
            i += len(self)
        return self._item(int(s[i]), int(n[i]), None if t is None else int(t[i]))

    def __hash__(self) -> int:  # a frozen MemoryMap holding one stays hashable
        if not self.columnar:
            return hash(tuple(self))
        return hash((len(self), self.starts.tobytes(), self.lengths.tobytes()))

    def __repr__(self) -> str:
        return repr(list(self)) if len(self) <= 16 else f"RunList({len(self)} runs)"


def merge_inclusive(starts: np.ndarray, lasts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort and merge overlapping or touching ranges given by uint64 first and
    *inclusive* last bytes (2^64 does not fit); without an object per range.
    Already sorted, disjoint and apart: ``starts`` itself comes back (no copy)."""
    import numpy as np

    if not len(starts):
        return starts.astype(np.uint64), lasts.astype(np.uint64)
    if not (starts[1:] >= starts[:-1]).all():
        order = np.argsort(starts, kind="stable")
        starts, lasts = starts[order], lasts[order]
        del order
    reach = np.maximum.accumulate(lasts)
    new = np.ones(len(starts), bool)  # range k starts a new merged range
    new[1:] = (starts[1:] > reach[:-1]) & (starts[1:] - reach[:-1] > 1)
    if new.all():  # already disjoint and apart (a million MISSING records): no copies
        return starts, reach
    first = np.flatnonzero(new)
    del new
    end_at = np.empty_like(first)
    end_at[:-1] = first[1:] - 1
    end_at[-1] = len(starts) - 1
    return starts[first], reach[end_at]


def merge_runs(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) uint64 runs in any order: empty ones dropped, the rest
    sorted and overlapping or touching ones merged (a memory map's rule),
    without an object per run.  Runs must end at or below 2^64."""
    import numpy as np

    starts = np.asarray(starts, np.uint64)
    lengths = np.asarray(lengths, np.uint64)
    keep = lengths > 0
    if not keep.all():
        starts, lengths = starts[keep], lengths[keep]
    del keep
    if not len(starts):
        return starts, lengths
    s, reach = merge_inclusive(starts, starts + (lengths - np.uint64(1)))
    if s is starts:  # sorted and nothing merged: the runs as they came
        return starts, lengths
    return s, reach - s + np.uint64(1)
