"""The dump engine: the monitor's side of a panic, step by step.

1. Panic notice (the SMC): the VMCOREINFO and the ELF notes (registers) are
   stored first and flushed; the monitor takes one CPU.
2. The policy's steps run in order: each step's ranges are read from the
   emulated RAM, zero pages elided and the rest compressed with zstd by the
   real :class:`~tsubaki_forensics.tsd.TsdWriter` (real work, really timed),
   then flushed; the storage model turns the bytes into emulated time.
3. The policy reboots Linux and hands regions back through :class:`Monitor`;
   every region Linux gets is overwritten in the emulated RAM, as a booting
   kernel would, so a region handed back too early shows up as wrong bytes
   in the dump.  Each hand-back is recorded with the durable offset at that
   moment; a *strict* engine refuses an unsafe one.
4. Closing writes the index; the timeline gets Linux's memory demand and the
   stalls it causes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsubaki_forensics.errors import SourceError, TsubakiError

from .clock import MonitorClock
from .machine import HOTPLUG_BLOCK, EmulatedRam, IntervalSet, Machine, Region, choose_reboot_regions
from .policies import Policy, Step
from .storage import PROFILES, StorageDevice, StorageProfile
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
]

DEFAULT_BOOT_S = 1.45
"""Boot time when the source does not say: kernel start to user space at work
(the lab init's ``starting workload`` line, 1.447 s in the guest's log) of the
crash lab's default guest (Debian 12 cloud kernel 6.1.0-56, 512 MiB, 2 vCPUs,
QEMU TCG), measured 2026-11-26; see docs/COLLECT.md.  Lab sources carry their
own measured figure (:func:`monitor_model.sources.lab_boot_seconds`)."""

READ_SIZE = 8 << 20
REBOOT_CHOICES = ("sparse", "low")


class HandbackSafetyError(TsubakiError):
    """A policy gave Linux memory whose dump was not yet durable."""


@dataclass
class CollectParams:
    """Everything the emulation is parameterised by (docs/COLLECT.md)."""

    storage: StorageProfile = PROFILES["sd-uhs1"]
    region_size: int = HOTPLUG_BLOCK
    reboot_mem: int = 256 << 20
    boot_s: float | None = None  # None: the source's measured boot, else DEFAULT_BOOT_S
    capture_boot_s: float | None = None  # kdump's capture kernel; None: boot_s
    monitor_mem: int = 64 << 20
    cpus: int | None = None  # None: from the source's notes (one per CPU), else 2
    cpu_scale: float | None = None  # put measured compression CPU time, scaled, on the timeline
    demand_rate: float = 64 << 20  # bytes/s of memory demand growth after restart
    boot_footprint: int = 128 << 20  # memory Linux needs right after boot
    reboot_choice: str = "sparse"  # "sparse": zero-page scan picks cheap regions; "low": lowest
    scan_bandwidth: float = 4e9  # bytes/s the monitor core reads memory at (zero-page scan)
    level: int = 3
    threads: int = 2
    fsync: bool = True
    strict: bool = True


@dataclass(frozen=True)
class HandBack:
    """Memory given to Linux: by reboot or by hand-back."""

    time: float
    region: int
    how: str  # "reboot" or "hand-back"
    durable_offset: int  # file bytes durable at that time
    records_end: int | None  # file offset after the region's last record; None: not written
    complete: bool  # every byte of the region was written

    @property
    def safe(self) -> bool:
        """The region's whole dump was durable when Linux got it."""
        return self.complete and self.records_end is not None and self.records_end <= self.durable_offset


