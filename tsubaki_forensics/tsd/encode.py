"""Turn physical memory into encoded pieces: zero runs, zstd frames, file reads.

Why it looks like this:

* Memory is cut into chunks aligned to ``chunk_size`` in physical address
  space (chunks line up across the files of one dump, FORMAT.md §8); all-zero
  pages are found with ``memcmp`` (``bytes.startswith``, :func:`runs`; numpy only
  for a caller's buffer that is no bytes object) and become zero pieces with
  no compression work; the rest is compressed with zstd on worker threads
  (zstandard releases the GIL).
* Jobs are pure functions of their input: a job returns its
  :class:`~.framing.Piece` s and the CPU time it took, and
  :class:`Pipeline` hands them back in submission order, so the output is
  byte-for-byte the same whatever the scheduling.  A bounded number of jobs
  is in flight, so memory use is flat.
* File jobs read their own chunks (``pread``), so reading, zero detection
  and compression all run in parallel and no page of the source stays mapped.

The dedup variant of these stages is :mod:`.dedup`; framing is :mod:`.framing`.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from queue import SimpleQueue
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import zstandard

from ..contracts.frozen import Frozen
from ..errors import StorageError
from . import records as R
from .framing import EXCLUDED, Piece

__all__ = [
    "DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL", "DEFAULT_MIN_ZERO_PAGES", "FILE_BATCH", "RESULTS_PER_THREAD",
    "Encoding", "Run", "FileBatch", "Job", "Pipeline", "Workers", "Task",
    "compressor", "runs", "read_exact", "pread_exact", "chunks", "file_batches",
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


class Encoding(Frozen):
    """How memory is cut and compressed; fixed for the life of a writer.

    ``min_zero`` is in bytes (a zero run shorter than this stays inside its
    frame); ``window_log`` is the zstd window (see :func:`compressor`).
    A :class:`~..contracts.frozen.Frozen`, not a frozen dataclass: the same
    ``repr``/``==``/``hash`` without an ``exec`` per method at import (issue 21).
    """

    _fields = ("page_size", "chunk_size", "level", "min_zero")
    page_size: int
    chunk_size: int
    level: int
    min_zero: int

    def __init__(self, page_size: int, chunk_size: int, level: int, min_zero: int) -> None:
        object.__setattr__(self, "page_size", page_size)
        object.__setattr__(self, "chunk_size", chunk_size)
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "min_zero", min_zero)

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


def runs(buf: Any, paddr: int, page_size: int, min_zero: int, *,
         base: bytes | bytearray | None = None, start: int = 0) -> list[Run]:
    """Split ``buf`` (memory at ``paddr``) into data and zero :class:`Run` s.

    Whole pages are tested at once; a partial page at either end is a run of
    its own test.  A zero run shorter than ``min_zero`` bytes joins the data
    around it (cheaper inside the frame than as a record).

    ``base``/``start``: ``buf`` is ``base[start:start + len(buf)]`` of a
    ``bytes``/``bytearray`` (a file job's read buffer).  Such a buffer (or
    ``buf`` itself being one, or a view of a whole one) is scanned with
    ``bytes.startswith`` (:func:`_zero_stretches`), so writing a
    file or bytes needs no numpy (issue 21: importing numpy was an eighth of
    a 256 MiB import); any other buffer is scanned with numpy (loaded then).
    Both give the same runs (tests/test_tsd_pipeline.py).
    """
    n = len(buf)
    if base is None:
        base, start = searchable(buf)
    if base is None:
        return _runs_numpy(memoryview(buf).cast("B"), paddr, page_size, min_zero)
    head = min((-paddr) % page_size, n)
    body_end = head + (n - head) // page_size * page_size
    zero: list[tuple[int, int]] = []  # maximal zero stretches, offsets in buf
    if head and base.startswith(_zero_view(head), start):
        zero.append((0, head))
    for a, b in _zero_stretches(base, start + head, start + body_end, page_size):
        if zero and zero[-1][1] == a - start:
            zero[-1] = (zero[-1][0], b - start)
        else:
            zero.append((a - start, b - start))
    if body_end < n and base.startswith(_zero_view(n - body_end), start + body_end):
        if zero and zero[-1][1] == body_end:
            zero[-1] = (zero[-1][0], n)
        else:
            zero.append((body_end, n))
    out: list[list] = []  # [is_data, offset, length], made Runs at the end

    def add(is_data: bool, off: int, length: int) -> None:
        if out and out[-1][0] == is_data:
            out[-1][2] += length
        else:
            out.append([is_data, off, length])

    pos = 0
    for a, b in zero:
        if a > pos:
            add(True, pos, a - pos)
        # a short hole: cheaper inside the frame than as a record
        add(b - a < min_zero and bool(out), a, b - a)
        pos = b
    if pos < n:
        add(True, pos, n - pos)
    return [Run(*r) for r in out]


def searchable(buf: Any) -> tuple[bytes | bytearray | None, int]:
    """(``bytes``/``bytearray``, 0) holding exactly ``buf``, or (None, 0)."""
    if isinstance(buf, (bytes, bytearray)):
        return buf, 0
    if isinstance(buf, memoryview):
        obj = buf.obj
        # a contiguous view as long as its whole bytes object starts at its start
        if isinstance(obj, (bytes, bytearray)) and buf.c_contiguous and buf.nbytes == len(obj):
            return obj, 0
    return None, 0


#: Zero bytes compared against (zero-copy prefixes of one immutable block).
_ZERO_BLOCK = memoryview(bytes(256 << 10))


def _zero_view(n: int) -> memoryview | bytes:
    return _ZERO_BLOCK[:n] if n <= len(_ZERO_BLOCK) else bytes(n)


def _zero_stretches(data: bytes | bytearray, start: int, end: int,
                    page_size: int) -> Iterator[tuple[int, int]]:
    """Maximal stretches ``[a, b)`` of all-zero whole pages in ``data[start:end]``
    (``end - start`` a multiple of ``page_size``), offsets into ``data``.

    Why page by page with ``startswith`` (a ``memcmp`` against zeros that
    stops at a data page's first non-zero byte) and not ``find`` of a zero
    page: ``find``'s two-way search re-reads the data pages, which hold many
    zero bytes, and prepares its 4 KiB needle at every call; one ``memcmp``
    per page cost half as much (a 256 MiB crash's 32 chunks: 16-18 ms of CPU
    with ``find``, 9 ms; issue 21), all of it with the GIL held, which the
    other worker waits for.  A zero page's stretch is then extended by
    galloping ``startswith`` over zero prefixes of up to 256 KiB (fastest of
    16, 64 and 256 KiB).  Holds the GIL for at most one chunk's scan (< 1 ms);
    zstd releases it.
    """
    page = _ZERO_BLOCK[:page_size] if page_size <= len(_ZERO_BLOCK) else bytes(page_size)
    startswith = data.startswith
    biggest = max(page_size, len(_ZERO_BLOCK) // page_size * page_size)
    p = start
    while p < end:
        if not startswith(page, p):
            p += page_size
            continue
        q, step = p + page_size, page_size
        while q < end:  # gallop: zero stretches run to megabytes
            n = min(step, end - q)
            if startswith(_zero_view(n), q):
                q += n
                step = min(step * 2, biggest)
            elif step == page_size:
                break
            else:
                step = page_size
        yield p, q
        p = q + page_size  # the page at q is data


def _runs_numpy(buf: memoryview, paddr: int, page_size: int, min_zero: int) -> list[Run]:
    """:func:`runs` for a buffer that is no ``bytes``/``bytearray``: an
    OR-reduction over the pages viewed as uint64, at memory speed."""
    import numpy as np

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

def _encode(buf: memoryview, paddr: int, enc: Encoding, pieces: list[Piece],
            base: bytes | bytearray | None = None, start: int = 0) -> None:
    """Append the pieces of one chunk ``buf`` at ``paddr`` to ``pieces``
    (``base``/``start``: as for :func:`runs`)."""
    cctx = compressor(enc.level, enc.window_log)
    for is_data, off, length in runs(buf, paddr, enc.page_size, enc.min_zero, base=base, start=start):
        if not is_data:
            pieces.append(Piece(None, paddr + off, length, None))
            continue
        raw = buf[off:off + length]
        packed = cctx.compress(raw)
        if len(packed) < length:
            pieces.append(Piece(R.Codec.ZSTD, paddr + off, length, packed))
        else:
            pieces.append(Piece(R.Codec.RAW, paddr + off, length, bytes(raw)))


def encode_chunk(buf: memoryview, paddr: int, enc: Encoding, base: bytes | bytearray | None = None,
                 start: int = 0) -> tuple[list[Piece], float]:
    """Worker job: find zero runs in one chunk and compress the data runs
    (``base``/``start``: as for :func:`runs`)."""
    t0 = time.thread_time()
    pieces: list[Piece] = []
    _encode(buf, paddr, enc, pieces, base, start)
    return pieces, time.thread_time() - t0


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes of ``fd`` at ``offset`` as a new ``bytes``.

    :raises StorageError: the file ends first.
    """
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts, got = [data], len(data)
    while got < length:  # a short read: some filesystems; an empty one is the file's end
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise StorageError(f"source file ends at offset {offset + got}, "
                               f"{length - got} bytes short")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def encode_file(fd: int, batch: FileBatch, enc: Encoding) -> tuple[list[Piece], float]:
    """Worker job: read a batch of chunks from ``fd`` with one ``pread``, then
    encode each chunk.

    Why a new ``bytes`` a job (:func:`pread_exact`) and not a per-thread
    ``bytearray``: a ``bytearray`` is zero-filled when made, so each thread's
    first job faulted in and cleared 8 MiB holding the GIL (the other worker
    waited 4-5 ms at the start of every import); ``os.pread`` fills an
    uninitialised block with the GIL released, and with
    :func:`~.heap.reuse_chunk_sized_blocks` the next job's block is the same
    heap memory, already faulted in.
    """
    t0 = time.thread_time()
    length = sum(n for _, n in batch.chunks)
    data = pread_exact(fd, length, batch.offset)
    view = memoryview(data)
    pieces: list[Piece] = []
    pos = 0
    for paddr, n in batch.chunks:
        _encode(view[pos:pos + n], paddr, enc, pieces, data, pos)
        pos += n
    return pieces, time.thread_time() - t0


def encode_file_pages(fd: int, batch: FileBatch, classes: Any,
                      enc: Encoding) -> tuple[list[Piece], float]:
    """Worker job of write_file_pages: like :func:`encode_file`, but each page's
    class decides: KEPT (or ABSENT) pages are scanned and compressed, ZERO
    pages become zero pieces, excluded pages become excluded pieces (never read)."""
    import numpy as np  # a dump level above 1: the classifier has loaded it already

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
            _encode(view[addr - paddr:addr - paddr + step], addr, enc, pieces, buf.obj, addr - paddr)
    return pieces, time.thread_time() - t0


class Task:
    """One job's result slot: what :class:`Pipeline` and the dedup stages use of a
    ``concurrent.futures.Future`` (``done``, ``result``, ``cancel``)."""

    __slots__ = ("fn", "args", "state", "value")
    _PENDING, _RUNNING, _DONE, _FAILED, _CANCELLED = range(5)

    def __init__(self, fn: Callable[..., Any] | None = None, args: tuple = ()) -> None:
        self.fn, self.args = fn, args
        self.state = Task._PENDING
        self.value: Any = None

    @classmethod
    def finished(cls, value: Any) -> Task:
        """A task that is already done with ``value`` (nothing to run)."""
        t = cls()
        t.state, t.value = Task._DONE, value
        return t

    def done(self) -> bool:
        return self.state >= Task._DONE

    def result(self) -> Any:
        """The job's return value (re-raises its exception); call once :meth:`done`."""
        if self.state == Task._FAILED:
            raise self.value
        if self.state != Task._DONE:
            raise RuntimeError("the task has not finished")
        return self.value

    def cancel(self) -> bool:
        """Drop the job if no worker has started it (True), as ``Future.cancel``."""
        if self.state == Task._PENDING:
            self.state = Task._CANCELLED
        return self.state == Task._CANCELLED


class Workers:
    """``threads`` worker threads taking :class:`Task` s in submission order.

    Why not ``concurrent.futures.ThreadPoolExecutor``: importing it (logging
    and its friends) cost 3.5 ms of every ``import`` run, an eighth of the
    writer's start-up (issue 21); the pipeline needs only submit, "wait for
    any of these" and shutdown.  Threads start with the first submit (a
    writer that writes no memory starts none) and are daemons: they run only
    pure jobs (read, scan, compress), so nothing is half-written if the
    interpreter exits with a writer left open.
    """

    def __init__(self, threads: int, name: str = "tsd-zstd") -> None:
        self.threads = threads
        self.name = name
        self._queue: SimpleQueue = SimpleQueue()
        self._cond = threading.Condition(threading.Lock())
        self._started: list[threading.Thread] = []
        self._shut = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        if self._shut:
            raise RuntimeError("submit after shutdown")
        task = Task(fn, args)
        if not self._started:
            for i in range(self.threads):
                t = threading.Thread(target=self._work, name=f"{self.name}_{i}", daemon=True)
                t.start()
                self._started.append(t)
        self._queue.put(task)
        return task

    def _work(self) -> None:
        get, cond = self._queue.get, self._cond
        while (task := get()) is not None:
            with cond:  # cancel() takes the same lock: a task runs or is cancelled, not both
                if task.state != Task._PENDING:
                    continue
                task.state = Task._RUNNING
            try:
                value, state = task.fn(*task.args), Task._DONE
            except BaseException as e:  # handed to the caller by result()
                value, state = e, Task._FAILED
            task.fn = task.args = None
            with cond:
                task.value, task.state = value, state
                cond.notify_all()
            del task, value

    def cancel(self, tasks: Iterable[Task]) -> None:
        """:meth:`Task.cancel` each of ``tasks`` (under the workers' lock)."""
        with self._cond:
            for t in tasks:
                t.cancel()

    def wait_any(self, tasks: Iterable[Task]) -> None:
        """Return once any of ``tasks`` is done (at once if one already is)."""
        tasks = list(tasks)
        with self._cond:
            while not any(t.state >= Task._DONE for t in tasks):
                self._cond.wait()

    def shutdown(self) -> None:
        """Let queued and running tasks end, then end the threads (idempotent)."""
        if self._shut:
            return
        self._shut = True
        for _ in self._started:
            self._queue.put(None)
        for t in self._started:
            t.join()


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
        self.pool = Workers(self.threads) if self.threads > 1 else None

    def run(self, jobs: Iterator[Job], finish: Callable[[list[Piece], float], None]) -> None:
        if self.pool is None:
            for fn, args in jobs:
                finish(*fn(*args))
            return
        pool = self.pool
        pending: collections.deque[Task] = collections.deque()  # submission order
        running: list[Task] = []  # queued or running
        cap = RESULTS_PER_THREAD * self.threads

        def drain_head() -> None:
            while pending and pending[0].done():
                finish(*pending.popleft().result())

        try:
            for fn, args in jobs:
                task = pool.submit(fn, *args)
                pending.append(task)
                running.append(task)
                while True:
                    running = [t for t in running if not t.done()]
                    drain_head()
                    if len(running) <= self.threads and len(pending) < cap:
                        break
                    pool.wait_any(running or (pending[0],))
            while pending:
                pool.wait_any((pending[0],))
                finish(*pending.popleft().result())
        finally:  # on an error, drop the jobs no worker has started
            pool.cancel(pending)

    def shutdown(self) -> None:
        """Wait for running jobs and end the threads (idempotent)."""
        if self.pool is not None:
            self.pool.shutdown()
