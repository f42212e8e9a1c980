"""``panic``: what panicked, where, and how it got there (crash's ``bt -a``).

Extraction uses drgn: the printk records (shared with ``dmesg``), ``panic_cpu``,
``prog.crashed_thread()`` and its ``stack_trace()``, and ``cpu_curr`` plus
``prog.stack_trace`` for the tasks on the other CPUs.  Pure functions turn
frames into rows and cut the trace at the first user-space address: drgn
may unwind on past the kernel entry into hundreds of bogus ``0x0`` frames.
A stack page that was not collected is reported, since drgn ends a trace
quietly where it cannot read.  Each frame says which stack it ran on
(task, IRQ, softirq, NMI, exception), as drgn's ``kernel_stack_trace``
classifies the segments of a trace, so the text shows crash's
``--- <IRQ stack> ---`` markers where the trace crosses stacks.
"""

# No ``from __future__ import annotations`` here: typing.NamedTuple would compile
# each field's annotation string on every import (issue 21, docs/PLUGINS.md).

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import drgn
from drgn.helpers.linux.cpumask import for_each_present_cpu
from drgn.helpers.linux.sched import cpu_curr
from drgn.helpers.linux.stack import kernel_stack_trace

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
)
from tsubaki_forensics.analysis.guard import READ_ERRORS, missing_for, read_value
from tsubaki_forensics.plugin_system import hookimpl

from .dmesg import LogLine, read_log

__all__ = [
    "PANIC_FACTS",
    "Frame",
    "Backtrace",
    "panic_message_from_log",
    "is_user_address",
    "kernel_frames",
    "frame_from_drgn",
    "read_backtrace",
    "format_location",
    "exception_frames",
    "frames_tables",
    "panic_result",
    "analyze",
]

#: The facts ``panic`` gives, by key (``fact_key`` of their names): triage reads them.
PANIC_FACTS = ("panic_message", "panicking_cpu", "crashed_pid", "crashed_command")


class Frame(NamedTuple):
    """One stack frame as data.

    ``function`` is the source-level name (DWARF, or the symbol where there
    is none); ``symbol`` and ``offset`` are the ELF or kallsyms symbol that
    holds ``pc`` and ``pc`` minus its start, as the kernel prints them
    (``__handle_sysrq.cold+0x44``).  Inlined frames have no symbol of their own.
    """

    pc: int
    function: str | None
    symbol: str | None = None
    offset: int | None = None
    size: int | None = None
    file: str | None = None
    line: int | None = None
    inline: bool = False
    interrupted: bool = False
    sp: int | None = None
    module: str | None = None  # a loadable module's name (crash's ``[pvpanic]``); None in vmlinux
    registers: tuple[tuple[str, int], ...] = ()  # an interrupted frame's saved registers (exception frames)
    stack: str | None = None  # the stack it ran on (drgn's StackKind name: TASK, IRQ, SOFTIRQ, NMI, EXCEPTION)


class Backtrace(NamedTuple):
    """The kernel frames of one task, and what stopped them from being complete."""

    cpu: Value
    pid: Value
    comm: Value
    frames: tuple[Frame, ...]
    user_frames_dropped: int = 0
    missing: tuple[Missing, ...] = ()
    user_registers: tuple[tuple[str, int], ...] = ()  # where the task entered the kernel (crash's last RIP line)


# What a panic looks like in the log, most telling first (the order drgn's
# panic_message helper uses).
_PANIC_TEXTS = (
    r"Kernel panic -.*",
    r"BUG: (?:kernel NULL pointer dereference|unable to handle).*|Unable to handle kernel.*",
    r"[Kk]ernel BUG at.*",
    r"Oops: .*",
)
_PANIC_PATTERNS = tuple(re.compile(p) for p in _PANIC_TEXTS)
#: any of them: a line it does not match is skipped with one search, not four
_ANY_PANIC = re.compile("|".join(f"(?:{p})" for p in _PANIC_TEXTS))


