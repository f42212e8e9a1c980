"""The bundled analyses' pure parts and their text layout, without a kernel; and each on the shipped sample.

``modules``, ``memory``, ``blocked`` and ``runq`` build their results from
records (tested here with placeholders, as a partial dump gives them);
``panic`` places exception frames and stack markers as drgn's ``bt`` does;
``tasks`` lists the idle tasks first; ``dmesg`` adds wall-clock times.
The figures against drgn's own crash commands on real crashes are in
``test_analyses_vs_drgn_crash_real.py``.
"""

from __future__ import annotations

import io
import json

import drgn
import pytest
from tsubaki_plugins.blocked import BlockedTask, blocked_result
from tsubaki_plugins.dmesg import LogLine, dmesg_result, wall_clock
from tsubaki_plugins.memory import KMEM_ROWS, Figure, memory_result
from tsubaki_plugins.modules import ModuleRecord, modules_result
from tsubaki_plugins.panic import Backtrace, Frame, exception_frames, frame_from_drgn, frames_tables
from tsubaki_plugins.runq import QueuedTask, RunQueue, runq_result
from tsubaki_plugins.tasks import TaskRecord, tasks_result

from tsubaki_forensics.analysis import AnalysisResult, Missing, NotCollected, Status
from tsubaki_forensics.analysis.report import DumpSummary, Report
from tsubaki_forensics.drgn_bridge.program import name_dump_file
from tsubaki_forensics.render import json_renderer, text_renderer


def _text(*results: AnalysisResult) -> str:
    out = io.StringIO()
    text_renderer.render(Report(DumpSummary(paths=("a.tsd",)), results), out)
    return out.getvalue()


def _json(*results: AnalysisResult) -> dict:
    out = io.StringIO()
    json_renderer.render(Report(DumpSummary(paths=("a.tsd",)), results), out)
    return json.loads(out.getvalue())


def test_memory_rows_shares_and_a_missing_figure():
    pages = {"TOTAL MEM": 1000, "FREE": 250, "USED": 750, "BUFFERS": 0, "CACHED": NotCollected(0x5000), "SLAB": 10,
             "TOTAL HUGE": 0, "HUGE FREE": 0, "TOTAL SWAP": 0, "SWAP USED": 0, "SWAP FREE": 0,
             "COMMIT LIMIT": 400, "COMMITTED": 1200}
    result = memory_result([Figure(label, pages[label], of) for label, of in KMEM_ROWS], 4096)
    rows = {r["item"]: r for r in result.table("kmem").dicts()}
    assert list(rows) == [label for label, _ in KMEM_ROWS]
    assert rows["FREE"]["percent"] == 25.0 and rows["FREE"]["bytes"] == 250 * 4096
    assert rows["COMMITTED"]["percent"] == 300.0 and rows["COMMITTED"]["of"] == "COMMIT LIMIT"
    assert rows["HUGE FREE"]["percent"] == 0.0  # a share of an empty total is 0, as crash prints it
    assert rows["CACHED"]["pages"] == NotCollected(0x5000) and rows["CACHED"]["percent"] is None
    (c,) = result.completeness
    assert (c.readable, c.total, c.complete) == (12, 13, False) and c.missing[0].what == "CACHED"

    text = _text(result)
    assert "   TOTAL MEM        1000       3.9MB  ----" in text
    assert "        FREE         250      1000KB  25% of TOTAL MEM" in text
    assert "      CACHED  <not collected 0x5000>  <not collected 0x5000>  -" in text
    assert "\n\n  TOTAL HUGE" in text  # a blank line before each total, as crash groups them
    row = _json(result)["analyses"][0]["tables"][0]["rows"][1]
    assert row == {"item": "FREE", "pages": 250, "bytes": 1024000, "percent": 25.0, "of": "TOTAL MEM"}  # numbers


