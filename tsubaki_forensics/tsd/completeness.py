"""How much of what a dump should hold is in it: the one completeness figure.

Why one module: ``inspect``, ``verify``, ``export``, ``analyze`` and triage all
report completeness, and each used to divide what was present by what was
present plus what a MISSING record named, so a file cut short (no MISSING
record for what was never written) claimed 100 %.  Since format 1.3 the
first record of a dump is its MEMORY_MAP (FORMAT.md §4.3): the machine's
physical memory map and the dump level.  Every figure here is measured
against it, for any prefix, any set of merged files and any damage
(FORMAT.md §7.4).  A file without a map (before 1.3) has an unknown total:
it is never called complete, at best "unknown", and a lower bound on the
total (the collector's ``collect.memory_bytes`` property) is used only as
such and said so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Iterable, Protocol

from ..contracts.frozen import Frozen
from .records import MemoryMap
from .table import merge_inclusive

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Completeness", "Gap", "GapList", "measure", "LOWER_BOUND_PROPERTY"]

#: Property a collector writes with the bytes of Linux memory it was to dump;
#: for files without a map it bounds the total from below.
LOWER_BOUND_PROPERTY = "collect.memory_bytes"


class _MemoryLike(Protocol):
    def ranges(self) -> list: ...  # Range(start, length, kind "data" | "zero")
    def missing_reasons(self) -> list[tuple[int, int, str]]: ...


# Gap and Completeness are :class:`~tsubaki_forensics.contracts.frozen.Frozen`
# records, not frozen dataclasses: the same repr, ==, hash and immutability,
# without ~0.5-0.9 ms each at every ``analyze``'s import (issue 21).

class Gap(Frozen):
    """A range the dump should hold and does not.

    ``kind`` is "absent" (no record covers it: never written, or its file was
    cut short or lost) or "unreadable" (a MISSING record: the collector tried
    and failed, ``reason`` says why).
    """

    _fields = ("start", "length", "kind", "reason")
    start: int
    length: int
    kind: str
    reason: str

    def __init__(self, start: int, length: int, kind: str, reason: str = "") -> None:
        setattr_ = object.__setattr__
        setattr_(self, "start", start)
        setattr_(self, "length", length)
        setattr_(self, "kind", kind)
        setattr_(self, "reason", reason)

    @property
    def end(self) -> int:
        return self.start + self.length


class GapList(Sequence):
    """Absent gaps (no MISSING record names them) over numpy columns: a
    read-only sequence of :class:`Gap` built one at a time as a caller looks.

    Why: a hostile file with a memory map and a million holes between its
    records made a million ``Gap`` objects and tuples (0.9 GiB for
    ``inspect``, issue 22).  Real dumps have a few gaps and keep a tuple.
    """

    __slots__ = ("starts", "lasts", "rid", "_reason")

    def __init__(self, starts: np.ndarray, lasts: np.ndarray, rid: np.ndarray | None = None,
                 reason=None) -> None:
        import numpy as np

        self.starts, self.lasts = starts, lasts  # first and *inclusive* last bytes
        #: per gap: -2 absent; else unreadable, with the reason of MISSING record
        #: ``rid`` (``reason(rid)``), or none (-1)
        self.rid = np.full(len(starts), -2, np.int64) if rid is None else rid
        self._reason = reason

    def __len__(self) -> int:
        return len(self.starts)

    def _gap(self, a: int, last: int, rid: int) -> Gap:
        if rid == -2:
            return Gap(a, last - a + 1, "absent")
        return Gap(a, last - a + 1, "unreadable", self._reason(rid) if rid >= 0 else "")

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._gap(a, b, r) for a, b, r in
                    zip(self.starts[i].tolist(), self.lasts[i].tolist(), self.rid[i].tolist())]
        return self._gap(int(self.starts[i]), int(self.lasts[i]), int(self.rid[i]))

    def __iter__(self):
        for k in range(0, len(self.starts), 4096):
            yield from self[k:k + 4096]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((len(self), self.starts.tobytes(), self.lasts.tobytes(), self.rid.tobytes()))

    def __repr__(self) -> str:
        return repr(tuple(self)) if len(self) <= 16 else f"GapList({len(self)} gaps)"


#: Above this many gaps, with no MISSING record to name, ``gaps`` is a :class:`GapList`.
LAZY_GAPS = 1 << 14


class Completeness(Frozen):
    """Completeness of one dump (one file or several merged).

    With a map, ``present_bytes + missing_bytes == expected_bytes`` exactly,
    and ``complete`` is True only when every expected byte is present.  Without
    one, ``expected_bytes`` and ``percent`` are None, ``missing_bytes`` counts
    only what MISSING records name (``missing_exact`` False), and ``complete``
    is None (unknown) or False (proven incomplete).
    """

    _fields = ("has_map", "dump_level", "map_bytes", "excluded_bytes", "expected_bytes", "present_bytes",
               "data_bytes", "zero_bytes", "missing_bytes", "missing_exact", "outside_map_bytes", "complete",
               "percent", "at_most_percent", "lower_bound_bytes", "truncated", "reason", "gaps")
    has_map: bool
    dump_level: int | None
    map_bytes: int | None
    excluded_bytes: int
    expected_bytes: int | None
    present_bytes: int
    data_bytes: int
    zero_bytes: int
    missing_bytes: int
    missing_exact: bool
    outside_map_bytes: int
    complete: bool | None
    percent: float | None
    at_most_percent: float | None
    lower_bound_bytes: int | None
    truncated: bool
    reason: str
    gaps: tuple[Gap, ...] | GapList

    def __init__(self, has_map: bool, dump_level: int | None, map_bytes: int | None, excluded_bytes: int,
                 expected_bytes: int | None, present_bytes: int, data_bytes: int, zero_bytes: int,
                 missing_bytes: int, missing_exact: bool, outside_map_bytes: int, complete: bool | None,
                 percent: float | None, at_most_percent: float | None, lower_bound_bytes: int | None,
                 truncated: bool, reason: str, gaps: tuple[Gap, ...] | GapList = ()) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "has_map", has_map)
        setattr_(self, "dump_level", dump_level)
        setattr_(self, "map_bytes", map_bytes)
        setattr_(self, "excluded_bytes", excluded_bytes)
        setattr_(self, "expected_bytes", expected_bytes)
        setattr_(self, "present_bytes", present_bytes)
        setattr_(self, "data_bytes", data_bytes)
        setattr_(self, "zero_bytes", zero_bytes)
        setattr_(self, "missing_bytes", missing_bytes)
        setattr_(self, "missing_exact", missing_exact)
        setattr_(self, "outside_map_bytes", outside_map_bytes)
        setattr_(self, "complete", complete)
        setattr_(self, "percent", percent)
        setattr_(self, "at_most_percent", at_most_percent)
        setattr_(self, "lower_bound_bytes", lower_bound_bytes)
        setattr_(self, "truncated", truncated)
        setattr_(self, "reason", reason)
        setattr_(self, "gaps", gaps)

    @property
    def status(self) -> str:
        """"complete", "incomplete" or "unknown"."""
        return {True: "complete", False: "incomplete", None: "unknown"}[self.complete]

    def to_json(self, *, gaps: bool = True) -> dict:
        """The fields, ``status`` and ``gaps`` as dicts; with ``gaps`` False,
        ``gaps`` is left empty for a caller that writes them as a stream."""
        d = {name: getattr(self, name) for name in self._fields}
        d["status"] = self.status
        d["gaps"] = [{name: getattr(g, name) for name in g._fields} for g in self.gaps] if gaps else []
        return d


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) intervals."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _intersect(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, j = [], 0
    for a, b in x:
        pos = a
        while j < len(y) and y[j][1] <= pos:
            j += 1
        k = j
        while k < len(y) and y[k][0] < b:
            if y[k][0] > pos:
                out.append((pos, y[k][0]))
            pos = max(pos, y[k][1])
            k += 1
        if pos < b:
            out.append((pos, b))
    return out


def _size(x: list[tuple[int, int]]) -> int:
    return sum(b - a for a, b in x)


# -- present memory as numpy columns (issue 22: a dump of a million records) --
# A set is (first bytes, last bytes) uint64 arrays, sorted, disjoint, never
# touching; last bytes are inclusive because 2^64 does not fit.

_Set = tuple["np.ndarray", "np.ndarray"]


_np_merge = merge_inclusive  # sort and merge overlapping or touching inclusive ranges
np_merge = _np_merge  # for memory.missing_ranges


def _np_size(x: _Set) -> int:
    import numpy as np

    spans = x[1] - x[0]  # their sum stays below 2^64: the ranges are disjoint
    return int(spans.sum(dtype=np.uint64)) + len(spans) if len(spans) else 0


def _locate(pairs: list[tuple[int, int]], x: _Set) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For half-open ``pairs``: their first and last bytes, and the ranges of
    ``x`` that meet each, as index bounds ``i <= k < j``."""
    import numpy as np

    a = np.array([p[0] for p in pairs], np.uint64)
    bl = np.array([p[1] - 1 for p in pairs], np.uint64)
    i = np.searchsorted(x[1], a, "left")
    j = np.searchsorted(x[0], bl, "right")
    return a, bl, i, np.maximum(i, j)


