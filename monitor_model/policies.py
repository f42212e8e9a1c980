"""Collection policies: in which order to dump, when to reboot, when to hand back.

A policy makes decisions only; the engine (:mod:`.engine`) does the work and
keeps the books.  It asks the policy for its steps (ranges to dump, in order)
and calls it back after each step's records are *written* and again after
they are *saved* (written and flushed).  The policy acts through the
:class:`Context` it is given: ``ctx.reboot(regions)`` and
``ctx.hand_back(region)``.  The engine records every hand-back with the
durable file offset at that moment, so a policy that hands memory back too
early is caught (``strict`` engines refuse it outright).

The order of the calls is :func:`.protocol.protocol`, and both monitors run
it: the emulation (``collect``, :mod:`.engine`) and the live monitor on a
real QEMU guest (``monitor --policy NAME``, ``tsubaki_forensics/live``), so
a policy written here works in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tsubaki_forensics.errors import TsubakiError

from .machine import Machine, Region

__all__ = [
    "Step",
    "Context",
    "Policy",
    "KdumpPolicy",
    "KdumpFullPolicy",
    "RebootOnlyPolicy",
    "DumpThenResetPolicy",
    "TsubakiPolicy",
    "TriagePolicy",
    "POLICIES",
    "get_policy",
]


@dataclass(frozen=True)
class Step:
    """Physical ranges to dump as one unit (written, then flushed)."""

    label: str
    ranges: tuple[tuple[int, int], ...]
    region: int | None = None  # index when the step is one whole region


class Context(Protocol):
    """What a policy sees of the running monitor (implemented by the engine)."""

    machine: Machine
    reboot_set: list[Region]  # the regions Linux reboots in
    rebooted: bool
    handed_back: set[int]

    def region_saved(self, region: Region) -> bool: ...
    def region_cost(self, region: Region) -> int: ...  # bytes that must be written at the level
    def first_steps(self) -> list[Step]: ...  # the struct pages, when the level read them
    def reboot(self, regions: list[Region]) -> None: ...
    def hand_back(self, region: Region) -> None: ...
    def triage_steps(self) -> list[Step]: ...


class Policy:
    """Base policy: dump every region in address order, reboot at the end."""

    name = "base"
    description = ""
    dumps = True  # False: nothing is written (reboot-only)
    capture_boot = False  # True: a capture kernel boots before the dump (kdump)
    reboots_early = False  # True: reboots in a subset of regions (the monitor chooses them)
    kdump_model = False  # True: makedumpfile in a capture kernel (monitor_model/kdump_run.py)
    plans_triage = False  # True: its steps ask ctx.triage_steps() (a driver may plan them ahead)

    def level(self, params) -> int | None:
        """The makedumpfile dump level this policy dumps at (None: it dumps nothing)."""
        return params.dump_level

    def steps(self, ctx: Context) -> list[Step]:
        """The dump plan, in order."""
        return [region_step(r) for r in ctx.machine.regions]

    def on_start(self, ctx: Context) -> None:
        """Called after the panic notice (VMCOREINFO, notes) is saved."""

    def on_written(self, ctx: Context, step: Step) -> None:
        """Called when a step's records are written but not yet flushed."""

    def on_saved(self, ctx: Context, step: Step) -> None:
        """Called when a step's records are durable."""

    def on_finished(self, ctx: Context) -> None:
        """Called when every step is saved."""


def region_step(region: Region) -> Step:
    """One whole region as a step."""
    return Step(f"region {region.index}", region.ranges, region.index)


class KdumpPolicy(Policy):
    """What Debian's kdump-tools (1.8.1) does by default: a capture kernel
    booted with ``nr_cpus=1`` runs ``makedumpfile -F -c -d 31`` (zlib on one
    CPU, page by page), then the machine reboots (``--kdump-level`` changes 31)."""

    name = "kdump"
    description = "capture kernel (nr_cpus=1) runs makedumpfile -F -c -d 31, then Linux reboots (baseline)"
    capture_boot = True
    kdump_model = True

    def level(self, params) -> int | None:
        return params.kdump_level

    def on_finished(self, ctx: Context) -> None:
        ctx.reboot(ctx.machine.regions)


class KdumpFullPolicy(KdumpPolicy):
    """kdump keeping every non-zero page (``makedumpfile -c -d 1``)."""

    name = "kdump-full"
    description = "as kdump, at dump level 1 (every non-zero page)"

    def level(self, params) -> int | None:
        return 1


class RebootOnlyPolicy(Policy):
    """Reboot at once and dump nothing: the lower bound; the evidence is lost."""

    name = "reboot-only"
    description = "reboot at once, no dump (lower bound; evidence lost)"
    dumps = False

    def level(self, params) -> int | None:
        return None

    def steps(self, ctx: Context) -> list[Step]:
        return []

    def on_start(self, ctx: Context) -> None:
        ctx.reboot(ctx.machine.regions)


class DumpThenResetPolicy(Policy):
    """Today's practice without a capture kernel: the monitor dumps every
    region in address order at the dump level, then Linux reboots in all its
    memory.  The live monitor's ``--order dump-then-reset``; in ``collect`` the
    bound a kdump would reach with no capture-kernel boot and no makedumpfile."""

    name = "dump-then-reset"
    description = "dump every region in address order, then reboot (no capture kernel)"

    def on_finished(self, ctx: Context) -> None:
        ctx.reboot(ctx.machine.regions)


class TsubakiPolicy(Policy):
    """The paper's order: the struct pages (at a level that reads them), the
    reboot regions, reboot, then the rest, cheapest to save first, handing
    each region back to Linux as soon as it is saved."""

    name = "tsubaki"
    description = "reboot regions first, reboot when they are saved, hand back the rest as saved"
    reboots_early = True

    def steps(self, ctx: Context) -> list[Step]:
        first = {r.index for r in ctx.reboot_set}
        rest = sorted((r for r in ctx.machine.regions if r.index not in first),
                      key=lambda r: (ctx.region_cost(r), r.index))
        return ctx.first_steps() + [region_step(r) for r in ctx.reboot_set] + [region_step(r) for r in rest]

    def on_saved(self, ctx: Context, step: Step) -> None:
        if not ctx.rebooted and all(ctx.region_saved(r) for r in ctx.reboot_set):
            ctx.reboot(ctx.reboot_set)
        if ctx.rebooted:
            reboot_idx = {r.index for r in ctx.reboot_set}
            for region in ctx.machine.regions:
                if (
                    region.index not in ctx.handed_back
                    and region.index not in reboot_idx
                    and ctx.region_saved(region)
                ):
                    ctx.hand_back(region)


class TriagePolicy(TsubakiPolicy):
    """First what analysis needs most (page tables, kernel data, printk ring,
    the crashed task's stack), so that the first MiB of the dump already
    allow a triage report; then as :class:`TsubakiPolicy`."""

    name = "tsubaki-triage"
    plans_triage = True
    description = "triage data first (page tables, kernel data, printk, crashed stack), then as tsubaki"

    def steps(self, ctx: Context) -> list[Step]:
        rest = super().steps(ctx)
        first = ctx.first_steps()
        return first + ctx.triage_steps() + rest[len(first):]


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (KdumpPolicy, KdumpFullPolicy, RebootOnlyPolicy, DumpThenResetPolicy,
                              TsubakiPolicy, TriagePolicy)
}


def get_policy(name: str) -> Policy:
    """A new policy object by name."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise TsubakiError(
            f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}"
        ) from None
