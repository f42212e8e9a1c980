"""``tasks``: the task list, like crash's ``ps``.

PPID is the parent process as ``ps(1)`` shows it (``real_parent->tgid``);
``parent_pid`` is what crash's and drgn's ``ps`` print (``parent->pid``),
which differs for the idle tasks of secondary CPUs (their ``parent`` is a
copy of the forking task's, never set) and for traced tasks;
"on CPU" is the task's own ``on_cpu`` flag, and a second table names the
task each CPU was running (``cpu_curr``), idle tasks included.  The per-CPU
idle tasks (PID 0, ``swapper/N``) are in no PID namespace, so the PID walk
never meets them: a third table, ``idle``, lists one per present CPU with the
task table's columns (crash's ``ps`` shows them first).

Extraction walks the PID IDR with drgn's ``idr_for_each`` and ``pid_task``
(what ``for_each_task`` does) but keeps each PID number, so a task whose
``task_struct`` was not collected is still named in the report
("pids 30, 31 not collected") instead of silently missing.  Every field is
read on its own: a half-collected ``task_struct`` gives a row with
placeholders.
"""

# No ``from __future__ import annotations`` here: typing.NamedTuple would compile
# each field's annotation string on every import (issue 21, docs/PLUGINS.md).

from collections.abc import Sequence
from typing import NamedTuple

import drgn
from drgn.helpers.linux.cpumask import for_each_present_cpu
from drgn.helpers.linux.idr import idr_for_each
from drgn.helpers.linux.kthread import task_is_kthread
from drgn.helpers.linux.mm import task_rss, task_vsize, totalram_pages
from drgn.helpers.linux.pid import pid_task
from drgn.helpers.linux.sched import cpu_curr, idle_task, task_cpu, task_state_to_char

from tsubaki_forensics.analysis import (
    AnalysisContext,
    AnalysisResult,
    Column,
    Completeness,
    Missing,
    Need,
    NotCollected,
    Table,
    Unreadable,
    Value,
    is_placeholder,
)
from tsubaki_forensics.analysis.guard import READ_ERRORS, missing_for, placeholder_for, read_value
from tsubaki_forensics.plugin_system import hookimpl

__all__ = ["TaskRecord", "CpuRecord", "read_tasks", "read_idle_tasks", "read_cpus", "crashed_pid", "tasks_result",
           "analyze"]


_PLACEHOLDERS = (NotCollected, Unreadable)


class TaskRecord(NamedTuple):
    """One task as read from the dump; any field may be a placeholder.

    :param nr: the PID number from the IDR (known even when the task is not).
    :param address: ``struct task_struct *`` value, or ``None`` if unknown.
    """

    nr: int
    address: int | None
    pid: Value
    ppid: Value
    comm: Value
    state: Value
    cpu: Value
    on_cpu: Value = None
    mem_percent: Value = None  # crash ps's %MEM: resident pages / totalram_pages
    vsz_kb: Value = None
    rss_kb: Value = None
    kthread: Value = None
    parent_pid: Value = None  # crash's ps PPID: parent->pid

    @property
    def readable(self) -> bool:
        for value in (self.pid, self.ppid, self.comm, self.state, self.cpu, self.on_cpu):
            if isinstance(value, _PLACEHOLDERS):  # is_placeholder, without a call per field
                return False
        return True


class CpuRecord(NamedTuple):
    """The task running on one present CPU (``cpu_curr``)."""

    cpu: int
    address: Value
    pid: Value
    comm: Value


def _comm(task: drgn.Object) -> str:
    return task.comm.string_().decode("utf-8", "backslashreplace")


class _Memory(NamedTuple):
    """What crash's ps divides by: total RAM pages and the page size (read once)."""

    total_pages: int
    page_size: int


def _memory(prog: drgn.Program) -> _Memory | None:
    try:
        return _Memory(totalram_pages(prog), prog["PAGE_SIZE"].value_())
    except READ_ERRORS:
        return None


