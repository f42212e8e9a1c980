"""An emulation of the Tsubaki secure monitor collecting a crashed Linux's memory.

The monitor dumps Linux's memory region by region to a storage device, reboots
Linux as soon as the regions it needs are saved, and hands every further region
back the moment it is saved (docs/COLLECT.md).  One module per part of the
model: :mod:`.machine` (regions, emulated RAM), :mod:`.storage` (devices),
:mod:`.policies` (decisions), :mod:`.engine` (the work), :mod:`.clock` and
:mod:`.timeline` (time, events, stalls), :mod:`.triage` (what analysis needs
first), :mod:`.sources` (memory sources, a plugin), :mod:`.session` and
:mod:`.plot` (one ``collect`` run, its figure).
"""

__all__: list[str] = []
