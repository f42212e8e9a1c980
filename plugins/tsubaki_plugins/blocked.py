"""``blocked``: the tasks in uninterruptible sleep (D state) and their stacks.

The evidence for a hung-task panic (``khungtaskd`` panics when a task stays
in D state too long) and for most "the machine froze" dumps: which tasks
wait on what.  This is crash's ``foreach UN bt`` (drgn's ``foreach D bt``):
every task whose ``task_state_to_char`` is ``D``, with how long ago it last
ran (drgn's ``task_since_last_arrival_ns``, crash's ``ps -m``) and its
kernel backtrace, unwound like the ``panic`` analysis's (``--- <IRQ
stack> ---`` markers, exception frames, module names).

The task walk is the ``tasks`` analysis's (:func:`.tasks.read_tasks`,
shared through ``prog.cache``), so a task whose ``task_struct`` was not
collected is named as missing here too, and running both analyses walks
the PID tree once.  Only the blocked tasks are unwound: cheap unless
hundreds of tasks are stuck.
"""

from __future__ import annotations

from collections.abc import Sequence

import drgn
from drgn.helpers.linux.sched import task_since_last_arrival_ns

from tsubaki_forensics.analysis import (
    AnalysisContext,
    AnalysisResult,
    Column,
    Completeness,
    Missing,
    Need,
    Table,
    Value,
)
from tsubaki_forensics.analysis.guard import read_value
from tsubaki_forensics.plugin_system import hookimpl

from .panic import Backtrace, frames_tables, read_backtrace
from .tasks import TaskRecord, read_tasks

__all__ = ["BLOCKED_STATE", "BlockedTask", "read_blocked", "blocked_result", "analyze"]

#: task_state_to_char's letter for TASK_UNINTERRUPTIBLE (crash's ``UN``).
BLOCKED_STATE = "D"


class BlockedTask:
    """One task in D state: its row in the task walk, how long since it ran, its backtrace."""

    __slots__ = ("record", "since_run_ns", "backtrace")

    def __init__(self, record: TaskRecord, since_run_ns: Value, backtrace: Backtrace) -> None:
        self.record = record
        self.since_run_ns = since_run_ns
        self.backtrace = backtrace


def read_blocked(prog: drgn.Program) -> tuple[list[BlockedTask], list[TaskRecord], list[Missing], bool]:
    """The D-state tasks, in PID order.

    :returns: the blocked tasks, every task looked at, what the task walk
        could not read, and whether it reached its end.
    """
    records, missing, complete = read_tasks(prog)
    blocked = []
    for record in records:
        if record.state != BLOCKED_STATE or record.address is None:
            continue
        task = drgn.Object(prog, "struct task_struct *", value=record.address)
        since = read_value(lambda: task_since_last_arrival_ns(task))
        blocked.append(BlockedTask(record, since, read_backtrace(prog, task, record.cpu)))
    return blocked, records, missing, complete


_COLUMNS = (
    Column("pid", "PID", int, "right"),
    Column("ppid", "PPID", int, "right"),
    Column("cpu", "CPU", int, "right"),
    Column("task", "TASK", int, fmt="address"),
    Column("state", "ST", str),
    Column("since_run", "SINCE RUN (s)", float, "right"),
    Column("frames", "FRAMES", int, "right"),
    Column("comm", "COMM", str),
)


def blocked_result(
    blocked: Sequence[BlockedTask], records: Sequence[TaskRecord], missing: Sequence[Missing], complete: bool
) -> AnalysisResult:
    """Pure: the ``blocked`` result: a summary table, then one backtrace per task (``pid<N>``)."""
    rows = []
    tables: list[Table] = []
    traced = 0
    all_missing = list(missing)
    for b in sorted(blocked, key=lambda b: b.record.nr):
        r, bt = b.record, b.backtrace
        since = b.since_run_ns / 1e9 if isinstance(b.since_run_ns, int) else b.since_run_ns
        rows.append((r.pid, r.ppid, r.cpu, r.address, r.state, since, len(bt.frames), r.comm))
        tables += frames_tables(f"pid{r.nr}", f"PID {r.pid} ({r.comm}) on CPU {r.cpu}", bt)
        all_missing += bt.missing
        traced += bool(bt.frames) and not bt.missing
    notes = []
    if not complete:
        notes.append("the PID tree could not be walked to its end: blocked tasks after the gap are not listed")
    return AnalysisResult(
        name="blocked",
        title="Blocked tasks (D state)",
        facts=(("blocked", len(rows)), ("tasks looked at", len(records))),
        tables=(Table.build("blocked", "Tasks in uninterruptible sleep", _COLUMNS, rows), *tables),
        completeness=(
            Completeness("tasks looked at", sum(1 for r in records if r.readable),
                         len(records) if complete else None, tuple(missing)),
            Completeness("backtraces", traced, len(rows), tuple(all_missing[len(missing):])),
        ),
        notes=tuple(notes),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Find the D-state tasks of ``ctx.prog`` and unwind each."""
    return blocked_result(*read_blocked(ctx.prog))


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``blocked``."""
    register("blocked", analyze, "tasks in uninterruptible sleep (D) with their backtraces, the evidence of a "
             "hung task (crash's foreach UN bt)", needs=[Need.DEBUG_INFO],
             facts=["blocked", "tasks_looked_at"])
