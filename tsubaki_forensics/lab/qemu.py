"""Boot a guest under QEMU, wait for its panic over QMP, save its memory.

QEMU starts paused (``-S``) so the panic listener is registered before the
guest can run.  An x86_64 guest reports its panic through pvpanic
(``GUEST_PANICKED``, ``-action panic=pause``); an arm64 guest, whose Debian
kernels have no pvpanic, resets from ``panic()`` and ``-no-reboot -action
shutdown=pause`` keeps it paused (see :mod:`.arch`).  Either way the crashed
guest stays for ``dump-guest-memory``.  Every wait is bounded, and a failure carries the
tail of the guest console so the reason is visible in one message.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError
from .arch import X86_64, GuestArch
from .sizes import format_size

__all__ = ["GuestSpec", "GuestRun", "run_guest", "qemu_argv", "console_tail"]



@dataclass(frozen=True)
class GuestSpec:
    """Everything QEMU needs for one boot."""

    bzimage: Path
    initrd: Path
    mem: int
    smp: int
    workdir: Path
    accel: str = "tcg"
    cmdline: str | None = None  # default: the arch's console, panic=-1 loglevel=6
    ram_file: Path | None = None
    qmp_trigger: tuple[str, dict] | None = None
    ready_line: str = ""
    timeout: float = 180.0
    # When set, the panic must follow the ready line within this many seconds
    # (measured from when the host saw the line, so a slow boot cannot eat it);
    # ``timeout`` still bounds the whole run against hangs.
    panic_window: float | None = None
    dump_timeout: float = 600.0
    # More dump-guest-memory formats of the same paused guest (e.g. "kdump-zlib"),
    # written as vmcore.<format> after the ELF one; used by bench/lab_dump.py.
    extra_dumps: tuple[str, ...] = ()
    arch: GuestArch = X86_64

    @property
    def kernel_cmdline(self) -> str:
        return self.cmdline or f"console={self.arch.console} panic=-1 loglevel=6"


@dataclass
class GuestRun:
    """What happened: the panic event, the files written and how long each step took."""

    vmcore: Path
    console: Path
    panic_event: dict
    argv: list[str]
    timings: dict[str, float] = field(default_factory=dict)


def qemu_argv(spec: GuestSpec, qmp_socket: Path, console: Path) -> list[str]:
    """The QEMU command line of a lab guest."""
    arch = spec.arch
    machine = arch.machine
    argv = [
        arch.qemu, "-accel", spec.accel, "-nodefaults", "-display", "none", "-no-reboot", "-S",
        "-m", format_size(spec.mem), "-smp", str(spec.smp),
        "-kernel", str(spec.bzimage), "-initrd", str(spec.initrd), "-append", spec.kernel_cmdline,
        "-serial", f"file:{console}", "-device", "vmcoreinfo",
    ]
    if arch.cpu:
        argv += ["-cpu", arch.cpu]
    if arch.panic_device:
        argv += ["-device", arch.panic_device, "-action", "panic=pause"]
    else:  # panic=-1 resets from panic(); -no-reboot turns the reset into a shutdown, kept paused
        argv += ["-action", "shutdown=pause"]
    argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    if spec.ram_file is not None:
        argv += [
            "-object",
            f"memory-backend-file,id=ram0,size={format_size(spec.mem)},mem-path={spec.ram_file},share=on",
        ]
        machine += ",memory-backend=ram0"
    argv += ["-machine", machine]
    return argv


def console_tail(console: Path, lines: int = 15) -> str:
    """The last lines of the guest console (and its panic line), joined for a one-line error."""
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    all_lines = [line.strip() for line in text.splitlines() if line.strip()]
    tail = all_lines[-lines:]
    # The panic line is the most telling one; keep it even when the oops dump pushed it out of the tail.
    panics = [line for line in all_lines if "Kernel panic - not syncing" in line]
    if panics and panics[-1] not in tail:
        tail = [panics[-1], "...", *tail]
    return " | ".join(tail) if tail else "(empty console)"


async def _connect(qmp, sock: Path, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise LabError(f"QEMU exited at start (status {proc.returncode}): {_stderr(proc)}")
        if sock.exists():
            try:
                await qmp.connect(str(sock))
                return
            except Exception:  # not listening yet
                pass
        if time.monotonic() > deadline:
            raise LabError("QEMU did not open its QMP socket within 30 s")
        await asyncio.sleep(0.05)


def _stderr(proc: subprocess.Popen) -> str:
    try:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    except (OSError, ValueError):
        err = ""
    return " | ".join(err.strip().splitlines()[-3:]) or "no message"


def _is_panic(event: dict, arch: GuestArch) -> bool:
    """Whether a QMP event is the guest's panic as ``arch`` reports it."""
    if arch.panic_device:
        return event["event"] == "GUEST_PANICKED"
    return event["event"] == "SHUTDOWN" and (event.get("data") or {}).get("reason") == "guest-reset"


