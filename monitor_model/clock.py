"""Emulated time for the monitor, with the real compression CPU time beside it.

The timeline is computed from the models (storage device, boot time), so it
is deterministic and the same on every machine: that is what tests and
tables use.  The compression is real work, and its CPU time is measured on
this host and reported next to the emulated figures.  With ``cpu_scale`` set
(e.g. 8.0 for a monitor core eight times slower than this host), the
measured CPU time, scaled, is also put on the timeline: compression of one
step overlaps the device writing the previous one (a two-stage pipeline).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["MonitorClock", "CpuMeter"]


class CpuMeter:
    """Measures the process CPU time (all threads: zstd runs on threads)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.wall = 0.0

    @contextmanager
    def measure(self):
        """Context whose CPU and wall time is added to the totals; yields a
        one-element list that receives the CPU seconds of this block."""
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = [0.0]
        try:
            yield out
        finally:
            out[0] = time.process_time() - cpu0
            self.total += out[0]
            self.wall += time.perf_counter() - wall0


@dataclass
class MonitorClock:
    """The monitor's CPU stage of the pipeline in emulated seconds.

    ``cpu_scale=None`` keeps the timeline free of host-dependent figures.
    """

    cpu_scale: float | None = None
    cpu_free_at: float = 0.0

    def compute(self, start_at: float, cpu_seconds: float) -> float:
        """The emulated time when the monitor has prepared one step's records."""
        begin = max(start_at, self.cpu_free_at)
        cost = 0.0 if self.cpu_scale is None else cpu_seconds * self.cpu_scale
        self.cpu_free_at = begin + cost
        return self.cpu_free_at