def panic_message_from_log(lines: Sequence[LogLine]) -> str | None:
    """Pure: the log line that best says why the kernel died (first of the best kind), or ``None``."""
    best: tuple[int, str] | None = None
    any_panic = _ANY_PANIC.search
    for line in lines:
        if any_panic(line.text) is None:
            continue
        for rank, pattern in enumerate(_PANIC_PATTERNS):
            if best is not None and rank >= best[0]:
                break
            match = pattern.search(line.text)
            if match:
                best = (rank, match.group())
                break
        if best is not None and best[0] == 0:
            break  # nothing beats the first line of the best kind
    return best[1] if best else None


#: Lowest kernel text address on 64-bit x86-64 (4- and 5-level paging) and AArch64.
KERNEL_SPACE_64 = 0xFF00_0000_0000_0000


def is_user_address(pc: int, address_size: int = 8) -> bool:
    """True for an address below kernel space (user space or non-canonical).

    A ``pc`` of 0 (drgn's bogus frames past the entry) counts as user space.
    """
    if address_size == 4:
        return pc < 0xC000_0000
    return pc < KERNEL_SPACE_64


def kernel_frames(frames: Sequence[Frame], address_size: int = 8) -> tuple[list[Frame], int]:
    """Pure: the frames up to (not including) the first user-space address.

    :returns: the kernel frames and how many frames were dropped after them.
    """
    for i, frame in enumerate(frames):
        if is_user_address(frame.pc, address_size):
            return list(frames[:i]), len(frames) - i
    return list(frames), 0


def format_location(frame: Frame) -> str:
    """``symbol+0x12/0x40`` like crash and the kernel print it; the function name if inlined."""
    name = frame.symbol or frame.function or f"{frame.pc:#x}"
    if frame.offset is None:
        return name
    size = f"/{frame.size:#x}" if frame.size else ""
    return f"{name}+{frame.offset:#x}{size}"


def _module_of(prog: drgn.Program | None, frame: drgn.StackFrame) -> str | None:
    """The loadable module holding the frame's call site (as drgn's crash ``bt`` finds it), or None."""
    if prog is None:
        return None
    try:
        module = prog.module(frame.pc - int(frame.pc > 0 and not frame.interrupted))
    except LookupError:
        return None
    return None if isinstance(module, drgn.MainModule) else module.name


def frame_from_drgn(frame: drgn.StackFrame, prog: drgn.Program | None = None, stack: str | None = None) -> Frame:
    """Extraction: one ``drgn.StackFrame`` as a :class:`Frame` (``prog``: to name its module;
    ``stack``: the kind of stack it ran on)."""
    pc = frame.pc
    # The DWARF name, None without DWARF (assembly, modules).  ``frame.name`` is
    # the same with drgn's fallback to the symbol, or the address, which is a
    # second scan of every vmlinux symbol for a frame whose symbol is looked up
    # just below anyway (0.5-0.8 ms each, 4-6 frames per analyze: issue 21).
    name = frame.function_name
    symbol_name = offset = size = None
    if not frame.is_inline:
        try:
            symbol = frame.symbol()  # also kallsyms of modules (the bridge adds that finder)
        except LookupError:
            symbol = None
        if symbol is not None:
            symbol_name, offset, size = symbol.name, pc - symbol.address, symbol.size
        if name is None:  # frame.name's fallback, from the lookup just made
            name = symbol.name if symbol is not None else f"{pc:#x}"
    elif name is None:
        name = frame.name
    file = line = None
    try:
        file, line, _ = frame.source()
    except LookupError:
        pass
    sp = None
    if not frame.is_inline:
        try:
            sp = frame.sp
        except LookupError:
            # arm64 unwinds by frame pointer: above frame 0 drgn knows x29, not
            # sp, and crash prints that frame address in the same column.
            try:
                sp = frame.register("fp")
            except (LookupError, ValueError):
                sp = None
    return Frame(pc, name, symbol_name, offset, size, file, line, frame.is_inline, frame.interrupted, sp,
                 _module_of(prog, frame), _saved_registers(frame), stack)


def _saved_registers(frame: drgn.StackFrame) -> tuple[tuple[str, int], ...]:
    """An interrupted frame's saved registers (an exception frame, user space's entry); else ()."""
    if frame.interrupted:
        try:
            return tuple(frame.registers().items())
        except (LookupError, ValueError):
            pass
    return ()


