"""Where the triage data lives: physical ranges found with drgn on the source.

The triage policy dumps first what a first look at a crash needs, so that a
short prefix of the dump can be analysed.  Rather than re-walking kernel
structures by hand, the planner *runs the analyses themselves* with drgn on
the source, through a memory view that records every physical page drgn
reads: the pages an analysis touched are exactly the pages it needs,
page-table pages included.

In dump order:

1. **What the no-vmlinux route reads** (:mod:`tsubaki_forensics.selfcontained`):
   the program set-up as ``analyze`` does it without a vmlinux (the kallsyms
   tables found through VMCOREINFO, the kernel's BTF between ``__start_BTF``
   and ``__stop_BTF``, the loadable modules' list and symbols), then the ORC
   unwind tables, each with the page-table pages that map them.  A prefix
   holding these can describe itself: no vmlinux is needed anywhere.
2. **The bundled analyses, run on that self-contained program** (dmesg and
   panic first, then the task list and any third-party analysis): the
   printk ring, the crashed stack as unwound, the task structs, ...
3. With DWARF debug info (the crash lab's vmlinux, or any vmlinux the
   bridge finds by build id): ``get_dmesg``, the crashed thread's whole
   stack, then every analysis again (what differs with DWARF, e.g. inline
   frames, is small).
4. Every CPU's stack (from the registers in the NT_PRSTATUS notes) and the
   kernel image's data and bss sections, read through drgn's page-table walk.

A kernel that cannot describe itself (no BTF, Linux < 6.0) skips 1-2 with a
note.  A real monitor would learn these addresses from Linux at boot (one
SMC registering them) or from the registers of the panic SMC; the emulation
computes them with drgn and does not charge that time to the timeline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import drgn

from tsubaki_forensics.drgn_bridge import program_from_dump
from tsubaki_forensics.elfnotes import prstatus_notes
from tsubaki_forensics.errors import DebugInfoError, TsubakiError
from tsubaki_forensics.plugin_system import get_plugins

from .machine import IntervalSet
from .policies import Step

__all__ = ["TriagePlan", "plan_triage", "PAGE"]

PAGE = 4096
THREAD_SIZE = 16384  # x86_64 kernel stacks (THREAD_SIZE_ORDER 2)
_PR_REG = 112  # offset of pr_reg in x86_64 struct elf_prstatus
_RSP = 19  # index of rsp in struct user_regs_struct
_SECTIONS = (("_sdata", "_edata"), ("__bss_start", "__bss_stop"))
# drgn's built-in ORC reader reads these whole at the first unwind.
_ORC_TABLES = (("__start_orc_unwind_ip", "__stop_orc_unwind_ip"), ("__start_orc_unwind", "__stop_orc_unwind"),
               ("__start_orc_header", "__stop_orc_header"))


@dataclass
class TriagePlan:
    """Triage items in dump order, each a list of physical ranges."""

    items: list[tuple[str, list[tuple[int, int]]]] = field(default_factory=list)
    debug_info: bool = False
    notes: list[str] = field(default_factory=list)  # what could not be found and why

    def steps(self) -> list[Step]:
        """One step per item, each without what earlier items already cover."""
        done = IntervalSet()
        out = []
        for label, ranges in self.items:
            fresh = [p for s, n in ranges for p in done.subtract_from(s, n)]
            for s, n in fresh:
                done.add(s, n)
            if fresh:
                out.append(Step(f"triage: {label}", tuple(fresh)))
        return out

    @property
    def total(self) -> int:
        """Bytes of memory in the plan."""
        return sum(n for step in self.steps() for _, n in step.ranges)


class _Range:
    def __init__(self, start: int, length: int) -> None:
        self.start, self.length, self.kind = start, length, "data"


class _TracedMemory:
    """The source as a ``PhysicalMemory`` that remembers which pages were read."""

    def __init__(self, source) -> None:
        self.source = source
        self.pages: set[int] = set()

    def ranges(self) -> list[_Range]:
        return [_Range(s, n) for s, n in self.source.ranges]

    def read(self, paddr: int, size: int) -> bytes:
        self.pages.update(range(paddr // PAGE, (paddr + size + PAGE - 1) // PAGE))
        return self.source.read(paddr, size)

    def take(self) -> list[tuple[int, int]]:
        """The pages read since the last call, merged into ranges."""
        merged = IntervalSet()
        for page in self.pages:
            merged.add(page * PAGE, PAGE)
        self.pages = set()
        return [(s, e - s) for s, e in merged]


class _SourceDump:
    """Just enough of a ``Dump`` for :func:`program_from_dump`."""

    def __init__(self, source, memory: _TracedMemory) -> None:
        # The bridge reads ``header.arch`` (the crashed machine's: x86_64, aarch64).
        self.header = SimpleNamespace(arch=getattr(source, "arch", "x86_64"))
        self.vmcoreinfo = source.vmcoreinfo
        self.notes = source.notes
        self.memory = memory


def plan_triage(source, vmlinux: Path | None = None) -> TriagePlan:
    """Find the triage ranges of ``source`` with drgn.

    :raises TsubakiError: the source has no VMCOREINFO (nothing locates the kernel).
    """
    if not source.vmcoreinfo:
        raise TsubakiError(f"{source.name}: no VMCOREINFO, so the triage data cannot be located")
    memory = _TracedMemory(source)
    dump = _SourceDump(source, memory)
    if vmlinux is None and source.properties.get("vmlinux"):
        vmlinux = Path(source.properties["vmlinux"])
    plan = TriagePlan()
    _self_contained(plan, memory, dump)
    try:
        try:
            built = program_from_dump(dump, vmlinux=vmlinux, providers=get_plugins().debug_info_providers())
            if built.vmlinux is None:  # no vmlinux: the chain fell back to a symbol pack or the dump's BTF
                raise DebugInfoError("no vmlinux matches the dump")
            plan.debug_info = True
        except DebugInfoError as e:
            plan.notes.append(f"no debug info ({e}); using kallsyms from VMCOREINFO")
            built = program_from_dump(dump, debug_info=False)
            _load_kallsyms(built.prog, plan)
    except _DRGN_ERRORS as e:
        # The dump is still complete without a triage pass: say why and go on.
        plan.notes.append(f"drgn cannot read this kernel ({type(e).__name__}: {e}); no further triage data")
        return plan
    prog = built.prog
    # What the bridge itself reads (kallsyms, module symbols) every analysis needs.
    _item(plan, memory, "program set-up (symbols)", lambda: None)
    if plan.debug_info:
        _item(plan, memory, "printk ring + page tables", lambda: _dmesg(prog))
        _item(plan, memory, "crashed task stack", lambda: _crashed_stack(prog))
    _item(plan, memory, "cpu stacks", lambda: _cpu_stacks(prog, source.notes))
    if plan.debug_info:
        for spec in _analyses():
            _item(plan, memory, f"analysis {spec.name}", lambda spec=spec: _analysis(spec, built, dump))
    _item(plan, memory, "kernel data", lambda: _kernel_data(prog))
    return plan


SELF_CONTAINED_SETUP = "no-vmlinux set-up (kallsyms, BTF, modules)"


def _self_contained(plan: TriagePlan, memory: _TracedMemory, dump: _SourceDump) -> None:
    """Items 1-2 of the module docstring: what ``analyze`` reads with no vmlinux."""
    built = None

    def setup() -> None:
        nonlocal built
        built = program_from_dump(dump, self_contained=True)

    _item(plan, memory, SELF_CONTAINED_SETUP, setup)
    if built is None:
        return
    _item(plan, memory, "no-vmlinux ORC unwind tables", lambda: _read_between(built.prog, _ORC_TABLES))
    for spec in _analyses():
        _item(plan, memory, f"no-vmlinux analysis {spec.name}", lambda spec=spec: _analysis(spec, built, dump))
    _item(plan, memory, "no-vmlinux summary (clock, load, memory)", lambda: _summary(built.prog))


def _summary(prog: drgn.Program) -> None:
    """What triage's record and a crash-style summary read besides the analyses:
    the kernel's clock (``tk_core``: crash time, uptime), load, memory counters, names."""
    from drgn.helpers.linux.mm import totalram_pages
    from drgn.helpers.linux.sched import loadavg
    from drgn.helpers.linux.timekeeping import ktime_get_real_seconds, uptime
    from drgn.helpers.linux.vmstat import global_node_page_state, nr_free_pages

    reads = (lambda: ktime_get_real_seconds(prog), lambda: uptime(prog), lambda: loadavg(prog),
             lambda: totalram_pages(prog), lambda: nr_free_pages(prog),
             lambda: global_node_page_state(prog, prog["NR_FILE_PAGES"]),
             lambda: prog["init_uts_ns"].name.read_(), lambda: prog["tainted_mask"].read_(),
             lambda: prog["jiffies"].read_())
    for read in reads:  # each on its own: one missing global does not hide the others
        try:
            read()
        except _DRGN_ERRORS:
            continue


