"""ELF note blobs: walk them and build them (the raw PT_NOTE bytes of a vmcore).

Why here and not pyelftools: pyelftools walks notes only inside an ELFFile
stream; a ``.tsd`` carries the notes as a bare blob (FORMAT.md §4.3), and the
exporter must check a blob for a VMCOREINFO note and add one if needed.  The
note layout (namesz, descsz, type; name and desc padded to 4 bytes) is the
same in 32- and 64-bit ELF cores on Linux.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from ..errors import FormatError

__all__ = ["Note", "iter_notes", "build_note", "find_note", "NT_PRSTATUS", "VMCOREINFO_NAME"]

NOTE_HEADER = struct.Struct("<III")  # namesz, descsz, type
NT_PRSTATUS = 1
VMCOREINFO_NAME = "VMCOREINFO"
VMCOREINFO_TYPE = 0


@dataclass(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes
    offset: int


def _align4(n: int) -> int:
    return (n + 3) & ~3


def iter_notes(blob: bytes, byteorder: str = "<") -> Iterator[Note]:
    """Yield the notes of ``blob``; trailing zero padding is allowed."""
    hdr = struct.Struct(byteorder + "III")
    off = 0
    n = len(blob)
    while off + hdr.size <= n:
        namesz, descsz, ntype = hdr.unpack_from(blob, off)
        if namesz == 0 and descsz == 0 and ntype == 0 and not any(blob[off:]):
            return  # padding up to the segment's end
        name_at = off + hdr.size
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > n:
            raise FormatError(f"ELF note at offset {off} runs past the end of the notes ({n} bytes)")
        name = blob[name_at:name_at + namesz].rstrip(b"\0").decode("ascii", "replace")
        yield Note(name, ntype, bytes(blob[desc_at:desc_at + descsz]), off)
        off = min(end, n)


def find_note(blob: bytes, name: str, ntype: int | None = None) -> Note | None:
    for note in iter_notes(blob):
        if note.name == name and (ntype is None or note.type == ntype):
            return note
    return None


def build_note(name: str, ntype: int, desc: bytes) -> bytes:
    """One note, padded as the ELF gABI requires."""
    raw_name = name.encode("ascii") + b"\0"
    return (NOTE_HEADER.pack(len(raw_name), len(desc), ntype)
            + raw_name.ljust(_align4(len(raw_name)), b"\0")
            + desc.ljust(_align4(len(desc)), b"\0"))
