"""A small reader for BTF, the kernel's own compact type data.

Every kernel built with ``CONFIG_DEBUG_INFO_BTF`` keeps its BTF in memory
between the symbols ``__start_BTF`` and ``__stop_BTF``, so a full dump
describes its own types.  No maintained Python reader exists, so this is one,
written from the kernel's ``Documentation/bpf/btf.rst`` (section numbers in
the comments refer to it).  It is pure: bytes in, records out; building drgn
types from the records is :mod:`.types`.

The reader scans the type section once to find where each record starts
(records have variable length) and indexes the names; a record is decoded
in full only when asked for, because an analysis touches a few hundred of
the ~100,000 types of a distribution kernel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import lru_cache

from ..errors import FormatError

__all__ = [
    "BTF_MAGIC",
    "Btf",
    "BtfEnumerator",
    "BtfError",
    "BtfHeader",
    "BtfKind",
    "BtfMember",
    "BtfParam",
    "BtfSecinfo",
    "BtfType",
    "IntEncoding",
]

# §2.1 "btf_header": magic, version, flags, hdr_len, then four u32 offsets and
# lengths relative to the end of the header.  Newer kernels append fields
# (hdr_len says how many); they are skipped.
BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
HEADER = struct.Struct("<HBBIIIII")
# §2.2 "struct btf_type": name_off, info, size-or-type.
TYPE = struct.Struct("<III")
U32 = struct.Struct("<I")
S32 = struct.Struct("<i")
ARRAY = struct.Struct("<III")  # §2.2.3: type, index_type, nelems
TRIPLE = struct.Struct("<III")  # btf_member, btf_enum64, btf_var_secinfo
PAIR = struct.Struct("<Ii")  # btf_enum (name_off, s32 val); btf_param (name_off, type)


class BtfError(FormatError):
    """The BTF blob is malformed or uses a kind this reader does not know."""


class BtfKind(IntEnum):
    """§2.2: ``BTF_KIND_*``, bits 24-28 of ``info``."""

    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class IntEncoding(IntFlag):
    """§2.2.1: ``BTF_INT_ENCODING`` bits of an INT record."""

    NONE = 0
    SIGNED = 1
    CHAR = 2
    BOOL = 4


# Bytes that follow the common record, as (fixed part, size per vlen item).
_TRAILER = {
    BtfKind.INT: (4, 0),
    BtfKind.ARRAY: (12, 0),
    BtfKind.STRUCT: (0, 12),
    BtfKind.UNION: (0, 12),
    BtfKind.ENUM: (0, 8),
    BtfKind.FUNC_PROTO: (0, 8),
    BtfKind.VAR: (4, 0),
    BtfKind.DATASEC: (0, 12),
    BtfKind.DECL_TAG: (4, 0),
    BtfKind.ENUM64: (0, 12),
}
_KINDS = {k.value: k for k in BtfKind}


@dataclass(frozen=True)
class BtfHeader:
    """§2.1: where the type and string sections are (absolute offsets here)."""

    version: int
    flags: int
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int


@dataclass(frozen=True)
class BtfMember:
    """§2.2.4: one member of a STRUCT or UNION; offsets are in bits."""

    name: str | None
    type_id: int
    bit_offset: int
    bitfield_size: int | None  # only when the record's kind_flag is set


@dataclass(frozen=True)
class BtfEnumerator:
    """§2.2.6 / §2.2.19: one ENUM or ENUM64 value."""

    name: str
    value: int


@dataclass(frozen=True)
class BtfParam:
    """§2.2.13: one FUNC_PROTO parameter (``type_id`` 0 and no name: ``...``)."""

    name: str | None
    type_id: int


@dataclass(frozen=True)
class BtfSecinfo:
    """§2.2.15: one VAR placed in a DATASEC, at ``offset`` in the section."""

    type_id: int
    offset: int
    size: int


@dataclass(frozen=True)
class BtfType:
    """One decoded type record.

    ``size`` is set for INT, STRUCT, UNION, ENUM, ENUM64, DATASEC and FLOAT;
    ``ref`` (the record's ``type``) for PTR, TYPEDEF, qualifiers, FUNC,
    FUNC_PROTO (return type), VAR and tags.  Kind-specific data is in the
    remaining fields (empty where it does not apply).
    """

    id: int
    kind: BtfKind
    name: str | None
    kind_flag: bool
    vlen: int
    size: int | None = None
    ref: int | None = None
    encoding: IntEncoding = IntEncoding.NONE
    int_offset: int = 0
    int_bits: int = 0
    elem_type: int = 0
    index_type: int = 0
    nelems: int = 0
    members: tuple[BtfMember, ...] = ()
    enumerators: tuple[BtfEnumerator, ...] = ()
    params: tuple[BtfParam, ...] = ()
    linkage: int = 0
    secinfos: tuple[BtfSecinfo, ...] = ()
    component_idx: int = -1

    @property
    def is_signed(self) -> bool:
        """INT: the SIGNED encoding bit; ENUM/ENUM64: ``kind_flag`` (§2.2.6)."""
        if self.kind == BtfKind.INT:
            return bool(self.encoding & IntEncoding.SIGNED)
        return self.kind_flag

    @property
    def is_variadic(self) -> bool:
        """FUNC_PROTO whose last parameter is the ``...`` marker."""
        return bool(self.params) and self.params[-1].type_id == 0 and self.params[-1].name is None


_SIZED = {BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.DATASEC, BtfKind.FLOAT}


class Btf:
    """Parsed BTF: ``types`` by id (id 0 is ``void``), names indexed by kind.

    :raises BtfError: bad magic, unknown version, section outside the blob,
        truncated record or unknown kind.
    """

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.header = self._parse_header(self.data)
        self._offsets: list[int] = [0]  # id -> offset of the record in data
        self._kinds: list[int] = [0]
        self.by_name: dict[str, list[int]] = {}
        self._scan()
        self.type = lru_cache(maxsize=None)(self._decode)

    # -- header and scan -------------------------------------------------
    @staticmethod
    def _parse_header(data: bytes) -> BtfHeader:
        if len(data) < HEADER.size:
            raise BtfError(f"BTF blob of {len(data)} bytes is shorter than its {HEADER.size}-byte header")
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#06x} (expected {BTF_MAGIC:#06x})")
        if version != BTF_VERSION:
            raise BtfError(f"BTF version {version} is not supported (only {BTF_VERSION})")
        if hdr_len < HEADER.size:
            raise BtfError(f"BTF hdr_len {hdr_len} is shorter than {HEADER.size}")
        header = BtfHeader(version, flags, hdr_len, hdr_len + type_off, type_len, hdr_len + str_off, str_len)
        for what, off, length in (("type", header.type_off, type_len), ("string", header.str_off, str_len)):
            if off + length > len(data):
                raise BtfError(f"BTF {what} section [{off:#x}, {off + length:#x}) runs past the blob ({len(data):#x})")
        return header

    def _scan(self) -> None:
        data, pos = self.data, self.header.type_off
        end = pos + self.header.type_len
        offsets, kinds, by_name = self._offsets, self._kinds, self.by_name
        unpack = TYPE.unpack_from
        while pos < end:
            if pos + TYPE.size > end:
                raise BtfError(f"truncated BTF type record at {pos:#x}")
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            trailer = _TRAILER.get(kind)
            if trailer is None:
                if kind not in _KINDS:
                    raise BtfError(f"unknown BTF kind {kind} at {pos:#x} (type id {len(offsets)})")
                trailer = (0, 0)
            offsets.append(pos)
            kinds.append(kind)
            if name_off:
                by_name.setdefault(self.string(name_off), []).append(len(offsets) - 1)
            pos += TYPE.size + trailer[0] + trailer[1] * (info & 0xFFFF)
        if pos != end:
            raise BtfError(f"truncated BTF type record at the end of the type section ({pos:#x} > {end:#x})")

    def string(self, offset: int) -> str:
        """§2.3: the NUL-terminated string at ``offset`` of the string section."""
        if offset >= self.header.str_len:
            raise BtfError(f"BTF string offset {offset:#x} is outside the string section")
        start = self.header.str_off + offset
        stop = self.data.find(b"\0", start, self.header.str_off + self.header.str_len)
        if stop < 0:
            raise BtfError(f"BTF string at {offset:#x} is not NUL-terminated")
        return self.data[start:stop].decode("utf-8", "replace")

    def _name(self, offset: int) -> str | None:
        return self.string(offset) if offset else None

    # -- lookup ----------------------------------------------------------
    def __len__(self) -> int:
        """Number of type ids, counting ``void`` (id 0)."""
        return len(self._offsets)

    def kind(self, type_id: int) -> BtfKind | None:
        """Kind of ``type_id`` without decoding it (``None`` for ``void``)."""
        return _KINDS.get(self._kinds[type_id]) if type_id else None

    def ids(self, name: str, *kinds: BtfKind) -> list[int]:
        """Ids of the types called ``name``, of the given kinds (any if none)."""
        found = self.by_name.get(name, [])
        return [i for i in found if self._kinds[i] in kinds] if kinds else list(found)

    def iter_kind(self, *kinds: BtfKind):  # type: ignore[no-untyped-def]
        """Ids of every type of the given kinds, in id order."""
        wanted = {int(k) for k in kinds}
        return (i for i, k in enumerate(self._kinds) if i and k in wanted)

    def iter_enumerators(self):  # type: ignore[no-untyped-def]
        """``(type id, name, value)`` of every ENUM/ENUM64 value, without decoding whole types."""
        for type_id in self.iter_kind(BtfKind.ENUM, BtfKind.ENUM64):
            pos = self._offsets[type_id]
            _, info, _ = TYPE.unpack_from(self.data, pos)
            vlen, signed, pos = info & 0xFFFF, bool(info >> 31), pos + TYPE.size
            if self._kinds[type_id] == BtfKind.ENUM:
                for name, value in struct.iter_unpack("<Ii", self.data[pos : pos + 8 * vlen]):
                    yield type_id, self.string(name), value if signed else value & 0xFFFFFFFF
            else:
                for i in range(vlen):
                    e = self._enum64(self.data, pos + 12 * i, signed)
                    yield type_id, e.name, e.value

    # -- decoding ----------------------------------------------------------
    def _decode(self, type_id: int) -> BtfType:
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type id {type_id} does not exist (1..{len(self._offsets) - 1})")
        data, pos = self.data, self._offsets[type_id]
        name_off, info, size_or_type = TYPE.unpack_from(data, pos)
        kind = _KINDS[(info >> 24) & 0x1F]
        vlen, kflag = info & 0xFFFF, bool(info >> 31)
        pos += TYPE.size
        fields: dict = {"id": type_id, "kind": kind, "name": self._name(name_off), "kind_flag": kflag, "vlen": vlen}
        if kind in _SIZED:
            fields["size"] = size_or_type
        elif kind not in (BtfKind.ARRAY, BtfKind.FWD):
            fields["ref"] = size_or_type
        if kind == BtfKind.INT:
            (word,) = U32.unpack_from(data, pos)
            fields.update(encoding=IntEncoding((word >> 24) & 0x0F), int_offset=(word >> 16) & 0xFF,
                          int_bits=word & 0xFF)
        elif kind == BtfKind.ARRAY:
            fields["elem_type"], fields["index_type"], fields["nelems"] = ARRAY.unpack_from(data, pos)
        elif kind in (BtfKind.STRUCT, BtfKind.UNION):
            fields["members"] = tuple(self._member(data, pos + 12 * i, kflag) for i in range(vlen))
        elif kind == BtfKind.ENUM:
            fields["enumerators"] = tuple(self._enum32(data, pos + 8 * i, kflag) for i in range(vlen))
        elif kind == BtfKind.ENUM64:
            fields["enumerators"] = tuple(self._enum64(data, pos + 12 * i, kflag) for i in range(vlen))
        elif kind == BtfKind.FUNC_PROTO:
            params = []
            for i in range(vlen):
                name, ptype = PAIR.unpack_from(data, pos + 8 * i)
                params.append(BtfParam(self._name(name), ptype & 0xFFFFFFFF))
            fields["params"] = tuple(params)
        elif kind == BtfKind.FUNC:
            fields["linkage"] = vlen  # §2.2.12: vlen holds the linkage
        elif kind == BtfKind.VAR:
            (fields["linkage"],) = U32.unpack_from(data, pos)
        elif kind == BtfKind.DATASEC:
            fields["secinfos"] = tuple(BtfSecinfo(*TRIPLE.unpack_from(data, pos + 12 * i)) for i in range(vlen))
        elif kind == BtfKind.DECL_TAG:
            (fields["component_idx"],) = S32.unpack_from(data, pos)
        return BtfType(**fields)

    def _member(self, data: bytes, pos: int, kflag: bool) -> BtfMember:
        name, type_id, offset = TRIPLE.unpack_from(data, pos)
        if kflag:  # §2.2.4: bitfield size in the top 8 bits, bit offset below
            size = offset >> 24
            return BtfMember(self._name(name), type_id, offset & 0xFFFFFF, size or None)
        return BtfMember(self._name(name), type_id, offset, None)

    def _enum32(self, data: bytes, pos: int, signed: bool) -> BtfEnumerator:
        name, value = PAIR.unpack_from(data, pos)
        return BtfEnumerator(self.string(name), value if signed else value & 0xFFFFFFFF)

    def _enum64(self, data: bytes, pos: int, signed: bool) -> BtfEnumerator:
        name, lo, hi = TRIPLE.unpack_from(data, pos)
        value = hi << 32 | lo
        if signed and value >= 1 << 63:
            value -= 1 << 64
        return BtfEnumerator(self.string(name), value)
