"""``analyze``'s figures against drgn's own crash commands on the original ELF, field by field.

For each lab crash (6.1 and 6.12; sysrq, OOM, hung-task and NMI panics), the
ground truth is drgn 0.3.0's crash-compatible commands (``sys``, ``set``,
``ps``, ``bt -a``, ``mod``, ``mod -t``, ``kmem -i``, ``runq``, ``foreach D
bt``, ``log -T``) run on the crash lab's ELF vmcore with the DWARF vmlinux.
The same crash is imported into a ``.tsd`` and analysed by the bundled
analyses (``sys``, ``tasks``, ``panic``, ``modules``, ``memory``, ``runq``,
``blocked``, ``dmesg -T``); every figure the command prints is compared
with the analysis's value, analysed once with the same vmlinux and once
with none (the dump's own BTF, kallsyms and ORC; there only the backtraces'
inline frames and DWARF names are left out of the comparison, as
docs/SELFCONTAINED.md says).  Nothing is hard-coded: names, PIDs, addresses
and counts all come from the truth's output on the same crash.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import drgn
import drgn.cli
import pytest

from tsubaki_forensics.analysis import Status
from tsubaki_forensics.analysis.crash import CrashSession
from tsubaki_forensics.analysis.results import AnalysisResult, Table
from tsubaki_forensics.analysis.session import analyze_dump, open_program
from tsubaki_forensics.plugin_system import get_plugins
from tsubaki_forensics.render.text_renderer import _frames, binary_units
from tsubaki_forensics.vmcore.importer import import_vmcore

pytestmark = pytest.mark.realkernel

CASES = [(k, s) for k in ("6.1", "6.12") for s in ("sysrq", "oom", "hung-task", "nmi")]
#: the analyses compared here (every bundled one; dmesg with wall-clock times)
ANALYSES = ("sys", "tasks", "panic", "blocked", "runq", "memory", "modules", "dmesg")


def truth_text(prog: drgn.Program, line: str) -> str:
    """What drgn's crash command prints on ``prog``."""
    import drgn.commands._crash  # noqa: F401
    from drgn.commands._crash.common import CRASH_COMMAND_NAMESPACE

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        CRASH_COMMAND_NAMESPACE.run(prog, line, globals=drgn.cli.default_globals(prog))
    return out.getvalue()


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}-{s}" for k, s in CASES])
def crash_pair(request, crash_lab, tmp_path_factory):
    """(the lab crash, truth program on its ELF with the DWARF vmlinux, the crash imported into a .tsd)."""
    kernel, scenario = request.param
    crash = crash_lab(kernel=kernel, scenario=scenario)
    tsd = tmp_path_factory.mktemp("vs-drgn") / "crash.tsd"
    import_vmcore(crash.vmcore, tsd)
    truth = drgn.Program()
    truth.set_core_dump(str(crash.vmcore))
    truth.load_debug_info([str(crash.vmlinux)])
    truth.config["crash_scroll"] = False
    return crash, truth, tsd


@pytest.fixture(scope="module", params=["vmlinux", "self-contained"])
def case(request, crash_pair):
    """(truth program on the ELF, our results on the .tsd, our report, the .tsd path, our opened dump, DWARF?):
    ours with the same vmlinux, or with none (the dump's own BTF, kallsyms and ORC)."""
    crash, truth, tsd = crash_pair
    dwarf = request.param == "vmlinux"
    plugins = get_plugins([])
    opened = open_program([tsd], plugins, vmlinux=crash.vmlinux if dwarf else None, self_contained=not dwarf)
    report = analyze_dump(opened, plugins, only=list(ANALYSES), options={"wall_clock": True})
    results = {r.name: r for r in report.results}
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(ANALYSES, Status.OK), \
        {n: (r.status, r.error) for n, r in results.items()}
    yield truth, results, report, tsd, opened, dwarf
    opened.close()


# --- sys -------------------------------------------------------------------

