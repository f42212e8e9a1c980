"""``sys``: crash's start-up summary, with the kernel's taint flags.

What crash prints before its first prompt (``CPUS``, ``DATE``, ``UPTIME``,
``LOAD AVERAGE``, ``TASKS``, ``NODENAME``, ``RELEASE``, ``VERSION``,
``MACHINE``, ``MEMORY``, ``PANIC``, then the panic task's ``PID``,
``COMMAND``, ``TASK``, ``CPU``, ``STATE``), read by drgn's own
implementation of crash's ``sys`` command (``drgn.commands._crash._sys``),
so the figures are those of ``tsubaki-forensics crash DUMP -c sys``; plus
``TAINT`` (drgn's ``tainted()``: the kernel's letters, or "not tainted").
Each figure is read on its own: one that cannot be read is a placeholder
that says why.  ``KERNEL`` and ``DUMPFILE`` are in the report's header.
"""

from __future__ import annotations

from typing import Any

import drgn

from tsubaki_forensics.analysis import (
    AnalysisContext,
    AnalysisResult,
    Completeness,
    Missing,
    Need,
    Value,
    fact_key,
    is_placeholder,
)
from tsubaki_forensics.analysis.guard import read_value
from tsubaki_forensics.plugin_system import hookimpl

__all__ = ["SYSTEM_FIELDS", "TASK_FIELDS", "sys_result", "analyze"]

#: crash's system fields in its order (KERNEL and DUMPFILE are the report header's).
SYSTEM_FIELDS = ("CPUS", "DATE", "UPTIME", "LOAD AVERAGE", "TASKS", "NODENAME", "RELEASE", "VERSION", "MACHINE",
                 "MEMORY", "PANIC")
#: crash's panic-task fields.
TASK_FIELDS = ("PID", "COMMAND", "TASK", "CPU", "STATE")


def _plain(value: Any) -> Value:
    """A getter's value as a fact: a number stays (or becomes) a number, crash's quotes go, the rest is text."""
    if value is None or isinstance(value, (int, float, bool)) or is_placeholder(value):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def sys_result(facts: list[tuple[str, Value]]) -> AnalysisResult:
    """Pure: the ``sys`` result from the figures read (in crash's order)."""
    missing = tuple(Missing(name, getattr(v, "address", None), type(v).__name__ == "NotCollected", "field")
                    for name, v in facts if is_placeholder(v))
    return AnalysisResult(
        name="sys",
        title="System",
        facts=tuple(facts),
        completeness=(Completeness("summary fields", len(facts) - len(missing), len(facts), missing),),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read crash's summary with drgn's ``sys`` getters, then the taint flags."""
    from drgn.commands._crash import _sys
    from drgn.helpers.linux.panic import panic_task, tainted

    prog = ctx.prog
    system = {name: getter for name, _, getter in _sys._FIELDS}
    task_getters = {name: getter for name, _, getter in _sys._TASK_FIELDS}
    facts: list[tuple[str, Value]] = []
    for name in SYSTEM_FIELDS:
        if name in system:
            facts.append((name, _plain(read_value(lambda get=system[name]: get(prog)))))
    facts.append(("TAINT", read_value(lambda: tainted(prog) or "not tainted")))
    task = read_value(lambda: panic_task(prog))
    if isinstance(task, drgn.Object):
        for name in TASK_FIELDS:
            if name in task_getters:
                facts.append((name, _plain(read_value(lambda get=task_getters[name]: get(task)))))
    return sys_result(facts)


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``sys``."""
    register(
        "sys",
        analyze,
        "crash's start-up summary: CPUs, date, uptime, load, tasks, release, memory, panic, taint (crash's sys)",
        needs=[Need.DEBUG_INFO],
        facts=[fact_key(name) for name in (*SYSTEM_FIELDS, "TAINT", *TASK_FIELDS)],
    )
