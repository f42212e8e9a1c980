"""The guest's whole userspace: a busybox initramfs written in newc cpio.

``/init`` loads the modules QEMU's crash plumbing needs (pvpanic for the
GUEST_PANICKED event, qemu_fw_cfg for VMCOREINFO), starts the named daemons
and the workload, writes a report file, prints a distinctive marker line to
the kernel log and finally provokes the scenario's panic.  The archive is
written by Python (newc is a tiny format), so no cpio tool is needed and
the bytes are deterministic for given inputs.
"""

from __future__ import annotations

import stat
from pathlib import Path

from .scenarios import Scenario
from .workloads import DAEMONS, Workload

__all__ = ["base_image", "build_initramfs", "busybox_prelude", "render_init", "CpioWriter", "READY_LINE", "MARKER_PREFIX"]

MARKER_PREFIX = "TSUBAKI-LAB-MARKER"
READY_LINE = "TSUBAKI-LAB-READY"


class CpioWriter:
    """Append-only writer of the SVR4 "newc" cpio format the kernel unpacks."""

    _MAGIC = b"070701"

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        header = self._MAGIC + b"".join(b"%08x" % f for f in fields)
        self._parts.append(self._pad(header + encoded))
        self._parts.append(self._pad(data))

    @staticmethod
    def _pad(blob: bytes) -> bytes:
        return blob + b"\0" * (-len(blob) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def getvalue(self) -> bytes:
        trailer = CpioWriter()
        trailer._entry("TRAILER!!!", 0)
        return b"".join(self._parts + trailer._parts)


def base_image(busybox: Path, modules: list[Path]) -> CpioWriter:
    """The part of every initramfs we build (crash lab and live guest).

    The directory tree, /dev/console and /dev/null, busybox as /bin/sh and
    the kernel modules under /lib/modules; callers add their programs and
    ``/init``.
    """
    cpio = CpioWriter()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "lib/modules", "dev", "proc", "sys", "tmp", "data"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    for module in modules:
        cpio.file(f"lib/modules/{module.name}", module.read_bytes())
    return cpio


def busybox_prelude(data_size: str) -> str:
    """The first lines of every busybox ``/init`` we build (crash lab and live guest).

    Installs busybox's applets, mounts /proc, /sys, /dev and a tmpfs at
    /data of ``data_size`` (a tmpfs ``size=`` value) for the workload.
    """
    return f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /data /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/bin:/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o size={data_size} data /data
"""


def render_init(scenario: Scenario, workload: Workload, modules: list[str], marker: str) -> str:
    """The text of ``/init`` for one crash."""
    insmods = "\n".join(f"insmod /lib/modules/{m} || klog 'insmod {m} failed'" for m in modules)
    sysctls = "\n".join(f"sysctl -w {k}={v} >/dev/null" for k, v in scenario.sysctls.items())
    daemons = "\n".join(f"{name} &" for name in DAEMONS)
    trigger = "tsk-trigger &" if scenario.trigger else ""
    return busybox_prelude("95%") + f"""klog() {{ echo "<5>tsubaki-lab: $*" > /dev/kmsg; }}
{insmods}
{sysctls}
TSK_MEM_KB=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo); export TSK_MEM_KB
klog "starting workload {workload.name} for scenario {scenario.name}"
{daemons}
{workload.script}
{{ echo "tsubaki crash lab report"; echo "scenario={scenario.name} workload={workload.name}"
  uname -a; head -5 /proc/meminfo; df -k /data; }} > /data/report.txt
sync
echo "<2>{marker}" > /dev/kmsg
echo "<5>{READY_LINE}" > /dev/kmsg
{trigger}
{scenario.init_tail}
"""


def build_initramfs(
    path: Path, busybox: Path, modules: list[Path], scenario: Scenario, workload: Workload, marker: str
) -> int:
    """Write the initramfs for one crash to ``path``; returns its size in bytes."""
    cpio = base_image(busybox, modules)
    for name, body in {**DAEMONS, **workload.helpers, **scenario.helpers}.items():
        cpio.file(f"usr/bin/{name}", f"#!/bin/sh\n{body}\n".encode(), 0o755)
    if scenario.trigger:
        cpio.file("usr/bin/tsk-trigger", f"#!/bin/sh\nsleep 0.2\n{scenario.trigger}\n".encode(), 0o755)
    init = render_init(scenario, workload, [m.name for m in modules], marker)
    cpio.file("init", init.encode(), 0o755)
    data = cpio.getvalue()
    path.write_bytes(data)
    return len(data)
