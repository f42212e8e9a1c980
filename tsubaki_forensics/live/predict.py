"""What the emulation (monitor_model) predicts for the same guest, to set beside the measurement.

The live dump is itself a memory source: :class:`DumpSource` serves its
ranges to :func:`monitor_model.engine.run_policy`, which replays the protocol
with the same region size (128 MiB DIMMs), the same reboot memory (the base
RAM, lowest regions), the same storage profile and the measured boot time,
and **the same policy**: the live monitor runs the emulation's policy classes
(``dump-then-reset`` included; it used to be predicted by ``kdump`` with no
capture-kernel boot, which models makedumpfile at ``-d 31``, not what the
live monitor writes).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from monitor_model.engine import CollectParams, run_policy
from monitor_model.policies import get_policy
from monitor_model.storage import StorageProfile

from ..tsd import open_dump

__all__ = ["DumpSource", "Prediction", "predict"]


class DumpSource:
    """A finished live dump as a ``monitor_model`` memory source (read-only)."""

    name = "live-dump"

    def __init__(self, path: Path, ranges: list[tuple[int, int]]) -> None:
        self._dump = open_dump([Path(path)])
        self.ranges = sorted(ranges)
        self.vmcoreinfo = self._dump.vmcoreinfo
        self.notes = self._dump.notes
        self.properties: dict[str, str] = {}

    def read(self, paddr: int, size: int) -> bytes:
        return self._dump.memory.read(paddr, size)

    def close(self) -> None:
        close = getattr(self._dump, "close", None)
        if close:
            close()


@dataclass(frozen=True)
class Prediction:
    """The emulation's figures, in seconds since the panic."""

    policy: str
    restart_s: float
    full_memory_s: float
    dump_complete_s: float
    reboot_start_s: float


def predict(dump: Path, ranges: list[tuple[int, int]], order: str, *, storage: StorageProfile,
            reboot_mem: int, boot_s: float, region_size: int = 128 << 20,
            cpu_scale: float | None = 1.0) -> Prediction:
    """Run the emulation of policy ``order`` (the one the live monitor ran) on the memory of ``dump``.

    :param cpu_scale: put the compression CPU time the emulation measures on its
        timeline (1.0: this host's core), as the live monitor pays it for real.
    """
    params = CollectParams(storage=storage, region_size=region_size, reboot_mem=reboot_mem,
                           boot_s=boot_s, capture_boot_s=0.0, reboot_choice="low", cpu_scale=cpu_scale)
    source = DumpSource(dump, ranges)
    try:
        with tempfile.TemporaryDirectory(prefix="tsk-predict-") as tmp:
            r = run_policy(source, get_policy(order), params, Path(tmp) / "p.tsd")
    finally:
        source.close()
    return Prediction(r.policy, r.restart_s, r.full_memory_s, r.dump_complete_s or 0.0, r.reboot_start_s)
