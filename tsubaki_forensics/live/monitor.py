"""The live monitor: the Tsubaki protocol on a real panicked guest.

After GUEST_PANICKED (our SMC) the guest is paused inside its panic
notifier.  The monitor

1. stores the panic notice (registers, VMCOREINFO; :mod:`.notice`) and flushes;
2. ``tsubaki`` order: saves the **base RAM** (the reboot region) from its
   host file and flushes it, then resets the guest (QMP ``system_reset`` +
   ``cont``): firmware and kernel boot in the base RAM only, the DIMMs stay
   offline (``memhp_default_state=offline``);
3. keeps dumping the DIMMs, each from its own file, and **hands each one back**
   once it is durable: the guest agent onlines its memory blocks;
4. closes the dump (INDEX + END) and checks that every block is online.

``dump-then-reset`` is today's practice on the same guest: every piece
first, then the reset, then all memory at once.

Times are wall-clock seconds since QEMU stamped the panic event.  Each step
is also an EVENT record in the dump as it happens, so a dump cut short by a
killed monitor still tells what was saved and what the guest had.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from monitor_model.storage import PROFILES, StorageProfile

from ..contracts.events import EventKind
from ..tsd import MemoryMap, TsdWriter
from .guest import READY_MARKER
from .layout import Piece
from .resume import ResumeState
from .notice import fetch_notice
from .throttle import PacedDevice
from .vm import LiveError, LiveGuest

__all__ = ["ORDERS", "LiveParams", "LiveResult", "PieceTimes", "run_protocol", "bring_online"]

ORDERS = ("tsubaki", "dump-then-reset")
WRITE_BATCH = 32 << 20  # bytes per write_file_range call: the pacing and progress unit


@dataclass
class LiveParams:
    """How the monitor dumps."""

    order: str = "tsubaki"
    storage: StorageProfile = PROFILES["unlimited"]
    level: int = 3
    threads: int = 2
    fsync: bool = True
    boot_timeout: float = 300.0


@dataclass
class PieceTimes:
    """One hand-back unit: when it was saved and when the guest had it again."""

    name: str
    paddr: int
    nbytes: int
    file_bytes: int = 0
    saved_s: float | None = None
    online_s: float | None = None  # None for the base RAM: the guest reboots in it


@dataclass
class LiveResult:
    """One panic handled: seconds since the panic event."""

    order: str
    output: str
    storage: str
    memory_bytes: int
    base_bytes: int
    notice_s: float = 0.0
    reset_s: float = 0.0        # system_reset issued
    ready_s: float = 0.0        # the service-ready marker on the console
    agent_s: float = 0.0        # the rebooted guest's agent said hello
    dump_complete_s: float = 0.0
    all_online_s: float = 0.0   # the last hand-back acknowledged
    boot_s: float = 0.0         # ready_s - reset_s: the guest's own boot
    bytes_written: int = 0
    pieces: list[PieceTimes] = field(default_factory=list)
    boot_id: str = ""
    panicked_again_s: float | None = None   # the rebooted guest panicked (it is paused now)
    second_panic_wall: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _blocks_arg(pieces: list[Piece]) -> str:
    return " ".join(str(b) for p in pieces for b in p.blocks)


async def bring_online(guest: LiveGuest, pieces: list[Piece]) -> None:
    """Normal operation: the guest gets every DIMM (the agent onlines their blocks)."""
    if pieces:
        await guest.agent(f"online {_blocks_arg(pieces)}", timeout=120)


class _Run:
    def __init__(self, guest: LiveGuest, output: Path, params: LiveParams, t0: float,
                 dump_id: str | None = None) -> None:
        self.guest, self.params, self.t0 = guest, params, t0
        self.layout = guest.layout
        self.ready: asyncio.Task | None = None
        self.hello: asyncio.Future | None = None
        self.second: asyncio.Task | None = None
        # The notice's first record: the guest's whole memory map (base RAM
        # and every DIMM) and the dump level, so any prefix knows its total.
        self.writer = TsdWriter(output, dump_id=dump_id, level=params.level, threads=params.threads,
                                producer=f"tsubaki-forensics monitor ({params.order}, live)",
                                memory_map=MemoryMap.from_ranges(
                                    r for p in self.layout.pieces() for r in p.ranges))
        self.device = PacedDevice(params.storage, t0)
        self.result = LiveResult(order=params.order, output=str(output), storage=params.storage.name,
                                 memory_bytes=sum(p.nbytes for p in self.layout.pieces()),
                                 base_bytes=self.layout.base_piece().nbytes)
        self.times = {p.name: PieceTimes(p.name, p.ranges[0][0], p.nbytes) for p in self.layout.pieces()}
        self.result.pieces = list(self.times.values())
        self.closed = False
        self._events: list[tuple[str, float, dict]] = []

    def now(self) -> float:
        return time.time() - self.t0

    def event(self, kind: str, **fields) -> float:
        """An EVENT record now (until the dump is closed; later ones are in the result only).

        The writer is not thread-safe and its batches run on worker threads, so
        events are queued here and written by the dumping coroutine in between.
        """
        t = self.now()
        if not self.closed:
            self._events.append((kind, t, fields))
        return t

    def _drain(self) -> None:
        for kind, t, fields in self._events:
            self.writer.write_event(kind, t, **fields)
        self._events.clear()

    async def notice(self) -> None:
        notice = await fetch_notice(self.guest)
        layout = self.layout
        self.writer.write_metadata(vmcoreinfo=notice.vmcoreinfo, notes=notice.notes, properties={
            "live.order": self.params.order, "live.storage": self.params.storage.name,
            "live.base": layout.base, "live.dimm_size": layout.dimm_size, "live.dimms": layout.dimms,
            "live.dimm_addrs": ",".join(hex(a) for a in layout.dimm_addrs),
            "collect.memory_bytes": self.result.memory_bytes, "live.panic_wall": repr(self.t0),
        })
        self.writer.write_event(EventKind.PANIC_NOTICE, 0.0, cpus=self.guest.smp)
        await self._flush()
        self.result.notice_s = self.event(EventKind.NOTICE_SAVED)

    async def _flush(self) -> int:
        self._drain()
        offset = await asyncio.to_thread(self.writer.flush, self.params.fsync)
        await self.device.flushed()
        return offset

    async def save(self, piece: Piece) -> None:
        """Dump one piece from its host file, flush, mark it saved."""
        before = self.writer.bytes_written
        fd = os.open(piece.path, os.O_RDONLY)
        try:
            for start, length in piece.ranges:
                for pos in range(start, start + length, WRITE_BATCH):
                    n = min(WRITE_BATCH, start + length - pos)
                    self._drain()
                    mark = self.writer.bytes_written
                    await asyncio.to_thread(self.writer.write_file_range, pos, fd,
                                            pos - piece.file_base, n)
                    await self.device.wrote(self.writer.bytes_written - mark)
        finally:
            os.close(fd)
        await self._flush()
        times = self.times[piece.name]
        times.file_bytes = self.writer.bytes_written - before
        times.saved_s = self.event(EventKind.SAVED, step=piece.name, bytes=times.file_bytes)

    async def reset(self) -> None:
        """Reboot the guest in the base RAM; the console is watched from here on."""
        guest = self.guest
        guest.drop_agent_state()
        self.console_from = guest.console_size()
        # The base's "saved" and this "reboot_start" must be durable before the
        # guest runs again: a monitor killed after the reset and resumed would
        # otherwise not know the base RAM is Linux's now, and save it again
        # from memory the rebooted kernel has rewritten.
        self.result.reset_s = self.event(EventKind.REBOOT_START, regions=["base"])
        await self._flush()
        await guest.execute("system_reset")
        await guest.execute("cont")
        self.watch_second_panic()
        self.ready = asyncio.create_task(guest.wait_console(READY_MARKER, self.console_from,
                                                            self.params.boot_timeout))
        self.hello = asyncio.create_task(guest.wait_hello(self.params.boot_timeout))

    async def attach_running(self) -> None:
        """Resuming after the reset: the guest is (re)booting or up already; wait for its agent."""
        self.watch_second_panic()
        wall = await self.guest.agent_alive(self.params.boot_timeout)
        self.hello = asyncio.get_running_loop().create_future()
        self.hello.set_result((wall, "", 0))

    def watch_second_panic(self) -> None:
        """From the reset on, a GUEST_PANICKED is the *rebooted* guest crashing."""
        self.second = asyncio.create_task(self.guest.wait_panic(1e9))

    async def _unless_panicked(self, aw):
        """``aw``'s result, or None if the rebooted guest panics first (it is paused then,
        so no agent will answer; the dump goes on, the hand-back stops)."""
        task = asyncio.ensure_future(aw)
        await asyncio.wait({task, self.second}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        wall, _event = self.second.result()
        self.result.panicked_again_s = wall - self.t0
        self.result.second_panic_wall = wall
        self.event(EventKind.PANIC_AGAIN, at=round(wall - self.t0, 6))
        return None

    async def hand_back(self, queue: asyncio.Queue) -> None:
        """Online each saved DIMM as soon as the rebooted guest's agent is up."""
        hello = await self._unless_panicked(self.hello)
        if hello is None:
            return
        wall, boot_id, _block = hello
        self.result.agent_s = wall - self.t0
        self.result.boot_id = boot_id
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            pieces = [p for p in batch if p is not None]
            if pieces:
                done = await self._unless_panicked(
                    self.guest.agent(f"online {_blocks_arg(pieces)}", timeout=120))
                if done is None:
                    return
                for p in pieces:
                    self.times[p.name].online_s = self.event(EventKind.HAND_BACK, region=p.name,
                                                             bytes=p.nbytes)
            if None in batch:
                return

    async def close(self) -> None:
        self._drain()
        self.closed = True
        await asyncio.to_thread(self.writer.close)
        await self.device.flushed()
        self.result.bytes_written = self.writer.bytes_written
        self.result.dump_complete_s = self.now()


