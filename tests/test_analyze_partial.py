"""Partial dumps: drop chosen records from a real .tsd and check each report says what is missing.

Addresses are found with drgn on the complete dump; the partial copy is
written with the format's own writer, the dropped pages recorded as
MISSING.  Nothing may be guessed: every value still shown must equal the
ground truth, and every gap must be named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from drgn.helpers.linux.mm import follow_phys
from drgn.helpers.linux.pid import find_task

from tsubaki_forensics.analysis import NotCollected, Status, is_placeholder
from tsubaki_forensics.analysis.session import analyze_dump, open_program
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.tsd import TsdWriter, open_dump
from tsubaki_forensics.vmcore.importer import import_vmcore

pytestmark = pytest.mark.realkernel
PAGE = 4096
STEP = 1 << 20


@pytest.fixture(scope="module")
def full(real_crash, tmp_path_factory):
    """The complete dump and a program over it, to find what to drop."""
    path = tmp_path_factory.mktemp("full") / "crash.tsd"
    import_vmcore(real_crash.vmcore, path)
    plugins = Plugins.load()
    opened = open_program([path], plugins, vmlinux=real_crash.vmlinux)
    yield path, opened.program.prog
    opened.close()


def _phys(prog, vaddr: int) -> int:
    return follow_phys(prog["init_mm"].address_of_(), vaddr).value_() & ~(PAGE - 1)


def _without(src: Path, dst: Path, pages: set[int], notes: bool = True) -> Path:
    """Copy ``src`` to ``dst`` leaving out the physical ``pages`` (recorded as MISSING)."""
    with open_dump([src]) as dump, TsdWriter(dst, dump_id=dump.dump_id) as w:
        w.write_metadata(vmcoreinfo=dump.vmcoreinfo, notes=dump.notes if notes else None, properties=dump.properties)
        for r in dump.memory.ranges():
            pos = r.start
            while pos < r.end:
                n = min(STEP - pos % STEP, r.end - pos)
                cuts = sorted(p for p in pages if pos <= p < pos + n)
                here = pos
                for cut in [*cuts, pos + n]:
                    if cut > here:
                        if r.kind == "zero":
                            w.write_zero(here, cut - here)
                        else:
                            w.write_memory(here, dump.memory.read(here, cut - here))
                    if cut < pos + n:
                        w.write_missing(cut, PAGE, "dropped by the test")
                    here = cut + PAGE
                pos += n
    return dst


def _analyze(path: Path, vmlinux: Path):
    plugins = Plugins.load()
    opened = open_program([path], plugins, vmlinux=vmlinux)
    try:
        report = analyze_dump(opened, plugins, only=["tasks", "dmesg", "panic"])
    finally:
        opened.close()
    return {r.name: r for r in report.results}, report


def test_dropping_the_printk_ring(full, real_crash, tmp_path):
    path, prog = full
    data = prog["prb"].text_data_ring.data.value_()
    page = _phys(prog, data)
    results, _ = _analyze(_without(path, tmp_path / "noring.tsd", {page}), real_crash.vmlinux)
    dmesg = results["dmesg"]
    assert dmesg.status is Status.PARTIAL and dmesg.tables == ()
    (missing,) = dmesg.completeness[0].missing
    assert missing.what == "printk ring buffer" and missing.address is not None
    assert dmesg.completeness[0].summary().startswith("log records: 0 of ? readable; printk ring buffer at 0x")
    panic = results["panic"]
    assert isinstance(panic.fact("panic message"), NotCollected)  # not guessed from elsewhere
    assert [f["function"] for f in panic.table("backtrace").dicts()] == real_crash.ground_truth["backtrace"]
    assert results["tasks"].status is Status.OK  # one gap does not stop the others


def test_dropping_one_task_struct(full, real_crash, tmp_path):
    path, prog = full
    gt = real_crash.ground_truth
    victim = max(t["pid"] for t in gt["tasks"] if t["comm"] == "sleep")
    task = find_task(prog, victim)
    size = prog.type("struct task_struct").size
    start, end = task.value_(), task.value_() + size
    pages = {_phys(prog, a) for a in range(start & ~(PAGE - 1), end, PAGE)}
    results, _ = _analyze(_without(path, tmp_path / "notask.tsd", pages), real_crash.vmlinux)
    tasks = results["tasks"]
    assert tasks.status is Status.PARTIAL
    c = tasks.completeness[0]
    missing_pids = {int(m.what) for m in c.missing if m.group == "pid"}
    assert victim in missing_pids
    assert c.total == len(gt["tasks"]) and c.readable == len(gt["tasks"]) - len(missing_pids)
    assert f"{c.readable} of {c.total} readable; pid" in c.summary() and str(victim) in c.summary()
    truth = {t["pid"]: t for t in gt["tasks"]}
    for row in tasks.table("tasks").dicts():
        pid = row["pid"]
        for key in ("ppid", "comm", "state", "cpu", "on_cpu"):
            if is_placeholder(row[key]):
                assert pid in missing_pids
            else:
                assert row[key] == truth[pid][key], (pid, key)  # nothing guessed
    assert results["dmesg"].status is Status.OK


def test_dropping_the_pid_tree_root(full, real_crash, tmp_path):
    path, prog = full
    head = prog["init_pid_ns"].idr.idr_rt.xa_head.value_()
    assert head & 3 == 2, "expected an xarray node at the root"
    page = _phys(prog, head & ~3)
    results, _ = _analyze(_without(path, tmp_path / "noidr.tsd", {page}), real_crash.vmlinux)
    tasks = results["tasks"]
    c = tasks.completeness[0]
    assert tasks.status is Status.PARTIAL and c.total is None
    assert any(m.what.startswith("PID tree") and m.address is not None for m in c.missing)
    assert "PID tree (init_pid_ns.idr) at 0x" in c.summary()
    assert tasks.notes
    assert results["dmesg"].status is Status.OK and results["panic"].status is Status.OK


def test_dropping_a_stack_page(full, real_crash, tmp_path):
    path, prog = full
    gt = real_crash.ground_truth
    trace = prog.crashed_thread().stack_trace()
    sp = trace[len(trace) // 2].sp
    page = _phys(prog, sp)
    results, _ = _analyze(_without(path, tmp_path / "nostack.tsd", {page}), real_crash.vmlinux)
    panic = results["panic"]
    assert panic.status is Status.PARTIAL
    stack_gaps = [m for m in panic.completeness[0].missing if m.what == "stack page"]
    assert len(stack_gaps) == 1 and stack_gaps[0].address == sp & ~(PAGE - 1)
    names = [f["function"] for f in panic.table("backtrace").dicts()]
    assert names == gt["backtrace"][: len(names)]  # a prefix of the truth, no invented frames
    assert "stack page at 0x" in panic.completeness[0].summary()


def test_a_dump_without_registers(full, real_crash, tmp_path):
    """No NT_PRSTATUS notes: the bridge uses set_linux_kernel_custom; panic is skipped, not guessed."""
    path, _ = full
    results, report = _analyze(_without(path, tmp_path / "noregs.tsd", set(), notes=False), real_crash.vmlinux)
    assert not report.dump.registers
    assert results["panic"].status is Status.SKIPPED and results["panic"].error == "needs registers"
    assert results["tasks"].status is Status.OK and results["dmesg"].status is Status.OK
    assert len(results["tasks"].table("tasks").rows) == len(real_crash.ground_truth["tasks"])


def test_a_dump_still_being_written(full, real_crash, tmp_path):
    """A .tsd cut short (collector still appending): analyze reads the valid prefix, never a traceback."""
    path, _ = full
    cut = tmp_path / "growing.tsd"
    with open(path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(path.stat().st_size * 2 // 3))
    run = subprocess.run(
        [sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(cut), "--vmlinux", str(real_crash.vmlinux), "--format", "json"],
        capture_output=True, text=True,
    )
    assert run.returncode == 4, run.stderr  # partial results
    assert "Traceback" not in run.stderr
    doc = json.loads(run.stdout)
    assert doc["dump"]["problems"], "the truncation must be reported"
    for analysis in doc["analyses"]:
        if analysis["status"] != "ok":
            assert analysis["error"] or any(not c["complete"] for c in analysis["completeness"])


def test_dropping_pages_of_modules_memory_and_run_queues(full, real_crash, tmp_path):
    """modules, memory (kmem -i) and runq on a dump without a module's struct, the node vmstat
    counters and one CPU's run queue: each names what is missing, and every value still shown
    is the complete dump's (nothing guessed)."""
    from drgn.helpers.linux.sched import cpu_rq

    path, prog = full
    plugins = Plugins.load()
    names = ["modules", "memory", "runq"]
    opened = open_program([path], plugins, vmlinux=real_crash.vmlinux)
    try:
        before = {r.name: r for r in analyze_dump(opened, plugins, only=names).results}
    finally:
        opened.close()
    module = before["modules"].table("modules").dicts()[0]
    last_cpu = before["runq"].table("runq").dicts()[-1]["cpu"]
    dropped = {
        _phys(prog, module["module"]),
        _phys(prog, prog["vm_node_stat"].address_),
        _phys(prog, cpu_rq(prog, last_cpu).value_()),
    }
    opened = open_program([_without(path, tmp_path / "holes.tsd", dropped)], plugins, vmlinux=real_crash.vmlinux)
    try:
        after = {r.name: r for r in analyze_dump(opened, plugins, only=names).results}
    finally:
        opened.close()
    for name in names:
        result = after[name]
        assert result.status is Status.PARTIAL, (name, [c.summary() for c in result.completeness])
        assert any(m.not_collected and m.address is not None for c in result.completeness for m in c.missing)
        for table in result.tables:
            full_rows = {tuple(r.values())[:2]: r for r in before[name].table(table.name).dicts()}
            for row in table.dicts():
                key = tuple(row.values())[:2]
                if key in full_rows:  # every value is the complete dump's, or says it was not collected
                    for k, v in row.items():
                        assert v == full_rows[key][k] or isinstance(v, NotCollected), (name, k, v)
    assert after["modules"].completeness[0].total is None  # the list is cut where the struct was dropped
    cached = {r["item"]: r for r in after["memory"].table("kmem").dicts()}["CACHED"]
    assert isinstance(cached["pages"], NotCollected)
    (runq,) = after["runq"].completeness
    assert runq.readable == runq.total - 1 and all(str(last_cpu) in m.what for m in runq.missing)
