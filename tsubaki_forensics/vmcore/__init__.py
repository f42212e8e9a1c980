"""ELF vmcores in and out: the bridge between ``.tsd`` dumps and standard tools.

:class:`ElfVmcore` reads QEMU ``dump-guest-memory`` ELF files and
/proc/vmcore copies (physical memory by ``p_paddr``, the raw PT_NOTE bytes,
VMCOREINFO); :func:`write_elf_vmcore` writes the /proc/vmcore layout that
drgn opens and makedumpfile accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .elf import ElfVmcore, Segment
    from .export import write_elf_vmcore
    from .notes import Note, build_note, iter_notes

# Loaded on first use (PEP 562): ``analyze`` of a .tsd imports .detect to sniff
# its argument, and should not pay for pyelftools and numpy that .elf pulls in.
_LAZY = {"ElfVmcore": "elf", "Segment": "elf", "write_elf_vmcore": "export",
         "Note": "notes", "iter_notes": "notes", "build_note": "notes"}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["ElfVmcore", "Segment", "write_elf_vmcore", "Note", "iter_notes", "build_note"]
