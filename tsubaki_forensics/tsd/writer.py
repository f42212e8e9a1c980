"""Append records to a ``.tsd`` file: the only code that writes the format.

Why it looks like this:

* The file is append-only and every record is self-checking, so whatever
  prefix reaches the disk before a crash is a valid dump (FORMAT.md §6).
* Memory is cut into chunks aligned to ``chunk_size`` in physical address
  space; all-zero pages are found with numpy (OR-reduction over the pages
  viewed as uint64, at memory speed) and become ZERO records with no
  compression work; the rest is compressed with zstd on ``threads`` worker
  threads (zstandard and numpy release the GIL).  Results are written in
  submission order, and sequence numbers and checksums are assigned at write
  time, so the output is byte-for-byte deterministic whatever the scheduling.
* Only ``threads + 1`` jobs are in flight, and :meth:`TsdWriter.write_memory`
  returns only after its data is written, so memory use is flat and the caller
  may reuse its buffer.
* ``dedup=True`` (format 1.2) stores a page that repeats a page already
  written literally as a reference to it (FORMAT.md §4.1 ZSTD_DEDUP): the
  decisions are made on the writer's thread in submission order, between a
  scan-and-hash stage and a check-and-compress stage on the workers, so the
  output stays deterministic (see "page deduplication" below).
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import xxhash
import zstandard

from .. import __version__
from ..errors import StorageError
from . import records as R
from .heap import reuse_chunk_sized_blocks

__all__ = ["TsdWriter", "WriteStats", "DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL", "DEFAULT_MIN_ZERO_PAGES"]

# Chosen by measurement on real 512 MiB crashes (idle and busy guests):
# docs/benchmarks/import.md.  Smaller chunks lose zstd context on busy memory
# (1 MiB: 10% larger than `zstd -3`), larger ones cost more per LRU miss.
DEFAULT_CHUNK_SIZE = 8 << 20
DEFAULT_LEVEL = 3
# A zero run shorter than this many pages stays inside its MEMORY record
# (zstd encodes it in a few bytes); longer runs become ZERO records.
DEFAULT_MIN_ZERO_PAGES = 1
# write_file_range hands workers this many bytes of whole chunks per job.
FILE_BATCH = 4 << 20
# dedup: jobs in flight per worker thread (two stages per job).
DEDUP_JOBS_PER_THREAD = 2


@dataclass
class WriteStats:
    """What a write cost and produced.

    ``stored_bytes`` counts whole records (headers included) as written to
    the file; ``compress_seconds`` is CPU time the worker threads spent
    scanning and compressing (it can exceed ``wall_seconds`` with 2 threads).
    """

    raw_bytes: int = 0
    zero_bytes: int = 0
    excluded_bytes: int = 0  # of raw_bytes, left out by the dump level (write_file_pages)
    stored_bytes: int = 0
    records: int = 0
    compress_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __iadd__(self, other: WriteStats) -> WriteStats:
        self.raw_bytes += other.raw_bytes
        self.zero_bytes += other.zero_bytes
        self.excluded_bytes += other.excluded_bytes
        self.stored_bytes += other.stored_bytes
        self.records += other.records
        self.compress_seconds += other.compress_seconds
        self.wall_seconds += other.wall_seconds
        return self

    @property
    def ratio(self) -> float:
        """raw / stored (higher is better); 0 when nothing was stored."""
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0


# A piece of encoded memory: (codec or None for zero, paddr, length, payload)
_Piece = tuple[R.Codec | None, int, int, "bytes | memoryview | None"]

_tls = threading.local()


def _compressor(level: int, window_log: int) -> zstandard.ZstdCompressor:
    """One compressor per thread (ZstdCompressor is not thread-safe).

    The level's parameters, but with a window as large as a chunk: the
    level's own window (2 MiB at level 3) misses repeats further apart inside
    a chunk; a whole-chunk window made a busy guest's dump 11% smaller at no
    extra CPU (docs/benchmarks/import.md).
    """
    key = (level, window_log)
    c = getattr(_tls, "cctx", None)
    if c is None or _tls.key != key:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, source_size=1 << window_log, window_log=window_log,
            write_content_size=True, write_checksum=False)
        c = _tls.cctx = zstandard.ZstdCompressor(compression_params=params)
        _tls.key = key
    return c


def _runs(buf: memoryview, paddr: int, page_size: int, min_zero: int) -> list[tuple[bool, int, int]]:
    """Split ``buf`` into (is_data, offset, length) runs at page granularity."""
    n = len(buf)
    u8 = np.frombuffer(buf, dtype=np.uint8)
    head = min((-paddr) % page_size, n)
    npages = (n - head) // page_size
    body_end = head + npages * page_size
    starts: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    if head:
        starts.append(np.array([0]))
        flags.append(np.array([bool(u8[:head].any())]))
    if npages:
        pages = u8[head:body_end]
        if page_size % 8 == 0:
            words = pages.view(np.uint64).reshape(npages, page_size // 8)
            flags.append(np.bitwise_or.reduce(words, axis=1) != 0)
        else:  # pragma: no cover - page sizes are powers of two >= 512
            flags.append(pages.reshape(npages, page_size).any(axis=1))
        starts.append(head + np.arange(npages, dtype=np.int64) * page_size)
    if body_end < n:
        starts.append(np.array([body_end]))
        flags.append(np.array([bool(u8[body_end:].any())]))
    st = np.concatenate(starts)
    fl = np.concatenate(flags)
    change = np.flatnonzero(fl[1:] != fl[:-1]) + 1
    run_starts = np.concatenate(([0], change)).tolist()
    run_ends = change.tolist() + [len(fl)]
    st_l = st.tolist()
    out: list[tuple[bool, int, int]] = []
    for a, b in zip(run_starts, run_ends):
        off = st_l[a]
        end = st_l[b] if b < len(st_l) else n
        is_data = bool(fl[a])
        if not is_data and end - off < min_zero and out:
            is_data = True  # a short hole: cheaper inside the frame than as a record
        if out and out[-1][0] == is_data:
            prev = out[-1]
            out[-1] = (is_data, prev[1], prev[2] + end - off)
        else:
            out.append((is_data, off, end - off))
    return out


def _encode(buf: memoryview, paddr: int, page_size: int, level: int,
            min_zero: int, window_log: int) -> tuple[list[_Piece], float]:
    """Worker job: find zero runs in one chunk and compress the data runs."""
    t0 = time.thread_time()
    pieces: list[_Piece] = []
    cctx = _compressor(level, window_log)
    for is_data, off, length in _runs(buf, paddr, page_size, min_zero):
        if not is_data:
            pieces.append((None, paddr + off, length, None))
            continue
        raw = buf[off:off + length]
        packed = cctx.compress(raw)
        if len(packed) < length:
            pieces.append((R.Codec.ZSTD, paddr + off, length, packed))
        else:
            pieces.append((R.Codec.RAW, paddr + off, length, bytes(raw)))
    return pieces, time.thread_time() - t0


def _encode_file(fd: int, offset: int, chunks: list[tuple[int, int]], page_size: int, level: int,
                 min_zero: int, window_log: int) -> tuple[list[_Piece], float]:
    """Worker job: read consecutive chunks from ``fd`` (at ``offset``) into this
    thread's buffer with one ``pread``, then encode each chunk."""
    t0 = time.thread_time()
    length = sum(n for _, n in chunks)
    buf = getattr(_tls, "buf", None)
    if buf is None or len(buf) < length:
        buf = _tls.buf = memoryview(bytearray(length))
    view = buf[:length]
    got = 0
    while got < length:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise StorageError(f"source file ends at offset {offset + got}, "
                               f"{length - got} bytes short")
        got += n
    pieces: list[_Piece] = []
    pos = 0
    for paddr, n in chunks:
        pieces += _encode(view[pos:pos + n], paddr, page_size, level, min_zero, window_log)[0]
        pos += n
    return pieces, time.thread_time() - t0


