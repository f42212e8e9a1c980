"""What a reassembled dump offers to the layers above (typing Protocols only).

The drgn bridge (``drgn_bridge/program.py``), the analysis session
(``analysis/session.py``) and the ``tsubaki_program_ready`` hook take a dump
from ``tsubaki_reassemble``: a ``.tsd`` dump (:class:`tsubaki_forensics.tsd.Dump`),
an ELF vmcore or makedumpfile file (``vmcore/``), or a plugin's own object.
They never import those classes; these Protocols write down the attributes
they read, so a plugin author knows what to provide and a type checker can
check it.  They describe today's duck typing and change no behaviour: the
optional parts (``header``, ``completeness``, ``excluded``, ...) are still read
with ``getattr`` where a plugin's dump may lack them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["MemoryRange", "MemoryView", "Dump"]


@runtime_checkable
class MemoryRange(Protocol):
    """One present range of physical memory (``kind`` is ``"data"`` or ``"zero"`` when given)."""

    start: int
    length: int


@runtime_checkable
class MemoryView(Protocol):
    """Physical memory of a dump, as the bridge maps it into drgn segments.

    ``read`` raises :class:`~tsubaki_forensics.errors.NotCollectedError` (an
    ``ExcludedPageError`` for pages the dump level left out) where the dump
    holds nothing, so drgn reports a fault at that address.  Optional, read
    with ``getattr``: ``excluded`` (runs with ``paddr``/``end``) and
    ``missing_ranges()``.
    """

    def read(self, paddr: int, size: int) -> bytes: ...

    def ranges(self) -> Sequence[MemoryRange]: ...


@runtime_checkable
class Dump(Protocol):
    """A dump as the bridge, the session and the hooks use it.

    Required: ``memory``, ``vmcoreinfo`` (raw VMCOREINFO note text or
    ``None``) and ``notes`` (raw ELF notes, NT_PRSTATUS among them, or
    ``None``).  Optional, read with ``getattr``: ``header`` (``page_size``,
    ``arch``), ``problems``, ``completeness()``, ``dump_id`` and ``close()``.
    """

    memory: MemoryView
    vmcoreinfo: bytes | None
    notes: bytes | None
