"""What the monitor knows about every page right after the panic notice.

Why first: the dump level decides what *must be written* before Linux may
use a region again.  At level 31 a region of free, page-cache and user pages
needs nothing written (its pages are recorded as excluded), so it is the
cheapest place to reboot Linux in and the first to hand back; at level 1 the
cost of a region is its non-zero pages.  So the monitor classifies every
page from the crashed kernel's own ``struct page`` array
(:mod:`tsubaki_forensics.pageclass`) before it plans anything, and saves the
physical pages that hold those struct pages first: a dump cut short after
them still says why every left-out page was left out.

:class:`MonitorPages` answers, per physical range, the bytes that must be
written and the runs of kept/excluded pages the writer records.  Levels 0
and 1 need no VMCOREINFO (a zero scan suffices), so synthetic sources work
there; higher levels need it and fail with one line naming what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tsubaki_forensics.errors import PageClassError, SourceError, TsubakiError

from .zlibsizes import PageZlibSizes

__all__ = ["MonitorPages", "PageBook", "classify_source", "ClassifierCache", "KEPT", "ZERO"]

KEPT, ZERO = 0, 1  # PageClass values (tsubaki_forensics.pageclass.PageClass)
_ABSENT = 255
_WINDOW = 8 << 20


@dataclass
class MonitorPages:
    """Every pfn's class at one dump level (zero pages always known).

    :ivar classes: ``uint8`` PageClass per pfn; pages the level keeps but
        that are all zeros are ``ZERO`` too (they cost nothing to write).
    :ivar struct_pages: physical ``(paddr, length)`` ranges holding the
        struct pages (empty when the level did not read them).
    :ivar candidate_bytes: bytes the zero test read (pages the struct-page
        rules kept), for the CPU model.
    """

    level: int
    page_size: int
    classes: np.ndarray
    struct_pages: tuple[tuple[int, int], ...] = ()
    candidate_bytes: int = 0
    max_mapnr: int | None = None  # end of the last section with struct pages (makedumpfile's)
    _cum_kept: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._cum_kept = np.concatenate(([0], np.cumsum(self.classes == KEPT, dtype=np.int64)))

    @property
    def shift(self) -> int:
        return self.page_size.bit_length() - 1

    def write_bytes(self, start: int, length: int) -> int:
        """Bytes of kept, non-zero pages in ``[start, start+length)``: what must be written."""
        a = min(start >> self.shift, self.classes.size)
        b = min((start + length + self.page_size - 1) >> self.shift, self.classes.size)
        return int(self._cum_kept[b] - self._cum_kept[a]) << self.shift

    def kept_pages(self) -> int:
        return int(self._cum_kept[-1])

    def runs(self, start: int, length: int) -> Iterator[tuple[int, int, int]]:
        """``(paddr, length, class)`` runs covering the range, in order; ``KEPT``
        runs also cover zero pages when the level keeps zero pages (level 0)
        and any part of the range beyond the classified pfns."""
        shift, end = self.shift, start + length
        a, b = start >> shift, min((end + self.page_size - 1) >> shift, self.classes.size)
        c = self.classes[a:b].copy() if b > a else np.zeros(0, np.uint8)
        c[c == _ABSENT] = KEPT
        if not self.level & 1:
            c[c == ZERO] = KEPT
        if c.size == 0:
            yield start, length, KEPT
            return
        cuts = np.flatnonzero(c[1:] != c[:-1]) + 1
        bounds = [0, *cuts.tolist(), c.size]
        for i in range(len(bounds) - 1):
            lo = max(start, (a + bounds[i]) << shift)
            hi = min(end, (a + bounds[i + 1]) << shift) if i + 2 < len(bounds) else end
            if lo < hi:
                yield lo, hi - lo, int(c[bounds[i]])

    def counts(self) -> dict[str, int]:
        """Pages per class key, as ``inspect`` reports them."""
        from tsubaki_forensics.pageclass import PageClass

        hist = np.bincount(self.classes, minlength=256)
        return {c.key: int(hist[c]) for c in PageClass if c != PageClass.ABSENT}


class _SourceMemory:
    """A collect memory source as :class:`~tsubaki_forensics.pageclass.PhysicalReader`."""

    def __init__(self, source) -> None:
        self._source = source

    def ranges(self):
        return list(self._source.ranges)

    def read(self, paddr: int, size: int):
        return self._source.read(paddr, size)


class ClassifierCache:
    """One :class:`PageClassifier` per source for a whole ``collect`` run: the
    struct pages are read once however many policies and levels ask."""

    def __init__(self) -> None:
        self._by_source: dict[int, object] = {}

    def classifier(self, source):
        from tsubaki_forensics.pageclass import PageClassifier

        key = id(source)
        if key not in self._by_source:
            memory = _SourceMemory(source)  # its bulk reads drop the mapped pages: RSS stays flat
            self._by_source[key] = PageClassifier(memory, source.vmcoreinfo, arch=getattr(source, "arch", "x86_64"))
        return self._by_source[key]


def classify_source(source, level: int, cache: ClassifierCache | None = None) -> MonitorPages:
    """Classify every page of ``source`` at ``level`` as the monitor does.

    :raises TsubakiError: ``level`` needs struct pages and the source's
        VMCOREINFO cannot give them (one line naming what is missing).
    """
    if not 0 <= level <= 31:
        raise TsubakiError(f"--dump-level {level}: use 0..31 (makedumpfile's bits)")
    if not source.vmcoreinfo and level <= 1:
        return _zero_only(source, level)
    try:
        c = (cache or ClassifierCache()).classifier(source)
        result = c.classify(level | 1)
    except (SourceError, OSError) as e:  # memory the zero test could not read
        if level <= 1:
            return _zero_only(source, level)
        raise TsubakiError(f"--dump-level {level}: cannot classify pages: {e}") from None
    except PageClassError as e:
        if level <= 1:
            return _zero_only(source, level)
        raise TsubakiError(f"--dump-level {level}: {e}") from None
    except Exception as e:  # noqa: BLE001 - drgn on a damaged kernel image: any error
        if level <= 1:  # level 1 needs no struct pages: the zero scan alone is exact
            return _zero_only(source, level)
        raise TsubakiError(f"--dump-level {level}: cannot classify pages: {e}") from None
    classes = result.classes
    candidate = int(np.count_nonzero((classes == KEPT) | (classes == ZERO))) << c.layout.page_shift
    struct = _struct_page_ranges(c) if c.layout.walks_struct_pages(level) and level > 1 else ()
    try:
        mapnr = c.managed_end_pfn if c.layout.walks_struct_pages(level | 1) else None
    except PageClassError:
        mapnr = None
    return MonitorPages(level, c.layout.page_size, classes, struct, candidate, mapnr)


def _zero_only(source, level: int, page: int = 4096) -> MonitorPages:
    """Levels 0/1 without VMCOREINFO: only a zero scan, numpy over 8 MiB windows."""
    end = max(s + n for s, n in source.ranges) if source.ranges else 0
    classes = np.full(end // page, _ABSENT, np.uint8)
    for start, length in source.ranges:
        for pos in range(start, start + length, _WINDOW):
            size = min(_WINDOW, start + length - pos) // page * page
            if size <= 0 or pos % page:
                continue
            try:
                data = source.read(pos, size)
            except (SourceError, OSError):  # unreadable: kept, so the writer records it missing
                classes[pos // page: (pos + size) // page] = KEPT
                continue
            words = np.frombuffer(data, np.uint64).reshape(-1, page // 8)
            classes[pos // page: pos // page + len(words)] = np.where(words.any(axis=1), KEPT, ZERO)
    total = sum(n for _, n in source.ranges)
    return MonitorPages(level, page, classes, (), total)


def _struct_page_ranges(classifier) -> tuple[tuple[int, int], ...]:
    """Physical pages holding the struct pages, through the kernel's own page tables."""
    from _drgn import _linux_helper_follow_phys

    m = re.search(rb"SYMBOL\(swapper_pg_dir\)=([0-9a-fA-F]+)", classifier.vmcoreinfo)
    if m is None:
        return ()
    pgd, prog, page = int(m.group(1), 16), classifier._program_once(), classifier.layout.page_size
    size = classifier.layout.page_struct_size or 64
    out: list[tuple[int, int]] = []
    for mm in classifier.mem_maps:
        first = mm.vaddr - mm.vaddr % page
        for va in range(first, mm.vaddr + (mm.pfn_end - mm.pfn_start) * size, page):
            try:
                pa = int(_linux_helper_follow_phys(prog, pgd, va))
            except Exception:  # noqa: BLE001 - an untranslatable page is simply not saved first
                continue
            if out and out[-1][0] + out[-1][1] == pa:
                out[-1] = (out[-1][0], out[-1][1] + page)
            else:
                out.append((pa, page))
    return tuple(sorted(out))


class PageBook:
    """Every classification one ``collect`` run asks for, per level, computed once.

    :param classify: ``level -> MonitorPages``; the default classifies the
        source's real struct pages (tests give synthetic classes).
    """

    def __init__(self, source, classify=None) -> None:
        self.source = source
        self._cache = ClassifierCache()
        self._classify = classify or (lambda level: classify_source(source, level, self._cache))
        self._levels: dict[int, MonitorPages] = {}
        self._zlib = None

    def at(self, level: int) -> MonitorPages:
        """The pages at ``level`` (0..31)."""
        if level not in self._levels:
            self._levels[level] = self._classify(level)
        return self._levels[level]

    def used_bytes(self) -> int:
        """Non-zero memory: what the workload had in use (the demand model's target),
        the same for every policy whatever its level."""
        pages = self.at(1)
        return pages.kept_pages() * pages.page_size

    def zlib_sizes(self):
        """Per-page zlib sizes (for the kdump size model), shared by every kdump level."""
        if self._zlib is None:
            self._zlib = PageZlibSizes(self.source, self.at(1).page_size)
        return self._zlib
