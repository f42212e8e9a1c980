"""ELF note blobs: the one codec for the raw ``PT_NOTE`` bytes a dump carries.

Why here and not pyelftools: pyelftools walks notes only inside an ELFFile
stream; a ``.tsd`` carries the notes as a bare blob (FORMAT.md §4.3), the
exporter must check a blob for a VMCOREINFO note and add one, and the drgn
bridge re-encodes the NT_PRSTATUS notes into a notes-only core.  Why in the
bottom layer: the readers (``vmcore``), the bridge (``drgn_bridge``), the
monitor (``monitor_model``) and ``inspect`` all read notes; they share this
module instead of each keeping a copy (issue 17: there were two codecs, one
with ``str`` names and one with ``bytes``, and three PRSTATUS counts).

Layout (ELF gABI, "Note Section"; the same in 32- and 64-bit cores on
Linux): ``namesz``, ``descsz``, ``type`` (three 32-bit words), then the name
(NUL-terminated) and the desc, each padded to 4 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import FormatError

__all__ = [
    "ARCH_BY_MACHINE",
    "NOTE_HEADER",
    "NT_PRSTATUS",
    "CORE_NAME",
    "VMCOREINFO_NAME",
    "VMCOREINFO_TYPE",
    "Note",
    "iter_notes",
    "find_note",
    "encode_note",
    "build_note",
    "prstatus_notes",
]

#: ELF ``e_machine`` (pyelftools' names) -> the architecture as dumps name it.
ARCH_BY_MACHINE = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i386",
                   "EM_PPC64": "ppc64", "EM_S390": "s390x", "EM_RISCV": "riscv64"}

NOTE_HEADER = struct.Struct("<III")  # namesz, descsz, type
NT_PRSTATUS = 1  # struct elf_prstatus: one per CPU, named "CORE"
CORE_NAME = "CORE"
VMCOREINFO_NAME = "VMCOREINFO"
VMCOREINFO_TYPE = 0


@dataclass(frozen=True)
class Note:
    """One ELF note; ``name`` without its NUL terminator (ASCII; other bytes read as U+FFFD).

    ``offset`` is where the note starts in the blob it was read from (0 for a
    note built in memory); it is not part of the note's identity.
    """

    name: str
    type: int
    desc: bytes
    offset: int = field(default=0, compare=False)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def iter_notes(blob: bytes | bytearray | memoryview, byteorder: str = "<") -> Iterator[Note]:
    """The notes of ``blob``, in order; trailing zero padding is allowed.

    :raises FormatError: a note runs past the end of the blob.
    """
    hdr = struct.Struct(byteorder + "III")
    view = memoryview(blob)
    off, n = 0, len(view)
    while off + hdr.size <= n:
        namesz, descsz, ntype = hdr.unpack_from(view, off)
        if namesz == 0 and descsz == 0 and ntype == 0 and not any(view[off:]):
            return  # padding up to the segment's end
        name_at = off + hdr.size
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > n:
            raise FormatError(f"ELF note at offset {off} runs past the end of the notes ({n} bytes)")
        name = bytes(view[name_at:name_at + namesz]).rstrip(b"\0").decode("ascii", "replace")
        yield Note(name, ntype, bytes(view[desc_at:desc_at + descsz]), off)
        off = min(end, n)


def find_note(blob: bytes, name: str, ntype: int | None = None) -> Note | None:
    """The first note called ``name`` (of type ``ntype`` when given), or None."""
    for note in iter_notes(blob):
        if note.name == name and (ntype is None or note.type == ntype):
            return note
    return None


def build_note(name: str, ntype: int, desc: bytes) -> bytes:
    """One note, padded as the ELF gABI requires."""
    raw_name = name.encode("ascii") + b"\0"
    return (NOTE_HEADER.pack(len(raw_name), len(desc), ntype)
            + raw_name.ljust(_align4(len(raw_name)), b"\0")
            + bytes(desc).ljust(_align4(len(desc)), b"\0"))


def encode_note(note: Note) -> bytes:
    """:func:`build_note` of a :class:`Note`."""
    return build_note(note.name, note.type, note.desc)


def prstatus_notes(blob: bytes | bytearray | memoryview | None) -> list[Note]:
    """The ``CORE`` ``NT_PRSTATUS`` notes (saved registers, one per CPU), in order."""
    if not blob:
        return []
    return [n for n in iter_notes(blob) if n.type == NT_PRSTATUS and n.name == CORE_NAME]
