"""The crash's free pages as the buddy allocator itself lists them, counted by drgn.

The reference for dump level 16 ("free pages"): makedumpfile and our page
classifier both exclude exactly the pages heading or inside a block on a
``zone.free_area[order].free_list``.  ``vm_zone_stat[NR_FREE_PAGES]`` is not
exact: CPUs fold their per-CPU deltas into it lazily, so on a busy guest it
lags the free lists (63 pages on a busy 2 GiB OOM crash).  Walking the lists
with drgn's helpers is the kernel's own truth at the moment of the panic.
"""

from __future__ import annotations

from pathlib import Path

import drgn
from drgn.helpers.linux.list import list_count_nodes
from drgn.helpers.linux.mmzone import for_each_online_pgdat

__all__ = ["buddy_free_pages"]


def buddy_free_pages(vmcore: Path, vmlinux: Path) -> int:
    """Pages on every zone's free lists of the crash ``vmcore``, each block counted by its order."""
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    free = 0
    for pgdat in for_each_online_pgdat(prog):
        for zone in pgdat.node_zones[:int(pgdat.nr_zones)]:
            for order, area in enumerate(zone.free_area):
                free += sum(list_count_nodes(head.address_of_()) for head in area.free_list) << order
    return free
