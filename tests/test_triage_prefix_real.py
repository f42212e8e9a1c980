"""The first bytes of a ``tsubaki-triage`` dump are enough, with no vmlinux anywhere (issue 16).

A busy 2 GiB crash from the crash lab (kernels 6.1 and 6.12) is collected with the triage policy,
cut to its first 10% of bytes and analysed by the CLI in a child process
whose caches are empty (``TSUBAKI_CACHE_DIR``, ``XDG_CACHE_HOME``) and whose
proxies point nowhere: the only debug information is what the dump carries
(BTF, kallsyms, ORC).  The expectations come from the same crash at run time:
the lab's ground truth, and the DWARF vmlinux on the original vmcore for
what BTF cannot give (inline frames are DWARF's alone).

Then the smallest prefix that still gives the panic message, the crashed
thread's backtrace and the complete kernel log is found by bisection over
the dump's record boundaries (and the one that also gives every task); it
is reported (``record_property`` and stderr) and written in
docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import drgn
import pytest

from monitor_model.engine import CollectParams
from monitor_model.session import collect
from monitor_model.sources import VmcoreSource
from tsubaki_forensics.lab.ground_truth import PANIC_PREFIX
from tsubaki_forensics.selfcontained.verify import KERNEL_SPACE, backtrace_names, base_name
from tsubaki_forensics.triage.scan import iso_utc, scan_dump
from tsubaki_forensics.tsd import open_file

pytestmark = [pytest.mark.realkernel, pytest.mark.slow]

BUSY = dict(mem="2G", workload="busy")
_CLI = "import sys; from tsubaki_forensics.cli.app import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def triage_dump(request, crash_lab, tmp_path_factory):
    """``(crash, triage .tsd, its triage steps, DWARF expectations)`` for a busy 2 GiB crash."""
    crash = crash_lab(kernel=request.param, **BUSY)
    out = tmp_path_factory.mktemp("prefix") / "triage.tsd"
    src = VmcoreSource(crash.vmcore, {"vmlinux": str(crash.vmlinux)})
    try:
        result = collect(src, ["tsubaki-triage"], CollectParams(), out)[0]
    finally:
        src.close()
    steps = {s["label"]: s["file_end"] for s in result.steps if s["label"].startswith("triage:")}
    return crash, out, steps, _dwarf_expectations(crash)


def _dwarf_expectations(crash) -> dict:
    """The crashed thread's real (not inline) frames, as the DWARF vmlinux unwinds them."""
    prog = drgn.Program()
    prog.set_core_dump(str(crash.vmcore))
    prog.load_debug_info([str(crash.vmlinux)])
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    trace = prog.crashed_thread().stack_trace()
    assert backtrace_names(prog, trace) == crash.ground_truth["backtrace"]  # our DWARF view is the lab's
    real = []
    for frame in trace:
        if frame.pc < KERNEL_SPACE:
            break
        if not frame.is_inline:
            name = frame.name if frame.name and not frame.name.startswith("0x") else prog.symbol(frame.pc).name
            real.append((name, frame.pc))
    return {"frames": real, "xtime_sec": prog["tk_core"].timekeeper.xtime_sec.value_()}


def _analyze(path: Path, empty: Path) -> dict:
    """``analyze --format json`` in a child with empty caches and no network."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(empty), "TSUBAKI_CACHE_DIR": str(empty),
           "XDG_CACHE_HOME": str(empty), "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "DEBUGINFOD_URLS": ""}
    done = subprocess.run([sys.executable, "-c", _CLI, "analyze", str(path), "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode in (0, 4), done.stderr[-2000:]
    doc = json.loads(done.stdout)
    doc["stderr"] = done.stderr
    return doc


def _by_name(doc: dict) -> dict:
    return {a["name"]: a for a in doc["analyses"]}


def _rows(analysis: dict, table: str) -> list[dict]:
    t = next((t for t in analysis["tables"] if t["name"] == table), None)
    if t is None:
        return []
    return t["rows"]  # schema 2: rows are objects keyed by column name


def _same_frames(ours: list[dict], expected: list[tuple[str, int]]) -> bool:
    """Same pcs frame by frame; names equal up to GCC's suffixes, or kallsyms' label inside DWARF's
    function (``entry_SYSCALL_64_after_hwframe`` in ``entry_SYSCALL_64``)."""
    if [int(r["pc"], 16) for r in ours] != [pc for _, pc in expected]:
        return False
    for row, (name, _) in zip(ours, expected):
        mine = row["function"] or row["symbol"] or ""
        if base_name(mine) != base_name(name) and not mine.startswith(name):
            return False
    return True


def _verdict(doc: dict, crash, expected: dict) -> dict[str, bool]:
    """What a prefix gives: each part of the issue's proof, True or False."""
    truth = crash.ground_truth
    analyses = _by_name(doc)
    panic, dmesg, tasks = analyses.get("panic", {}), analyses.get("dmesg", {}), analyses.get("tasks", {})
    shown = _rows(tasks, "tasks")
    by_pid = {t["pid"]: t for t in truth["tasks"]}
    completeness = tasks.get("completeness", [])
    missing = {int(m["what"]) for c in completeness for m in c["missing"] if m.get("group") == "pid"}
    # a walk that stopped early (the PID tree not collected) names where, and claims no total
    stopped = [m for c in completeness if c["total"] is None for m in c["missing"] if m.get("group") != "pid"]
    return {
        "panic message": panic.get("facts", {}).get("panic_message") == PANIC_PREFIX + truth["panic_message"],
        "backtrace": _same_frames(_rows(panic, "backtrace"), expected["frames"]),
        "log complete": dmesg.get("status") == "ok"
        and [r["text"] for r in _rows(dmesg, "log")] == [d["text"] for d in truth["dmesg"]],
        "tasks shown right": all(
            r["pid"] in by_pid
            and {k: r[k] for k in ("ppid", "comm", "state", "cpu", "on_cpu")}
            == {k: by_pid[r["pid"]][k] for k in ("ppid", "comm", "state", "cpu", "on_cpu")}
            for r in shown),
        "unread tasks named": {r["pid"] for r in shown} | missing == set(by_pid)
        or (tasks.get("status") == "partial" and bool(stopped)),
        "all tasks": {r["pid"] for r in shown} == set(by_pid) and tasks.get("status") == "ok",
        "no vmlinux": doc["dump"]["vmlinux"] is None and "self-contained: no vmlinux" in doc["stderr"],
    }