def _np_overlap(pairs: list[tuple[int, int]], x: _Set) -> int:
    """Bytes of ``x`` inside the disjoint, sorted half-open ``pairs``."""
    import numpy as np

    pairs = [(a, b) for a, b in pairs if a < b]
    if not pairs or not len(x[0]):
        return 0
    a, bl, i, j = _locate(pairs, x)
    hit = i < j
    a, bl, i, j = a[hit], bl[hit], i[hit], j[hit]
    if not len(i):
        return 0
    prefix = np.zeros(len(x[0]) + 1, np.uint64)
    np.cumsum(x[1] - x[0], out=prefix[1:])
    s_i, l_j = x[0][i], x[1][j - 1]
    head = np.where(a > s_i, a - s_i, 0).astype(np.uint64)
    tail = np.where(l_j > bl, l_j - bl, 0).astype(np.uint64)
    inner = prefix[j] - prefix[i]  # a difference of a running sum: exact
    return (sum((inner - head - tail).tolist()) + int((j - i).sum()))


def _np_minus(pairs: list[tuple[int, int]], x: _Set) -> list[tuple[int, int]]:
    """The parts of the disjoint, sorted half-open ``pairs`` outside ``x``."""
    st, la = _np_minus_arrays(pairs, x)
    return [(g, h + 1) for g, h in zip(st.tolist(), la.tolist())]


