"""Byte layouts of the ``.tsd`` format, one named constant per structure.

Every ``struct.Struct`` here sits beside its magic and size and names the
section of ``docs/FORMAT.md`` that defines it, so the code and the spec can
be checked against each other line by line.  Packing and unpacking live here
too; the writer and the reader never build bytes by hand.  All integers are
little-endian whatever the dumped machine's byte order (FORMAT.md §2).
"""

from __future__ import annotations

import enum
import json
import struct
import uuid
from typing import TYPE_CHECKING

import xxhash

from ..contracts.frozen import Frozen
from ..errors import FormatError, UnsupportedVersionError
from ..limits import MAX_RUNS, load_json

if TYPE_CHECKING:
    from .table import RunList

__all__ = [
    "FILE_MAGIC", "FORMAT_MAJOR", "FORMAT_MINOR", "FILE_HEADER", "FILE_HEADER_SIZE",
    "RECORD_MAGIC", "RECORD_HEADER", "RECORD_HEADER_SIZE", "RECORD_ALIGN",
    "MEMORY_PREFIX", "DEDUP_COUNT", "DEDUP_REF", "FORMAT_MINOR_DEDUP", "FORMAT_MINOR_MAP",
    "RANGE_PAYLOAD", "METADATA_PREFIX", "EVENT_PREFIX",
    "MEMORY_MAP_HEAD", "MEMORY_MAP_RANGE", "MEMORY_MAP_EXCLUDED", "DUMP_LEVEL_ZERO_AS_RECORDS",
    "EXCLUDED_HEAD", "EXCLUDED_RUN", "MAX_EXCLUDED_RUNS", "FORMAT_MINOR_EXCLUDED", "LEVEL_BIT_OF",
    "CLASS_LABELS", "PageClass", "ExcludedRange", "pack_excluded", "unpack_excluded",
    "unpack_excluded_columns", "excluded_list",
    "INDEX_PREFIX", "INDEX_ENTRY", "END_PAYLOAD", "END_RECORD_SIZE",
    "MAX_PAYLOAD", "MAX_CHUNK", "MAX_TEXT",
    "RecordType", "RecordFlags", "Codec", "MetadataKind", "Endian",
    "FileHeader", "RecordHeader", "IndexEntry", "Memory", "MemoryMap", "MEMORY_TYPES",
    "checksum", "pack_file_header", "unpack_file_header",
    "pack_record", "unpack_record_header", "record_checksum_ok",
    "encode_properties", "decode_properties",
    "pack_memory", "unpack_memory", "pack_dedup", "unpack_dedup", "pack_range", "unpack_range",
    "pack_missing", "unpack_missing", "pack_metadata", "unpack_metadata",
    "pack_memory_map", "unpack_memory_map",
    "pack_event", "unpack_event", "pack_index", "unpack_index", "unpack_index_tuples", "unpack_index_array", "pack_end", "unpack_end",
]

# --- §2 File header -------------------------------------------------------
FILE_MAGIC = b"\x89TSD\r\n\x1a\n"  # PNG-style: catches text-mode and 7-bit damage
FORMAT_MAJOR = 1
FORMAT_MINOR = 1  # 1.1 added MetadataKind.SYMBOLPACK (§9: new kinds bump the minor)
# 1.2 added Codec.ZSTD_DEDUP (§4.1).  A writer stamps 1.2 only on files that
# may hold such records (``TsdWriter(dedup=True)``); every other file stays
# 1.1, byte for byte as before.  This reader reads up to 1.2.
FORMAT_MINOR_DEDUP = 2
# 1.3 added MetadataKind.MEMORY_MAP (§4.3): the memory map and dump level the
# dump should cover, written first.  Stamped on files written with a map.
FORMAT_MINOR_MAP = 3
# 1.4 added RecordType.EXCLUDED (§4.9): pages a dump level leaves out, with
# their class.  Stamped on files whose MEMORY_MAP's dump level has a bit
# above 1 (a page-class filter); a file at level 0 or 1 stays 1.3.
FORMAT_MINOR_EXCLUDED = 4
# magic, major, minor, header_size, dump_id, arch, page_size, endian, 3 pad,
# created_ns, producer, checksum (XXH64 of the preceding 120 bytes)
FILE_HEADER = struct.Struct("<8sHHI16s16sIB3xQ56sQ")
FILE_HEADER_SIZE = FILE_HEADER.size  # 128
assert FILE_HEADER_SIZE == 128

# --- §3 Record framing ----------------------------------------------------
RECORD_MAGIC = b"TSDR"
# magic, type, flags, payload_length, reserved (0), sequence, dump_id, checksum
RECORD_HEADER = struct.Struct("<4sHHIIQ16sQ")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 48
assert RECORD_HEADER_SIZE == 48
_CHECKED_HEADER = RECORD_HEADER_SIZE - 8  # the checksum covers the first 40 bytes
RECORD_ALIGN = 1  # records are packed back to back (§3)

# --- §5 Sane maxima (checked before anything is allocated) -----------------
MAX_CHUNK = 64 << 20  # largest MEMORY length a reader accepts
MAX_PAYLOAD = MAX_CHUNK + 4096  # largest payload_length of any record
MAX_TEXT = 1 << 20  # largest MISSING reason / EVENT body