def _fields(text: str) -> dict[str, str]:
    return {m[1]: m[2] for m in re.finditer(r"^\s*([A-Z][A-Z_ ]*): (.*)$", text, re.M)}


def test_sys(case):
    """Every field of drgn's sys and set (the panic task) equals the sys analysis's; KERNEL is the
    report's vmlinux and our crash sys names the .tsd as DUMPFILE, not the notes memfd."""
    truth, results, report, tsd, opened, dwarf = case
    expected = _fields(truth_text(truth, "sys") + truth_text(truth, "set"))
    kernel = expected.pop("KERNEL").split("  [TAINTED]")[0]
    if dwarf:
        assert Path(kernel).resolve() == Path(report.dump.vmlinux).resolve()
    else:  # no vmlinux to name: the report says where the types came from instead
        assert report.dump.vmlinux is None and report.warnings
    expected.pop("DUMPFILE")
    facts = dict(results["sys"].facts)
    assert set(expected) <= set(facts)
    for name, value in expected.items():
        assert str(facts[name]) == value.strip('"'), name
    session_out = io.StringIO()
    with contextlib.redirect_stdout(session_out):
        assert not CrashSession(opened.program.prog).run("sys")
    assert _fields(session_out.getvalue())["DUMPFILE"] == str(tsd)


# --- ps --------------------------------------------------------------------

PS_ROW = re.compile(r"^(?P<active>>?)\s*(?P<pid>\d+)\s+(?P<ppid>\d+)\s+(?P<cpu>\d+)\s+(?P<task>[0-9a-f]+)\s+"
                    r"(?P<st>\S+)\s+(?P<mem>[\d.]+)\s+(?P<vsz>\d+)\s+(?P<rss>\d+)\s+(?P<comm>.*)$")


def _ps_cells(row: dict) -> dict:
    comm = f"[{row['comm']}]" if row["kthread"] else row["comm"]
    return {"active": ">" if row["on_cpu"] else "", "pid": str(row["pid"]), "ppid": str(row["parent_pid"]),
            "cpu": str(row["cpu"]), "task": f"{row['task']:x}", "st": row["state"],
            "mem": f"{row['mem_percent']:.1f}", "vsz": str(row["vsz"]), "rss": str(row["rss"]), "comm": comm}


def test_ps(case):
    """Every row of drgn's ps is a row of ours, cell for cell; ours has in addition only the idle
    tasks of CPUs that panic() took offline (drgn lists the online CPUs' idle tasks only)."""
    truth, results, *_ = case
    rows = [m.groupdict() for m in map(PS_ROW.match, truth_text(truth, "ps").splitlines()[1:]) if m]
    assert rows
    tasks = results["tasks"]
    ours = {r["task"]: _ps_cells(r) for t in ("idle", "tasks") for r in tasks.table(t).dicts()}
    for row in rows:
        assert ours.pop(int(row["task"], 16)) == row
    idle = {r["task"] for r in tasks.table("idle").dicts()}
    assert set(ours) <= idle
    online = {int(r["cpu"]) for r in rows if r["pid"] == "0"}
    assert {int(c["cpu"]) for c in ours.values()}.isdisjoint(online)
    # one idle task per present CPU
    assert len(idle) == len({r["cpu"] for r in results["tasks"].table("cpus").dicts()})


# --- bt --------------------------------------------------------------------

HEADER = re.compile(r'^PID: (\d+)\s+TASK: ([0-9a-f]+)\s+CPU: (\d+)\s+COMMAND: "(.*)"$')
FRAME = re.compile(r"^\s*#(\d+) \[(?P<sp>[0-9a-f?]+)\] (?P<name>\S+) at (?P<pc>[0-9a-f]+)(?P<module>.*)$")
INLINE = re.compile(r"^\s*#(\d+) \(inline\)\s+(?P<name>\S+)(?P<module>.*)$")