@dataclass
class RunResult:
    """What one policy did, in emulated seconds since the panic."""

    policy: str
    storage: str
    source: str
    output: Path | None
    memory_bytes: int
    used_bytes: int  # non-zero bytes read (what the workload had in use)
    boot_s: float
    reboot_start_s: float
    restart_s: float
    full_memory_s: float
    dump_complete_s: float | None
    stall_s: float
    bytes_written: int
    ideal_restart_s: float
    cpu_compress_s: float
    wall_s: float
    regions: list[dict]
    steps: list[dict]  # label, memory bytes, file_end (durable offset after it), saved_s
    handbacks: list[HandBack]
    stalls: list[tuple[float, float]]
    timeline: Timeline = field(repr=False)
    flushes: list[tuple[float, int]] = field(default_factory=list, repr=False)

    def durable_offset_at(self, time: float) -> int:
        """File bytes on stable storage at emulated ``time`` (a power cut then
        leaves exactly this prefix of the dump)."""
        return max((off for t, off in self.flushes if t <= time), default=0)

    @property
    def unsafe_handbacks(self) -> list[HandBack]:
        """Hand-backs that happened before the region's dump was durable."""
        return [h for h in self.handbacks if not h.safe]

    def to_json(self) -> dict:
        """The documented JSON summary (docs/COLLECT.md)."""
        return {
            "policy": self.policy,
            "storage": self.storage,
            "source": self.source,
            "output": str(self.output) if self.output else None,
            "memory_bytes": self.memory_bytes,
            "used_bytes": self.used_bytes,
            "boot_s": _r(self.boot_s),
            "reboot_start_s": _r(self.reboot_start_s),
            "restart_s": _r(self.restart_s),
            "full_memory_s": _r(self.full_memory_s),
            "dump_complete_s": _r(self.dump_complete_s),
            "stall_s": _r(self.stall_s),
            "bytes_written": self.bytes_written,
            "ideal_restart_s": _r(self.ideal_restart_s),
            "cpu_compress_s": _r(self.cpu_compress_s),
            "wall_s": _r(self.wall_s),
            "unsafe_handbacks": len(self.unsafe_handbacks),
            "regions": self.regions,
            "steps": self.steps,
            "events": [
                {"time_s": _r(e.time), "kind": e.kind, **e.fields} for e in self.timeline.events
            ],
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class Monitor:
    """The running monitor: the :class:`~.policies.Context` policies act through."""

    def __init__(self, machine: Machine, ram: EmulatedRam, params: CollectParams,
                 timeline: Timeline, device: StorageDevice, triage: Callable[[], list[Step]]):
        self.machine = machine
        self.ram = ram
        self.params = params
        self.timeline = timeline
        self.device = device
        self.reboot_set = machine.reboot_regions(params.reboot_mem)  # may be re-chosen
        self.rebooted = False
        self.handed_back: set[int] = set()
        self.handbacks: list[HandBack] = []
        self.written = IntervalSet()
        self.saved = IntervalSet()
        self.records_end: dict[int, int] = {}
        self.now = 0.0
        self.reboot_at: float | None = None
        self._triage = triage
        self._seed = 0
        self.notice_bytes = 0
        self.dumps = True  # False: the policy dumps nothing, so nothing can be unsafe

    # -- Context -------------------------------------------------------------
    def region_saved(self, region: Region) -> bool:
        """Every byte of the region is durable in the dump."""
        return all(self.saved.covers(s, n) for s, n in region.ranges)

    def triage_steps(self) -> list[Step]:
        """Triage steps for this source (see :mod:`.triage`)."""
        return self._triage()

    def reboot(self, regions: list[Region]) -> None:
        """Linux starts booting in ``regions`` now."""
        if self.rebooted:
            raise TsubakiError("Linux was already rebooted")
        self.rebooted = True
        self.reboot_at = self.now
        self.timeline.add(self.now, "reboot_start", regions=[r.index for r in regions])
        for region in regions:
            self._give(region, "reboot")
        self.timeline.add(self.now + self.params.boot_s, "restart")

    def hand_back(self, region: Region) -> None:
        """Give ``region`` to Linux now (memory hot-add)."""
        if not self.rebooted:
            raise TsubakiError("cannot hand memory back before Linux reboots")
        self._give(region, "hand-back")

    def _give(self, region: Region, how: str) -> None:
        if region.index in self.handed_back:
            raise TsubakiError(f"{region} was already given to Linux")
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
        self.handed_back.add(region.index)
        self._seed += 1
        for start, length in region.ranges:
            self.ram.overwrite(start, length, seed=self._seed)
        self.timeline.give(self.now, region.nbytes)
        self.timeline.add(self.now, how, region=region.index, bytes=region.nbytes)


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
) -> RunResult:
    """Run one policy on ``source`` and write the dump to ``output``.

    :param triage: builds the triage steps (only the triage policy asks).
    :param progress: called with the number of source bytes just processed.
    """
    from tsubaki_forensics.tsd import TsdWriter

    import time

    wall0 = time.perf_counter()
    check_params(source, params)
    notes = source.notes
    cpus = params.cpus or _count_cpus(notes) or 2
    machine = Machine.from_ranges(source.ranges, params.region_size,
                                  monitor_mem=params.monitor_mem, cpus=cpus)
    if params.boot_s is None:
        params = _with(params, boot_s=_source_boot(source))
    if params.capture_boot_s is None:
        params = _with(params, capture_boot_s=params.boot_s)
    timeline = Timeline()
    device = StorageDevice(params.storage)
    clock = MonitorClock(params.cpu_scale)
    ram = EmulatedRam(source)
    monitor = Monitor(machine, ram, params, timeline, device,
                      lambda: triage(machine) if triage else [])
    monitor.dumps = policy.dumps
    timeline.add(0.0, "panic", cpus=cpus, memory=machine.total)
    cpu_total = 0.0
    used = 0
    region_rows = {r.index: {"index": r.index, "base": r.base, "bytes": r.nbytes,
                             "file_bytes": 0, "saved_s": None, "given_s": None}
                   for r in machine.regions}
    step_rows: list[dict] = []
    writer = None
    out_path = Path(output) if output is not None and policy.dumps else None
    try:
        if out_path is not None:
            writer = TsdWriter(out_path, level=params.level, threads=params.threads,
                               producer=f"tsubaki-forensics collect ({policy.name})")
            # The SMC notice: registers and VMCOREINFO are stored first.
            writer.write_metadata(vmcoreinfo=source.vmcoreinfo, notes=notes,
                                  properties=_properties(source, policy, params, machine))
            writer.write_event("panic_notice", 0.0, cpus=cpus)
            monitor.now = _save(writer, device, params, 0.0)
            timeline.save(monitor.now, device.written)
            monitor.notice_bytes = device.written
            timeline.add(monitor.now, "notice_saved", bytes=device.written)
            timeline.add(monitor.now, "cpu_taken", cpu=cpus - 1)
            if policy.capture_boot:
                monitor.now += params.capture_boot_s
                timeline.add(monitor.now, "capture_kernel_ready")
        if policy.reboots_early and params.reboot_choice == "sparse" and writer is not None:
            choice = choose_reboot_regions(machine, ram, params.reboot_mem)
            monitor.reboot_set = choice.regions
            monitor.now += choice.scanned / params.scan_bandwidth
            timeline.add(monitor.now, "reboot_regions_chosen", scanned=choice.scanned,
                         regions=[r.index for r in choice.regions], sparse=choice.sparse)
        policy.on_start(monitor)
        steps = policy.steps(monitor) if writer is not None else []
        clock.cpu_free_at = monitor.now
        for step in steps:
            todo = [piece for s, n in step.ranges for piece in monitor.written.subtract_from(s, n)]
            if not todo:
                continue
            cpu = 0.0
            for start, length in todo:
                for pos in range(start, start + length, READ_SIZE):
                    size = min(READ_SIZE, start + length - pos)
                    try:
                        data = ram.read(pos, size)
                    except SourceError as e:
                        writer.write_missing(pos, size, str(e))
                    else:
                        stats = writer.write_memory(pos, data)
                        cpu += stats.compress_seconds
                        used += stats.raw_bytes - stats.zero_bytes
                    if progress:
                        progress(size)
                monitor.written.add(start, length)
            cpu_total += cpu
            before = device.written
            offset = writer.flush(durable=False)
            ready = clock.compute(monitor.now, cpu)
            monitor.now = device.write(offset - before, ready)
            for region in _regions_of(machine, todo):
                monitor.records_end[region.index] = offset
                region_rows[region.index]["file_bytes"] += _share(region, todo, offset - before)
            policy.on_written(monitor, step)
            writer.flush(durable=params.fsync)
            monitor.now = device.flush(monitor.now)
            for start, length in todo:
                monitor.saved.add(start, length)
            timeline.save(monitor.now, offset - before)
            timeline.add(monitor.now, "saved", step=step.label, bytes=offset - before)
            step_rows.append({"label": step.label, "memory_bytes": sum(n for _, n in todo),
                              "file_end": offset, "saved_s": round(monitor.now, 6)})
            writer.write_event("saved", monitor.now, step=step.label)
            for region in machine.regions:
                row = region_rows[region.index]
                if row["saved_s"] is None and monitor.region_saved(region):
                    row["saved_s"] = round(monitor.now, 6)
            policy.on_saved(monitor, step)
        policy.on_finished(monitor)
        if len(monitor.handed_back) != len(machine.regions):
            missing = len(machine.regions) - len(monitor.handed_back)
            raise TsubakiError(f"policy {policy.name} never gave {missing} region(s) back to Linux")
        restart = monitor.reboot_at + params.boot_s
        demand = DemandModel(params.boot_footprint, params.demand_rate, used or machine.total)
        stalls = stall_intervals(timeline.owned, restart, demand) if policy.dumps else []
        for start, end in stalls:
            timeline.add(start, "stall_start")
            timeline.add(end, "stall_end", seconds=round(end - start, 6))
        complete = None
        if writer is not None:
            for event in timeline.events:
                if event.kind in ("reboot_start", "restart", "hand-back", "stall_start", "stall_end"):
                    writer.write_event(event.kind, event.time, **event.fields)
            writer.write_event("cpu_returned", monitor.now, cpu=cpus - 1)
            before = device.written
            writer.close()
            closed = writer.bytes_written
            writer = None
            complete = device.flush(device.write(closed - before, monitor.now))
            timeline.save(complete, closed - before)
            timeline.add(complete, "dump_complete", bytes=closed)
            timeline.add(complete, "cpu_returned", cpu=cpus - 1)
    finally:
        if writer is not None:
            writer.close()
    for h in monitor.handbacks:
        region_rows[h.region]["given_s"] = round(h.time, 6)
    timeline.events.sort(key=lambda e: e.time)
    # The ideal restart: boot time plus the bare transfer of the memory
    # records saved before the reboot (no metadata, no flush latency).
    before_reboot = sum(n for t, n in _increments(timeline.saved) if t <= monitor.reboot_at)
    before_reboot -= monitor.notice_bytes
    ideal = params.boot_s + params.storage.write_time(before_reboot)
    if policy.capture_boot:
        ideal += params.capture_boot_s
    return RunResult(
        policy=policy.name,
        storage=params.storage.name,
        source=getattr(source, "name", "?"),
        output=out_path,
        memory_bytes=machine.total,
        used_bytes=used,
        boot_s=params.boot_s,
        reboot_start_s=monitor.reboot_at,
        restart_s=restart,
        full_memory_s=max(h.time for h in monitor.handbacks),
        dump_complete_s=complete,
        stall_s=sum(e - s for s, e in stalls) if all(math.isfinite(e) for _, e in stalls) else math.inf,
        bytes_written=device.written,
        ideal_restart_s=ideal,
        cpu_compress_s=cpu_total,
        wall_s=time.perf_counter() - wall0,
        regions=list(region_rows.values()),
        steps=step_rows,
        handbacks=monitor.handbacks,
        stalls=stalls,
        timeline=timeline,
        flushes=list(device.flushes),
    )


def _increments(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return [(t, v - steps[i - 1][1]) for i, (t, v) in enumerate(steps) if i]


def _save(writer, device: StorageDevice, params: CollectParams, now: float) -> float:
    """Write out and flush what the writer holds; return when it is durable."""
    offset = writer.flush(durable=params.fsync)
    return device.flush(device.write(offset - device.written, now))


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
    if not notes:
        return 0
    from tsubaki_forensics.drgn_bridge.notes import NT_PRSTATUS, iter_notes

    return sum(1 for n in iter_notes(bytes(notes)) if n.type == NT_PRSTATUS and n.name == b"CORE")


def _with(params: CollectParams, **changes) -> CollectParams:
    from dataclasses import replace

    return replace(params, **changes)


def _properties(source, policy: Policy, params: CollectParams, machine: Machine) -> dict:
    props = {str(k): str(v) for k, v in (getattr(source, "properties", None) or {}).items()}
    props.update({
        "collect.policy": policy.name,
        "collect.storage": params.storage.name,
        "collect.region_size": str(params.region_size),
        "collect.reboot_mem": str(params.reboot_mem),
        "collect.memory_bytes": str(machine.total),
    })
    return props
