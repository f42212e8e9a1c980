"""Find the crashed kernel's ``struct page`` array and reduce it to features.

Why ``mem_section`` and not ``SYMBOL(vmemmap)``: 6.1 does not publish
``vmemmap`` in VMCOREINFO (6.12 does), and on x86_64 its base is randomised
by KASLR; every SPARSEMEM kernel publishes ``SYMBOL(mem_section)`` (the
array of section roots), and each present section's ``section_mem_map``
encodes where that section's struct pages are, exactly what makedumpfile
reads (``get_mm_sparsemem``).  With SPARSEMEM_VMEMMAP every section decodes
to the same vmemmap base, so consecutive sections are read in one go.

The struct pages are read through drgn (virtual addresses, the dump's own
page tables), section by section, and reduced to 4 bytes per pfn at once
(:mod:`.features`); peak memory is one read window, not the whole array.
"""

from __future__ import annotations

from dataclasses import dataclass

import drgn
import numpy as np

from ..errors import PageClassError
from .features import PageFeatures, extract_features
from .layout import SECTION_MAP_FLAG_BITS, SECTION_MARKED_PRESENT, PageLayout

__all__ = ["MemMapRange", "section_mem_maps", "read_features", "READ_WINDOW"]

#: Struct pages read per drgn call (8 MiB: 128 Ki pages, 512 MiB of RAM).
READ_WINDOW = 8 << 20


@dataclass(frozen=True)
class MemMapRange:
    """Struct pages of pfns ``[pfn_start, pfn_end)`` at kernel virtual address ``vaddr``."""

    pfn_start: int
    pfn_end: int
    vaddr: int


def _is_kvaddr(addr: int) -> bool:
    """In the kernel half of a 64-bit address space (x86_64 and arm64 alike)."""
    return addr >= 1 << 63


def _decode_roots(prog: drgn.Program, layout: PageLayout, roots_addr: int,
                  sections: int) -> list[MemMapRange] | None:
    """Sections from the root array at ``roots_addr``, or ``None`` if it does not decode."""
    assert layout.mem_section_roots and layout.mem_section_size and layout.section_mem_map is not None
    per_root = layout.page_size // layout.mem_section_size
    nroots = min(layout.mem_section_roots, -(-sections // per_root))
    try:
        roots = np.frombuffer(prog.read(roots_addr, 8 * nroots), "<u8")
    except drgn.FaultError:
        return None
    pps, psize = layout.pages_per_section, layout.page_struct_size
    assert psize is not None
    mask = ~((1 << SECTION_MAP_FLAG_BITS) - 1) & 0xFFFFFFFFFFFFFFFF
    out: list[MemMapRange] = []
    for root_nr, root in enumerate(roots.tolist()):  # a few roots: 1 per 256 sections (32 GiB)
        if not root:
            continue
        try:
            blob = prog.read(root, per_root * layout.mem_section_size)
        except drgn.FaultError:
            continue
        maps = np.frombuffer(blob, np.uint8).reshape(per_root, layout.mem_section_size)
        words = maps[:, layout.section_mem_map:layout.section_mem_map + 8].copy().view("<u8").ravel()
        for i in np.flatnonzero(words & np.uint64(SECTION_MARKED_PRESENT)).tolist():
            nr = root_nr * per_root + i
            if nr >= sections:
                break
            vaddr = (int(words[i]) & mask) + nr * pps * psize & 0xFFFFFFFFFFFFFFFF
            if not _is_kvaddr(vaddr):
                return None
            out.append(MemMapRange(nr * pps, (nr + 1) * pps, vaddr))
    return out or None


def section_mem_maps(prog: drgn.Program, layout: PageLayout, max_pfn: int) -> list[MemMapRange]:
    """Where the struct pages of every present section below ``max_pfn`` are.

    ``SYMBOL(mem_section)`` is the root array itself in VMCOREINFO; as
    makedumpfile, fall back to reading it as a pointer to that array.

    :raises PageClassError: neither reading decodes a single present section.
    """
    assert layout.mem_section is not None
    sections = -(-max_pfn // layout.pages_per_section)
    found = _decode_roots(prog, layout, layout.mem_section, sections)
    if found is None:
        try:
            pointer = int.from_bytes(prog.read(layout.mem_section, 8), "little")
        except drgn.FaultError as e:
            raise PageClassError(f"cannot read mem_section at {layout.mem_section:#x}: {e}",
                                 "SYMBOL(mem_section)") from None
        found = _decode_roots(prog, layout, pointer, sections) if _is_kvaddr(pointer) else None
    if found is None:
        raise PageClassError("cannot locate the struct pages: no present section decodes from "
                             "SYMBOL(mem_section)", "SYMBOL(mem_section)")
    if layout.vmemmap is not None:  # 6.x publishes it: every section must agree (a wrong
        psize = layout.page_struct_size or 0  # map would be a wrong filter)
        wrong = [r for r in found if r.vaddr - r.pfn_start * psize != layout.vmemmap]
        if wrong:
            raise PageClassError(f"mem_section puts the struct pages of pfn {wrong[0].pfn_start:#x} at "
                                 f"{wrong[0].vaddr:#x}, not in SYMBOL(vmemmap)={layout.vmemmap:#x}",
                                 "SYMBOL(vmemmap)")
    return [MemMapRange(r.pfn_start, min(r.pfn_end, max_pfn), r.vaddr) for r in found]


def _windows(maps: list[MemMapRange], psize: int) -> list[MemMapRange]:
    """Coalesce virtually contiguous sections, cut into READ_WINDOW pieces."""
    merged: list[MemMapRange] = []
    for m in maps:
        if merged and merged[-1].pfn_end == m.pfn_start and \
                merged[-1].vaddr + (merged[-1].pfn_end - merged[-1].pfn_start) * psize == m.vaddr:
            merged[-1] = MemMapRange(merged[-1].pfn_start, m.pfn_end, merged[-1].vaddr)
        else:
            merged.append(m)
    step = max(1, READ_WINDOW // psize)
    return [MemMapRange(p, min(p + step, m.pfn_end), m.vaddr + (p - m.pfn_start) * psize)
            for m in merged for p in range(m.pfn_start, m.pfn_end, step)]


def read_features(prog: drgn.Program, layout: PageLayout, maps: list[MemMapRange],
                  max_pfn: int) -> PageFeatures:
    """Features of every pfn below ``max_pfn`` whose struct page the dump holds.

    A window whose struct pages are partly missing from the dump is retried
    page by page; pfns whose struct page stays unreadable keep no
    ``Feature.READ`` bit and are never excluded.
    """
    psize = layout.page_struct_size
    assert psize is not None
    feat = PageFeatures.empty(max_pfn)
    for w in _windows(maps, psize):
        try:
            raw = prog.read(w.vaddr, (w.pfn_end - w.pfn_start) * psize)
        except drgn.FaultError:
            _read_piecewise(prog, layout, w, feat)
            continue
        extract_features(raw, w.pfn_start, layout, feat)
    return feat


def _read_piecewise(prog: drgn.Program, layout: PageLayout, w: MemMapRange, feat: PageFeatures) -> None:
    """The struct pages of ``w`` one page of ``mem_map`` at a time (a partial dump)."""
    psize = layout.page_struct_size
    assert psize is not None
    per = max(1, layout.page_size // psize)
    for p in range(w.pfn_start, w.pfn_end, per):
        n = min(per, w.pfn_end - p)
        try:
            raw = prog.read(w.vaddr + (p - w.pfn_start) * psize, n * psize)
        except drgn.FaultError:
            continue
        extract_features(raw, p, layout, feat)
