"""The Tsubaki protocol, written once: a policy's steps and decisions, with no I/O.

Why: the protocol runs two ways.  The emulation (:mod:`.engine`) runs it on a
memory image with an emulated clock, a storage model and emulated RAM; the
live monitor (``tsubaki_forensics/live/monitor.py``) runs it on a real QEMU
guest, asynchronously.  Both used to have their own loop, and the live one an
if/else over two hard-wired orders instead of the policies.  Here the loop and
the books are one piece of *sans-I/O* code (as h11 and wsproto do it): the
driver iterates :func:`protocol` and performs each :class:`Action` it yields
(write, flush, reboot, hand back), synchronously or with ``await`` between two
``next()`` calls, so every policy of :mod:`.policies` runs in both.

The order, for every policy:

1. ``on_start`` (after the panic notice is saved);
2. for each of ``steps()``: :class:`WriteStep` (the parts of the step not
   written yet), ``on_written``, :class:`FlushStep`, the parts count as
   saved, :class:`StepSaved`, ``on_saved``;
3. ``on_finished``; every region must then be Linux's again.

A policy decides through :class:`Books` (the :class:`~.policies.Context`):
``reboot(regions)`` and ``hand_back(region)`` update the books at once (so
the policy sees its own decision) and queue a :class:`Reboot` or
:class:`Give` that the driver carries out right after the callback returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tsubaki_forensics.errors import TsubakiError

from .machine import IntervalSet, Machine, Region
from .policies import Policy, Step

__all__ = [
    "Action",
    "Books",
    "FlushStep",
    "Give",
    "Reboot",
    "StepSaved",
    "WriteStep",
    "protocol",
]

Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _StepAction:
    """An action on ``step``; ``todo``: its parts not written before this run reached it."""

    step: Step
    todo: Ranges


class WriteStep(_StepAction):
    """Write the records of ``todo``."""


class FlushStep(_StepAction):
    """Make what :class:`WriteStep` wrote durable (flush, fsync)."""


class StepSaved(_StepAction):
    """``step`` is durable and the books say so: record it (a ``saved`` event)."""


@dataclass(frozen=True)
class Reboot:
    """Linux starts booting now, in ``regions`` (they are its from now on)."""

    regions: tuple[Region, ...]


@dataclass(frozen=True)
class Give:
    """Hand ``region`` back to the running Linux now (memory hot-add)."""

    region: Region


Action = WriteStep | FlushStep | StepSaved | Reboot | Give


class Books:
    """What the monitor knows while it runs: the :class:`~.policies.Context` policies act through.

    The drivers subclass it (the emulation's :class:`~.engine.Monitor`) or
    hold one (the live monitor); only :func:`protocol` and the policies'
    decisions change it, except :meth:`resume`, which a driver calls before
    the run to count an earlier file's memory as saved.
    """

    def __init__(self, machine: Machine, *, reboot_set: list[Region] | None = None,
                 triage: Callable[[], list[Step]] | None = None) -> None:
        self.machine = machine
        self.reboot_set: list[Region] = list(reboot_set) if reboot_set is not None else []
        self.rebooted = False
        self.handed_back: set[int] = set()
        self.written = IntervalSet()
        self.saved = IntervalSet()
        self.pages = None  # the monitor's page classification (.pages.MonitorPages), if any
        self._triage = triage
        self._pending: list[Action] = []

    # -- Context -------------------------------------------------------------
    def region_saved(self, region: Region) -> bool:
        """Every byte of the region is durable in the dump."""
        return all(self.saved.covers(s, n) for s, n in region.ranges)

    def region_cost(self, region: Region) -> int:
        """Bytes that must be written before Linux may use ``region`` (kept,
        non-zero pages at the dump level); all of it when nothing is classified."""
        if self.pages is None:
            return region.nbytes
        return sum(self.pages.write_bytes(s, n) for s, n in region.ranges)

    def first_steps(self) -> list[Step]:
        """The struct pages the classification read: saved before anything else."""
        if self.pages is None or not self.pages.struct_pages:
            return []
        return [Step("struct pages", self.pages.struct_pages)]

    def triage_steps(self) -> list[Step]:
        """Triage steps for this source (see :mod:`.triage`); none without a planner."""
        return self._triage() if self._triage is not None else []

    def reboot(self, regions: list[Region]) -> None:
        """Linux starts booting in ``regions`` now."""
        if self.rebooted:
            raise TsubakiError("Linux was already rebooted")
        for region in regions:
            self._take(region)
        self.rebooted = True
        self._pending.append(Reboot(tuple(regions)))

    def hand_back(self, region: Region) -> None:
        """Give ``region`` to Linux now (memory hot-add)."""
        if not self.rebooted:
            raise TsubakiError("cannot hand memory back before Linux reboots")
        self._take(region)
        self._pending.append(Give(region))

    # -- for drivers -----------------------------------------------------------
    def resume(self, ranges) -> int:
        """Count ``ranges`` (what an earlier file of the dump holds) as written
        and durable, clipped to Linux's memory; returns the bytes counted."""
        kept = 0
        for start, length in ranges:
            for s, n in _clip(self.machine, start, length):
                self.written.add(s, n)
                self.saved.add(s, n)
                kept += n
        return kept

    def _take(self, region: Region) -> None:
        if region.index in self.handed_back:
            raise TsubakiError(f"{region} was already given to Linux")
        self.handed_back.add(region.index)

    def _decisions(self) -> list[Action]:
        out, self._pending = self._pending, []
        return out


def protocol(policy: Policy, books: Books, *, dump: bool = True,
             resumed: bool = False) -> Iterator[Action]:
    """Run ``policy``: yield every action the driver must carry out, in order.

    :param dump: False when no dump file is written (a policy that dumps
        nothing): its steps are skipped.
    :param resumed: an earlier file was counted (:meth:`Books.resume`): a step
        with nothing left to write still yields its flush and saved actions
        (the emulation records it on its timeline).  Otherwise such a step
        (written already by a struct-page or triage step, or left out by the
        level) is only told to the policy as saved, or a region it covers
        would never be given back.
    :raises TsubakiError: the policy ended without giving Linux all its memory.
    """
    policy.on_start(books)
    yield from books._decisions()
    for step in policy.steps(books) if dump else []:
        todo = tuple(piece for s, n in step.ranges for piece in books.written.subtract_from(s, n))
        if not todo and not resumed:
            policy.on_saved(books, step)
            yield from books._decisions()
            continue
        yield WriteStep(step, todo)
        for start, length in todo:
            books.written.add(start, length)
        policy.on_written(books, step)
        yield from books._decisions()
        yield FlushStep(step, todo)
        for start, length in todo:
            books.saved.add(start, length)
        yield StepSaved(step, todo)
        policy.on_saved(books, step)
        yield from books._decisions()
    policy.on_finished(books)
    yield from books._decisions()
    missing = len(books.machine.regions) - len(books.handed_back)
    if missing:
        raise TsubakiError(f"policy {policy.name} never gave {missing} region(s) back to Linux")


def _clip(machine: Machine, start: int, length: int) -> list[tuple[int, int]]:
    """The parts of [start, start+length) that are Linux memory of ``machine``."""
    out = []
    for region in machine.regions:
        for s, n in region.ranges:
            a, b = max(s, start), min(s + n, start + length)
            if a < b:
                out.append((a, b - a))
    return out
