"""makedumpfile's kdump-compressed format (``-c``, ``-l``, ``-p``, ``-z``), plain or flattened.

Why our own layout parser: the library that reads these files,
libkdumpfile, is reachable from this project's Python only through drgn
(which hides which pages were filtered out, which were lost, and every
header field) or through Debian's ``python3-libkdumpfile`` 0.5.1 (system
Python only, and it cannot open flattened files); measured in
docs/FORMATS.md.  So the headers, bitmaps and page descriptors are parsed
here, every length checked against the file, and every page codec is a
library's: :mod:`zlib`, ``lzokay`` (LZO1X), ``cramjam`` (snappy),
``zstandard``.

What a page is, from the file alone:

* in the 1st bitmap and the 2nd bitmap, with a readable descriptor and
  data: **present** (:meth:`KdumpFile.read_page`);
* in the 1st bitmap only: **excluded** by the producer's dump level
  (``-d``; the class is not recorded in the file);
* in the 2nd bitmap but its descriptor or data lies beyond the end of the
  file, or the header says INCOMPLETE and its descriptor was never filled
  (offset 0): **missing**, with the reason.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..contracts.frozen import Frozen
from ..errors import ExcludedPageError, FormatError, NotCollectedError
from ..limits import max_runs
from ..tsd.table import RunList
from .mapped import MappedDumpFile, stat_dump_file
from .flattened import FlatIndex, Gap, is_flattened

__all__ = ["KdumpFile", "KdumpSet", "open_kdump", "KdumpHeader", "KDUMP_SIGNATURE", "is_kdump", "PageDamage"]

KDUMP_SIGNATURE = b"KDUMP   "
# struct disk_dump_header, 64-bit: signature, header_version, utsname (6 x 65),
# timeval, status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr,
# total_ram_blocks, device_blocks, written_blocks, current_cpu, nr_cpus.
DISK_DUMP_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
# struct kdump_sub_header, 64-bit (fields by header_version: 1 dump_level,
# 2 split/start/end, 3 vmcoreinfo, 4 notes, 5 eraseinfo, 6 64-bit pfns).
KDUMP_SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")
PAGE_DESC = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])
assert (DISK_DUMP_HEADER.size, KDUMP_SUB_HEADER.size, PAGE_DESC.itemsize) == (464, 104, 24)

COMPRESSED_ZLIB, COMPRESSED_LZO, COMPRESSED_SNAPPY = 0x1, 0x2, 0x4
STATUS_INCOMPLETE, STATUS_EXCLUDED_VMEMMAP = 0x8, 0x10
COMPRESSED_ZSTD = 0x20
CODECS = {COMPRESSED_ZLIB: "zlib", COMPRESSED_LZO: "lzo", COMPRESSED_SNAPPY: "snappy",
          COMPRESSED_ZSTD: "zstd"}
MACHINES = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
MAX_BLOCK_SIZE = 1 << 16          # page sizes up to 64 KiB
MAX_PFNS = 1 << 36                # 256 TiB of 4 KiB pages: bounds a crafted max_mapnr
MAX_META = 64 << 20               # VMCOREINFO or notes larger than this are damage
RANK_BLOCK = 4096                 # pfns per rank entry (8 bytes per 4096 pfns: 1/512 of the bitmap's bits)
SLICE_PFNS = 1 << 23              # pfns unpacked at a time (8 MiB of bools, 1 MiB of bitmap)
assert SLICE_PFNS % RANK_BLOCK == 0


def _run_step() -> int:
    """Pfns per slice when runs are made: an alternating slice's edges are
    8 bytes per pfn, so at most 1 Mi pfns (8 MiB) at a time."""
    return min(SLICE_PFNS, 1 << 20)


def _clipped(lo: int, mask: np.ndarray, a: int, b: int) -> tuple[int, np.ndarray]:
    """The slice (``lo``, ``mask``) with the pfns outside ``a..b`` cleared."""
    if lo >= a and lo + len(mask) <= b:
        return lo, mask
    mask = mask.copy()
    mask[:max(0, min(a - lo, len(mask)))] = False
    mask[max(0, b - lo):] = False
    return lo, mask


def _runs_of(slices, ps: int, where: str, what: str, limit: int) -> RunList:
    """(paddr, length) runs of the pfns set in (first pfn, bools) slices, in
    order, as uint64 columns; a run may span slices.

    :raises FormatError: more than ``limit`` runs (:func:`~tsubaki_forensics.limits.max_runs`), said before the
        columns grow past them."""
    starts: list[np.ndarray] = []
    stops: list[np.ndarray] = []
    count = 0
    open_at = -1  # first pfn of a run still going at the end of the last slice
    end = 0
    for lo, mask in slices:
        end = lo + len(mask)
        if not mask.any():
            if open_at >= 0:
                starts.append(np.array([open_at], np.int64))
                stops.append(np.array([lo], np.int64))
                count += 1
                open_at = -1
            continue
        m = np.zeros(len(mask) + 2, np.int8)
        m[1:-1] = mask
        edges = np.flatnonzero(np.diff(m))
        del m
        edges += lo
        a, b = edges[::2], edges[1::2]
        if open_at >= 0:
            if a[0] == lo:
                a = a.copy()
                a[0] = open_at
            else:
                starts.append(np.array([open_at], np.int64))
                stops.append(np.array([lo], np.int64))
                count += 1
            open_at = -1
        if b[-1] == end:
            open_at = int(a[-1])
            a, b = a[:-1], b[:-1]
        count += len(a)
        if count > limit:
            raise FormatError(f"{where}: the kdump bitmaps hold more than {limit} {what} (a "
                              f"bitmap that alternates: over the memory budget, docs/RELIABILITY.md)")
        starts.append(a.copy())
        stops.append(b.copy())
        del edges, a, b
    if open_at >= 0:
        starts.append(np.array([open_at], np.int64))
        stops.append(np.array([end], np.int64))
    st = np.concatenate(starts).astype(np.uint64) if starts else np.zeros(0, np.uint64)
    del starts
    sp = np.concatenate(stops).astype(np.uint64) if stops else np.zeros(0, np.uint64)
    del stops
    sp -= st
    st *= np.uint64(ps)
    sp *= np.uint64(ps)
    return RunList(st, sp)


def is_kdump(head: bytes) -> bool:
    """Whether the first bytes are a kdump-compressed header or a flattened stream."""
    return head[:8] == KDUMP_SIGNATURE or is_flattened(head)


class PageDamage(FormatError):
    """One page's descriptor or compressed data is unusable (the rest may be fine)."""


