"""``runq``: each CPU's run queue, like crash's ``runq``.

What drgn's own crash ``runq`` shows (``drgn.commands._crash._sched``), with
the same helpers: for every possible CPU its ``struct rq`` (``cpu_rq``), the
task it was running (``rq->curr``), then the real-time tasks queued on it
(``rq_for_each_rt_task``) and the fair-class ones in the CFS tree's order
(``cfs_rq_for_each_entity``, the running entity and group entities left
out), each with its priority.  A CPU whose queue cannot be read is a row of
placeholders; the other CPUs still show.
"""

# No ``from __future__ import annotations`` here: typing.NamedTuple would compile
# each field's annotation string on every import (issue 21, docs/PLUGINS.md).

from collections.abc import Sequence
from typing import NamedTuple

import drgn
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.sched import cfs_rq_for_each_entity, cpu_rq, rq_for_each_rt_task, sched_entity_to_task

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
from tsubaki_forensics.analysis.guard import READ_ERRORS, missing_for, placeholder_for, read_value
from tsubaki_forensics.plugin_system import hookimpl

__all__ = ["QueuedTask", "RunQueue", "read_runqueues", "runq_result", "analyze"]


class QueuedTask(NamedTuple):
    """A task waiting on a run queue: its scheduling class (``RT`` or ``CFS``) and priority."""

    sched_class: str
    prio: Value
    pid: Value
    task: int
    comm: Value


class RunQueue(NamedTuple):
    """One CPU's run queue; ``queued`` stops where it could not be read (``missing`` says why)."""

    cpu: int
    address: Value
    curr_pid: Value = None
    curr_task: Value = None
    curr_comm: Value = None
    queued: tuple[QueuedTask, ...] = ()
    missing: tuple[Missing, ...] = ()


def _comm(task: drgn.Object) -> str:
    return task.comm.string_().decode("utf-8", "backslashreplace")


def _queued(sched_class: str, task: drgn.Object) -> QueuedTask:
    return QueuedTask(sched_class, read_value(lambda: task.prio.value_()), read_value(lambda: task.pid.value_()),
                      task.value_(), read_value(lambda: _comm(task)))


def _read_rq(prog: drgn.Program, cpu: int) -> RunQueue:
    try:
        rq = cpu_rq(prog, cpu)
        address: Value = rq.value_()
        curr = rq.curr.read_()
    except READ_ERRORS as e:
        return RunQueue(cpu, placeholder_for(e), missing=(missing_for(str(cpu), e, group="CPU"),))
    queued: list[QueuedTask] = []
    missing: list[Missing] = []
    try:
        queued += [_queued("RT", t) for t in rq_for_each_rt_task(rq)]
    except READ_ERRORS as e:
        missing.append(missing_for(f"RT queue of CPU {cpu}", e))
    try:
        queued += [_queued("CFS", sched_entity_to_task(se))
                   for se, _, is_curr, is_task in cfs_rq_for_each_entity(rq.cfs.address_of_())
                   if is_task and not is_curr]
    except READ_ERRORS as e:
        missing.append(missing_for(f"CFS tree of CPU {cpu}", e))
    return RunQueue(cpu, address, read_value(lambda: curr.pid.value_()), curr.value_(),
                    read_value(lambda: _comm(curr)), tuple(queued), tuple(missing))


def read_runqueues(prog: drgn.Program) -> tuple[list[RunQueue], list[Missing]]:
    """The run queue of every possible CPU (drgn's ``runq`` default, ``-c all``)."""
    try:
        cpus = sorted(for_each_possible_cpu(prog))
    except READ_ERRORS as e:
        return [], [missing_for("possible CPU mask", e)]
    return [_read_rq(prog, cpu) for cpu in cpus], []


_RQ_COLUMNS = (
    Column("cpu", "CPU", int, "right"),
    Column("runqueue", "RUNQUEUE", int, fmt="address"),
    Column("curr_pid", "CURRENT PID", int, "right"),
    Column("curr_task", "CURRENT TASK", int, fmt="address"),
    Column("curr_comm", "CURRENT COMMAND", str),
    Column("rt_queued", "RT", int, "right"),
    Column("cfs_queued", "CFS", int, "right"),
)
_QUEUED_COLUMNS = (
    Column("cpu", "CPU", int, "right"),
    Column("class", "CLASS", str),
    Column("prio", "PRIO", int, "right"),
    Column("pid", "PID", int, "right"),
    Column("task", "TASK", int, fmt="address"),
    Column("comm", "COMMAND", str),
)


def runq_result(queues: Sequence[RunQueue], missing: Sequence[Missing]) -> AnalysisResult:
    """Pure: the ``runq`` result: one row per CPU, and every queued task (RT first, then CFS, as drgn)."""
    rows = []
    queued_rows = []
    all_missing = list(missing)
    for q in queues:
        count = {c: sum(1 for t in q.queued if t.sched_class == c) for c in ("RT", "CFS")}
        rows.append((q.cpu, q.address, q.curr_pid, q.curr_task, q.curr_comm, count["RT"], count["CFS"]))
        queued_rows += [(q.cpu, t.sched_class, t.prio, t.pid, t.task, t.comm) for t in q.queued]
        all_missing += q.missing
    readable = sum(1 for q in queues if not q.missing)
    return AnalysisResult(
        name="runq",
        title="Run queues",
        facts=(("cpus", len(queues)), ("queued tasks", len(queued_rows))),
        tables=(Table.build("runq", "Run queue of each CPU", _RQ_COLUMNS, rows),
                Table.build("queued", "Tasks waiting to run", _QUEUED_COLUMNS, queued_rows)),
        completeness=(Completeness("run queues", readable, len(queues) if not missing else None,
                                   tuple(all_missing)),),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read every CPU's run queue of ``ctx.prog``."""
    return runq_result(*read_runqueues(ctx.prog))


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``runq``."""
    register("runq", analyze, "each CPU's run queue: current task, queued RT and CFS tasks (crash's runq)",
             needs=[Need.DEBUG_INFO], facts=["cpus", "queued_tasks"])