def _blocks(text: str) -> dict[str, list[str]]:
    """drgn's ``bt`` output of several tasks: each task's lines under its task address."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            current = blocks.setdefault(m[2], [])
        elif line.strip():
            current.append(line)
    return blocks


def _structure(lines: list[str]) -> list:
    """Frames as (sp, pc, module) / ("inline", name, module), registers and stack markers verbatim."""
    out: list = []
    for line in lines:
        if m := FRAME.match(line):
            out.append((m["sp"], m["pc"], m["module"].strip()))
        elif m := INLINE.match(line):
            out.append(("inline", m["name"], m["module"].strip()))
        else:
            out.append(line)
    return out


def _our_lines(result: AnalysisResult, name: str) -> list[str]:
    """Our frames table as text, crash's bt layout (without file: line, which drgn's bt shows only with -l)."""
    table = result.table(name)
    columns = [c.name for c in table.columns]
    rows = [tuple(None if c == "file" else v for c, v in zip(columns, row)) for row in table.rows]
    registers = next((t for t in result.tables if t.name == f"{name}_registers"), None)
    return _frames(Table.build(table.name, table.title, table.columns, rows), registers)


def _same_trace(ours: AnalysisResult, table: str, theirs: list[str], dwarf: bool = True) -> None:
    """Frame for frame; without DWARF (the dump's ORC and kallsyms) there are no inline frames and
    names are kallsyms symbols (docs/SELFCONTAINED.md): the real frames, registers and markers only."""
    mine = _our_lines(ours, table)
    if not dwarf:
        real = [item for item in _structure(theirs) if not (isinstance(item, tuple) and item[0] == "inline")]
        assert _structure(mine) == real, (mine, theirs)
        return
    assert _structure(mine) == _structure(theirs), (mine, theirs)
    # Function names: drgn's bt prints the DWARF name (a module's frame may have none on the ELF).
    names = [m["name"] for m in map(FRAME.match, theirs) if m]
    functions = [f["function"] for f in ours.table(table).dicts() if not f["inline"]]
    assert len(names) == len(functions)
    for theirs_name, our_name in zip(names, functions):
        if not theirs_name.startswith("0x"):
            assert our_name == theirs_name


def test_bt(case):
    """drgn's ``bt -a`` (the task on every CPU) equals the panic analysis's backtraces frame for
    frame: stack pointer, PC, module, inline frames, exception-frame registers, stack markers, names."""
    truth, results, *_ = case
    panic = results["panic"]
    blocks = _blocks(truth_text(truth, "bt -a"))
    headers = [HEADER.match(line) for line in truth_text(truth, "bt -a").splitlines()]
    by_cpu = {int(m[3]): m for m in headers if m}
    assert by_cpu
    crashed_cpu = panic.fact("panicking CPU")
    for cpu, header in by_cpu.items():
        table = "backtrace" if cpu == crashed_cpu else f"cpu{cpu}"
        _same_trace(panic, table, blocks[header[2]], case[-1])
    assert panic.fact("crashed pid") == int(by_cpu[crashed_cpu][1])


# --- D-state tasks -----------------------------------------------------------

def test_blocked(case):
    """drgn's ``foreach D bt`` (crash's ``foreach UN bt``): the same tasks, the same backtraces."""
    truth, results, *_ = case
    text = truth_text(truth, "foreach D bt")
    blocks = _blocks(text)
    blocked = results["blocked"]
    rows = blocked.table("blocked").dicts()
    assert {f"{r['task']:x}" for r in rows} == set(blocks)
    assert blocked.fact("blocked") == len(blocks)
    for r in rows:
        _same_trace(blocked, f"pid{r['pid']}", blocks[f"{r['task']:x}"], case[-1])
        assert isinstance(r["since_run"], float) and r["since_run"] >= 0


# --- mod ---------------------------------------------------------------------

def test_modules(case):
    """drgn's ``mod`` rows (MODULE, NAME, TEXT_BASE, SIZE) and ``mod -t`` taints equal ours."""
    truth, results, *_ = case
    lines = truth_text(truth, "mod").splitlines()[1:]
    expected = [line.split()[:4] for line in lines if line.strip()]
    ours = results["modules"].table("modules").dicts()
    assert [[f"{r['module']:x}", r["name"], f"{r['text_base']:x}", str(r["size"])] for r in ours] == expected
    tainted = truth_text(truth, "mod -t")
    expected_taints = {} if tainted.strip() == "no tainted modules" else \
        dict(line.split() for line in tainted.splitlines()[1:] if line.strip())
    assert {r["name"]: r["taints"] for r in ours if r["taints"]} == expected_taints
    assert results["modules"].fact("tainted modules") == len(expected_taints)


