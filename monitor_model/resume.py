"""What an earlier, interrupted file of a dump holds: the one reader both monitors resume from.

Why: ``collect --resume-from`` (the emulation) and ``monitor --resume`` (the
live monitor) both continue a dump in a second file of the same dump id, and
each used to read the first file its own way (the memory ranges here, the
EVENT records in ``live/resume.py``).  :class:`Resume` reads everything once:
the sound memory ranges (what counts as saved: :meth:`~.protocol.Books.resume`),
the properties the two files must agree on, and from the EVENT records
(:class:`~tsubaki_forensics.contracts.events.EventKind`) which steps were
saved, which regions were handed back and whether Linux was rebooted.

Trust: the emulation checks the file against its source first
(:mod:`.resume_check`); the live monitor asks QEMU whether the guest was
reset (``live/resume.py``, ``reconcile``) rather than trusting the file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tsubaki_forensics.contracts.events import EventKind
from tsubaki_forensics.tsd import open_dump

__all__ = ["Resume"]


@dataclass(frozen=True)
class Resume:
    """What the earlier file(s) of a dump hold and say happened."""

    name: str
    dump_id: uuid.UUID
    ranges: tuple[tuple[int, int], ...]  # physical ranges with sound records (data or zero)
    properties: tuple[tuple[str, str], ...] = ()
    saved: frozenset[str] = frozenset()  # steps whose "saved" event is in the file
    handed: frozenset[str] = frozenset()  # regions handed back ("hand-back" events), as text
    rebooted: bool = False  # a "reboot_start" event is in the file

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Resume:
        """Read ``path`` (scanned: it usually has no footer)."""
        return cls.from_files([path])

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike[str]]) -> Resume:
        """Read the earlier file(s) of one dump together."""
        with open_dump([Path(p) for p in paths]) as dump:
            events = dump.events
            return cls(
                name=", ".join(str(p) for p in paths),
                dump_id=dump.dump_id,
                ranges=tuple((r.start, r.length) for r in dump.memory.ranges()),
                properties=tuple(sorted(dump.properties.items())),
                saved=frozenset(str(e.fields.get("step")) for e in events if e.kind == EventKind.SAVED),
                handed=frozenset(str(e.fields.get("region")) for e in events
                                 if e.kind == EventKind.HAND_BACK),
                rebooted=any(e.kind == EventKind.REBOOT_START for e in events),
            )

    def property(self, key: str, default: str | None = None) -> str | None:
        """One property of the earlier file(s)."""
        return dict(self.properties).get(key, default)
