"""``dmesg``: the kernel log with timestamps and levels, like crash's ``log``.

Extraction is drgn's ``get_printk_records``; it is all-or-nothing, so when a
page of the printk ring was not collected the result says which address is
missing and lists no lines rather than guessing at a partial log.  Turning
records into lines (seconds, level, text, ``--tail``) is pure.

Option ``wall_clock`` (``analyze -T``, crash's ``log -T``) adds each line's
wall-clock time, computed as drgn's ``get_dmesg(timestamps="human")`` does:
boot time = coarse real time minus coarse monotonic time, plus the record's
timestamp, in the local time zone; like dmesg's, it is only right for lines
printed since the last suspend/resume.
"""

# No ``from __future__ import annotations`` here: typing.NamedTuple would compile
# each field's annotation string on every import (issue 21, docs/PLUGINS.md).

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

import drgn
from drgn.helpers.linux.printk import get_printk_records
from drgn.helpers.linux.timekeeping import ktime_get_coarse_ns, ktime_get_coarse_real_ns

from tsubaki_forensics.analysis import (
    AnalysisContext,
    AnalysisOption,
    AnalysisResult,
    Column,
    Completeness,
    Missing,
    Need,
    Table,
    Value,
)
from tsubaki_forensics.analysis.guard import READ_ERRORS, missing_for, read_value
from tsubaki_forensics.plugin_system import hookimpl

__all__ = ["LogLine", "LEVEL_NAMES", "read_log", "read_boot_time_ns", "wall_clock", "log_lines", "tail", "dmesg_result",
           "analyze"]

#: syslog levels as ``printk`` uses them (include/linux/kern_levels.h)
LEVEL_NAMES = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")


class LogLine(NamedTuple):
    """One log record: seconds since boot, syslog level, text (one or more lines)."""

    time: float
    level: int
    text: str
    seq: int | None = None
    caller: str | None = None  # "T123" (task) or "C1" (CPU) as printk's caller id
    ns: int | None = None  # the record's own timestamp (nanoseconds since boot)


def _caller(tid: int | None, cpu: int | None) -> str | None:
    if tid is not None:
        return f"T{tid}"
    if cpu is not None:
        return f"C{cpu}"
    return None


def log_lines(records: Iterable[object]) -> list[LogLine]:
    """Pure: printk records (``drgn.helpers.linux.printk.PrintkRecord``) to lines.

    Text is decoded as UTF-8 with undecodable bytes kept as ``\\xNN`` (the
    kernel does not promise UTF-8); timestamps become seconds.
    """
    out = []
    for r in records:
        ns = r.timestamp  # type: ignore[attr-defined]
        # positional (time, level, text, seq, caller, ns): a record per log line, ~1,000 a run
        out.append(LogLine(ns / 1e9, r.level, r.text.decode("utf-8", "backslashreplace"),  # type: ignore[attr-defined]
                           r.seq, _caller(r.caller_tid, r.caller_cpu), ns))  # type: ignore[attr-defined]
    return out


def tail(lines: Sequence[LogLine], n: int | None) -> list[LogLine]:
    """The last ``n`` lines (all of them when ``n`` is ``None``)."""
    if n is None:
        return list(lines)
    if n < 0:
        raise ValueError("--tail must be 0 or more")
    return list(lines[len(lines) - n :]) if n else []


_CACHE_KEY = "tsubaki_plugins.dmesg.lines"


def read_log(prog: drgn.Program) -> tuple[list[LogLine] | None, list[Missing]]:
    """All records of the printk ring, or ``None`` and what was missing.

    The lines are kept in ``prog.cache`` so that ``panic`` reads the ring
    only once; a failed read is not cached.
    """
    cached = prog.cache.get(_CACHE_KEY)
    if cached is not None:
        return list(cached), []
    try:
        lines = log_lines(get_printk_records(prog))
    except READ_ERRORS as e:
        return None, [missing_for("printk ring buffer", e)]
    prog.cache[_CACHE_KEY] = tuple(lines)
    return lines, []


def read_boot_time_ns(prog: drgn.Program) -> Value:
    """Wall-clock time of boot in nanoseconds since the epoch (as drgn's ``log -T``), or a placeholder."""
    return read_value(lambda: ktime_get_coarse_real_ns(prog).value_() - ktime_get_coarse_ns(prog).value_())


def wall_clock(boot_ns: int, line: LogLine) -> str | None:
    """Pure: a line's wall-clock time as crash's and drgn's ``log -T`` print it
    (``Fri Dec  4 12:11:29 UTC 2026``, local time zone)."""
    ns = line.ns if line.ns is not None else round(line.time * 1e9)
    return datetime.fromtimestamp((boot_ns + ns) // 1_000_000_000).astimezone().strftime("%a %b %e %T %Z %Y")


_COLUMNS = (
    Column("time", "TIME", float, "right"),
    Column("level", "LEVEL", int, "right"),
    Column("caller", "CALLER", str),
    Column("text", "TEXT", str),
)


_WALL = Column("wall_time", "WALL CLOCK", str)


def dmesg_result(lines: list[LogLine] | None, missing: Sequence[Missing], tail_n: int | None = None,
                 boot_ns: Value = None) -> AnalysisResult:
    """Pure: the ``dmesg`` result; ``lines`` is ``None`` when the ring was not readable.

    ``boot_ns`` (wall-clock option): adds a ``wall_time`` column, a
    placeholder in every row when boot time could not be read.
    """
    if lines is None:
        return AnalysisResult(
            name="dmesg",
            title="Kernel log",
            facts=(("records", None),),
            completeness=(Completeness("log records", 0, None, tuple(missing)),),
            notes=("drgn reads the printk ring as a whole; no line is shown rather than a guessed partial log",),
        )
    shown = tail(lines, tail_n)
    columns: tuple[Column, ...] = _COLUMNS
    rows: list[tuple[Value, ...]] = [(line.time, line.level, line.caller, line.text) for line in shown]
    if boot_ns is not None:
        columns = (*_COLUMNS, _WALL)
        rows = [(*row, wall_clock(boot_ns, line) if isinstance(boot_ns, int) else boot_ns)
                for row, line in zip(rows, shown)]
    facts: list[tuple[str, Value]] = [("records", len(lines))]
    if tail_n is not None:
        facts.append(("shown", len(shown)))
    return AnalysisResult(
        name="dmesg",
        title="Kernel log",
        facts=tuple(facts),
        tables=(Table.build("log", "Kernel log", columns, rows),),
        completeness=(Completeness("log records", len(lines), len(lines), tuple(missing)),),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read the printk ring of ``ctx.prog``; option ``tail`` keeps the last N lines, ``wall_clock``
    adds wall-clock times."""
    lines, missing = read_log(ctx.prog)
    boot_ns = read_boot_time_ns(ctx.prog) if ctx.option("wall_clock") else None
    return dmesg_result(lines, missing, ctx.option("tail"), boot_ns)


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``dmesg``."""
    register("dmesg", analyze, "the kernel log with timestamps and levels (crash's log)", needs=[Need.DEBUG_INFO],
             options=[AnalysisOption("tail", int, "show only the last N log lines (text default: 50).", min=0),
                      AnalysisOption("wall_clock", bool, "each log line's wall-clock time (crash's log -T; JSON: "
                                     "a wall_time column).", short="-T")],
             facts=["records", "shown"])