async def _watch(qmp, spec: GuestSpec, proc: subprocess.Popen, console: Path) -> dict:
    """Run the guest until it panics; act on the ready line when the scenario needs the host."""
    triggered = spec.qmp_trigger is None
    deadline = time.monotonic() + spec.timeout
    ready_at: float | None = None
    with qmp.listener(("GUEST_PANICKED", "SHUTDOWN", "RESET")) as listener:
        await qmp.execute("cont")
        while True:
            try:
                event = await asyncio.wait_for(listener.get(), timeout=0.25)
            except asyncio.TimeoutError:
                event = None
            if event is not None:
                if _is_panic(event, spec.arch):
                    return dict(event)
                how = ("a GUEST_PANICKED event (was pvpanic loaded?)" if spec.arch.panic_device
                       else "the reset that panic=-1 makes")
                raise LabError(f"guest {event['event'].lower()} without {how}: {console_tail(console)}")
            if proc.poll() is not None:
                raise LabError(f"QEMU exited (status {proc.returncode}) before the guest panicked: {console_tail(console)}")
            if (not triggered or (spec.panic_window is not None and ready_at is None)) \
                    and spec.ready_line in _read(console):
                ready_at = time.monotonic()
                if not triggered:
                    name, args = spec.qmp_trigger
                    await qmp.execute(name, args)
                    triggered = True
            if ready_at is not None and spec.panic_window is not None \
                    and time.monotonic() > ready_at + spec.panic_window:
                raise LabError(f"guest did not panic within {spec.panic_window:.0f} s of its ready line: "
                               f"{console_tail(console)}")
            if time.monotonic() > deadline:
                raise LabError(f"guest did not panic within {spec.timeout:.0f} s: {console_tail(console)}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


async def _dump(qmp, path: Path, fmt: str, timeout: float) -> float:
    """QMP dump-guest-memory of the paused guest to ``path``; returns the seconds it took."""
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(
            qmp.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{path}", "format": fmt}),
            timeout=timeout,
        )
    except asyncio.TimeoutError as e:
        raise LabError(f"dump-guest-memory ({fmt}) did not finish within {timeout:.0f} s") from e
    except Exception as e:  # qemu.qmp's ExecuteError and connection errors
        raise LabError(f"dump-guest-memory ({fmt}) to {path} failed: {e}") from e
    return time.monotonic() - t0


async def _run(spec: GuestSpec) -> GuestRun:
    from qemu.qmp import QMPClient

    spec.workdir.mkdir(parents=True, exist_ok=True)
    # UNIX socket paths are limited to ~108 bytes: keep it out of the (maybe deep) workdir.
    sockdir = Path(tempfile.mkdtemp(prefix="tsk-qmp-"))
    sock = sockdir / "qmp.sock"
    console = spec.workdir / "console.log"
    vmcore = spec.workdir / "vmcore.elf"
    for stale in (console, vmcore):
        stale.unlink(missing_ok=True)
    argv = qemu_argv(spec, sock, console)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        raise LabError(f"{spec.arch.qemu} is not installed (Debian package {spec.arch.qemu_package})") from e
    qmp = QMPClient("tsubaki-lab")
    quit_sent = False
    try:
        await _connect(qmp, sock, proc, time.monotonic() + 30)
        t_boot = time.monotonic()
        event = await _watch(qmp, spec, proc, console)
        timings["boot_to_panic_s"] = time.monotonic() - t_boot
        timings["dump_s"] = await _dump(qmp, vmcore, "elf", spec.dump_timeout)
        for fmt in spec.extra_dumps:
            timings[f"dump_{fmt}_s"] = await _dump(qmp, spec.workdir / f"vmcore.{fmt}", fmt, spec.dump_timeout)
        try:
            await qmp.execute("quit")
            quit_sent = True
        except Exception:
            pass
    finally:
        try:
            await qmp.disconnect()
        except Exception:
            pass
        if proc.poll() is None:
            try:
                # After "quit" QEMU exits by itself; after a failure nothing will stop it.
                proc.wait(timeout=10 if quit_sent else 0.5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(sockdir, ignore_errors=True)
    timings["qemu_total_s"] = time.monotonic() - t0
    return GuestRun(vmcore=vmcore, console=console, panic_event=event, argv=argv, timings=timings)


def run_guest(spec: GuestSpec) -> GuestRun:
    """Boot ``spec``, wait for its panic, write ``vmcore.elf`` and ``console.log`` in its workdir.

    :raises LabError: QEMU missing or failing, no panic in time, dump failure.
    """
    return asyncio.run(_run(spec))