# --- kmem -i -----------------------------------------------------------------

KMEM_ROW = re.compile(r"^\s*(?P<label>[A-Z][A-Z ]*?)\s+(?P<pages>\d+)\s+(?P<total>\S+)\s+(?P<share>.*)$")


def test_memory(case):
    """drgn's ``kmem -i``: every row's pages, size and percentage equal the memory analysis's."""
    truth, results, *_ = case
    expected = {m["label"]: m.groupdict() for m in map(KMEM_ROW.match, truth_text(truth, "kmem -i").splitlines()) if m}
    ours = {r["item"]: r for r in results["memory"].table("kmem").dicts()}
    assert set(ours) == set(expected)
    for label, row in expected.items():
        mine = ours[label]
        assert str(mine["pages"]) == row["pages"], label
        assert binary_units(mine["bytes"]) == row["total"], label
        share = row["share"].strip()
        if share == "----":
            assert mine["of"] is None
        else:
            assert share.startswith(f"{mine['percent'] / 100:.0%} of "), (label, share, mine)


# --- runq --------------------------------------------------------------------

def test_runq(case):
    """drgn's ``runq``: each CPU's run queue address, current task, queued RT and CFS tasks."""
    truth, results, *_ = case
    runq = results["runq"]
    queued = runq.table("queued").dicts()
    expected: list[tuple] = []
    for line in truth_text(truth, "runq").splitlines():
        if m := re.match(r"^CPU (\d+) RUNQUEUE ([0-9a-f]+)$", line):
            cpu = int(m[1])
            expected.append(("rq", cpu, m[2]))
        elif m := re.match(r'^\s+CURRENT: PID: (\d+)\s+TASK: ([0-9a-f]+)\s+COMMAND: "(.*)"$', line):
            expected.append(("curr", cpu, int(m[1]), m[2], m[3]))
        elif m := re.match(r"^\s+(RT|CFS) ", line):
            klass = m[1]
        elif m := re.match(r'^\s+\[\s*(\d+)\] PID: (\d+)\s+TASK: ([0-9a-f]+)\s+COMMAND: "(.*)"$', line):
            expected.append(("queued", cpu, klass, int(m[1]), int(m[2]), m[3], m[4]))
    ours: list[tuple] = []
    for q in runq.table("runq").dicts():
        ours.append(("rq", q["cpu"], f"{q['runqueue']:x}"))
        ours.append(("curr", q["cpu"], q["curr_pid"], f"{q['curr_task']:x}", q["curr_comm"]))
        ours += [("queued", q["cpu"], t["class"], t["prio"], t["pid"], f"{t['task']:x}", t["comm"])
                 for t in queued if t["cpu"] == q["cpu"]]
    assert ours == expected


# --- log -T ------------------------------------------------------------------

def test_log_wall_clock(case):
    """drgn's ``log -T``: the same wall-clock time on every line."""
    truth, results, *_ = case
    rows = results["dmesg"].table("log").dicts()
    assert "\n".join(f"[{r['wall_time']}] {r['text']}" for r in rows) + "\n" == truth_text(truth, "log -T")
