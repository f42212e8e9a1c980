"""Storage-device models: how long the monitor's writes and flushes take.

A device is a bandwidth, a latency paid per write command, a write
granularity (every write is rounded up to it: SD cards program whole pages)
and a flush latency.  The model is deterministic: the same bytes in the same
writes always take the same emulated time.  A region counts as *saved* only
when its records are written **and** flushed; :class:`StorageDevice` keeps the
emulated time at which each file offset became durable, which is what the
hand-back safety check compares against.

Profile figures are sequential-write figures typical of each class (SD
Association speed classes: Class 10 >= 10 MB/s, UHS-I U3 around 40 MB/s in
practice for sustained writes; eMMC 5.1 ~76 MB/s sequential write; an NVMe
SSD ~1.5 GB/s), not measurements of one device.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from tsubaki_forensics.errors import TsubakiError

__all__ = ["StorageProfile", "PROFILES", "get_profile", "StorageDevice"]

MB = 1_000_000


@dataclass(frozen=True)
class StorageProfile:
    """Performance of one class of storage device."""

    name: str
    bandwidth: float  # bytes per second (math.inf for unlimited)
    write_latency: float  # seconds per write command
    granularity: int  # bytes; each write is rounded up to a multiple
    flush_latency: float  # seconds per flush (cache flush / FUA)
    max_write: int = 1 << 20  # bytes per write command

    def write_time(self, nbytes: int) -> float:
        """Seconds to write ``nbytes`` as a run of maximal write commands."""
        if nbytes <= 0:
            return 0.0
        commands = math.ceil(nbytes / self.max_write)
        rounded = math.ceil(nbytes / self.granularity) * self.granularity
        transfer = 0.0 if math.isinf(self.bandwidth) else rounded / self.bandwidth
        return commands * self.write_latency + transfer

    def describe(self) -> str:
        """One line for summaries."""
        bw = "unlimited" if math.isinf(self.bandwidth) else f"{self.bandwidth / MB:g} MB/s"
        return (
            f"{self.name}: {bw}, {self.write_latency * 1e3:g} ms/write, "
            f"{self.granularity} B granularity, {self.flush_latency * 1e3:g} ms/flush"
        )


PROFILES: dict[str, StorageProfile] = {
    p.name: p
    for p in (
        StorageProfile("sd-class10", 10 * MB, 2e-3, 4096, 10e-3),
        StorageProfile("sd-uhs1", 40 * MB, 1e-3, 4096, 5e-3),
        StorageProfile("emmc", 76 * MB, 0.5e-3, 4096, 2e-3),
        StorageProfile("nvme", 1500 * MB, 20e-6, 4096, 0.5e-3),
        StorageProfile("unlimited", math.inf, 0.0, 1, 0.0),
    )
}

_CUSTOM_KEYS = {
    "bw": "bandwidth",
    "bandwidth": "bandwidth",
    "lat": "write_latency",
    "latency": "write_latency",
    "gran": "granularity",
    "granularity": "granularity",
    "flush": "flush_latency",
    "max": "max_write",
}
_NUM = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-zA-Z/]*)$")
_SCALE = {
    "": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
    "kb": 1000, "mb": MB, "gb": 1000 * MB, "mb/s": MB, "gb/s": 1000 * MB, "kb/s": 1000,
    "s": 1, "ms": 1e-3, "us": 1e-6,
}


def get_profile(spec: str) -> StorageProfile:
    """A named profile, or ``custom:bw=20MB/s,lat=2ms,gran=4K,flush=10ms``.

    A custom spec may also start from a named profile:
    ``custom:base=sd-uhs1,bw=25MB/s``.
    """
    if spec in PROFILES:
        return PROFILES[spec]
    if not spec.startswith("custom:"):
        raise TsubakiError(
            f"unknown storage profile {spec!r}; choose one of {', '.join(PROFILES)} "
            "or custom:bw=20MB/s,lat=2ms,gran=4K,flush=10ms"
        )
    fields: dict[str, float | int | str] = {}
    base = PROFILES["sd-uhs1"]
    for item in filter(None, spec[len("custom:") :].split(",")):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key == "base":
            base = get_profile(value.strip())
            continue
        if key not in _CUSTOM_KEYS:
            raise TsubakiError(f"unknown storage parameter {key!r} in {spec!r}")
        m = _NUM.match(value.strip())
        unit = m.group(2).lower() if m else None
        if not m or unit not in _SCALE:
            raise TsubakiError(f"bad value {value!r} for {key} in {spec!r}")
        number = float(m.group(1)) * _SCALE[unit]
        attr = _CUSTOM_KEYS[key]
        fields[attr] = int(number) if attr in ("granularity", "max_write") else number
    profile = replace(base, name="custom", **fields)
    if profile.bandwidth <= 0 or profile.granularity <= 0 or profile.max_write <= 0:
        raise TsubakiError(f"storage parameters must be positive in {spec!r}")
    return profile


class StorageDevice:
    """The emulated device: a queue of writes and flushes in emulated time.

    ``write`` and ``flush`` take the emulated time at which the data is
    ready and return when the device has finished; ``durable_at(offset)``
    answers when a file offset became durable (``None`` if not yet).
    """

    def __init__(self, profile: StorageProfile) -> None:
        self.profile = profile
        self.free_at = 0.0
        self.written = 0  # file bytes handed to the device
        self.busy = 0.0  # seconds spent writing or flushing
        self.flushes: list[tuple[float, int]] = []  # (time, durable offset)

    def write(self, nbytes: int, ready_at: float, cpu_s: float = 0.0, pieces: int = 1) -> float:
        """Queue ``nbytes`` of file data; return the emulated completion time.

        With ``cpu_s``, the data is produced by a CPU from ``ready_at`` on in
        ``pieces`` equal pieces, each written as soon as it is ready (the
        CPU compresses piece i+1 while the device writes piece i): the write
        ends after the slower of the two stages plus one piece of the other.
        """
        pieces = max(1, pieces)
        start = max(ready_at + cpu_s / pieces, self.free_at)
        took = self.profile.write_time(nbytes)
        end = max(start + took, ready_at + cpu_s + self.profile.write_time(-(-nbytes // pieces)))
        took = end - start
        self.free_at = end
        self.busy += took
        self.written += nbytes
        return self.free_at

    def flush(self, ready_at: float) -> float:
        """Flush everything written so far; return when it is durable."""
        start = max(ready_at, self.free_at)
        self.free_at = start + self.profile.flush_latency
        self.busy += self.profile.flush_latency
        self.flushes.append((self.free_at, self.written))
        return self.free_at

    def durable_offset(self, at: float) -> int:
        """File bytes known durable at emulated time ``at``."""
        best = 0
        for time, offset in self.flushes:
            if time <= at:
                best = max(best, offset)
        return best
