"""Self-contained analysis on real crashed Debian kernels, checked against DWARF.

Each test opens the crash lab's ELF vmcore twice: once with nothing but the
dump (``attach_selfcontained``), once with the DWARF vmlinux (the view the
crash lab's ground truth comes from), and compares.
"""

from __future__ import annotations

import contextlib
import random

import drgn
import pytest
from drgn.helpers.linux.kallsyms import load_module_kallsyms

from tsubaki_forensics.selfcontained import (
    LIMITATIONS,
    SelfContainedError,
    attach_selfcontained,
    read_btf,
)
from tsubaki_forensics.selfcontained.btf import BtfKind
from tsubaki_forensics.selfcontained.compare import KNOWN, compare_types
from tsubaki_forensics.selfcontained.objects import GLOBAL_TYPES
from tsubaki_forensics.selfcontained.verify import KERNEL_SPACE, base_name, observe

KERNELS = ["6.1", "6.12"]
# The struct types drgn's helpers and the bundled analyses walk (tasks, PID
# IDR, printk ring, per-CPU run queues, cpumasks, stacks, modules).
ANALYSIS_TYPES = [
    "struct task_struct", "struct thread_struct", "struct inactive_task_frame", "struct page",
    "struct pid", "struct upid", "struct pid_namespace", "struct idr", "struct xarray", "struct xa_node",
    "struct kmem_cache", "struct printk_ringbuffer", "struct prb_desc_ring", "struct prb_data_ring",
    "struct prb_desc", "struct prb_data_blk_lpos", "struct printk_info", "struct dev_printk_info",
    "struct rq", "struct cpumask", "struct list_head", "struct hlist_node", "struct hlist_head",
    "struct module", "struct mod_arch_specific", "struct module_layout", "struct mod_kallsyms",
    "struct pt_regs", "struct uts_namespace", "struct new_utsname", "struct mm_struct", "struct signal_struct",
    "struct sched_entity", "struct cfs_rq", "struct kernel_symbol", "struct lock_class_key", "atomic_t",
    "atomic_long_t", "refcount_t", "pid_t", "enum pid_type", "struct load_weight", "struct seqcount",
]


def _programs(crash) -> tuple[drgn.Program, drgn.Program, object]:
    mine = drgn.Program()
    mine.set_core_dump(str(crash.vmcore))
    report = attach_selfcontained(mine)
    dwarf = drgn.Program()
    dwarf.set_core_dump(str(crash.vmcore))
    dwarf.load_debug_info([str(crash.vmlinux)])
    for prog in (mine, dwarf):
        prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    return mine, dwarf, report


@pytest.fixture(scope="module", params=KERNELS)
def pair(request, crash_lab):
    """(self-contained program, DWARF program, report, crash) for one kernel series."""
    crash = crash_lab(kernel=request.param)
    mine, dwarf, report = _programs(crash)
    return mine, dwarf, report, crash


def _matches_some_definition(report, name: str, dwarf_type: drgn.Type) -> bool:
    """An ambiguous name: does the DWARF pick equal one of the BTF definitions?"""
    kind = dwarf_type.kind
    types = report.finders.types
    return any(not [d for d in compare_types(types.build(i), dwarf_type) if not d.startswith(KNOWN)]
               for i in types.candidates(kind, name.split(" ", 1)[-1]))


def _unknown_differences(report, mine: drgn.Program, dwarf: drgn.Program, names: list[str]) -> dict[str, list[str]]:
    bad = {}
    for name in names:
        theirs = dwarf.type(name)
        diffs = [d for d in compare_types(mine.type(name), theirs) if not d.startswith(KNOWN)]
        if diffs and not _matches_some_definition(report, name, theirs):
            bad[name] = diffs
    return bad


