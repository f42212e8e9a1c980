"""The dump engine: the monitor's side of a panic, step by step.

1. Panic notice (the SMC): Linux's memory map and the dump level (what the
   dump should hold), the VMCOREINFO and the ELF notes (registers) are
   stored first and flushed; the monitor takes one CPU.
2. The monitor classifies every page at the dump level (:mod:`.pages`;
   charged to its one CPU by the model of :mod:`.cpu`) and chooses the
   reboot regions by the bytes they need written at that level.
3. The policy's steps run in order: each step's kept pages are read from
   the emulated RAM, zero pages elided and the rest compressed with zstd by
   the real :class:`~tsubaki_forensics.tsd.TsdWriter` (real work, really
   timed); the pages the level leaves out are recorded as excluded; then
   flushed.  The CPU model and the storage model turn it into emulated time
   (compression and writing overlap).
4. The policy reboots Linux and hands regions back through :class:`Monitor`;
   every region Linux gets is overwritten in the emulated RAM, as a booting
   kernel would, so a region handed back too early shows up as wrong bytes
   in the dump.  Each hand-back is recorded with the durable offset at that
   moment; a *strict* engine refuses an unsafe one.
5. Closing writes the index; the timeline gets Linux's memory demand and the
   stalls it causes.

The order of 3-4 (the policy's steps and decisions) is not written here:
:func:`.protocol.protocol` yields it as actions, and this module is its
emulated driver (:meth:`_Run.perform`), as ``tsubaki_forensics/live/monitor.py``
is its live one.  kdump is not run here: :mod:`.kdump_run` models
makedumpfile in a capture kernel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tsubaki_forensics.contracts.events import EventKind
from tsubaki_forensics.elfnotes import prstatus_notes
from tsubaki_forensics.errors import SourceError, TsubakiError

from .clock import MonitorClock
from .kdump_run import run_kdump
from .machine import EmulatedRam, Machine, Region
from .pages import KEPT, MonitorPages, PageBook
from .policies import Policy, Step
from .protocol import Action, Books, FlushStep, Give, Reboot, StepSaved, WriteStep, protocol
from .results import (
    DEFAULT_BOOT_S,
    REBOOT_CHOICES,
    CollectParams,
    HandBack,
    HandbackSafetyError,
    RunResult,
)
from .resume import Resume
from .storage import StorageDevice
from .timeline import DemandModel, Timeline, stall_intervals

__all__ = [
    "DEFAULT_BOOT_S",
    "CollectParams",
    "HandBack",
    "HandbackSafetyError",
    "RunResult",
    "Monitor",
    "run_policy",
    "check_params",
    "Resume",
]

READ_SIZE = 8 << 20


class Monitor(Books):
    """The emulated monitor: the protocol's books (:class:`~.protocol.Books`,
    the :class:`~.policies.Context` policies act through) plus the emulated
    clock, RAM, storage and timeline that carry out its decisions."""

    def __init__(self, machine: Machine, ram: EmulatedRam, params: CollectParams,
                 timeline: Timeline, device: StorageDevice, triage: Callable[[], list[Step]]):
        super().__init__(machine, reboot_set=machine.reboot_regions(params.reboot_mem),  # may be re-chosen
                         triage=triage)
        self.ram = ram
        self.params = params
        self.timeline = timeline
        self.device = device
        self.handbacks: list[HandBack] = []
        self.records_end: dict[int, int] = {}
        self.now = 0.0
        self.reboot_at: float | None = None
        self._seed = 0
        self.notice_bytes = 0
        self.dumps = True  # False: the policy dumps nothing, so nothing can be unsafe
        self.pages: MonitorPages | None = None  # every page's class at the dump level
        self.record: Callable[..., None] | None = None  # EVENT records into the dump

    def event(self, time: float, kind: EventKind, **fields) -> None:
        """An event on the timeline, and in the dump as it happens (a dump cut
        short still tells when Linux got which memory)."""
        self.timeline.add(time, kind, **fields)
        if self.record is not None:
            self.record(kind, time, **fields)

    # -- carrying out the policy's decisions (protocol.Reboot, protocol.Give) --
    def start_linux(self, regions: tuple[Region, ...]) -> None:
        """Linux starts booting in ``regions`` now."""
        self.reboot_at = self.now
        self.event(self.now, EventKind.REBOOT_START, regions=[r.index for r in regions])
        for region in regions:
            self._give(region, EventKind.REBOOT)
        self.event(self.now + self.params.boot_s, EventKind.RESTART)

    def give(self, region: Region) -> None:
        """``region`` is Linux's now (memory hot-add)."""
        self._give(region, EventKind.HAND_BACK)

    def _give(self, region: Region, how: EventKind) -> None:
        complete = all(self.written.covers(s, n) for s, n in region.ranges)
        record = HandBack(
            time=self.now,
            region=region.index,
            how=how,
            durable_offset=self.device.durable_offset(self.now),
            records_end=self.records_end.get(region.index) if complete else None,
            complete=complete,
        )
        self.handbacks.append(record)
        if self.params.strict and not record.safe and self.dumps:
            raise HandbackSafetyError(
                f"{region} given to Linux ({how}) at {self.now:.3f} s before its dump was durable"
            )
        self._seed += 1
        for start, length in region.ranges:
            self.ram.overwrite(start, length, seed=self._seed)
        self.timeline.give(self.now, region.nbytes)
        self.event(self.now, how, region=region.index, bytes=region.nbytes)


