"""ELF notes: read the dump's note blob, write a notes-only ELF core.

drgn gives a custom program no API for saved registers (NT_PRSTATUS), but it
reads them from an ELF core's ``PT_NOTE``.  So the bridge writes a tiny ELF
core with only the VMCOREINFO and PRSTATUS notes (no ``PT_LOAD``; memory is
added later as physical segments served by the dump), and hands it to
``Program.set_core_dump`` through a memfd (drgn seeks, so a pipe will not
do).  Layouts: the ELF-64 gABI ("ELF Header", "Program Header", "Note
Section").
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import FormatError

__all__ = [
    "NT_PRSTATUS",
    "VMCOREINFO_NAME",
    "Note",
    "iter_notes",
    "encode_note",
    "notes_only_core",
    "ELF_MACHINES",
]

NT_PRSTATUS = 1
VMCOREINFO_NAME = b"VMCOREINFO"

# Note header: namesz, descsz, type; name and desc are each padded to 4 bytes.
_NOTE_HEADER = struct.Struct("<III")
# ELF-64 file header (64 bytes) and program header (56 bytes), little endian.
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_ET_CORE = 4
_PT_NOTE = 4
_EV_CURRENT = 1
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_IDENT = b"\x7fELF" + bytes([_ELFCLASS64, _ELFDATA2LSB, _EV_CURRENT]) + bytes(9)

#: dump architecture name -> ELF ``e_machine``
ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "arm64": 183}


def _pad4(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class Note:
    """One ELF note; ``name`` without its NUL terminator."""

    name: bytes
    type: int
    desc: bytes


def iter_notes(blob: bytes) -> Iterator[Note]:
    """The notes of a ``PT_NOTE`` blob, in order.

    :raises FormatError: a note runs past the end of the blob.
    """
    offset = 0
    view = memoryview(blob)
    while offset + _NOTE_HEADER.size <= len(view):
        namesz, descsz, ntype = _NOTE_HEADER.unpack_from(view, offset)
        name_at = offset + _NOTE_HEADER.size
        desc_at = name_at + _pad4(namesz)
        end = desc_at + _pad4(descsz)
        if desc_at + descsz > len(view):
            raise FormatError(f"ELF note at offset {offset} runs past the end of the notes ({len(view)} bytes)")
        name = bytes(view[name_at : name_at + namesz]).rstrip(b"\0")
        yield Note(name, ntype, bytes(view[desc_at : desc_at + descsz]))
        offset = end


def encode_note(note: Note) -> bytes:
    """One note, padded, as it appears in a ``PT_NOTE`` segment."""
    name = note.name + b"\0"
    return (
        _NOTE_HEADER.pack(len(name), len(note.desc), note.type)
        + name.ljust(_pad4(len(name)), b"\0")
        + note.desc.ljust(_pad4(len(note.desc)), b"\0")
    )


def notes_only_core(notes: Iterable[Note], machine: int) -> bytes:
    """An ELF-64 little-endian core file with one ``PT_NOTE`` and nothing else."""
    blob = b"".join(encode_note(n) for n in notes)
    phoff = _EHDR.size
    note_offset = phoff + _PHDR.size
    ehdr = _EHDR.pack(_IDENT, _ET_CORE, machine, _EV_CURRENT, 0, phoff, 0, 0, _EHDR.size, _PHDR.size, 1, 0, 0, 0)
    phdr = _PHDR.pack(_PT_NOTE, 0, note_offset, 0, 0, len(blob), 0, 4)
    return ehdr + phdr + blob