@pytest.mark.parametrize("n,text", [(0, "0"), (44 * 1024, "44KB"), (469_800_000, "448.0MB"), (1 << 30, "1GB"),
                                    (1023, "1023B")])
def test_binary_units_as_kmem_prints_them(n, text):
    assert text_renderer.binary_units(n) == text


def test_modules_taints_and_a_cut_list():
    records = [ModuleRecord("loop", 0xFFFFFFFFC03EE2C0, 0xFFFFFFFFC03E8000, 32768, ""),
               ModuleRecord("evil", 0xFFFFFFFFC0400000, NotCollected(0x9000), 4096, "OE", "/lib/evil.ko")]
    result = modules_result(records, [Missing("evil", 0x9000, True, "module")], complete=False)
    assert dict(result.facts) == {"modules": 2, "tainted modules": 1}
    (c,) = result.completeness
    assert (c.readable, c.total) == (1, None) and result.notes
    doc = _json(result)["analyses"][0]
    assert doc["tables"][0]["rows"][0] == {"module": "0xffffffffc03ee2c0", "name": "loop",
                                           "text_base": "0xffffffffc03e8000", "size": 32768, "taints": "",
                                           "debug_file": None}
    assert doc["facts"] == {"modules": 2, "tainted_modules": 1}


def test_runq_counts_and_an_unreadable_cpu():
    queues = [RunQueue(0, 0xFFFF0000, 12, 0xFFFF1000, "dd",
                       (QueuedTask("RT", 0, 15, 0xFFFF2000, "migration/0"), QueuedTask("CFS", 120, 7, 0xFFFF3000, "kworker/0:0"))),
              RunQueue(1, NotCollected(0x7000), missing=(Missing("1", 0x7000, True, "CPU"),))]
    result = runq_result(queues, [])
    assert [(r["cpu"], r["rt_queued"], r["cfs_queued"]) for r in result.table("runq").dicts()] == [(0, 1, 1), (1, 0, 0)]
    assert [(t["class"], t["pid"]) for t in result.table("queued").dicts()] == [("RT", 15), ("CFS", 7)]
    assert (result.completeness[0].readable, result.completeness[0].complete) == (1, False)
    text = _text(result)  # crash's runq layout: the queued tasks under their CPU
    assert 'CPU 0 RUNQUEUE: ffff0000\n  CURRENT: PID: 12       TASK: ffff1000  COMMAND: "dd"\n  RT:\n' \
           '     [  0] PID: 15       TASK: ffff2000  COMMAND: "migration/0"\n  CFS:\n' \
           '     [120] PID: 7        TASK: ffff3000  COMMAND: "kworker/0:0"\n' in text
    assert "CPU 1 RUNQUEUE: <not collected 0x7000>" in text and "Tasks waiting to run" not in text


def _frame(pc, function, inline=False, registers=(), stack="TASK", sp=None):
    return Frame(pc, function, None if inline else function, None if inline else 4, 16, inline=inline,
                 sp=None if inline else (sp or pc - 0x100), registers=registers, stack=stack)


def test_exception_frames_skip_the_cpus_own_registers_and_precede_inline_callees():
    rip = (("rip", 0x1), ("rsp", 0x2))
    frames = [_frame(0xF0, "native_halt", inline=True), _frame(0xF1, "stop_this_cpu", registers=rip, stack="IRQ"),
              _frame(0xF2, "asm_sysvec", stack="IRQ"), _frame(0xF3, "default_idle", inline=True),
              _frame(0xF4, "native_safe_halt", registers=rip), _frame(0xF5, "do_idle")]
    frames[0] = frames[0]._replace(stack="IRQ")
    # the innermost physical frame's registers are the CPU's: not an exception frame; the next
    # interrupted frame's registers go before its inline callee (#3), where drgn's segment starts
    assert exception_frames(frames) == [(3, rip)]
    tables = frames_tables("cpu0", "CPU 0", Backtrace(0, 0, "swapper/0", tuple(frames)))
    assert [t.name for t in tables] == ["cpu0", "cpu0_registers"]
    text = _text(AnalysisResult("panic", "Panic", tables=tuple(tables)))
    lines = text.splitlines()
    marker = lines.index("--- <IRQ stack> ---")
    assert "asm_sysvec" in lines[marker - 1] and lines[marker + 1].startswith("    RIP: 0000000000000001")
    assert "(inline)" in lines[marker + 2] and "default_idle" in lines[marker + 2]
    assert text.count("RIP:") == 1
    rows = _json(AnalysisResult("panic", "Panic", tables=tuple(tables)))["analyses"][0]["tables"][0]["rows"]
    assert [r["stack"] for r in rows] == ["IRQ", "IRQ", "IRQ", "TASK", "TASK", "TASK"]