#: A piece's codec for pages left out by the dump level; its payload is the PageClass.
_EXCLUDED = "excluded"


def _encode_file_pages(fd: int, offset: int, chunks: list[tuple[int, int]], classes: Any,
                       page_size: int, level: int, min_zero: int, window_log: int,
                       chunk_size: int) -> tuple[list[_Piece], float]:
    """Worker job of write_file_pages: like _encode_file, but each page's class
    decides: KEPT (or ABSENT) pages are scanned and compressed, ZERO pages
    become zero pieces, excluded pages become excluded pieces (never read)."""
    t0 = time.thread_time()
    length = sum(n for _, n in chunks)
    base = chunks[0][0]
    cls = np.asarray(classes, np.uint8).copy()
    cls[cls == R.PageClass.ABSENT] = R.PageClass.KEPT
    starts = np.flatnonzero(np.concatenate(([True], cls[1:] != cls[:-1])))
    ends = np.append(starts[1:], cls.size)
    buf = getattr(_tls, "buf", None)
    if buf is None or len(buf) < length:
        buf = _tls.buf = memoryview(bytearray(length))
    pieces: list[_Piece] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        c = int(cls[a])
        paddr, n = base + a * page_size, (b - a) * page_size
        if c == R.PageClass.ZERO:
            pieces.append((None, paddr, n, None))
            continue
        if c != R.PageClass.KEPT:
            pieces.append((_EXCLUDED, paddr, n, R.PageClass(c)))
            continue
        view = buf[:n]
        got = 0
        while got < n:
            k = os.preadv(fd, [view[got:]], offset + paddr - base + got)
            if k <= 0:
                raise StorageError(f"source file ends at offset {offset + paddr - base + got}, "
                                   f"{n - got} bytes short")
            got += k
        # cut at chunk boundaries, as every other path does (FORMAT.md §6)
        pos = paddr
        while pos < paddr + n:
            step = min(chunk_size - pos % chunk_size, paddr + n - pos)
            pieces += _encode(view[pos - paddr:pos - paddr + step], pos, page_size, level,
                              min_zero, window_log)[0]
            pos += step
    return pieces, time.thread_time() - t0


