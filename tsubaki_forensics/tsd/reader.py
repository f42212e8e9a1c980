"""Open ``.tsd`` files: via the footer's INDEX, or by scanning when it is gone.

Why two paths: a closed file has an END footer that locates an INDEX of every
record, so opening it reads three small records and nothing else (payloads
are checked lazily, when memory is read).  A file whose writer died has no
footer; every complete record before the damage is still valid (FORMAT.md §6),
so the reader walks the records from the start, verifies each checksum,
resynchronises on the record magic after damage, and lists each gap as a
:class:`Problem` with its offset.  ``verify`` uses the scan on every file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contracts.frozen import Frozen
from ..errors import ConflictError, FormatError
from ..inputs import stat_input
from ..limits import max_runs
from . import records as R
from .completeness import Completeness, measure
from .memory import DEFAULT_CACHE_BYTES, PhysicalMemory
from .problems import Problem
from .records import RecordType as T
from .table import SMALL_TABLE, MissingReasons, RecordInfo, RecordTable, TableBuilder, record_dtype

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Problem", "Event", "RecordInfo", "TsdFile", "Dump", "open_dump", "open_file", "merge_excluded"]

_RESYNC_BLOCK = 1 << 20
# Resynchronising checks every candidate ``TSDR`` header in a damaged area; a
# crafted file can put one every 48 bytes, each declaring a huge payload, and
# make the scan quadratic.  The bytes hashed for candidates are capped per
# file (a real bit flip costs a few KiB); past the cap the scan stops and
# reports where (docs/RELIABILITY.md).
RESYNC_WORK_FACTOR = 2
RESYNC_WORK_MIN = 64 << 20


class Event(Frozen):
    """A timeline event (FORMAT.md §4.4).

    A :class:`~tsubaki_forensics.contracts.frozen.Frozen` record (issue 21:
    a frozen dataclass cost ~0.5 ms at import); its hash leaves out
    ``fields`` (a dict), as the dataclass's ``field(hash=False)`` did.
    """

    _fields = ("kind", "time_s", "fields")
    kind: str
    time_s: float
    fields: dict[str, Any]

    def __init__(self, kind: str, time_s: float, fields: dict[str, Any]) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "kind", kind)
        setattr_(self, "time_s", time_s)
        setattr_(self, "fields", fields)

    def __hash__(self) -> int:
        return hash((self.kind, self.time_s))


class TsdFile:
    """One ``.tsd`` file: its header, its records, and what is wrong with it.

    :param verify: scan every record even when a footer exists (``verify``),
        instead of trusting the INDEX.
    :param reasons: keep the reasons of MISSING records (``verify``'s second
        look at the INDEX compares rows only: a million reasons are 60 MB).
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = False, reasons: bool = True) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.problems: list[Problem] = []
        # One numpy row per MEMORY/ZERO/MISSING record (issue 22): see ``records``.
        self._table = RecordTable()
        self._builder: TableBuilder | None = None
        self.metadata: list[tuple[int, int, bytes]] = []  # (sequence or offset, kind, data)
        self.events: list[Event] = []
        #: MISSING records' reasons by record offset (one blob, no object per record)
        self.missing_reasons = MissingReasons()
        self._keep_reasons = reasons
        # EXCLUDED runs (format 1.4, FORMAT.md §4.9), in file order: a list
        # while small, numpy columns past SMALL_TABLE runs (see ``excluded``).
        self._excluded: list[R.ExcludedRange] = []
        self._excluded_cols: list[tuple] = []
        self._excluded_runs = 0
        self._excluded_seq: Any = None
        self.has_footer = False
        self.index_offset: int | None = None
        self.record_count: int | None = None  # from END, when the footer is used
        self.resync_work = 0  # payload bytes hashed for resync candidates
        self._fd = _open(self.path)
        try:
            self.size = os.fstat(self._fd).st_size
            self.resync_budget = RESYNC_WORK_FACTOR * self.size + RESYNC_WORK_MIN
            self.header = R.unpack_file_header(os.pread(self._fd, R.FILE_HEADER_SIZE, 0), self.name)
            self.data_start = self.header.header_size
            self._footer_problem: Problem | None = None
            if verify or not self._load_from_footer():
                self._scan()
                if self._footer_problem is not None:
                    self.problems.insert(0, self._footer_problem)
        except BaseException:
            self.close()
            raise

    @property
    def records(self) -> RecordTable:
        """The MEMORY, ZERO and MISSING records in file order: a read-only
        sequence of :class:`RecordInfo` built on access (``.rows`` is the table)."""
        return self._table

    @records.setter
    def records(self, infos: Iterable[RecordInfo]) -> None:
        self._table = infos if isinstance(infos, RecordTable) else RecordTable.of(infos)

    # -- reading records -------------------------------------------------------
    def _pread(self, size: int, offset: int) -> bytes:
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise FormatError(f"{self.name}: short read at offset {offset}")
        return data

    def read_record(self, offset: int) -> tuple[R.RecordHeader, memoryview]:
        """Read and check the record at ``offset``; FormatError if it is bad."""
        if offset < self.data_start or offset + R.RECORD_HEADER_SIZE > self.size:
            raise FormatError(f"{self.name}: no record at offset {offset}")
        head = self._pread(R.RECORD_HEADER_SIZE, offset)
        hdr = R.unpack_record_header(head, offset)
        if hdr is None:
            raise FormatError(f"{self.name}: no valid record header at offset {offset}")
        if offset + hdr.size > self.size:
            raise FormatError(f"{self.name}: record at offset {offset} runs past the end of the file")
        payload = memoryview(self._pread(hdr.payload_length, offset + R.RECORD_HEADER_SIZE))
        if not R.record_checksum_ok(head, payload, hdr.checksum):
            raise FormatError(f"{self.name}: checksum mismatch in record at offset {offset}")
        if hdr.dump_id != self.header.dump_id:
            raise FormatError(f"{self.name}: record at offset {offset} belongs to dump {hdr.dump_id}")
        return hdr, payload

    def _problem(self, offset: int, message: str) -> None:
        self.problems.append(Problem(self.name, offset, message))

    # -- the footer path (§7.1) --------------------------------------------------
    def _load_from_footer(self) -> bool:
        end_at = self.size - R.END_RECORD_SIZE
        if end_at < self.data_start:
            return False
        try:
            end, payload = self.read_record(end_at)
            if end.type != T.END:
                return False
            index_offset, count = R.unpack_end(payload)
        except FormatError:
            return False  # no footer: a file still being written, or cut short
        # A sound END that leads nowhere sensible is reported, then scanned past.
        if not self.data_start <= index_offset < end_at:
            return self._bad_index(end_at, f"END points to an INDEX at offset {index_offset}, "
                                           f"outside the records ({self.data_start}..{end_at})")
        try:
            ihdr, ipayload = self.read_record(index_offset)
        except FormatError as e:
            return self._bad_index(index_offset, str(e).split(": ", 1)[-1])
        if ihdr.type != T.INDEX:
            return self._bad_index(index_offset, f"END points to a {ihdr.type_name} record, not an INDEX")
        # Each listed record takes at least a header: a larger count cannot
        # tile the file, so refuse it before building the entries.
        if len(ipayload) >= R.INDEX_PREFIX.size and R.INDEX_PREFIX.unpack_from(ipayload)[0] > \
                (index_offset - self.data_start) // R.RECORD_HEADER_SIZE:
            return self._bad_index(index_offset, "INDEX lists more records than fit before it")
        if len(ipayload) >= R.INDEX_PREFIX.size and R.INDEX_PREFIX.unpack_from(ipayload)[0] <= SMALL_TABLE:
            return self._small_index(index_offset, ipayload, count)
        import numpy as np  # a big INDEX only (issue 22); small ones need no numpy (issue 21)

        try:
            entries = R.unpack_index_array(ipayload)
        except FormatError as e:
            return self._bad_index(index_offset, str(e))
        # Entry i ends where entry i+1 starts (the last one at the INDEX):
        # they must start at the first record and strictly increase.
        offsets = entries["offset"]
        ends = np.empty(len(entries), np.uint64)
        ends[:-1] = offsets[1:]
        if len(entries):
            ends[-1] = index_offset
            if int(offsets[0]) != self.data_start:
                return self._bad_index(index_offset, f"INDEX entry 0 points to offset {int(offsets[0])}, "
                                                     f"expected {self.data_start} (entries must tile the file)")
            bad = np.flatnonzero(ends <= offsets)
            if len(bad):
                # loops, overlaps, gaps and offsets outside the file all end here
                i = int(bad[0])
                return self._bad_index(index_offset, f"INDEX entry {i} points to offset {int(offsets[i])}, "
                                                     f"expected {int(offsets[i])} (entries must tile the file)")
        elif self.data_start != index_offset:
            return self._bad_index(index_offset, f"INDEX entries end at offset {self.data_start}, "
                                                 f"not at the INDEX")
        types, flags = entries["type"], entries["flags"]
        decoded = np.isin(types, [T.METADATA, T.EVENT, T.MISSING, T.EXCLUDED])
        memory = np.isin(types, [t for t in R.MEMORY_TYPES if t != T.MISSING])
        strange = ~decoded & ~memory & ((flags & int(R.RecordFlags.MUST_UNDERSTAND)) != 0)
        # Rows: MEMORY, ZERO and MISSING entries, column by column, without a
        # filtered copy of the entries when every entry is one (a million
        # records: the INDEX alone is 32 MB).
        missing = types == T.MISSING
        in_rows = memory | missing
        every = bool(in_rows.all())
        rows = np.zeros(int(in_rows.sum()), record_dtype())
        for name in ("type", "flags", "offset", "paddr", "length"):
            rows[name] = entries[name] if every else entries[name][in_rows]
        sizes = np.subtract(ends, offsets, out=ends)
        rows["size"] = sizes if every else sizes[in_rows]
        rows["sequence"] = -1
        # Then the records to decode; the INDEX is let go first.
        loop = np.flatnonzero(decoded | strange)
        if every and len(loop) == len(rows):  # every entry a MISSING record: rows are entries
            at, loop_offsets = loop, rows["offset"]
        else:
            at = (np.cumsum(in_rows) - 1)[loop]  # a MISSING entry's row
            loop_offsets = offsets[loop]
        loop_missing, loop_strange, loop_types = missing[loop], strange[loop], types[loop]
        del sizes, ends, entries, offsets, types, flags, ipayload, loop, missing, in_rows, memory, decoded, strange
        # MISSING records are decoded for their reasons (one blob for the file)
        # and their own range and sequence, written into their rows: no object
        # per record (a million MISSING records, issue 22).
        dropped: list[int] = []  # rows of MISSING entries whose record does not decode as one
        self._builder = TableBuilder()  # a record of another type than the INDEX says: as scanned
        paddrs, lengths, sequences = rows["paddr"], rows["length"], rows["sequence"]
        for k, off in enumerate(_each(loop_offsets)):
            if loop_strange[k]:
                self._problem(off, f"record of unknown type {int(loop_types[k])} must be understood")
                continue
            try:
                hdr, payload = self.read_record(off)
                if hdr.type == T.MISSING and loop_missing[k]:
                    r = int(at[k])
                    paddrs[r], lengths[r] = R.unpack_range(payload, hdr.type_name)
                    sequences[r] = -1 if hdr.sequence is None else hdr.sequence
                    why = R.unpack_missing(payload)[2]
                    if self._keep_reasons:
                        self.missing_reasons.add(off, why)
                    continue
                if loop_missing[k]:
                    dropped.append(int(at[k]))
                self._decode(hdr, payload)
            except FormatError as e:
                if loop_missing[k] and (not dropped or dropped[-1] != int(at[k])):
                    dropped.append(int(at[k]))
                self._problem(off, str(e).split(": ", 1)[-1])
        del paddrs, lengths, sequences, at, loop_missing, loop_strange, loop_types, loop_offsets
        if dropped:
            rows = np.delete(rows, dropped)
        if len(self._builder):  # records decoded as another type than the INDEX says: into file order
            rows = np.concatenate([rows, self._builder.table().rows])
            rows = rows[np.argsort(rows["offset"], kind="stable")]
        self._builder = None
        self._table = RecordTable(rows)
        self.has_footer = True
        self.index_offset = index_offset
        self.record_count = count
        return True

    def _small_index(self, index_offset: int, ipayload: memoryview, count: int) -> bool:
        """:meth:`_load_from_footer` for an INDEX of at most :data:`SMALL_TABLE`
        entries: the same checks, messages and table, as tuples and without numpy."""
        try:
            entries = R.unpack_index_tuples(ipayload)  # (type, flags, offset, paddr, length)
        except FormatError as e:
            return self._bad_index(index_offset, str(e))
        if entries:
            if entries[0][2] != self.data_start:
                return self._bad_index(index_offset, f"INDEX entry 0 points to offset {entries[0][2]}, "
                                                     f"expected {self.data_start} (entries must tile the file)")
            ends = [e[2] for e in entries[1:]] + [index_offset]
            for i, (e, end) in enumerate(zip(entries, ends)):
                if end <= e[2]:  # loops, overlaps, gaps and offsets outside the file all end here
                    return self._bad_index(index_offset, f"INDEX entry {i} points to offset {e[2]}, "
                                                         f"expected {e[2]} (entries must tile the file)")
        elif self.data_start != index_offset:
            return self._bad_index(index_offset, f"INDEX entries end at offset {self.data_start}, "
                                                 f"not at the INDEX")
        else:
            ends = []
        decoded = (T.METADATA, T.EVENT, T.MISSING, T.EXCLUDED)
        memory = tuple(t for t in R.MEMORY_TYPES if t != T.MISSING)
        must = int(R.RecordFlags.MUST_UNDERSTAND)
        self._builder = TableBuilder()
        rows = []
        for (typ, flags, off, paddr, length), end in zip(entries, ends):
            if typ in memory:
                rows.append((typ, flags, off, end - off, -1, paddr, length))
            elif typ in decoded:
                try:
                    hdr, payload = self.read_record(off)
                    self._decode(hdr, payload)
                except FormatError as e:
                    self._problem(off, str(e).split(": ", 1)[-1])
            elif flags & must:
                self._problem(off, f"record of unknown type {typ} must be understood")
        if len(self._builder):  # MISSING records: into file order (a stable sort, as the numpy path)
            rows = sorted(rows + self._builder.table().tuples, key=lambda t: t[2])
        self._builder = None
        self._table = RecordTable(tuples=rows)
        self.has_footer = True
        self.index_offset = index_offset
        self.record_count = count
        return True

    def _bad_index(self, offset: int, why: str) -> bool:
        """Report an unusable footer; the caller falls back to a scan."""
        self._footer_problem = Problem(self.name, offset, f"{why}; index ignored, file scanned")
        return False

    # -- the scan path (§7.2) -----------------------------------------------------
    def _scan(self) -> None:
        self._builder = TableBuilder()
        self.metadata.clear()
        self.events.clear()
        self.missing_reasons.clear()
        self._excluded, self._excluded_cols, self._excluded_runs, self._excluded_seq = [], [], 0, None
        offset = self.data_start
        expected_seq = 0
        saw_end = False
        while offset < self.size:
            try:
                hdr, payload = self.read_record(offset)
            except FormatError as e:
                reason = str(e).split(": ", 1)[-1]
                try:
                    nxt = self._resync(offset + 1)
                except _ResyncGaveUp as gave_up:
                    self._problem(offset, f"{reason}; resynchronisation gave up at offset "
                                          f"{gave_up.offset} after hashing {self.resync_work} bytes "
                                          f"of candidate records (limit {self.resync_budget}); "
                                          f"{self.size - offset} bytes not recovered")
                    break
                if nxt is None:
                    self._problem(offset, self._tail_message(offset, reason))
                    break
                self._problem(offset, f"{reason}; skipped {nxt - offset} bytes up to the next "
                                      f"sound record")
                offset = nxt
                continue
            if saw_end:
                self._problem(offset, "record after the END footer")
            if hdr.sequence != expected_seq:
                if hdr.sequence > expected_seq:
                    gap = (f"record {expected_seq} is" if hdr.sequence == expected_seq + 1
                           else f"records {expected_seq}..{hdr.sequence - 1} are")
                    self._problem(offset, f"{gap} missing before this offset")
                else:
                    self._problem(offset, f"sequence number {hdr.sequence} repeats or goes backwards")
            expected_seq = hdr.sequence + 1
            try:
                self._decode(hdr, payload)
            except FormatError as e:
                self._problem(offset, f"{hdr.type_name} record: {str(e).split(': ', 1)[-1]}")
            if hdr.type == T.END:
                saw_end = True
            elif hdr.type == T.INDEX:
                self.index_offset = offset
            offset += hdr.size
        self._table = self._builder.table()
        self._builder = None
        if not saw_end:
            self._problem(self.size, "no END footer: the file was not closed; "
                                     f"{len(self.records)} memory records recovered by scanning")
        else:
            self.has_footer = True

    def _tail_message(self, offset: int, reason: str) -> str:
        left = self.size - offset
        if left < R.RECORD_HEADER_SIZE and R.RECORD_MAGIC.startswith(self._pread(min(left, 4), offset)):
            return f"file ends inside a record header: {left} of {R.RECORD_HEADER_SIZE} bytes present"
        hdr = R.unpack_record_header(self._pread(min(R.RECORD_HEADER_SIZE, left), offset), offset)
        if hdr is not None and offset + hdr.size > self.size:
            return (f"file ends inside a {hdr.type_name} record (sequence {hdr.sequence}): "
                    f"{self.size - offset} of {hdr.size} bytes present")
        return f"{reason}; nothing sound follows ({self.size - offset} bytes)"

    def _resync(self, start: int) -> int | None:
        """Offset of the next record whose checksum is sound, or None."""
        pos = start
        while pos < self.size:
            block = os.pread(self._fd, _RESYNC_BLOCK + 3, pos)
            if not block:
                return None
            i = block.find(R.RECORD_MAGIC)
            while i >= 0:
                at = pos + i
                # Cheap checks first: a candidate of another dump, or one that
                # runs past the end, costs no payload read.
                hdr = R.unpack_record_header(block[i:i + R.RECORD_HEADER_SIZE], at)
                if hdr is None and len(block) - i < R.RECORD_HEADER_SIZE:
                    hdr = R.unpack_record_header(self._pread(
                        min(R.RECORD_HEADER_SIZE, self.size - at), at), at)
                if (hdr is not None and hdr.dump_id == self.header.dump_id
                        and at + hdr.size <= self.size):
                    self.resync_work += hdr.payload_length
                    if self.resync_work > self.resync_budget:
                        raise _ResyncGaveUp(at)
                    try:
                        self.read_record(at)
                        return at
                    except FormatError:
                        pass
                i = block.find(R.RECORD_MAGIC, i + 1)
            pos += _RESYNC_BLOCK
        return None

    def _decode(self, hdr: R.RecordHeader, payload: memoryview) -> None:
        t = hdr.type
        if t == T.MEMORY:
            m = R.unpack_memory(payload)
            if m.codec not in (R.Codec.RAW, R.Codec.ZSTD, R.Codec.ZSTD_DEDUP):
                raise FormatError(f"unknown codec {m.codec}")
            self._builder.append(t, hdr.flags, hdr.offset, hdr.size, hdr.sequence, m.paddr, m.length)
        elif t in (T.ZERO, T.MISSING):
            paddr, length = R.unpack_range(payload, hdr.type_name)
            self._builder.append(t, hdr.flags, hdr.offset, hdr.size, hdr.sequence, paddr, length)
            if t == T.MISSING:
                self.missing_reasons.add(hdr.offset, R.unpack_missing(payload)[2])
        elif t == T.METADATA:
            kind, data = R.unpack_metadata(payload)
            if kind == R.MetadataKind.MEMORY_MAP:
                R.unpack_memory_map(data, max_runs(self.size))  # a malformed map is a damaged record, never a total
            self.metadata.append((hdr.sequence, kind, data))
        elif t == T.EVENT:
            kind, time_s, fields = R.unpack_event(payload)
            self.events.append(Event(kind, time_s, fields))
        elif t == T.EXCLUDED:
            self._add_excluded(payload)
        elif t == T.INDEX:  # checked as an array: no object per entry (a million records, issue 22)
            R.unpack_index_array(payload)
        elif t == T.END:
            R.unpack_end(payload)
        elif hdr.flags & R.RecordFlags.MUST_UNDERSTAND:
            raise FormatError(f"record of unknown type {t} must be understood by the reader")

    def _add_excluded(self, payload: memoryview) -> None:
        """One EXCLUDED record's runs: tuples while the file has few, columns
        beyond (a file of millions of runs, issue 22), refused past
        :func:`~tsubaki_forensics.limits.max_runs` of the file's size."""
        count = R.EXCLUDED_HEAD.unpack_from(payload)[0] if len(payload) >= R.EXCLUDED_HEAD.size else 0
        limit = max_runs(self.size)
        if self._excluded_runs + count > limit:
            raise FormatError(f"EXCLUDED runs past {limit} in one file are over the memory budget "
                              f"(docs/RELIABILITY.md); the record is ignored")
        if not self._excluded_cols and self._excluded_runs + count <= SMALL_TABLE:
            runs = R.unpack_excluded(payload, self.header.page_size)
            self._excluded.extend(runs)
        else:
            cols = R.unpack_excluded_columns(payload, self.header.page_size)
            if self._excluded:  # past SMALL_TABLE: the runs so far become columns too
                import numpy as np

                old = self._excluded
                self._excluded_cols.append((np.array([r.paddr for r in old], np.uint64),
                                            np.array([r.length for r in old], np.uint64),
                                            np.array([int(r.cls) for r in old], np.uint32)))
                self._excluded = []
            self._excluded_cols.append(cols)
        self._excluded_runs += count
        self._excluded_seq = None

    @property
    def excluded(self) -> Sequence[R.ExcludedRange]:
        """EXCLUDED runs (format 1.4, FORMAT.md §4.9), in file order: a list,
        or an :func:`~.records.excluded_list` over columns past SMALL_TABLE runs."""
        if not self._excluded_cols:
            return self._excluded
        if self._excluded_seq is None:
            import numpy as np

            cols = self._excluded_cols
            if len(cols) > 1:
                cols[:] = [tuple(np.concatenate(c) for c in zip(*cols))]
            self._excluded_seq = R.excluded_list(*cols[0])
        return self._excluded_seq

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TsdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def __repr__(self) -> str:
        return f"TsdFile({self.name!r}, records={len(self.records)}, footer={self.has_footer})"