# --- §4.1 MEMORY: paddr, length, codec, 6 pad, then the stored bytes -------
MEMORY_PREFIX = struct.Struct("<QQH6x")
# --- §4.1 ZSTD_DEDUP body (since 1.2): count, then count x (page_index within
# the record, source_paddr), sorted by page_index, then one zstd frame of the
# record's other pages concatenated in order
DEDUP_COUNT = struct.Struct("<I")
DEDUP_REF = struct.Struct("<IQ")
assert DEDUP_REF.size == 12
# --- §4.2 ZERO and §4.5 MISSING: paddr, length (MISSING adds a UTF-8 reason)
RANGE_PAYLOAD = struct.Struct("<QQ")
# --- §4.3 METADATA: kind, 6 pad, then the bytes ---------------------------
METADATA_PREFIX = struct.Struct("<H6x")
# --- §4.3 MEMORY_MAP (since 1.3): dump_level, range count, excluded count, 4 pad,
# then the ranges (paddr, length), then the excluded ranges (paddr, length,
# the dump-level bit that excluded it, 4 pad)
MEMORY_MAP_HEAD = struct.Struct("<III4x")
MEMORY_MAP_RANGE = struct.Struct("<QQ")
MEMORY_MAP_EXCLUDED = struct.Struct("<QQI4x")
assert (MEMORY_MAP_HEAD.size, MEMORY_MAP_RANGE.size, MEMORY_MAP_EXCLUDED.size) == (16, 16, 24)
#: Dump level 1: zero pages are recorded as ZERO records, nothing is left out
#: (bits 2..16 are page classes a filter leaves out, makedumpfile ``-d`` style).
DUMP_LEVEL_ZERO_AS_RECORDS = 1
# --- §4.9 EXCLUDED (since 1.4): run count, 4 pad, then count x (paddr of the
# first page, pages, PageClass, 3 pad), sorted, disjoint
EXCLUDED_HEAD = struct.Struct("<I4x")
EXCLUDED_RUN = struct.Struct("<QIB3x")
assert (EXCLUDED_HEAD.size, EXCLUDED_RUN.size) == (8, 16)
#: Most runs in one EXCLUDED record (a 1 MiB body); writers start a new record past it.
MAX_EXCLUDED_RUNS = 1 << 16
# --- §4.4 EVENT: time_s (float64), then a UTF-8 JSON object -----------------
EVENT_PREFIX = struct.Struct("<d")
# --- §4.6 INDEX: entry count, 4 pad, then entries ---------------------------
INDEX_PREFIX = struct.Struct("<I4x")
# type, flags, 4 pad, record offset, paddr, length
INDEX_ENTRY = struct.Struct("<HH4xQQQ")
assert INDEX_ENTRY.size == 32
# --- §4.7 END: offset of the INDEX record, number of records before END ---
END_PAYLOAD = struct.Struct("<QQ")
END_RECORD_SIZE = RECORD_HEADER_SIZE + END_PAYLOAD.size  # 64


class RecordType(enum.IntEnum):
    """Record types (FORMAT.md §4); readers skip values they do not know."""

    MEMORY = 1
    ZERO = 2
    METADATA = 3
    EVENT = 4
    MISSING = 5
    INDEX = 6
    END = 7
    #: Since 1.4, always flagged MUST_UNDERSTAND: pages left out on purpose (§4.9).
    EXCLUDED = 8


class RecordFlags(enum.IntFlag):
    """Record flags (FORMAT.md §3)."""

    NONE = 0
    # A reader that does not know this record's type must report it rather
    # than skip it silently (like PNG's critical chunks).
    MUST_UNDERSTAND = 0x0001


class Codec(enum.IntEnum):
    """How a MEMORY record stores its bytes (FORMAT.md §4.1)."""

    RAW = 0
    ZSTD = 1
    #: Since 1.2: some whole pages are references to a page stored literally
    #: in an earlier record of the same file (§4.1); the rest is one zstd frame.
    ZSTD_DEDUP = 2


class MetadataKind(enum.IntEnum):
    """What a METADATA record carries (FORMAT.md §4.3)."""

    VMCOREINFO = 1
    NOTES = 2
    PROPERTIES = 3
    #: Since 1.1: a symbol pack (``.tsp`` bytes) for analysis without a vmlinux;
    #: a 1.0 reader ignores it like any unknown kind.
    SYMBOLPACK = 4
    #: Since 1.3: the physical memory map the dump should cover and its dump
    #: level, written first, so completeness has a denominator in any prefix.
    MEMORY_MAP = 5


class Endian(enum.IntEnum):
    """Byte order of the dumped machine (values as ELF's EI_DATA)."""

    LITTLE = 1
    BIG = 2


MEMORY_TYPES = frozenset({RecordType.MEMORY, RecordType.ZERO, RecordType.MISSING})


class PageClass(enum.IntEnum):
    """Why a page is left out (FORMAT.md §4.9); ``KEPT``: it is not; ``ABSENT``:
    not in the dump at all.  The values 1..8 are the EXCLUDED record's class byte.

    It lives here, at the bottom, because the format, the page classifier
    (:mod:`tsubaki_forensics.pageclass`, which re-exports it) and every
    reader share it.
    """

    KEPT = 0
    ZERO = 1
    CACHE = 2
    CACHE_PRIVATE = 3
    USER = 4
    FREE = 5
    HWPOISON = 6
    OFFLINE = 7
    UNKNOWN = 8  # excluded by the dump's producer, which did not record why (makedumpfile's kdump files)
    ABSENT = 255

    @property
    def key(self) -> str:
        """The JSON key of this class (``memory.pages.excluded``)."""
        return self.name.lower()

    @property
    def label(self) -> str:
        """What a person reads: "user data", "free", ... (makedumpfile's report words)."""
        return CLASS_LABELS[self]


