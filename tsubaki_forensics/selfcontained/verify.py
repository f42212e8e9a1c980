"""Compare what drgn reads with and without a vmlinux, on the same dump.

:func:`observe` reads, through drgn's helpers only, the facts the crash
lab's ground truth records (tasks, dmesg, panic, backtraces), from any
program: one with the DWARF vmlinux, or one served by
:func:`~tsubaki_forensics.selfcontained.attach_selfcontained`.
:func:`backtrace_without_inline` says what a backtrace *can* be without
DWARF: the same frames minus inline ones, which only DWARF records.

Frame names are compared after :func:`base_name`, which removes the
suffixes GCC gives the parts of a split or cloned function
(``__handle_sysrq.cold``, ``pvpanic_send_event.part.0``): kallsyms names
the part, DWARF names the function, and both are the same code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import drgn

__all__ = ["KERNEL_SPACE", "backtrace_names", "backtrace_without_inline", "base_name", "observe"]

KERNEL_SPACE = 0xFFFF800000000000  # x86_64: the first lower-half pc ends the kernel stack
_MAX_FRAMES = 128
_CLONE_SUFFIX = re.compile(r"(\.(cold|part|isra|constprop|lto_priv|localalias|llvm)(\.\d+)?)+$")


def base_name(name: str) -> str:
    """``name`` without GCC's split/clone suffixes (``.cold``, ``.part.0``, ``.isra.0``...)."""
    return _CLONE_SUFFIX.sub("", name)


def _frame_name(prog: drgn.Program, frame: drgn.StackFrame) -> str:
    if frame.name and not frame.name.startswith("0x"):
        return frame.name
    try:
        return prog.symbol(frame.pc).name
    except LookupError:
        return hex(frame.pc)


def _kernel_frames(trace: Iterable[drgn.StackFrame]) -> list[drgn.StackFrame]:
    frames = []
    for frame in trace:
        if frame.pc < KERNEL_SPACE or len(frames) >= _MAX_FRAMES:
            break
        frames.append(frame)
    return frames


def backtrace_names(prog: drgn.Program, trace: Iterable[drgn.StackFrame]) -> list[str]:
    """Names of the kernel frames of ``trace``, innermost first."""
    return [_frame_name(prog, f) for f in _kernel_frames(trace)]


def backtrace_without_inline(prog: drgn.Program, trace: Iterable[drgn.StackFrame]) -> list[str]:
    """Names of the real (not inlined) kernel frames: a DWARF trace as ORC alone can give it.

    drgn names a real frame that has inline frames inside it after the
    outermost function, which is the symbol kallsyms gives.
    """
    return [_frame_name(prog, f) for f in _kernel_frames(trace) if not f.is_inline]


def observe(prog: drgn.Program) -> dict:
    """Tasks, dmesg, panic and backtraces as drgn's helpers read them from ``prog``."""
    from drgn.helpers.linux.cpumask import for_each_present_cpu
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.printk import get_printk_records
    from drgn.helpers.linux.sched import cpu_curr, task_cpu, task_state_to_char

    tasks = [
        {
            "pid": int(t.pid),
            "ppid": int(t.real_parent.tgid),
            "comm": t.comm.string_().decode(errors="replace"),
            "state": task_state_to_char(t),
            "cpu": int(task_cpu(t)),
            "on_cpu": bool(t.on_cpu),
        }
        for t in for_each_task(prog)
    ]
    dmesg = [
        {"time": r.timestamp / 1e9, "level": int(r.level), "text": r.text.decode(errors="replace")}
        for r in get_printk_records(prog)
    ]
    crashed_cpu = int(prog["panic_cpu"].counter)
    crashed = prog.crashed_thread()
    cpu_backtraces = {}
    for cpu in for_each_present_cpu(prog):
        if cpu != crashed_cpu:
            cpu_backtraces[str(cpu)] = backtrace_names(prog, prog.stack_trace(cpu_curr(prog, cpu)))
    return {
        "kernel_release": prog["UTS_RELEASE"].string_().decode(),
        "crashed_cpu": crashed_cpu,
        "crashed_pid": int(crashed.tid),
        "tasks": tasks,
        "dmesg": dmesg,
        "backtrace": backtrace_names(prog, crashed.stack_trace()),
        "cpu_backtraces": cpu_backtraces,
    }