def test_analysis_types_match_dwarf(pair) -> None:
    mine, dwarf, report, _ = pair
    names = [n for n in ANALYSIS_TYPES if _has(dwarf, n)]
    assert len(names) >= len(ANALYSIS_TYPES) - 1  # 6.12 has no struct module_layout
    # and every named struct/union one member away from them
    more = set()
    for name in names:
        t = dwarf.type(name).unqualified()
        while t.kind == drgn.TypeKind.TYPEDEF:
            t = t.type
        for m in getattr(t, "members", None) or ():
            u = m.type.unqualified()
            while u.kind in (drgn.TypeKind.POINTER, drgn.TypeKind.ARRAY, drgn.TypeKind.TYPEDEF):
                u = u.type.unqualified()
            if u.kind in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION) and u.tag:
                more.add(u.type_name())
    names = sorted(set(names) | {n for n in more if _has(dwarf, n)})
    assert len(names) > 100
    assert _unknown_differences(report, mine, dwarf, names) == {}


def _has(prog: drgn.Program, name: str) -> bool:
    try:
        prog.type(name)
        return True
    except LookupError:
        return False


def test_random_sample_of_btf_types_matches_dwarf(pair) -> None:
    mine, dwarf, report, _ = pair
    btf = report.finders.btf
    prefixes = {BtfKind.STRUCT: "struct ", BtfKind.UNION: "union ", BtfKind.ENUM: "enum ", BtfKind.TYPEDEF: ""}
    names = sorted({prefixes[btf.kind(i)] + btf.type(i).name for i in btf.iter_kind(*prefixes) if btf.type(i).name})
    sample = [n for n in random.Random(20261126).sample(names, 600) if _has(dwarf, n)]
    assert len(sample) > 550  # the DWARF vmlinux lacks a handful of BTF-only types
    assert _unknown_differences(report, mine, dwarf, sample) == {}


def _resolved(t: drgn.Type) -> str:
    """A type's name with typedefs resolved, through pointers too."""
    t = t.unaliased()
    return _resolved(t.type) + " *" if t.kind == drgn.TypeKind.POINTER else t.type_name()


def test_globals_and_percpu_variables_match_dwarf(pair) -> None:
    mine, dwarf, report, _ = pair
    for name in GLOBAL_TYPES:
        if not dwarf.symbols(name):  # a name of other kernels (irq_desc_tree before 6.5, sparse_irqs since)
            with pytest.raises(KeyError):
                mine[name]
            continue
        a, b = mine[name], dwarf[name]
        assert a.address_ == b.address_, name
        if a.type_.kind == drgn.TypeKind.ARRAY and not a.type_.is_complete():
            # sized by a config macro not in BTF (NR_CPUS, MAX_SWAPFILES, HUGE_MAX_HSTATE): incomplete on purpose
            assert b.type_.kind == drgn.TypeKind.ARRAY and b.type_.is_complete(), name
            # the element type, typedefs resolved (node_data: pg_data_t * in 6.1's DWARF, struct pglist_data * in 6.12's)
            assert _resolved(a.type_.type) == _resolved(b.type_.type), name
        else:
            assert a.type_.type_name() == b.type_.type_name(), name
    btf = report.finders.btf
    variables = [btf.type(i).name for i in btf.iter_kind(BtfKind.VAR)]
    assert len(variables) > 300
    for name in variables:
        a, b = mine.object(name), dwarf.object(name)
        addresses = {s.address for s in dwarf.symbols(name)}
        if len(addresses) > 1:  # a per-CPU and a static variable of one name: DWARF picks either
            assert a.address_ in addresses, name
            continue
        assert (a.address_, a.type_.type_name()) == (b.address_, b.type_.type_name()), name
    assert {report.finders.objects.answered[n] for n in variables} == {"btf-var"}


SUMMARY_GLOBALS = ["tk_core", "vm_zone_stat", "vm_node_stat", "init_net", "jiffies", "avenrun",
                   "init_uts_ns", "tainted_mask"]


