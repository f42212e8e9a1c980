"""Pure parsing of VMCOREINFO, the kernel's ``KEY=value`` note.

The bridge needs three things from it before any memory is read: the kernel
release (``OSRELEASE``), the build id of vmlinux (``BUILD-ID``) that debug
info must match, and whether it names the symbols drgn needs.
"""

from __future__ import annotations

from ..contracts.frozen import Frozen

__all__ = ["VmcoreInfo", "parse_vmcoreinfo"]


class VmcoreInfo(Frozen):
    """The parsed note; ``fields`` keeps every ``KEY=value`` line."""

    _fields = ("fields",)
    fields: dict[str, str]

    def __init__(self, fields: dict[str, str]) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "fields", fields)

    @property
    def release(self) -> str | None:
        """``OSRELEASE``: the ``uname -r`` of the crashed kernel."""
        return self.fields.get("OSRELEASE")

    @property
    def build_id(self) -> str | None:
        """``BUILD-ID`` in lower-case hex, or ``None`` for kernels older than 5.9."""
        value = self.fields.get("BUILD-ID")
        return value.strip().lower() if value else None

    @property
    def page_size(self) -> int | None:
        value = self.fields.get("PAGESIZE")
        return int(value) if value and value.isdigit() else None


def parse_vmcoreinfo(data: bytes | str) -> VmcoreInfo:
    """Parse the note text; unknown and malformed lines are kept or skipped, never fatal."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key.strip("\0 ")] = value.rstrip("\0")
    return VmcoreInfo(fields)
