"""Frame records into a ``.tsd`` file and keep its index: the writer's bottom floor.

Why a module of its own: every byte of the file passes through one place
that assigns sequence numbers, checks the file is still sound, counts what
was stored and remembers each record for the INDEX written at close.  The
encoding pipeline (:mod:`.encode`) and the dedup planner (:mod:`.dedup`)
only hand it :class:`Piece` s in address order; how those were computed
does not matter here, so the framing rules of FORMAT.md §3 and §6 are read
in one short file:

* The file is append-only and every record is self-checking, so whatever
  prefix reaches the disk before a crash is a valid dump (FORMAT.md §6).
* Adjacent zero pieces merge into one ZERO record and adjacent excluded
  runs into few EXCLUDED records, written before the next record of
  another kind, at :meth:`RecordFile.flush` and at :meth:`RecordFile.close`.
* After a failed write nothing more is appended (no INDEX or END after a
  half-written record): readers recover the records before it by scanning.
* Every :data:`WRITEBACK_STEP` bytes the kernel is asked to start writing
  the file back (``sync_file_range``, asynchronous), so the disk works while
  the next chunks compress and the ``fsync`` at :meth:`RecordFile.close`
  waits only for the tail: it took 19-23 ms of a 0.3 s 256 MiB import before,
  2-5 ms after (issue 21, docs/BENCHMARKS.md "Import start-up and fixed costs").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

from ..contracts.frozen import Record
from ..errors import StorageError
from . import records as R

__all__ = ["RecordFile", "Piece", "EXCLUDED", "WriteStats", "WRITEBACK_STEP", "start_writeback"]

#: A :class:`Piece`'s codec for pages left out by the dump level; its payload is the PageClass.
EXCLUDED = "excluded"


class Piece(NamedTuple):
    """One encoded stretch of physical memory, ready to frame.

    ``codec`` is the MEMORY record's :class:`~.records.Codec`, ``None`` for
    zero pages (no payload) or :data:`EXCLUDED` (payload: the
    :class:`~.records.PageClass` that the dump level leaves out).
    """

    codec: R.Codec | str | None
    paddr: int
    length: int
    payload: bytes | memoryview | R.PageClass | None


class WriteStats(Record):
    """What a write cost and produced.

    ``stored_bytes`` counts whole records (headers included) as written to
    the file; ``compress_seconds`` is CPU time the worker threads spent
    scanning and compressing (it can exceed ``wall_seconds`` with 2 threads).
    ``excluded_bytes``: of ``raw_bytes``, left out by the dump level
    (write_file_pages).  A :class:`~..contracts.frozen.Record` (``repr``, ``==``
    as the dataclass it was), not a dataclass: no ``exec`` at import (issue 21).
    """

    _fields = ("raw_bytes", "zero_bytes", "excluded_bytes", "stored_bytes", "records",
               "compress_seconds", "wall_seconds")

    def __init__(self, raw_bytes: int = 0, zero_bytes: int = 0, excluded_bytes: int = 0,
                 stored_bytes: int = 0, records: int = 0, compress_seconds: float = 0.0,
                 wall_seconds: float = 0.0) -> None:
        self.raw_bytes = raw_bytes
        self.zero_bytes = zero_bytes
        self.excluded_bytes = excluded_bytes
        self.stored_bytes = stored_bytes
        self.records = records
        self.compress_seconds = compress_seconds
        self.wall_seconds = wall_seconds

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


#: Bytes written between two requests to start the file's writeback.
WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of dirty pages, do not wait
_writeback: list[Callable[[int, int, int, int], int] | None] = []  # libc's sync_file_range, once looked up


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing ``[offset, offset+length)`` of ``fd`` back
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``: asynchronous, no durability
    promise; the final ``fsync`` keeps that).  False where it cannot (no such
    call in the C library, not a regular file): the caller stops asking.
    """
    if not _writeback:
        try:
            import ctypes

            f = ctypes.CDLL(None, use_errno=True).sync_file_range
            f.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            f.restype = ctypes.c_int
        except (ImportError, OSError, AttributeError):
            f = None
        _writeback.append(f)
    f = _writeback[0]
    return f is not None and f(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


class RecordFile:
    """An open ``.tsd`` file: header, framed records, INDEX and END at close.

    :param path: file to create (an existing file is replaced).
    :param header: the file header, written first.
    :param memory_map: the packed MEMORY_MAP body, written as the first
        record when given (FORMAT.md §4.3).
    """

    def __init__(self, path: Path, header: R.FileHeader, memory_map: bytes | None = None) -> None:
        self.path = path
        self.header = header
        self.dump_id = header.dump_id
        self.page_size = header.page_size
        self.stats = WriteStats()
        self.bytes_written = 0
        self.excluded_bytes = 0
        #: Excluded runs not yet in a record: [paddr, length, class] (merged while adjacent).
        self._pending_excluded: list[list[int]] = []
        self._pending_zero: tuple[int, int] | None = None
        # INDEX entries packed as written (32 bytes each, not an object per
        # record: a hostile input may make millions of records, issue 22)
        self._entries = bytearray()
        self._entry_count = 0
        self._sequence = 0
        #: The stats of the write call in progress (its records count there too).
        self._call_stats: WriteStats | None = None
        self._closed = False
        self._broken = False
        #: Where the next writeback request starts (None: the file cannot take them).
        self._written_back: int | None = 0
        try:
            self._f = open(self.path, "wb", buffering=1 << 20)
        except OSError as e:
            raise StorageError(f"cannot create {self.path}: {e.strerror or e}") from None
        self._write([R.pack_file_header(header)])
        if memory_map is not None:
            self._record(R.RecordType.METADATA, R.pack_metadata(R.MetadataKind.MEMORY_MAP, memory_map))

    # -- framing ---------------------------------------------------------------
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
        if self._written_back is not None and self.bytes_written - self._written_back >= WRITEBACK_STEP:
            self._kick_writeback()

    def _kick_writeback(self) -> None:
        """Hand the buffered tail to the OS and start writing back what it holds."""
        try:
            self._f.flush()
        except OSError as e:
            self._broken = True
            raise StorageError(f"writing {self.path}: {e.strerror or e}") from None
        start, end = self._written_back, self.bytes_written
        assert start is not None
        self._written_back = end if start_writeback(self._f.fileno(), start, end - start) else None

    def _record(self, rtype: R.RecordType, *payload: bytes | memoryview, paddr: int = 0,
                length: int = 0, flags: int = 0) -> None:
        if self._closed:
            raise ValueError(f"{self.path} is closed")
        offset = self.bytes_written
        self._write(R.pack_record(rtype, flags, self._sequence, self.dump_id, *payload))
        self._sequence += 1
        if rtype not in (R.RecordType.INDEX, R.RecordType.END):
            self._entries += R.INDEX_ENTRY.pack(rtype, flags, offset, paddr, length)
            self._entry_count += 1
        size = self.bytes_written - offset
        self.stats.stored_bytes += size
        self.stats.records += 1
        if self._call_stats is not None:
            self._call_stats.stored_bytes += size
            self._call_stats.records += 1

    def _emit_zero(self) -> None:
        """Write the pending ZERO record (and pending EXCLUDED runs before it)."""
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

    def _emit_piece(self, piece: Piece) -> None:
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

    def _finish(self, pieces: list[Piece], cpu: float) -> None:
        """Frame one job's pieces (in address order) and count them in the call's stats."""
        stats = self._call_stats
        assert stats is not None
        stats.compress_seconds += cpu
        for piece in pieces:
            if piece[0] == EXCLUDED:
                self.write_excluded(piece[1], piece[2], piece[3])  # type: ignore[arg-type]
                stats.excluded_bytes += piece[2]
                self.stats.excluded_bytes += piece[2]
                continue
            if piece[0] is None:
                stats.zero_bytes += piece[2]
                self.stats.zero_bytes += piece[2]
            self._emit_piece(piece)

    # -- records that need no encoding -----------------------------------------
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

    def write_zero(self, paddr: int, length: int) -> None:
        """Record ``length`` bytes at ``paddr`` known to be zero (no data needed)."""
        if length > 0:
            self._emit_piece(Piece(None, paddr, length, None))
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

    # -- durability and the footer ---------------------------------------------
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
            self._record(R.RecordType.INDEX, R.INDEX_PREFIX.pack(self._entry_count), self._entries)
            self._record(R.RecordType.END, R.pack_end(index_offset, self._sequence))
            self.flush(durable=True)
        finally:
            self._closed = True
            self._release()
            try:
                self._f.close()
            except OSError:  # the buffered tail could not be written
                self._broken = True

    def _release(self) -> None:
        """Give back what a subclass holds besides the file (its worker threads)."""

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