class KdumpHeader(Frozen):
    """The fields of ``disk_dump_header`` and ``kdump_sub_header`` a reader needs;
    ``timestamp_ns``: when makedumpfile wrote it (its gettimeofday), 0 if unset.
    A :class:`~..contracts.frozen.Frozen`, not a frozen dataclass (no ``exec`` per
    method at import: issue 21).
    """

    _fields = ("header_version", "release", "machine", "status", "block_size", "sub_hdr_size",
               "bitmap_blocks", "max_mapnr", "nr_cpus", "phys_base", "dump_level", "split",
               "start_pfn", "end_pfn", "timestamp_ns")
    header_version: int
    release: str
    machine: str
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    nr_cpus: int
    phys_base: int
    dump_level: int | None
    split: bool
    start_pfn: int
    end_pfn: int
    timestamp_ns: int

    def __init__(self, header_version: int, release: str, machine: str, status: int,
                 block_size: int, sub_hdr_size: int, bitmap_blocks: int, max_mapnr: int,
                 nr_cpus: int, phys_base: int, dump_level: int | None, split: bool,
                 start_pfn: int, end_pfn: int, timestamp_ns: int = 0) -> None:
        for name, value in zip(self._fields, (header_version, release, machine, status, block_size,
                                              sub_hdr_size, bitmap_blocks, max_mapnr, nr_cpus,
                                              phys_base, dump_level, split, start_pfn, end_pfn,
                                              timestamp_ns)):
            object.__setattr__(self, name, value)

    @property
    def incomplete(self) -> bool:
        return bool(self.status & STATUS_INCOMPLETE)