# --- page deduplication (dedup=True, format 1.2, FORMAT.md §4.1 ZSTD_DEDUP) ---
#
# Two stages per job so that the output does not depend on scheduling:
# workers read, find zero runs and hash whole pages (_scan_*); the writer's
# thread then decides, in submission order, which pages repeat a page already
# stored literally by an earlier record (TsdWriter._decide); workers then
# check each candidate byte for byte against its source and compress the
# remaining pages (_pack).  A candidate whose bytes differ (a hash collision)
# stays literal: that depends on the bytes only, so the output stays
# deterministic.

# A scanned job is (buffer to give back or None, view, [(paddr of a chunk,
# its offset in the view, [(is_data, offset, length, page hashes or None)])]).
# Hashes cover the whole pages of a data run that starts on a page; a None
# hash is an all-zero page (never a source, never a reference).


def _hash_runs(buf: memoryview, paddr: int, page_size: int,
               min_zero: int) -> list[tuple[bool, int, int, list | None]]:
    """_runs, plus XXH3-128 of every whole page of each data run."""
    h128 = xxhash.xxh3_128_intdigest
    out: list[tuple[bool, int, int, list | None]] = []
    for is_data, off, length in _runs(buf, paddr, page_size, min_zero):
        hashes = None
        if is_data and (paddr + off) % page_size == 0 and length >= page_size:
            hashes = [h128(buf[p:p + page_size])
                      for p in range(off, off + length - page_size + 1, page_size)]
            if min_zero > page_size:  # short zero runs stay inside data runs
                zero = h128(bytes(page_size))
                hashes = [None if h == zero else h for h in hashes]
        out.append((is_data, off, length, hashes))
    return out


def _scan_memory(view: memoryview, paddr: int, page_size: int,
                 min_zero: int) -> tuple[tuple, float]:
    """Stage 1 of write_memory: ``view`` is one chunk of the caller's buffer."""
    t0 = time.thread_time()
    runs = _hash_runs(view, paddr, page_size, min_zero)
    return (None, view, [(paddr, 0, runs)]), time.thread_time() - t0


def _scan_file(fd: int, offset: int, chunks: list[tuple[int, int]], page_size: int,
               min_zero: int, free: list[bytearray]) -> tuple[tuple, float]:
    """Stage 1 of write_file_range: pread whole chunks into a buffer of the
    writer's free list (kept until stage 2 is done), then scan and hash."""
    t0 = time.thread_time()
    length = sum(n for _, n in chunks)
    try:
        buf = free.pop()
    except IndexError:
        buf = bytearray(length)
    if len(buf) < length:
        buf = bytearray(length)
    view = memoryview(buf)[:length]
    got = 0
    while got < length:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            free.append(buf)
            raise StorageError(f"source file ends at offset {offset + got}, "
                               f"{length - got} bytes short")
        got += n
    out = []
    pos = 0
    for paddr, n in chunks:
        out.append((paddr, pos, _hash_runs(view[pos:pos + n], paddr, page_size, min_zero)))
        pos += n
    return (buf, view, out), time.thread_time() - t0


def _pack(view: memoryview, plan: list[tuple], page_size: int, level: int, window_log: int,
          source: Any) -> tuple[list[_Piece], float]:
    """Stage 2: per run of ``plan`` (is_data, paddr, offset, length, refs),
    check each reference's bytes against its source and compress the rest.

    ``source(off)`` returns the page at source offset ``off`` (the caller's
    buffer for write_memory, a pread of the vmcore for write_file_range).
    """
    t0 = time.thread_time()
    cctx = _compressor(level, window_log)
    pieces: list[_Piece] = []
    for is_data, paddr, off, length, refs in plan:
        if not is_data:
            pieces.append((None, paddr, length, None))
            continue
        raw = view[off:off + length]
        # bytes == bytes is a memcmp; bytes == memoryview would compare item by item
        good = [(i, src) for i, src, src_off in refs
                if source(src_off) == bytes(raw[i * page_size:(i + 1) * page_size])]
        if not good:
            packed = cctx.compress(raw)
            if len(packed) < length:
                pieces.append((R.Codec.ZSTD, paddr, length, packed))
            else:
                pieces.append((R.Codec.RAW, paddr, length, bytes(raw)))
            continue
        parts = []
        at = 0
        for i, _ in good:
            parts.append(raw[at:i * page_size])
            at = (i + 1) * page_size
        parts.append(raw[at:])
        literal = b"".join(parts)
        pieces.append((R.Codec.ZSTD_DEDUP, paddr, length,
                       R.pack_dedup(good) + cctx.compress(literal)))
    return pieces, time.thread_time() - t0


