"""A live session: a guest in normal operation, a panic, the protocol.

:func:`open_guest` prepares a :class:`~.vm.LiveGuest` from the crash lab's
cached Debian kernel and static busybox; :func:`normal_operation` waits for
its agent and gives it all its memory (optionally filling some with data);
:func:`collect_panic` provokes or awaits the panic and runs the protocol.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..lab import ensure_kernel
from ..lab.host import find_static_busybox
from ..lab import select_modules
from ..lab.kernel import GUEST_MODULES
from .layout import Layout, plan_layout
from .monitor import LiveParams, LiveResult, bring_online, run_protocol
from .vm import LiveError, LiveGuest

__all__ = ["GuestConfig", "open_guest", "normal_operation", "collect_panic", "follow_panics",
           "default_ram_dir", "remove_ram"]


def default_ram_dir() -> Path:
    """Guest RAM files go to /dev/shm when it exists (tmpfs: no disk writeback of guest RAM)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="tsk-live-ram-", dir=shm if shm.is_dir() else None))


@dataclass(frozen=True)
class GuestConfig:
    """What to boot."""

    mem: int = 1 << 30
    base: int = 256 << 20
    dimm_size: int = 128 << 20
    smp: int = 2
    kernel: str = "6.1"
    accel: str = "tcg"


def open_guest(config: GuestConfig, workdir: Path, ram_dir: Path | None = None, log=None) -> LiveGuest:
    """A guest ready to ``start()`` (use ``async with``)."""
    busybox = find_static_busybox()
    if busybox is None:
        raise LiveError("no static busybox: apt-get install busybox-static")
    kernel = ensure_kernel(config.kernel, log=log)
    layout: Layout = plan_layout(config.mem, config.base, config.dimm_size, ram_dir or default_ram_dir())
    return LiveGuest(layout, bzimage=kernel.bzimage, modules=select_modules(kernel.modules, GUEST_MODULES),
                     busybox=busybox, workdir=workdir, smp=config.smp, accel=config.accel, log=log)


def remove_ram(guest: LiveGuest) -> None:
    """Delete the guest's RAM files (after QEMU has exited)."""
    shutil.rmtree(guest.layout.ram_dir, ignore_errors=True)


async def normal_operation(guest: LiveGuest, *, fill_mib: int = 0, timeout: float = 300.0,
                           wait_agent: bool = True) -> str:
    """Wait for the agent (unless ``wait_agent`` is False: a guest the protocol
    already talks to), online every DIMM, fill ``fill_mib`` MiB with data;
    returns the boot id ("" when not waited for)."""
    boot_id = ""
    if wait_agent:
        _wall, boot_id, block = await guest.wait_hello(timeout)
        if block != 128 << 20:
            raise LiveError(f"the guest's memory block is {block:#x} bytes, not 128 MiB")
    await bring_online(guest, guest.layout.dimm_pieces())
    if fill_mib:
        await guest.agent(f"fill {fill_mib}", timeout=timeout)
    return boot_id


async def collect_panic(guest: LiveGuest, output: Path, params: LiveParams, *, trigger: bool = True,
                        panic_timeout: float = 600.0, on_panic: Callable[[], None] | None = None,
                        progress: Callable[[str], None] | None = None) -> LiveResult:
    """Provoke (``trigger``: sysrq-c through the agent) or await the panic, then run the protocol."""
    if trigger:
        await guest.agent("panic")
    panic_wall, _event = await guest.wait_panic(panic_timeout)
    return await run_protocol(guest, output, params, panic_wall, on_panic=on_panic, progress=progress)


async def follow_panics(guest: LiveGuest, result: LiveResult, output: Path, params: LiveParams, *,
                        progress: Callable[[str], None] | None = None, limit: int = 3) -> list[LiveResult]:
    """If the rebooted guest panicked during the dump, dump that crash too (``OUTPUT.panicN.tsd``),
    and so on up to ``limit`` crashes; returns every result in order."""
    say = progress or (lambda msg: None)
    results = [result]
    while result.panicked_again_s is not None and len(results) < limit:
        nxt = output.with_name(f"{output.stem}.panic{len(results) + 1}{output.suffix}")
        say(f"the rebooted guest panicked again: dumping that crash to {nxt}")
        result = await run_protocol(guest, nxt, params, result.second_panic_wall, progress=progress)
        results.append(result)
    return results
