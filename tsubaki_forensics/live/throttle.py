"""Pace the dump to a storage device of the emulation's profiles, in real time.

The live monitor writes to the host's disk, which is far faster than the SD
card of the paper.  To measure the protocol at a given device speed it
keeps the emulation's own device model (:class:`monitor_model.storage.StorageDevice`)
in step with the real writes and *sleeps* until the model says the bytes are
written (compression of the next batch overlaps the device, as it would on
a real monitor with a write queue) and, at each flush, until they are durable.
``unlimited`` never sleeps.
"""

from __future__ import annotations

import asyncio
import time

from monitor_model.storage import StorageDevice, StorageProfile

__all__ = ["PacedDevice"]

QUEUE_S = 0.25
"""How far the modelled device may lag behind the compressor (a write queue)."""


class PacedDevice:
    """The device model on the wall clock, starting at ``t0`` (the panic)."""

    def __init__(self, profile: StorageProfile, t0: float) -> None:
        self.model = StorageDevice(profile)
        self.t0 = t0
        self.unlimited = profile.bandwidth == float("inf") and profile.write_latency == 0 \
            and profile.flush_latency == 0

    def _now(self) -> float:
        return time.time() - self.t0

    async def wrote(self, nbytes: int) -> None:
        """``nbytes`` of file data were handed to the device now."""
        if self.unlimited or nbytes <= 0:
            return
        done = self.model.write(nbytes, self._now())
        lag = done - self._now()
        if lag > QUEUE_S:
            await asyncio.sleep(lag - QUEUE_S)

    async def flushed(self) -> None:
        """A flush was issued now: return when the model says it is durable."""
        if self.unlimited:
            return
        done = self.model.flush(self._now())
        lag = done - self._now()
        if lag > 0:
            await asyncio.sleep(lag)
