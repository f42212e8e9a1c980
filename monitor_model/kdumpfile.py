"""The size of what ``makedumpfile -F -c -d N`` writes, page by page.

Why a model and not the tool: the ``kdump`` baseline of ``collect`` must be
the same on every machine and must not need makedumpfile installed, yet its
size decides how long the capture kernel writes to the SD card.  The layout
is makedumpfile's kdump-compressed format, flattened (``-F``, what
kdump-tools uses to pipe the dump): a 4 KiB flattened header, then every
write prefixed by a 16-byte (offset, size) header, and in the data a disk
dump header block, the sub-header blocks (its fields, the ELF notes and
VMCOREINFO), two bitmaps of one bit per pfn up to ``max_mapnr`` rounded to
blocks, a 24-byte page descriptor per dumpable page (zero pages included: it
finds them only while copying, and points them at the one shared zero page),
and each dumpable non-zero page compressed alone with
``compress2(..., Z_BEST_SPEED)`` (here ``zlib.compress(page, 1)``, the same
bytes), stored raw when that is not smaller.

The per-page zlib sizes are real (computed from the crash's memory on two
threads; zlib releases the GIL) and kept for every non-zero page, so the
levels of one ``collect --compare`` cost one pass.  ``bench/collect_compare.py
--kdump-check`` and tests/test_kdumpfile_real.py compare this model with the
real tool on the same crash.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .pages import KEPT, ZERO, MonitorPages
from .zlibsizes import PageZlibSizes

STRUCT_PAGE_BITS = 2 | 4 | 8 | 16  # dump-level bits decided from the struct pages

__all__ = ["KdumpSize", "PageZlibSizes", "kdump_size", "FLAT_HEADER", "DESC_BYTES"]

FLAT_HEADER = 4096  # makedumpfile_header, padded to MAX_SIZE_MDF_HEADER
DATA_HEADER = 16  # makedumpfile_data_header before every write of a flattened dump
DESC_BYTES = 24  # page_desc_t: offset, size, flags, page_flags
CACHE_BYTES = 4096 << 4  # write cache of page data/descriptors (page_size << DEFAULT_ORDER)
SUB_HEADER = 104  # struct kdump_sub_header (v6 fields) before the notes and VMCOREINFO


@dataclass(frozen=True)
class KdumpSize:
    """The parts of one modelled ``makedumpfile -F -c -d N`` output, in bytes."""

    level: int
    dumpable_pages: int  # pages with a descriptor (kept, plus zero pages the level keeps)
    data_pages: int  # non-zero pages compressed
    zero_pages_kept: int  # zero pages with a descriptor to the shared zero page
    header_bytes: int  # flattened header, disk dump header, sub header, bitmaps
    desc_bytes: int
    data_bytes: int  # compressed page data (and the shared zero page)
    flat_bytes: int  # the 16-byte headers of the flattened format
    input_bytes: int  # bytes zlib compresses (non-zero dumpable pages)
    candidate_bytes: int  # bytes makedumpfile reads and tests for zeros

    @property
    def total(self) -> int:
        return self.header_bytes + self.desc_bytes + self.data_bytes + self.flat_bytes


def kdump_size(pages: MonitorPages, zsizes: PageZlibSizes, *, vmcoreinfo_bytes: int = 0,
               notes_bytes: int = 0) -> KdumpSize:
    """The modelled output size of ``makedumpfile -F -c -d pages.level``."""
    page = pages.page_size
    # makedumpfile neither counts nor writes pfns above max_mapnr (QEMU's BIOS ROM)
    classes = pages.classes[: pages.max_mapnr or pages.classes.size]
    kept = classes == KEPT
    zero = classes == ZERO
    # Where zero pages go (checked byte for byte against makedumpfile 1.7.2):
    # at a level that reads struct pages it finds them only while copying, so
    # each keeps its bitmap bit and a descriptor to the one shared zero page
    # (its report counts them as excluded); at level 1 it drops them from the
    # bitmap first; at level 0 they are pages like any other, compressed.
    if pages.level & STRUCT_PAGE_BITS or not pages.level & 1:
        zero_kept = zero
    else:
        zero_kept = np.zeros_like(zero)
    zsizes.ensure(kept)
    n_kept, n_zero = int(np.count_nonzero(kept)), int(np.count_nonzero(zero_kept))
    data = int(zsizes.sizes[: kept.size][kept[: zsizes.sizes.size]].sum(dtype=np.int64)) + page
    if not pages.level & 1:
        data += n_zero * len(zlib.compress(bytes(page), 1))
    max_mapnr = classes.size  # the header's max_mapnr: the bitmaps stop there too
    bitmap = -(-(-(-max_mapnr // 8)) // page) * page
    # the sub-header holds the ELF notes, VMCOREINFO's note among them (or VMCOREINFO alone)
    sub = -(-(SUB_HEADER + (notes_bytes or vmcoreinfo_bytes)) // page) * page
    header = FLAT_HEADER + page + sub + 2 * bitmap
    desc = DESC_BYTES * (n_kept + n_zero)
    # one data header per write: the headers and bitmaps, then each cache flush
    writes = 4 + -(-desc // CACHE_BYTES) + -(-data // CACHE_BYTES)
    flat = DATA_HEADER * (writes + 1)  # + the end marker
    candidate = int(np.count_nonzero(kept | zero)) * page
    return KdumpSize(pages.level, n_kept + n_zero, n_kept, n_zero, header, desc, data,
                     flat, n_kept * page, candidate)
