"""Build small makedumpfile-layout files (kdump-compressed and flattened) for tests.

The layout is the one makedumpfile 1.7.x writes (header version 6, 64-bit):
block 0 ``disk_dump_header``, block 1.. ``kdump_sub_header`` with VMCOREINFO
and notes after it, the two bitmaps, one page descriptor per dumped page,
then the page data; zero pages share one descriptor target, as
makedumpfile's ``pd_zero`` does.  The real-crash tests check our reader on
makedumpfile's own output; these files let the fuzz tests run anywhere.
"""

from __future__ import annotations

import random
import struct
import zlib

import cramjam
import lzokay
import numpy as np
import zstandard

from tsubaki_forensics.vmcore.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER
from tsubaki_forensics.vmcore.notes import build_note

PS = 4096
CODEC_FLAGS = {"zlib": 1, "lzo": 2, "snappy": 4, "zstd": 0x20, "none": 0}
VMCOREINFO = b"OSRELEASE=6.1.0-synthetic\nPAGESIZE=4096\n"


def _compress(codec: str, page: bytes) -> bytes:
    return {"zlib": lambda p: zlib.compress(p, 1), "lzo": lzokay.compress,
            "snappy": lambda p: bytes(cramjam.snappy.compress_raw(p)),
            "zstd": lambda p: zstandard.ZstdCompressor().compress(p),
            "none": lambda p: p}[codec](page)


def sample_memory(pages: int = 64, seed: int = 1) -> tuple[np.ndarray, np.ndarray, dict[int, bytes]]:
    """(valid, dumped, contents): a hole, excluded pages, zero pages, random and text pages."""
    rng = random.Random(seed)
    valid = np.ones(pages, bool)
    valid[20:24] = False                      # a hole in the memory map
    dumped = valid.copy()
    dumped[30:40] = False                     # excluded by the "dump level"
    dumped[50] = False
    contents = {}
    for pfn in np.flatnonzero(dumped):
        kind = pfn % 4
        if kind == 0:
            contents[int(pfn)] = bytes(PS)
        elif kind == 1:
            contents[int(pfn)] = rng.randbytes(PS)
        else:
            contents[int(pfn)] = (f"page {pfn} ".encode() * 600)[:PS]
    return valid, dumped, contents


def build_kdump(valid: np.ndarray, dumped: np.ndarray, contents: dict[int, bytes], *,
                codec: str = "zlib", dump_level: int = 31, incomplete_after: int | None = None,
                release: str = "6.1.0-synthetic", split: tuple[int, int] | None = None) -> bytes:
    """A kdump-compressed file.  ``incomplete_after``: descriptors past that many
    pages stay zero and the header says INCOMPLETE (makedumpfile on ENOSPC)."""
    max_mapnr = len(valid)
    bitmap_bytes = max(PS, -(-max_mapnr // 8 // PS) * PS)
    bitmap_blocks = 2 * bitmap_bytes // PS
    notes = build_note("VMCOREINFO", 0, VMCOREINFO)
    sub_hdr_size = 1 + -(-(len(VMCOREINFO) + len(notes)) // PS)
    off_info = 2 * PS
    off_note = off_info + len(VMCOREINFO)
    status = CODEC_FLAGS[codec] | (0x8 if incomplete_after is not None else 0)
    uts = b"".join(s.ljust(65, b"\0") for s in (b"Linux", b"synth", release.encode(), b"#1", b"x86_64", b""))
    header = DISK_DUMP_HEADER.pack(b"KDUMP   ", 6, uts, 0, 0, status, PS, sub_hdr_size, bitmap_blocks,
                                   max_mapnr, 0, 0, 0, 0, 1)
    start, end = split or (0, max_mapnr)
    sub = KDUMP_SUB_HEADER.pack(0, dump_level, int(split is not None), start, end, off_info,
                                len(VMCOREINFO), off_note, len(notes), 0, 0, start, end, max_mapnr)
    b1 = np.packbits(np.concatenate([valid, np.zeros(bitmap_bytes * 8 - max_mapnr, bool)]), bitorder="little")
    b2 = np.packbits(np.concatenate([dumped, np.zeros(bitmap_bytes * 8 - max_mapnr, bool)]), bitorder="little")
    pfns = np.flatnonzero(dumped)
    pfns = pfns[(pfns >= start) & (pfns < end)]
    desc_off = (1 + sub_hdr_size + bitmap_blocks) * PS
    data_off = desc_off + 24 * len(pfns)
    zero_at = data_off
    data = bytearray(_compress(codec, bytes(PS)) if codec != "none" else bytes(PS))
    zero_desc = (zero_at, len(data), CODEC_FLAGS[codec] if codec != "none" else 0)
    descs = []
    for i, pfn in enumerate(pfns):
        if incomplete_after is not None and i >= incomplete_after:
            descs.append(struct.pack("<qIIQ", 0, 0, 0, 0))
            continue
        page = contents[int(pfn)]
        if not any(page):
            descs.append(struct.pack("<qIIQ", zero_desc[0], zero_desc[1], zero_desc[2], 0))
            continue
        comp = _compress(codec, page)
        flags = CODEC_FLAGS[codec]
        if len(comp) >= PS:
            comp, flags = page, 0
        descs.append(struct.pack("<qIIQ", data_off + len(data), len(comp), flags, 0))
        data += comp
    out = bytearray(header.ljust(PS, b"\0"))
    out += sub.ljust(off_info - PS, b"\0") + VMCOREINFO + notes
    out = out.ljust((1 + sub_hdr_size) * PS, b"\0")
    out += b1.tobytes() + b2.tobytes()
    out += b"".join(descs)
    out += data
    return bytes(out)


def flatten(kdump: bytes, *, piece: int = 5000, seed: int = 0, rewrite_header: bool = True) -> bytes:
    """The flattened form of ``kdump``: pieces in a shuffled order (a reader must
    place them by offset), and the header written twice as makedumpfile may."""
    rng = random.Random(seed)
    pieces = [(off, kdump[off:off + piece]) for off in range(0, len(kdump), piece)]
    head = pieces[0]
    rest = pieces[1:]
    rng.shuffle(rest)
    order = ([(0, bytes(len(head[1])))] + rest + [head]) if rewrite_header else [head] + rest
    out = bytearray(b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1))
    out = out.ljust(4096, b"\0")
    for off, blob in order:
        out += struct.pack(">qq", off, len(blob)) + blob
    out += struct.pack(">qq", -1, -1)
    return bytes(out)


def write_claimed_machine(path, pfns: int) -> None:
    """A kdump header claiming ``pfns`` page frames, its two bitmaps of full
    length as a sparse file (all bits zero but pfn 0's memory bit), no pages:
    a few KiB on disk that name a machine of ``pfns * 4 KiB``."""
    bitmap_bytes = -(-pfns // 8 // PS) * PS
    bitmap_blocks = 2 * bitmap_bytes // PS
    uts = b"".join(f.ljust(65, b"\0") for f in (b"Linux", b"x", b"6.1.0", b"#1", b"x86_64", b""))
    head = DISK_DUMP_HEADER.pack(b"KDUMP   ", 6, uts, 0, 0, 0, PS, 1, bitmap_blocks, 0, 0, 0, 0, 0, 1)
    sub = KDUMP_SUB_HEADER.pack(0, 31, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, pfns, pfns)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(PS)
        f.write(sub)
        f.seek(2 * PS)
        f.write(b"\x01")
        f.truncate(2 * PS + 2 * bitmap_bytes)

