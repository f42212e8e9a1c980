"""The ``text`` renderer: what a crash user expects to read.

A header like crash's (``KERNEL``, ``DUMPFILE``, ``RELEASE``), then per
analysis its facts, its tables (``ps``-like grids, ``log``-like lines,
``bt``-like frames) and its completeness line.  Every string from the dump
goes through :func:`~tsubaki_forensics.cli.output.safe_text` so a crafted
dump cannot send escape sequences to the terminal.
"""

from __future__ import annotations

from typing import IO

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from ..analysis.report import Report
from ..analysis.results import AnalysisResult, Column, Status, Table, Value, is_placeholder
from ..cli.output import safe_text

__all__ = ["format_value", "render"]

_LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")


def format_value(value: Value, column: Column | None = None) -> str:
    """One value as text: placeholders in angle brackets, addresses in hex."""
    if value is None:
        return "-"
    if is_placeholder(value):
        return str(value)
    if isinstance(value, bool):
        return "yes" if value else ""
    if column is not None and column.fmt == "hex" and isinstance(value, int):
        return f"{value:x}"
    if isinstance(value, float):
        return f"{value:.6f}"
    return safe_text(value)


def _memory(d) -> str:
    """Present memory, and how complete it is against the dump's memory map."""
    if d.present_bytes is None:
        return "-"
    text = f"{d.present_bytes / (1 << 20):.1f} MiB present"
    if getattr(d, "excluded_bytes", 0):
        text += (f", {d.excluded_bytes / (1 << 20):.1f} MiB excluded by dump level {d.dump_level}"
                 f" (left out on purpose)")
    if d.complete is True:
        return text + " (COMPLETE: every byte of the memory map)"
    if d.completeness_percent is not None:
        return (text + f" of {d.expected_bytes / (1 << 20):.1f} MiB "
                f"(INCOMPLETE: {d.completeness_percent}%)")
    if d.complete is False:
        return text + " (INCOMPLETE; total unknown)"
    return text + (" (completeness unknown: no memory map)" if d.completeness else "")


def _header(report: Report) -> list[str]:
    d = report.dump
    rows = [
        ("KERNEL", d.vmlinux or "-"),
        ("DUMPFILE", " ".join(d.paths)),
        ("DUMP ID", d.dump_id or "-"),
        ("RELEASE", d.kernel_release or "-"),
        ("BUILD-ID", d.build_id or "-"),
        ("MEMORY", _memory(d)),
        ("REGISTERS", "saved" if d.registers else "not in the dump"),
    ]
    lines = [f"{k:>10}: {safe_text(v)}" for k, v in rows]
    lines += [f"{'PROBLEM':>10}: {safe_text(p)}" for p in d.problems]
    return lines


def _grid(table: Table) -> RichTable:
    grid = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=None)
    for c in table.columns:
        grid.add_column(c.title, justify="right" if c.align == "right" else "left", no_wrap=c.name != "text")
    for row in table.rows:
        grid.add_row(*(Text(format_value(v, c)) for v, c in zip(row, table.columns)))
    return grid


def _log_lines(table: Table) -> list[str]:
    out = []
    for line in table.dicts():
        t, level, text = line.get("time"), line.get("level"), line.get("text")
        stamp = f"[{t:12.6f}]" if isinstance(t, float) else f"[{format_value(t)}]"
        lv = _LEVELS[level] if isinstance(level, int) and 0 <= level < len(_LEVELS) else format_value(level)
        body = format_value(text)
        for i, piece in enumerate(body.split("\n")):
            out.append(f"{stamp} {lv:<6} {piece}" if i == 0 else f"{'':{len(stamp)}} {'':<6} {piece}")
    return out


def _frames(table: Table) -> list[str]:
    out = []
    for f in table.dicts():
        function, symbol, offset, pc = f.get("function"), f.get("symbol"), f.get("offset"), f.get("pc")
        if f.get("inline") or symbol is None:
            where = format_value(function) if function is not None else "?"
            where += " (inlined)" if f.get("inline") else ""
        else:
            where = format_value(symbol) + (f"+{offset:#x}" if isinstance(offset, int) else "")
        pc_text = f"{pc:x}" if isinstance(pc, int) else format_value(pc)
        line = f" #{f.get('index')!s:<2} [{pc_text}] {where}"
        if f.get("file") is not None:
            line += f"\n      {format_value(f.get('file'))}: {format_value(f.get('line'))}"
        out.append(line)
    return out or ["  (no frames)"]


def _result(console: Console, result: AnalysisResult) -> None:
    status = "" if result.status is Status.OK else f" [{result.status.value}]"
    console.print(Text(f"== {result.name}: {result.title}{status} =="))
    if result.error:
        console.print(Text(f"  {safe_text(result.error)}"))
    for key, value in result.facts:
        console.print(Text(f"  {key}: {format_value(value)}"))
    for table in result.tables:
        console.print(Text(f"\n  {safe_text(table.title)}"))
        names = {c.name for c in table.columns}
        if {"time", "level", "text"} <= names:
            for line in _log_lines(table):
                console.print(Text(line))
        elif {"function", "pc", "offset"} <= names:
            for line in _frames(table):
                console.print(Text(line))
        else:
            console.print(_grid(table))
    for c in result.completeness:
        console.print(Text(f"  {'complete' if c.complete else 'INCOMPLETE'}: {safe_text(c.summary())}"))
    for note in result.notes:
        console.print(Text(f"  note: {safe_text(note)}"))
    console.print()


def render(report: Report, out: IO[str]) -> None:
    """Write the report for a person, no colour, wide enough for log lines."""
    console = Console(file=out, highlight=False, soft_wrap=True, color_system=None, width=200)
    for line in _header(report):
        console.print(Text(line))
    console.print()
    for result in report.results:
        _result(console, result)
