"""Which pages are all zero bytes: read in large windows, tested with numpy.

Why only candidate pages, and why windows: makedumpfile tests for zero only
the pages its struct-page rules keep, so at level 31 most memory is never
read.  Reading happens per window of memory holding candidates (never a read
per page); a page is zero when its first 8-byte word is zero (one strided
compare over the window) and the OR of all its words is zero (only for the
pages whose first word was zero).  Ranges the source already knows to be
zero (``.tsd`` ZERO records) are not read at all.
"""

from __future__ import annotations

import numpy as np

from ..errors import TsubakiError
from .memory import PhysicalReader, PresentRange

__all__ = ["zero_pages", "zero_mask", "WINDOW"]

#: Window of physical memory per read: a read spans its first to last candidate
#: page, so a few pages between candidates are read and ignored (cheaper than
#: one call per fragment at level 31, where kept pages are scattered).
WINDOW = 2 << 20


def zero_mask(buf: bytes | memoryview, page_size: int) -> np.ndarray:
    """Boolean per page of ``buf`` (a whole number of pages): all bytes zero."""
    words = np.frombuffer(buf, np.uint64).reshape(-1, page_size // 8)
    zero = words[:, 0] == 0
    maybe = np.flatnonzero(zero)
    if maybe.size:
        zero[maybe] = np.bitwise_or.reduce(words[maybe], axis=1) == 0
    return zero


def zero_pages(memory: PhysicalReader, ranges: list[PresentRange], candidates: np.ndarray,
               page_size: int) -> np.ndarray:
    """Boolean per pfn: a candidate page whose content is all zero.

    :param candidates: boolean per pfn, the pages to test (kept so far, present).
    """
    shift = page_size.bit_length() - 1
    zero = np.zeros(candidates.size, bool)
    todo = candidates.copy()
    for r in ranges:
        if r.zero:
            a, b = r.start >> shift, min(r.end >> shift, candidates.size)
            zero[a:b] = candidates[a:b]
            todo[a:b] = False
    per_window = max(1, WINDOW // page_size)
    view = getattr(memory, "view", None)  # ElfVmcore: zero-copy windows of its mmap
    release = getattr(memory, "release", None)  # ... whose pages it drops once tested

    def read(paddr: int, size: int) -> bytes | memoryview:
        if view is not None:
            try:
                return view(paddr, size)
            except TsubakiError:
                pass  # not one segment's file bytes: read() knows how to assemble it
        return memory.read(paddr, size)

    for r in ranges:
        if r.zero:
            continue
        a, b = -(-r.start >> shift), min(r.end >> shift, candidates.size)
        for w in range(a, b, per_window):  # one read per window holding a candidate
            hits = np.flatnonzero(todo[w:min(w + per_window, b)])
            if hits.size:
                p, q = w + int(hits[0]), w + int(hits[-1]) + 1
                got = zero_mask(read(p << shift, (q - p) << shift), page_size)
                zero[p:q] = got & todo[p:q]
                if release is not None:  # keep RSS flat: the window is tested
                    try:
                        release(p << shift, (q - p) << shift)
                    except TsubakiError:
                        pass
    return zero