class _Symbol:
    def __init__(self, name, address, size):
        self.name, self.address, self.size = name, address, size


class _DrgnFrame:
    """A ``drgn.StackFrame`` stand-in whose ``name`` must not be read for a physical frame:
    drgn's ``name`` falls back to a symbol lookup, a second scan of every vmlinux symbol."""

    interrupted = False

    def __init__(self, pc, function_name, symbol, inline=False):
        self.pc, self.function_name, self._symbol, self.is_inline, self.sp = pc, function_name, symbol, inline, pc

    @property
    def name(self):
        if not self.is_inline:
            raise AssertionError("frame.name read: a second symbol lookup")
        return self.function_name or "inline-fallback"

    def symbol(self):
        if self._symbol is None:
            raise LookupError("no symbol")
        return self._symbol

    def source(self):
        raise LookupError("no line")


def test_a_frame_is_named_from_dwarf_or_the_symbol_already_looked_up():
    asm = frame_from_drgn(_DrgnFrame(0x1022, None, _Symbol("ret_from_fork", 0x1000, 0x2D)))
    assert (asm.function, asm.symbol, asm.offset, asm.size) == ("ret_from_fork", "ret_from_fork", 0x22, 0x2D)
    c = frame_from_drgn(_DrgnFrame(0x2010, "panic", _Symbol("panic", 0x2000, 0x40)))
    assert (c.function, c.symbol, c.offset) == ("panic", "panic", 0x10)
    cold = frame_from_drgn(_DrgnFrame(0x3044, "watchdog", _Symbol("watchdog.cold", 0x3000, 0x80)))
    assert (cold.function, cold.symbol, cold.offset) == ("watchdog", "watchdog.cold", 0x44)
    nothing = frame_from_drgn(_DrgnFrame(0xFFFFFFFFC0001234, None, None))
    assert (nothing.function, nothing.symbol, nothing.offset) == ("0xffffffffc0001234", None, None)
    inline = frame_from_drgn(_DrgnFrame(0x2010, "notifier_call_chain", None, inline=True))
    assert (inline.function, inline.symbol, inline.inline) == ("notifier_call_chain", None, True)


def _task(pid, cpu, comm, address, state="S", kthread=False, parent=1):
    return TaskRecord(pid, address, pid, 1, comm, state, cpu, False, 0.0, 0, 0, kthread, parent)


def test_ps_lists_idle_tasks_first_with_crashs_ppid():
    idle = [_task(0, 0, "swapper/0", 0xA000, "R", True, 0), _task(0, 1, "swapper/1", 0xB000, "R", True, 0)]
    result = tasks_result([_task(1, 1, "init", 0xC000)], [], 1, [], True, idle, [], 0xC000)
    assert [r["crashed"] for r in result.table("tasks").dicts()] == [True]
    assert [r["crashed"] for r in result.table("idle").dicts()] == [False, False]
    lines = [line for line in _text(result).splitlines() if "swapper" in line or "init" in line]
    assert [line.split()[-1] for line in lines] == ["[swapper/0]", "[swapper/1]", "init"]
    assert lines[0].split()[1] == "0"  # crash's PPID (parent->pid) where ps(1)'s ppid would say 1
    assert [c.unit for c in result.completeness] == ["tasks", "idle tasks"]