def check_params(source, params: CollectParams) -> Machine:
    """The machine for ``source``; raises the parameter errors before any work."""
    if params.reboot_choice not in REBOOT_CHOICES:
        raise TsubakiError(f"--reboot-regions {params.reboot_choice!r}: use one of {', '.join(REBOOT_CHOICES)}")
    machine = Machine.from_ranges(source.ranges, params.region_size, monitor_mem=params.monitor_mem)
    machine.reboot_regions(params.reboot_mem)
    return machine


def run_policy(
    source,
    policy: Policy,
    params: CollectParams,
    output: str | os.PathLike[str] | None,
    *,
    triage: Callable[[Machine], list[Step]] | None = None,
    progress: Callable[[int], None] | None = None,
    resume: Resume | None = None,
    book: PageBook | None = None,
) -> RunResult:
    """Run one policy on ``source`` and write the dump to ``output``.

    :param triage: builds the triage steps (only the triage policy asks).
    :param resume: a previous, interrupted file of the same dump: its id is
        reused and the ranges it holds are not written again.
    :param progress: called with the number of source bytes just processed.
    :param book: the source's page classifications, shared by the policies
        of one ``collect`` (made here if not given).
    :raises HandbackSafetyError: a strict run caught the policy giving Linux
        memory whose dump was not durable.
    """
    check_params(source, params)
    if params.boot_s is None:
        params = replace(params, boot_s=_source_boot(source))
    if params.capture_boot_s is None:
        params = replace(params, capture_boot_s=params.boot_s)
    book = book or PageBook(source)
    if policy.kdump_model:
        return run_kdump(source, policy, params, output, book, run_policy)
    run = _Run(source, policy, params, triage, progress, book)
    out_path = Path(output) if output is not None and policy.dumps else None
    try:
        if out_path is not None:
            run.open(out_path, resume)
        run.classify()
        run.choose_reboot_regions()
        for action in protocol(policy, run.monitor, dump=run.writer is not None, resumed=run.resumed):
            run.perform(action)
        run.close()
    finally:
        if run.writer is not None:
            run.writer.close()
    return run.result(out_path)


