"""Page deduplication for the writer (``dedup=True``, format 1.2, FORMAT.md §4.1 ZSTD_DEDUP).

A page that repeats a page already stored literally by an earlier record is
stored as a reference to it.  Why it is planned the way it is: the output
must not depend on scheduling, so each job goes through two stages on the
worker threads with the decisions between them made on the writer's thread,
in submission order:

1. workers read, find zero runs and hash whole pages (:func:`scan_memory`,
   :func:`scan_file`: a :class:`ScannedJob`);
2. the writer's :class:`DedupPlanner` decides which pages repeat a page
   stored by an earlier record (never one of the same record) and which
   pages become sources for later ones (a :class:`Plan`);
3. workers check each candidate byte for byte against its source and
   compress the remaining pages (:func:`pack`).

A candidate whose bytes differ (a hash collision) stays literal: that depends
on the bytes only, so the output stays deterministic.  :func:`run_dedup`
schedules the stages; framing is :mod:`.framing`, zero runs and zstd are
:mod:`.encode`.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Iterator, NamedTuple

import xxhash

from . import records as R
from .encode import Encoding, FileBatch, Job, Task, Workers, compressor, read_exact, runs
from .framing import Piece

__all__ = [
    "DEDUP_JOBS_PER_THREAD", "HashedRun", "ScannedChunk", "ScannedJob", "Ref", "PlannedRun",
    "Plan", "Call", "Source", "DedupPlanner", "hash_runs", "scan_memory", "scan_file", "pack",
    "run_dedup",
]

# Jobs in flight per worker thread (two stages per job).
DEDUP_JOBS_PER_THREAD = 2
# The table stores paddr << _CALL_BITS | id of the write call that stored the page.
_CALL_BITS = 20
_CALL_MASK = (1 << _CALL_BITS) - 1

#: ``source(offset)`` returns the page at ``offset`` of the current call's
#: source (the caller's buffer for write_memory, the file for write_file_range).
Source = Callable[[int], bytes]


class HashedRun(NamedTuple):
    """A data or zero run (:class:`~.encode.Run`) with the XXH3-128 of each whole
    page when it is data starting on a page; a ``None`` hash is an all-zero page
    (never a source, never a reference)."""

    is_data: bool
    offset: int
    length: int
    hashes: list[int | None] | None


class ScannedChunk(NamedTuple):
    """One chunk of a scanned job: its paddr, its offset in the job's view, its runs."""

    paddr: int
    pos: int
    runs: list[HashedRun]


class ScannedJob(NamedTuple):
    """Stage 1's result: the buffer to give back afterwards (None: the caller's),
    the bytes, and its chunks."""

    buffer: bytearray | None
    view: memoryview
    chunks: list[ScannedChunk]


class Ref(NamedTuple):
    """Page ``index`` of a run may repeat the page stored at ``src`` (a paddr),
    which the current call's :data:`Source` reads at ``src_offset``."""

    index: int
    src: int
    src_offset: int


class PlannedRun(NamedTuple):
    """A run to pack: ``offset`` is in the job's view; ``refs`` are candidates."""

    is_data: bool
    paddr: int
    offset: int
    length: int
    refs: list[Ref]


class Plan(NamedTuple):
    """Stage 2's input: the buffer to give back, the bytes and the runs."""

    buffer: bytearray | None
    view: memoryview
    runs: list[PlannedRun]


class Call(NamedTuple):
    """A write call whose pages the table may name: the source it reads
    (``origin``) and ``base``, its paddr minus source offset."""

    origin: int
    base: int


def hash_runs(buf: memoryview, paddr: int, page_size: int, min_zero: int) -> list[HashedRun]:
    """:func:`~.encode.runs`, plus XXH3-128 of every whole page of each data run."""
    h128 = xxhash.xxh3_128_intdigest
    out: list[HashedRun] = []
    for is_data, off, length in runs(buf, paddr, page_size, min_zero):
        hashes = None
        if is_data and (paddr + off) % page_size == 0 and length >= page_size:
            hashes = [h128(buf[p:p + page_size])
                      for p in range(off, off + length - page_size + 1, page_size)]
            if min_zero > page_size:  # short zero runs stay inside data runs
                zero = h128(bytes(page_size))
                hashes = [None if h == zero else h for h in hashes]
        out.append(HashedRun(is_data, off, length, hashes))
    return out