class _Source:
    """Bytes of the logical kdump file: the file itself or a flattened stream."""

    def __init__(self, mm, flat: FlatIndex | None, file_size: int, fd: int = -1) -> None:
        self.mm, self.flat, self.fd = mm, flat, fd
        self.size = flat.size if flat else file_size

    def covered(self, offset: int, length: int) -> bool:
        if self.flat is not None:
            return self.flat.covered(offset, length)
        return 0 <= offset and offset + length <= self.size

    def read(self, offset: int, length: int) -> bytes:
        """:raises Gap: the bytes are not all in the file (cut short)."""
        if self.flat is None:
            if offset < 0 or offset + length > self.size:
                raise Gap(max(offset, self.size))
            return self.mm[offset:offset + length]
        parts = self.flat.locate(offset, length)
        return b"".join(self.mm[a:a + n] for a, n in parts)

    def read_unmapped(self, offset: int, length: int) -> bytes:
        """:meth:`read` by ``pread``, not through the mapping: a scan over a large
        region (the bitmaps) leaves no pages mapped in the process behind it.

        :raises Gap: the bytes are not all in the file (cut short)."""
        if self.fd < 0:
            return self.read(offset, length)
        if self.flat is None:
            if offset < 0 or offset + length > self.size:
                raise Gap(max(offset, self.size))
            parts = [(offset, length)]
        else:
            parts = self.flat.locate(offset, length)
        return b"".join(os.pread(self.fd, n, a) for a, n in parts)


class _PfnViews:
    """What a kdump file and a ``--split`` set both make of their pages' kinds
    (memory, dumped, excluded, present, missing) given as (first pfn, bools)
    slices by :meth:`_pfn_slices`: whole per-pfn masks, the dumped pfns, and
    runs.  One byte per pfn only for the masks asked for whole."""

    header: KdumpHeader
    page_size: int
    path: Path
    file_size: int
    _dumped_pfns: np.ndarray | None

    def _pfn_slices(self, kind: str, step: int | None = None):
        """(first pfn, bools) over every pfn, ``step`` pfns at a time, of one kind
        of page: memory, dumped, excluded, present or missing."""
        raise NotImplementedError

    def _whole(self, kind: str) -> np.ndarray:
        out = np.zeros(self.header.max_mapnr, bool)
        for lo, bits in self._pfn_slices(kind):
            out[lo:lo + len(bits)] = bits
        return out

    @property
    def valid(self) -> np.ndarray:
        """Per pfn: memory (the 1st bitmap, corrected); one byte per pfn, made on use."""
        return self._whole("memory")

    @property
    def dumped(self) -> np.ndarray:
        """Per pfn: dumped (the 2nd bitmap; of a set, by some file); one byte per pfn, made on use."""
        return self._whole("dumped")

    @property
    def dumped_pfns(self) -> np.ndarray:
        """Every dumped pfn (8 bytes each: made on first use, for the commands
        that walk the whole dump; the reader itself never builds it)."""
        if self._dumped_pfns is None:
            parts = [lo + np.flatnonzero(d) for lo, d in self._pfn_slices("dumped")]
            self._dumped_pfns = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self._dumped_pfns

    def present_mask(self) -> np.ndarray:
        """Per pfn: the page's data is in the file (of a set: in some file); one byte per pfn, made on use."""
        return self._whole("present")

    def _runs_of(self, slices, what: str = "runs") -> RunList:
        """(paddr, length) runs of the pfns set in (first pfn, bools) slices, in
        order, as numpy columns (never a tuple per run: a bitmap alternating
        every frame claims a run per two frames).

        :raises FormatError: more than :func:`~tsubaki_forensics.limits.max_runs`
            of the file's size (checked slice by slice, before the columns grow past it)."""
        return _runs_of(slices, self.page_size, str(self.path), what, max_runs(self.file_size))

    def present_ranges(self) -> RunList:
        return self._runs_of(self._pfn_slices("present", _run_step()), "runs of dumped pages")

    def missing_ranges(self) -> RunList:
        """Dumped pages whose data the file (or set) does not hold (cut short, INCOMPLETE)."""
        return self._runs_of(self._pfn_slices("missing", _run_step()), "runs of missing pages")


