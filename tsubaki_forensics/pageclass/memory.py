"""What the classifier needs from a dump's memory, and a drgn view of it.

Why a Protocol and not a type: the same filter must run on an ELF vmcore
being imported (:class:`~tsubaki_forensics.vmcore.ElfVmcore`), on a ``.tsd``
being read back (``Dump.memory``) and on the monitor's live source, which
share only ``read(paddr, size)`` and a list of present ranges (tuples for the
ELF reader, ``Range`` objects with a ``kind`` for ``.tsd``).
:func:`present_ranges` reads both shapes.

Why drgn: the struct pages live at kernel virtual addresses (vmemmap, with a
KASLR-randomised base on x86_64); drgn translates them through the crashed
kernel's own page tables given only VMCOREINFO and physical memory, so no
page-table walker is written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import drgn

from ..drgn_bridge.program import ARCHITECTURES, excluded_span, segment_reader

__all__ = ["PhysicalReader", "PresentRange", "present_ranges", "kernel_program"]



class PhysicalReader(Protocol):
    """Physical memory of the crashed machine.

    ``ranges()`` lists what is present: ``(start, length, ...)`` tuples or
    objects with ``.start``, ``.length`` and optionally ``.kind`` (``"zero"``
    ranges are known to read as zeros).  ``read`` raises
    :class:`~tsubaki_forensics.errors.NotCollectedError` outside them.
    """

    def ranges(self) -> list[Any]: ...

    def read(self, paddr: int, size: int) -> bytes | memoryview: ...


@dataclass(frozen=True)
class PresentRange:
    start: int
    length: int
    zero: bool = False  # known to be all zero bytes (not read to find out)

    @property
    def end(self) -> int:
        return self.start + self.length


def present_ranges(memory: PhysicalReader) -> list[PresentRange]:
    """The present ranges of ``memory``, sorted, whatever shape its ``ranges()`` has."""
    out = []
    for r in memory.ranges():
        if isinstance(r, tuple):
            out.append(PresentRange(int(r[0]), int(r[1])))
        else:
            out.append(PresentRange(int(r.start), int(r.length), getattr(r, "kind", "data") == "zero"))
    return sorted(out, key=lambda r: r.start)


def kernel_program(memory: PhysicalReader, vmcoreinfo: bytes, *, arch: str = "x86_64",
                   page_size: int = 4096) -> drgn.Program:
    """A drgn program that reads the crashed kernel's virtual addresses; no debug info.

    Physical segments come from ``memory``; ``set_linux_kernel_custom``
    makes drgn translate through ``swapper_pg_dir`` (VMCOREINFO gives it,
    and ``KERNELOFFSET``/``phys_base`` for KASLR).
    """
    flags = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
    prog = drgn.Program(drgn.Platform(ARCHITECTURES[arch], flags))
    reader = segment_reader(memory.read, page_size)
    span = excluded_span(memory)  # a .tsd of a level above 1: reads there name the class
    if span is not None:
        prog.add_memory_segment(span[0], span[1], reader, physical=True)
    for r in present_ranges(memory):
        prog.add_memory_segment(r.start, r.length, reader, physical=True)
    prog.set_linux_kernel_custom(bytes(vmcoreinfo), False)
    return prog
