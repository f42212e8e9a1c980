"""Synthetic struct-page arrays for the page-classification unit tests.

Two made-up VMCOREINFO layouts shaped like the two kernel eras the filter
supports (not copied from a real kernel): ``OLD`` keeps the compound order
and destructor in bytes of the first tail page and marks slab pages with a
flag bit; ``FOLIO`` keeps the order in the first tail page's flags and marks
slab, buddy, offline and hugetlb pages with page-type values in ``_mapcount``.
"""

from __future__ import annotations

import numpy as np

PAGE = 4096
SIZE = 64
OFF = {"flags": 0, "compound_head": 8, "dtor": 16, "order": 17, "mapping": 24, "private": 40,
       "mapcount": 48}
BITS = {"lru": 4, "swapcache": 10, "private": 13, "slab": 9, "swapbacked": 19, "hwpoison": 22,
        "head": 16, "hugetlb_dtor": 2}
MAPCOUNT = {"buddy": -129, "offline": -257, "slab": -1000, "hugetlb": -2000}

_COMMON = f"""OSRELEASE=synthetic
PAGESIZE={PAGE}
SYMBOL(swapper_pg_dir)=ffffffff81000000
SYMBOL(mem_section)=ffff888000100000
LENGTH(mem_section)=4
SIZE(mem_section)=16
OFFSET(mem_section.section_mem_map)=0
NUMBER(SECTION_SIZE_BITS)=20
SIZE(page)={SIZE}
OFFSET(page.flags)={OFF['flags']}
OFFSET(page._refcount)=52
OFFSET(page.mapping)={OFF['mapping']}
OFFSET(page.lru)=8
OFFSET(page._mapcount)={OFF['mapcount']}
OFFSET(page.private)={OFF['private']}
OFFSET(page.compound_head)={OFF['compound_head']}
LENGTH(zone.free_area)=11
NUMBER(PG_lru)={BITS['lru']}
NUMBER(PG_private)={BITS['private']}
NUMBER(PG_swapcache)={BITS['swapcache']}
NUMBER(PG_swapbacked)={BITS['swapbacked']}
NUMBER(PG_head_mask)={1 << BITS['head']}
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)={MAPCOUNT['buddy']}
NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)={MAPCOUNT['offline']}
"""
OLD = _COMMON + f"""OFFSET(page.compound_dtor)={OFF['dtor']}
OFFSET(page.compound_order)={OFF['order']}
NUMBER(PG_slab)={BITS['slab']}
NUMBER(HUGETLB_PAGE_DTOR)={BITS['hugetlb_dtor']}
"""
FOLIO = _COMMON + f"""NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)={MAPCOUNT['slab']}
NUMBER(PG_hwpoison)={BITS['hwpoison']}
NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)={MAPCOUNT['hugetlb']}
"""
VMEMMAP = 0xFFFFEA0000000000

_DTYPE = np.dtype({"names": ["flags", "compound_head", "dtor", "order", "mapping", "private", "mapcount"],
                   "formats": ["<u8", "<u8", "u1", "u1", "<u8", "<u8", "<i4"],
                   "offsets": [OFF[k] for k in ("flags", "compound_head", "dtor", "order", "mapping",
                                                "private", "mapcount")],
                   "itemsize": SIZE})


def without(text: str, key: str) -> str:
    """``text`` minus the line of ``key`` (``"NUMBER(PG_lru)"``)."""
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(key + "="))