class _Run:
    """The state of one policy's run: the monitor, the writer, the books."""

    def __init__(self, source, policy: Policy, params: CollectParams, triage, progress,
                 book: PageBook) -> None:
        self.wall0 = time.perf_counter()
        self.source, self.policy, self.params, self.progress = source, policy, params, progress
        self.book = book
        self.level = policy.level(params)
        self.cpu_model_s = 0.0
        self.cpus = params.cpus or _count_cpus(source.notes) or 2
        self.machine = Machine.from_ranges(source.ranges, params.region_size,
                                           monitor_mem=params.monitor_mem, cpus=self.cpus)
        self.timeline = Timeline()
        self.device = StorageDevice(params.storage)
        self.clock = MonitorClock(params.cpu_scale)
        self.ram = EmulatedRam(source)
        machine = self.machine
        self.monitor = Monitor(machine, self.ram, params, self.timeline, self.device,
                               lambda: triage(machine) if triage else [])
        self.monitor.dumps = policy.dumps
        self.resumed = False
        self._before = self._offset = 0  # file offsets around the step being written
        self.writer = None
        self.cpu_total = 0.0
        self.used = 0
        self.complete: float | None = None
        self.stalls: list[tuple[float, float]] = []
        self.steps: list[dict] = []
        self.regions = {r.index: {"index": r.index, "base": r.base, "bytes": r.nbytes,
                                  "file_bytes": 0, "saved_s": None, "given_s": None}
                        for r in machine.regions}
        self.timeline.add(0.0, EventKind.PANIC, cpus=self.cpus, memory=machine.total)

    def open(self, path: Path, resume: Resume | None = None) -> None:
        """Create the dump and store the panic notice: registers and VMCOREINFO first."""
        from tsubaki_forensics.tsd import MemoryMap, TsdWriter

        p, src, monitor = self.params, self.source, self.monitor
        props = _properties(src, self.policy, p, self.machine)
        for key, before in resume.properties if resume else ():
            if key in props and props[key] != before:  # the two files could not be merged
                raise TsubakiError(f"--resume-from {resume.name}: {key} was {before!r}, now "
                                   f"{props[key]!r}; resume with the same source and options")
        # The notice's first record: Linux's whole memory map and the dump
        # level, so any prefix of the dump knows what it should hold.
        self.writer = TsdWriter(path, level=p.level, threads=p.threads, arch=getattr(src, "arch", "x86_64"),
                                dump_id=resume.dump_id if resume else None,
                                producer=f"tsubaki-forensics collect ({self.policy.name})",
                                memory_map=MemoryMap.from_ranges(
                                    (r for region in self.machine.regions for r in region.ranges),
                                    dump_level=max(1, self.level or 1)))
        self.writer.write_metadata(vmcoreinfo=src.vmcoreinfo, notes=src.notes,
                                   properties=props, symbolpack=p.symbolpack)
        self.writer.write_event(EventKind.PANIC_NOTICE, 0.0, cpus=self.cpus)
        monitor.record = self.writer.write_event
        offset = self.writer.flush(durable=p.fsync)
        monitor.now = self.device.flush(self.device.write(offset, 0.0))
        monitor.notice_bytes = offset
        self.timeline.save(monitor.now, offset)
        self.timeline.add(monitor.now, EventKind.NOTICE_SAVED, bytes=offset)
        self.timeline.add(monitor.now, EventKind.CPU_TAKEN, cpu=self.cpus - 1)
        if resume is not None:
            self._resume(resume, offset)
        if self.policy.capture_boot:
            monitor.now += p.capture_boot_s
            self.timeline.add(monitor.now, EventKind.CAPTURE_KERNEL_READY)

    def _resume(self, resume: Resume, offset: int) -> None:
        """Count the previous file's ranges as written and durable (they are on
        storage already); a region they cover whole is safe to hand back."""
        monitor = self.monitor
        self.resumed = True
        kept = monitor.resume(resume.ranges)
        for region in self.machine.regions:
            if monitor.region_saved(region):
                monitor.records_end[region.index] = offset
        monitor.event(monitor.now, EventKind.RESUMED, previous=resume.name, bytes=kept)

    def classify(self) -> None:
        """Classify every page at the dump level, on the monitor's CPU, right
        after the notice: the plan (what to write, where to reboot) needs it."""
        monitor, cpu = self.monitor, self.params.cpu
        if self.writer is None or self.level is None:
            return
        pages = monitor.pages = self.book.at(self.level)
        took = cpu.zero_test_s(pages.candidate_bytes)
        if pages.struct_pages:  # the struct pages were read: the level's rules ran
            took += cpu.classify_s(self.machine.total)
        monitor.now += took
        self.cpu_model_s += took
        monitor.event(monitor.now, EventKind.PAGES_CLASSIFIED, level=self.level,
                      kept=pages.kept_pages(), write_bytes=pages.kept_pages() * pages.page_size)

    def choose_reboot_regions(self) -> None:
        """For early-reboot policies (``sparse``): region 0 (the x86 real-mode
        trampoline must be there), then the regions needing the fewest bytes
        written at the dump level, until Linux has ``reboot_mem``."""
        p, monitor = self.params, self.monitor
        if self.policy.reboots_early and p.reboot_choice == "sparse" and monitor.pages is not None:
            first, *rest = self.machine.regions
            chosen, got = [first], first.nbytes
            for region in sorted(rest, key=lambda r: (monitor.region_cost(r), r.index)):
                if got >= p.reboot_mem:
                    break
                chosen.append(region)
                got += region.nbytes
            monitor.reboot_set = sorted(chosen, key=lambda r: r.index)
            self.timeline.add(monitor.now, EventKind.REBOOT_REGIONS_CHOSEN,
                              regions=[r.index for r in monitor.reboot_set],
                              write_bytes=sum(monitor.region_cost(r) for r in monitor.reboot_set))
        self.clock.cpu_free_at = monitor.now

    def perform(self, action: Action) -> None:
        """Carry out one action of the protocol (:mod:`.protocol`) on the emulated machine."""
        monitor = self.monitor
        if isinstance(action, WriteStep):
            self._write_step(action.step, action.todo)
        elif isinstance(action, FlushStep):
            self.writer.flush(durable=self.params.fsync)
            monitor.now = self.device.flush(monitor.now)
        elif isinstance(action, StepSaved):
            self._saved_step(action.step, action.todo)
        elif isinstance(action, Reboot):
            monitor.start_linux(action.regions)
        elif isinstance(action, Give):
            monitor.give(action.region)
        else:  # pragma: no cover - a new action without a driver
            raise TypeError(f"unknown protocol action {action!r}")

    def _write_step(self, step: Step, todo: tuple[tuple[int, int], ...]) -> None:
        """Read, compress and write a step's pieces; the device model times it."""
        monitor, writer, device = self.monitor, self.writer, self.device
        measured, kept = 0.0, 0
        for start, length in todo:
            cpu, nbytes = self._write(start, length)
            measured += cpu
            kept += nbytes
        self.cpu_total += measured
        modelled = self.params.cpu.zstd_s(kept)
        self.cpu_model_s += modelled
        self._before = before = device.written
        offset = writer.flush(durable=False)
        monitor.now = device.write(offset - before, monitor.now,
                                   cpu_s=self.clock.cost(modelled, measured),
                                   pieces=-(-sum(n for _, n in todo) // READ_SIZE))
        self._offset = offset
        for region in _regions_of(self.machine, list(todo)):
            monitor.records_end[region.index] = offset
            self.regions[region.index]["file_bytes"] += _share(region, list(todo), offset - before)

    def _saved_step(self, step: Step, todo: tuple[tuple[int, int], ...]) -> None:
        """The step is durable: the timeline, the step and region rows, the EVENT record."""
        monitor, offset, before = self.monitor, self._offset, self._before
        self.timeline.save(monitor.now, offset - before)
        self.timeline.add(monitor.now, EventKind.SAVED, step=step.label, bytes=offset - before)
        self.steps.append({"label": step.label, "memory_bytes": sum(n for _, n in todo),
                           "file_end": offset, "saved_s": round(monitor.now, 6)})
        self.writer.write_event(EventKind.SAVED, monitor.now, step=step.label)
        for region in self.machine.regions:
            row = self.regions[region.index]
            if row["saved_s"] is None and monitor.region_saved(region):
                row["saved_s"] = round(monitor.now, 6)

    def _write(self, start: int, length: int) -> tuple[float, int]:
        """Read a range from the emulated RAM into the writer, the pages the
        level keeps as memory and the others as excluded; returns the
        measured compression CPU seconds and the non-zero bytes written.

        Every window is read into one reused buffer (``read_into``; issue 21:
        a new 8 MiB block per window before), which ``write_memory`` may reuse
        once it returns.  Overlapping the reads with compression on both
        workers (``write_memory`` of several windows in one pipeline run, a
        ring of buffers) was measured and not kept: +19-28% CPU, +45-60 MiB
        RSS and 10-18% more wall on the loaded 2-core machine
        (docs/BENCHMARKS.md, "Fourth pass").
        """
        cpu, nonzero = 0.0, 0
        pages = self.monitor.pages
        filters = pages is not None and self.level is not None and self.level > 1
        buf = self._read_buffer()
        for pos in range(start, start + length, READ_SIZE):
            size = min(READ_SIZE, start + length - pos)
            runs = pages.runs(pos, size) if filters else [(pos, size, KEPT)]
            for lo, n, cls in runs:
                if cls != KEPT:
                    self.writer.write_excluded(lo, n, cls)
                    continue
                # the whole buffer when the window fills it: the writer scans a
                # bytearray for zero pages without numpy
                view = buf if n == len(buf) else memoryview(buf)[:n]
                try:
                    self.ram.read_into(lo, view)
                except (SourceError, OSError) as e:
                    # what could not be read is recorded as missing, never as zeros
                    why = str(e) if isinstance(e, SourceError) else f"read error: {e.strerror or e}"
                    self.writer.write_missing(lo, n, why)
                else:
                    stats = self.writer.write_memory(lo, view)
                    cpu += stats.compress_seconds
                    nonzero += stats.raw_bytes - stats.zero_bytes
            if self.progress:
                self.progress(size)
        return cpu, nonzero

    def _read_buffer(self) -> bytearray:
        """The one window-sized buffer every read goes into, made once."""
        buf = getattr(self, "_buf", None)
        if buf is None:
            buf = self._buf = bytearray(READ_SIZE)
        return buf

    def close(self) -> None:
        """Compute the stalls, write the timeline events and the index, close."""
        monitor, timeline, device = self.monitor, self.timeline, self.device
        restart = monitor.reboot_at + self.params.boot_s
        demand = DemandModel(self.params.boot_footprint, self.params.demand_rate,
                             _used_bytes(self.book) or self.machine.total)
        self.stalls = stall_intervals(timeline.owned, restart, demand) if self.policy.dumps else []
        for start, end in self.stalls:
            timeline.add(start, EventKind.STALL_START)
            timeline.add(end, EventKind.STALL_END, seconds=round(end - start, 6))
        if self.writer is None:
            return
        for event in timeline.events:
            if event.kind in _LATE_EVENTS:
                self.writer.write_event(event.kind, event.time, **event.fields)
        self.writer.write_event(EventKind.CPU_RETURNED, monitor.now, cpu=self.cpus - 1)
        before = device.written
        self.writer.close()
        closed = self.writer.bytes_written
        self.writer = monitor.record = None
        self.complete = device.flush(device.write(closed - before, monitor.now))
        timeline.save(self.complete, closed - before)
        timeline.add(self.complete, EventKind.DUMP_COMPLETE, bytes=closed)
        timeline.add(self.complete, EventKind.CPU_RETURNED, cpu=self.cpus - 1)

    def result(self, out_path: Path | None) -> RunResult:
        """The outcome, with the ideal restart to compare against."""
        monitor, timeline, p = self.monitor, self.timeline, self.params
        for h in monitor.handbacks:
            self.regions[h.region]["given_s"] = round(h.time, 6)
        timeline.events.sort(key=lambda e: e.time)
        # The ideal restart: boot time plus the bare transfer of the memory
        # records saved before the reboot (no metadata, no flush latency).
        before_reboot = sum(n for t, n in _increments(timeline.saved) if t <= monitor.reboot_at)
        ideal = p.boot_s + p.storage.write_time(before_reboot - monitor.notice_bytes)
        if self.policy.capture_boot:
            ideal += p.capture_boot_s
        stall = sum(e - s for s, e in self.stalls)
        return RunResult(
            policy=self.policy.name,
            storage=p.storage.name,
            source=getattr(self.source, "name", "?"),
            output=out_path,
            memory_bytes=self.machine.total,
            used_bytes=_used_bytes(self.book),
            boot_s=p.boot_s,
            reboot_start_s=monitor.reboot_at,
            restart_s=monitor.reboot_at + p.boot_s,
            full_memory_s=max(h.time for h in monitor.handbacks),
            dump_complete_s=self.complete,
            stall_s=stall,
            bytes_written=self.device.written,
            ideal_restart_s=ideal,
            cpu_compress_s=self.cpu_total,
            wall_s=time.perf_counter() - self.wall0,
            regions=list(self.regions.values()),
            steps=self.steps,
            handbacks=monitor.handbacks,
            stalls=self.stalls,
            timeline=timeline,
            flushes=list(self.device.flushes),
            dump_level=self.level,
            cpu_model_s=self.cpu_model_s,
            pages=_pages_summary(monitor.pages),
        )


def _used_bytes(book: PageBook) -> int:
    """Non-zero memory of the source (the demand model's target), 0 if unknown."""
    try:
        return book.used_bytes()
    except TsubakiError:
        return 0


def _pages_summary(pages: MonitorPages | None) -> dict | None:
    """``{"total", "kept", "excluded": {class: pages}}`` of the level, as ``inspect`` counts them."""
    if pages is None:
        return None
    counts = pages.counts()
    kept = counts.pop("kept")
    return {"total": kept + sum(counts.values()), "kept": kept, "excluded": counts}


_LATE_EVENTS = (EventKind.STALL_START, EventKind.STALL_END)
"""Timeline events known only at the end (from the whole hand-back history),
recorded in the dump's EVENT records when it is closed."""


def _increments(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return [(t, v - steps[i - 1][1]) for i, (t, v) in enumerate(steps) if i]


def _regions_of(machine: Machine, ranges: list[tuple[int, int]]) -> list[Region]:
    seen: dict[int, Region] = {}
    for start, length in ranges:
        pos = start
        while pos < start + length:
            region = machine.region_of(pos)
            if region is None:
                break
            seen[region.index] = region
            pos = region.base + region.size
    return list(seen.values())


def _share(region: Region, ranges: list[tuple[int, int]], nbytes: int) -> int:
    """The part of a step's file bytes attributed to ``region`` (by raw size)."""
    total = sum(n for _, n in ranges)
    mine = sum(
        max(0, min(s + n, region.base + region.size) - max(s, region.base)) for s, n in ranges
    )
    return round(nbytes * mine / total) if total else 0


def _source_boot(source) -> float:
    value = (getattr(source, "properties", None) or {}).get("boot_s")
    try:
        return float(value) if value is not None else DEFAULT_BOOT_S
    except ValueError:
        return DEFAULT_BOOT_S


def _count_cpus(notes: bytes | None) -> int:
    """CPUs of the crashed machine: one NT_PRSTATUS note each."""
    return len(prstatus_notes(notes))


def _properties(source, policy: Policy, params: CollectParams, machine: Machine) -> dict:
    props = {str(k): str(v) for k, v in (getattr(source, "properties", None) or {}).items()}
    props.update({
        "collect.policy": policy.name,
        "collect.storage": params.storage.name,
        "collect.region_size": str(params.region_size),
        "collect.reboot_mem": str(params.reboot_mem),
        "collect.memory_bytes": str(machine.total),
        "collect.dump_level": str(policy.level(params)),
    })
    return props