def _cut(src: Path, size: int, dest: Path) -> Path:
    with open(src, "rb") as f:
        dest.write_bytes(f.read(size))
    return dest


def test_first_tenth_without_a_vmlinux_gives_the_ground_truth(triage_dump, tmp_path):
    crash, path, steps, expected = triage_dump
    size = path.stat().st_size
    prefix = _cut(path, size // 10, tmp_path / "first-tenth.tsd")
    empty = tmp_path / "empty"
    empty.mkdir()
    doc = _analyze(prefix, empty)
    verdict = _verdict(doc, crash, expected)
    assert all(verdict.values()), verdict
    # what could not be read is named: the cut itself, and the memory beyond it is not claimed
    assert any("END footer" in p or "file ends inside" in p for p in doc["dump"]["problems"])
    assert doc["dump"]["present_bytes"] < crash.manifest["mem_bytes"] // 2
    assert max(steps.values()) < size // 10  # every triage item lies inside the first tenth
    # triage of the same prefix (its own BTF only): the crash time is the kernel's clock, as DWARF reads it
    record = scan_dump("prefix", [str(prefix)], 0, {"self_contained": True})
    assert record["panic_message"] == PANIC_PREFIX + crash.ground_truth["panic_message"]
    assert record["crash_time"] == iso_utc(expected["xtime_sec"])


def _smallest(path: Path, tmp_path: Path, ends: list[int], good) -> tuple[int, dict]:
    """The smallest record end whose prefix satisfies ``good`` (prefixes are nested: monotone)."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    lo, hi = 0, len(ends) - 1
    docs: dict[int, dict] = {}
    while lo < hi:
        mid = (lo + hi) // 2
        doc = _analyze(_cut(path, ends[mid], tmp_path / f"p{ends[mid]}.tsd"), empty)
        docs[mid] = doc
        if good(doc):
            hi = mid
        else:
            lo = mid + 1
    if lo not in docs:
        docs[lo] = _analyze(_cut(path, ends[lo], tmp_path / f"p{ends[lo]}.tsd"), empty)
    return ends[lo], docs[lo]


def test_smallest_prefix_that_is_enough(triage_dump, tmp_path, record_property):
    crash, path, steps, expected = triage_dump
    span = steps["triage: no-vmlinux analysis tasks"]
    with open_file(path) as f:
        ends = sorted({r.offset + r.size for r in f.records if r.offset + r.size <= span} | {span})
    essential = ("panic message", "backtrace", "log complete", "tasks shown right", "unread tasks named", "no vmlinux")

    def enough(doc):
        v = _verdict(doc, crash, expected)
        return all(v[k] for k in essential)

    smallest, doc = _smallest(path, tmp_path, ends, enough)
    assert enough(doc)
    # the no-vmlinux items alone suffice: nothing from the DWARF or kernel-data steps is needed
    assert smallest <= steps["triage: no-vmlinux analysis panic"]
    index = ends.index(smallest)
    if index:  # one record less is not enough: the figure is the smallest
        before = _analyze(_cut(path, ends[index - 1], tmp_path / "before.tsd"), tmp_path / "empty")
        assert not enough(before)
    every_task, doc_all = _smallest(path, tmp_path, ends, lambda d: enough(d) and _verdict(d, crash, expected)["all tasks"])
    assert _verdict(doc_all, crash, expected)["all tasks"]
    size = path.stat().st_size
    line = (f"smallest prefix of a tsubaki-triage dump ({crash.ground_truth['kernel_release']}, busy 2G, "
            f"{size} bytes): panic + backtrace + complete log {smallest} bytes ({100 * smallest / size:.2f}%), "
            f"and every task {every_task} bytes ({100 * every_task / size:.2f}%)")
    record_property("smallest_prefix_bytes", smallest)
    record_property("every_task_prefix_bytes", every_task)
    sys.stderr.write(line + "\n")
    print(line)
