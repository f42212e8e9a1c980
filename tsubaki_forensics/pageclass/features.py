"""Struct pages in, a few bits per page out: the predicates makedumpfile tests.

Why reduce first: the filter needs every pfn's answer to the same handful of
questions (is it a buddy head? page cache? anonymous? a compound tail?), and
those answers do not depend on the dump level.  Computing them once per
struct page, vectorised over a whole section of ``mem_map`` with a numpy
structured view (no Python per page), turns 64 bytes per page into 4 and
lets :mod:`.rules` apply any level cheaply.

The predicates follow makedumpfile (``isLRU``, ``isPrivate``, ``isAnon``,
``isSlab``, ``page_is_buddy_v3``, ``is_cache_page``, ``isHugetlb``,
``isOffline``, ``isHWPOISON``, the compound-order read in
``__exclude_unnecessary_pages``); docs/FILTER.md states them and where we differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from .layout import PAGE_MAPPING_ANON, PageLayout

__all__ = ["Feature", "PageFeatures", "extract_features", "INVALID_ORDER"]

#: ``buddy_order`` of a buddy page whose ``private`` is not a valid order
#: (makedumpfile warns "Invalid free page order" and keeps the page).
INVALID_ORDER = 255


class Feature(IntFlag):
    """One bit per predicate, in a ``uint16`` per pfn."""

    READ = 1 << 0          # the struct page was read (otherwise nothing below is known)
    TAIL = 1 << 1          # compound tail: follows its head, never examined alone
    BUDDY = 1 << 2         # head of a free block in the buddy allocator
    UNACCEPTED = 1 << 3    # unaccepted memory (confidential guests), free
    CACHE = 1 << 4         # page cache or swap cache
    PRIVATE = 1 << 5       # PG_private (buffer heads, fs-private data)
    ANON = 1 << 6          # anonymous (mapping & PAGE_MAPPING_ANON), not slab
    HUGETLB = 1 << 7       # head of a hugetlbfs page (user data)
    HWPOISON = 1 << 8
    OFFLINE = 1 << 9       # logically offline (balloon, virtio-mem)


@dataclass
class PageFeatures:
    """Per-pfn predicates over ``[0, len(bits))``: the input of :func:`.rules.classify`."""

    bits: np.ndarray            # uint16 Feature bits
    buddy_order: np.ndarray     # uint8: page->private of buddy heads, INVALID_ORDER if too big
    compound_order: np.ndarray  # uint8: order of compound heads (0 elsewhere or invalid)

    @classmethod
    def empty(cls, pfns: int) -> PageFeatures:
        return cls(np.zeros(pfns, np.uint16), np.zeros(pfns, np.uint8), np.zeros(pfns, np.uint8))


def _dtype(layout: PageLayout) -> np.dtype:
    """A structured dtype over one ``struct page`` with the fields the rules read."""
    fields = {"flags": (layout.off_flags, "<u8"), "mapcount": (layout.off_mapcount, "<u4"),
              "mapping": (layout.off_mapping, "<u8"), "private": (layout.off_private, "<u8"),
              "compound_head": (layout.off_compound_head, "<u8")}
    if layout.off_order1 is not None and not layout.order_in_flags1:
        fields["order1"] = (layout.off_order1, "u1")
    if layout.off_dtor1 is not None and not layout.order_in_flags1:
        fields["dtor1"] = (layout.off_dtor1, "u1")
    present = {k: v for k, v in fields.items() if v[0] is not None}
    return np.dtype({"names": list(present), "formats": [v[1] for v in present.values()],
                     "offsets": [v[0] for v in present.values()], "itemsize": layout.page_struct_size})


def _bit(flags: np.ndarray, nr: int | None) -> np.ndarray:
    """makedumpfile's ``test_bit``: an ``int`` mask, so only ``nr & 31`` counts."""
    if nr is None:
        return np.zeros(flags.shape, bool)
    mask = np.uint64((1 << (nr & 0x1F)) if (nr & 0x1F) != 31 else 0xFFFFFFFF80000000)
    return (flags & mask) != 0


def _u32(value: int | None) -> np.uint32 | None:
    return None if value is None else np.uint32(value & 0xFFFFFFFF)


