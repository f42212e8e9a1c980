"""Pages of a dump by class, counted as makedumpfile's report counts them.

Why here, beside completeness: ``inspect``, ``verify`` and the benchmarks
report ``memory.pages`` (total, kept, excluded per class, docs/JSON.md) from
the dump alone, with no kernel at hand: the classes are in the dump's
EXCLUDED runs (format 1.4, FORMAT.md §4.9), and at a level with bit 1 the
zero pages are its ZERO records that no EXCLUDED run covers (makedumpfile
tests for zero only the pages its struct-page rules keep, so a page counts
once, in the first class that excludes it).  Whole pages only: a page counts
when it lies wholly inside the memory map.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .completeness import _intersect, _locate, _merge, _np_merge, _run_set, _subtract, np_intersect_set, np_minus_set
from .records import DUMP_LEVEL_ZERO_AS_RECORDS, ExcludedRange, MemoryMap, PageClass

__all__ = ["page_counts", "EXCLUDED_KEYS"]

#: ``memory.pages.excluded`` keys, in makedumpfile's report order.
EXCLUDED_KEYS = tuple(c.key for c in PageClass if c not in (PageClass.KEPT, PageClass.ABSENT))


def _pages(intervals: Iterable[tuple[int, int]], page_size: int) -> int:
    return sum(max(0, b // page_size - -(-a // page_size)) for a, b in intervals)


def _np_pages(x: tuple[np.ndarray, np.ndarray], pairs: list[tuple[int, int]], page_size: int) -> int:
    """Whole pages of each piece of the merged set ``x`` (first, inclusive
    last) clipped to the disjoint, sorted half-open ``pairs``: as
    :func:`_pages` of their intersection, with no object per piece."""
    pairs = [(a, b) for a, b in pairs if a < b]
    if not pairs or not len(x[0]):
        return 0
    a, bl, i, j = _locate(pairs, x)
    n = (j - i).astype(np.int64)
    if not n.sum():
        return 0
    which = np.repeat(np.arange(len(pairs)), n)  # the pair of each clipped piece
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(i, n).astype(np.int64)
    first = np.maximum(x[0][k], a[which])
    last = np.minimum(x[1][k], bl[which])
    ps = np.uint64(page_size)
    # floor((last + 1) / ps) - ceil(first / ps), without last + 1 overflowing at 2^64 - 1
    hi = (last // ps + (last % ps == ps - np.uint64(1))).astype(np.int64)
    lo = (first // ps + (first % ps != 0)).astype(np.int64)
    return int(np.maximum(hi - lo, 0).sum())


def page_counts(memory_map: MemoryMap | None, ranges: list, excluded: list[ExcludedRange],
                page_size: int) -> dict | None:
    """``{"total", "kept", "excluded": {class key: pages}}`` of a dump, or None without a map.

    :param ranges: the present ranges (``.start``, ``.length``, ``.kind`` "data"/"zero").
    :param excluded: the dump's merged EXCLUDED runs.
    """
    if memory_map is None:
        return None
    if hasattr(excluded, "starts") or hasattr(memory_map.ranges, "starts"):
        return _page_counts_columns(memory_map, ranges, excluded, page_size)
    mapped = [(a, a + n) for a, n in memory_map.ranges]
    counts = dict.fromkeys(EXCLUDED_KEYS, 0)
    left_out: list[tuple[int, int]] = []
    for r in excluded:
        inside = _intersect([(r.paddr, r.end)], mapped) if len(mapped) > 1 else \
            [(max(r.paddr, mapped[0][0]), min(r.end, mapped[0][1]))] if mapped else []
        counts[r.cls.key] += _pages(inside, page_size)
        left_out.append((r.paddr, r.end))
    if memory_map.dump_level & DUMP_LEVEL_ZERO_AS_RECORDS:
        if hasattr(ranges, "starts"):  # a RangeList: numpy columns (a million ZERO records, issue 22)
            z = ranges.zero
            counts["zero"] += _np_pages(_np_merge(ranges.starts[z], ranges.lasts[z]),
                                        _subtract(mapped, _merge(left_out)), page_size)
        else:
            zero = _merge((r.start, r.start + r.length) for r in ranges if r.kind == "zero")
            zero = _subtract(_intersect(zero, mapped), _merge(left_out))
            counts["zero"] += _pages(zero, page_size)
    total = _pages(mapped, page_size)
    return {"total": total, "kept": total - sum(counts.values()), "excluded": counts}


def _set_pages(x: tuple[np.ndarray, np.ndarray], page_size: int) -> int:
    """Whole pages inside each range of a set (first, inclusive last)."""
    if not len(x[0]):
        return 0
    ps = np.uint64(page_size)
    first, last = x
    hi = (last // ps + (last % ps == ps - np.uint64(1))).astype(np.int64)
    lo = (first // ps + (first % ps != 0)).astype(np.int64)
    return int(np.maximum(hi - lo, 0).sum())


def _page_counts_columns(memory_map: MemoryMap, ranges, excluded, page_size: int) -> dict:
    """:func:`page_counts` when the map or the EXCLUDED runs are columns
    (millions of runs, issue 22): numpy sets, no object per run."""
    mapped = _run_set(memory_map.ranges)
    counts = dict.fromkeys(EXCLUDED_KEYS, 0)
    if hasattr(excluded, "starts"):
        a, n, c = excluded.starts, excluded.lengths, excluded.tags
    else:
        a = np.array([r.paddr for r in excluded], np.uint64)
        n = np.array([r.length for r in excluded], np.uint64)
        c = np.array([int(r.cls) for r in excluded], np.uint32)
    every = None  # every run, as one set (the only one when every run is of one class)
    for cls in np.unique(c).tolist():
        pick = c == cls
        if pick.all():
            runs = every = _run_set(_Cols(a, n))
        else:
            runs = _run_set(_Cols(a[pick], n[pick]))
        del pick
        counts[PageClass(cls).key] += _set_pages(np_intersect_set(runs, mapped), page_size)
        del runs
    if memory_map.dump_level & DUMP_LEVEL_ZERO_AS_RECORDS:
        if hasattr(ranges, "starts"):
            st, la, z = ranges.starts, ranges.lasts, ranges.zero
        else:
            rs = [r for r in ranges if r.length > 0]
            st = np.array([r.start for r in rs], np.uint64)
            la = np.array([r.start + r.length - 1 for r in rs], np.uint64)
            z = np.array([r.kind == "zero" for r in rs], bool)
        zero = _np_merge(st[z], la[z])
        keep = np_minus_set(mapped, every if every is not None else _run_set(_Cols(a, n)))
        counts["zero"] += _set_pages(np_intersect_set(zero, keep), page_size)
    total = _set_pages(mapped, page_size)
    return {"total": total, "kept": total - sum(counts.values()), "excluded": counts}


class _Cols:
    """Two columns seen as a RunList's ``starts``/``lengths``."""

    def __init__(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.starts, self.lengths = starts, lengths