def _unwind(prog: drgn.Program, task: drgn.Object) -> list[tuple[drgn.StackFrame, str | None]]:
    """The task's frames, each with the kind of stack it ran on (drgn's ``kernel_stack_trace``);
    without a classification (an architecture drgn does not segment) the plain trace."""
    try:
        return [(f, segment.kind.name) for segment in kernel_stack_trace(prog, task).segments for f in segment.frames]
    except READ_ERRORS:
        return [(f, None) for f in prog.stack_trace(task)]


def _stack_gaps(prog: drgn.Program, task: drgn.Object) -> list[Missing]:
    """Pages of the task's kernel stack that the dump does not hold."""
    gaps = []
    try:
        base = task.stack.value_()
        size = prog["THREAD_SIZE"].value_()
        page = prog["PAGE_SIZE"].value_()
    except READ_ERRORS as e:
        return [missing_for("task stack pointer", e)]
    for address in range(base, base + size, page):
        try:
            prog.read(address, 1)
        except drgn.FaultError:
            gaps.append(Missing("stack page", address))  # the virtual address, as in the frames
    return gaps


def read_backtrace(
    prog: drgn.Program, task: drgn.Object, cpu: Value, trace: Iterable[drgn.StackFrame] | None = None
) -> Backtrace:
    """Extraction: the kernel frames of ``task`` (``trace`` if already unwound; else with their stacks)."""
    pid = read_value(lambda: task.pid.value_())
    comm = read_value(lambda: task.comm.string_().decode("utf-8", "backslashreplace"))
    missing = _stack_gaps(prog, task)
    address_size = _address_size(prog)
    try:
        unwound = [(f, None) for f in trace] if trace is not None else _unwind(prog, task)
        # Only the kernel frames are kept (as kernel_frames would): a user-space
        # frame's symbol is never asked for, which is drgn's slowest lookup (a
        # scan of every vmlinux symbol that finds nothing); of the first one
        # only its saved registers, user space's entry, are kept.
        kept = []
        for f, kind in unwound:
            if is_user_address(f.pc, address_size):
                break
            kept.append(frame_from_drgn(f, prog, kind))
        dropped = len(unwound) - len(kept)
        entry = _saved_registers(unwound[len(kept)][0]) if dropped else ()
    except READ_ERRORS as e:
        return Backtrace(cpu, pid, comm, (), 0, (*missing, missing_for(f"registers or stack of pid {pid}", e)))
    return Backtrace(cpu, pid, comm, tuple(kept), dropped, tuple(missing), entry)


def _address_size(prog: drgn.Program) -> int:
    platform = prog.platform
    return 8 if platform is None or platform.flags & drgn.PlatformFlags.IS_64_BIT else 4


_FRAME_COLUMNS = (
    Column("index", "#", int, "right"),
    Column("function", "FUNCTION", str),
    Column("symbol", "SYMBOL", str),
    Column("offset", "OFFSET", int, "right", "hex"),
    Column("pc", "PC", int, fmt="address"),
    Column("file", "FILE", str),
    Column("line", "LINE", int, "right"),
    Column("inline", "INLINE", bool),
    Column("sp", "SP", int, fmt="address"),
    Column("size", "SIZE", int, "right", "hex"),
    Column("module", "MODULE", str),
    Column("stack", "STACK", str),
)


_REGISTER_COLUMNS = (
    Column("index", "#", int, "right"),
    Column("register", "REGISTER", str),
    Column("value", "VALUE", int, fmt="address"),
)


def exception_frames(frames: Sequence[Frame]) -> list[tuple[int, tuple[tuple[str, int], ...]]]:
    """Pure: where crash's and drgn's ``bt`` print an exception frame's registers: before the
    first frame (inline ones included) of each physical frame drgn marks interrupted, except
    the innermost, whose registers are the CPU's own (drgn's segments after the first)."""
    out = []
    start = 0  # the first frame of the current physical frame's group (its inline callees first)
    for i, f in enumerate(frames):
        if f.inline:
            continue
        if start > 0 and f.registers:
            out.append((start, f.registers))
        start = i + 1
    return out


