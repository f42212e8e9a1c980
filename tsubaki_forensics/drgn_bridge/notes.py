"""A notes-only ELF core for drgn (the note codec is :mod:`tsubaki_forensics.elfnotes`).

drgn gives a custom program no API for saved registers (NT_PRSTATUS), but it
reads them from an ELF core's ``PT_NOTE``.  So the bridge writes a tiny ELF
core with only the VMCOREINFO and PRSTATUS notes (no ``PT_LOAD``; memory is
added later as physical segments served by the dump), and hands it to
``Program.set_core_dump`` through a memfd (drgn seeks, so a pipe will not
do).  Layouts: the ELF-64 gABI ("ELF Header", "Program Header").  ``Note``,
``iter_notes`` and ``encode_note`` are re-exported from the one codec.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ..elfnotes import NT_PRSTATUS, VMCOREINFO_NAME, Note, encode_note, iter_notes, prstatus_notes

__all__ = [
    "NT_PRSTATUS",
    "VMCOREINFO_NAME",
    "Note",
    "iter_notes",
    "encode_note",
    "prstatus_notes",
    "notes_only_core",
    "ELF_MACHINES",
]

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


def notes_only_core(notes: Iterable[Note], machine: int) -> bytes:
    """An ELF-64 little-endian core file with one ``PT_NOTE`` and nothing else."""
    blob = b"".join(encode_note(n) for n in notes)
    phoff = _EHDR.size
    note_offset = phoff + _PHDR.size
    ehdr = _EHDR.pack(_IDENT, _ET_CORE, machine, _EV_CURRENT, 0, phoff, 0, 0, _EHDR.size, _PHDR.size, 1, 0, 0, 0)
    phdr = _PHDR.pack(_PT_NOTE, 0, note_offset, 0, 0, len(blob), 0, 4)
    return ehdr + phdr + blob
