"""Emulated time for the monitor's CPU, with the real compression CPU time beside it.

The timeline is computed from the models (storage device, boot time, and
the CPU model of :mod:`.cpu`: throughputs measured once on a real CPU), so it
is deterministic and the same on every machine: that is what tests and
tables use.  The compression is also real work, and its CPU time is
measured on this host and reported next to the emulated figures.  With
``cpu_scale`` set (e.g. 8.0 for a monitor core eight times slower than this
host), the measured CPU time, scaled, replaces the modelled one on the
timeline.  Compression overlaps the device writing (a two-stage pipeline,
:meth:`~.storage.StorageDevice.write`).
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

    def cost(self, modelled: float, measured: float) -> float:
        """CPU seconds one step takes on the timeline: the model's, or with
        ``cpu_scale`` this host's measured seconds times the scale."""
        return modelled if self.cpu_scale is None else measured * self.cpu_scale
