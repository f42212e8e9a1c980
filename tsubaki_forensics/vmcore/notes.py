"""ELF note blobs, as the vmcore readers and the exporter use them.

The codec itself is :mod:`tsubaki_forensics.elfnotes` (one for the whole
project, in the bottom layer); this module is its old home and re-exports it.
"""

from __future__ import annotations

from ..elfnotes import (
    NOTE_HEADER,
    NT_PRSTATUS,
    VMCOREINFO_NAME,
    VMCOREINFO_TYPE,
    Note,
    build_note,
    find_note,
    iter_notes,
    prstatus_notes,
)

__all__ = ["Note", "iter_notes", "build_note", "find_note", "prstatus_notes", "NOTE_HEADER", "NT_PRSTATUS",
           "VMCOREINFO_NAME", "VMCOREINFO_TYPE"]
