"""The panic notice: the crashed kernel's registers and VMCOREINFO, fetched fast.

A whole ``dump-guest-memory`` takes seconds to tens of seconds and is all or
nothing; the memory itself the monitor reads from the RAM files.  What QMP
alone knows is the CPU state at the panic and the VMCOREINFO note of the
``vmcoreinfo`` device: a dump *filtered* to the first page (``begin=0,
length=4096``) writes exactly those ELF notes (one ``NT_PRSTATUS`` per vCPU,
``VMCOREINFO``) in a few milliseconds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..vmcore import ElfVmcore

__all__ = ["Notice", "fetch_notice"]


@dataclass(frozen=True)
class Notice:
    """What the monitor stores before any memory."""

    vmcoreinfo: bytes | None
    notes: bytes | None


async def fetch_notice(guest, timeout: float = 30.0) -> Notice:
    """Registers and VMCOREINFO of the paused, panicked ``guest`` (a :class:`~.vm.LiveGuest`)."""
    with tempfile.TemporaryDirectory(prefix="tsk-notice-") as tmp:
        path = Path(tmp) / "notes.elf"
        await guest.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{path}",
                                                  "format": "elf", "begin": 0, "length": 4096},
                            timeout=timeout)
        with ElfVmcore(path) as elf:
            return Notice(vmcoreinfo=elf.vmcoreinfo, notes=elf.notes)