def scan_memory(view: memoryview, paddr: int, enc: Encoding) -> tuple[ScannedJob, float]:
    """Stage 1 of write_memory: ``view`` is one chunk of the caller's buffer."""
    t0 = time.thread_time()
    hashed = hash_runs(view, paddr, enc.page_size, enc.min_zero)
    return ScannedJob(None, view, [ScannedChunk(paddr, 0, hashed)]), time.thread_time() - t0


def scan_file(fd: int, batch: FileBatch, enc: Encoding,
              free: list[bytearray]) -> tuple[ScannedJob, float]:
    """Stage 1 of write_file_range: pread whole chunks into a buffer of the
    writer's free list (kept until stage 2 is done), then scan and hash."""
    t0 = time.thread_time()
    length = sum(n for _, n in batch.chunks)
    try:
        buf = free.pop()
    except IndexError:
        buf = bytearray(length)
    if len(buf) < length:
        buf = bytearray(length)
    view = memoryview(buf)[:length]
    try:
        read_exact(fd, view, batch.offset)
    except BaseException:
        free.append(buf)
        raise
    out = []
    pos = 0
    for paddr, n in batch.chunks:
        out.append(ScannedChunk(paddr, pos, hash_runs(view[pos:pos + n], paddr, enc.page_size,
                                                      enc.min_zero)))
        pos += n
    return ScannedJob(buf, view, out), time.thread_time() - t0


def pack(view: memoryview, plan: list[PlannedRun], enc: Encoding,
         source: Source) -> tuple[list[Piece], float]:
    """Stage 2: per run of ``plan``, check each reference's bytes against its
    source and compress the rest (ZSTD_DEDUP when some page is a reference)."""
    t0 = time.thread_time()
    page_size = enc.page_size
    cctx = compressor(enc.level, enc.window_log)
    pieces: list[Piece] = []
    for is_data, paddr, off, length, refs in plan:
        if not is_data:
            pieces.append(Piece(None, paddr, length, None))
            continue
        raw = view[off:off + length]
        # bytes == bytes is a memcmp; bytes == memoryview would compare item by item
        good = [(i, src) for i, src, src_off in refs
                if source(src_off) == bytes(raw[i * page_size:(i + 1) * page_size])]
        if not good:
            packed = cctx.compress(raw)
            if len(packed) < length:
                pieces.append(Piece(R.Codec.ZSTD, paddr, length, packed))
            else:
                pieces.append(Piece(R.Codec.RAW, paddr, length, bytes(raw)))
            continue
        parts = []
        at = 0
        for i, _ in good:
            parts.append(raw[at:i * page_size])
            at = (i + 1) * page_size
        parts.append(raw[at:])
        literal = b"".join(parts)
        pieces.append(Piece(R.Codec.ZSTD_DEDUP, paddr, length,
                            R.pack_dedup(good) + cctx.compress(literal)))
    return pieces, time.thread_time() - t0