def test_summary_globals_match_dwarf_member_by_member(pair) -> None:
    """The globals of a crash-style summary: address and whole layout as the DWARF vmlinux says."""
    mine, dwarf, report, _ = pair
    for name in SUMMARY_GLOBALS:
        a, b = mine[name], dwarf[name]
        assert a.address_ == b.address_, name
        assert [d for d in compare_types(a.type_, b.type_) if not d.startswith(KNOWN)] == [], name
        assert drgn.sizeof(a) == drgn.sizeof(b), name
    # all but jiffies come from this finder (drgn's own Linux finder serves jiffies first)
    assert {report.finders.objects.answered.get(n) for n in SUMMARY_GLOBALS} - {None} <= {"table", "btf-var"}
    assert set(SUMMARY_GLOBALS) - {"jiffies"} <= set(report.finders.objects.answered)


def _crash_command(prog: drgn.Program, command: str) -> list[str]:
    import io
    from contextlib import redirect_stdout

    from drgn.commands import run_command

    out = io.StringIO()
    with redirect_stdout(out):
        run_command(prog, command, globals={})
    return out.getvalue().splitlines()


def test_crash_style_summary_without_vmlinux(pair) -> None:
    """uptime, date, load, memory: drgn's helpers and crash's ``sys`` give what they give with DWARF."""
    from drgn.helpers.linux.mm import totalram_pages
    from drgn.helpers.linux.sched import loadavg
    from drgn.helpers.linux.timekeeping import ktime_get_real_seconds, uptime
    from drgn.helpers.linux.vmstat import global_node_page_state, global_zone_page_state

    mine, dwarf, _, crash = pair

    def summary(prog: drgn.Program) -> dict:
        zone = prog.type("enum zone_stat_item").enumerators
        node = prog.type("enum node_stat_item").enumerators
        return {
            "uptime": uptime(prog), "date": ktime_get_real_seconds(prog).value_(), "load": loadavg(prog),
            "jiffies": prog["jiffies"].value_(), "tainted": prog["tainted_mask"].value_(),
            "totalram": totalram_pages(prog),
            "zone": {e.name: global_zone_page_state(prog, e.value) for e in zone if not e.name.startswith("NR_VM_")},
            "node": {e.name: global_node_page_state(prog, e.value) for e in node if not e.name.startswith("NR_VM_")},
            "nodename": prog["init_uts_ns"].name.nodename.string_(),
            "loopback": prog["init_net"].loopback_dev.name.string_(),
        }

    ours, theirs = summary(mine), summary(dwarf)
    assert ours == theirs
    assert ours["uptime"] > 0 and ours["zone"]["NR_FREE_PAGES"] > 0 and ours["loopback"] == b"lo"
    # the kernel's clock, not the file's: within the lab's boot-to-dump window of the crash
    assert abs(ours["date"] - crash.vmcore.stat().st_mtime) < 3600
    sys_ours = [line for line in _crash_command(mine, "crash sys") if "KERNEL:" not in line]
    sys_theirs = [line for line in _crash_command(dwarf, "crash sys") if "KERNEL:" not in line]
    assert sys_ours == sys_theirs
    assert any(line.strip().startswith(("DATE:", "UPTIME:", "LOAD AVERAGE:", "MEMORY:")) for line in sys_ours)
    # crash's memory summary: total, free, used, buffers, cached, slab, huge pages, swap, commit
    kmem = _crash_command(mine, "crash kmem -i")
    assert kmem == _crash_command(dwarf, "crash kmem -i")
    assert any(line.split()[:2] == ["TOTAL", "MEM"] for line in kmem if line.strip())


def _signature(t: drgn.Type) -> tuple:
    """Return and parameter types: BTF shares one prototype (and its parameter
    names) between functions of the same signature, so names are not compared."""
    return t.type.type_name(), [p.type.type_name() for p in t.parameters], t.is_variadic