def _np_minus_arrays(pairs: list[tuple[int, int]], x: _Set) -> _Set:
    """:func:`_np_minus` as sorted (first, inclusive last) uint64 arrays."""
    import numpy as np

    pairs = [(a, b) for a, b in pairs if a < b]
    return np_minus_set((np.array([a for a, _ in pairs], np.uint64),
                         np.array([b - 1 for _, b in pairs], np.uint64)), x)


def np_intersect_set(y: _Set, x: _Set) -> _Set:
    """The parts of set ``y`` inside set ``x`` (``y`` minus what of it is outside ``x``)."""
    if y[0] is x[0] and y[1] is x[1]:
        return y
    outside = np_minus_set(y, x)
    if not len(outside[0]):
        return y
    return np_minus_set(y, outside)


#: ``y`` of :func:`np_minus_set` is cut in pieces of this many ranges: each
#: piece's parts outside ``x`` are its own, and the working copies (~60 bytes
#: a range) stay a few MiB however many millions of ranges ``y`` has.
_MINUS_PIECE = 1 << 18


def np_minus_set(y: _Set, x: _Set) -> _Set:
    """The parts of set ``y`` outside set ``x`` (both sorted, disjoint, inclusive uint64 columns)."""
    import numpy as np

    if len(y[0]) > _MINUS_PIECE and len(x[0]) and not (y[0] is x[0] and y[1] is x[1]):
        parts = [_np_minus_piece((y[0][k:k + _MINUS_PIECE], y[1][k:k + _MINUS_PIECE]), x)
                 for k in range(0, len(y[0]), _MINUS_PIECE)]
        st = np.concatenate([p[0] for p in parts])
        la = np.concatenate([p[1] for p in parts])
        return st, la
    return _np_minus_piece(y, x)