class KdumpFile(_PfnViews, MappedDumpFile):
    """A kdump-compressed file (or its flattened form), page by page.

    :ivar header: :class:`KdumpHeader`.
    :ivar flattened: the file is a flattened stream.
    :ivar vmcoreinfo: the VMCOREINFO text (``None`` if the file has none).
    :ivar notes: the ELF notes blob (NT_PRSTATUS per CPU, VMCOREINFO).
    :ivar problems: one line per thing found wrong or missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        st = stat_dump_file(path, "a kdump file")
        self._file = open(self.path, "rb")
        self._map()
        self.file_size = st.st_size
        self.problems: list[str] = []
        try:
            self._parse()
        except Gap as e:
            self.close()
            raise FormatError(f"{path}: kdump headers cut short (the file ends before logical "
                              f"offset {e.offset:#x})") from None
        except BaseException:
            self.close()
            raise

    # -- parsing --------------------------------------------------------------

    def _parse(self) -> None:
        where = str(self.path)
        head = self._mm[:16]
        self.flattened = is_flattened(head)
        flat = FlatIndex(self._mm, where) if self.flattened else None
        if flat is not None:
            self.problems.extend(flat.problems)
        src = self._src = _Source(self._mm, flat, self.file_size, self._file.fileno())
        raw = src.read(0, DISK_DUMP_HEADER.size)
        (sig, version, uts, sec, usec, status, block_size, sub_hdr_size, bitmap_blocks,
         max_mapnr32, _total, _dev, _written, _cpu, nr_cpus) = DISK_DUMP_HEADER.unpack(raw)
        if sig != KDUMP_SIGNATURE:
            raise FormatError(f"{where}: not a kdump-compressed file (signature {sig!r})")
        if not 1 <= version <= 6:
            raise FormatError(f"{where}: kdump header version {version} (1..6 are known)")
        if not 512 <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
            raise FormatError(f"{where}: kdump block size {block_size} is not a page size")
        if not 1 <= sub_hdr_size <= 1024 or not 2 <= bitmap_blocks <= MAX_PFNS // 8 // block_size:
            raise FormatError(f"{where}: kdump header damaged (sub header {sub_hdr_size} blocks, "
                              f"bitmap {bitmap_blocks} blocks)")
        sub = KDUMP_SUB_HEADER.unpack(src.read(block_size, KDUMP_SUB_HEADER.size))
        (phys_base, dump_level, split, start32, end32, off_info, size_info, off_note, size_note,
         _off_erase, _size_erase, start64, end64, max64) = sub
        max_mapnr = max64 if version >= 6 else max_mapnr32
        bitmap_pfns = bitmap_blocks * block_size // 2 * 8
        if not 0 < max_mapnr <= bitmap_pfns:
            raise FormatError(f"{where}: kdump header damaged: max_mapnr {max_mapnr} does not "
                              f"fit the bitmaps ({bitmap_pfns} pages)")
        is_split = version >= 2 and bool(split)
        start_pfn, end_pfn = (start64, end64) if version >= 6 else (start32, end32)
        if not is_split:
            start_pfn, end_pfn = 0, max_mapnr
        elif not 0 <= start_pfn <= end_pfn <= max_mapnr:
            raise FormatError(f"{where}: split file's pfn range {start_pfn}..{end_pfn} is "
                              f"outside 0..{max_mapnr}")
        utsname = [uts[i * 65:(i + 1) * 65].split(b"\0")[0].decode("ascii", "replace") for i in range(6)]
        self.header = KdumpHeader(version, utsname[2], utsname[4], status, block_size,
                                  sub_hdr_size, bitmap_blocks, max_mapnr, nr_cpus, phys_base,
                                  dump_level if version >= 1 else None, is_split, start_pfn, end_pfn,
                                  max(0, sec) * 10**9 + max(0, min(usec, 999_999)) * 1000)
        self.page_size = block_size
        self.arch = MACHINES.get(utsname[4], utsname[4] or "x86_64")
        self.vmcoreinfo = self._meta(version >= 3, off_info, size_info, "VMCOREINFO")
        self.notes = self._meta(version >= 4, off_note, size_note, "ELF notes")
        if self.header.incomplete:
            self.problems.append("makedumpfile marked the file INCOMPLETE (it ran out of space): "
                                 "pages it did not write are missing")
        # Bitmaps: 1st = pages of memory, 2nd = pages dumped (bit pfn%8 of byte pfn//8).
        # Kept in the file, read a slice at a time (never one byte per pfn for
        # the whole machine): a crafted max_mapnr costs time, not memory.
        half = bitmap_blocks * block_size // 2
        base = (1 + sub_hdr_size) * block_size
        if not src.covered(base, 2 * half):
            raise Gap(min(src.size, base + 2 * half))
        self._bitmap = {"valid": base, "dumped": base + half}
        self._valid_or_dumped = False  # the 1st bitmap lacks dumped pages: OR them in
        self._blk: tuple | None = None   # the last rank block looked at (sequential reads)
        counts = []
        for lo, dumped in self._slices("dumped"):
            valid = self._mask("valid", lo, lo + len(dumped))
            if not self._valid_or_dumped and np.any(dumped & ~valid):
                self.problems.append("the 2nd bitmap dumps pages the 1st bitmap does not have "
                                     "(damaged bitmaps?): they are read as memory")
                self._valid_or_dumped = True
            pad = -len(dumped) % RANK_BLOCK
            if pad:
                dumped = np.concatenate((dumped, np.zeros(pad, bool)))
            counts.append(np.count_nonzero(dumped.reshape(-1, RANK_BLOCK), axis=1))
        #: dumped pages before each rank block (the descriptor index of its first dumped pfn)
        self._rank = np.concatenate(([0], np.cumsum(np.concatenate(counts)))).astype(np.int64)
        #: how many pages the 2nd bitmap dumps (each has a descriptor, in pfn order)
        self.dumped_count = int(self._rank[-1])
        self._desc_base = base + 2 * half
        self._load_descriptors()

    # -- bitmaps, a slice at a time ------------------------------------------------

    def _mask(self, which: str, lo: int, hi: int) -> np.ndarray:
        """Bits ``lo:hi`` (pfns, within max_mapnr) of a bitmap as bools, after the
        reader's corrections: a split file dumps only its own pfn range; pages
        dumped but not in the 1st bitmap count as memory."""
        if hi <= lo:
            return np.zeros(0, bool)
        a, b = lo >> 3, (hi + 7) >> 3
        raw = np.frombuffer(self._src.read_unmapped(self._bitmap[which] + a, b - a), np.uint8)
        bits = np.unpackbits(raw, bitorder="little")[lo - a * 8:hi - a * 8].astype(bool)
        if which == "dumped" and self.header.split:
            bits[:max(0, min(hi, self.header.start_pfn) - lo)] = False
            bits[max(0, self.header.end_pfn - lo):] = False
        elif which == "valid" and self._valid_or_dumped:
            bits |= self._mask("dumped", lo, hi)
        return bits

    def _slices(self, which: str, step: int | None = None):
        """(first pfn, bools) over the whole bitmap, ``step`` pfns at a time."""
        step = step or SLICE_PFNS
        for lo in range(0, self.header.max_mapnr, step):
            yield lo, self._mask(which, lo, min(lo + step, self.header.max_mapnr))

    def _kind_slices(self, kind: str, step: int | None = None, ok: np.ndarray | None = None):
        """(first pfn, bools) of one kind of page: memory, excluded, present or missing
        (present: its descriptor index ``i`` has ``ok[i]``; by default, its data is in the file)."""
        for lo, dumped in self._slices("dumped", step):
            hi = lo + len(dumped)
            if kind == "memory":
                yield lo, self._mask("valid", lo, hi)
            elif kind == "excluded":
                yield lo, self._mask("valid", lo, hi) & ~dumped
            else:
                idx = np.flatnonzero(dumped)
                first = int(self._rank[lo // RANK_BLOCK])  # lo is a multiple of RANK_BLOCK
                held = self._present_at(first + np.arange(len(idx)), ok)
                mask = np.zeros(len(dumped), bool)
                mask[idx[held if kind == "present" else ~held]] = True
                yield lo, mask

    def _present_at(self, i: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """Whether the dumped pages of descriptor indices ``i`` are in the file
        (or have ``present[i]``; indices past it are not)."""
        present = self._present if present is None else present
        ok = i < len(present)
        ok[ok] = present[i[ok]]
        return ok

    def runs_by_index(self, ok: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(paddr, length) runs of the dumped pages whose descriptor index ``i``
        has ``ok[i]``, and of the others (``verify``: sound / damaged or missing)."""
        return (self._runs_of(self._kind_slices("present", ok=ok)),
                self._runs_of(self._kind_slices("missing", ok=ok)))

    def pfn_slices_by_index(self, ok: np.ndarray):
        """The pfns of dumped pages whose descriptor index ``i`` has ``ok[i]``, in
        order, one array per slice of the bitmap."""
        for lo, mask in self._kind_slices("present", ok=ok):
            yield lo + np.flatnonzero(mask)

    def pfns_at(self, indices: list[int]) -> list[int]:
        """The pfns of dumped pages by descriptor index (a rank lookup each)."""
        out = []
        for i in indices:
            block = int(np.searchsorted(self._rank, i, side="right")) - 1
            lo = block * RANK_BLOCK
            bits = np.flatnonzero(self._mask("dumped", lo, min(lo + RANK_BLOCK, self.header.max_mapnr)))
            out.append(lo + int(bits[i - int(self._rank[block])]))
        return out

    def _pfn_slices(self, kind: str, step: int | None = None):
        """:meth:`_PfnViews._pfn_slices`: the 2nd bitmap, or :meth:`_kind_slices`."""
        return self._slices("dumped", step) if kind == "dumped" else self._kind_slices(kind, step)

    def _meta(self, has: bool, offset: int, size: int, what: str) -> bytes | None:
        if not has or offset <= 0 or size <= 0:
            return None
        if size > MAX_META:
            self.problems.append(f"{what} size {size} is absurd (damaged header): ignored")
            return None
        try:
            return bytes(self._src.read(offset, size))
        except Gap:
            self.problems.append(f"{what} lies beyond the end of the file (cut short)")
            return None

    def _load_descriptors(self) -> None:
        self._dumped_pfns: np.ndarray | None = None
        n = self.dumped_count
        avail = max(0, (self._src.size - self._desc_base) // PAGE_DESC.itemsize)
        count = min(n, avail)
        raw = b""
        while count > 0:  # a flattened stream may lack a piece in the middle
            try:
                raw = self._src.read(self._desc_base, count * PAGE_DESC.itemsize)
                break
            except Gap as e:
                count = (e.offset - self._desc_base) // PAGE_DESC.itemsize
        self.desc = np.frombuffer(raw, PAGE_DESC, count) if count > 0 else np.zeros(0, PAGE_DESC)
        present = np.zeros(count, bool)  # per descriptor read; those past it are missing
        if count:
            d = self.desc
            ok = (d["offset"] > 0) & (d["size"] > 0) & (d["size"] <= self.page_size)
            ok &= d["offset"] + d["size"].astype(np.int64) <= self._src.size
            if self._src.flat is not None:  # a cut or damaged stream may lack pieces in the middle
                ok &= self._src.flat.covered_many(d["offset"], d["size"].astype(np.int64))
            present[:count] = ok
        self._present = present
        self.missing_reason: dict[str, int] = {}
        if count < n:
            self.missing_reason["page descriptors beyond the end of the file (cut short)"] = n - count
        if count:
            lost = int(count - np.count_nonzero(present[:count]))
            if lost:
                why = ("never written: makedumpfile's INCOMPLETE file" if self.header.incomplete
                       else "page data beyond the end of the file (cut short) or a damaged descriptor")
                self.missing_reason[why] = lost
        for why, pages in self.missing_reason.items():
            self.problems.append(f"{pages} dumped pages are missing: {why}")

    # -- what the file holds ---------------------------------------------------

    def _runs(self, mask: np.ndarray) -> RunList:
        """(paddr, length) runs of the pfns set in ``mask``."""
        return self._runs_of([(0, mask)])

    def memory_ranges(self) -> RunList:
        """The machine's memory (1st bitmap) as (paddr, length) runs."""
        return self._runs_of(self._kind_slices("memory", _run_step()), "memory runs")

    def excluded_ranges(self) -> RunList:
        """Memory the producer's dump level left out (1st bitmap, not the 2nd)."""
        if self.header.split:  # a split file names only its own range's exclusions
            lo, hi = self.header.start_pfn, self.header.end_pfn
            return self._runs_of((_clipped(a, m, lo, hi) for a, m in self._kind_slices("excluded", _run_step())),
                                 "excluded runs")
        return self._runs_of(self._kind_slices("excluded", _run_step()), "excluded runs")

    # -- reading ----------------------------------------------------------------

    def _index(self, pfn: int) -> int:
        """The descriptor index of dumped page ``pfn`` (its rank in the 2nd bitmap)."""
        if not 0 <= pfn < self.header.max_mapnr:
            raise NotCollectedError(pfn * self.page_size)
        block = pfn // RANK_BLOCK
        if self._blk is None or self._blk[0] != block:  # sequential reads stay in one block
            lo = block * RANK_BLOCK
            hi = min(lo + RANK_BLOCK, self.header.max_mapnr)
            dumped = self._mask("dumped", lo, hi)
            before = np.cumsum(dumped) - dumped + self._rank[block]
            self._blk = (block, lo, dumped, before, None)
        _, lo, dumped, before, valid = self._blk
        if not dumped[pfn - lo]:
            if valid is None:
                valid = self._mask("valid", lo, lo + len(dumped))
                self._blk = self._blk[:4] + (valid,)
            if valid[pfn - lo]:  # left out on purpose, not lost
                raise ExcludedPageError(pfn * self.page_size, f"excluded by the producer "
                                                              f"(makedumpfile -d {self.header.dump_level})")
            raise NotCollectedError(pfn * self.page_size)
        return int(before[pfn - lo])

    def read_page(self, pfn: int) -> bytes:
        """The page ``pfn``.

        :raises NotCollectedError: excluded, missing, or not memory.
        :raises PageDamage: its descriptor or data does not decode.
        """
        i = self._index(pfn)
        if i >= len(self._present) or not self._present[i]:
            raise NotCollectedError(pfn * self.page_size,
                                    f"physical {pfn * self.page_size:#x} is missing from the "
                                    f"kdump file (cut short or INCOMPLETE)")
        d = self.desc[i]
        try:
            data = self._src.read(int(d["offset"]), int(d["size"]))
        except Gap:
            raise NotCollectedError(pfn * self.page_size,
                                    f"physical {pfn * self.page_size:#x}: its data is not in "
                                    f"the flattened stream") from None
        return self._decode(pfn, int(d["flags"]), data)

    def _decode(self, pfn: int, flags: int, data: bytes) -> bytes:
        ps = self.page_size
        codec = flags & (COMPRESSED_ZLIB | COMPRESSED_LZO | COMPRESSED_SNAPPY | COMPRESSED_ZSTD)
        try:
            if codec == 0:
                out = data
            elif codec == COMPRESSED_ZLIB:
                d = zlib.decompressobj()
                out = d.decompress(data, ps)
            elif codec == COMPRESSED_LZO:
                import lzokay

                out = lzokay.decompress(data, ps)
            elif codec == COMPRESSED_SNAPPY:
                import cramjam

                out = bytes(cramjam.snappy.decompress_raw(data))
            elif codec == COMPRESSED_ZSTD:
                import zstandard

                out = zstandard.ZstdDecompressor().decompress(data, max_output_size=ps)
            else:
                raise PageDamage(f"page {pfn:#x}: unknown compression flags {flags:#x}")
        except PageDamage:
            raise
        except Exception as e:  # each codec's own error type: the page is damaged
            raise PageDamage(f"{self.path}: page at physical {pfn * ps:#x} does not decompress "
                             f"({CODECS.get(codec, hex(codec))}: {e})") from None
        if len(out) != ps:
            raise PageDamage(f"{self.path}: page at physical {pfn * ps:#x} decodes to "
                             f"{len(out)} bytes, not {ps}")
        return bytes(out)

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; NotCollectedError at the first page not held."""
        ps = self.page_size
        parts = []
        pos, end = paddr, paddr + size
        while pos < end:
            pfn, off = divmod(pos, ps)
            n = min(ps - off, end - pos)
            page = self.read_page(pfn)
            parts.append(page[off:off + n] if n != ps else page)
            pos += n
        return b"".join(parts)

    def codecs(self) -> set[str]:
        """The page codecs used (``none`` for pages stored raw)."""
        flags = set(np.unique(self.desc["flags"] & 0x27).tolist()) if len(self.desc) else set()
        return {CODECS.get(f, "none" if f == 0 else hex(f)) for f in flags}



class KdumpSet(_PfnViews):
    """The files of one ``makedumpfile --split`` set, given in any order, read as one.

    Each file holds the pages of its own pfn range (``start_pfn .. end_pfn``
    in its sub header) and the same 1st bitmap; together the ranges must
    cover the machine once, or the set is refused naming the pfns no file
    holds.  Same interface as :class:`KdumpFile`.
    """

    def __init__(self, paths: list[str | os.PathLike[str]]) -> None:
        self.files: list[KdumpFile] = []
        try:
            for p in paths:
                self.files.append(KdumpFile(p))
            self._check()
        except BaseException:
            self.close()
            raise
        first = self.files[0]
        self.path = first.path
        self.header = first.header
        self.page_size, self.arch, self.flattened = first.page_size, first.arch, first.flattened
        self.vmcoreinfo, self.notes = first.vmcoreinfo, first.notes
        self.file_size = sum(f.file_size for f in self.files)
        self._dumped_pfns: np.ndarray | None = None
        self.problems = [f"{f.path.name}: {p}" for f in self.files for p in f.problems]
        self.missing_reason: dict[str, int] = {}
        for f in self.files:
            for why, n in f.missing_reason.items():
                self.missing_reason[why] = self.missing_reason.get(why, 0) + n
        self._starts = [f.header.start_pfn for f in self.files]

    def _check(self) -> None:
        names = ", ".join(str(f.path) for f in self.files)
        if not all(f.header.split for f in self.files):
            plain = [str(f.path) for f in self.files if not f.header.split]
            raise FormatError(f"{', '.join(plain)}: not part of a makedumpfile --split set; give one "
                              f"file, or every file of one set")
        first = self.files[0]
        for f in self.files[1:]:
            if (f.header.max_mapnr, f.page_size) != (first.header.max_mapnr, first.page_size) or \
                    f.vmcoreinfo != first.vmcoreinfo or not all(
                        np.array_equal(a, b) for (_, a), (_, b) in
                        zip(f._kind_slices("memory"), first._kind_slices("memory"))):
                raise FormatError(f"{names}: these files are not of one --split set (their "
                                  f"headers or memory bitmaps differ)")
        self.files.sort(key=lambda f: (f.header.start_pfn, f.header.end_pfn))
        pos = 0
        for f in self.files:
            if f.header.start_pfn > pos:
                raise FormatError(f"{names}: the --split set lacks the file holding pfns "
                                  f"{pos:#x}..{f.header.start_pfn:#x}")
            if f.header.start_pfn < pos and f.header.end_pfn > f.header.start_pfn:
                raise FormatError(f"{names}: two files of the --split set hold pfn "
                                  f"{f.header.start_pfn:#x} (the same file twice?)")
            pos = max(pos, f.header.end_pfn)
        if pos < first.header.max_mapnr:
            raise FormatError(f"{names}: the --split set lacks the file holding pfns "
                              f"{pos:#x}..{first.header.max_mapnr:#x}")

    def _file(self, pfn: int) -> KdumpFile:
        for f in reversed(self.files):
            if f.header.start_pfn <= pfn < f.header.end_pfn:
                return f
        return self.files[0]

    # Every mask a slice at a time, across the files in step (one bitmap
    # slice of each at once): a set claiming a huge machine costs time, not a
    # byte per frame (issue 22).

    def _pfn_slices(self, kind: str, step: int | None = None):
        """(first pfn, bools) of one kind of page over the whole set: memory,
        dumped (by any file), excluded, present or missing."""
        first = self.files[0]
        if kind == "memory":
            yield from first._kind_slices("memory", step)
            return
        dumped_by = [f._slices("dumped", step) for f in self.files]
        present_by = [f._kind_slices("present", step) for f in self.files] \
            if kind in ("present", "missing") else None
        for lo, valid in first._kind_slices("memory", step):
            dumped = np.zeros(len(valid), bool)
            for it in dumped_by:
                dumped |= next(it)[1]
            if kind == "dumped":
                yield lo, dumped
            elif kind == "excluded":
                yield lo, valid & ~dumped
            else:
                present = np.zeros(len(valid), bool)
                for it in present_by:
                    present |= next(it)[1]
                yield lo, present if kind == "present" else dumped & ~present

    def memory_ranges(self) -> RunList:
        return self.files[0].memory_ranges()

    def excluded_ranges(self) -> RunList:
        return self._runs_of(self._pfn_slices("excluded", _run_step()), "excluded runs")

    def read_page(self, pfn: int) -> bytes:
        return self._file(pfn).read_page(pfn)

    def read(self, paddr: int, size: int) -> bytes:
        return KdumpFile.read(self, paddr, size)  # type: ignore[arg-type]

    def codecs(self) -> set[str]:
        return set().union(*(f.codecs() for f in self.files))

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> KdumpSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_kdump(paths: list[str | os.PathLike[str]]) -> KdumpFile | KdumpSet:
    """One kdump file, or the files of one ``--split`` set in any order."""
    return KdumpFile(paths[0]) if len(paths) == 1 else KdumpSet(paths)