def test_functions_and_enumerators_match(pair) -> None:
    mine, dwarf, report, _ = pair
    btf = report.finders.btf
    functions = sorted({btf.type(i).name for i in btf.iter_kind(BtfKind.FUNC)})
    checked = 0
    for name in random.Random(7).sample(functions, 300):
        elf = dwarf.symbols(name)  # the vmlinux symbol table: one address per global name
        try:
            theirs = dwarf.function(name)
        except (LookupError, drgn.BadDataError):  # drgn 0.3.0 cannot read some DWARF (DW_TAG_unspecified_type)
            continue
        if len(elf) != 1:
            with pytest.raises(LookupError):
                mine.function(name)  # static functions of one name: ambiguous without DWARF
            continue
        ours = mine.function(name)
        assert ours.address_ == elf[0].address, name
        if theirs.address_ != elf[0].address:
            continue  # drgn's DWARF lookup found a clone's or a weak definition's DIE
        assert _signature(ours.type_) == _signature(theirs.type_), name
        checked += 1
    assert checked > 150
    enumerators = [(e.name, e.value) for i in btf.iter_kind(BtfKind.ENUM) for e in btf.type(i).enumerators]
    compared = 0
    for name, _ in random.Random(8).sample(enumerators, 500):
        try:
            ours = mine.object(name, drgn.FindObjectFlags.CONSTANT)
        except LookupError:
            assert name in report.finders.objects.ambiguous
            continue
        try:
            theirs = dwarf.object(name, drgn.FindObjectFlags.CONSTANT)
        except LookupError:
            continue  # the DWARF vmlinux lacks a few enums that BTF has (enum slab_modes)
        assert ours.value_() == theirs.value_(), name
        compared += 1
    assert compared > 450


def test_helpers_read_the_ground_truth(pair) -> None:
    mine, _, _, crash = pair
    truth = crash.ground_truth
    seen = observe(mine)
    assert seen["kernel_release"] == truth["kernel_release"]
    assert (seen["crashed_cpu"], seen["crashed_pid"]) == (truth["crashed_cpu"], truth["crashed_pid"])
    assert seen["tasks"] == truth["tasks"]
    assert seen["dmesg"] == truth["dmesg"]
    assert len(seen["tasks"]) > 40 and len(seen["dmesg"]) > 300


def _same_frame(mine: drgn.Program, ours: drgn.StackFrame, dwarf: drgn.Program, theirs: drgn.StackFrame) -> bool:
    """Same pc and stack pointer, and the same function by name.

    kallsyms names split/cloned parts with GCC's suffix and assembly code
    after its nearest label; DWARF names the function or the sized ELF
    symbol around the label.
    """
    if (ours.pc, ours.sp) != (theirs.pc, theirs.sp):
        return False
    if base_name(ours.name) == base_name(theirs.name):
        return True
    label = mine.symbol(ours.pc)
    enclosing = [s.address for s in dwarf.symbols(theirs.name)]
    return theirs.function_name is None and len(enclosing) == 1 and enclosing[0] <= label.address <= ours.pc


def _kernel(trace) -> list[drgn.StackFrame]:
    frames = []
    for f in trace:
        if f.pc < KERNEL_SPACE:
            break
        frames.append(f)
    return frames


def test_backtraces_match_dwarf_without_inline_frames(pair) -> None:
    from drgn.helpers.linux.sched import cpu_curr

    mine, dwarf, _, crash = pair
    truth = crash.ground_truth
    traces = [(mine.crashed_thread().stack_trace(), dwarf.crashed_thread().stack_trace(), truth["backtrace"])]
    for cpu, names in truth["cpu_backtraces"].items():
        traces.append((mine.stack_trace(cpu_curr(mine, int(cpu))), dwarf.stack_trace(cpu_curr(dwarf, int(cpu))), names))
    for ours, theirs, names in traces:
        theirs = _kernel(theirs)
        assert [f.name if f.name and not f.name.startswith("0x") else dwarf.symbol(f.pc).name for f in theirs] == names
        real = [f for f in theirs if not f.is_inline]
        ours = _kernel(ours)
        assert len(ours) == len(real) and len(real) >= 8
        assert all(_same_frame(mine, a, dwarf, b) for a, b in zip(ours, real))
        assert not any(f.is_inline for f in ours)
        with pytest.raises(LookupError):
            ours[0].source()  # no line tables in BTF: said, not guessed


