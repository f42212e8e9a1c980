"""What happened when: events, memory owned by Linux, bytes saved, stalls.

The engine appends to a :class:`Timeline` as the emulation runs.  Linux's
memory demand after its reboot is a model (:class:`DemandModel`): right after
boot it needs its boot footprint, then the service ramps up at a fixed rate
until it needs what it used before the crash.  Whenever it wants more memory
than the monitor has handed back, Linux stalls; :func:`stall_intervals`
computes those intervals exactly from the step function of owned memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tsubaki_forensics.contracts.events import EventKind

__all__ = ["Event", "Timeline", "DemandModel", "stall_intervals"]


@dataclass(frozen=True)
class Event:
    """One point of the timeline (emulated seconds since the panic)."""

    time: float
    kind: EventKind  # a StrEnum: compares equal to its on-disk string
    fields: dict = field(default_factory=dict)


@dataclass
class Timeline:
    """Events plus two step functions: memory owned by Linux and bytes saved."""

    events: list[Event] = field(default_factory=list)
    owned: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])
    saved: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])

    def add(self, time: float, kind: EventKind, **fields) -> Event:
        """Record an event."""
        event = Event(time, kind, fields)
        self.events.append(event)
        return event

    def give(self, time: float, nbytes: int) -> None:
        """Linux now owns ``nbytes`` more memory."""
        self.owned.append((time, self.owned[-1][1] + nbytes))

    def save(self, time: float, nbytes: int) -> None:
        """``nbytes`` more of the dump file are durable."""
        self.saved.append((time, self.saved[-1][1] + nbytes))

    def first(self, kind: EventKind | str) -> Event | None:
        """The first event of a kind."""
        return next((e for e in self.events if e.kind == kind), None)

    def of_kind(self, kind: EventKind | str) -> list[Event]:
        """All events of a kind, in order."""
        return [e for e in self.events if e.kind == kind]

    def owned_at(self, time: float) -> int:
        """Memory owned by Linux at ``time``."""
        value = 0
        for t, v in self.owned:
            if t <= time:
                value = v
        return value


@dataclass(frozen=True)
class DemandModel:
    """Memory Linux wants after its reboot.

    ``footprint`` right after boot, growing by ``rate`` bytes per second
    (the service warming up: caches, workers) up to ``target``, the memory
    the workload used before the crash (non-zero pages of the image).
    """

    footprint: int
    rate: float
    target: int

    def at(self, since_restart: float) -> float:
        """Bytes wanted ``since_restart`` seconds after the service restarted."""
        if since_restart < 0:
            return 0.0
        return min(float(self.target), self.footprint + self.rate * since_restart)

    def reaches(self, nbytes: float) -> float | None:
        """Seconds after restart when demand first exceeds ``nbytes`` (None: never)."""
        if nbytes < self.footprint:
            return 0.0
        if nbytes >= self.target or self.rate <= 0:
            return None
        return (nbytes - self.footprint) / self.rate


def stall_intervals(
    owned: list[tuple[float, int]], restart: float, demand: DemandModel
) -> list[tuple[float, float]]:
    """Intervals after ``restart`` when demand exceeds the memory owned.

    ``owned`` is a step function ``[(time, bytes), ...]`` sorted by time;
    its last value holds forever, so a run that never hands everything back
    stalls until the end of its last step only if its final value is short.
    """
    steps = sorted(owned)
    out: list[tuple[float, float]] = []
    for i, (t0, value) in enumerate(steps):
        t1 = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
        lo, hi = max(t0, restart), t1
        if hi <= lo:
            continue
        after = demand.reaches(value)
        if after is None:
            continue
        start = max(lo, restart + after)
        if start < hi:
            if out and abs(out[-1][1] - start) < 1e-12:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((start, hi))
    return out