def extract_features(raw: bytes | memoryview | np.ndarray, first_pfn: int, layout: PageLayout,
                     out: PageFeatures) -> None:
    """Fill ``out`` for the struct pages in ``raw`` (``SIZE(page)`` bytes each, from ``first_pfn``).

    ``raw`` must hold whole struct pages of consecutive pfns (one section's
    ``mem_map``, say).  A compound head's order is read from the next struct
    page, so a head that is the last page of ``raw`` gets order 0, as in
    makedumpfile, whose struct-page cache never ends on a valid head.
    """
    dt = _dtype(layout)
    buf = np.frombuffer(raw, np.uint8)
    n = buf.size // dt.itemsize
    if n == 0:
        return
    pages = buf[: n * dt.itemsize].view(dt)
    flags, mapcount, mapping = pages["flags"], pages["mapcount"], pages["mapping"]
    sl = slice(first_pfn, first_pfn + n)

    slab = np.zeros(n, bool)
    if layout.slab_mapcount is not None:
        slab |= mapcount == _u32(layout.slab_mapcount)
    if layout.pg_slab is not None:
        slab |= (flags & np.uint64(1 << layout.pg_slab)) != 0
    bits = np.full(n, Feature.READ, np.uint16)

    def put(mask: np.ndarray, feature: Feature) -> None:
        bits[mask] |= np.uint16(feature)

    put((pages["compound_head"] & np.uint64(1)) != 0, Feature.TAIL)
    anon = ((mapping & np.uint64(PAGE_MAPPING_ANON)) != 0) & ~slab
    put(anon, Feature.ANON)
    put(_bit(flags, layout.pg_private), Feature.PRIVATE)
    swapbacked = _bit(flags, layout.pg_swapbacked) if layout.pg_swapbacked is not None else True
    put(_bit(flags, layout.pg_lru) | (swapbacked & _bit(flags, layout.pg_swapcache)), Feature.CACHE)
    if layout.pg_hwpoison is not None:
        put(_bit(flags, layout.pg_hwpoison), Feature.HWPOISON)
    if layout.offline_mapcount is not None:
        put(~slab & (mapcount == _u32(layout.offline_mapcount)), Feature.OFFLINE)
    if layout.unaccepted_mapcount is not None:
        put(mapcount == _u32(layout.unaccepted_mapcount), Feature.UNACCEPTED)
    if layout.buddy_mapcount is not None:
        buddy = ~slab & (mapcount == _u32(layout.buddy_mapcount))
        put(buddy, Feature.BUDDY)
        private = pages["private"][buddy]
        limit = layout.free_area_orders if layout.free_area_orders is not None else 64
        out.buddy_order[sl][buddy] = np.where(private < np.uint64(limit), private, INVALID_ORDER).astype(np.uint8)

    # Compound heads: order (and the hugetlb mark) from the first tail page.
    if layout.pg_head_mask is not None:
        heads = np.flatnonzero((flags[:-1] & np.uint64(layout.pg_head_mask)) != 0)
        order = np.zeros(heads.size, np.uint64)
        hugetlb = np.zeros(heads.size, bool)
        if layout.order_in_flags1:
            flags1 = flags[heads + 1]
            order = flags1 & np.uint64(0xFF)
            if layout.hugetlb_mapcount is not None:
                hugetlb = mapcount[heads] == _u32(layout.hugetlb_mapcount)
            elif layout.pg_hugetlb is not None:
                hugetlb = (flags1 & np.uint64(1 << layout.pg_hugetlb)) != 0
        else:
            if "order1" in dt.names:
                order = pages["order1"][heads + 1].astype(np.uint64)
            if "dtor1" in dt.names and layout.hugetlb_dtor is not None:
                hugetlb = pages["dtor1"][heads + 1] == layout.hugetlb_dtor
        pfn = heads.astype(np.uint64) + np.uint64(first_pfn)
        valid = (order < 64) & ((pfn & ((np.uint64(1) << np.minimum(order, 63)) - np.uint64(1))) == 0)
        out.compound_order[sl][heads] = np.where(valid, order, 0).astype(np.uint8)
        put_h = np.zeros(n, bool)
        put_h[heads[hugetlb]] = True
        put(put_h, Feature.HUGETLB)
    out.bits[sl] = bits
