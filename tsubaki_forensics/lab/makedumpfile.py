"""makedumpfile's own page counts for a lab crash: the reference for our filter.

Why here: like the drgn ground truth, the expected per-class counts of a
dump level must come from the reference tool run on the same memory, never
from numbers written into a test.  makedumpfile refuses QEMU's ELF, so it
reads a /proc/vmcore-style copy (:func:`~tsubaki_forensics.vmcore.export.copy_as_proc_vmcore`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import LabError
from ..vmcore.export import copy_as_proc_vmcore

__all__ = ["makedumpfile_counts", "makedumpfile_output_size", "parse_report", "REPORT_KEYS"]

#: makedumpfile's report line -> our class key (``PageClass.key``).
REPORT_KEYS = {
    "Pages filled with zero": "zero",
    "Non-private cache pages": "cache",
    "Private cache pages": "cache_private",
    "User process data pages": "user",
    "Free pages": "free",
    "Hwpoison pages": "hwpoison",
    "Offline pages": "offline",
    "Original pages": "total",
    "Remaining pages": "kept",
}
_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z -]*?)\s*:\s*0x([0-9a-fA-F]+)\s*$")


def parse_report(text: str) -> dict[str, int]:
    """The page counts of makedumpfile's ``--message-level`` report, by our keys."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1) in REPORT_KEYS and REPORT_KEYS[m.group(1)] not in out:
            out[REPORT_KEYS[m.group(1)]] = int(m.group(2), 16)
    return out


def _tool() -> str:
    tool = shutil.which("makedumpfile")
    if tool is None:
        raise LabError("makedumpfile is not installed (apt-get install makedumpfile)")
    return tool


def _proc_source(vmcore: Path, proc_copy: Path | None, tmp: Path) -> Path:
    """``proc_copy`` (made there if absent), or a /proc/vmcore-style copy of ``vmcore`` in ``tmp``."""
    src = proc_copy if proc_copy is not None else tmp / "vmcore.proc"
    if not src.exists():
        copy_as_proc_vmcore(vmcore, src)
    return src


def makedumpfile_counts(vmcore: Path, level: int, *, proc_copy: Path | None = None) -> dict[str, int]:
    """Run ``makedumpfile -l -d LEVEL --message-level 31`` on a /proc/vmcore copy of ``vmcore``.

    :param proc_copy: an existing /proc/vmcore-style copy to reuse (made if absent).
    :raises LabError: makedumpfile is missing or fails, or prints no report.
    """
    tool = _tool()
    with tempfile.TemporaryDirectory(prefix="tsubaki-mdf-") as tmp:
        src = _proc_source(vmcore, proc_copy, Path(tmp))
        proc = subprocess.run([tool, "-l", "-d", str(level), "--message-level", "31", str(src),
                               str(Path(tmp) / "out.kdump")], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    counts = parse_report(text)
    if proc.returncode != 0 or "free" not in counts:
        raise LabError(f"makedumpfile -d {level} failed ({proc.returncode}): {text.strip()[-300:]}")
    return counts


def makedumpfile_output_size(vmcore: Path, level: int, *, proc_copy: Path | None = None) -> int:
    """Bytes ``makedumpfile -F -c -d LEVEL`` writes for ``vmcore`` (kdump-tools' command).

    The flattened output goes to a pipe and is only counted, never stored;
    the reference for collect's kdump size model (monitor_model/kdumpfile.py).

    :raises LabError: makedumpfile is missing or fails.
    """
    tool = _tool()
    with tempfile.TemporaryDirectory(prefix="tsubaki-mdf-") as tmp:
        src = _proc_source(vmcore, proc_copy, Path(tmp))
        proc = subprocess.Popen([tool, "-F", "-c", "-d", str(level), str(src)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        total = 0
        assert proc.stdout is not None and proc.stderr is not None
        while chunk := proc.stdout.read(1 << 20):
            total += len(chunk)
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise LabError(f"makedumpfile -F -c -d {level} failed ({proc.returncode}): {err.strip()[-300:]}")
    return total
