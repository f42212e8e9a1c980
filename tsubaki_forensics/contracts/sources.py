"""What ``collect`` reads guest memory from (:class:`MemorySource`, a Protocol).

The engine of ``monitor_model`` reads a source region by region; the built-in
sources (``monitor_model/sources.py``: ``vmcore``, ``raw``, ``lab``) share a
base class of the same name, and a plugin's source, registered through
``tsubaki_register_sources``, need not inherit from it: this Protocol is what
the engine relies on.  It describes today's use and changes no behaviour.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MemorySource"]


@runtime_checkable
class MemorySource(Protocol):
    """Guest physical memory plus the notes a dump needs.

    ``ranges`` are the (physical address, length) ranges present, sorted and
    disjoint; ``read`` raises :class:`~tsubaki_forensics.errors.SourceError`
    where the source cannot serve the bytes.  ``notes`` is the ELF notes blob
    (NT_PRSTATUS per CPU); ``properties`` are strings the source knows (boot
    time, vmlinux path).
    """

    name: str
    ranges: list[tuple[int, int]]
    vmcoreinfo: bytes | None
    notes: bytes | None
    properties: dict[str, str]

    def read(self, paddr: int, size: int) -> bytes | memoryview: ...

    def close(self) -> None: ...
