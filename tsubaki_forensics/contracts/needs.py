"""What an analysis may need besides memory (:class:`Need`).

It sits in the bottom layer because both sides of the check use it: the drgn
bridge says which needs a program satisfies, and the analysis specs say which
ones they need.  ``tsubaki_forensics.analysis.spec`` re-exports it, so plugins
importing it from ``tsubaki_forensics.analysis`` keep working.
"""

from __future__ import annotations

import enum

__all__ = ["Need"]


class Need(str, enum.Enum):
    """What an analysis needs from the program besides memory.

    The runner checks needs before calling the analysis so that a dump
    without registers, say, reports "skipped: needs registers" instead of a
    drgn traceback.
    """

    DEBUG_INFO = "debug_info"  # DWARF types of the kernel (vmlinux)
    REGISTERS = "registers"  # saved CPU registers (NT_PRSTATUS notes)