def frames_tables(name: str, title: str, bt: Backtrace) -> list[Table]:
    """The frames, and (``<name>_registers``) the registers saved where an exception or
    interrupt entered the kernel, at the index crash prints them before (:func:`exception_frames`)."""
    rows = [(i, f.function, f.symbol, f.offset, f.pc, f.file, f.line, f.inline, f.sp, f.size, f.module, f.stack)
            for i, f in enumerate(bt.frames)]
    tables = [Table.build(name, title, _FRAME_COLUMNS, rows)]
    registers = [(i, reg, value) for i, saved in exception_frames(bt.frames) for reg, value in saved]
    registers += [(len(bt.frames), reg, value) for reg, value in bt.user_registers]  # user space's, after the last frame
    if registers:
        tables.append(Table.build(f"{name}_registers", f"{title}: exception frames", _REGISTER_COLUMNS, registers))
    return tables


def panic_result(
    message: Value, panic_cpu: Value, crashed: Backtrace | None, others: Sequence[Backtrace], missing: Sequence[Missing]
) -> AnalysisResult:
    """Pure: the ``panic`` result from what extraction read."""
    facts: list[tuple[str, Value]] = [("panic message", message), ("panicking CPU", panic_cpu)]
    tables = []
    all_missing = list(missing)
    traced = 0
    wanted = len(others) + 1
    notes = []
    if crashed is not None:
        facts += [("crashed pid", crashed.pid), ("crashed command", crashed.comm)]
        title = f"Backtrace of the crashed task: PID {crashed.pid} ({crashed.comm}) on CPU {crashed.cpu}"
        tables += frames_tables("backtrace", title, crashed)
        all_missing += crashed.missing
        traced += bool(crashed.frames) and not crashed.missing
        if crashed.user_frames_dropped:
            notes.append(f"crashed task: stopped at the first user-space address ({crashed.user_frames_dropped} frame(s) after it not shown)")
    for bt in others:
        title = f"CPU {bt.cpu}: PID {bt.pid} ({bt.comm})"
        tables += frames_tables(f"cpu{bt.cpu}", title, bt)
        all_missing += bt.missing
        traced += bool(bt.frames) and not bt.missing
    return AnalysisResult(
        name="panic",
        title="Panic",
        facts=tuple(facts),
        tables=tuple(tables),
        completeness=(Completeness("backtraces", traced, wanted, tuple(all_missing)),),
        notes=tuple(notes),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read the panic message, the crashed thread and the other CPUs' tasks."""
    prog = ctx.prog
    missing: list[Missing] = []
    lines, log_missing = read_log(prog)
    message: Value
    if lines is None:
        message = NotCollected(log_missing[0].address) if log_missing[0].not_collected else Unreadable(str(log_missing[0]))
        missing.append(Missing("printk ring buffer (panic message)", log_missing[0].address, log_missing[0].not_collected))
    else:
        message = panic_message_from_log(lines)
    panic_cpu = read_value(lambda: prog["panic_cpu"].counter.value_())
    crashed = None
    try:
        task = prog.crashed_thread().object
        crashed = read_backtrace(prog, task, panic_cpu)  # the panic CPU's saved registers, as the thread's trace
    except READ_ERRORS as e:
        missing.append(missing_for("crashed thread", e))
    others = []
    try:
        cpus = list(for_each_present_cpu(prog))  # panic() takes the others offline
    except READ_ERRORS as e:
        cpus = []
        missing.append(missing_for("present CPU mask", e))
    for cpu in cpus:
        if cpu == panic_cpu:
            continue
        try:
            task = cpu_curr(prog, cpu)
        except READ_ERRORS as e:
            missing.append(missing_for(str(cpu), e, group="CPU"))
            continue
        others.append(read_backtrace(prog, task, cpu))
    return panic_result(message, panic_cpu, crashed, others, missing)


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``panic``."""
    register(
        "panic",
        analyze,
        "panic message, panicking CPU and task, backtraces of the crashed task and every CPU (crash's bt -a)",
        needs=[Need.DEBUG_INFO, Need.REGISTERS],
        facts=list(PANIC_FACTS),
    )