def _read_task(nr: int, task: drgn.Object, memory: _Memory | None = None) -> TaskRecord:
    """One task; its memory figures with drgn's own helpers (those of its crash ``ps``)."""
    rss_pages = read_value(lambda: task_rss(task.prog_, task).total)
    if memory is None or not isinstance(rss_pages, int):
        mem_percent: Value = rss_pages if is_placeholder(rss_pages) else None
        rss_kb: Value = mem_percent
    else:
        mem_percent = round(rss_pages / memory.total_pages * 100, 1) if memory.total_pages else None
        rss_kb = rss_pages * memory.page_size // 1024
    return TaskRecord(
        nr=nr,
        address=task.value_(),
        pid=read_value(lambda: task.pid.value_()),
        ppid=read_value(lambda: task.real_parent.tgid.value_()),
        on_cpu=read_value(lambda: bool(task.on_cpu)),
        comm=read_value(lambda: _comm(task)),
        state=read_value(lambda: task_state_to_char(task)),
        cpu=read_value(lambda: task_cpu(task)),
        mem_percent=mem_percent,
        vsz_kb=read_value(lambda: task_vsize(task) // 1024),
        rss_kb=rss_kb,
        kthread=read_value(lambda: task_is_kthread(task)),
        parent_pid=read_value(lambda: task.parent.pid.value_()),
    )


_CACHE_KEY = "tsubaki_plugins.tasks.records"


def read_tasks(prog: drgn.Program) -> tuple[list[TaskRecord], list[Missing], bool]:
    """Every task of the initial PID namespace, in PID order.

    :returns: the records, what could not be read, and whether the PID walk
        reached its end (``False``: some PIDs may be absent from the list).
        A complete walk is kept in ``prog.cache`` for ``blocked``.
    """
    cached = prog.cache.get(_CACHE_KEY)
    if cached is not None:
        return list(cached), [], True
    records: list[TaskRecord] = []
    missing: list[Missing] = []
    memory = _memory(prog)
    try:
        pidtype_pid = prog["PIDTYPE_PID"].value_()
        walk = idr_for_each(prog["init_pid_ns"].idr)
        for nr, entry in walk:
            try:
                task = pid_task(drgn.cast("struct pid *", entry), pidtype_pid)
                if not task:
                    continue  # a PID with no task (only a process group, say)
            except READ_ERRORS as e:
                missing.append(missing_for(str(nr), e, group="pid"))
                records.append(_unreadable_task(nr, e))
                continue
            record = _read_task(nr, task, memory)
            records.append(record)
            if not record.readable:
                missing.append(_missing_task(record))
    except READ_ERRORS as e:
        missing.append(missing_for("PID tree (init_pid_ns.idr)", e))
        return records, missing, False
    if not missing:  # a walk with gaps is not kept: memory may be added to the program and the walk retried
        prog.cache[_CACHE_KEY] = tuple(records)
    return records, missing, True


def _missing_task(record: TaskRecord) -> Missing:
    fields = (record.pid, record.ppid, record.comm, record.state, record.cpu, record.on_cpu)
    bad = next(v for v in fields if is_placeholder(v))
    if isinstance(bad, NotCollected):
        return Missing(str(record.nr), bad.address, True, "pid")
    return Missing(str(record.nr), None, False, "pid")


def _unreadable_task(nr: int, error: BaseException) -> TaskRecord:
    placeholder = placeholder_for(error)
    return TaskRecord(nr, None, nr, placeholder, placeholder, placeholder, placeholder, placeholder,
                      parent_pid=placeholder)


def _present_cpus(prog: drgn.Program) -> list[int]:
    return list(for_each_present_cpu(prog))


def read_idle_tasks(prog: drgn.Program) -> tuple[list[TaskRecord], list[Missing]]:
    """The idle task (``swapper/N``, PID 0) of each present CPU, in CPU order (drgn's ``idle_task``).

    Present, not online, for the reason :func:`read_cpus` gives.
    """
    records: list[TaskRecord] = []
    missing: list[Missing] = []
    try:
        cpus = _present_cpus(prog)
    except READ_ERRORS as e:
        return records, [missing_for("present CPU mask", e)]
    memory = _memory(prog)
    for cpu in cpus:
        try:
            record = _read_task(0, idle_task(prog, cpu), memory)
        except READ_ERRORS as e:
            missing.append(missing_for(f"idle task of CPU {cpu}", e))
            records.append(_unreadable_task(0, e))
            continue
        records.append(record)
        if not record.readable:
            missing.append(_missing_task(record))
    return records, missing


def read_cpus(prog: drgn.Program) -> tuple[list[CpuRecord], list[Missing]]:
    """The task on each present CPU (idle tasks included, as crash shows them).

    Present, not online: ``panic()`` takes the other CPUs offline while it
    stops them, but their tasks are still the ones that were running.
    """
    cpus: list[CpuRecord] = []
    missing: list[Missing] = []
    try:
        online = _present_cpus(prog)
    except READ_ERRORS as e:
        return cpus, [missing_for("present CPU mask", e)]
    for cpu in online:
        try:
            task = cpu_curr(prog, cpu)
            address: Value = task.value_()
        except READ_ERRORS as e:
            missing.append(missing_for(str(cpu), e, group="CPU"))
            cpus.append(CpuRecord(cpu, placeholder_for(e), None, None))
            continue
        cpus.append(CpuRecord(cpu, address, read_value(lambda: task.pid.value_()), read_value(lambda: _comm(task))))
    return cpus, missing


def crashed_pid(prog: drgn.Program) -> Value:
    """PID of the task that panicked (``prog.crashed_thread()``), or a placeholder."""
    return read_value(lambda: prog.crashed_thread().tid)


_TASK_COLUMNS = (
    Column("pid", "PID", int, "right"),
    Column("ppid", "PPID", int, "right"),
    Column("cpu", "CPU", int, "right"),
    Column("task", "TASK", int, fmt="address"),
    Column("state", "ST", str),
    Column("on_cpu", "ON CPU", bool),
    Column("crashed", "CRASHED", bool),
    Column("comm", "COMM", str),
    Column("mem_percent", "%MEM", float, "right"),
    Column("vsz", "VSZ", int, "right"),  # KiB, as crash and ps(1) show it
    Column("rss", "RSS", int, "right"),  # KiB
    Column("kthread", "KTHREAD", bool),
    Column("parent_pid", "PARENT", int, "right"),  # crash's ps PPID (parent->pid)
)
_CPU_COLUMNS = (
    Column("cpu", "CPU", int, "right"),
    Column("pid", "PID", int, "right"),
    Column("task", "TASK", int, fmt="address"),
    Column("comm", "COMM", str),
    Column("crashed", "CRASHED", bool),
)


def tasks_result(
    records: Sequence[TaskRecord],
    cpus: Sequence[CpuRecord],
    crashed: Value,
    missing: Sequence[Missing],
    walk_complete: bool,
    idle: Sequence[TaskRecord] = (),
    idle_missing: Sequence[Missing] = (),
    crashed_address: Value = None,
) -> AnalysisResult:
    """Pure: the ``tasks`` result from what extraction read.

    The crashed task is the one ``prog.crashed_thread()`` names
    (``panic_cpu``'s task).
    """
    crashed_pid = crashed if isinstance(crashed, int) else None

    def row(r: TaskRecord, is_idle: bool = False) -> tuple[Value, ...]:
        # The PID number from the IDR (struct pid) names the task even when
        # its task_struct was not collected.
        pid = r.nr if is_placeholder(r.pid) else r.pid
        if isinstance(crashed_address, int):  # the task itself: every idle task has PID 0
            crashed_row = r.address == crashed_address
        else:
            crashed_row = not is_idle and crashed_pid is not None and r.pid == crashed_pid
        return (pid, r.ppid, r.cpu, r.address, r.state, r.on_cpu, crashed_row, r.comm,
                r.mem_percent, r.vsz_kb, r.rss_kb, r.kthread, r.parent_pid)

    rows = [row(r) for r in sorted(records, key=lambda r: r.nr)]
    crashed_cpu_rows = []
    for c in cpus:
        is_crashed = crashed_pid is not None and c.pid == crashed_pid
        crashed_cpu_rows.append((c.cpu, c.pid, c.address, c.comm, is_crashed))
    readable = sum(1 for r in records if r.readable)
    facts: list[tuple[str, Value]] = [("tasks", len(records)), ("crashed pid", crashed)]
    notes = []
    if not walk_complete:
        notes.append("the PID tree could not be walked to its end: tasks after the gap are not listed")
    return AnalysisResult(
        name="tasks",
        title="Tasks",
        facts=tuple(facts),
        tables=(
            Table.build("tasks", "Tasks", _TASK_COLUMNS, rows),
            Table.build("cpus", "Running on each CPU", _CPU_COLUMNS, crashed_cpu_rows),
            Table.build("idle", "Idle task of each CPU", _TASK_COLUMNS, [row(r, True) for r in idle]),
        ),
        completeness=(
            Completeness("tasks", readable, len(records) if walk_complete else None, tuple(missing)),
            # total unknown only when not even the CPU mask could be read
            *((Completeness("idle tasks", sum(1 for r in idle if r.readable),
                            len(idle) if idle else None, tuple(idle_missing)),) if idle or idle_missing else ()),
        ),
        notes=tuple(notes),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read the tasks and CPUs of ``ctx.prog`` and build the result."""
    records, missing, complete = read_tasks(ctx.prog)
    cpus, cpu_missing = read_cpus(ctx.prog)
    idle, idle_missing = read_idle_tasks(ctx.prog)
    crashed_task = read_value(lambda: ctx.prog.crashed_thread().object.value_())
    return tasks_result(records, cpus, crashed_pid(ctx.prog), [*missing, *cpu_missing], complete, idle, idle_missing,
                        crashed_task)


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``tasks``."""
    register("tasks", analyze, "task list with state, CPU, memory and the crashed task, idle tasks included (crash's ps)", needs=[Need.DEBUG_INFO],
             facts=["tasks", "crashed_pid"])
