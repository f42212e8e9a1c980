"""Kernel globals, functions and enumerators for drgn, without DWARF.

An object is a name, an address and a type.  The address always comes from
kallsyms in the dump.  The type comes from, in this order:

1. BTF ``VAR`` records: BTF describes the per-CPU variables
   (``DATASEC .data..percpu``), e.g. ``runqueues``; their address is the
   section start (kallsyms ``__per_cpu_start``) plus the offset BTF gives,
   which also tells a per-CPU ``cleanup_list`` from a static one;
2. BTF ``FUNC`` records, for functions;
3. :data:`GLOBAL_TYPES`, a small table this project maintains, for the
   ordinary globals the drgn helpers and bundled analyses use: BTF of
   these kernels carries no record for them, so their C type is written
   here (checked against DWARF by the tests).  A name in neither BTF nor the
   table is not answered: its type is unknown and is never guessed.

Enumerators (``PIDTYPE_PID``) come from BTF ``ENUM``/``ENUM64`` records.
A name that kallsyms lists at several addresses (static functions of one
name in several files), a function with two different BTF prototypes, or an
enumerator with different values in several enums, is ambiguous without
DWARF's file names and is not answered.
"""

from __future__ import annotations

import re

import drgn

from .btf import Btf, BtfKind
from .types import BtfTypes

__all__ = ["GLOBAL_TYPES", "SECTION_STARTS", "BtfObjects", "ObjectSource"]

# name -> C type.  Keep it small: only what drgn's helpers and the bundled
# analyses read (pid walk, printk, cpumasks, per-CPU offsets, panic, modules),
# the x86_64 memory-model globals drgn's page and slab helpers need, and those
# that drgn's crash-style "ps"/"sys" commands and a crash-style summary read
# (date, uptime, load, memory).  Every entry is checked
# against DWARF by tests/test_selfcontained_real.py.
# An array marked "[]" has no length in the table: NR_CPUS-sized arrays are
# only indexed; task_state_array's length is read from memory (see below).
# An array sized "[NAME]" takes its length from the BTF enumerator NAME
# (vm_zone_stat[NR_VM_ZONE_STAT_ITEMS]), as the kernel's own declaration does.
# "struct { T a; U b; }" is an anonymous struct the kernel defines at the
# variable (tk_core, Linux < 6.17): laid out with C's rules from the BTF
# member types, since BTF has no record of the variable or its type.
GLOBAL_TYPES: dict[str, str] = {
    "init_task": "struct task_struct",
    "init_pid_ns": "struct pid_namespace",
    "init_uts_ns": "struct uts_namespace",
    "modules": "struct list_head",
    "nr_cpu_ids": "unsigned int",
    "panic_cpu": "atomic_t",
    "prb": "struct printk_ringbuffer *",
    "printk_rb_static": "struct printk_ringbuffer",
    "__cpu_possible_mask": "struct cpumask",
    "__cpu_online_mask": "struct cpumask",
    "__cpu_present_mask": "struct cpumask",
    "__cpu_active_mask": "struct cpumask",
    "__per_cpu_offset": "unsigned long []",
    "task_state_array": "const char * const []",
    "jiffies": "volatile unsigned long",
    "jiffies_64": "u64",
    # x86_64 memory model: drgn's page and slab helpers (virt_to_page, slab_object_info, ...)
    "page_offset_base": "unsigned long",
    "vmemmap_base": "unsigned long",
    "vmalloc_base": "unsigned long",
    "mem_section": "struct mem_section **",
    "max_pfn": "unsigned long",
    "min_low_pfn": "unsigned long",
    "max_low_pfn": "unsigned long",
    "high_memory": "void *",
    "init_mm": "struct mm_struct",
    "_totalram_pages": "atomic_long_t",
    # drgn's crash-compatible "ps" and "sys" commands
    "tainted_mask": "unsigned long",
    "avenrun": "unsigned long [3]",
    # the crash-style summary: date and uptime (the timekeeper), memory
    # (vmstat counters), network namespace; sized by their enum's NR_ item
    "tk_core": "struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }",
    "vm_zone_stat": "atomic_long_t [NR_VM_ZONE_STAT_ITEMS]",
    "vm_node_stat": "atomic_long_t [NR_VM_NODE_STAT_ITEMS]",
    "init_net": "struct net",
    # crash's "kmem -i" memory summary: buffers, swap cache, slab, hugetlb,
    # swap and commit figures.  The arrays are sized by config macros
    # (MAX_SWAPFILES, HUGE_MAX_HSTATE), not in BTF: left incomplete, only indexed
    "blockdev_superblock": "struct super_block *",
    "swapper_spaces": "struct address_space * []",
    "nr_swapper_spaces": "unsigned int []",
    "slab_caches": "struct list_head",
    "hstates": "struct hstate []",
    "hugetlb_max_hstate": "int",
    "swap_info": "struct swap_info_struct * []",
    "nr_swapfiles": "unsigned int",
    "total_swap_pages": "long",
    "nr_swap_pages": "atomic_long_t",
    "vm_committed_as": "struct percpu_counter",
    "sysctl_overcommit_ratio": "int",
    "sysctl_overcommit_kbytes": "unsigned long",
    # the rest of drgn's crash commands: bpf, dev, irq, kmem -f (docs/SELFCONTAINED.md).
    # irq descriptors live in a radix tree before Linux 6.5 and a maple tree
    # since: each kernel has one of the two names, and drgn tries both.
    "prog_idr": "struct idr",
    "map_idr": "struct idr",
    "nr_irqs": "int",
    "node_data": "struct pglist_data * []",
    "cdev_map": "struct kobj_map *",
    "irq_desc_tree": "struct xarray",
    "sparse_irqs": "struct maple_tree",
    "node_states": "nodemask_t [NR_NODE_STATES]",
}
# BTF DATASEC -> the kallsyms symbol at the start of that section.
SECTION_STARTS = {".data..percpu": "__per_cpu_start"}
# Arrays of string pointers whose length is not in BTF: the length is the
# number of non-NULL pointers from the symbol's start, within its kallsyms
# extent (the kernel pads the array with zeros up to the next symbol).
_NULL_TERMINATED_LENGTH = {"task_state_array"}
_ENUM_SIZED = re.compile(r"^(?P<element>.+?)\s*\[(?P<length>[A-Za-z_]\w*)\]$")
_ANONYMOUS_STRUCT = re.compile(r"^struct\s*\{(?P<body>.*)\}$")


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def anonymous_struct(prog: drgn.Program, body: str) -> drgn.Type:
    """``struct { T a; U b; }`` laid out as C does (each member at its type's
    alignment, the size rounded up to the largest), member types from ``prog``."""
    members, offset, alignment = [], 0, 1
    for declaration in filter(None, (d.strip() for d in body.split(";"))):
        spelled, _, name = declaration.rpartition(" ")
        member_type = prog.type(spelled.strip())
        offset = _align(offset, drgn.alignof(member_type))
        members.append(drgn.TypeMember(member_type, name, offset * 8))
        offset += drgn.sizeof(member_type)
        alignment = max(alignment, drgn.alignof(member_type))
    return prog.struct_type(None, _align(offset, alignment), members)