def _np_minus_piece(y: _Set, x: _Set) -> _Set:
    import numpy as np

    if not len(y[0]) or not len(x[0]):
        return y[0].astype(np.uint64, copy=False), y[1].astype(np.uint64, copy=False)
    if y[0] is x[0] and y[1] is x[1]:
        return y[0][:0], y[1][:0]
    s, l = x
    a, bl = y
    i = np.searchsorted(l, a, "left")
    j = np.maximum(i, np.searchsorted(s, bl, "right"))
    miss = i == j
    hit = ~miss
    starts = [a[miss]]
    lasts = [bl[miss]]
    ah, blh, ih, jh = a[hit], bl[hit], i[hit], j[hit]
    sh = s[ih]
    head = sh > ah
    starts.append(ah[head])
    lasts.append(sh[head] - np.uint64(1))
    lt = l[jh - 1]
    tail = lt < blh
    starts.append(lt[tail] + np.uint64(1))
    lasts.append(blh[tail])
    multi = (jh - ih) >= 2  # gaps between ranges k and k+1, i <= k < j-1
    if multi.any():
        diff = np.zeros(len(s) + 1, np.int64)
        np.add.at(diff, ih[multi], 1)
        np.add.at(diff, jh[multi] - 1, -1)
        k = np.flatnonzero(np.cumsum(diff)[:len(s) - 1] > 0)
        del diff
        inner = l[k]
        inner += np.uint64(1)
        starts.append(inner)
        k += 1
        inner = s[k]
        inner -= np.uint64(1)
        lasts.append(inner)
        del k, inner
    st, la = np.concatenate(starts), np.concatenate(lasts)
    del starts, lasts  # a million gaps: every copy counts (issue 22)
    if len(st) > 1 and not (st[1:] >= st[:-1]).all():
        order = np.argsort(st, kind="stable")
        st = st[order]
        la = la[order]
    return st, la


def _present_sets(memory: _MemoryLike) -> tuple[_Set, _Set]:
    """(present, data) of ``memory`` as merged numpy sets."""
    import numpy as np

    arrays = getattr(memory, "range_arrays", None)
    if arrays is not None:
        starts, lasts, zero = arrays()
    else:
        rs = [r for r in memory.ranges() if r.length > 0]
        starts = np.array([r.start for r in rs], np.uint64)
        lasts = np.array([r.start + r.length - 1 for r in rs], np.uint64)
        zero = np.array([r.kind == "zero" for r in rs], bool)
    return _np_merge(starts, lasts), _np_merge(starts[~zero], lasts[~zero])