class DedupPlanner:
    """The writer-thread state of deduplication: which literal page is where,
    and whether the current call can re-read it.

    Costs a table of every distinct non-zero page written (a dict of
    int -> int, ~140 bytes a page measured), plus one buffer per job in flight
    (kept on :attr:`free` for reuse).
    """

    def __init__(self) -> None:
        # XXH3-128 of a literal page -> paddr << _CALL_BITS | id of the write
        # call that wrote it (-> which source can re-read it, and where)
        self._table: dict[int, int] = {}
        self._origins: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> origin
        self._n_origins = 0  # origins named so far (files and write_memory calls)
        self._origin = 0  # of the current call
        self._call_id = 0  # of the current call
        self._calls: dict[int, Call] = {}
        self._high = 0  # end of the highest range written (rewrites reset the table)
        #: Read buffers of finished file jobs, for the next ones.
        self.free: list[bytearray] = []
        #: Pages stored as references so far.
        self.pages = 0

    def new_origin(self, key: tuple[int, int] | None, base: int) -> None:
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
        self._calls[self._call_id] = Call(self._origin, base)

    def rewrite_check(self, paddr: int, length: int) -> None:
        """A range written again may change which record a reader takes a
        source page from: forget every source before such a rewrite."""
        if paddr < self._high:
            self._table.clear()
        self._high = max(self._high, paddr + length)

    def count(self, pieces: list[Piece]) -> None:
        """Count the references in a job's pieces (:attr:`pages`)."""
        for codec, _, _, payload in pieces:
            if codec == R.Codec.ZSTD_DEDUP:
                self.pages += R.DEDUP_COUNT.unpack_from(payload)[0]

    def decide(self, scanned: ScannedJob, page_size: int) -> Plan:
        """In submission order: which whole pages repeat a page stored
        literally by an EARLIER record (never one of the same record), and
        which pages become sources for later records.

        A reference carries the source offset that the current call's
        :data:`Source` takes: the source's paddr minus its call's base (file
        offset for write_file_range, buffer offset for write_memory).
        """
        table = self._table
        get = table.get
        calls = self._calls
        origin = self._origin
        cid = self._call_id
        ps = page_size
        plan: list[PlannedRun] = []
        for paddr, pos, hashed in scanned.chunks:
            for is_data, off, length, hashes in hashed:
                refs: list[Ref] = []
                if hashes:
                    start = paddr + off
                    vals = list(map(get, hashes))
                    new = [i for i, v in enumerate(vals) if v is None and hashes[i] is not None]
                    for i, v in [(i, v) for i, v in enumerate(vals) if v is not None]:
                        o, b = calls[v & _CALL_MASK]
                        if o == origin:
                            src = v >> _CALL_BITS
                            refs.append(Ref(i, src, src - b))
                        else:  # a source this call cannot re-read: replace it
                            new.append(i)
                    new.sort()
                    if new:
                        # only now, so that no page refers to a page of its own
                        # record; reversed, so that the first of equal pages wins
                        new.reverse()
                        table.update(zip([hashes[i] for i in new],
                                         [(start + i * ps) << _CALL_BITS | cid for i in new]))
                plan.append(PlannedRun(is_data, paddr + off, pos + off, length, refs))
        return Plan(scanned.buffer, scanned.view, plan)


def run_dedup(planner: DedupPlanner, pool: Workers | None, threads: int,
              jobs: Iterator[Job], source: Source, enc: Encoding,
              finish: Callable[[list[Piece], float], None]) -> None:
    """Stage 1 on the workers, decisions here in order, stage 2 on the
    workers, results handed to ``finish`` in order; at most ``2 x threads + 1``
    jobs (and buffers) in flight."""
    def done(pieces: list[Piece], cpu: float, buf: bytearray | None) -> None:
        planner.count(pieces)
        finish(pieces, cpu)
        if buf is not None:
            planner.free.append(buf)

    if pool is None:
        for fn, a in jobs:
            scanned, cpu = fn(*a)
            plan = planner.decide(scanned, enc.page_size)
            pieces, cpu2 = pack(plan.view, plan.runs, enc, source)
            done(pieces, cpu + cpu2, plan.buffer)
        return
    s1: collections.deque[Task] = collections.deque()
    s2: collections.deque[tuple[Task, bytearray | None, float]] = collections.deque()

    def step() -> None:
        """Decide the oldest scanned job if it is ready (that feeds the
        workers), else write the oldest packed one if ready, else wait."""
        while True:
            if s1 and s1[0].done():
                scanned, cpu = s1.popleft().result()
                plan = planner.decide(scanned, enc.page_size)
                if any(r.is_data for r in plan.runs):
                    fut = pool.submit(pack, plan.view, plan.runs, enc, source)
                else:  # all zero (most of an idle guest): no second trip
                    fut = Task.finished(([Piece(None, r.paddr, r.length, None) for r in plan.runs], 0.0))
                s2.append((fut, plan.buffer, cpu))
                return
            if s2 and s2[0][0].done():
                fut, buf, cpu = s2.popleft()
                pieces, cpu2 = fut.result()
                done(pieces, cpu + cpu2, buf)
                return
            pool.wait_any([f for f in (s1[0] if s1 else None, s2[0][0] if s2 else None) if f])

    # Two stages per job: twice the jobs in flight keep both stages fed
    # (each holds one buffer of at most max(FILE_BATCH, chunk_size)).
    limit = DEDUP_JOBS_PER_THREAD * threads
    try:
        for fn, a in jobs:
            s1.append(pool.submit(fn, *a))
            while len(s1) + len(s2) > limit:
                step()
        while s1 or s2:
            step()
    finally:  # on an error, let running jobs end before their buffers go
        pool.cancel([*s1, *(f for f, _, _ in s2)])
