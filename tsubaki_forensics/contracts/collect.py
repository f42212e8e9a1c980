"""What ``collect`` found: one :class:`CollectSummary`, typed, rendered in ``render/``.

``monitor_model.session.summarize`` builds it from the emulation's run
results; ``render/collect.py`` prints it as the text table or as the JSON
document of docs/COLLECT.md (the keys below are that document's).  The types
sit in the bottom layer so that the renderers, below the plugin system, can
read them without reaching up into the emulation.  Times are emulated
seconds since the panic, unrounded (the JSON rounds them to 6 decimals).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .inspect import PageCounts

__all__ = ["CollectSettings", "CollectSummary", "PolicyOutcome", "RegionOutcome", "SaveStep",
           "StorageSummary", "TimelineEvent"]


@dataclass(frozen=True)
class StorageSummary:
    """The emulated storage: JSON ``storage``; ``description`` is the text table's title."""

    name: str
    bandwidth_Bps: float | None  # None: unlimited
    write_latency_s: float
    granularity: int
    flush_latency_s: float
    description: str = ""


@dataclass(frozen=True)
class CollectSettings:
    """The emulation's parameters as the run used them: JSON ``params``.

    ``cpu`` is the CPU model's constants as the JSON shows them (MB/s, s/GiB, source).
    """

    region_size: int
    reboot_mem: int
    boot_s: float | None
    capture_boot_s: float | None
    reboot_regions: str
    monitor_mem: int
    scan_bandwidth_Bps: float
    cpu_scale: float | None
    demand_rate_Bps: int
    boot_footprint: int
    zstd_level: int
    dump_level: int
    kdump_level: int
    cpu: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RegionOutcome:
    """One region (memory-hotplug block): when it was saved and handed back."""

    index: int
    base: int
    nbytes: int  # JSON "bytes"
    file_bytes: int | None  # its share of the dump file (None: kdump writes one stream)
    saved_s: float | None  # None: never saved
    given_s: float | None  # None: never handed back


@dataclass(frozen=True)
class SaveStep:
    """One step of the policy: memory saved and the durable end of the file after it."""

    label: str
    memory_bytes: int
    file_end: int
    saved_s: float


@dataclass(frozen=True)
class TimelineEvent:
    """One event of the emulated timeline (``kind``: an :class:`~.events.EventKind` value)."""

    time_s: float
    kind: str
    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyOutcome:
    """What one policy did (JSON ``policies[NAME]``; docs/COLLECT.md lists the fields)."""

    policy: str
    storage: str
    source: str
    output: str | None
    memory_bytes: int
    used_bytes: int
    boot_s: float
    reboot_start_s: float
    dump_level: int | None  # None: nothing dumped (reboot-only)
    restart_s: float
    full_memory_s: float
    dump_complete_s: float | None  # None: never complete
    stall_s: float
    bytes_written: int
    ideal_restart_s: float
    cpu_compress_s: float  # measured on this host (real)
    cpu_model_s: float  # on the emulated timeline (modelled)
    pages: PageCounts | None
    notes: tuple[str, ...]
    wall_s: float
    unsafe_handbacks: int
    regions: tuple[RegionOutcome, ...]
    steps: tuple[SaveStep, ...]
    events: tuple[TimelineEvent, ...]


@dataclass(frozen=True)
class CollectSummary:
    """One ``collect`` run: the source, the storage, the settings and one outcome per policy."""

    source: str
    memory_bytes: int | None
    storage: StorageSummary
    settings: CollectSettings
    outcomes: tuple[PolicyOutcome, ...]

    @property
    def baseline(self) -> PolicyOutcome | None:
        """The ``kdump`` outcome every other is compared with, if it ran."""
        return next((o for o in self.outcomes if o.policy == "kdump"), None)

    def speedup(self, outcome: PolicyOutcome) -> float | None:
        """How many times sooner than kdump ``outcome`` restarts the service (None: no kdump run)."""
        baseline = self.baseline
        if baseline is None or not outcome.restart_s > 0:
            return None
        return baseline.restart_s / outcome.restart_s
