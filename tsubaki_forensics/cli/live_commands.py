"""``tsubaki-forensics monitor``: the Tsubaki monitor on a real running QEMU guest.

Starts a guest whose RAM is base RAM plus hot-pluggable DIMMs in shared host
files, gives it all its memory (normal operation), then waits for its panic
(or provokes one with ``--trigger``) and runs the protocol of
:mod:`tsubaki_forensics.live.monitor`.  Progress goes to stderr; the timings
(text or ``--format json``) to stdout.  docs/LIVE.md explains it all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import TsubakiError
from . import output as cli_output
from .output import print_warning, format_option, print_json

__all__ = ["register", "monitor"]


def _size(value: str, option: str) -> int:
    from monitor_model.machine import parse_size_option

    return parse_size_option(value, option)


def monitor(
    output: Annotated[Path, typer.Option("-o", "--output", help="Dump file to write (.tsd).")] = Path("dump.tsd"),
    mem: Annotated[str, typer.Option(help="Guest memory in all: base RAM + DIMMs.")] = "1G",
    base: Annotated[str, typer.Option(help="Base RAM: where firmware and the rebooted kernel run "
                                           "(the reboot region, saved first).")] = "256M",
    dimm_size: Annotated[str, typer.Option(help="Size of each hot-pluggable DIMM (one hand-back unit; "
                                                "a multiple of 128M).")] = "128M",
    smp: Annotated[int, typer.Option(help="Guest vCPUs.")] = 2,
    kernel: Annotated[str, typer.Option(help="Debian kernel series from the crash lab (6.1, 6.12).")] = "6.1",
    order: Annotated[str, typer.Option("--policy", "--order", help="A policy of collect that runs live "
                                            "(tsubaki: base RAM, reset, then the DIMMs handed back as saved; "
                                            "dump-then-reset: everything first, today's practice; reboot-only; ...).")] = "tsubaki",
    storage: Annotated[str, typer.Option(help="Pace the writes to a device profile of the emulation "
                                              "(unlimited, sd-uhs1, emmc, ... or custom:...).")] = "unlimited",
    fill: Annotated[str, typer.Option(help="Before the panic, fill this much guest memory with "
                                           "incompressible data (e.g. 512M; 0: none).")] = "0",
    trigger: Annotated[bool, typer.Option("--trigger/--wait", help="--trigger: panic the guest "
                                          "(sysrq-c through the agent) once it is ready; --wait: "
                                          "wait for a panic of its own.")] = True,
    panic_timeout: Annotated[float, typer.Option(help="Seconds to wait for the panic.")] = 600.0,
    level: Annotated[int, typer.Option(help="zstd level.")] = 3,
    threads: Annotated[int, typer.Option(help="Compression threads of the monitor (the paper's "
                                              "monitor takes one CPU).")] = 2,
    workdir: Annotated[Path | None, typer.Option(help="Where the console log and initramfs go "
                                                     "(default: beside the output).")] = None,
    ram_dir: Annotated[Path | None, typer.Option(help="Directory for the guest RAM files "
                                                    "(default: a new one in /dev/shm; removed at the end).")] = None,
    resume: Annotated[list[Path] | None, typer.Option(
        help="Continue the dump in these earlier file(s) of a killed monitor: attach to the guest "
             "it left running (needs the same --workdir) and write the rest to -o.")] = None,
    dump_level: Annotated[int, typer.Option(
        "--dump-level", "-d", min=0, max=31,
        help="makedumpfile's -d bits, as collect. The live monitor does not filter yet: it saves "
             "every page (level 1) and says so when asked for more (docs/LIVE.md).")] = 1,
    fmt: Annotated[str, format_option()] = "text",
) -> None:
    """Run a live guest, wait for its panic, dump it while it reboots, hand its memory back."""
    from monitor_model.storage import get_profile

    from ..live import GuestConfig, LiveParams
    from ..live.monitor import LIVE_POLICIES

    if fmt not in ("text", "json"):
        raise TsubakiError(f"--format {fmt!r}: use text or json")
    if order not in LIVE_POLICIES:
        raise TsubakiError(f"--policy {order!r}: use one of {', '.join(LIVE_POLICIES)}")
    if smp < 1 or smp > 8:
        raise TsubakiError(f"--smp {smp}: use 1..8")
    if dump_level > 1:  # said, never silently ignored: the dump records level 1, what it holds
        print_warning(f"--dump-level {dump_level}: the live monitor saves every page (level 1); "
                      "`collect -d` models the filtered monitor (docs/LIVE.md)")
    config = GuestConfig(mem=_size(mem, "--mem"), base=_size(base, "--base"),
                         dimm_size=_size(dimm_size, "--dimm-size"), smp=smp, kernel=kernel)
    params = LiveParams(policy=order, storage=get_profile(storage), level=level, threads=threads)
    fill_mib = _size(fill, "--fill") >> 20
    if fill_mib > (config.mem >> 20) * 3 // 4:
        raise TsubakiError(f"--fill {fill}: at most three quarters of --mem")
    import asyncio  # here, not at module level: ~12 ms that no other command needs

    if resume:
        if workdir is None:
            raise TsubakiError("--resume needs the --workdir of the killed monitor (its live.json)")
        results = asyncio.run(_resume(resume, params, output, workdir))
    else:
        work = workdir or output.parent / f"{output.stem}.live"
        results = asyncio.run(_monitor(config, params, output, work, fill_mib, trigger, panic_timeout,
                                       ram_dir))
    if fmt == "json":
        print_json({"panics": [r.to_json() for r in results]})
        return
    for result in results:
        _print(result)


def _print(result) -> None:
    cli_output.stdout.print(f"order {result.order}, storage {result.storage}, {result.memory_bytes >> 20} MiB "
                 f"(base {result.base_bytes >> 20} MiB): dump {result.output} ({result.bytes_written} bytes)")
    if result.panicked_again_s is not None:
        cli_output.stdout.print(f"  the rebooted guest panicked again at {result.panicked_again_s:.2f} s")
    cli_output.stdout.print(f"  panic -> reset {result.reset_s:.2f} s, service ready {result.ready_s:.2f} s "
                 f"(boot {result.boot_s:.2f} s), dump complete {result.dump_complete_s:.2f} s, "
                 f"all memory online {result.all_online_s:.2f} s")
    for p in result.pieces:
        saved = "in an earlier file" if p.saved_s is None else f"saved {p.saved_s:.2f} s"
        online = "rebooted in it" if p.name == "base" else (
            "-" if p.online_s is None else f"online {p.online_s:.2f} s")
        cli_output.stdout.print(f"  {p.name:7} {p.paddr:#14x} {p.nbytes >> 20:6} MiB  {saved}  {online}")


async def _monitor(config, params, output: Path, work: Path, fill_mib: int, trigger: bool,
                   panic_timeout: float, ram_dir: Path | None):
    from ..live import collect_panic, normal_operation, open_guest
    from ..live.session import follow_panics, remove_ram

    def say(msg: str) -> None:
        cli_output.stderr.print(f"monitor: {msg}")

    guest = open_guest(config, work, ram_dir=ram_dir, log=say)
    try:
        async with guest:
            say(f"guest started (QEMU pid {guest.proc.pid}); console {guest.console}")
            await normal_operation(guest, fill_mib=fill_mib)
            say("guest ready, all memory online" + (f", {fill_mib} MiB filled" if fill_mib else ""))
            first = await collect_panic(guest, output, params, trigger=trigger,
                                        panic_timeout=panic_timeout, progress=say)
            return await follow_panics(guest, first, output, params, progress=say)
    finally:
        remove_ram(guest)


async def _resume(paths: list[Path], params, output: Path, work: Path):
    from dataclasses import replace

    from ..live.monitor import run_protocol
    from ..live.resume import reconcile, resume_state
    from ..live.session import follow_panics, remove_ram
    from ..live.vm import LiveGuest

    def say(msg: str) -> None:
        cli_output.stderr.print(f"monitor: {msg}")

    state = resume_state(paths)
    if output.resolve() in {p.resolve() for p in paths}:
        raise TsubakiError(f"-o {output}: write the rest to a new file, not over the earlier one")
    guest = await LiveGuest.attach(work, log=say)
    try:
        state = await reconcile(guest, state)
        say(f"attached to QEMU pid {guest.proc.pid}; dump {state.dump_id}")
        params = replace(params, policy=state.policy)
        first = await run_protocol(guest, output, params, state.panic_wall, progress=say, resume=state)
        return await follow_panics(guest, first, output, params, progress=say)
    finally:
        await guest.stop()
        remove_ram(guest)


def register(app: typer.Typer) -> None:
    """Add ``monitor`` to ``app``."""
    app.command("monitor")(monitor)
