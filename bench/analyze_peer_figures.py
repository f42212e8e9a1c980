"""What plain drgn does for analyze's crash figures (issue 19): sys, ps memory, mod, kmem -i, runq, D-state bt.

The same drgn helpers the bundled analyses call (and drgn's own crash
commands), on any program; ``bench/analyze_peer.py`` runs them on the ELF
vmcore so that the analyze benchmark compares the same work.
"""

from __future__ import annotations

from collections.abc import Callable

import drgn
from drgn.helpers.linux.block import nr_blockdev_pages
from drgn.helpers.linux.cpumask import for_each_possible_cpu, for_each_present_cpu
from drgn.helpers.linux.hugetlb import hugetlb_total_usage
from drgn.helpers.linux.mm import task_rss, task_vsize, totalram_pages, vm_commit_limit, vm_memory_committed
from drgn.helpers.linux.module import for_each_module, module_taints
from drgn.helpers.linux.panic import panic_task, tainted
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import (
    cfs_rq_for_each_entity,
    cpu_rq,
    idle_task,
    rq_for_each_rt_task,
    sched_entity_to_task,
    task_since_last_arrival_ns,
    task_state_to_char,
)
from drgn.helpers.linux.slab import slab_total_usage
from drgn.helpers.linux.swap import swap_total_usage, total_swapcache_pages
from drgn.helpers.linux.vmstat import global_node_page_state, nr_free_pages

__all__ = ["crash_figures"]


def crash_figures(prog: drgn.Program, frames: Callable) -> dict:
    """Every figure of the sys, modules, memory, runq and blocked analyses, and the ps extras."""
    from drgn.commands._crash import _sys

    sys_fields = [getter(prog) for name, _, getter in _sys._FIELDS if name not in ("KERNEL", "DUMPFILE")]
    sys_fields += [tainted(prog), *(getter(panic_task(prog)) for _, _, getter in _sys._TASK_FIELDS)]
    idle = [idle_task(prog, cpu) for cpu in for_each_present_cpu(prog)]
    memory = [(task_rss(prog, t).total, task_vsize(t), t.parent.pid.value_()) for t in [*idle, *for_each_task(prog)]]
    modules = []
    for mod in for_each_module(prog):
        module = prog.linux_kernel_loadable_module(mod, create=True)
        modules.append((mod.value_(), module.name, module.address, module.address_ranges, module_taints(mod)))
    kmem = (totalram_pages(prog), nr_free_pages(prog), nr_blockdev_pages(prog),
            global_node_page_state(prog["NR_FILE_PAGES"]) - total_swapcache_pages(prog) - nr_blockdev_pages(prog),
            slab_total_usage(prog).total_pages, hugetlb_total_usage(prog), swap_total_usage(prog),
            vm_commit_limit(prog), vm_memory_committed(prog))
    runq = []
    for cpu in for_each_possible_cpu(prog):
        rq = cpu_rq(prog, cpu)
        rt = [(t.prio.value_(), t.pid.value_(), t.comm.string_()) for t in rq_for_each_rt_task(rq)]
        cfs = [sched_entity_to_task(se) for se, _, curr, is_task in cfs_rq_for_each_entity(rq.cfs.address_of_())
               if is_task and not curr]
        runq.append((rq.curr.pid.value_(), rt, [(t.prio.value_(), t.pid.value_(), t.comm.string_()) for t in cfs]))
    blocked = [(t.pid.value_(), task_since_last_arrival_ns(t), frames(prog.stack_trace(t)))
               for t in for_each_task(prog) if task_state_to_char(t) == "D"]
    return {"sys": len(sys_fields), "ps_memory": len(memory), "modules": len(modules), "kmem": len(kmem),
            "runq": len(runq), "blocked": len(blocked)}
