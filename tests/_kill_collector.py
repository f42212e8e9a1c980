"""Test-only launcher: run the CLI and SIGKILL it at an exact point of the dump.

    python tests/_kill_collector.py TARGET REPORT -- collect VMCORE -o OUT ...

Why a launcher and not a poll: killing the collector when a poll sees the
file pass a size races the poll against the writer, so where the kill lands
depends on the machine's speed that minute (issue 23).  Here the collector
kills *itself*, synchronously, right after the first ``TsdWriter._write``
that brings its byte count to ``TARGET`` or past it: the same record on any
machine.  Nothing is flushed first, so the bytes still in the writer's
user-space buffer are lost exactly as in a real SIGKILL; the kernel keeps
what ``write(2)`` already took.

Just before the kill, one JSON line goes to ``REPORT`` (through ``os.write``,
so the kill cannot lose it): ``bytes_written`` (the writer's count, the end
of the record just written) and ``os_size`` (what the OS holds of the dump
at that instant, which is what the killed file must contain).  A ``TARGET``
past the end of the dump lets the collector finish normally.

The patch lives here, not in production code: the collector has no test hook.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.tsd import writer as _writer


def arm(target: int, report: str) -> None:
    """Make every TsdWriter of this process SIGKILL it once ``target`` bytes are written."""
    write = _writer.TsdWriter._write

    def _write(self: _writer.TsdWriter, parts: list) -> None:
        write(self, parts)
        if self.bytes_written >= target:
            line = json.dumps({"bytes_written": self.bytes_written,
                               "os_size": os.fstat(self._f.fileno()).st_size}) + "\n"
            fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    _writer.TsdWriter._write = _write


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[3] != "--":
        sys.exit(f"usage: {sys.argv[0]} TARGET REPORT -- CLI-ARGS...")
    arm(int(sys.argv[1]), sys.argv[2])
    sys.exit(main(sys.argv[4:]))