class ObjectSource:
    """Where an answered object's type came from (``btf-var``, ``btf-func``, ``table``, ``btf-enum``)."""

    BTF_VAR = "btf-var"
    BTF_FUNC = "btf-func"
    BTF_ENUM = "btf-enum"
    TABLE = "table"


class BtfObjects:
    """The object finder: kallsyms addresses with BTF (or table) types.

    :param symbols: a ``drgn.SymbolIndex`` of vmlinux kallsyms (or any
        callable with the symbol-finder signature).
    """

    def __init__(self, prog: drgn.Program, btf: Btf, types: BtfTypes, symbols) -> None:  # type: ignore[no-untyped-def]
        self.prog = prog
        self.btf = btf
        self.types = types
        self.symbols = symbols
        self._enumerators: dict[str, tuple[int, int] | None] | None = None
        self._vars = {btf.type(v).name: v for v in btf.iter_kind(BtfKind.VAR)}
        self._placed: dict[int, tuple[str, int]] = {}  # VAR id -> (DATASEC name, offset)
        for sec in btf.iter_kind(BtfKind.DATASEC):
            datasec = btf.type(sec)
            for info in datasec.secinfos:
                self._placed[info.type_id] = (datasec.name or "", info.offset)
        self.answered: dict[str, str] = {}  # name -> ObjectSource, for the report
        self.misses: set[str] = set()
        self.ambiguous: set[str] = set()  # names refused because BTF/kallsyms have several

    @property
    def var_count(self) -> int:
        """BTF ``VAR`` records (per-CPU variables) this finder can type."""
        return len(self._vars)

    def _address(self, name: str) -> int | None:
        """The kallsyms address of ``name``; ``None`` if absent or ambiguous.

        Static symbols of one name in several files (``mode_show``) cannot be
        told apart without DWARF, so none of them is served.
        """
        found = self.symbols(self.prog, name, None, False)
        if len({s.address for s in found}) != 1:
            if found:
                self.ambiguous.add(name)
            return None
        return found[0].address

    def _var_address(self, name: str, var: int) -> int | None:
        """Section start + DATASEC offset where both are known, else kallsyms by name."""
        section, offset = self._placed.get(var, ("", 0))
        start = SECTION_STARTS.get(section)
        if start is not None:
            found = self.symbols(self.prog, start, None, True)
            if found:
                return found[0].address + offset
        return self._address(name)

    def _enumerator(self, name: str) -> tuple[int, int] | None:
        if self._enumerators is None:
            index: dict[str, tuple[int, int] | None] = {}
            for type_id, enumerator, value in self.btf.iter_enumerators():
                seen = index.setdefault(enumerator, (type_id, value))
                if seen is not None and seen[1] != value:
                    index[enumerator] = None  # two enums, two values (Opt_size): ambiguous
            self._enumerators = index
        found = self._enumerators.get(name)
        if found is None and name in self._enumerators:
            self.ambiguous.add(name)
        return found

    def find(
        self, prog: drgn.Program, name: str, flags: drgn.FindObjectFlags, filename: str | None
    ) -> drgn.Object | None:
        """``register_object_finder`` callback."""
        if filename is not None:
            return None  # BTF has no file names
        if flags & drgn.FindObjectFlags.CONSTANT:
            found = self._enumerator(name)
            if found is not None:
                self.answered[name] = ObjectSource.BTF_ENUM
                return drgn.Object(prog, self.types.build(found[0]), found[1])
        if flags & drgn.FindObjectFlags.VARIABLE:
            obj = self._variable(prog, name)
            if obj is not None:
                return obj
        if flags & drgn.FindObjectFlags.FUNCTION:
            funcs = self.btf.ids(name, BtfKind.FUNC)
            if len({self._signature(f) for f in funcs}) > 1:
                self.ambiguous.add(name)  # static functions of one name, different prototypes
                funcs = []
            address = self._address(name) if funcs else None
            if address is not None:
                self.answered[name] = ObjectSource.BTF_FUNC
                return drgn.Object(prog, self.types.build(funcs[0]), address=address)
        self.misses.add(name)
        return None

    def _signature(self, func: int) -> tuple:
        """Return and parameter type ids of a FUNC (BTF keeps one prototype per
        set of parameter *names*, so two records may describe one signature)."""
        proto = self.btf.type(self.btf.type(func).ref)
        return proto.ref, tuple(p.type_id for p in proto.params)

    def _variable(self, prog: drgn.Program, name: str) -> drgn.Object | None:
        var = self._vars.get(name)
        if var is not None:
            address = self._var_address(name, var)
            if address is not None:
                self.answered[name] = ObjectSource.BTF_VAR
                return drgn.Object(prog, self.types.build(self.btf.type(var).ref), address=address)
        spelled = GLOBAL_TYPES.get(name)
        if spelled is None:
            return None
        address = self._address(name)
        if address is None:
            return None
        type_ = self._table_type(prog, spelled)
        if type_ is None:
            return None
        if name in _NULL_TERMINATED_LENGTH:
            type_ = prog.array_type(type_.type, self._pointer_run(name, address), language=type_.language)
        self.answered[name] = ObjectSource.TABLE
        return drgn.Object(prog, type_, address=address)

    def _table_type(self, prog: drgn.Program, spelled: str) -> drgn.Type | None:
        """The type a :data:`GLOBAL_TYPES` entry spells; ``None`` if its sizing enumerator is unknown."""
        anonymous = _ANONYMOUS_STRUCT.match(spelled)
        if anonymous:
            return anonymous_struct(prog, anonymous["body"])
        sized = _ENUM_SIZED.match(spelled)
        if sized:
            length = self._enumerator(sized["length"])
            if length is None:
                return None
            return prog.array_type(prog.type(sized["element"]), length[1])
        return prog.type(spelled)

    def _pointer_run(self, name: str, address: int) -> int:
        """Non-NULL pointers at ``address``, within the symbol's kallsyms extent."""
        extent = self.symbols(self.prog, name, None, False)[0].size
        size = self.prog.address_size()
        count = 0
        while (count + 1) * size <= extent and self.prog.read_word(address + count * size):
            count += 1
        return count