class TsdWriter:
    """Write one ``.tsd`` file of a dump (FORMAT.md).

    :param path: file to create (an existing file is replaced).
    :param dump_id: UUID binding every file of one dump; a new one if None.
    :param chunk_size: largest MEMORY record, a multiple of ``page_size``.
    :param level: zstd compression level.
    :param threads: compression threads (0 or 1: compress on the caller's thread).
    :param dedup: store a whole page that repeats a page this writer already
        stored literally as a reference to it (codec ZSTD_DEDUP, format 1.2,
        FORMAT.md §4.1).  Off by default: without it the output is exactly
        that of format 1.1.  Costs a table of every distinct non-zero page
        written (a dict of int -> int, ~140 bytes a page measured, vs 16+8
        bytes of payload: ~45 MiB for the ~320k distinct pages of a busy 2 GiB
        guest, ~85 MiB for ~620k of a busy 4 GiB one), plus one buffer per
        job in flight.
    :param memory_map: what the dump should contain (the machine's physical
        memory map and the dump level, FORMAT.md §4.3 MEMORY_MAP): written as
        the very first record, so that any prefix of the file knows its
        total; the file is stamped format 1.3.  Without it nothing changes.
        A map whose dump level has a bit above 1 (a page-class filter, e.g.
        31) stamps the file 1.4: it may then hold EXCLUDED records
        (:meth:`write_excluded`, FORMAT.md §4.9).
    """

    def __init__(self, path: str | os.PathLike[str], *, dump_id: uuid.UUID | str | None = None,
                 arch: str = "x86_64", page_size: int = 4096,
                 producer: str = f"tsubaki-forensics {__version__}",
                 chunk_size: int = DEFAULT_CHUNK_SIZE, level: int = DEFAULT_LEVEL,
                 threads: int = 2, min_zero_pages: int = DEFAULT_MIN_ZERO_PAGES,
                 dedup: bool = False, memory_map: R.MemoryMap | None = None) -> None:
        if page_size < 512 or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size} is not a power of two >= 512")
        if chunk_size <= 0 or chunk_size % page_size or chunk_size > R.MAX_CHUNK:
            raise ValueError(f"chunk size {chunk_size} must be a multiple of {page_size} "
                             f"up to {R.MAX_CHUNK}")
        map_body = R.pack_memory_map(memory_map) if memory_map is not None else None
        self.path = Path(path)
        self.dump_id = dump_id if isinstance(dump_id, uuid.UUID) else (
            uuid.UUID(str(dump_id)) if dump_id is not None else uuid.uuid4())
        self.page_size = page_size
        self.chunk_size = chunk_size
        self.level = level
        self.threads = max(0, threads)
        self.min_zero = max(1, min_zero_pages) * page_size
        # zstd window = chunk size (power of two at or above it; zstd's limits 10..27)
        self.window_log = max(10, min(27, (chunk_size - 1).bit_length()))
        self.header = R.FileHeader(
            dump_id=self.dump_id, arch=arch, page_size=page_size,
            endian=R.Endian.BIG if arch in _BIG_ENDIAN else R.Endian.LITTLE,
            producer=producer, created_ns=time.time_ns(),
            **({"minor": R.FORMAT_MINOR_EXCLUDED} if self._filters(memory_map) else
               {"minor": R.FORMAT_MINOR_MAP} if memory_map is not None else
               {"minor": R.FORMAT_MINOR_DEDUP} if dedup else {}))
        #: Excluded runs not yet in a record: [paddr, length, class] (merged while adjacent).
        self._pending_excluded: list[list[int]] = []
        self.excluded_bytes = 0
        self.dedup = dedup
        # dedup: XXH3-128 of a literal page -> paddr << 20 | id of the write
        # call that wrote it (-> which source can re-read it, and where)
        self._table: dict[int, int] = {}
        self._origin = 0
        self._origins: dict[tuple[int, int], int] = {}
        self._n_origins = 0
        self._call_id = 0
        self._calls: dict[int, tuple[int, int]] = {}
        self._high = 0  # end of the highest range written (rewrites reset the table)
        self._free: list[bytearray] = []
        self.dedup_pages = 0  # pages stored as references
        self.stats = WriteStats()
        self._entries: list[R.IndexEntry] = []
        self._sequence = 0
        self._pending_zero: tuple[int, int] | None = None
        self._call_stats: WriteStats | None = None
        reuse_chunk_sized_blocks()
        self._pool = ThreadPoolExecutor(self.threads, "tsd-zstd") if self.threads > 1 else None
        self._closed = False
        self._broken = False
        self.bytes_written = 0
        try:
            self._f = open(self.path, "wb", buffering=1 << 20)
        except OSError as e:
            raise StorageError(f"cannot create {self.path}: {e.strerror or e}") from None
        self._write([R.pack_file_header(self.header)])
        if map_body is not None:
            self._record(R.RecordType.METADATA, R.pack_metadata(R.MetadataKind.MEMORY_MAP, map_body))

    @staticmethod
    def _filters(memory_map: R.MemoryMap | None) -> bool:
        """True when the map's dump level leaves page classes out (a bit above 1)."""
        return memory_map is not None and bool(memory_map.dump_level & ~R.DUMP_LEVEL_ZERO_AS_RECORDS)

    # -- low level -----------------------------------------------------------
    def _write(self, parts: list[bytes | memoryview]) -> None:
        if self._broken:
            raise StorageError(f"{self.path}: an earlier write failed; the records before it "
                               f"are kept")
        try:
            for p in parts:
                self._f.write(p)
        except OSError as e:
            # The file may now end inside a record: stop here.  Every record
            # before it is sound, and readers recover them (FORMAT.md §7.2).
            self._broken = True
            raise StorageError(f"writing {self.path}: {e.strerror or e}") from None
        self.bytes_written += sum(len(p) for p in parts)

    def _record(self, rtype: R.RecordType, *payload: bytes | memoryview, paddr: int = 0,
                length: int = 0, flags: int = 0) -> None:
        if self._closed:
            raise ValueError(f"{self.path} is closed")
        offset = self.bytes_written
        self._write(R.pack_record(rtype, flags, self._sequence, self.dump_id, *payload))
        self._sequence += 1
        if rtype not in (R.RecordType.INDEX, R.RecordType.END):
            self._entries.append(R.IndexEntry(rtype, flags, offset, paddr, length))
        size = self.bytes_written - offset
        self.stats.stored_bytes += size
        self.stats.records += 1
        if self._call_stats is not None:
            self._call_stats.stored_bytes += size
            self._call_stats.records += 1

    def _emit_zero(self) -> None:
        if self._pending_excluded:
            self._emit_excluded()
        if self._pending_zero is not None:
            paddr, length = self._pending_zero
            self._pending_zero = None
            self._record(R.RecordType.ZERO, R.pack_range(paddr, length), paddr=paddr, length=length)

    def _emit_excluded(self) -> None:
        runs, self._pending_excluded = self._pending_excluded, []
        for i in range(0, len(runs), R.MAX_EXCLUDED_RUNS):
            part = runs[i:i + R.MAX_EXCLUDED_RUNS]
            start, end = part[0][0], part[-1][0] + part[-1][1]
            self._record(R.RecordType.EXCLUDED, R.pack_excluded(part, self.page_size),
                         paddr=start, length=end - start, flags=R.RecordFlags.MUST_UNDERSTAND)

    def _emit_piece(self, piece: _Piece) -> None:
        if self._pending_excluded:
            self._emit_excluded()
        codec, paddr, length, payload = piece
        if codec is None:
            pz = self._pending_zero
            if pz is not None and pz[0] + pz[1] == paddr:
                self._pending_zero = (pz[0], pz[1] + length)
            else:
                self._emit_zero()
                self._pending_zero = (paddr, length)
            return
        self._emit_zero()
        self._record(R.RecordType.MEMORY, R.pack_memory(paddr, length, codec), payload,
                     paddr=paddr, length=length)

    def _chunks(self, paddr: int, n: int, view: memoryview | None = None) -> Iterator[Any]:
        """Cut [paddr, paddr+n) at multiples of ``chunk_size`` (aligned chunks
        line up across files of one dump, FORMAT.md §8)."""
        off = 0
        while off < n:
            addr = paddr + off
            step = min(self.chunk_size - addr % self.chunk_size, n - off)
            yield (addr, view[off:off + step]) if view is not None else (addr, step)
            off += step

    # -- public API ----------------------------------------------------------
    def write_metadata(self, *, vmcoreinfo: bytes | str | None = None, notes: bytes | None = None,
                       properties: dict[str, Any] | None = None,
                       symbolpack: bytes | None = None) -> None:
        """Record VMCOREINFO text, the raw ELF notes blob, properties and/or a
        symbol pack (the ``.tsp`` bytes, so the dump analyses without a vmlinux) (§4.3)."""
        self._emit_zero()
        if vmcoreinfo is not None:
            if isinstance(vmcoreinfo, str):
                vmcoreinfo = vmcoreinfo.encode()
            self._record(R.RecordType.METADATA, R.pack_metadata(R.MetadataKind.VMCOREINFO,
                                                                bytes(vmcoreinfo)))
        if notes is not None:
            self._record(R.RecordType.METADATA, R.pack_metadata(R.MetadataKind.NOTES, bytes(notes)))
        if properties:
            self._record(R.RecordType.METADATA, R.pack_metadata(
                R.MetadataKind.PROPERTIES, R.encode_properties(properties)))
        if symbolpack is not None:
            self._record(R.RecordType.METADATA, R.pack_metadata(R.MetadataKind.SYMBOLPACK,
                                                                bytes(symbolpack)))

    def write_memory(self, paddr: int, data: bytes | bytearray | memoryview) -> WriteStats:
        """Write physical memory starting at ``paddr``; returns what this call cost.

        Returns after every byte is handed to the OS (see :meth:`flush` for
        durability); a zero run at the end may be merged with the next call's.
        """
        view = memoryview(data).cast("B")
        if self.dedup:
            self._new_origin(None, paddr)
            jobs = ((_scan_memory, (chunk, addr, self.page_size, self.min_zero))
                    for addr, chunk in self._chunks(paddr, len(view), view))
            return self._run(paddr, len(view), jobs,
                             lambda off: bytes(view[off:off + self.page_size]))
        args = (self.page_size, self.level, self.min_zero, self.window_log)
        jobs = ((_encode, (chunk, addr, *args)) for addr, chunk in self._chunks(paddr, len(view), view))
        return self._run(paddr, len(view), jobs)

    def write_file_range(self, paddr: int, fd: int, offset: int, length: int) -> WriteStats:
        """Write ``length`` bytes of physical memory read from file ``fd`` at ``offset``.

        The worker threads read their own chunks (``pread`` into a per-thread
        buffer), so reading, zero detection and compression all run in
        parallel and no page of the source stays mapped: this is the fast,
        flat-memory path for importing a vmcore or a guest RAM file.
        """
        if self.dedup:
            st = os.fstat(fd)
            self._new_origin((st.st_dev, st.st_ino), paddr - offset)
            args = (self.page_size, self.min_zero, self._free)
            jobs = ((_scan_file, a[:3] + args)
                    for _, a in self._file_jobs(paddr, fd, offset, length, ()))
            ps = self.page_size
            return self._run(paddr, length, jobs, lambda off: os.pread(fd, ps, off))
        args = (self.page_size, self.level, self.min_zero, self.window_log)
        return self._run(paddr, length, self._file_jobs(paddr, fd, offset, length, args))

    def write_file_pages(self, paddr: int, fd: int, offset: int, length: int,
                         classes: Any) -> WriteStats:
        """Like :meth:`write_file_range`, with a :class:`~.records.PageClass` per
        page (``classes``: ``uint8``, one per page of ``[paddr, paddr+length)``):
        KEPT pages are written as usual, ZERO pages as ZERO records (not read),
        any other class as EXCLUDED runs (not read; FORMAT.md §4.9), all in
        address order on the worker threads.

        :raises ValueError: unaligned range, wrong number of classes, or
            excluded pages on a writer whose dump level filters nothing.
        """
        ps = self.page_size
        if paddr % ps or length % ps:
            raise ValueError(f"write_file_pages needs whole pages, not {paddr:#x}+{length:#x}")
        classes = np.asarray(classes, np.uint8)
        if classes.size != length // ps:
            raise ValueError(f"{classes.size} classes for {length // ps} pages")
        if self.dedup:
            raise ValueError("write_file_pages does not combine with dedup")
        excl = (classes != R.PageClass.KEPT) & (classes != R.PageClass.ZERO) & \
            (classes != R.PageClass.ABSENT)
        if excl.any() and self.header.minor < R.FORMAT_MINOR_EXCLUDED:
            raise ValueError("excluded pages need a writer opened with a memory map whose "
                             "dump level is above 1 (format 1.4)")
        args = (ps, self.level, self.min_zero, self.window_log, self.chunk_size)

        def jobs() -> Iterator[tuple[Any, tuple]]:
            for _, (_, off, batch) in self._file_jobs(paddr, fd, offset, length, ()):
                first = (batch[0][0] - paddr) // ps
                count = sum(n for _, n in batch) // ps
                yield _encode_file_pages, (fd, off, batch, classes[first:first + count], *args)

        return self._run(paddr, length, jobs())

    def _file_jobs(self, paddr: int, fd: int, offset: int, length: int,
                   args: tuple) -> Iterator[tuple[Any, tuple]]:
        """Jobs of up to FILE_BATCH bytes of whole chunks: fewer, larger jobs
        keep the GIL hand-offs between the writer and the workers rare."""
        batch: list[tuple[int, int]] = []
        size = 0
        for addr, n in self._chunks(paddr, length):
            if batch and size + n > max(FILE_BATCH, self.chunk_size):
                yield _encode_file, (fd, offset + batch[0][0] - paddr, batch, *args)
                batch, size = [], 0
            batch.append((addr, n))
            size += n
        if batch:
            yield _encode_file, (fd, offset + batch[0][0] - paddr, batch, *args)

    def _run(self, paddr: int, length: int, jobs: Iterator[tuple[Any, tuple]],
             source: Any = None) -> WriteStats:
        if paddr < 0 or paddr + length > 1 << 64:
            raise ValueError(f"physical range {paddr:#x}+{length:#x} out of bounds")
        t0 = time.perf_counter()
        stats = self._call_stats = WriteStats(raw_bytes=length)
        try:
            if source is not None:
                self._rewrite_check(paddr, length)
                self._run_dedup(jobs, source)
            elif self._pool is None:
                for fn, args in jobs:
                    self._finish(*fn(*args))
            else:
                inflight: collections.deque[Future] = collections.deque()
                for fn, args in jobs:
                    inflight.append(self._pool.submit(fn, *args))
                    if len(inflight) > self.threads:
                        self._finish(*inflight.popleft().result())
                while inflight:
                    self._finish(*inflight.popleft().result())
        finally:
            self._call_stats = None
        stats.wall_seconds = time.perf_counter() - t0
        self.stats.raw_bytes += stats.raw_bytes
        self.stats.compress_seconds += stats.compress_seconds
        self.stats.wall_seconds += stats.wall_seconds
        return stats

    def _finish(self, pieces: list[_Piece], cpu: float) -> None:
        stats = self._call_stats
        assert stats is not None
        stats.compress_seconds += cpu
        for piece in pieces:
            if piece[0] == _EXCLUDED:
                self.write_excluded(piece[1], piece[2], piece[3])  # type: ignore[arg-type]
                stats.excluded_bytes += piece[2]
                self.stats.excluded_bytes += piece[2]
                continue
            if piece[0] is None:
                stats.zero_bytes += piece[2]
                self.stats.zero_bytes += piece[2]
            self._emit_piece(piece)

    # -- page deduplication ----------------------------------------------------
    def _new_origin(self, key: tuple[int, int] | None, base: int) -> None:
        """Name the source of the coming write: one origin per source file (its
        pages can be re-read by offset), a new one per write_memory call (the
        caller's buffer lives only until the call returns); and a call id that
        the table stores with each page, mapping to (origin, ``base``: paddr
        minus source offset for that call)."""
        if key is None or key not in self._origins:
            self._n_origins += 1
            if key is not None:
                self._origins[key] = self._n_origins
        self._origin = self._n_origins if key is None else self._origins[key]
        self._call_id += 1
        if self._call_id > _CALL_MASK:  # ids run out after 2^20 calls: start afresh
            self._table.clear()
            self._calls.clear()
            self._call_id = 1
        self._calls[self._call_id] = (self._origin, base)

    def _rewrite_check(self, paddr: int, length: int) -> None:
        """A range written again may change which record a reader takes a
        source page from: forget every source before such a rewrite."""
        if paddr < self._high:
            self._table.clear()
        self._high = max(self._high, paddr + length)

    def _run_dedup(self, jobs: Iterator[tuple[Any, tuple]], source: Any) -> None:
        """Stage 1 on the workers, decisions here in order, stage 2 on the
        workers, results written in order; at most ``2 x threads + 1`` jobs
        (and buffers) in flight."""
        args = (self.page_size, self.level, self.window_log, source)
        if self._pool is None:
            for fn, a in jobs:
                scanned, cpu = fn(*a)
                buf, view, plan = self._decide(scanned)
                pieces, cpu2 = _pack(view, plan, *args)
                self._finish_dedup(pieces, cpu + cpu2)
                if buf is not None:
                    self._free.append(buf)
            return
        s1: collections.deque[Future] = collections.deque()
        s2: collections.deque[tuple[Future, Any, float]] = collections.deque()
        pool = self._pool

        def step() -> None:
            """Decide the oldest scanned job if it is ready (that feeds the
            workers), else write the oldest packed one if ready, else wait."""
            while True:
                if s1 and s1[0].done():
                    scanned, cpu = s1.popleft().result()
                    buf, view, plan = self._decide(scanned)
                    if any(p[0] for p in plan):
                        fut = pool.submit(_pack, view, plan, *args)
                    else:  # all zero (most of an idle guest): no second trip
                        fut = Future()
                        fut.set_result(([(None, p[1], p[3], None) for p in plan], 0.0))
                    s2.append((fut, buf, cpu))
                    return
                if s2 and s2[0][0].done():
                    fut, buf, cpu = s2.popleft()
                    pieces, cpu2 = fut.result()
                    self._finish_dedup(pieces, cpu + cpu2)
                    if buf is not None:
                        self._free.append(buf)
                    return
                wait([f for f in (s1[0] if s1 else None, s2[0][0] if s2 else None) if f],
                     return_when=FIRST_COMPLETED)

        # Two stages per job: twice the jobs in flight keep both stages fed
        # (each holds one buffer of at most max(FILE_BATCH, chunk_size)).
        limit = DEDUP_JOBS_PER_THREAD * self.threads
        try:
            for fn, a in jobs:
                s1.append(pool.submit(fn, *a))
                while len(s1) + len(s2) > limit:
                    step()
            while s1 or s2:
                step()
        finally:  # on an error, let running jobs end before their buffers go
            for f in s1:
                f.cancel()
            for f, _, _ in s2:
                f.cancel()

    def _finish_dedup(self, pieces: list[_Piece], cpu: float) -> None:
        for codec, _, _, payload in pieces:
            if codec == R.Codec.ZSTD_DEDUP:
                self.dedup_pages += R.DEDUP_COUNT.unpack_from(payload)[0]
        self._finish(pieces, cpu)

    def _decide(self, scanned: tuple) -> tuple[Any, memoryview, list[tuple]]:
        """In submission order: which whole pages repeat a page stored
        literally by an EARLIER record (never one of the same record), and
        which pages become sources for later records.

        A reference carries the source offset that ``source()`` of the
        current call takes: the source's paddr minus its call's base (file
        offset for write_file_range, buffer offset for write_memory).
        """
        buf, view, chunks = scanned
        table = self._table
        get = table.get
        calls = self._calls
        origin = self._origin
        cid = self._call_id
        ps = self.page_size
        plan: list[tuple] = []
        for paddr, pos, runs in chunks:
            for is_data, off, length, hashes in runs:
                refs: list[tuple[int, int, int]] = []
                if hashes:
                    start = paddr + off
                    vals = list(map(get, hashes))
                    new = [i for i, v in enumerate(vals) if v is None and hashes[i] is not None]
                    for i, v in [(i, v) for i, v in enumerate(vals) if v is not None]:
                        o, b = calls[v & _CALL_MASK]
                        if o == origin:
                            src = v >> _CALL_BITS
                            refs.append((i, src, src - b))
                        else:  # a source this call cannot re-read: replace it
                            new.append(i)
                    new.sort()
                    if new:
                        # only now, so that no page refers to a page of its own
                        # record; reversed, so that the first of equal pages wins
                        new.reverse()
                        table.update(zip([hashes[i] for i in new],
                                         [(start + i * ps) << _CALL_BITS | cid for i in new]))
                plan.append((is_data, paddr + off, pos + off, length, refs))
        return buf, view, plan

    def write_zero(self, paddr: int, length: int) -> None:
        """Record ``length`` bytes at ``paddr`` known to be zero (no data needed)."""
        if length > 0 and self.dedup:
            self._rewrite_check(paddr, length)
        if length > 0:
            self._emit_piece((None, paddr, length, None))
            self.stats.zero_bytes += length
            self.stats.raw_bytes += length

    def write_excluded(self, paddr: int, length: int, cls: R.PageClass | int) -> None:
        """Record whole pages at ``paddr`` that the dump level leaves out because
        of page class ``cls`` (FORMAT.md §4.9): excluded, never missing.

        Adjacent calls of one class merge into one run; runs are buffered and
        written as few EXCLUDED records (flagged MUST_UNDERSTAND) before the
        next record of another kind, at :meth:`flush` and at :meth:`close`.
        Runs must come in address order within a stretch of calls (a run
        below the previous one starts a new record).  ``PageClass.ZERO`` is
        written as a ZERO record: the page reads as zeros, which it is.

        :raises ValueError: the file's dump level filters nothing (format
            before 1.4), ``cls`` is not an excludable class, or the range is
            not whole pages.
        """
        cls = R.PageClass(cls)
        if length <= 0:
            return
        if paddr % self.page_size or length % self.page_size or paddr + length > 1 << 64:
            raise ValueError(f"excluded range {paddr:#x}+{length:#x} is not whole "
                             f"{self.page_size}-byte pages")
        if cls == R.PageClass.ZERO:
            self.write_zero(paddr, length)
            return
        if cls not in R.LEVEL_BIT_OF:
            raise ValueError(f"{cls.name} is not a class of excluded pages")
        if self.header.minor < R.FORMAT_MINOR_EXCLUDED:
            raise ValueError("write_excluded needs a writer opened with a memory map whose "
                             "dump level is above 1 (format 1.4)")
        if self._pending_zero is not None:
            self._emit_zero()
        self.excluded_bytes += length
        pend = self._pending_excluded
        if pend and pend[-1][0] + pend[-1][1] == paddr and pend[-1][2] == cls \
                and (pend[-1][1] + length) // self.page_size < 1 << 32:
            pend[-1][1] += length
            return
        if pend and paddr < pend[-1][0] + pend[-1][1]:
            self._emit_excluded()  # out of order: a record of its own
        while length:
            step = min(length, ((1 << 32) - 1) * self.page_size)
            self._pending_excluded.append([paddr, step, int(cls)])
            paddr += step
            length -= step
        if len(self._pending_excluded) >= R.MAX_EXCLUDED_RUNS:
            self._emit_excluded()

    def write_excluded_runs(self, runs: Any) -> int:
        """:meth:`write_excluded` for each run of a classification
        (``PageClassification.excluded_runs()``: ``.pfn``, ``.count``, ``.cls``);
        returns the bytes recorded as excluded or zero."""
        ps = self.page_size
        total = 0
        for r in runs:
            self.write_excluded(r.pfn * ps, r.count * ps, r.cls)
            total += r.count * ps
        return total

    def write_missing(self, paddr: int, length: int, reason: str) -> None:
        """Record a range that could not be read: missing, never zero (§4.5)."""
        if length <= 0:
            raise ValueError("a missing range needs a positive length")
        self._emit_zero()
        self._record(R.RecordType.MISSING, R.pack_missing(paddr, length, reason),
                     paddr=paddr, length=length)

    def write_event(self, kind: str, time_s: float, **fields: Any) -> None:
        """Record a timeline event (panic notice, region saved, ...) (§4.4)."""
        self._emit_zero()
        self._record(R.RecordType.EVENT, R.pack_event(kind, time_s, fields))

    def flush(self, durable: bool = True) -> int:
        """Push everything to the OS (and to the disk if ``durable``).

        :returns: the file offset up to which the dump is complete (and, with
            ``durable``, on stable storage).
        """
        self._emit_zero()
        try:
            self._f.flush()
            if durable:
                os.fsync(self._f.fileno())
        except OSError as e:
            self._broken = True  # the buffered tail may be half-written: no footer after it
            raise StorageError(f"flushing {self.path}: {e.strerror or e}") from None
        return self.bytes_written

    def close(self) -> None:
        """Write the INDEX and the END footer, sync and close (idempotent)."""
        if self._closed:
            return
        try:
            if self._broken:
                return  # no INDEX/END after a failed write: readers scan instead
            self._emit_zero()
            index_offset = self.bytes_written
            self._record(R.RecordType.INDEX, R.pack_index(self._entries))
            self._record(R.RecordType.END, R.pack_end(index_offset, self._sequence))
            self.flush(durable=True)
        finally:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            try:
                self._f.close()
            except OSError:  # the buffered tail could not be written
                self._broken = True

    def __enter__(self) -> TsdWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CALL_BITS = 20
_CALL_MASK = (1 << _CALL_BITS) - 1
_BIG_ENDIAN = frozenset({"ppc64", "s390x", "sparc64", "mips64"})