CLASS_LABELS = {
    PageClass.KEPT: "kept", PageClass.ZERO: "zero page", PageClass.CACHE: "non-private cache",
    PageClass.CACHE_PRIVATE: "private cache", PageClass.USER: "user data",
    PageClass.FREE: "free page", PageClass.HWPOISON: "hwpoison", PageClass.OFFLINE: "offline",
    PageClass.UNKNOWN: "excluded by the producer", PageClass.ABSENT: "absent",
}
#: The dump-level bit (makedumpfile ``-d``) that excludes each class; 0: any level.
LEVEL_BIT_OF = {PageClass.ZERO: 1, PageClass.CACHE: 2, PageClass.CACHE_PRIVATE: 4,
                PageClass.USER: 8, PageClass.FREE: 16, PageClass.HWPOISON: 0, PageClass.OFFLINE: 0,
                PageClass.UNKNOWN: 0}
_EXCLUDABLE = frozenset(LEVEL_BIT_OF)


# The value classes below are :class:`~tsubaki_forensics.contracts.frozen.Frozen`
# records, not ``@dataclass(frozen=True)``: the same repr, ==, hash and
# immutability, defined in microseconds instead of ~0.5 ms each at every
# ``analyze``'s import (issue 21).  Nothing ``dataclasses.replace``-s them.

class ExcludedRange(Frozen):
    """``length`` bytes at ``paddr`` left out of the dump because of ``cls``."""

    _fields = ("paddr", "length", "cls")
    paddr: int
    length: int
    cls: PageClass

    def __init__(self, paddr: int, length: int, cls: PageClass) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "paddr", paddr)
        setattr_(self, "length", length)
        setattr_(self, "cls", cls)

    @property
    def end(self) -> int:
        return self.paddr + self.length


class FileHeader(Frozen):
    """The fixed header at offset 0 of every ``.tsd`` file (FORMAT.md §2)."""

    _fields = ("dump_id", "arch", "page_size", "endian", "producer", "created_ns", "major", "minor",
               "header_size")
    dump_id: uuid.UUID
    arch: str
    page_size: int
    endian: Endian
    producer: str
    created_ns: int
    major: int
    minor: int
    header_size: int

    def __init__(self, dump_id: uuid.UUID, arch: str, page_size: int, endian: Endian, producer: str,
                 created_ns: int, major: int = FORMAT_MAJOR, minor: int = FORMAT_MINOR,
                 header_size: int = FILE_HEADER_SIZE) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "dump_id", dump_id)
        setattr_(self, "arch", arch)
        setattr_(self, "page_size", page_size)
        setattr_(self, "endian", endian)
        setattr_(self, "producer", producer)
        setattr_(self, "created_ns", created_ns)
        setattr_(self, "major", major)
        setattr_(self, "minor", minor)
        setattr_(self, "header_size", header_size)


class RecordHeader(Frozen):
    """A record's framing (FORMAT.md §3); ``offset`` is where it starts."""

    _fields = ("type", "flags", "payload_length", "sequence", "dump_id", "checksum", "offset")
    type: int
    flags: int
    payload_length: int
    sequence: int
    dump_id: uuid.UUID
    checksum: int
    offset: int

    def __init__(self, type: int, flags: int, payload_length: int, sequence: int, dump_id: uuid.UUID,
                 checksum: int, offset: int = 0) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "type", type)
        setattr_(self, "flags", flags)
        setattr_(self, "payload_length", payload_length)
        setattr_(self, "sequence", sequence)
        setattr_(self, "dump_id", dump_id)
        setattr_(self, "checksum", checksum)
        setattr_(self, "offset", offset)

    @property
    def size(self) -> int:
        """Bytes the whole record occupies in the file."""
        return RECORD_HEADER_SIZE + self.payload_length

    @property
    def type_name(self) -> str:
        try:
            return RecordType(self.type).name
        except ValueError:
            return f"type-{self.type}"


class IndexEntry(Frozen):
    """One INDEX entry: where a record is and what it covers (FORMAT.md §4.6)."""

    _fields = ("type", "flags", "offset", "paddr", "length")
    __slots__ = _fields  # no __dict__: one per record of a big INDEX
    type: int
    flags: int
    offset: int
    paddr: int
    length: int

    def __init__(self, type: int, flags: int, offset: int, paddr: int = 0, length: int = 0) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "type", type)
        setattr_(self, "flags", flags)
        setattr_(self, "offset", offset)
        setattr_(self, "paddr", paddr)
        setattr_(self, "length", length)


