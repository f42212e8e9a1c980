"""The answer for one dump level: a class per pfn, counts, and excluded runs.

Why one byte per pfn: the writer needs, for any physical address, "kept, or
left out because ...", and the report needs counts; a ``uint8`` array over
every pfn answers both with numpy (1 MiB per 4 GiB of RAM), and
:meth:`PageClassification.excluded_runs` turns it into the few thousand
``(pfn, count, class)`` runs a dump format records compactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..tsd.records import PageClass

__all__ = ["PageClass", "PageClassification", "ExcludedRun", "COUNT_KEYS"]


#: Excluded classes in makedumpfile's report order, by JSON key.
COUNT_KEYS = tuple(c.key for c in PageClass if c not in (PageClass.KEPT, PageClass.ABSENT, PageClass.UNKNOWN))


@dataclass(frozen=True)
class ExcludedRun:
    """``count`` consecutive pfns from ``pfn``, all left out for ``cls``."""

    pfn: int
    count: int
    cls: PageClass


@dataclass
class PageClassification:
    """Every pfn of one dump at one dump level.

    :ivar classes: ``uint8`` :class:`PageClass` per pfn in ``[0, len(classes))``.
    :ivar free_blocks: ``(pfn, order)`` of the buddy blocks left out as free.
    :ivar unread: boolean per pfn, present pages whose struct page could not
        be read (kept: without it nothing says they may go); ``None`` when the
        level did not read struct pages.
    """

    level: int
    page_size: int
    classes: np.ndarray
    free_blocks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    unread: np.ndarray | None = None

    @property
    def unclassified(self) -> int:
        """Present pages kept only because their struct page could not be read."""
        return 0 if self.unread is None else int(np.count_nonzero(self.unread))

    @property
    def total(self) -> int:
        """Pages the dump holds (makedumpfile's "Original pages")."""
        return int(np.count_nonzero(self.classes != PageClass.ABSENT))

    @property
    def kept(self) -> int:
        return int(np.count_nonzero(self.classes == PageClass.KEPT))

    def counts(self) -> dict[str, int]:
        """Excluded pages per class key; each page counted once, in its class."""
        hist = np.bincount(self.classes, minlength=256)
        return {k: int(hist[PageClass[k.upper()]]) for k in COUNT_KEYS}

    def class_of(self, pfn: int) -> PageClass:
        if 0 <= pfn < self.classes.size:
            return PageClass(int(self.classes[pfn]))
        return PageClass.ABSENT

    def excluded_mask(self) -> np.ndarray:
        """Boolean per pfn: present in the dump and left out at this level."""
        return (self.classes != PageClass.KEPT) & (self.classes != PageClass.ABSENT)

    def excluded_runs(self) -> Iterator[ExcludedRun]:
        """Maximal runs of consecutive excluded pfns of one class, in pfn order."""
        c = self.classes
        if c.size == 0:
            return
        starts = np.flatnonzero(np.concatenate(([True], c[1:] != c[:-1])))
        ends = np.append(starts[1:], c.size)
        for s, e in zip(starts.tolist(), ends.tolist()):
            cls = int(c[s])
            if cls not in (PageClass.KEPT, PageClass.ABSENT):
                yield ExcludedRun(s, e - s, PageClass(cls))

    def below(self, end_pfn: int) -> PageClassification:
        """The same answer for pfns under ``end_pfn`` only (to compare with makedumpfile,
        which drops what lies above the last section that has struct pages)."""
        free = self.free_blocks[self.free_blocks[:, 0] < end_pfn]
        unread = None if self.unread is None else self.unread[:end_pfn]
        return PageClassification(self.level, self.page_size, self.classes[:end_pfn], free, unread)

    def summary(self) -> dict:
        """The JSON shape of ``memory.pages``: total, kept and excluded per class."""
        return {"total": self.total, "kept": self.kept, "excluded": self.counts()}
