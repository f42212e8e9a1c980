"""Write a ``.tsd`` file: :class:`TsdWriter`, the only public way to produce the format.

Why it is a facade over three rooms: the writer used to be one class that
framed records, ran the compression threads and planned deduplication at
once.  Each is now a module of its own, and this one only checks arguments,
names the call's source and picks the path:

* :mod:`.framing` frames records, coalesces ZERO and EXCLUDED runs and
  writes the INDEX and END footer (append-only, every record self-checking,
  so any prefix that reaches the disk is a valid dump, FORMAT.md §6);
* :mod:`.encode` cuts memory into chunks, finds zero pages, reads source
  files and compresses on worker threads, results in submission order, so
  the output is byte-for-byte deterministic whatever the scheduling;
* :mod:`.dedup` (``dedup=True``, format 1.2) plans which pages are stored as
  references to an earlier literal copy, between a scan stage and a pack
  stage on the workers, in submission order (deterministic too).

Only a bounded number of jobs is in flight and every ``write_*`` call
returns only after its data is written, so memory use is flat and the
caller may reuse its buffer.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import __version__
from . import records as R
from .encode import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_LEVEL,
    DEFAULT_MIN_ZERO_PAGES,
    FILE_BATCH,
    Encoding,
    Job,
    Pipeline,
    chunks,
    encode_chunk,
    encode_file,
    encode_file_pages,
    file_batches,
    searchable,
)
from .framing import RecordFile, WriteStats
from .heap import reuse_chunk_sized_blocks

if TYPE_CHECKING:  # dedup loads on first use: most writers never dedup
    from .dedup import Source

__all__ = ["TsdWriter", "WriteStats", "DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL", "DEFAULT_MIN_ZERO_PAGES",
           "FILE_BATCH"]

_BIG_ENDIAN = frozenset({"ppc64", "s390x", "sparc64", "mips64"})
# While the worker threads run, the GIL changes hands at every zstd frame,
# pread and record write.  With CPython's 5 ms switch interval a thread that
# wants it back waits on a timed futex behind a holder the OS has preempted;
# 0.5 ms cut the system time of a busy 2 GiB import from 0.8-1.5 s to
# 0.6-1.2 s and its wall by a median 12% in adjacent runs on the loaded 2-core
# machine (docs/BENCHMARKS.md, "Second pass").
_SWITCH_INTERVAL = 0.0005
# The cyclic GC stays off while a call's jobs run: they make tasks, tuples and
# pieces, none of them in cycles, and a collection they trigger rescans the
# start-up's objects on the writer's thread, holding the GIL (a 256 MiB import:
# 2 collections during the work, ~4 ms measured under load; issue 21).


class TsdWriter(RecordFile):
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
        dump_id = dump_id if isinstance(dump_id, uuid.UUID) else (
            uuid.UUID(str(dump_id)) if dump_id is not None else uuid.uuid4())
        header = R.FileHeader(
            dump_id=dump_id, arch=arch, page_size=page_size,
            endian=R.Endian.BIG if arch in _BIG_ENDIAN else R.Endian.LITTLE,
            producer=producer, created_ns=time.time_ns(),
            **({"minor": R.FORMAT_MINOR_EXCLUDED} if self._filters(memory_map) else
               {"minor": R.FORMAT_MINOR_MAP} if memory_map is not None else
               {"minor": R.FORMAT_MINOR_DEDUP} if dedup else {}))
        self.encoding = Encoding(page_size=page_size, chunk_size=chunk_size, level=level,
                                 min_zero=max(1, min_zero_pages) * page_size)
        if dedup:
            from .dedup import DedupPlanner

            self._dedup: Any = DedupPlanner()
        else:
            self._dedup = None
        reuse_chunk_sized_blocks()
        self._pipeline = Pipeline(threads)
        try:
            super().__init__(Path(path), header, map_body)
        except BaseException:
            self._pipeline.shutdown()
            raise

    @staticmethod
    def _filters(memory_map: R.MemoryMap | None) -> bool:
        """True when the map's dump level leaves page classes out (a bit above 1)."""
        return memory_map is not None and bool(memory_map.dump_level & ~R.DUMP_LEVEL_ZERO_AS_RECORDS)

    # -- what the writer was opened with -------------------------------------------
    @property
    def chunk_size(self) -> int:
        return self.encoding.chunk_size

    @property
    def level(self) -> int:
        return self.encoding.level

    @property
    def min_zero(self) -> int:
        """Shortest zero run, in bytes, written as a ZERO record."""
        return self.encoding.min_zero

    @property
    def window_log(self) -> int:
        return self.encoding.window_log

    @property
    def threads(self) -> int:
        return self._pipeline.threads

    @property
    def dedup(self) -> bool:
        return self._dedup is not None

    @property
    def dedup_pages(self) -> int:
        """Pages stored as references so far (0 without ``dedup``)."""
        return self._dedup.pages if self._dedup is not None else 0

    # -- memory ----------------------------------------------------------------------
    def write_memory(self, paddr: int, data: bytes | bytearray | memoryview) -> WriteStats:
        """Write physical memory starting at ``paddr``; returns what this call cost.

        Returns after every byte is handed to the OS (see :meth:`flush` for
        durability); a zero run at the end may be merged with the next call's.
        """
        view = memoryview(data).cast("B")
        enc = self.encoding
        cut = chunks(paddr, len(view), enc.chunk_size)
        if self._dedup is not None:
            from .dedup import scan_memory

            self._dedup.new_origin(None, paddr)
            ps = enc.page_size
            return self._run(paddr, len(view),
                             ((scan_memory, (view[a - paddr:a - paddr + n], a, enc)) for a, n in cut),
                             lambda off: bytes(view[off:off + ps]))
        base, start = searchable(data)  # bytes: zero pages found without numpy
        return self._run(paddr, len(view),
                         ((encode_chunk, (view[a - paddr:a - paddr + n], a, enc, base, start + a - paddr))
                          for a, n in cut))

    def write_file_range(self, paddr: int, fd: int, offset: int, length: int,
                         progress: Callable[[int], None] | None = None) -> WriteStats:
        """Write ``length`` bytes of physical memory read from file ``fd`` at ``offset``.

        The worker threads read their own chunks (``pread``), so reading,
        zero detection and compression all run in parallel and no page of
        the source stays mapped: this is the fast, flat-memory path for
        importing a vmcore or a guest RAM file.  ``progress(n)``, if given,
        hears of each job's ``n`` bytes as they are written: one call for a
        whole file range keeps the workers fed to its end, where calls per
        progress window each drained the pipeline (both workers idle behind
        a window's last job: 4 times in a 256 MiB import, issue 21).
        """
        enc = self.encoding
        batches = file_batches(paddr, offset, length, enc.chunk_size)
        if self._dedup is not None:
            from .dedup import scan_file

            st = os.fstat(fd)
            self._dedup.new_origin((st.st_dev, st.st_ino), paddr - offset)
            free, ps = self._dedup.free, enc.page_size
            return self._run(paddr, length, ((scan_file, (fd, b, enc, free)) for b in batches),
                             lambda off: os.pread(fd, ps, off), progress=progress)
        return self._run(paddr, length, ((encode_file, (fd, b, enc)) for b in batches),
                         progress=progress)

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
        import numpy as np  # a dump level above 1: the page classifier loaded it

        classes = np.asarray(classes, np.uint8)
        if classes.size != length // ps:
            raise ValueError(f"{classes.size} classes for {length // ps} pages")
        if self._dedup is not None:
            raise ValueError("write_file_pages does not combine with dedup")
        excl = (classes != R.PageClass.KEPT) & (classes != R.PageClass.ZERO) & \
            (classes != R.PageClass.ABSENT)
        if excl.any() and self.header.minor < R.FORMAT_MINOR_EXCLUDED:
            raise ValueError("excluded pages need a writer opened with a memory map whose "
                             "dump level is above 1 (format 1.4)")
        enc = self.encoding

        def jobs() -> Iterator[Job]:
            for batch in file_batches(paddr, offset, length, enc.chunk_size):
                first = (batch.chunks[0][0] - paddr) // ps
                count = sum(n for _, n in batch.chunks) // ps
                yield encode_file_pages, (fd, batch, classes[first:first + count], enc)

        return self._run(paddr, length, jobs())

    def write_zero(self, paddr: int, length: int) -> None:
        """Record ``length`` bytes at ``paddr`` known to be zero (no data needed)."""
        if length > 0 and self._dedup is not None:
            self._dedup.rewrite_check(paddr, length)
        super().write_zero(paddr, length)

    def _run(self, paddr: int, length: int, jobs: Iterator[Job], source: Source | None = None,
             progress: Callable[[int], None] | None = None) -> WriteStats:
        """Run one call's jobs (through the dedup planner when ``source`` is
        given), frame their pieces in order (telling ``progress`` the bytes of
        each job), and account the call."""
        if paddr < 0 or paddr + length > 1 << 64:
            raise ValueError(f"physical range {paddr:#x}+{length:#x} out of bounds")
        t0 = time.perf_counter()
        stats = self._call_stats = WriteStats(raw_bytes=length)
        switch = sys.getswitchinterval()
        if self._pipeline.pool is not None and switch > _SWITCH_INTERVAL:
            sys.setswitchinterval(_SWITCH_INTERVAL)
        finish = self._finish if progress is None else self._reporting(progress)
        collecting = gc.isenabled()
        gc.disable()
        try:
            if source is not None:
                from .dedup import run_dedup

                assert self._dedup is not None
                self._dedup.rewrite_check(paddr, length)
                run_dedup(self._dedup, self._pipeline.pool, self._pipeline.threads, jobs, source,
                          self.encoding, finish)
            else:
                self._pipeline.run(jobs, finish)
        finally:
            self._call_stats = None
            sys.setswitchinterval(switch)
            if collecting:
                gc.enable()
        stats.wall_seconds = time.perf_counter() - t0
        self.stats.raw_bytes += stats.raw_bytes
        self.stats.compress_seconds += stats.compress_seconds
        self.stats.wall_seconds += stats.wall_seconds
        return stats

    def _reporting(self, progress: Callable[[int], None]) -> Callable[[list, float], None]:
        """:meth:`_finish`, then ``progress`` with the bytes the job covered."""
        frame = self._finish

        def finish(pieces: list, cpu: float) -> None:
            frame(pieces, cpu)
            progress(sum(p[2] for p in pieces))

        return finish

    def _release(self) -> None:
        self._pipeline.shutdown()

    def __enter__(self) -> TsdWriter:
        return self