class MemoryMap(Frozen):
    """What a dump should contain (FORMAT.md §4.3, MEMORY_MAP): the dumped
    machine's physical memory map, the planned dump level, and the ranges of
    the map that the level leaves out (known at the notice; none at level 1).

    ``ranges`` are sorted, disjoint and non-adjacent ``(paddr, length)``;
    ``excluded`` are sorted, disjoint ``(paddr, length, level bit)`` inside them.
    """

    _fields = ("ranges", "dump_level", "excluded")
    ranges: tuple[tuple[int, int], ...] | RunList
    dump_level: int
    excluded: tuple[tuple[int, int, int], ...] | RunList

    def __init__(self, ranges: tuple[tuple[int, int], ...] | RunList,
                 dump_level: int = DUMP_LEVEL_ZERO_AS_RECORDS,
                 excluded: tuple[tuple[int, int, int], ...] | RunList = ()) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "ranges", ranges)
        setattr_(self, "dump_level", dump_level)
        setattr_(self, "excluded", excluded)

    @classmethod
    def from_ranges(cls, ranges, dump_level: int = DUMP_LEVEL_ZERO_AS_RECORDS,
                    excluded=()) -> "MemoryMap":
        """The map of ``ranges`` in any order, overlapping or adjacent ones merged.

        ``ranges`` may be a :class:`~.table.RunList` over numpy columns (a
        kdump file's memory bitmap: millions of runs); then the map keeps
        columns too when it has more than ``SMALL_TABLE`` ranges."""
        if getattr(ranges, "columnar", False):
            from .table import SMALL_TABLE, RunList, merge_runs  # here: the writer loads no table

            s, n = merge_runs(ranges.starts, ranges.lengths)
            merged: tuple | RunList = RunList(s, n) if len(s) > SMALL_TABLE else \
                tuple(zip(s.tolist(), n.tolist()))
        else:
            out: list[list[int]] = []
            for start, length in sorted((int(a), int(n)) for a, n in ranges if n > 0):
                if out and start <= out[-1][1]:
                    out[-1][1] = max(out[-1][1], start + length)
                else:
                    out.append([start, start + length])
            merged = tuple((a, b - a) for a, b in out)
        return cls(merged, int(dump_level), tuple(sorted((int(a), int(n), int(c)) for a, n, c in excluded)))

    @property
    def total_bytes(self) -> int:
        """Bytes of physical memory in the map."""
        return _run_total(self.ranges)

    @property
    def excluded_bytes(self) -> int:
        return _run_total(self.excluded)

    @property
    def expected_bytes(self) -> int:
        """Bytes the dump should hold: the map less what the level leaves out."""
        return self.total_bytes - self.excluded_bytes


#: A memory map of more ranges than this is read as columns (table.SMALL_TABLE).
_SMALL_MAP = 1 << 14


def _run_total(runs) -> int:
    """Sum of the lengths of (start, length[, ...]) runs; no object per run for a RunList."""
    total = getattr(runs, "total", None)
    return total() if total is not None else sum(r[1] for r in runs)


class Memory(Frozen):
    """A decoded MEMORY payload (the stored bytes still encoded)."""

    _fields = ("paddr", "length", "codec", "data")
    paddr: int
    length: int
    codec: int
    data: memoryview

    def __init__(self, paddr: int, length: int, codec: int, data: memoryview) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "paddr", paddr)
        setattr_(self, "length", length)
        setattr_(self, "codec", codec)
        setattr_(self, "data", data)

    def __repr__(self) -> str:  # not the stored bytes (a dataclass ``field(repr=False)``)
        return f"{type(self).__qualname__}(paddr={self.paddr!r}, length={self.length!r}, codec={self.codec!r})"


def checksum(*parts: bytes | memoryview) -> int:
    """XXH64 (seed 0) over ``parts`` in order (FORMAT.md §3, "Why XXH64")."""
    h = xxhash.xxh64()
    for p in parts:
        h.update(p)
    return h.intdigest()


