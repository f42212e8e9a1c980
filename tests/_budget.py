"""Run the CLI as a child process and measure its peak RSS (issue 22's proof).

Why ``os.wait4``: ``getrusage(RUSAGE_CHILDREN)`` is the maximum over every
child this test process ever reaped, so one earlier heavy child would mask a
regression; ``wait4`` gives the rusage of exactly the child it waits for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from tsubaki_forensics.limits import BUDGET

from _cli import CLI

__all__ = ["BUDGET", "Run", "run_cli", "assert_one_line_error"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes


# A small parent that spawns the command and reports exactly its child's
# ru_maxrss.  Not measured from the test process itself: Linux keeps a
# process's maxrss across exec, and a child forked (or vforked) from a test
# that just built a 256 MiB input would inherit that figure.
_REAPER = """
import os, resource, signal, sys
if os.environ.get("_TSUBAKI_TEST_FSIZE"):  # a file-size limit: writes fail with EFBIG, like a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    n = int(os.environ.pop("_TSUBAKI_TEST_FSIZE"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
with open(sys.argv[1] + ".pid", "w") as f:
    f.write(str(pid))
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def run_cli(*args: str, timeout: float = 120, env: dict | None = None, stdin=None,
            fsize: int | None = None, stdout=None) -> Run:
    """``tsubaki-forensics ARGS`` in a child; its exit status, output and peak RSS.

    ``fsize`` limits the size of any file it writes (RLIMIT_FSIZE, SIGXFSZ
    ignored): the writes past it fail as on a full disk.
    """
    if fsize is not None:
        env = {**(env or {}), "_TSUBAKI_TEST_FSIZE": str(fsize)}
    with tempfile.TemporaryDirectory() as tmp:
        rss = os.path.join(tmp, "rss")
        try:
            p = subprocess.run([sys.executable, "-c", _REAPER, rss, *CLI, *map(str, args)],
                               stdout=stdout if stdout is not None else subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout, stdin=stdin if stdin is not None
                               else subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200", **(env or {})})
        except subprocess.TimeoutExpired:
            try:  # the reaper is gone; do not leave the command running either
                with open(rss + ".pid") as f:
                    os.kill(int(f.read()), 9)
            except (OSError, ValueError):
                pass
            raise
        code = p.returncode if p.returncode < 128 else p.returncode - 256
        with open(rss) as f:
            peak = int(f.read())
    return Run(code, (p.stdout or b"").decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"), peak)


def assert_one_line_error(run: Run, *, budget: int = BUDGET, needle: str | None = None) -> None:
    """Non-zero exit, exactly one line on stderr (no traceback), peak RSS under ``budget``."""
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.returncode != 0, (run.returncode, run.stderr[-2000:])
    assert len(lines) == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    if needle is not None:
        assert needle in lines[0], lines[0]
    assert run.peak_rss < budget, f"peak RSS {run.peak_rss >> 20} MiB >= {budget >> 20} MiB"
