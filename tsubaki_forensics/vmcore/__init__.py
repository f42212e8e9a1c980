"""ELF vmcores in and out: the bridge between ``.tsd`` dumps and standard tools.

:class:`ElfVmcore` reads QEMU ``dump-guest-memory`` ELF files and
/proc/vmcore copies (physical memory by ``p_paddr``, the raw PT_NOTE bytes,
VMCOREINFO); :func:`write_elf_vmcore` writes the /proc/vmcore layout that
drgn opens and makedumpfile accepts.
"""

from __future__ import annotations

from .elf import ElfVmcore, Segment
from .export import write_elf_vmcore
from .notes import Note, build_note, iter_notes

__all__ = ["ElfVmcore", "Segment", "write_elf_vmcore", "Note", "iter_notes", "build_note"]