def test_page_and_slab_helpers_agree(pair) -> None:
    """The memory-model globals of the table let drgn's mm and slab helpers work too."""
    from drgn.helpers.linux.mm import page_to_pfn, virt_to_page
    from drgn.helpers.linux.pid import find_task
    from drgn.helpers.linux.slab import slab_object_info

    mine, dwarf, _, _ = pair
    results = []
    for prog in (mine, dwarf):
        task = find_task(prog, 1)
        info = slab_object_info(task)
        results.append((page_to_pfn(virt_to_page(task)).value_(), info.slab_cache.name.string_(), info.allocated))
    assert results[0] == results[1] and results[0][1] == b"task_struct"


def test_bundled_analyses_run_unchanged(pair) -> None:
    from tsubaki_forensics.analysis.spec import AnalysisContext
    from tsubaki_plugins import dmesg, panic, tasks

    mine, dwarf, _, _ = pair
    for module in (tasks, dmesg, panic):
        ours, theirs = module.analyze(AnalysisContext(prog=mine)), module.analyze(AnalysisContext(prog=dwarf))
        assert ours.completeness == theirs.completeness, module.__name__
        assert all(c.readable == c.total for c in ours.completeness)
        assert ours.facts == theirs.facts
        if module is not panic:
            assert ours.tables == theirs.tables


def test_report_says_what_is_missing(pair) -> None:
    mine, _, report, crash = pair
    assert report.kernel_release == crash.ground_truth["kernel_release"]
    assert report.btf_types > 90_000 and report.btf_bytes > 4_000_000
    assert report.can_unwind and report.unwind.orc_entries > 300_000 and report.unwind.modules >= 1
    text = "\n".join(report.debug_info().lines())
    for needle in ("file:line", "inline", "GLOBAL_TYPES", "flattens"):
        assert needle in text
    assert tuple(report.limitations) == LIMITATIONS
    observe(mine)
    sources = report.object_sources()
    assert sources["init_pid_ns"] == sources["prb"] == "table"
    assert sources["runqueues"] == "btf-var" and sources["PIDTYPE_PID"] == "btf-enum"
    assert "struct irq_info" in report.ambiguous_types()


def test_attaching_twice_is_a_clear_error(pair) -> None:
    mine, _, _, _ = pair
    with pytest.raises(SelfContainedError, match="already attached"):
        attach_selfcontained(mine)


