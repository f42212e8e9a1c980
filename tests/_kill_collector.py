"""Test-only launcher: run the CLI and SIGKILL it at an exact point of the dump it writes.

    python tests/_kill_collector.py WHEN REPORT -- CLI-ARGS...

``WHEN`` is ``N`` (the writer has written ``N`` bytes) or ``KIND+N`` (``N``
bytes past the end of the first EVENT record of that kind, e.g.
``reboot_start+1048577``).

Why a launcher and not a poll: killing the collector when a poll sees the
file pass a size races the poll against the writer, so where the kill lands
depends on the machine's speed that minute (issue 23).  Here the process
kills *itself*, synchronously, right after the first ``TsdWriter._write``
that reaches the point: the same record on any machine, loaded or not.
Nothing is flushed first, so the bytes still in the writer's user-space
buffer are lost exactly as in a real SIGKILL; the kernel keeps what
``write(2)`` already took.

Just before the kill, one JSON line goes to ``REPORT`` (through ``os.write``,
so the kill cannot lose it): ``bytes_written`` (the writer's count, the end
of the record just written) and ``os_size`` (what the OS holds of the file
at that instant, which is what the killed file must contain).  A point past
the end of the dump lets the process finish normally (no report).

The patch lives here, not in production code: the collector has no test hook.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.tsd import writer as _writer


def arm(when: str, report: str) -> None:
    """Make the TsdWriters of this process SIGKILL it at ``when`` (see above)."""
    kind, _, n = when.rpartition("+")
    past = int(n)
    base = None if kind else 0  # None: the event has not been written yet
    write, write_event = _writer.TsdWriter._write, _writer.TsdWriter.write_event

    def _write_event(self: _writer.TsdWriter, event_kind: str, *args, **kwargs) -> None:
        nonlocal base
        write_event(self, event_kind, *args, **kwargs)
        if base is None and event_kind == kind:
            base = self.bytes_written

    def _write(self: _writer.TsdWriter, parts: list) -> None:
        write(self, parts)
        if base is not None and self.bytes_written >= base + past:
            line = json.dumps({"bytes_written": self.bytes_written,
                               "os_size": os.fstat(self._f.fileno()).st_size}) + "\n"
            fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    _writer.TsdWriter._write = _write
    _writer.TsdWriter.write_event = _write_event


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[3] != "--":
        sys.exit(f"usage: {sys.argv[0]} WHEN REPORT -- CLI-ARGS...")
    arm(sys.argv[1], sys.argv[2])
    sys.exit(main(sys.argv[4:]))