def _floor_percent(part: int, whole: int) -> float:
    """``part/whole`` in percent, rounded *down* to 3 decimals: never 100.0
    unless ``part == whole``."""
    return math.floor(100_000 * part / whole) / 1000


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class _Recorded:
    """MISSING records as columns, from a :class:`~.table.MissingList` or a
    plain list of (paddr, length, reason) tuples (the foreign readers')."""

    def __init__(self, recorded) -> None:
        import numpy as np

        if not hasattr(recorded, "starts"):
            recorded = sorted(recorded)
            self.reason = lambda i: recorded[i][2]
            self.starts = np.array([a for a, _, _ in recorded], np.uint64)
            lengths = np.array([n for _, n, _ in recorded], np.uint64)
            said = np.array([bool(r) for _, _, r in recorded], bool)
        else:
            self.reason = recorded.reason
            self.starts, lengths, said = recorded.starts, recorded.lengths, recorded.said()
        keep = lengths > 0
        if keep.all():  # no copies (a million records)
            self.index = None
        else:
            self.index = np.flatnonzero(keep)
            self.starts, lengths, said = self.starts[keep], lengths[keep], said[keep]
        del keep
        room = np.uint64(2**64 - 1) - self.starts  # a range past 2^64 ends at 2^64
        lengths = lengths - np.uint64(1)
        self.lasts = self.starts + np.minimum(lengths, room, out=room)
        del room, lengths
        self.said = said
        self.failed = _np_merge(self.starts, self.lasts)

    def __len__(self) -> int:
        return len(self.starts)

    def reasons_for(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per gap ``a..b`` (inclusive), the index of the first record (in sorted
        order) that meets it and gives a reason, or -1."""
        import numpy as np

        every = bool(self.said.all())
        said = None if every else np.flatnonzero(self.said)
        n = len(self.said) if every else len(said)
        if not n or not len(a):
            return np.full(len(a), -1, np.int64)
        # the first record ending at or past a gap's start, by a running maximum
        reach = np.maximum.accumulate(self.lasts if every else self.lasts[said])
        k = np.searchsorted(reach, a, "left")
        del reach
        ok = k < n
        np.minimum(k, n - 1, out=k)
        if not every:
            k = said[k]
        ok &= self.starts[k] <= b
        if self.index is not None:
            k = self.index[k]
        k[~ok] = -1
        return k


def _gaps(absent: list[tuple[int, int]], recorded: list[tuple[int, int, str]]) -> tuple[Gap, ...]:
    """Name every gap: the parts a MISSING record covers with its reason (a small dump)."""
    failed = _merge((a, a + n) for a, n, _ in recorded)
    reasons = sorted(recorded)
    out: list[Gap] = []
    for a, b in _intersect(absent, failed):
        why = next((r for s, n, r in reasons if s < b and a < s + n and r), "")
        out.append(Gap(a, b - a, "unreadable", why))
    out += [Gap(a, b - a, "absent") for a, b in _subtract(absent, failed)]
    return tuple(sorted(out, key=lambda g: g.start))


def _np_gaps(absent: _Set, recorded: _Recorded) -> tuple[Gap, ...] | GapList:
    """:func:`_gaps` over columns (a big dump).  Past :data:`LAZY_GAPS`, a
    :class:`GapList` (no object per gap)."""
    import numpy as np

    only = np_minus_set(absent, recorded.failed)
    unread = np_minus_set(absent, only) if len(only[0]) else absent
    if not len(only[0]):  # every gap named by a MISSING record: no copies (a million of them)
        starts, lasts, rid = unread[0], unread[1], recorded.reasons_for(*unread)
    elif not len(unread[0]):
        starts, lasts, rid = only[0], only[1], np.full(len(only[0]), -2, np.int64)
    else:
        rid = np.concatenate((recorded.reasons_for(*unread), np.full(len(only[0]), -2, np.int64)))
        starts, lasts = np.concatenate((unread[0], only[0])), np.concatenate((unread[1], only[1]))
        order = np.argsort(starts, kind="stable")
        starts, lasts, rid = starts[order], lasts[order], rid[order]
    lazy = GapList(starts, lasts, rid, recorded.reason)
    return lazy if len(lazy) > LAZY_GAPS else tuple(lazy)


def _present_lists(memory: _MemoryLike, expected: list[tuple[int, int]]
                   ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
    """(present, data) of a small dump as merged half-open lists, without numpy
    (issue 21), or None: a big one, or ``expected`` not sorted and disjoint
    (only the numpy path measures a crafted, overlapping memory map)."""
    lists = getattr(memory, "range_lists", None)
    cols = lists() if lists is not None else None
    if cols is None or any(expected[k][1] > expected[k + 1][0] for k in range(len(expected) - 1)):
        return None
    starts, lasts, zero = cols
    present = _merge((a, b + 1) for a, b in zip(starts, lasts))
    data = _merge((a, b + 1) for a, b, z in zip(starts, lasts, zero) if not z)
    return present, data


def _measure_lists(sets: tuple[list[tuple[int, int]], list[tuple[int, int]]], memory_map: MemoryMap | None,
                   properties: dict[str, str] | None, truncated: bool, left_out: list[tuple[int, int]],
                   recorded: list[tuple[int, int, str]], mapped: list[tuple[int, int]],
                   planned: list[tuple[int, int]], expected: list[tuple[int, int]]) -> Completeness:
    """:func:`measure` over plain interval lists (a small dump): the same figures
    as the numpy sets give (tests/test_tsd_completeness_paths.py compares them)."""
    present, data = sets
    if memory_map is None:
        failed = _subtract(_subtract(_merge((a, a + n) for a, n, _ in recorded), present), left_out)
        return _no_map(_size(present), _size(data), _size(failed), _gaps(failed, recorded), properties, truncated,
                       _size(left_out))
    expected_nz = [(a, b) for a, b in expected if a < b]
    data_in = _size(_intersect(expected_nz, data))
    present_in = _size(_intersect(expected_nz, present))
    absent = _subtract(expected_nz, present)
    if not recorded and len(absent) > LAZY_GAPS:  # a million holes: no object per gap
        import numpy as np

        gaps: tuple[Gap, ...] | GapList = GapList(np.array([a for a, _ in absent], np.uint64),
                                                  np.array([b - 1 for _, b in absent], np.uint64))
    else:
        gaps = _gaps(absent, recorded)
    return _with_map(memory_map, _size(expected), present_in, data_in, _size(present), gaps,
                     _size(_intersect(mapped, planned)), truncated)


def measure(memory: _MemoryLike, memory_map: MemoryMap | None, properties: dict[str, str] | None = None,
            *, truncated: bool = False, excluded: Iterable = ()) -> Completeness:
    """Completeness of ``memory`` (a :class:`~.memory.PhysicalMemory`) against ``memory_map``.

    :param properties: the dump's properties; without a map, the collector's
        ``collect.memory_bytes`` bounds the total from below.
    :param truncated: some file of the dump has no END footer.
    :param excluded: the dump's EXCLUDED runs (format 1.4, ``.paddr``/``.length``):
        left out on purpose, so neither expected nor missing.
    """
    recorded = memory.missing_reasons()
    if hasattr(excluded, "starts") or (memory_map is not None and (
            hasattr(memory_map.ranges, "starts") or hasattr(memory_map.excluded, "starts"))):
        return _measure_columns(memory, memory_map, properties, truncated, excluded, recorded)
    left_out = _merge((r.paddr, r.paddr + r.length) for r in excluded)
    mapped = [(a, a + n) for a, n in memory_map.ranges] if memory_map is not None else []
    planned = _merge([(a, a + n) for a, n, _ in memory_map.excluded] + left_out) if memory_map is not None else []
    expected = _subtract(mapped, planned)
    small = _present_lists(memory, expected)
    if small is not None:
        return _measure_lists(small, memory_map, properties, truncated, left_out, recorded, mapped, planned,
                              expected)
    present, data = _present_sets(memory)
    columns = _Recorded(recorded)  # a million MISSING records: columns, not tuples
    if memory_map is None:
        import numpy as np

        out = (np.array([a for a, _ in left_out], np.uint64), np.array([b - 1 for _, b in left_out], np.uint64))
        failed = np_minus_set(np_minus_set(columns.failed, present), out)
        return _no_map(_np_size(present), _np_size(data), _np_size(failed), _np_gaps(failed, columns),
                       properties, truncated, _size(left_out))
    data_in = _np_overlap(expected, data)
    present_in = _np_overlap(expected, present)
    gaps = _np_gaps(_np_minus_arrays(expected, present), columns)  # a million holes: no object per gap
    return _with_map(memory_map, _size(expected), present_in, data_in, _np_size(present), gaps,
                     _size(_intersect(mapped, planned)), truncated)


def _run_set(runs) -> _Set:
    """(start, length, ...) runs -- a RunList's columns, or tuples/objects with
    ``.paddr``/``.length`` -- as a merged numpy set."""
    import numpy as np

    if hasattr(runs, "starts"):
        a, n = runs.starts, runs.lengths
    else:
        rows = [(r.paddr, r.length) if hasattr(r, "paddr") else (r[0], r[1]) for r in runs]
        a = np.array([x for x, _ in rows], np.uint64)
        n = np.array([y for _, y in rows], np.uint64)
    keep = n > 0
    if not keep.all():
        a, n = a[keep], n[keep]
    del keep
    last = n - np.uint64(1)  # in place from here: millions of runs, every copy counts
    room = np.uint64(2**64 - 1) - a  # a run past 2^64 ends at 2^64
    np.minimum(last, room, out=last)
    del room
    last += a
    return _np_merge(a, last)


def _np_union(x: _Set, y: _Set) -> _Set:
    import numpy as np

    return _np_merge(np.concatenate((x[0], y[0])), np.concatenate((x[1], y[1])))


def _measure_columns(memory: _MemoryLike, memory_map: MemoryMap | None, properties: dict[str, str] | None,
                     truncated: bool, excluded, recorded) -> Completeness:
    """:func:`measure` when the map or the EXCLUDED runs are columns (millions of
    runs: a crafted map, a kdump bitmap): every set numpy, no object per run."""
    left_out = _run_set(excluded)
    present, data = _present_sets(memory)
    columns = _Recorded(recorded)
    if memory_map is None:
        failed = np_minus_set(np_minus_set(columns.failed, present), left_out)
        return _no_map(_np_size(present), _np_size(data), _np_size(failed), _np_gaps(failed, columns),
                       properties, truncated, _np_size(left_out))
    mapped = _run_set(memory_map.ranges)
    planned = _np_union(_run_set(memory_map.excluded), left_out)
    del left_out
    expected = np_minus_set(mapped, planned)
    excluded_bytes = _np_size(mapped) - _np_size(expected)  # the planned bytes inside the map
    del mapped, planned
    present_in = _np_size(np_intersect_set(present, expected))
    data_in = _np_size(np_intersect_set(data, expected))
    gaps = _np_gaps(np_minus_set(expected, present), columns)
    return _with_map(memory_map, _np_size(expected), present_in, data_in, _np_size(present), gaps,
                     excluded_bytes, truncated)


def _with_map(memory_map: MemoryMap, want: int, present_in: int, data_in: int, present_all: int,
              gaps: tuple[Gap, ...] | GapList, excluded_bytes: int, truncated: bool) -> Completeness:
    """The figures measured against a memory map, said as :class:`Completeness`."""
    missing = want - present_in
    complete = missing == 0
    percent = 100.0 if complete else _floor_percent(present_in, want)
    if complete:
        reason = (f"every byte of the {_mib(want)} the memory map asks for is present "
                  f"(dump level {memory_map.dump_level})")
    else:
        reason = (f"{_mib(present_in)} of the {_mib(want)} the memory map asks for "
                  f"{'is' if present_in == 1 else 'are'} present; {_mib(missing)} missing "
                  f"in {len(gaps)} range(s)")
    return Completeness(
        has_map=True, dump_level=memory_map.dump_level, map_bytes=memory_map.total_bytes,
        excluded_bytes=excluded_bytes, expected_bytes=want,
        present_bytes=present_in, data_bytes=data_in, zero_bytes=present_in - data_in,
        missing_bytes=missing, missing_exact=True,
        outside_map_bytes=present_all - present_in, complete=complete,
        percent=percent, at_most_percent=None, lower_bound_bytes=None,
        truncated=truncated, reason=reason, gaps=gaps)


def _no_map(present_n: int, data_n: int, known_missing: int, gaps: tuple[Gap, ...] | GapList,
            properties: dict[str, str] | None, truncated: bool, left_out_bytes: int) -> Completeness:
    """No map (a file written before format 1.3): the total is unknown.

    :param known_missing: bytes MISSING records name that no record supplies
        (nor an EXCLUDED run leaves out); ``gaps`` are those bytes.
    """
    lower = _lower_bound(properties or {})
    bound = max(lower or 0, present_n + known_missing)
    proven = known_missing > 0 or (lower is not None and present_n < lower)
    at_most = _floor_percent(present_n, bound) if bound and present_n < bound else None
    reason = (f"{_mib(present_n)} present; the total is unknown (no memory map: file "
              f"written before format 1.3)")
    if lower is not None:
        reason += f"; {LOWER_BOUND_PROPERTY} = {lower} bytes is a lower bound on it"
    if at_most is not None:
        reason += f", so at most {at_most}% is present"
    if known_missing:
        reason += f"; MISSING records name {_mib(known_missing)} that could not be read"
    return Completeness(
        has_map=False, dump_level=None, map_bytes=None, excluded_bytes=left_out_bytes,
        expected_bytes=None,
        present_bytes=present_n, data_bytes=data_n, zero_bytes=present_n - data_n,
        missing_bytes=known_missing, missing_exact=False, outside_map_bytes=0,
        complete=False if proven else None, percent=None, at_most_percent=at_most,
        lower_bound_bytes=lower, truncated=truncated, reason=reason, gaps=gaps)


def _lower_bound(properties: dict[str, str]) -> int | None:
    try:
        value = int(properties.get(LOWER_BOUND_PROPERTY, ""))
    except ValueError:
        return None
    return value if value > 0 else None
