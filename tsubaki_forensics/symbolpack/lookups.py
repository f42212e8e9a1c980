"""What the bundled analyses look up by name: the roots of a symbol pack.

Measured by :mod:`.record` while every bundled analysis (plus the drgn
bridge's module set-up and drgn's helpers under them) ran with the DWARF
vmlinux on real crashes: first ``dmesg``, ``panic`` and ``tasks`` on Debian
6.1.0-56 (oom, sysrq, hung-task, nmi) and 6.12.117 (sysrq, oom, hung-task);
then all of them, with ``sys``, ``modules``, ``memory``, ``blocked`` and
``runq``, on 6.1.0-57 and 6.12.118 (oom, sysrq, hung-task, nmi), all 512 MiB,
2 vCPUs; the lists are the union::

    python -m tsubaki_forensics.symbolpack.record DUMP.tsd VMLINUX [DUMP VMLINUX ...]

18 type names, 52 object names and 4 symbol names were asked for.
Symbols are not listed: a pack carries the whole ELF symbol table (frames
are named from it).  :data:`EXTRA_OBJECTS` adds the globals drgn's helpers
read that these runs did not reach (the self-contained route's
``GLOBAL_TYPES`` table: page and slab helpers, crash-style commands).
Everything these types reach through members, pointers, arrays, typedefs and
function parameters is packed too (:mod:`.extract`).
"""

__all__ = ["RECORDED_TYPES", "RECORDED_OBJECTS", "EXTRA_OBJECTS", "LOOKUP_TYPES", "LOOKUP_OBJECTS"]

RECORDED_TYPES: tuple[str, ...] = (
    'struct module',
    'unsigned long',
    'long unsigned',
    'unsigned long int',
    'unsigned int long',
    'long unsigned int',
    'int',
    'union thread_union',
    'struct xa_node',
    'struct pid',
    'struct task_struct',
    'struct inode',
    'struct cpu_entry_area',
    'struct sched_entity',
    'char',
    'time64_t',
    'u64',
    'struct inactive_task_frame',
)

RECORDED_OBJECTS: tuple[str, ...] = (
    'modules',
    'prb',
    'LOG_CONT',
    'desc_committed',
    'desc_finalized',
    'panic_cpu',
    'runqueues',
    '__per_cpu_offset',
    'THREAD_SIZE',
    'PAGE_SIZE',
    '__cpu_present_mask',
    'nr_cpu_ids',
    'PIDTYPE_PID',
    'init_pid_ns',
    'task_state_array',
    'MOD_TEXT',
    '_totalram_pages',
    'MM_FILEPAGES',
    'MM_ANONPAGES',
    'MM_SWAPENTS',
    'MM_SHMEMPAGES',
    'NR_FREE_PAGES',
    'vm_zone_stat',
    'blockdev_superblock',
    'NR_FILE_PAGES',
    'vm_node_stat',
    'NR_SWAPCACHE',
    'NR_SLAB_RECLAIMABLE_B',
    'NR_SLAB_UNRECLAIMABLE_B',
    'hstates',
    'hugetlb_max_hstate',
    'SWP_USED',
    'SWP_WRITEOK',
    'swap_info',
    'nr_swapfiles',
    'total_swap_pages',
    'nr_swap_pages',
    'sysctl_overcommit_kbytes',
    'sysctl_overcommit_ratio',
    'vm_committed_as',
    '__cpu_online_mask',
    '_cea_offset',
    'hardirq_stack_ptr',
    '__cpu_possible_mask',
    'VMCOREINFO',
    'timekeeper_data',
    'tk_core',
    'avenrun',
    'init_uts_ns',
    'UTS_RELEASE',
    'tainted_mask',
    'pcpu_hot',
)

EXTRA_OBJECTS: tuple[str, ...] = (
    '__cpu_active_mask',
    '__cpu_online_mask',
    '__cpu_possible_mask',
    '_totalram_pages',
    'avenrun',
    'blockdev_superblock',
    'cdev_map',
    'irq_desc_tree',
    'map_idr',
    'node_data',
    'nr_irqs',
    'node_states',
    'prog_idr',
    'sparse_irqs',
    'high_memory',
    'hstates',
    'hugetlb_max_hstate',
    'init_mm',
    'init_net',
    'init_task',
    'init_uts_ns',
    'jiffies',
    'jiffies_64',
    'max_low_pfn',
    'max_pfn',
    'mem_section',
    'min_low_pfn',
    'nr_swap_pages',
    'nr_swapfiles',
    'nr_swapper_spaces',
    'page_offset_base',
    'printk_rb_static',
    'slab_caches',
    'swap_info',
    'swapper_spaces',
    'sysctl_overcommit_kbytes',
    'sysctl_overcommit_ratio',
    'tainted_mask',
    'tk_core',
    'total_swap_pages',
    'vm_committed_as',
    'vm_node_stat',
    'vm_zone_stat',
    'vmalloc_base',
    'vmemmap_base',
)

LOOKUP_TYPES = RECORDED_TYPES
LOOKUP_OBJECTS = RECORDED_OBJECTS + EXTRA_OBJECTS
