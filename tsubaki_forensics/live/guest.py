"""The live guest: its busybox userspace (with our memory agent) and its QEMU command line.

``/init`` loads pvpanic (the panic notice) and qemu_fw_cfg (VMCOREINFO),
starts the service (the crash lab's named daemons), prints the *service
ready* marker on the console and then runs the **agent** on the second
serial port: a line protocol through which the host monitor onlines memory
blocks (the hand-back), asks for their states, fills memory with data and
provokes a panic.  qemu-guest-agent is not in busybox, and virtio-serial is
a module the lab does not cache; a 16550 UART is built into every kernel.

The kernel boots with ``memhp_default_state=offline``: the DIMMs are
enumerated (ACPI memory devices) but no page of them is used until the
agent onlines their blocks.  This is what lets the monitor reboot Linux
before the DIMMs are saved.
"""

from __future__ import annotations

from pathlib import Path

from ..lab.initramfs import base_image, busybox_prelude
from ..lab.workloads import DAEMONS
from .layout import Layout

__all__ = ["READY_MARKER", "HELLO", "render_init", "build_initramfs", "qemu_argv", "CMDLINE"]

READY_MARKER = "TSUBAKI-LIVE-READY"
HELLO = "tsk-agent hello"
CMDLINE = "console=ttyS0 quiet panic=-1 memhp_default_state=offline"

_AGENT = r"""
sysfs=/sys/devices/system/memory
states() { for d in $sysfs/memory*; do printf '%s:%s ' "${d##*memory}" "$(cat $d/state)"; done; }
stty -F /dev/ttyS1 raw -echo 115200
exec 3<>/dev/ttyS1
echo "tsk-agent hello boot=$(cat /proc/sys/kernel/random/boot_id) block=$(cat $sysfs/block_size_bytes)" >&3
while read -r cmd arg <&3; do
  case "$cmd" in
    online)
      bad=""
      for n in $arg; do
        s=$(cat $sysfs/memory$n/state 2>/dev/null)
        [ "$s" = online ] && continue
        echo online_movable > $sysfs/memory$n/state 2>/dev/null || bad="$bad $n"
      done
      if [ -z "$bad" ]; then echo "ok online $arg" >&3; else echo "err online$bad" >&3; fi ;;
    states) echo "ok states $(states)" >&3 ;;
    meminfo) echo "ok meminfo $(awk '/^MemTotal:|^MemFree:/ {printf "%s%s ", $1, $2}' /proc/meminfo)" >&3 ;;
    fill)
      # arg MiB of random data in tmpfs: a 16 MiB seed from /dev/urandom (slow under
      # TCG) copied; larger than the dump's 8 MiB chunks, so no chunk repeats itself
      dd if=/dev/urandom of=/tmp/seed bs=1M count=16 2>/dev/null
      i=0; rm -f /data/fill; while [ $i -lt $(( arg / 16 )) ]; do cat /tmp/seed; i=$((i+1)); done > /data/fill
      echo "ok fill $(( $(stat -c %s /data/fill) >> 20 ))" >&3 ;;
    panic) echo "ok panic" >&3; sleep 0.2; echo c > /proc/sysrq-trigger ;;
    *) echo "err unknown $cmd" >&3 ;;
  esac
done
"""


def render_init(modules: list[str]) -> str:
    """The text of ``/init``: mount, load modules, start the service, mark it ready, run the agent."""
    insmods = "\n".join(f"insmod /lib/modules/{m} || echo 'insmod {m} failed'" for m in modules)
    daemons = "\n".join(f"{name} &" for name in DAEMONS)
    return busybox_prelude("64g") + f"""{insmods}
{daemons}
echo "{READY_MARKER} boot=$(cat /proc/sys/kernel/random/boot_id)"
{_AGENT}
"""


def build_initramfs(path: Path, busybox: Path, modules: list[Path]) -> int:
    """Write the live guest's initramfs to ``path``; returns its size."""
    cpio = base_image(busybox, modules)
    for name, body in DAEMONS.items():
        cpio.file(f"usr/bin/{name}", f"#!/bin/sh\n{body}\n".encode(), 0o755)
    cpio.file("init", render_init([m.name for m in modules]).encode(), 0o755)
    data = cpio.getvalue()
    path.write_bytes(data)
    return len(data)


def qemu_argv(layout: Layout, *, bzimage: Path, initrd: Path, smp: int, qmp: Path, agent: Path,
              console: Path, accel: str = "tcg", qemu: str = "qemu-system-x86_64") -> list[str]:
    """QEMU command line: base RAM and DIMMs in shared files, pvpanic pausing the guest.

    No ``-no-reboot``: with it QMP ``system_reset`` would shut the guest down.
    """
    mib = lambda n: f"{n >> 20}M"  # noqa: E731
    argv = [
        qemu, "-accel", accel, "-nodefaults", "-display", "none", "-S",
        "-m", f"{mib(layout.base)},slots={max(1, layout.dimms)},maxmem={mib(layout.total)}",
        "-smp", str(smp),
        "-object", f"memory-backend-file,id=ram0,size={mib(layout.base)},"
                   f"mem-path={layout.base_path()},share=on",
        "-machine", "pc,memory-backend=ram0",
        "-kernel", str(bzimage), "-initrd", str(initrd), "-append", CMDLINE,
        "-serial", f"file:{console}",
        "-serial", f"unix:{agent},server=on,wait=off",
        "-device", "pvpanic", "-device", "vmcoreinfo", "-action", "panic=pause",
        "-qmp", f"unix:{qmp},server=on,wait=off",
    ]
    for i in range(layout.dimms):
        argv += [
            "-object", f"memory-backend-file,id=dimm{i},size={mib(layout.dimm_size)},"
                       f"mem-path={layout.dimm_path(i)},share=on",
            "-device", f"pc-dimm,id=pcdimm{i},memdev=dimm{i}",
        ]
    return argv
