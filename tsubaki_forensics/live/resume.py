"""Resuming after the monitor was killed: attach to the running guest, continue the same dump.

QEMU outlives a killed monitor, and so do its QMP and agent sockets (QEMU
goes back to listening when a client vanishes).  At start the monitor
writes ``WORKDIR/live.json`` (QEMU's pid, the sockets, the memory layout);
a restarted monitor reads it, attaches, reads the earlier ``.tsd`` with the reader ``collect
--resume-from`` uses (:class:`monitor_model.resume.Resume`: the memory it
holds, and from its EVENT records what was reset and handed back), and runs
the same policy into a new file of the **same dump id** with only the memory
the earlier file lacks.  ``open_dump([old, new])`` reads them as one dump.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from monitor_model.resume import Resume

from .layout import Layout
from ..errors import LiveError

__all__ = ["STATE_FILE", "ResumeState", "resume_state", "reconcile", "write_state", "read_state",
           "AttachedProcess"]

STATE_FILE = "live.json"


def write_state(workdir: Path, *, pid: int, qmp: Path, agent: Path, console: Path, layout: Layout,
                smp: int) -> None:
    """Record how to reach this guest again (atomically)."""
    state = {"pid": pid, "qmp": str(qmp), "agent": str(agent), "console": str(console), "smp": smp,
             "ram_dir": str(layout.ram_dir), "base": layout.base, "dimm_size": layout.dimm_size,
             "dimms": layout.dimms, "dimm_addrs": layout.dimm_addrs}
    tmp = workdir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, workdir / STATE_FILE)


def read_state(workdir: Path) -> dict:
    """The state a monitor left in ``workdir``.

    :raises LiveError: no state file, or its QEMU is gone.
    """
    path = Path(workdir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LiveError(f"cannot resume: no readable {path} ({e})") from None
    if not AttachedProcess(state["pid"]).alive():
        raise LiveError(f"cannot resume: QEMU (pid {state['pid']}) is no longer running")
    return state


class AttachedProcess:
    """The bits of ``subprocess.Popen`` the guest uses, for a QEMU we did not start."""

    stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def poll(self) -> int | None:
        if self.returncode is None and not self.alive():
            self.returncode = 0  # not our child: its status is not ours to read
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess

                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass(frozen=True)
class ResumeState(Resume):
    """What the earlier file(s) of a live dump hold and say happened (the
    emulation's :class:`~monitor_model.resume.Resume`, read by the same reader),
    and when the guest panicked and which policy ran."""

    panic_wall: float = 0.0
    policy: str = "tsubaki"


def resume_state(paths: list[Path]) -> ResumeState:
    """Read the earlier file(s) of a live dump.

    :raises LiveError: not a live dump (no ``live.panic_wall`` property).
    """
    found = Resume.from_files([Path(p) for p in paths])
    wall = found.property("live.panic_wall")
    if wall is None:
        raise LiveError(f"{paths[0]} is not a live dump (no live.panic_wall property)")
    return ResumeState(**{f.name: getattr(found, f.name) for f in fields(Resume)},
                       panic_wall=float(wall), policy=found.property("live.order") or "tsubaki")


async def reconcile(guest, state: ResumeState) -> ResumeState:
    """Trust QEMU over the file about the reset: a monitor killed right after
    ``system_reset`` (or after a dump-then-reset dump was closed) left no
    ``reboot_start`` event, and resetting a running guest again would throw
    its service away.  A guest still ``guest-panicked`` is not reset yet; one
    in ``prelaunch`` was reset but not continued (it is continued here)."""
    status = (await guest.execute("query-status"))["status"]
    if status == "guest-panicked":
        return replace(state, rebooted=False)
    if status == "prelaunch":
        await guest.execute("cont")
    return replace(state, rebooted=True)
