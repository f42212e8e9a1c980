"""The ``text`` renderer: what a crash user expects to read.

A header like crash's (``KERNEL``, ``DUMPFILE``, ``RELEASE``), then per
analysis its facts, its tables (``ps``-like grids, ``log``-like lines,
``bt``-like frames) and its completeness line.  Every string from the dump
goes through :func:`~tsubaki_forensics.render.safe.safe_text` so a crafted
dump cannot send escape sequences to the terminal.
"""

from __future__ import annotations

from typing import IO

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from ..contracts.report import Report
from ..contracts.results import AnalysisResult, Column, Status, Table, Value, is_placeholder
from .safe import safe_text

__all__ = ["format_value", "binary_units", "render"]


def binary_units(n: int) -> str:
    """A byte count as crash's ``kmem -i`` prints it: ``469.8MB``, ``44KB``, ``0`` (units of 1024)."""
    if n == 0:
        return "0"
    value, prefix = float(n), ""
    for prefix in ("", "K", "M", "G", "T", "P", "E"):
        if abs(value) < 1024:
            break
        value /= 1024
    return f"{value:.0f}{prefix}B" if value.is_integer() else f"{value:.1f}{prefix}B"


def format_value(value: Value, column: Column | None = None) -> str:
    """One value as text: placeholders in angle brackets, addresses in hex."""
    if value is None:
        return "-"
    if is_placeholder(value):
        return str(value)
    if isinstance(value, bool):
        return "yes" if value else ""
    if column is not None and column.fmt in ("hex", "address") and isinstance(value, int):
        return f"{value:x}"
    if column is not None and column.fmt == "bytes" and isinstance(value, int):
        return binary_units(value)
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


def _kernel(report: Report) -> str:
    """crash's KERNEL line: the vmlinux, or where the debug info came from instead."""
    if report.dump.vmlinux:
        return report.dump.vmlinux
    for warning in report.warnings:
        if warning.startswith("self-contained:"):
            return "(no vmlinux: types from the dump's own BTF, symbols from its kallsyms)"
        if warning.startswith("symbol pack:"):
            return "(no vmlinux: a symbol pack)"
    return "-"