def _each(indices: np.ndarray, chunk: int = 4096):
    """The ints of ``indices``, a chunk at a time (not a list of a million ints)."""
    for k in range(0, len(indices), chunk):
        yield from indices[k:k + chunk].tolist()


class _ResyncGaveUp(Exception):
    """The resync work budget of a file ran out at ``offset``."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def _open(path: Path) -> int:
    """Open for reading with a one-line error for the usual mistakes."""
    stat_input(path, "a .tsd dump")
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FormatError(f"{path}: {e.strerror or e}") from None


def open_file(path: str | os.PathLike[str], *, verify: bool = False) -> TsdFile:
    """Open one ``.tsd`` file (see :class:`TsdFile`)."""
    return TsdFile(path, verify=verify)


class Dump:
    """One dump, possibly spread over several files (FORMAT.md §8).

    ``memory`` is the merged physical-memory view; ``problems`` lists every
    damaged or missing piece found while opening.
    """

    def __init__(self, files: list[TsdFile], *, cache_bytes: int | None = None) -> None:
        if not files:
            raise FormatError("no dump files given")
        # Any order in, one order out: oldest file first, ties by name.
        files = sorted(files, key=lambda f: (f.header.created_ns, f.name))
        self.files = files
        first = files[0]
        for f in files[1:]:
            if f.header.dump_id != first.header.dump_id:
                raise FormatError(f"{f.name} belongs to dump {f.header.dump_id}, "
                                  f"{first.name} to dump {first.header.dump_id}")
            if (f.header.arch, f.header.page_size) != (first.header.arch, first.header.page_size):
                raise FormatError(f"{f.name} and {first.name} disagree on architecture or page size")
        self.header = first.header
        self.dump_id: uuid.UUID = first.header.dump_id
        self.problems: list[Problem] = [p for f in files for p in f.problems]
        self.vmcoreinfo = self._merge_blob(R.MetadataKind.VMCOREINFO, "VMCOREINFO")
        self.notes = self._merge_blob(R.MetadataKind.NOTES, "ELF notes")
        #: The SYMBOLPACK record's ``.tsp`` bytes (format 1.1), or None.
        self.symbolpack = self._merge_blob(R.MetadataKind.SYMBOLPACK, "symbol pack")
        self.properties = self._merge_properties()
        raw_map = self._merge_blob(R.MetadataKind.MEMORY_MAP, "memory map")
        #: What the dump should contain (format 1.3, FORMAT.md §4.3), or None
        #: for files written before 1.3: then the total is unknown.
        self.memory_map: R.MemoryMap | None = (
            R.unpack_memory_map(raw_map, max_runs(sum(f.size for f in files))) if raw_map is not None else None)
        seen: set[tuple] = set()
        events: list[Event] = []
        for f in files:
            for ev in f.events:
                key = (ev.kind, ev.time_s, repr(sorted(ev.fields.items())))
                if key not in seen:
                    seen.add(key)
                    events.append(ev)
        self.events = sorted(events, key=lambda e: e.time_s)
        #: Pages left out on purpose (format 1.4, FORMAT.md §4.9): merged, sorted,
        #: disjoint runs of every file; two files disagreeing on a page's class conflict.
        self.excluded: Sequence[R.ExcludedRange] = merge_excluded(files)
        self.memory = PhysicalMemory(files, self.problems,
                                     cache_bytes=cache_bytes or DEFAULT_CACHE_BYTES,
                                     excluded=self.excluded,
                                     dump_level=self.memory_map.dump_level if self.memory_map else None)
        self._completeness: Completeness | None = None

    def _merge_blob(self, kind: int, what: str) -> bytes | None:
        value: bytes | None = None
        source = ""
        for f in self.files:
            for _, k, data in f.metadata:
                if k != kind:
                    continue
                if value is not None and data != value:
                    raise ConflictError(f"{what} differs between {source} and {f.name}")
                value, source = data, f.name
        return value

    def _merge_properties(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        origin: dict[str, str] = {}
        for f in self.files:
            mine: dict[str, str] = {}
            for _, k, data in f.metadata:  # in file order: a later record updates
                if k == R.MetadataKind.PROPERTIES:
                    try:
                        mine.update(R.decode_properties(data))
                    except FormatError as e:
                        self.problems.append(Problem(f.name, 0, str(e)))
            for key, val in mine.items():
                if key in merged and merged[key] != val:
                    raise ConflictError(f"property {key!r} is {merged[key]!r} in {origin[key]} "
                                        f"but {val!r} in {f.name}")
                merged[key], origin[key] = val, f.name
        return merged

    def completeness(self) -> Completeness:
        """Present, zero and missing bytes measured against the memory map
        (FORMAT.md §7.4); see :func:`~.completeness.measure`."""
        if self._completeness is None:
            self._completeness = measure(self.memory, self.memory_map, self.properties,
                                         truncated=self.truncated, excluded=self.excluded)
        return self._completeness

    @property
    def truncated(self) -> bool:
        """Some file ends before its END footer (cut short, or still being written)."""
        return any(not f.has_footer for f in self.files)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_excluded(files: list[TsdFile]) -> Sequence[R.ExcludedRange]:
    """The EXCLUDED runs of ``files`` as one sorted, disjoint, merged list
    (columns, :func:`~.records.excluded_list`, when any file has many runs).

    The same page excluded by several files (a dump in several files) must
    carry the same class in each, or the dump is refused like any conflict (§8).
    """
    if any(not isinstance(f.excluded, list) for f in files):
        return _merge_excluded_columns(files)
    runs = sorted(((r.paddr, r.end, int(r.cls), f.name) for f in files for r in f.excluded))
    out: list[list] = []
    for a, b, cls, name in runs:
        if out and a < out[-1][1]:
            if cls != out[-1][2]:
                raise ConflictError(f"physical {a:#x}-{min(b, out[-1][1]):#x} is excluded as "
                                    f"{R.PageClass(out[-1][2]).label} in {out[-1][3]} but as "
                                    f"{R.PageClass(cls).label} in {name}")
            out[-1][1] = max(out[-1][1], b)
        elif out and a == out[-1][1] and cls == out[-1][2]:
            out[-1][1] = b
        else:
            out.append([a, b, cls, name])
    return [R.ExcludedRange(a, b - a, R.PageClass(c)) for a, b, c, _ in out]


def _merge_excluded_columns(files: list[TsdFile]) -> Sequence[R.ExcludedRange]:
    """:func:`merge_excluded` over numpy columns (millions of runs, issue 22)."""
    import numpy as np

    parts = []
    for k, f in enumerate(files):
        ex = f.excluded
        if isinstance(ex, list):
            if not ex:
                continue
            cols = (np.array([r.paddr for r in ex], np.uint64), np.array([r.length for r in ex], np.uint64),
                    np.array([int(r.cls) for r in ex], np.uint32))
        else:
            cols = (ex.starts, ex.lengths, ex.tags)
        parts.append(cols + (np.full(len(cols[0]), k, np.int32),))
    a, n, c, who = (np.concatenate(x) if len(parts) > 1 else x[0] for x in zip(*parts))
    if len(parts) > 1 or (len(a) > 1 and not (a[1:] >= a[:-1]).all()):
        order = np.lexsort((who, c, n, a))  # as sorted() orders (paddr, end, class, name)
        a, n, c, who = a[order], n[order], c[order], who[order]
        del order
    last = a + (n - np.uint64(1))
    reach = np.maximum.accumulate(last)
    del last
    overlap = a[1:] <= reach[:-1]
    conflict = overlap & (c[1:] != c[:-1])
    if conflict.any():
        k = int(np.flatnonzero(conflict)[0]) + 1
        lo, hi = int(a[k]), min(int(a[k]) + int(n[k]), int(reach[k - 1]) + 1)
        raise ConflictError(f"physical {lo:#x}-{hi:#x} is excluded as "
                            f"{R.PageClass(int(c[k - 1])).label} in {files[int(who[k - 1])].name} but as "
                            f"{R.PageClass(int(c[k])).label} in {files[int(who[k])].name}")
    touch = (reach[:-1] != np.uint64(2**64 - 1)) & (a[1:] == reach[:-1] + np.uint64(1)) & (c[1:] == c[:-1])
    new = np.ones(len(a), bool)
    new[1:] = ~(overlap | touch)
    del overlap, touch, conflict
    if new.all():
        return R.excluded_list(a, n, c)
    first = np.flatnonzero(new)
    last_at = np.empty_like(first)
    last_at[:-1] = first[1:] - 1
    last_at[-1] = len(a) - 1
    s = a[first]
    return R.excluded_list(s, reach[last_at] - s + np.uint64(1), c[first])


def open_dump(paths: str | os.PathLike[str] | list[str | os.PathLike[str]] | tuple, *,
              verify: bool = False, cache_bytes: int | None = None) -> Dump:
    """Open a dump from one path or several files of the same dump, in any order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise FormatError("no dump files given")
    files: list[TsdFile] = []
    try:
        for p in paths:
            files.append(TsdFile(p, verify=verify))
        return Dump(files, cache_bytes=cache_bytes)
    except BaseException:
        for f in files:
            f.close()
        raise