def _read_between(prog: drgn.Program, bounds) -> None:
    """Read ``start``..``stop`` for each pair of kallsyms symbols both present."""
    for start, stop in bounds:
        try:
            first, last = prog.symbol(start).address, prog.symbol(stop).address
        except LookupError:
            continue  # __start_orc_header: Linux >= 6.4 only
        for pos in range(first, last, 1 << 20):
            prog.read(pos, min(1 << 20, last - pos))


FIRST_ANALYSES = ("dmesg", "panic", "tasks")  # what triage must give; sys (crash's summary) and plugins after


def _analyses():
    """The registered analyses, the log and the panic first: whatever a
    plugin analyses is what its triage needs, third-party plugins included."""
    registered = get_plugins().analyses()
    names = [n for n in FIRST_ANALYSES if n in registered]
    names += [n for n in registered if n not in names]
    return [registered[n] for n in names]


def _analysis(spec, built, dump) -> None:
    from tsubaki_forensics.analysis.runner import run_analyses
    from tsubaki_forensics.analysis.spec import AnalysisContext

    # run_analyses never raises: a failing analysis still shows what it read
    run_analyses([spec], AnalysisContext(built.prog, dump=dump, capabilities=built.capabilities))


_DRGN_ERRORS = (drgn.FaultError, drgn.BadDataError, drgn.MissingDebugInfoError,
                LookupError, ValueError, TsubakiError)  # SelfContainedError is a TsubakiError