def _header(report: Report) -> list[str]:
    d = report.dump
    rows = [
        ("KERNEL", _kernel(report)),
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
    """dmesg's and crash ``log``'s own format: ``[    2.694986] text``, the caller id
    (``[T112]``) after the time when the kernel recorded one, no level word; with a
    ``wall_time`` column (``log -T``), ``[Fri Dec  4 12:11:29 UTC 2026] text``."""
    out = []
    for line in table.dicts():
        t, caller, text = line.get("time"), line.get("caller"), line.get("text")
        stamp = f"[{t:12.6f}]" if isinstance(t, float) else f"[{format_value(t)}]"
        if "wall_time" in line:  # log -T: the wall-clock time instead of seconds since boot
            stamp = f"[{format_value(line['wall_time'])}]"
        if isinstance(caller, str) and caller:
            stamp += f" [{safe_text(caller)}]"
        body = safe_text(text, keep_newlines=True) if isinstance(text, str) else format_value(text)
        for i, piece in enumerate(body.split("\n")):
            out.append(f"{stamp} {piece}" if i == 0 else f"{'':{len(stamp)}} {piece}")
    return out


# The registers crash shows for an x86-64 exception frame, in its order; other
# architectures: every register drgn saved, in drgn's order.
_X86_REGISTERS = ("rip", "rsp", "rflags", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp",
                  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "cs", "ss")
_NARROW = {"rflags": 8, "eflags": 8, "cs": 4, "ss": 4, "ds": 4, "es": 4, "fs": 4, "gs": 4}


def _register_lines(saved: dict[str, object]) -> list[str]:
    """crash's exception-frame block: ``    RIP: ffffffff...  RSP: ...  RFLAGS: 00000206``, three a line."""
    names = [n for n in _X86_REGISTERS if n in saved] if "rip" in saved else list(saved)
    cells = []
    for n in names:
        v = saved[n]
        text = f"{v:0{_NARROW.get(n, 16)}x}" if isinstance(v, int) else format_value(v)
        cells.append(f"{n.upper():>3}: {text}")
    return ["    " + "  ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]


#: Stacks crash and drgn's ``bt`` close with a ``--- <IRQ stack> ---`` line (drgn's StackKind names).
_SEPARATE_STACKS = ("IRQ", "SOFTIRQ", "NMI", "EXCEPTION")


def _frames(table: Table, registers: Table | None = None) -> list[str]:
    """crash's ``bt`` lines: ``#0 [SP] func+off/size at PC [module]``, ``(inline)`` frames, file: line,
    the saved registers of each exception frame before the frame it interrupted, and
    ``--- <IRQ stack> ---`` where the trace leaves an IRQ, softirq, NMI or exception stack."""
    saved: dict[object, dict[str, object]] = {}
    for r in registers.dicts() if registers is not None else ():
        saved.setdefault(r.get("index"), {})[str(r.get("register"))] = r.get("value")
    rows = table.dicts()
    width = max((len(f"{f['sp']:x}") for f in rows if isinstance(f.get("sp"), int)), default=16)
    out = []
    for n, f in enumerate(rows):
        function, symbol, offset, size, pc = (f.get(k) for k in ("function", "symbol", "offset", "size", "pc"))
        module = f" [{safe_text(f['module'])}]" if isinstance(f.get("module"), str) else ""
        index = f"#{f.get('index')}"
        if f.get("index") in saved:
            out.extend(_register_lines(saved[f.get("index")]))
        if f.get("inline"):
            out.append(f"{index:>3} {'(inline)':{width + 2}} {format_value(function)}{module}")
        else:
            where = symbol if isinstance(symbol, str) else function if isinstance(function, str) else None
            if where is None:
                where = "?"
            elif isinstance(offset, int):
                where += f"+{offset:#x}" + (f"/{size:#x}" if isinstance(size, int) and size else "")
            sp = f.get("sp")
            sp_text = f"{sp:0{width}x}" if isinstance(sp, int) else "?" * width
            pc_text = f"{pc:x}" if isinstance(pc, int) else format_value(pc)
            out.append(f"{index:>3} [{sp_text}] {safe_text(where)} at {pc_text}{module}")
        if f.get("file") is not None:
            out.append(f"    {format_value(f.get('file'))}: {format_value(f.get('line'))}")
        stack = f.get("stack")
        if stack in _SEPARATE_STACKS and (n + 1 == len(rows) or rows[n + 1].get("stack") != stack):
            out.append(f"--- <{stack} stack> ---")  # the trace leaves an interrupt/exception stack here
    if len(rows) in saved:  # the registers user space entered the kernel with
        out.extend(_register_lines(saved[len(rows)]))
    return out or ["  (no frames)"]


_PS = ("pid", "ppid", "cpu", "task", "state", "mem_percent", "vsz", "rss", "comm")


def _ps_lines(*tables: Table) -> list[str]:
    """crash's ``ps``: ``>`` marks a task on a CPU, kernel threads in brackets, %MEM VSZ RSS (KiB);
    the rows of every table in turn (the idle tasks first, as crash lists them)."""
    columns = {c.name: c for c in tables[0].columns}
    header = ("", "PID", "PPID", "CPU", "TASK", "ST", "%MEM", "VSZ", "RSS", "COMM")
    rows = []
    for r in (row for table in tables for row in table.dicts()):
        comm = format_value(r.get("comm"))
        if r.get("kthread") is True:
            comm = f"[{comm}]"
        mem = r.get("mem_percent")
        cells = [format_value(r.get(k), columns[k]) for k in _PS[:5]]
        if "parent_pid" in r:  # crash's PPID is parent->pid (ppid: ps(1)'s real_parent->tgid)
            cells[1] = format_value(r["parent_pid"])
        cells += [f"{mem:.1f}" if isinstance(mem, float) else format_value(mem),
                  format_value(r.get("vsz")), format_value(r.get("rss")), comm]
        rows.append([">" if r.get("on_cpu") is True else "", *cells])
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        left = "  ".join(f"{str(v):>{w}}" for v, w in zip(row[1:4], widths[1:4]))
        mid = f"{row[4]:^{widths[4]}}  {row[5]:<{widths[5]}}"
        right = "  ".join(f"{str(v):>{w}}" for v, w in zip(row[6:9], widths[6:9]))
        lines.append(f"{row[0]:1} {left}  {mid}  {right}  {row[9]}".rstrip())
    return lines


def _kmem_lines(table: Table) -> list[str]:
    """crash's ``kmem -i``: label, pages, size, and the share of its total; a blank line before each total."""
    columns = {c.name: c for c in table.columns}
    lines = [f"{'':>12}  {'PAGES':>10}  {'TOTAL':>10}  PERCENTAGE"]
    for i, r in enumerate(table.dicts()):
        if i and r.get("of") is None:
            lines.append("")
        pct = r.get("percent")
        share = (f"{pct:.0f}% of {safe_text(r['of'])}" if isinstance(pct, float) and isinstance(r.get("of"), str)
                 else "----" if r.get("of") is None else format_value(pct))
        lines.append(f"{safe_text(r.get('item')):>12}  {format_value(r.get('pages')):>10}  "
                     f"{format_value(r.get('bytes'), columns['bytes']):>10}  {share}")
    return lines


_RUNQ = {"cpu", "runqueue", "curr_pid", "curr_task", "curr_comm"}
_QUEUED = {"cpu", "class", "prio", "pid", "task", "comm"}


def _task_header(pid: object, task: object, comm: object, prio: object = None) -> str:
    """crash's task header: ``[120] PID: 7        TASK: ffff...  COMMAND: "kworker/0:0"``."""
    head = f"[{format_value(prio):>3}] " if prio is not None else ""
    task_text = f"{task:x}" if isinstance(task, int) else format_value(task)
    return f'{head}PID: {format_value(pid):<7}  TASK: {task_text}  COMMAND: "{format_value(comm)}"'


def _runq_lines(runq: Table, queued: Table | None) -> list[str]:
    """crash's ``runq``: each CPU's run queue, its current task, then the RT and CFS tasks waiting."""
    waiting = queued.dicts() if queued is not None else []
    lines: list[str] = []
    for q in runq.dicts():
        if lines:
            lines.append("")
        address = q.get("runqueue")
        lines.append(f"CPU {q.get('cpu')} RUNQUEUE: " + (f"{address:x}" if isinstance(address, int) else format_value(address)))
        lines.append("  CURRENT: " + _task_header(q.get("curr_pid"), q.get("curr_task"), q.get("curr_comm")))
        for klass in ("RT", "CFS"):
            tasks = [t for t in waiting if t.get("cpu") == q.get("cpu") and t.get("class") == klass]
            lines.append(f"  {klass}:")
            lines += [f"     {_task_header(t.get('pid'), t.get('task'), t.get('comm'), t.get('prio'))}" for t in tasks]
            if not tasks:
                lines.append("     [no tasks queued]")
    return lines


# crash's order: the sys summary, the panic and its backtraces, the blocked tasks' stacks,
# then the tasks, run queues, memory and modules, then whatever plugins add, the kernel
# log last (``analyze --full`` for all of it).
_ORDER = {"sys": -1, "panic": 0, "blocked": 1, "tasks": 2, "runq": 3, "memory": 4, "modules": 5, "dmesg": 99}


def _result(console: _Lines, result: AnalysisResult) -> None:
    status = "" if result.status is Status.OK else f" [{result.status.value}]"
    console.line(f"== {result.name}: {result.title}{status} ==")
    if result.error:
        console.line(f"  {safe_text(result.error)}")
    for key, value in result.facts:
        if result.name == "sys":  # crash's start-up summary layout
            console.line(f"{safe_text(key):>12}: {format_value(value)}")
        else:
            console.line(f"  {key}: {format_value(value)}")
    by_name = {t.name: t for t in result.tables}
    for table in result.tables:
        if table.name.endswith("_registers") and table.name.removesuffix("_registers") in by_name:
            continue  # shown inside its backtrace, where crash shows exception frames
        if table.name == "idle" and "tasks" in by_name:
            continue  # shown first in the task list, as crash's ps shows swapper/N
        if table.name == "queued" and "runq" in by_name and _QUEUED <= {c.name for c in table.columns}:
            continue  # shown under each CPU's run queue, as crash's runq does
        console.line(f"\n  {safe_text(table.title)}")
        names = {c.name for c in table.columns}
        if {"time", "level", "text"} <= names:
            for line in _log_lines(table):
                console.line(line)
        elif {"function", "pc", "offset"} <= names:
            for line in _frames(table, by_name.get(f"{table.name}_registers")):
                console.line(line)
        elif _RUNQ <= names:
            queued = by_name.get("queued")
            for line in _runq_lines(table, queued if queued is not None and _QUEUED <= {c.name for c in queued.columns}
                                    else None):
                console.line(line)
        elif {"item", "pages", "bytes", "percent", "of"} <= names:
            for line in _kmem_lines(table):
                console.line(line)
        elif set(_PS) <= names:
            idle = by_name.get("idle") if table.name == "tasks" else None
            for line in _ps_lines(*((idle,) if idle is not None and set(_PS) <= {c.name for c in idle.columns} else ()), table):
                console.line(line)
        elif not table.rows:
            console.line("  (none)")
        else:
            console.print(_grid(table))
    for c in result.completeness:
        console.line(f"  {'complete' if c.complete else 'INCOMPLETE'}: {safe_text(c.summary())}")
    for note in result.notes:
        console.line(f"  note: {safe_text(note)}")
    console.line("")


class _Lines:
    """Lines for a rich console, printed as one :class:`~rich.text.Text` per run of lines.

    Why: each ``Console.print`` costs ~50 us of rich's machinery, and a
    report is ~300 lines (12 of the renderer's 18 ms, issue 21); rich renders a
    multi-line ``Text`` line by line exactly as it renders each line alone
    (control codes stripped, tabs expanded, no wrapping).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def print(self, renderable: object) -> None:
        """Anything else (a grid): after the lines before it."""
        self.flush()
        self.console.print(renderable)

    def flush(self) -> None:
        if self.lines:
            self.console.print(Text("\n".join(self.lines)))
            self.lines = []


def render(report: Report, out: IO[str]) -> None:
    """Write the report for a person, no colour, wide enough for log lines."""
    console = _Lines(Console(file=out, highlight=False, soft_wrap=True, color_system=None, width=200))
    for line in _header(report):
        console.line(line)
    console.line("")
    for result in sorted(report.results, key=lambda r: _ORDER.get(r.name, 50)):
        _result(console, result)
    console.flush()
