"""What a collection is parameterised by, and what it reports.

:class:`CollectParams` holds every knob of the model (docs/COLLECT.md,
"Options"); :class:`RunResult` is one policy's outcome in emulated seconds
since the panic, with the JSON form the CLI prints; :class:`HandBack` is one
grant of memory to Linux with what was durable at that instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tsubaki_forensics.contracts.collect import PolicyOutcome, RegionOutcome, SaveStep, TimelineEvent
from tsubaki_forensics.contracts.events import EventKind
from tsubaki_forensics.contracts.inspect import PageCounts
from tsubaki_forensics.errors import TsubakiError

from .cpu import DEFAULT_CPU, CpuModel
from .machine import HOTPLUG_BLOCK
from .storage import PROFILES, StorageProfile
from .timeline import Timeline

__all__ = [
    "DEFAULT_BOOT_S",
    "REBOOT_CHOICES",
    "CollectParams",
    "HandBack",
    "HandbackSafetyError",
    "RunResult",
]

DEFAULT_BOOT_S = 1.45
"""Boot time when the source does not say: kernel start to user space at work
(the lab init's ``starting workload`` line, 1.447 s in the guest's log) of the
crash lab's default guest (Debian 12 cloud kernel 6.1.0-56, 512 MiB, 2 vCPUs,
QEMU TCG), measured 2026-11-26; see docs/COLLECT.md.  Lab sources carry their
own measured figure (:func:`monitor_model.sources.lab_boot_seconds`)."""

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
    cpu_scale: float | None = None  # put this host's measured compression time, scaled, on the timeline
    cpu: CpuModel = DEFAULT_CPU  # modelled CPU of the monitor and of kdump's capture kernel
    dump_level: int = 1  # makedumpfile -d bits for tsubaki and tsubaki-triage
    kdump_level: int = 31  # makedumpfile -d of the kdump policy (kdump-tools' default)
    demand_rate: float = 64 << 20  # bytes/s of memory demand growth after restart
    boot_footprint: int = 128 << 20  # memory Linux needs right after boot
    reboot_choice: str = "sparse"  # "sparse": zero-page scan picks cheap regions; "low": lowest
    scan_bandwidth: float = 4e9  # bytes/s the monitor core reads memory at (zero-page scan)
    level: int = 3
    threads: int = 2
    fsync: bool = True
    strict: bool = True
    # a symbol pack (.tsp bytes) stored with the panic notice, so the dump
    # analyses without a vmlinux (collect --symbols; docs/SELFCONTAINED.md)
    symbolpack: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class HandBack:
    """Memory given to Linux: by reboot or by hand-back."""

    time: float
    region: int
    how: EventKind  # EventKind.REBOOT or EventKind.HAND_BACK ("reboot" or "hand-back" on disk)
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
    dump_level: int | None = None  # None: nothing dumped (reboot-only)
    cpu_model_s: float = 0.0  # modelled CPU seconds on the timeline (classification, zero test, codec)
    pages: dict | None = None  # pages kept/excluded per class at the level
    notes: list[str] = field(default_factory=list)  # e.g. a level fallen back to 1

    def durable_offset_at(self, time: float) -> int:
        """File bytes on stable storage at emulated ``time`` (a power cut then
        leaves exactly this prefix of the dump)."""
        return max((off for t, off in self.flushes if t <= time), default=0)

    @property
    def unsafe_handbacks(self) -> list[HandBack]:
        """Hand-backs that happened before the region's dump was durable."""
        return [h for h in self.handbacks if not h.safe]

    def outcome(self) -> PolicyOutcome:
        """The typed outcome the renderers print (``render/collect.py``; docs/COLLECT.md)."""
        return PolicyOutcome(
            policy=self.policy,
            storage=self.storage,
            source=self.source,
            output=str(self.output) if self.output else None,
            memory_bytes=self.memory_bytes,
            used_bytes=self.used_bytes,
            boot_s=self.boot_s,
            reboot_start_s=self.reboot_start_s,
            dump_level=self.dump_level,
            restart_s=self.restart_s,
            full_memory_s=self.full_memory_s,
            dump_complete_s=self.dump_complete_s,
            stall_s=self.stall_s,
            bytes_written=self.bytes_written,
            ideal_restart_s=self.ideal_restart_s,
            cpu_compress_s=self.cpu_compress_s,
            cpu_model_s=self.cpu_model_s,
            pages=None if self.pages is None else PageCounts(
                self.pages["total"], self.pages["kept"], self.pages["excluded"]),
            notes=tuple(self.notes),
            wall_s=self.wall_s,
            unsafe_handbacks=len(self.unsafe_handbacks),
            regions=tuple(RegionOutcome(r["index"], r["base"], r["bytes"], r["file_bytes"], r["saved_s"],
                                        r["given_s"]) for r in self.regions),
            steps=tuple(SaveStep(s["label"], s["memory_bytes"], s["file_end"], s["saved_s"])
                        for s in self.steps),
            events=tuple(TimelineEvent(e.time, e.kind, e.fields) for e in self.timeline.events),
        )

    def to_json(self) -> dict:
        """The documented JSON summary (docs/COLLECT.md), as ``collect --format json`` prints it."""
        from tsubaki_forensics.render.collect import outcome_json

        return outcome_json(self.outcome())


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
