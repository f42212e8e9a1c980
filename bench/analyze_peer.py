"""The peer of the analyze benchmark: plain drgn doing what ``analyze`` does by default, on the vmcore.

The same work as ``tsubaki-forensics analyze`` (issue 21: the default run
grew crash's ``sys`` summary and ``ps``'s memory columns on 2026-12-04, so
the peer does them too), with drgn's own core-dump path and helpers and
nothing of ours in between:

- sys: drgn's own getters of crash's ``sys`` (``drgn.commands._crash._sys``),
  the taint flags, the panic task's fields;
- ps: every task's pid, ppid, comm, state, cpu, on_cpu, RSS, VSZ, kthread
  (``task_rss``, ``task_vsize``, ``totalram_pages``), and the task on each
  present CPU;
- dmesg: every printk record; panic: the panic message, the crashed
  thread's and every other CPU's backtrace with names, symbol offsets,
  stack pointers, modules and source lines, and the crashed task's stack
  pages probed.

``--minimal`` does only what the first version did (tasks without memory
columns, dmesg, panic message, backtraces with names and lines), for
comparison with older figures.

    python bench/analyze_peer.py VMCORE VMLINUX [--minimal]
"""

from __future__ import annotations

import json
import sys

import drgn
from drgn.helpers.linux.cpumask import for_each_present_cpu
from drgn.helpers.linux.kallsyms import load_module_kallsyms
from drgn.helpers.linux.kthread import task_is_kthread
from drgn.helpers.linux.mm import task_rss, task_vsize, totalram_pages
from drgn.helpers.linux.panic import panic_message, panic_task, tainted
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_printk_records
from drgn.helpers.linux.sched import cpu_curr, task_cpu, task_state_to_char

__all__ = ["main"]


def _frames(prog, trace, full: bool):
    out = []
    for frame in trace:
        if frame.pc < 0xFF00_0000_0000_0000:
            break
        try:
            source = frame.source()[:2]
        except LookupError:
            source = None
        row = [frame.name, source]
        if full and not frame.is_inline:
            try:
                symbol = frame.symbol()
                row += [symbol.name, frame.pc - symbol.address, symbol.size, frame.sp]
            except LookupError:
                pass
            try:
                row.append(prog.module(frame.pc - 1).name)
            except LookupError:
                pass
        out.append(row)
    return out


def _try(get, *args):
    """A figure, or the error's name (as analyze keeps a placeholder and goes on)."""
    try:
        return str(get(*args))
    except (drgn.FaultError, LookupError, ValueError) as e:
        return type(e).__name__


def _sys(prog) -> dict:
    from drgn.commands._crash import _sys

    facts = {name: _try(get, prog) for name, _, get in _sys._FIELDS}
    facts["TAINT"] = _try(tainted, prog)
    task = panic_task(prog)
    facts.update({name: _try(get, task) for name, _, get in _sys._TASK_FIELDS})
    return facts


def main(vmcore: str, vmlinux: str, full: bool = True) -> dict:
    prog = drgn.Program()
    prog.set_core_dump(vmcore)
    prog.load_debug_info([vmlinux])
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    log = [(r.timestamp, r.level, r.text) for r in get_printk_records(prog)]
    message = panic_message(prog)
    panic_cpu = prog["panic_cpu"].counter.value_()
    crashed = _frames(prog, prog.crashed_thread().stack_trace(), full)
    others = {cpu: _frames(prog, prog.stack_trace(cpu_curr(prog, cpu)), full)
              for cpu in for_each_present_cpu(prog) if cpu != panic_cpu}
    facts = {}
    if full:
        task = prog.crashed_thread().object
        base, size, page = task.stack.value_(), prog["THREAD_SIZE"].value_(), prog["PAGE_SIZE"].value_()
        for address in range(base, base + size, page):
            try:
                prog.read(address, 1)
            except drgn.FaultError:
                pass
        facts = _sys(prog)
        total, page = totalram_pages(prog), prog["PAGE_SIZE"].value_()
    tasks = []
    for t in for_each_task(prog):
        row = [t.pid.value_(), t.real_parent.tgid.value_(), t.comm.string_(), task_state_to_char(t), task_cpu(t),
               bool(t.on_cpu)]
        if full:
            rss = _try(lambda: task_rss(prog, t).total)
            rss = int(rss) if rss.isdigit() else 0
            row += [round(rss / total * 100, 1), rss * page // 1024, _try(lambda: task_vsize(t) // 1024),
                    task_is_kthread(t)]
        tasks.append(row)
    if full:
        tasks += [(cpu, cpu_curr(prog, cpu).pid.value_(), cpu_curr(prog, cpu).comm.string_())
                  for cpu in for_each_present_cpu(prog)]
    return {"tasks": len(tasks), "log": len(log), "message": (message or b"").decode(), "frames": len(crashed),
            "cpus": len(others), "sys": len(facts)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], full="--minimal" not in sys.argv[3:])))
