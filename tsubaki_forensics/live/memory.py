"""The paused guest's memory as a memory source: its RAM files, read with ``pread``.

Why: a policy may need to look at the crashed kernel before it dumps it.
``tsubaki-triage`` saves first what a triage needs, found by running the
analyses with drgn on the memory (``monitor_model.triage.plan_triage``); in
``collect`` that memory is a vmcore, here it is the guest's RAM files while
the guest is still paused in its panic notifier.  :class:`GuestMemory` has
the shape of :class:`tsubaki_forensics.contracts.MemorySource`, so the
emulation's planner runs on it unchanged.
"""

from __future__ import annotations

import os

from ..errors import SourceError
from .layout import Layout

__all__ = ["GuestMemory"]


class GuestMemory:
    """The guest's physical memory (base RAM and DIMMs) from its host files; read-only."""

    name = "live-guest"
    arch = "x86_64"

    def __init__(self, layout: Layout, *, vmcoreinfo: bytes | None, notes: bytes | None,
                 properties: dict[str, str] | None = None) -> None:
        self.ranges = layout.ranges()
        self.vmcoreinfo = vmcoreinfo
        self.notes = notes
        self.properties = dict(properties or {})
        self._pieces = layout.pieces()
        self._fds: dict[str, int] = {}

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; :class:`SourceError` outside the guest's memory."""
        out = bytearray()
        pos, end = paddr, paddr + size
        while pos < end:
            piece, stop = self._at(pos)
            fd = self._fds.get(piece.name)
            if fd is None:
                fd = self._fds[piece.name] = os.open(piece.path, os.O_RDONLY)
            want = min(end, stop) - pos
            data = os.pread(fd, want, pos - piece.file_base)
            if len(data) != want:
                raise SourceError(f"short read of {piece.path} at {pos:#x}")
            out += data
            pos += want
        return bytes(out)

    def _at(self, paddr: int):
        for piece in self._pieces:
            for start, length in piece.ranges:
                if start <= paddr < start + length:
                    return piece, start + length
        raise SourceError(f"{paddr:#x} is not guest memory")

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
