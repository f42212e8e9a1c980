"""makedumpfile's exclusion rules for one dump level, applied to every pfn at once.

makedumpfile walks ``mem_map`` page by page: a compound tail is skipped; a
page whose rule excludes it takes ``2^order`` pages with it (a buddy block,
or a whole compound page) and the walk jumps past them.  So a page is
*examined* only if no earlier excluded block covers it, and the first
matching rule of this chain decides (``__exclude_unnecessary_pages``)::

    buddy head             (level & 16)  -> free,          2^private pages
    unaccepted             (level & 16)  -> free,          2^(MAX_ORDER) pages
    cache, !private, !anon (level & 2)   -> cache,         2^compound_order
    cache, !anon           (level & 4)   -> cache_private (cache if !private)
    anon or hugetlb        (level & 8)   -> user
    hwpoison               (always)      -> hwpoison
    offline                (always)      -> offline

Why this is exact without a loop: buddy blocks and (validated) compound pages
are aligned power-of-two blocks, so two of them are either nested or
disjoint, and "not covered by an earlier examined block" is "not covered by
any larger examined block".  Orders are resolved from the largest down (one
vectorised pass per order present), then each examined block paints its
pages.  Zero pages are not decided here: they come from page content, among
the pages these rules keep (:mod:`.zero`), as in makedumpfile.
"""

from __future__ import annotations

import numpy as np

from .features import INVALID_ORDER, Feature, PageFeatures
from .layout import DL_CACHE, DL_CACHE_PRIVATE, DL_FREE, DL_USER
from .result import PageClass

__all__ = ["candidates", "resolve_blocks", "classify_struct_pages"]


def candidates(feat: PageFeatures, level: int, *, free_area_orders: int | None,
               hwpoison_known: bool = True, present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The class (``uint8``) and block order each pfn would get if examined.

    ``KEPT`` where no rule applies, where the struct page is unknown, on
    compound tails (they follow their head) and on pfns not in ``present``
    (makedumpfile never examines a memory hole's struct page).
    """
    bits = feat.bits
    n = bits.size

    def has(f: Feature) -> np.ndarray:
        return (bits & np.uint16(f)) != 0

    cls = np.zeros(n, np.uint8)
    order = feat.compound_order.copy()
    undecided = has(Feature.READ) & ~has(Feature.TAIL)
    if present is not None:
        undecided &= present

    def rule(mask: np.ndarray, value: PageClass | np.ndarray) -> None:
        nonlocal undecided
        hit = undecided & mask
        cls[hit] = value if isinstance(value, PageClass) else value[hit]
        undecided = undecided & ~mask

    anon, cache, private = has(Feature.ANON), has(Feature.CACHE), has(Feature.PRIVATE)
    if level & DL_FREE:
        buddy = has(Feature.BUDDY)
        bad = buddy & (feat.buddy_order == INVALID_ORDER)
        undecided &= ~bad  # makedumpfile warns and keeps the page
        good = buddy & ~bad
        order[undecided & good] = feat.buddy_order[undecided & good]
        rule(good, PageClass.FREE)
        unaccepted = has(Feature.UNACCEPTED)
        if free_area_orders is not None:
            order[undecided & unaccepted] = free_area_orders - 1
        rule(unaccepted, PageClass.FREE)
    if level & DL_CACHE:
        rule(cache & ~private & ~anon, PageClass.CACHE)
    if level & DL_CACHE_PRIVATE:
        rule(cache & ~anon, np.where(private, PageClass.CACHE_PRIVATE, PageClass.CACHE).astype(np.uint8))
    if level & DL_USER:
        rule(anon | has(Feature.HUGETLB), PageClass.USER)
    if hwpoison_known:
        rule(has(Feature.HWPOISON), PageClass.HWPOISON)
    rule(has(Feature.OFFLINE), PageClass.OFFLINE)
    order[cls == PageClass.KEPT] = 0
    return cls, order


def resolve_blocks(cls: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint every examined excluded block; returns (class per pfn, examined heads, unsorted).

    Largest order first: a candidate is examined unless a larger examined
    block already covers it.  An aligned block of order k is one row of the
    class array seen as ``(-1, 2**k)``, so each order costs one fancy-indexed
    write over its heads, not a pass over every pfn.  A misaligned block
    (only in corrupt memory: the buddy allocator and makedumpfile's order
    check keep them aligned) is painted on its own.
    """
    n = cls.size
    top = int(order.max()) if n else 0
    size = -(-max(n, 1) // (1 << top)) << top
    out = np.zeros(size, np.uint8)
    covered = np.zeros(size, bool)
    cand = np.flatnonzero(cls != PageClass.KEPT)
    cand_order = order[cand]
    examined = []
    for k in sorted(np.unique(cand_order).tolist(), reverse=True):
        heads = cand[cand_order == k]
        heads = heads[~covered[heads]]
        examined.append(heads)
        if k == 0:
            out[heads] = cls[heads]
            continue
        aligned = (heads & ((1 << k) - 1)) == 0
        rows = heads[aligned] >> k
        out.reshape(-1, 1 << k)[rows] = cls[heads[aligned]][:, None]
        covered.reshape(-1, 1 << k)[rows] = True
        for h in heads[~aligned].tolist():  # corrupt memory only
            end = min(h + (1 << k), size)
            free = ~covered[h:end]
            out[h:end][free] = cls[h]
            covered[h:end] = True
    heads = np.concatenate(examined) if examined else np.zeros(0, np.int64)
    return out[:n], heads


def classify_struct_pages(feat: PageFeatures, level: int, *, free_area_orders: int | None,
                          hwpoison_known: bool = True,
                          present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class per pfn from the struct pages alone, and the ``(pfn, order)`` free blocks.

    :returns: (``uint8`` classes, ``int64`` array of shape ``(k, 2)``).
    """
    cls, order = candidates(feat, level, free_area_orders=free_area_orders, hwpoison_known=hwpoison_known,
                            present=present)
    out, heads = resolve_blocks(cls, order)
    free = np.sort(heads[cls[heads] == PageClass.FREE])
    return out, np.stack([free, order[free].astype(np.int64)], axis=1)
