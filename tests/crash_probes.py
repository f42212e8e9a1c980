"""One invocation of each of drgn's crash commands, for the `crash` command's tests.

Arguments name only what every kernel of the lab has (``jiffies``,
``init_task``, ``log_wait``, ``init_pid_ns``); addresses are read from the
program at run time, never written down.  ``exit`` and ``q`` end a session
and have no probe.
"""

from __future__ import annotations

import drgn

__all__ = ["PROBES", "NO_PROBE", "probe_lines"]

NO_PROBE = {"exit", "q"}

# command name -> invocations (placeholders: {jiffies}, {init_task_tasks})
PROBES: dict[str, list[str]] = {
    "*": ["*task_struct.pid,comm init_task"],
    "ascii": ["ascii"],
    "bpf": ["bpf"],
    "bt": ["bt", "bt -a"],
    "btop": ["btop 1000"],
    "dev": ["dev"],
    "drgn": ["drgn print(prog['jiffies'].value_())"],
    "eval": ["eval 1+1"],
    "files": ["files"],
    "foreach": ["foreach bt"],
    "help": ["help", "help bt"],
    "ipcs": ["ipcs"],
    "irq": ["irq"],
    "kmem": ["kmem -i", "kmem -s", "kmem -V", "kmem -f"],
    "list": ["list -o task_struct.tasks -s task_struct.pid -H {init_task_tasks}"],
    "log": ["log"],
    "mod": ["mod"],
    "mount": ["mount"],
    "net": ["net"],
    "p": ["p jiffies"],
    "ps": ["ps"],
    "ptob": ["ptob 1"],
    "ptov": ["ptov 1000"],
    "rd": ["rd jiffies"],
    "runq": ["runq"],
    "search": ["search -s jiffies -l 64 0"],
    "set": ["set"],
    "sig": ["sig"],
    "struct": ["struct task_struct.comm,pid init_task"],
    "swap": ["swap"],
    "sym": ["sym jiffies"],
    "sys": ["sys"],
    "task": ["task"],
    "timer": ["timer"],
    "tree": ["tree -t x -r pid_namespace.idr.idr_rt init_pid_ns"],
    "union": ["union bpf_attr"],
    "vm": ["vm"],
    "vtop": ["vtop {jiffies:x}"],
    "waitq": ["waitq log_wait"],
    "whatis": ["whatis task_struct"],
}


def probe_lines(prog: drgn.Program, names: list[str]) -> list[str]:
    """Every probe of the commands ``names``, placeholders filled in from ``prog``."""
    values = {
        "jiffies": prog.symbol("jiffies").address,
        "init_task_tasks": f"{prog.symbol('init_task').address + drgn.offsetof(prog.type('struct task_struct'), 'tasks'):x}",
    }
    return [p.format(**values) for name in names if name not in NO_PROBE for p in PROBES[name]]
