"""Turn physical memory into encoded pieces: zero runs, zstd frames, file reads.

Why it looks like this:

* Memory is cut into chunks aligned to ``chunk_size`` in physical address
  space (chunks line up across the files of one dump, FORMAT.md §8); all-zero
  pages are found with numpy (OR-reduction over the pages viewed as uint64,
  at memory speed) and become zero pieces with no compression work; the rest
  is compressed with zstd on worker threads (zstandard and numpy release the
  GIL).
* Jobs are pure functions of their input: a job returns its
  :class:`~.framing.Piece` s and the CPU time it took, and
  :class:`Pipeline` hands them back in submission order, so the output is
  byte-for-byte the same whatever the scheduling.  A bounded number of jobs
  is in flight, so memory use is flat.
* File jobs read their own chunks (``pread`` into a per-thread buffer), so
  reading, zero detection and compression all run in parallel and no page
  of the source stays mapped.

The dedup variant of these stages is :mod:`.dedup`; framing is :mod:`.framing`.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import zstandard

from ..errors import StorageError
from . import records as R
from .framing import EXCLUDED, Piece

__all__ = [
    "DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL", "DEFAULT_MIN_ZERO_PAGES", "FILE_BATCH", "RESULTS_PER_THREAD",
    "Encoding", "Run", "FileBatch", "Job", "Pipeline",
    "compressor", "runs", "read_exact", "chunks", "file_batches",
    "encode_chunk", "encode_file", "encode_file_pages",
]

# Chosen by measurement on real 512 MiB crashes (idle and busy guests):
# docs/benchmarks/import.md.  Smaller chunks lose zstd context on busy memory
# (1 MiB: 10% larger than `zstd -3`), larger ones cost more per LRU miss.
DEFAULT_CHUNK_SIZE = 8 << 20
DEFAULT_LEVEL = 3
# A zero run shorter than this many pages stays inside its MEMORY record
# (zstd encodes it in a few bytes); longer runs become ZERO records.
DEFAULT_MIN_ZERO_PAGES = 1
# File jobs hand workers this many bytes of whole chunks per job.
FILE_BATCH = 4 << 20
# Jobs queued, running or finished but not yet written, per worker thread (Pipeline).
RESULTS_PER_THREAD = 3


@dataclass(frozen=True)
class Encoding:
    """How memory is cut and compressed; fixed for the life of a writer.

    ``min_zero`` is in bytes (a zero run shorter than this stays inside its
    frame); ``window_log`` is the zstd window (see :func:`compressor`).
    """

    page_size: int
    chunk_size: int
    level: int
    min_zero: int

    @property
    def window_log(self) -> int:
        """zstd window = chunk size (power of two at or above it; zstd's limits 10..27)."""
        return max(10, min(27, (self.chunk_size - 1).bit_length()))


class Run(NamedTuple):
    """A stretch of a buffer that is all data or all zero, at page granularity."""

    is_data: bool
    offset: int
    length: int


class FileBatch(NamedTuple):
    """Consecutive whole chunks of a file job: where they start in the file,
    and each chunk's (paddr, length)."""

    offset: int
    chunks: list[tuple[int, int]]


#: A job for the workers: a function and its arguments; it returns
#: (pieces, CPU seconds) or, for the dedup scan, (scanned job, CPU seconds).
Job = tuple[Callable[..., tuple[Any, float]], tuple]

_tls = threading.local()


def compressor(level: int, window_log: int) -> zstandard.ZstdCompressor:
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


def runs(buf: memoryview, paddr: int, page_size: int, min_zero: int) -> list[Run]:
    """Split ``buf`` (memory at ``paddr``) into data and zero :class:`Run` s.

    Whole pages are tested at once; a partial page at either end is a run of
    its own test.  A zero run shorter than ``min_zero`` bytes joins the data
    around it (cheaper inside the frame than as a record).
    """
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
    out: list[list] = []  # [is_data, offset, length], made Runs at the end
    for a, b in zip(run_starts, run_ends):
        off = st_l[a]
        end = st_l[b] if b < len(st_l) else n
        is_data = bool(fl[a])
        if not is_data and end - off < min_zero and out:
            is_data = True  # a short hole: cheaper inside the frame than as a record
        if out and out[-1][0] == is_data:
            out[-1][2] += end - off
        else:
            out.append([is_data, off, end - off])
    return [Run(*r) for r in out]


def read_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``fd`` at ``offset``.

    :raises StorageError: the file ends first.
    """
    length = len(view)
    got = 0
    while got < length:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise StorageError(f"source file ends at offset {offset + got}, "
                               f"{length - got} bytes short")
        got += n


def _thread_buffer(length: int) -> memoryview:
    """This worker thread's read buffer, at least ``length`` bytes (kept for its next job)."""
    buf = getattr(_tls, "buf", None)
    if buf is None or len(buf) < length:
        buf = _tls.buf = memoryview(bytearray(length))
    return buf


def chunks(paddr: int, n: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """Cut [paddr, paddr+n) at multiples of ``chunk_size``: (paddr, length) each
    (aligned chunks line up across files of one dump, FORMAT.md §8)."""
    off = 0
    while off < n:
        addr = paddr + off
        step = min(chunk_size - addr % chunk_size, n - off)
        yield addr, step
        off += step


def file_batches(paddr: int, offset: int, length: int, chunk_size: int) -> Iterator[FileBatch]:
    """Whole chunks of [paddr, paddr+length) (in the file at ``offset``) grouped
    into batches of up to FILE_BATCH bytes: fewer, larger jobs keep the GIL
    hand-offs between the writer and the workers rare."""
    batch: list[tuple[int, int]] = []
    size = 0
    for addr, n in chunks(paddr, length, chunk_size):
        if batch and size + n > max(FILE_BATCH, chunk_size):
            yield FileBatch(offset + batch[0][0] - paddr, batch)
            batch, size = [], 0
        batch.append((addr, n))
        size += n
    if batch:
        yield FileBatch(offset + batch[0][0] - paddr, batch)


# -- worker jobs -----------------------------------------------------------------

def _encode(buf: memoryview, paddr: int, enc: Encoding, pieces: list[Piece]) -> None:
    """Append the pieces of one chunk ``buf`` at ``paddr`` to ``pieces``."""
    cctx = compressor(enc.level, enc.window_log)
    for is_data, off, length in runs(buf, paddr, enc.page_size, enc.min_zero):
        if not is_data:
            pieces.append(Piece(None, paddr + off, length, None))
            continue
        raw = buf[off:off + length]
        packed = cctx.compress(raw)
        if len(packed) < length:
            pieces.append(Piece(R.Codec.ZSTD, paddr + off, length, packed))
        else:
            pieces.append(Piece(R.Codec.RAW, paddr + off, length, bytes(raw)))


def encode_chunk(buf: memoryview, paddr: int, enc: Encoding) -> tuple[list[Piece], float]:
    """Worker job: find zero runs in one chunk and compress the data runs."""
    t0 = time.thread_time()
    pieces: list[Piece] = []
    _encode(buf, paddr, enc, pieces)
    return pieces, time.thread_time() - t0


def encode_file(fd: int, batch: FileBatch, enc: Encoding) -> tuple[list[Piece], float]:
    """Worker job: read a batch of chunks from ``fd`` into this thread's
    buffer with one ``pread``, then encode each chunk."""
    t0 = time.thread_time()
    length = sum(n for _, n in batch.chunks)
    view = _thread_buffer(length)[:length]
    read_exact(fd, view, batch.offset)
    pieces: list[Piece] = []
    pos = 0
    for paddr, n in batch.chunks:
        _encode(view[pos:pos + n], paddr, enc, pieces)
        pos += n
    return pieces, time.thread_time() - t0


def encode_file_pages(fd: int, batch: FileBatch, classes: Any,
                      enc: Encoding) -> tuple[list[Piece], float]:
    """Worker job of write_file_pages: like :func:`encode_file`, but each page's
    class decides: KEPT (or ABSENT) pages are scanned and compressed, ZERO
    pages become zero pieces, excluded pages become excluded pieces (never read)."""
    t0 = time.thread_time()
    ps = enc.page_size
    length = sum(n for _, n in batch.chunks)
    base = batch.chunks[0][0]
    cls = np.asarray(classes, np.uint8).copy()
    cls[cls == R.PageClass.ABSENT] = R.PageClass.KEPT
    starts = np.flatnonzero(np.concatenate(([True], cls[1:] != cls[:-1])))
    ends = np.append(starts[1:], cls.size)
    buf = _thread_buffer(length)
    pieces: list[Piece] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        c = int(cls[a])
        paddr, n = base + a * ps, (b - a) * ps
        if c == R.PageClass.ZERO:
            pieces.append(Piece(None, paddr, n, None))
            continue
        if c != R.PageClass.KEPT:
            pieces.append(Piece(EXCLUDED, paddr, n, R.PageClass(c)))
            continue
        view = buf[:n]
        read_exact(fd, view, batch.offset + paddr - base)
        # cut at chunk boundaries, as every other path does (FORMAT.md §6)
        for addr, step in chunks(paddr, n, enc.chunk_size):
            _encode(view[addr - paddr:addr - paddr + step], addr, enc, pieces)
    return pieces, time.thread_time() - t0


class Pipeline:
    """Run jobs on ``threads`` worker threads (none: on the caller's thread)
    and hand each job's result to ``finish`` in submission order.

    Why the two limits: jobs take from 2 ms (a zero chunk) to 200 ms (a busy
    one), so a queue that only refills when the *oldest* job is written lets
    a worker idle behind one slow chunk (measured: workers busy 82% of a
    busy 2 GiB import).  Here a new job is submitted as soon as *any* job
    ends, keeping ``threads + 1`` jobs queued or running; finished results
    wait for the slow one, at most :data:`RESULTS_PER_THREAD` ``x threads``
    jobs in all, each holding only its compressed output (memory stays flat).
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(0, threads)
        self.pool = ThreadPoolExecutor(self.threads, "tsd-zstd") if self.threads > 1 else None

    def run(self, jobs: Iterator[Job], finish: Callable[[list[Piece], float], None]) -> None:
        if self.pool is None:
            for fn, args in jobs:
                finish(*fn(*args))
            return
        pending: collections.deque[Future] = collections.deque()  # submission order
        running: set[Future] = set()  # queued or running
        cap = RESULTS_PER_THREAD * self.threads

        def drain_head() -> None:
            while pending and pending[0].done():
                finish(*pending.popleft().result())

        for fn, args in jobs:
            fut = self.pool.submit(fn, *args)
            pending.append(fut)
            running.add(fut)
            while True:
                running = {f for f in running if not f.done()}
                drain_head()
                if len(running) <= self.threads and len(pending) < cap:
                    break
                wait(running or (pending[0],), return_when=FIRST_COMPLETED)
        while pending:
            finish(*pending.popleft().result())

    def shutdown(self) -> None:
        """Wait for running jobs and end the threads (idempotent)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