class Pages:
    """A struct-page array being built: ``pages.buddy(8, 3)``, ``pages.cache(40)``..."""

    def __init__(self, n: int, era: str = "old") -> None:
        self.era = era
        self.a = np.zeros(n, _DTYPE)
        self.a["mapcount"] = -1

    def flag(self, pfn: int, *names: str) -> Pages:
        for name in names:
            self.a["flags"][pfn] |= np.uint64(1 << BITS[name])
        return self

    def buddy(self, pfn: int, order: int) -> Pages:
        self.a["mapcount"][pfn] = MAPCOUNT["buddy"]
        self.a["private"][pfn] = order
        return self

    def cache(self, pfn: int, private: bool = False) -> Pages:
        self.a["mapping"][pfn] = 0xFFFF888012345000
        return self.flag(pfn, "lru", *(["private"] if private else []))

    def anon(self, pfn: int) -> Pages:
        self.a["mapping"][pfn] = 0xFFFF888012345001
        return self.flag(pfn, "lru", "swapbacked")

    def slab(self, pfn: int, odd_word: bool = True) -> Pages:
        if self.era == "old":
            self.flag(pfn, "slab")
        else:
            self.a["mapcount"][pfn] = MAPCOUNT["slab"]
        if odd_word:  # a slab counter that happens to look like PAGE_MAPPING_ANON
            self.a["mapping"][pfn] = 7
        return self

    def compound(self, head: int, order: int, hugetlb: bool = False) -> Pages:
        """Mark ``head`` as the head of a ``2^order`` compound page and its tails."""
        self.a["flags"][head] |= np.uint64(1 << BITS["head"])
        for t in range(head + 1, head + (1 << order)):
            self.a["compound_head"][t] = VMEMMAP + head * SIZE + 1
        if self.era == "old":
            self.a["order"][head + 1] = order
            if hugetlb:
                self.a["dtor"][head + 1] = BITS["hugetlb_dtor"]
        else:
            self.a["flags"][head + 1] |= np.uint64(order)
            if hugetlb:
                self.a["mapcount"][head] = MAPCOUNT["hugetlb"]
        return self

    def raw(self) -> bytes:
        return self.a.tobytes()


def reference(pages: Pages, level: int, present: np.ndarray | None = None) -> np.ndarray:
    """makedumpfile's walk, page by page, on the raw fields: the oracle for the vectorised rules.

    Returns class codes (PageClass values) per pfn; a plain transcription of
    the rule chain, independent of :mod:`tsubaki_forensics.pageclass.features`.
    """
    a, era = pages.a, pages.era
    n = a.size
    present = np.ones(n, bool) if present is None else present
    out = np.zeros(n, np.uint8)

    def bit(f: int, name: str) -> bool:
        return bool(f & (1 << BITS[name]))

    pfn = 0
    hwpoison_known = era != "old"
    walk = bool(level & 30) or hwpoison_known
    if not walk:
        return out
    while pfn < n:
        if not present[pfn]:
            pfn += 1
            continue
        f, mc = int(a["flags"][pfn]), int(a["mapcount"][pfn])
        mapping, priv = int(a["mapping"][pfn]), int(a["private"][pfn])
        slab = bit(f, "slab") if era == "old" else mc == MAPCOUNT["slab"]
        order, hugetlb = 0, False
        if f & (1 << BITS["head"]) and pfn + 1 < n and pfn % 512 != 511:
            if era == "old":
                order = int(a["order"][pfn + 1])
                hugetlb = int(a["dtor"][pfn + 1]) == BITS["hugetlb_dtor"]
            else:
                order = int(a["flags"][pfn + 1]) & 0xFF
                hugetlb = mc == MAPCOUNT["hugetlb"]
            if order >= 64 or pfn & ((1 << order) - 1):
                order = 0
        if int(a["compound_head"][pfn]) & 1:
            pfn += 1
            continue
        anon = bool(mapping & 1) and not slab
        cache = bit(f, "lru") or (bit(f, "swapbacked") and bit(f, "swapcache"))
        private = bit(f, "private")
        nr, cls = 1 << order, 0
        if level & 16 and not slab and mc == MAPCOUNT["buddy"]:
            if priv >= 11:
                pfn += 1
                continue
            nr, cls = 1 << priv, 5
        elif level & 2 and cache and not private and not anon:
            cls = 2
        elif level & 4 and cache and not anon:
            cls = 3 if private else 2
        elif level & 8 and (anon or hugetlb):
            cls = 4
        elif hwpoison_known and bit(f, "hwpoison"):
            cls = 6
        elif not slab and mc == MAPCOUNT["offline"]:
            cls = 7
        if cls:
            end = min(pfn + nr, n)
            out[pfn:end] = np.where(present[pfn:end], cls, out[pfn:end])
            pfn = end
        else:
            pfn += 1
    return out