def _item(plan: TriagePlan, memory: _TracedMemory, label: str, run) -> None:
    try:
        run()
    except _DRGN_ERRORS as e:
        plan.notes.append(f"{label}: {type(e).__name__}: {e}")
    ranges = memory.take()
    if ranges:
        plan.items.append((label, ranges))


def _load_kallsyms(prog: drgn.Program, plan: TriagePlan) -> None:
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    try:
        prog.register_symbol_finder("vmlinux_kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)
    except (LookupError, ValueError, drgn.FaultError) as e:
        plan.notes.append(f"kallsyms unavailable: {e}")


def _dmesg(prog: drgn.Program) -> None:
    from drgn.helpers.linux.printk import get_dmesg

    get_dmesg(prog)


def _crashed_stack(prog: drgn.Program) -> None:
    thread = prog.crashed_thread()
    for frame in thread.stack_trace():
        frame.name  # symbolises; reads nothing more, but matches what analyses do
    task = thread.object
    prog.read(task.stack.value_(), THREAD_SIZE)


def _cpu_stacks(prog: drgn.Program, notes: bytes | None) -> None:
    """Each CPU's kernel stack, from the stack pointer in its PRSTATUS note."""
    for note in prstatus_notes(notes):
        off = _PR_REG + 8 * _RSP
        if len(note.desc) < off + 8:
            continue
        (rsp,) = struct.unpack_from("<Q", note.desc, off)
        if rsp < 1 << 63:  # a user-space stack pointer: nothing of the kernel's
            continue
        try:
            prog.read(rsp & ~(THREAD_SIZE - 1), THREAD_SIZE)
        except drgn.FaultError:
            continue


def _kernel_data(prog: drgn.Program) -> None:
    """The kernel image's .data and .bss (swapper_pg_dir, printk's static ring...)."""
    _read_between(prog, _SECTIONS)
