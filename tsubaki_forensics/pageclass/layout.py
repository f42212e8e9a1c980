"""What VMCOREINFO says about ``struct page``: offsets, flag bits, magic values.

Why a separate, pure module: every rule of the filter depends on numbers the
crashed kernel published about itself (``OFFSET(page.flags)``,
``NUMBER(PG_lru)``, ``NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)``, ...), and they
change between kernel series (6.1 has ``PG_slab``; 6.12 has
``PAGE_SLAB_MAPCOUNT_VALUE`` and keeps the folio order in the first tail
page's flags).  Reading them in one place, once, lets the rules stay plain
numpy and lets a missing field become one clear error naming it, never a
silently wrong filter.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..drgn_bridge.vmcoreinfo import parse_vmcoreinfo
from ..errors import PageClassError

__all__ = ["PageLayout", "page_layout", "LEVEL_BITS", "STRUCT_PAGE_BITS",
           "DL_ZERO", "DL_CACHE", "DL_CACHE_PRIVATE", "DL_USER", "DL_FREE"]

#: makedumpfile's dump-level bits (makedumpfile.h ``DL_EXCLUDE_*``).
DL_ZERO, DL_CACHE, DL_CACHE_PRIVATE, DL_USER, DL_FREE = 1, 2, 4, 8, 16
LEVEL_BITS = 31
#: Bits whose classes come from the struct pages (zero comes from page content).
STRUCT_PAGE_BITS = DL_CACHE | DL_CACHE_PRIVATE | DL_USER | DL_FREE

#: ``PAGE_MAPPING_ANON``: low bit of ``page->mapping`` on anonymous pages.
PAGE_MAPPING_ANON = 1
#: Low bits of ``mem_section.section_mem_map`` that are flags, not address
#: (makedumpfile masks ``SECTION_MAP_LAST_BIT = 1 << 5`` for every kernel).
SECTION_MAP_FLAG_BITS = 5
SECTION_MARKED_PRESENT = 1


@dataclass(frozen=True)
class PageLayout:
    """The numbers the filter needs; ``None`` where the kernel did not publish one."""

    page_size: int
    # Where the struct pages are (SPARSEMEM, extreme: an array of section roots).
    mem_section: int | None
    mem_section_roots: int | None          # LENGTH(mem_section)
    mem_section_size: int | None           # SIZE(mem_section)
    section_mem_map: int | None            # OFFSET(mem_section.section_mem_map)
    section_size_bits: int | None
    vmemmap: int | None                    # SYMBOL(vmemmap), 6.x with it published
    # struct page
    page_struct_size: int | None
    off_flags: int | None
    off_mapcount: int | None
    off_mapping: int | None
    off_private: int | None
    off_compound_head: int | None
    # Where the order and the hugetlb mark of a compound page live (one of three eras).
    order_in_flags1: bool                  # 6.6+: low byte of folio._flags_1 (page[1].flags)
    off_order1: int | None                 # offset inside page[1] of compound_order
    off_dtor1: int | None                  # offset inside page[1] of compound_dtor
    hugetlb_dtor: int | None               # NUMBER(HUGETLB_PAGE_DTOR)
    pg_hugetlb: int | None                 # NUMBER(PG_hugetlb), 6.6-6.8
    hugetlb_mapcount: int | None           # NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE), 6.9+
    # page flags and page types
    pg_lru: int | None
    pg_private: int | None
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_hwpoison: int | None
    pg_head_mask: int | None
    slab_mapcount: int | None
    buddy_mapcount: int | None
    offline_mapcount: int | None
    unaccepted_mapcount: int | None
    free_area_orders: int | None           # LENGTH(zone.free_area): MAX_ORDER + 1

    # -- what each part of the filter needs -----------------------------------------

    def require(self, level: int) -> None:
        """Raise :class:`PageClassError` naming the first field ``level`` needs and lacks.

        Level bits 2..16 read the struct pages; level 0/1 only when the kernel
        publishes ``PG_hwpoison`` (as makedumpfile, see :meth:`walks_struct_pages`).
        """
        if not self.walks_struct_pages(level):
            return
        needed = self._struct_page_fields()
        if level & (DL_CACHE | DL_CACHE_PRIVATE | DL_USER):
            needed += [("NUMBER(PG_lru)", self.pg_lru), ("NUMBER(PG_private)", self.pg_private),
                       ("NUMBER(PG_swapcache)", self.pg_swapcache)]
            if self.pg_slab is None and self.slab_mapcount is None:
                needed.append(("NUMBER(PG_slab) or NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)", None))
        if level & DL_FREE:
            needed += [("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", self.buddy_mapcount),
                       ("LENGTH(zone.free_area)", self.free_area_orders)]
        _check(needed, f"cannot classify pages at dump level {level}")

    def require_struct_pages(self) -> None:
        """Raise :class:`PageClassError` unless the struct pages can be located and read."""
        _check(self._struct_page_fields(), "cannot locate the struct pages")

    def _struct_page_fields(self) -> list[tuple[str, object]]:
        return [
            ("SYMBOL(mem_section)", self.mem_section),
            ("LENGTH(mem_section)", self.mem_section_roots),
            ("SIZE(mem_section)", self.mem_section_size),
            ("OFFSET(mem_section.section_mem_map)", self.section_mem_map),
            ("NUMBER(SECTION_SIZE_BITS)", self.section_size_bits),
            ("SIZE(page)", self.page_struct_size),
            ("OFFSET(page.flags)", self.off_flags),
            ("OFFSET(page._mapcount)", self.off_mapcount),
            ("OFFSET(page.mapping)", self.off_mapping),
            ("OFFSET(page.private)", self.off_private),
            ("OFFSET(page.compound_head)", self.off_compound_head),
            ("NUMBER(PG_head_mask)", self.pg_head_mask),
        ]

    def walks_struct_pages(self, level: int) -> bool:
        """Whether makedumpfile reads the struct pages at ``level``.

        It does for any of bits 2/4/8/16, and also at level 0/1 when the kernel
        publishes ``PG_hwpoison`` (hwpoison and offline pages are then always
        dropped); without it, level 0/1 drops no page by its struct page.
        """
        return bool(level & STRUCT_PAGE_BITS) or self.pg_hwpoison is not None

    @property
    def pages_per_section(self) -> int:
        assert self.section_size_bits is not None
        return 1 << (self.section_size_bits - self.page_shift)

    @property
    def page_shift(self) -> int:
        return self.page_size.bit_length() - 1


def _check(needed: list[tuple[str, object]], what: str) -> None:
    for name, value in needed:
        if value is None:
            raise PageClassError(f"{what}: VMCOREINFO lacks {name}", name)


def _int(fields: dict[str, str], key: str, base: int = 10) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    value = value.strip()
    try:
        return int(value, 16 if value.lower().startswith("0x") else base)
    except ValueError:
        raise PageClassError(f"VMCOREINFO {key}={value!r} is not a number", key) from None


def page_layout(vmcoreinfo: bytes | str | None) -> PageLayout:
    """The :class:`PageLayout` published in ``vmcoreinfo`` (the note's text).

    :raises PageClassError: no VMCOREINFO, no ``PAGESIZE``, or a field that is not a number.
    """
    if not vmcoreinfo:
        raise PageClassError("cannot classify pages: the dump has no VMCOREINFO", "VMCOREINFO")
    f = parse_vmcoreinfo(vmcoreinfo).fields
    page_size = _int(f, "PAGESIZE")
    if not page_size or page_size & (page_size - 1):
        raise PageClassError("cannot classify pages: VMCOREINFO lacks PAGESIZE", "PAGESIZE")
    num, off, size, sym = (lambda k: _int(f, f"NUMBER({k})"), lambda k: _int(f, f"OFFSET({k})"),
                           lambda k: _int(f, f"SIZE({k})"), lambda k: _int(f, f"SYMBOL({k})", 16))
    page_struct_size = size("page")
    folio_order, folio_dtor = off("folio._folio_order"), off("folio._folio_dtor")
    rel = (lambda o: None if o is None or page_struct_size is None else o - page_struct_size)
    return PageLayout(
        page_size=page_size,
        mem_section=sym("mem_section"),
        mem_section_roots=_int(f, "LENGTH(mem_section)"),
        mem_section_size=size("mem_section"),
        section_mem_map=off("mem_section.section_mem_map"),
        section_size_bits=num("SECTION_SIZE_BITS"),
        vmemmap=sym("vmemmap"),
        page_struct_size=page_struct_size,
        off_flags=off("page.flags"),
        off_mapcount=off("page._mapcount"),
        off_mapping=off("page.mapping"),
        off_private=off("page.private"),
        off_compound_head=off("page.compound_head"),
        order_in_flags1=num("PAGE_HUGETLB_MAPCOUNT_VALUE") is not None or num("PG_hugetlb") is not None,
        off_order1=rel(folio_order) if folio_order is not None else off("page.compound_order"),
        off_dtor1=rel(folio_dtor) if folio_dtor is not None else off("page.compound_dtor"),
        hugetlb_dtor=num("HUGETLB_PAGE_DTOR"),
        pg_hugetlb=num("PG_hugetlb"),
        hugetlb_mapcount=num("PAGE_HUGETLB_MAPCOUNT_VALUE"),
        pg_lru=num("PG_lru"),
        pg_private=num("PG_private"),
        pg_swapcache=num("PG_swapcache"),
        pg_swapbacked=num("PG_swapbacked"),
        pg_slab=num("PG_slab"),
        pg_hwpoison=num("PG_hwpoison"),
        pg_head_mask=num("PG_head_mask"),
        slab_mapcount=num("PAGE_SLAB_MAPCOUNT_VALUE"),
        buddy_mapcount=num("PAGE_BUDDY_MAPCOUNT_VALUE"),
        offline_mapcount=num("PAGE_OFFLINE_MAPCOUNT_VALUE"),
        unaccepted_mapcount=num("PAGE_UNACCEPTED_MAPCOUNT_VALUE"),
        free_area_orders=_int(f, "LENGTH(zone.free_area)"),
    )
