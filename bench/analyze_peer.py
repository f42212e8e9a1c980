"""The peer of the analyze benchmark: plain drgn doing the bundled analyses on the ELF vmcore.

Same work as ``tsubaki-forensics analyze`` (every task's pid, ppid, comm,
state, cpu, on_cpu, RSS and VSZ, the idle tasks; every printk record; the
panic message; the crashed thread's and every other CPU's backtrace with
names, ``symbol+offset/size`` and source lines; crash's sys figures; the loaded modules with their
taint; the kmem -i figures; every CPU's run queue; the D-state tasks'
backtraces), with drgn's own core-dump path and nothing of ours in between.

    python bench/analyze_peer.py VMCORE VMLINUX [--names-only]

Each non-inline frame's ``symbol+offset/size`` is what drgn's own backtrace
printing (``str(prog.stack_trace(...))``), crash's ``bt`` and analyze all show:
drgn finds it with ``frame.symbol()``.  Until the fourth pass of issue 21 the
peer named frames only and skipped those lookups (~0.8 ms each for a vmlinux
address, 23-37 per run); ``--names-only`` (or ``analyze_bench.py
--peer-names-only``) measures that earlier peer.
"""

from __future__ import annotations

import json
import sys

import drgn
from drgn.helpers.linux.cpumask import for_each_present_cpu
from drgn.helpers.linux.kallsyms import load_module_kallsyms
from drgn.helpers.linux.panic import panic_message
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_printk_records
from drgn.helpers.linux.sched import cpu_curr, task_cpu, task_state_to_char

from analyze_peer_figures import crash_figures

__all__ = ["main"]


NAMES_ONLY = False


def _frames(trace):
    out = []
    for frame in trace:
        if frame.pc < 0xFF00_0000_0000_0000:
            break
        try:
            source = frame.source()[:2]
        except LookupError:
            source = None
        location = None
        if not frame.is_inline and not NAMES_ONLY:  # as drgn prints a trace: symbol+offset/size
            try:
                symbol = frame.symbol()
                location = f"{symbol.name}+{frame.pc - symbol.address:#x}/{symbol.size:#x}"
            except LookupError:
                pass
        out.append((frame.name, location, source))
    return out


def main(vmcore: str, vmlinux: str) -> dict:
    prog = drgn.Program()
    prog.set_core_dump(vmcore)
    prog.load_debug_info([vmlinux])
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    tasks = [
        (t.pid.value_(), t.real_parent.tgid.value_(), t.comm.string_(), task_state_to_char(t), task_cpu(t), bool(t.on_cpu))
        for t in for_each_task(prog)
    ]
    log = [(r.timestamp, r.level, r.text) for r in get_printk_records(prog)]
    message = panic_message(prog)
    panic_cpu = prog["panic_cpu"].counter.value_()
    crashed = _frames(prog.crashed_thread().stack_trace())
    others = {cpu: _frames(prog.stack_trace(cpu_curr(prog, cpu))) for cpu in for_each_present_cpu(prog) if cpu != panic_cpu}
    figures = crash_figures(prog, _frames)
    return {"tasks": len(tasks), "log": len(log), "message": message.decode(), "frames": len(crashed), "cpus": len(others),
            **figures}


if __name__ == "__main__":
    NAMES_ONLY = "--names-only" in sys.argv[3:]
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