def _fixed_text(value: str, size: int, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > size:
        raise ValueError(f"{what} {value!r} is longer than {size} bytes")
    return raw


def _text_field(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def pack_file_header(h: FileHeader) -> bytes:
    body = FILE_HEADER.pack(
        FILE_MAGIC, h.major, h.minor, FILE_HEADER_SIZE, h.dump_id.bytes,
        _fixed_text(h.arch, 16, "arch"), h.page_size, int(h.endian), h.created_ns,
        _fixed_text(h.producer, 56, "producer"), 0,
    )
    return body[:-8] + struct.pack("<Q", checksum(body[:-8]))


def unpack_file_header(raw: bytes, where: str = "file") -> FileHeader:
    """Parse and check a file header; every failure names ``where``."""
    if len(raw) == 0:
        raise FormatError(f"{where}: empty file, not a .tsd dump")
    if bytes(raw[: len(FILE_MAGIC)]) != FILE_MAGIC and not FILE_MAGIC.startswith(bytes(raw)):
        raise FormatError(f"{where}: not a .tsd dump (bad magic {bytes(raw[:8])!r})")
    if len(raw) < FILE_HEADER_SIZE:
        raise FormatError(f"{where}: truncated file header ({len(raw)} of {FILE_HEADER_SIZE} bytes)")
    (magic, major, minor, header_size, dump_id, arch, page_size, endian, created_ns,
     producer, check) = FILE_HEADER.unpack_from(raw)
    if major != FORMAT_MAJOR:
        if major > FORMAT_MAJOR:
            raise UnsupportedVersionError(
                f"{where}: format version {major}.{minor} is newer than this reader "
                f"({FORMAT_MAJOR}.{FORMAT_MINOR_DEDUP}); upgrade tsubaki-forensics")
        raise UnsupportedVersionError(f"{where}: unknown format version {major}.{minor}")
    if checksum(raw[: FILE_HEADER_SIZE - 8]) != check:
        raise FormatError(f"{where}: file header checksum mismatch (offset 0)")
    if header_size < FILE_HEADER_SIZE or header_size > 1 << 20:
        raise FormatError(f"{where}: implausible header size {header_size}")
    if page_size < 512 or page_size > 1 << 24 or page_size & (page_size - 1):
        raise FormatError(f"{where}: implausible page size {page_size}")
    try:
        endian_v = Endian(endian)
    except ValueError:
        raise FormatError(f"{where}: unknown byte order {endian}") from None
    return FileHeader(
        dump_id=uuid.UUID(bytes=dump_id), arch=_text_field(arch), page_size=page_size,
        endian=endian_v, producer=_text_field(producer), created_ns=created_ns,
        major=major, minor=minor, header_size=header_size,
    )


def pack_record(rtype: int, flags: int, sequence: int, dump_id: uuid.UUID,
                *payload: bytes | memoryview) -> list[bytes | memoryview]:
    """Frame ``payload`` parts as one record; returns the parts to write."""
    length = sum(len(p) for p in payload)
    if length > MAX_PAYLOAD:
        raise ValueError(f"record payload of {length} bytes exceeds {MAX_PAYLOAD}")
    head = RECORD_HEADER.pack(RECORD_MAGIC, rtype, flags, length, 0, sequence, dump_id.bytes, 0)
    head40 = head[:_CHECKED_HEADER]
    return [head40 + struct.pack("<Q", checksum(head40, *payload)), *payload]


def unpack_record_header(raw: bytes | memoryview, offset: int) -> RecordHeader | None:
    """Parse a record header, or return None if ``raw`` does not hold one."""
    if len(raw) < RECORD_HEADER_SIZE or raw[:4] != RECORD_MAGIC:
        return None
    magic, rtype, flags, length, reserved, seq, dump_id, check = RECORD_HEADER.unpack_from(raw)
    if reserved != 0 or length > MAX_PAYLOAD:
        return None
    return RecordHeader(rtype, flags, length, seq, uuid.UUID(bytes=dump_id), check, offset)


def record_checksum_ok(head: bytes | memoryview, payload: bytes | memoryview, expected: int) -> bool:
    """True if XXH64 over the first 40 header bytes and the payload matches."""
    return checksum(head[:_CHECKED_HEADER], payload) == expected


# --- payload codecs (FORMAT.md §4) ------------------------------------------

def _need(payload: bytes | memoryview, size: int, what: str) -> None:
    if len(payload) < size:
        raise FormatError(f"{what} payload too short ({len(payload)} < {size} bytes)")


def pack_memory(paddr: int, length: int, codec: Codec) -> bytes:
    return MEMORY_PREFIX.pack(paddr, length, codec)


def unpack_memory(payload: memoryview) -> Memory:
    _need(payload, MEMORY_PREFIX.size, "MEMORY")
    paddr, length, codec = MEMORY_PREFIX.unpack_from(payload)
    if length == 0 or length > MAX_CHUNK:
        raise FormatError(f"MEMORY length {length} outside 1..{MAX_CHUNK}")
    if paddr + length > 1 << 64:
        raise FormatError(f"MEMORY range {paddr:#x}+{length:#x} beyond 2^64")
    return Memory(paddr, length, codec, payload[MEMORY_PREFIX.size:])


def pack_dedup(refs: list[tuple[int, int]]) -> bytes:
    """The ZSTD_DEDUP body before its frame: count, then (page_index, source_paddr)."""
    return DEDUP_COUNT.pack(len(refs)) + b"".join(DEDUP_REF.pack(i, s) for i, s in refs)


def unpack_dedup(data: memoryview, paddr: int, length: int,
                 page_size: int) -> tuple[list[tuple[int, int]], memoryview]:
    """Parse a ZSTD_DEDUP body (§4.1): its references and the zstd frame after them.

    Every limit is checked before anything is allocated: the record starts on
    a page, ``count`` <= the record's whole pages, the reference table fits the
    body, page indexes strictly increase and stay inside the record, and every
    source is page-aligned, below 2^64, and not inside the record itself.
    """
    if paddr % page_size:
        raise FormatError(f"ZSTD_DEDUP record at {paddr:#x} does not start on a "
                          f"{page_size}-byte page")
    _need(data, DEDUP_COUNT.size, "ZSTD_DEDUP")
    (count,) = DEDUP_COUNT.unpack_from(data)
    pages = length // page_size
    if count > pages:
        raise FormatError(f"ZSTD_DEDUP declares {count} references but the record "
                          f"holds {pages} whole pages")
    table_end = DEDUP_COUNT.size + count * DEDUP_REF.size
    _need(data, table_end, "ZSTD_DEDUP")
    refs = list(DEDUP_REF.iter_unpack(data[DEDUP_COUNT.size:table_end]))
    prev = -1
    for index, source in refs:
        if index <= prev or index >= pages:
            raise FormatError(f"ZSTD_DEDUP page index {index} out of order or beyond "
                              f"the record's {pages} pages")
        if source % page_size or source + page_size > 1 << 64:
            raise FormatError(f"ZSTD_DEDUP source {source:#x} is not a whole page")
        if paddr < source + page_size and source < paddr + length:
            raise FormatError(f"ZSTD_DEDUP source {source:#x} is inside its own record")
        prev = index
    return refs, data[table_end:]


def pack_range(paddr: int, length: int) -> bytes:
    return RANGE_PAYLOAD.pack(paddr, length)


def unpack_range(payload: memoryview, what: str = "ZERO") -> tuple[int, int]:
    _need(payload, RANGE_PAYLOAD.size, what)
    paddr, length = RANGE_PAYLOAD.unpack_from(payload)
    if length == 0 or paddr + length > 1 << 64:
        raise FormatError(f"{what} range {paddr:#x}+{length:#x} is empty or beyond 2^64")
    return paddr, length


def pack_missing(paddr: int, length: int, reason: str) -> bytes:
    return RANGE_PAYLOAD.pack(paddr, length) + reason.encode("utf-8")[:MAX_TEXT]


def unpack_missing(payload: memoryview) -> tuple[int, int, str]:
    paddr, length = unpack_range(payload, "MISSING")
    return paddr, length, bytes(payload[RANGE_PAYLOAD.size:]).decode("utf-8", "replace")


def pack_metadata(kind: MetadataKind, data: bytes) -> bytes:
    return METADATA_PREFIX.pack(kind) + data


def unpack_metadata(payload: memoryview) -> tuple[int, bytes]:
    _need(payload, METADATA_PREFIX.size, "METADATA")
    (kind,) = METADATA_PREFIX.unpack_from(payload)
    return kind, bytes(payload[METADATA_PREFIX.size:])


def pack_memory_map(m: MemoryMap) -> bytes:
    """A MEMORY_MAP METADATA body (§4.3); checks what a reader will check."""
    if not 0 <= m.dump_level < 1 << 32:
        raise ValueError(f"dump level {m.dump_level} does not fit in 32 bits")
    head = MEMORY_MAP_HEAD.pack(m.dump_level, len(m.ranges), len(m.excluded))
    if getattr(m.ranges, "columnar", False) or getattr(m.excluded, "columnar", False):
        import numpy as np  # a map of millions of ranges: packed as columns

        rng, exc = _map_columns(m.ranges, m.excluded)
        _check_map_columns(rng, exc, ValueError)
        body = np.zeros(len(rng[0]), [("a", "<u8"), ("n", "<u8")])
        body["a"], body["n"] = rng
        ex = np.zeros(len(exc[0]), [("a", "<u8"), ("n", "<u8"), ("c", "<u4"), ("pad", "<u4")])
        ex["a"], ex["n"], ex["c"] = exc
        return head + body.tobytes() + ex.tobytes()
    _check_map(m.ranges, [(a, n) for a, n, _ in m.excluded], ValueError)
    return b"".join([head, *(MEMORY_MAP_RANGE.pack(a, n) for a, n in m.ranges),
                     *(MEMORY_MAP_EXCLUDED.pack(a, n, c) for a, n, c in m.excluded)])


def _map_columns(ranges, excluded) -> tuple[tuple, tuple]:
    """(starts, lengths) and (starts, lengths, bits) uint64 columns of a map's parts."""
    import numpy as np

    def cols(runs, tagged: bool) -> tuple:
        if getattr(runs, "columnar", None) is not None:
            return (runs.starts, runs.lengths) + ((runs.tags.astype(np.uint64),) if tagged else ())
        width = 3 if tagged else 2
        arr = np.array(list(runs), np.uint64).reshape(-1, width)
        return tuple(arr[:, k] for k in range(width))

    return cols(ranges, False), cols(excluded, True)


def unpack_memory_map(data: bytes | memoryview, max_runs: int = MAX_RUNS) -> MemoryMap:
    """Parse a MEMORY_MAP body: its size must be exactly what its counts say
    (checked before any list is built), ranges sorted, disjoint, non-empty,
    below 2^64, excluded ranges inside the map.  A map of more than
    ``SMALL_TABLE`` ranges is read as columns (a :class:`~.table.RunList`):
    one METADATA record can hold 4 Mi ranges, a tuple each was 0.5 GiB.
    More than ``max_runs`` of either (:func:`~tsubaki_forensics.limits.max_runs`
    of the dump's size) is refused."""
    _need(data, MEMORY_MAP_HEAD.size, "MEMORY_MAP")
    level, count, excluded = MEMORY_MAP_HEAD.unpack_from(data)
    size = MEMORY_MAP_HEAD.size + count * MEMORY_MAP_RANGE.size + excluded * MEMORY_MAP_EXCLUDED.size
    if size != len(data):
        raise FormatError(f"MEMORY_MAP declares {count} ranges and {excluded} excluded ranges "
                          f"({size} bytes) but holds {len(data)} bytes")
    if count > max_runs or excluded > max_runs:
        raise FormatError(f"MEMORY_MAP declares {count} ranges and {excluded} excluded ranges: more "
                          f"than {max_runs}, over the memory budget (docs/RELIABILITY.md)")
    at = MEMORY_MAP_HEAD.size
    if count > _SMALL_MAP or excluded > _SMALL_MAP:
        import numpy as np

        from .table import RunList

        body = np.frombuffer(data, np.dtype([("a", "<u8"), ("n", "<u8")]), count, at)
        ex = np.frombuffer(data, np.dtype([("a", "<u8"), ("n", "<u8"), ("c", "<u4"), ("pad", "<u4")]),
                           excluded, at + count * MEMORY_MAP_RANGE.size)
        rng = (body["a"].astype(np.uint64), body["n"].astype(np.uint64))
        exc = (ex["a"].astype(np.uint64), ex["n"].astype(np.uint64), ex["c"].astype(np.uint32))
        del body, ex
        _check_map_columns(rng, exc, FormatError)
        return MemoryMap(RunList(*rng), level, RunList(*exc))
    ranges = tuple(MEMORY_MAP_RANGE.iter_unpack(data[at:at + count * MEMORY_MAP_RANGE.size]))
    at += count * MEMORY_MAP_RANGE.size
    out = tuple(MEMORY_MAP_EXCLUDED.iter_unpack(data[at:]))
    _check_map(ranges, [(a, n) for a, n, _ in out], FormatError)
    return MemoryMap(ranges, level, out)


def _check_map_columns(ranges: tuple, excluded: tuple, error: type[Exception]) -> None:
    """:func:`_check_map` over uint64 columns, vectorised (same rules, same messages)."""
    import numpy as np

    for what, (a, n) in (("range", ranges[:2]), ("excluded range", excluded[:2])):
        if not len(a):
            continue
        room = np.uint64(2**64 - 1) - a  # a + n <= 2^64  <=>  n - 1 <= room (n > 0)
        bad = (n == 0) | (n - np.uint64(1) > room)
        last = a + n - np.uint64(1)  # meaningful where not bad
        if what == "range":
            # a <= previous end (touching is out of order for a map)
            bad[1:] |= a[1:] <= last[:-1] + np.uint64(1)
            bad[1:] |= last[:-1] == np.uint64(2**64 - 1)
        else:
            bad[1:] |= a[1:] <= last[:-1]
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise error(f"MEMORY_MAP {what} {int(a[k]):#x}+{int(n[k]):#x} is empty, beyond 2^64, "
                        f"out of order or overlapping")
    ea, en = excluded[0], excluded[1]
    if len(ea):
        ra, rn = ranges[0], ranges[1]
        i = np.searchsorted(ra, ea, "right").astype(np.int64) - 1
        ok = i >= 0
        j = np.maximum(i, 0)
        if len(ra):
            rl = ra[j] + (rn[j] - np.uint64(1))
            ok &= ea + (en - np.uint64(1)) <= rl
        else:
            ok[:] = False
        if not ok.all():
            k = int(np.flatnonzero(~ok)[0])
            raise error(f"MEMORY_MAP excluded range {int(ea[k]):#x}+{int(en[k]):#x} is not inside "
                        f"one map range")


def _check_map(ranges, excluded, error: type[Exception]) -> None:
    for what, rows in (("range", ranges), ("excluded range", excluded)):
        prev = -1
        for a, n in rows:
            if n == 0 or a + n > 1 << 64 or a <= prev:
                raise error(f"MEMORY_MAP {what} {a:#x}+{n:#x} is empty, beyond 2^64, "
                            f"out of order or overlapping")
            prev = a + n - 1 if what == "excluded range" else a + n
    i = 0
    for a, n in excluded:
        while i < len(ranges) and ranges[i][0] + ranges[i][1] <= a:
            i += 1
        if i == len(ranges) or a < ranges[i][0] or a + n > ranges[i][0] + ranges[i][1]:
            raise error(f"MEMORY_MAP excluded range {a:#x}+{n:#x} is not inside one map range")


def pack_excluded(runs: list[tuple[int, int, int]], page_size: int) -> bytes:
    """An EXCLUDED body (§4.9) from ``(paddr, length, class)`` runs; checks what a reader checks."""
    if not 0 < len(runs) <= MAX_EXCLUDED_RUNS:
        raise ValueError(f"an EXCLUDED record holds 1..{MAX_EXCLUDED_RUNS} runs, not {len(runs)}")
    parts = [EXCLUDED_HEAD.pack(len(runs))]
    prev = 0
    for paddr, length, cls in runs:
        pages = length // page_size
        if paddr % page_size or length % page_size or not 0 < pages < 1 << 32 or paddr < prev \
                or paddr + length > 1 << 64 or cls not in _EXCLUDABLE:
            raise ValueError(f"excluded run {paddr:#x}+{length:#x} class {cls} is not whole pages "
                             f"in order, or not an excludable class")
        parts.append(EXCLUDED_RUN.pack(paddr, pages, int(cls)))
        prev = paddr + length
    return b"".join(parts)


def _excluded_count(payload: bytes | memoryview) -> int:
    """An EXCLUDED body's run count, checked: at most ``MAX_EXCLUDED_RUNS``, and
    the body exactly as long as it says (before any run is built)."""
    _need(payload, EXCLUDED_HEAD.size, "EXCLUDED")
    (count,) = EXCLUDED_HEAD.unpack_from(payload)
    if not 0 < count <= MAX_EXCLUDED_RUNS:
        raise FormatError(f"EXCLUDED declares {count} runs (1..{MAX_EXCLUDED_RUNS} allowed)")
    size = EXCLUDED_HEAD.size + count * EXCLUDED_RUN.size
    if size != len(payload):
        raise FormatError(f"EXCLUDED declares {count} runs ({size} bytes) but holds {len(payload)} bytes")
    return count


def unpack_excluded(payload: bytes | memoryview, page_size: int) -> list[ExcludedRange]:
    """Parse an EXCLUDED body (§4.9): the size must be exactly what the count says
    (checked before any run is built), the count at most ``MAX_EXCLUDED_RUNS``,
    runs page-aligned, sorted, disjoint, non-empty, below 2^64, of a known class."""
    _excluded_count(payload)
    out: list[ExcludedRange] = []
    prev = 0
    for paddr, pages, cls in EXCLUDED_RUN.iter_unpack(payload[EXCLUDED_HEAD.size:]):
        length = pages * page_size
        if paddr % page_size or pages == 0 or paddr < prev or paddr + length > 1 << 64:
            raise FormatError(f"EXCLUDED run {paddr:#x}+{pages} pages is not page-aligned, empty, "
                              f"out of order, overlapping or beyond 2^64")
        if cls not in _EXCLUDABLE:
            raise FormatError(f"EXCLUDED run {paddr:#x} has unknown page class {cls}")
        out.append(ExcludedRange(paddr, length, PageClass(cls)))
        prev = paddr + length
    return out


def _excluded_item(paddr: int, length: int, cls: int) -> ExcludedRange:
    return ExcludedRange(paddr, length, PageClass(cls))


def excluded_list(starts, lengths, classes) -> RunList:
    """EXCLUDED runs as columns (uint64 first bytes and lengths, class numbers):
    a read-only sequence of :class:`ExcludedRange` built as a caller reads."""
    from .table import RunList

    return RunList(starts, lengths, classes, make=_excluded_item)


def unpack_excluded_columns(payload: bytes | memoryview, page_size: int) -> tuple:
    """:func:`unpack_excluded` as (paddr, length, class) numpy columns: the same
    checks, vectorised, and no object per run (a file of millions of runs)."""
    import numpy as np

    count = _excluded_count(payload)
    rows = np.frombuffer(payload, np.dtype([("a", "<u8"), ("p", "<u4"), ("c", "u1"), ("pad", "V3")]),
                         count, EXCLUDED_HEAD.size)
    paddr = rows["a"].astype(np.uint64)
    pages = rows["p"].astype(np.uint64)
    cls = rows["c"].astype(np.uint32)
    del rows
    ps = np.uint64(page_size)
    room = (np.uint64(2**64 - 1) - paddr) // ps  # whole pages that fit below 2^64
    bad = (paddr % ps != 0) | (pages == 0) | (pages > room + np.uint64(1))
    length = pages * ps
    end = paddr + length  # wraps to 0 only for a run ending exactly at 2^64 (the last one)
    bad[1:] |= paddr[1:] < end[:-1]
    bad[1:] |= (end[:-1] == 0) & (pages[:-1] > 0)  # nothing may follow a run that ends at 2^64
    unknown = ~np.isin(cls, [int(c) for c in _EXCLUDABLE])
    if bad.any() or unknown.any():  # the first run found wrong, as the list's loop finds it
        k = int(np.flatnonzero(bad | unknown)[0])
        if bad[k]:
            raise FormatError(f"EXCLUDED run {int(paddr[k]):#x}+{int(pages[k])} pages is not page-aligned, "
                              f"empty, out of order, overlapping or beyond 2^64")
        raise FormatError(f"EXCLUDED run {int(paddr[k]):#x} has unknown page class {int(cls[k])}")
    return paddr, length, cls


def encode_properties(properties: dict[str, str]) -> bytes:
    """Properties as canonical JSON: sorted keys, UTF-8, strings only (§4.3)."""
    clean = {str(k): str(v) for k, v in properties.items()}
    return json.dumps(clean, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def decode_properties(data: bytes) -> dict[str, str]:
    # bounded by depth and parse cost, not MAX_TEXT: pre-1.1 companions carry a pack in base64
    obj = load_json(bytes(data), "PROPERTIES")
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise FormatError("PROPERTIES must be a JSON object of strings")
    return obj


def pack_event(kind: str, time_s: float, fields: dict) -> bytes:
    body = json.dumps({"kind": kind, "fields": fields}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_TEXT:
        raise ValueError(f"event {str(kind)!r} is larger than {MAX_TEXT} bytes")
    return EVENT_PREFIX.pack(float(time_s)) + body


def unpack_event(payload: memoryview) -> tuple[str, float, dict]:
    _need(payload, EVENT_PREFIX.size, "EVENT")
    (time_s,) = EVENT_PREFIX.unpack_from(payload)
    # MAX_TEXT is checked on read too: a hostile 60 MiB body is refused before parsing
    obj = load_json(bytes(payload[EVENT_PREFIX.size:]), "EVENT body", max_bytes=MAX_TEXT)
    try:
        kind, fields = obj["kind"], obj.get("fields", {})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FormatError(f"EVENT body is not the expected JSON: {e}") from None
    if not isinstance(kind, str) or not isinstance(fields, dict):
        raise FormatError("EVENT body must hold a string kind and an object of fields")
    return kind, time_s, fields


def pack_index(entries: list[IndexEntry]) -> bytes:
    parts = [INDEX_PREFIX.pack(len(entries))]
    parts.extend(INDEX_ENTRY.pack(e.type, e.flags, e.offset, e.paddr, e.length) for e in entries)
    return b"".join(parts)


def unpack_index(payload: memoryview) -> list[IndexEntry]:
    _need(payload, INDEX_PREFIX.size, "INDEX")
    (count,) = INDEX_PREFIX.unpack_from(payload)
    if INDEX_PREFIX.size + count * INDEX_ENTRY.size != len(payload):
        raise FormatError(f"INDEX declares {count} entries but holds {len(payload)} bytes")
    return [IndexEntry(*t) for t in INDEX_ENTRY.iter_unpack(payload[INDEX_PREFIX.size:])]


def unpack_index_tuples(payload: memoryview) -> list[tuple[int, int, int, int, int]]:
    """The INDEX entries as (type, flags, offset, paddr, length) tuples: for
    small files, where importing numpy would cost more than the table (issue 21)."""
    _need(payload, INDEX_PREFIX.size, "INDEX")
    (count,) = INDEX_PREFIX.unpack_from(payload)
    if INDEX_PREFIX.size + count * INDEX_ENTRY.size != len(payload):
        raise FormatError(f"INDEX declares {count} entries but holds {len(payload)} bytes")
    return list(INDEX_ENTRY.iter_unpack(payload[INDEX_PREFIX.size:]))


def unpack_index_array(payload: memoryview):
    """The INDEX entries as a structured numpy array (type, flags, offset,
    paddr, length): no object per entry, for files of very many records."""
    import numpy as np

    _need(payload, INDEX_PREFIX.size, "INDEX")
    (count,) = INDEX_PREFIX.unpack_from(payload)
    if INDEX_PREFIX.size + count * INDEX_ENTRY.size != len(payload):
        raise FormatError(f"INDEX declares {count} entries but holds {len(payload)} bytes")
    dtype = np.dtype({"names": ["type", "flags", "offset", "paddr", "length"],
                      "formats": ["<u2", "<u2", "<u8", "<u8", "<u8"],
                      "offsets": [0, 2, 8, 16, 24], "itemsize": INDEX_ENTRY.size})
    return np.frombuffer(payload, dtype=dtype, count=count, offset=INDEX_PREFIX.size)


def pack_end(index_offset: int, records: int) -> bytes:
    return END_PAYLOAD.pack(index_offset, records)


def unpack_end(payload: memoryview) -> tuple[int, int]:
    if len(payload) != END_PAYLOAD.size:
        raise FormatError(f"END payload is {len(payload)} bytes, expected {END_PAYLOAD.size}")
    return END_PAYLOAD.unpack_from(payload)
