"""The live monitor: the Tsubaki protocol on a real panicked guest, driven by the same policies as ``collect``.

After GUEST_PANICKED (our SMC) the guest is paused inside its panic
notifier.  The monitor stores the panic notice (registers, VMCOREINFO;
:mod:`.notice`) and flushes it; then it runs a policy of
:mod:`monitor_model.policies` through the one protocol loop
(:func:`monitor_model.protocol.protocol`) that the emulation runs too.  This
module is only its live *driver*: each action the loop yields is done for real.

* a step (ranges of guest-physical memory) is written from the guest's RAM
  files (``TsdWriter.write_file_range``), paced to a storage profile, and
  flushed (fsync); its ``saved`` EVENT names the piece (``base``, ``dimm3``);
* *reboot*: the guest is reset (QMP ``system_reset`` + ``cont``): firmware
  and kernel boot in the base RAM only, the DIMMs stay offline
  (``memhp_default_state=offline``); DIMMs the policy reboots in as well are
  onlined once the rebooted guest's agent is up;
* *hand back*: the agent onlines the DIMM's memory blocks (in batches, once
  the rebooted guest's agent said hello).

One machine region per piece: region 0 is the base RAM (the reboot set: the
guest can boot nowhere else), region ``i + 1`` is DIMM ``i``.  ``tsubaki``
saves the base, resets, then saves each DIMM and hands it back as saved;
``dump-then-reset`` is today's practice (everything, then the reset, then all
memory at once); ``tsubaki-triage`` first runs the emulation's drgn planner
on the paused guest's RAM files (:mod:`.memory`) and saves what it found
before anything else.  Every policy that runs on the monitor's own writer runs
here (:data:`LIVE_POLICIES`); kdump's capture kernel and makedumpfile are a
model of ``collect`` only.  A policy that would give the guest memory whose dump is
not durable is stopped before the guest gets it (``HandbackSafetyError``).

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

from monitor_model.machine import Machine, Region
from monitor_model.policies import POLICIES, Policy, Step, get_policy
from monitor_model.protocol import (
    Action,
    Books,
    FlushStep,
    Give,
    Reboot,
    StepSaved,
    WriteStep,
    protocol,
)
from monitor_model.results import HandbackSafetyError
from monitor_model.storage import PROFILES, StorageProfile

from ..contracts.events import EventKind
from ..tsd import MemoryMap, TsdWriter
from .guest import READY_MARKER
from .layout import Layout, Piece
from .memory import GuestMemory
from .notice import Notice, fetch_notice
from .resume import ResumeState
from .throttle import PacedDevice
from .vm import LiveError, LiveGuest

__all__ = ["LIVE_POLICIES", "LiveParams", "LiveResult", "PieceTimes", "bring_online",
           "live_machine", "live_policy", "plan_triage_steps", "run_protocol"]

WRITE_BATCH = 32 << 20  # bytes per write_file_range call: the pacing and progress unit


def _runs_live(cls: type[Policy]) -> bool:
    """The live monitor is the monitor itself: no capture kernel, no makedumpfile model."""
    return not (cls.kdump_model or cls.capture_boot)


LIVE_POLICIES: tuple[str, ...] = tuple(name for name, cls in POLICIES.items() if _runs_live(cls))
"""The policies of :mod:`monitor_model.policies` the live monitor runs (``--policy``)."""


def live_policy(policy: str | Policy) -> Policy:
    """The policy object for ``policy`` (a name or an object, e.g. a plugin's or a test's).

    :raises TsubakiError: unknown name; :raises LiveError: a policy the live monitor cannot run.
    """
    obj = get_policy(policy) if isinstance(policy, str) else policy
    if not _runs_live(type(obj)):
        raise LiveError(f"policy {obj.name!r} models kdump's capture kernel and makedumpfile; the live "
                        f"monitor runs the monitor's own policies: {', '.join(LIVE_POLICIES)}")
    return obj


@dataclass
class LiveParams:
    """How the monitor dumps."""

    policy: str = "tsubaki"  # a name of LIVE_POLICIES (run_protocol also takes a Policy object)
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

    order: str  # the policy run (the field's name is the JSON key of earlier releases)
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


def live_machine(layout: Layout, cpus: int = 2) -> Machine:
    """The guest as the protocol sees it: one region per piece, the base RAM first.

    A region is what the guest gets back at once: the base RAM (rebooted in)
    or one DIMM (onlined block by block, but as one unit).
    """
    regions = []
    for i, piece in enumerate(layout.pieces()):
        start = piece.ranges[0][0]
        end = piece.ranges[-1][0] + piece.ranges[-1][1]
        regions.append(Region(i, start, end - start, piece.ranges))
    return Machine(regions=regions, region_size=layout.dimm_size, cpus=cpus)


def _blocks_arg(pieces: list[Piece]) -> str:
    return " ".join(str(b) for p in pieces for b in p.blocks)


async def bring_online(guest: LiveGuest, pieces: list[Piece]) -> None:
    """Normal operation: the guest gets every DIMM (the agent onlines their blocks)."""
    if pieces:
        await guest.agent(f"online {_blocks_arg(pieces)}", timeout=120)


class _Run:
    """One panic: the writer, the books of the protocol, the guest's side of its actions."""

    def __init__(self, guest: LiveGuest, output: Path, params: LiveParams, policy: Policy, t0: float,
                 resume: ResumeState | None = None) -> None:
        self.guest, self.params, self.policy, self.t0 = guest, params, policy, t0
        self.layout = guest.layout
        self.pieces = self.layout.pieces()
        self.machine = live_machine(self.layout, cpus=getattr(guest, "smp", 2))
        # the guest's firmware and kernel boot in the base RAM: the reboot set, whatever the policy
        self.triage_plan: list[Step] = []  # planned ahead (the planner is slow) for policies that ask
        self.books = Books(self.machine, reboot_set=[self.machine.regions[0]],
                           triage=lambda: self.triage_plan)
        self.ready: asyncio.Task | None = None
        self.hello: asyncio.Future | None = None
        self.second: asyncio.Task | None = None
        self.handing: asyncio.Task | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        # the real world an earlier monitor left (resume): a guest already reset, DIMMs already online
        self.reset_before = bool(resume and resume.rebooted)
        self.online_before = frozenset(resume.handed) if resume else frozenset()
        # The notice's first record: the guest's whole memory map (base RAM
        # and every DIMM) and the dump level, so any prefix knows its total.
        self.writer = TsdWriter(output, dump_id=resume.dump_id if resume else None, level=params.level,
                                threads=params.threads,
                                producer=f"tsubaki-forensics monitor ({policy.name}, live)",
                                memory_map=MemoryMap.from_ranges(
                                    r for p in self.pieces for r in p.ranges))
        self.device = PacedDevice(params.storage, t0)
        self.result = LiveResult(order=policy.name, output=str(output), storage=params.storage.name,
                                 memory_bytes=sum(p.nbytes for p in self.pieces),
                                 base_bytes=self.pieces[0].nbytes)
        self.times = {p.name: PieceTimes(p.name, p.ranges[0][0], p.nbytes) for p in self.pieces}
        self.result.pieces = list(self.times.values())
        self.closed = False
        self._events: list[tuple[EventKind, float, dict]] = []
        self._step_start = 0

    def now(self) -> float:
        return time.time() - self.t0

    def name(self, region: Region) -> str:
        """The piece a region is (``base``, ``dimm3``): what the EVENT records say."""
        return self.pieces[region.index].name

    def label(self, step: Step) -> str:
        return self.pieces[step.region].name if step.region is not None else step.label

    def event(self, kind: EventKind, **fields) -> float:
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

    async def notice(self) -> Notice:
        notice = await fetch_notice(self.guest)
        layout = self.layout
        self.writer.write_metadata(vmcoreinfo=notice.vmcoreinfo, notes=notice.notes, properties={
            "live.order": self.policy.name, "live.storage": self.params.storage.name,
            "live.base": layout.base, "live.dimm_size": layout.dimm_size, "live.dimms": layout.dimms,
            "live.dimm_addrs": ",".join(hex(a) for a in layout.dimm_addrs),
            "collect.memory_bytes": self.result.memory_bytes, "live.panic_wall": repr(self.t0),
        })
        self.writer.write_event(EventKind.PANIC_NOTICE, 0.0, cpus=getattr(self.guest, "smp", 2))
        await self._flush()
        self.result.notice_s = self.event(EventKind.NOTICE_SAVED)
        return notice

    async def plan_triage(self, notice: Notice, planner, say) -> None:
        """Find the triage data on the paused guest's memory (``tsubaki-triage``): before the
        protocol starts, in a thread, while nothing of the guest has changed yet."""
        memory = GuestMemory(self.layout, vmcoreinfo=notice.vmcoreinfo, notes=notice.notes)
        began = time.monotonic()
        try:
            steps, notes = await asyncio.to_thread(planner, memory)
        finally:
            memory.close()
        for note in notes:
            say(f"triage: {note}")
        self.triage_plan = list(steps)
        planned = sum(n for step in steps for _, n in step.ranges)
        say(f"triage planned in {time.monotonic() - began:.1f} s: {len(steps)} steps, "
            f"{planned >> 10} KiB first")

    async def _flush(self) -> int:
        self._drain()
        offset = await asyncio.to_thread(self.writer.flush, self.params.fsync)
        await self.device.flushed()
        return offset

    # -- the protocol's actions ------------------------------------------------
    async def perform(self, action: Action) -> None:
        """Carry out one action of :func:`monitor_model.protocol.protocol` on the guest."""
        if isinstance(action, WriteStep):
            await self.write(action.step, action.todo)
        elif isinstance(action, FlushStep):
            await self._flush()
        elif isinstance(action, StepSaved):
            self.saved(action.step)
        elif isinstance(action, Reboot):
            await self.reboot(action.regions)
        elif isinstance(action, Give):
            self.give(action.region)
        else:  # pragma: no cover - a new action without a driver
            raise TypeError(f"unknown protocol action {action!r}")

    async def write(self, step: Step, todo) -> None:
        """Dump ``todo`` (guest-physical ranges) from the RAM files of the pieces holding them."""
        self._step_start = self.writer.bytes_written
        for start, length in todo:
            for piece, pos, n in self._in_pieces(start, length):
                fd = os.open(piece.path, os.O_RDONLY)
                try:
                    for at in range(pos, pos + n, WRITE_BATCH):
                        size = min(WRITE_BATCH, pos + n - at)
                        self._drain()
                        mark = self.writer.bytes_written
                        await asyncio.to_thread(self.writer.write_file_range, at, fd,
                                                at - piece.file_base, size)
                        await self.device.wrote(self.writer.bytes_written - mark)
                finally:
                    os.close(fd)

    def _in_pieces(self, start: int, length: int):
        """``(piece, paddr, length)`` for the parts of a range that are guest memory."""
        for piece in self.pieces:
            for s, n in piece.ranges:
                a, b = max(s, start), min(s + n, start + length)
                if a < b:
                    yield piece, a, b - a

    def saved(self, step: Step) -> None:
        """The step is durable: its EVENT, and the times of the pieces it completed."""
        nbytes = self.writer.bytes_written - self._step_start
        t = self.event(EventKind.SAVED, step=self.label(step), bytes=nbytes)
        if step.region is not None:
            self.times[self.label(step)].file_bytes += nbytes
        for region in self.machine.regions:
            times = self.times[self.name(region)]
            if times.saved_s is None and self.books.region_saved(region):
                times.saved_s = t

    def _check_durable(self, region: Region, how: str) -> None:
        if self.policy.dumps and not self.books.region_saved(region):
            raise HandbackSafetyError(f"policy {self.policy.name} would give the guest {self.name(region)} "
                                      f"({how}) before its dump is durable; stopped before it did")

    async def reboot(self, regions: tuple[Region, ...]) -> None:
        """Reboot the guest in the base RAM; DIMMs it reboots in too are onlined once it is up."""
        if not any(r.index == 0 for r in regions):
            raise LiveError(f"policy {self.policy.name} reboots in "
                            f"{', '.join(self.name(r) for r in regions) or 'nothing'}, but the guest "
                            "can only boot in its base RAM")
        for region in regions:
            self._check_durable(region, "reboot")
        # The base's "saved" and this "reboot_start" must be durable before the
        # guest runs again: a monitor killed after the reset and resumed would
        # otherwise not know the base RAM is Linux's now, and save it again
        # from memory the rebooted kernel has rewritten.
        if self.reset_before:  # an earlier monitor reset it (QEMU says so, resume.reconcile): never twice
            await self.attach_running()
        else:
            self.result.reset_s = self.event(EventKind.REBOOT_START, regions=[self.name(r) for r in regions])
            await self._flush()
            await self.reset()
        self.handing = asyncio.create_task(self.hand_back(self.queue))
        for region in regions:
            if region.index != 0:  # a DIMM: the rebooted kernel sees it offline until onlined
                self._online(region)

    def give(self, region: Region) -> None:
        """Hand a saved DIMM back: queued for the agent (it onlines in batches once the guest is up)."""
        self._check_durable(region, "hand-back")
        if self.handing is not None and self.handing.done():
            self.handing.result()  # raises the agent's error
        self._online(region)

    def _online(self, region: Region) -> None:
        if self.name(region) not in self.online_before:  # an earlier monitor handed it back already
            self.queue.put_nowait(self.pieces[region.index])

    # -- the guest ---------------------------------------------------------------
    async def reset(self) -> None:
        """Reboot the guest in the base RAM; the console is watched from here on."""
        guest = self.guest
        guest.drop_agent_state()
        self.console_from = guest.console_size()
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
        """From the reset on, a GUEST_PANICKED is the *rebooted* guest crashing.

        It is recorded the moment it happens, by a done-callback: the
        hand-back may be waiting for its next saved piece rather than for the
        agent then, and the dump must not close without the event.  The
        callback is the task's first, so it runs before any waiter resumes.
        """
        self.second = asyncio.create_task(self.guest.wait_panic(1e9))
        self.second.add_done_callback(self._panicked_again)

    def _panicked_again(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        wall, _event = task.result()
        self.result.panicked_again_s = wall - self.t0
        self.result.second_panic_wall = wall
        self.event(EventKind.PANIC_AGAIN, at=round(wall - self.t0, 6))

    async def _unless_panicked(self, aw):
        """``aw``'s result, or None if the rebooted guest panics first (it is paused then,
        so no agent will answer; the dump goes on, the hand-back stops)."""
        if self.result.panicked_again_s is not None:  # paused already: ask it nothing
            if asyncio.iscoroutine(aw):
                aw.close()
            return None
        task = asyncio.ensure_future(aw)
        await asyncio.wait({task, self.second}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        self.second.result()  # raises if watching failed; a panic was recorded by _panicked_again
        return None

    async def hand_back(self, queue: asyncio.Queue) -> None:
        """Online each queued DIMM as soon as the rebooted guest's agent is up."""
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


def plan_triage_steps(memory: GuestMemory) -> tuple[list[Step], list[str]]:
    """The emulation's triage planner (drgn runs the analyses and records the pages they read)
    on the paused guest: its steps and notes."""
    from monitor_model.triage import plan_triage  # drgn and every analysis: only when asked

    plan = plan_triage(memory)
    return plan.steps(), list(plan.notes)


async def run_protocol(guest: LiveGuest, output: Path, params: LiveParams, panic_wall: float,
                       *, on_panic: Callable[[], None] | None = None,
                       progress: Callable[[str], None] | None = None,
                       resume: ResumeState | None = None,
                       policy: Policy | None = None,
                       triage: Callable[[GuestMemory], tuple[list[Step], list[str]]] = plan_triage_steps,
                       ) -> LiveResult:
    """Handle one panic of ``guest`` (already paused by pvpanic) and write ``output``.

    :param panic_wall: the wall-clock time QEMU stamped on GUEST_PANICKED.
    :param on_panic: called first, while the guest is still paused (tests copy
        the memory here to compare the dump against).
    :param resume: what the earlier file(s) of this dump hold (a restarted
        monitor): the new file gets the same dump id and only what is missing.
    :param policy: a policy object to run instead of ``params.policy`` (one
        that is not registered: a plugin's, a test's).
    :param triage: plans the triage steps for a policy that asks for them
        (``plans_triage``): steps and notes, from the paused guest's memory.
    :raises LiveError: QEMU, agent or boot failures, a policy that cannot run
        live (the dump written so far stays valid).
    :raises HandbackSafetyError: the policy would have given the guest memory
        whose dump was not durable (stopped before the guest got it).
    """
    policy = live_policy(policy if policy is not None else params.policy)
    say = progress or (lambda msg: None)
    if on_panic is not None:
        on_panic()
    run = _Run(guest, Path(output), params, policy, panic_wall, resume)
    try:
        if resume is None:
            notice = await run.notice()
            say(f"notice saved at {run.result.notice_s:.2f} s; policy {policy.name}")
            if policy.plans_triage:
                await run.plan_triage(notice, triage, say)
        else:
            if policy.plans_triage:  # the guest may run already: its memory is no longer the crash's
                say("resuming: no triage planned (the earlier file holds what the first run planned)")
            kept = run.books.resume(resume.ranges)
            run.event(EventKind.RESUMED, previous=resume.name, bytes=kept, saved=sorted(resume.saved),
                      handed=sorted(resume.handed))
            await run._flush()
            say(f"resuming ({policy.name}): {kept >> 20} MiB saved before, "
                f"rebooted {resume.rebooted}, handed back {sorted(resume.handed) or 'nothing'}")
        for action in protocol(policy, run.books, dump=policy.dumps):
            await run.perform(action)
            if isinstance(action, StepSaved) and action.step.region is not None:
                say(f"{run.label(action.step)} saved at {run.times[run.label(action.step)].saved_s or 0:.2f} s")
            elif isinstance(action, Reboot):
                say(f"{'attached to the guest reset before' if run.reset_before else 'guest reset'} "
                    f"at {run.result.reset_s:.2f} s")
        run.queue.put_nowait(None)
        await run.close()
        say(f"dump complete at {run.result.dump_complete_s:.2f} s ({run.result.bytes_written} bytes)")
        if run.handing is not None:
            await run.handing
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
        for task in (run.handing, run.ready, run.hello, run.second):
            if task is not None and not task.done():
                task.cancel()
        run.writer.close()