async def run_protocol(guest: LiveGuest, output: Path, params: LiveParams, panic_wall: float,
                       *, on_panic: Callable[[], None] | None = None,
                       progress: Callable[[str], None] | None = None,
                       resume: ResumeState | None = None) -> LiveResult:
    """Handle one panic of ``guest`` (already paused by pvpanic) and write ``output``.

    :param panic_wall: the wall-clock time QEMU stamped on GUEST_PANICKED.
    :param on_panic: called first, while the guest is still paused (tests copy
        the memory here to compare the dump against).
    :param resume: what the earlier file(s) of this dump hold (a restarted
        monitor): the new file gets the same dump id and only what is missing.
    :raises LiveError: QEMU, agent or boot failures (the dump written so far stays valid).
    """
    if params.order not in ORDERS:
        raise LiveError(f"unknown order {params.order!r}; choose one of {', '.join(ORDERS)}")
    say = progress or (lambda msg: None)
    if on_panic is not None:
        on_panic()
    run = _Run(guest, Path(output), params, panic_wall, dump_id=resume.dump_id if resume else None)
    layout = guest.layout
    dimms = layout.dimm_pieces()
    saved = resume.saved if resume else frozenset()
    handed = resume.handed if resume else frozenset()
    queue: asyncio.Queue = asyncio.Queue()
    handing: asyncio.Task | None = None
    try:
        if resume is None:
            await run.notice()
            say(f"notice saved at {run.result.notice_s:.2f} s")
        else:
            run.event(EventKind.RESUMED, saved=sorted(saved), handed=sorted(handed))
            await run._flush()
            say(f"resuming: saved {sorted(saved) or 'nothing'}, rebooted {resume.rebooted}")
        if params.order == "tsubaki":
            if "base" not in saved:
                await run.save(layout.base_piece())
                say(f"base RAM saved at {run.times['base'].saved_s:.2f} s; resetting the guest")
            if resume is not None and resume.rebooted:
                await run.attach_running()
            else:
                await run.reset()
            handing = asyncio.create_task(run.hand_back(queue))
            for piece in dimms:
                if piece.name in saved:
                    if piece.name not in handed:
                        queue.put_nowait(piece)
                    continue
                await run.save(piece)
                say(f"{piece.name} saved at {run.times[piece.name].saved_s:.2f} s")
                queue.put_nowait(piece)
                if handing.done():
                    handing.result()  # raises the agent's error
            queue.put_nowait(None)
            await run.close()
        else:
            for piece in [layout.base_piece(), *dimms]:
                if piece.name not in saved:
                    await run.save(piece)
                    say(f"{piece.name} saved at {run.times[piece.name].saved_s:.2f} s")
            await run.close()
            if resume is not None and resume.rebooted:
                await run.attach_running()
            else:
                await run.reset()
            for piece in [*(d for d in dimms if d.name not in handed), None]:
                queue.put_nowait(piece)
            handing = asyncio.create_task(run.hand_back(queue))
        say(f"dump complete at {run.result.dump_complete_s:.2f} s ({run.result.bytes_written} bytes)")
        await handing
        if run.ready is not None and (run.result.panicked_again_s is None or run.ready.done()):
            run.result.ready_s = await run.ready - panic_wall
            run.result.boot_s = run.result.ready_s - run.result.reset_s
        if run.result.panicked_again_s is not None:
            say(f"the rebooted guest panicked again at {run.result.panicked_again_s:.2f} s; "
                "this dump is complete, the guest is paused for the next one")
            return run.result
        states = await guest.block_states()
        offline = [n for n, s in states.items() if s != "online"]
        if offline:
            raise LiveError(f"memory blocks still offline after the hand-back: {offline}")
        run.result.all_online_s = max([run.result.agent_s] + [t.online_s or 0 for t in run.times.values()])
        return run.result
    finally:
        for task in (handing, run.ready, run.hello, run.second):
            if task is not None and not task.done():
                task.cancel()
        run.writer.close()
