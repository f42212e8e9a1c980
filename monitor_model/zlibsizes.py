"""Real per-page zlib sizes of a source (:class:`PageZlibSizes`), for the kdump size model.

Why its own module: the page book (:mod:`.pages`) keeps one per source, shared
by every kdump level of a ``collect --compare``, and the kdump model
(:mod:`.kdumpfile`) reads it; both import it from here, so neither imports
the other in a cycle.  ``kdumpfile`` re-exports it, its old home.
Sizes are ``zlib.compress(page, 1)`` (makedumpfile's ``compress2(...,
Z_BEST_SPEED)``, the same bytes), computed on two threads (zlib releases the GIL).
"""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["PageZlibSizes"]

_CHUNK = 8 << 20


class PageZlibSizes:
    """zlib level-1 compressed size of every page of a source (0: not computed)."""

    def __init__(self, source, page_size: int = 4096) -> None:
        self.source, self.page_size = source, page_size
        end = max((s + n for s, n in source.ranges), default=0)
        self.sizes = np.zeros(end // page_size, np.uint16)  # stored size: min(compressed, page)
        self.done = np.zeros(end // page_size, bool)

    def ensure(self, wanted: np.ndarray) -> None:
        """Compute the sizes of the pfns in ``wanted`` (a boolean mask) not yet known."""
        todo = wanted[: self.done.size] & ~self.done[: wanted.size]
        if not todo.any():
            return
        page = self.page_size
        per = _CHUNK // page
        chunks = sorted({int(p) // per for p in np.flatnonzero(todo)})

        def one(chunk: int) -> None:
            lo = chunk * per
            hi = min(lo + per, todo.size)
            for start, length in self.source.ranges:  # read only what is present
                a, b = max(lo, -(-start // page)), min(hi, (start + length) // page)
                if a >= b or not todo[a:b].any():
                    continue
                data = memoryview(self.source.read(a * page, (b - a) * page))
                for pfn in (np.flatnonzero(todo[a:b]) + a).tolist():
                    off = (pfn - a) * page
                    self.sizes[pfn] = min(page, len(zlib.compress(data[off: off + page], 1)))
                self.done[a:b] |= todo[a:b]

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, chunks))