def test_no_btf_in_the_dump_is_a_clear_error() -> None:
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    init_task = drgn.Symbol("init_task", 0xFFFFFFFF82A0C940, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT)
    with pytest.raises(SelfContainedError, match="without CONFIG_DEBUG_INFO_BTF"):
        read_btf(prog, drgn.SymbolIndex([init_task]))
    # No data symbol at all: kallsyms lists functions only (Debian's arm64 kernels).
    functions_only = drgn.SymbolIndex([
        drgn.Symbol("panic", 0xFFFFFFFF81000000, 0x100, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.FUNC)])
    with pytest.raises(SelfContainedError, match="functions only .built without CONFIG_KALLSYMS_ALL"):
        read_btf(prog, functions_only)
    not_collected = drgn.SymbolIndex([
        drgn.Symbol("__start_BTF", 0xFFFFFFFF82000000, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
        drgn.Symbol("__stop_BTF", 0xFFFFFFFF82400000, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
    ])
    with pytest.raises(SelfContainedError, match="not in the dump"):
        read_btf(prog, not_collected)


def test_attach_on_a_program_built_from_a_tsd(real_crash, tmp_path) -> None:
    """The product path: .tsd -> drgn bridge (no vmlinux) -> attach -> helpers."""
    from tsubaki_forensics.drgn_bridge import program_from_dump
    from tsubaki_forensics.tsd import open_dump
    from tsubaki_forensics.vmcore.importer import import_vmcore

    import_vmcore(real_crash.vmcore, tmp_path / "d.tsd")
    opened = program_from_dump(open_dump([tmp_path / "d.tsd"]), debug_info=False)
    report = attach_selfcontained(opened.prog)
    assert report.can_unwind
    opened.prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(opened.prog), enable_index=-1)
    seen = observe(opened.prog)
    truth = real_crash.ground_truth
    assert (seen["tasks"], seen["dmesg"], seen["crashed_pid"]) == (truth["tasks"], truth["dmesg"], truth["crashed_pid"])
    elf, _, _ = _programs(real_crash)  # the ELF path, whose backtraces are checked against DWARF above
    assert seen == observe(elf)


def test_vmcoreinfo_without_kallsyms_is_a_clear_error(real_crash) -> None:
    """Kernels before 6.0 do not put kallsyms in VMCOREINFO: one clear error, no traceback."""
    from tsubaki_forensics.vmcore.elf import ElfVmcore

    with ElfVmcore(real_crash.vmcore) as core:
        info = b"\n".join(line for line in bytes(core.vmcoreinfo).split(b"\n") if b"kallsyms" not in line)
        prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                          drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
        for start, length, _ in core.ranges():
            prog.add_memory_segment(start, length, lambda a, c, o, p: core.read(a, c), physical=True)
        prog.set_linux_kernel_custom(info, False)
        with pytest.raises(SelfContainedError, match="Linux >= 6.0"):
            attach_selfcontained(prog)


@contextlib.contextmanager
def _partial_program(crash, hole_symbols: tuple[str, str]):
    """The crash's memory as a custom program, minus the pages between two symbols
    (as if the monitor had not collected them), with drgn.FaultError for reads there."""
    from drgn.helpers.linux.mm import follow_phys

    from tsubaki_forensics.vmcore.elf import ElfVmcore

    full = drgn.Program()
    full.set_core_dump(str(crash.vmcore))
    attach_selfcontained(full)
    mm = full["init_mm"].address_of_()
    start, stop = (full.symbol(name).address for name in hole_symbols)
    hole = (follow_phys(mm, start).value_() & ~0xFFF, follow_phys(mm, stop - 1).value_() | 0xFFF)
    core = ElfVmcore(crash.vmcore)

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        if address <= hole[1] and address + count > hole[0]:
            raise drgn.FaultError("not collected", max(address, hole[0]))
        return core.read(address, count)

    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    for begin, length, _ in core.ranges():
        prog.add_memory_segment(begin, length, read, physical=True)
    prog.set_linux_kernel_custom(bytes(core.vmcoreinfo), False)
    try:
        yield prog
    finally:
        core.close()


def test_partial_dump_without_orc_still_gives_types(real_crash) -> None:
    with _partial_program(real_crash, ("__start_orc_unwind_ip", "__stop_orc_unwind")) as prog:
        report = attach_selfcontained(prog)
        assert not report.can_unwind and "FaultError" in report.unwind_error
        assert "unwinding: unavailable" in "\n".join(report.debug_info().lines())
        assert observe_tasks(prog) == [t["pid"] for t in real_crash.ground_truth["tasks"]]


def test_partial_dump_without_btf_is_a_clear_error(real_crash) -> None:
    with _partial_program(real_crash, ("__start_BTF", "__stop_BTF")) as prog:
        with pytest.raises(SelfContainedError, match="BTF is not in the dump"):
            attach_selfcontained(prog)


def observe_tasks(prog: drgn.Program) -> list[int]:
    from drgn.helpers.linux.pid import for_each_task

    return [int(t.pid) for t in for_each_task(prog)]