def test_blocked_summary_and_one_backtrace_per_task():
    record = _task(110, 1, "tsk-trigger", 0xD000, "D")
    bt = Backtrace(1, 110, "tsk-trigger", (_frame(0xFFFFFFFF81000000, "schedule"),
                                           _frame(0xFFFFFFFF81000100, "percpu_rwsem_wait")))
    result = blocked_result([BlockedTask(record, 2_500_000_000, bt)], [record, _task(1, 0, "init", 0xC000)], [], True)
    assert result.table("blocked").dicts()[0]["since_run"] == 2.5 and result.table("blocked").dicts()[0]["frames"] == 2
    assert [t.name for t in result.tables] == ["blocked", "pid110"]
    assert dict(result.facts) == {"blocked": 1, "tasks looked at": 2}
    text = _text(result)
    assert "PID 110 (tsk-trigger) on CPU 1" in text and "percpu_rwsem_wait+0x4/0x10" in text
    empty = blocked_result([], [record], [], True)
    assert "(none)" in _text(empty) and all(c.complete for c in empty.completeness)


def test_log_wall_clock_column():
    line = LogLine(1.5, 6, "hello", ns=1_500_000_000)
    result = dmesg_result([line], [], None, boot_ns=1_700_000_000 * 10**9)
    (row,) = result.table("log").dicts()
    assert row["wall_time"] == wall_clock(1_700_000_000 * 10**9, line)
    assert f"[{row['wall_time']}] hello" in _text(result)
    assert "wall_time" not in {c.name for c in dmesg_result([line], []).table("log").columns}
    unreadable = dmesg_result([line], [], None, boot_ns=NotCollected(0x10))
    assert unreadable.table("log").dicts()[0]["wall_time"] == NotCollected(0x10)


def test_dump_file_name_for_crash_sys():
    """drgn's crash sys prints prog.core_dump_path (our notes memfd): a bridge program names the user's file."""
    from drgn.commands._crash import _sys

    getter = dict((name, get) for name, _, get in _sys._FIELDS)
    ours, other = drgn.Program(), drgn.Program()
    name_dump_file(ours, ["/dumps/a.tsd", "/dumps/a.tsd.part2"])
    name_dump_file(ours, ["/dumps/b.tsd"])  # idempotent: the getter is wrapped once
    getter = dict((name, get) for name, _, get in _sys._FIELDS)
    assert getter["DUMPFILE"](ours) == "/dumps/b.tsd"
    assert getter["DUMPFILE"](other) is None  # any other program: drgn's own answer


@pytest.mark.parametrize("name", ["modules", "memory", "blocked", "runq"])
def test_new_analyses_on_the_sample(tsubaki_sample_run_analysis, name):
    """Each runs complete on the shipped sample (a real OOM panic, no vmlinux: the dump's own BTF)."""
    result = tsubaki_sample_run_analysis(name)
    assert result.status is Status.OK, (result.error, [c.summary() for c in result.completeness])
    assert result.tables and all(c.complete for c in result.completeness)


def test_wall_clock_option_is_declared_with_crashs_short_flag(tsubaki_sample_path):
    """``analyze -T`` (dmesg's declared option, crash's ``log -T``) adds wall_time to every row."""
    import subprocess
    import sys

    from tsubaki_forensics.analysis import AnalysisOption

    with pytest.raises(ValueError):
        AnalysisOption("x", bool, "a flag", short="T")
    run = subprocess.run([sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(tsubaki_sample_path), "-q",
                          "--only", "dmesg", "-T", "--tail", "2", "-f", "json"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)["analyses"][0]["tables"][0]["rows"]
    assert len(rows) == 2 and all(isinstance(r["wall_time"], str) and r["wall_time"] for r in rows)
