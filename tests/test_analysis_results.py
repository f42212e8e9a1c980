"""Result types, the runner, and the pure halves of the bundled analyses (no kernel needed)."""

from __future__ import annotations

import pytest
from drgn.helpers.linux.printk import PrintkRecord

from tsubaki_forensics.analysis import (
    AnalysisContext,
    AnalysisResult,
    AnalysisSpec,
    Column,
    Completeness,
    Missing,
    Need,
    NotCollected,
    Status,
    Table,
    Unreadable,
    run_analyses,
    select,
)
from tsubaki_forensics.errors import TsubakiError
from tsubaki_plugins import dmesg, panic, tasks


def test_completeness_summary_groups_pids():
    c = Completeness("tasks", 55, 57, (Missing("30", 0x1000, group="pid"), Missing("31", 0x2000, group="pid")))
    assert c.summary() == "tasks: 55 of 57 readable; pids 30, 31 not collected"
    assert not c.complete
    ring = Completeness("log records", 0, None, (Missing("printk ring buffer", 0xFFFF888001234000),))
    assert ring.summary() == "log records: 0 of ? readable; printk ring buffer at 0xffff888001234000 not collected"
    assert Completeness("tasks", 3, 3).complete


def test_table_checks_types_and_keeps_placeholders():
    cols = (Column("pid", "PID", int), Column("comm", "COMM", str))
    t = Table.build("t", "T", cols, [(1, "init"), (2, NotCollected(0x10)), (None, Unreadable("bad"))])
    assert t.column("comm") == ["init", NotCollected(0x10), Unreadable("bad")]
    assert t.dicts()[0] == {"pid": 1, "comm": "init"}
    with pytest.raises(TypeError, match="column pid wants int"):
        Table.build("t", "T", cols, [("1", "init")])
    with pytest.raises(ValueError, match="has 1 cells, expected 2"):
        Table.build("t", "T", cols, [(1,)])


def test_table_accepts_what_isinstance_accepts():
    """A cell of its column's exact type, of a subclass of it, an int (not a bool) in a float
    column, None or a placeholder is accepted; anything else is refused naming its column."""
    import enum

    class Small(enum.IntEnum):
        ONE = 1

    cols = (Column("n", "N", int), Column("x", "X", float), Column("flag", "F", bool), Column("s", "S", str))
    rows = [(1, 1.5, True, "a"), (True, 2, False, "b"), (Small.ONE, Small.ONE, None, NotCollected()),
            (None, Unreadable("r"), Unreadable("r"), None)]
    assert Table.build("t", "T", cols, rows).rows == tuple(rows)
    for row, column, kind in [((1, True, True, "a"), "x", "float"), ((1, 1.0, 1, "a"), "flag", "bool"),
                              ((1, "1", True, "a"), "x", "float"), ((1.0, 1.0, True, "a"), "n", "int"),
                              ((1, 1.0, True, b"a"), "s", "str")]:
        with pytest.raises(TypeError, match=f"column {column} wants {kind}, got {type(row[cols.index(next(c for c in cols if c.name == column))]).__name__}"):
            Table.build("t", "T", cols, [(1, 1.0, True, "a"), row])


def _spec(name, function, needs=()):
    return AnalysisSpec(name, function, f"{name} analysis", frozenset(needs))


def test_runner_records_a_failure_and_runs_the_others():
    def boom(ctx):
        raise KeyError("no such symbol")

    def fine(ctx):
        return AnalysisResult("fine", "Fine", completeness=(Completeness("things", 2, 2),))

    def partial(ctx):
        return AnalysisResult("partial", "Partial", completeness=(Completeness("things", 1, 2, (Missing("x"),)),))

    specs = [_spec("boom", boom), _spec("fine", fine), _spec("partial", partial), _spec("regs", fine, [Need.REGISTERS])]
    ctx = AnalysisContext(prog=None, capabilities=frozenset({Need.DEBUG_INFO}))
    seen = []
    results = run_analyses(specs, ctx, progress=seen.append)
    assert seen == ["boom", "fine", "partial", "regs"]
    assert [r.status for r in results] == [Status.FAILED, Status.OK, Status.PARTIAL, Status.SKIPPED]
    assert results[0].error == "KeyError: 'no such symbol'"
    assert "Traceback" in results[0].extra["traceback"]
    assert results[3].error == "needs registers"


def test_runner_rejects_a_non_result():
    (r,) = run_analyses([_spec("bad", lambda ctx: {"not": "a result"})], AnalysisContext(prog=None))
    assert r.status is Status.FAILED and "returned dict" in r.error


def test_select_only_exclude_and_unknown_names():
    f = lambda ctx: None  # noqa: E731
    available = {n: _spec(n, f) for n in ("tasks", "dmesg", "panic")}
    assert [s.name for s in select(available)] == ["tasks", "dmesg", "panic"]
    assert [s.name for s in select(available, only=["panic", "tasks"])] == ["panic", "tasks"]
    assert [s.name for s in select(available, exclude=["dmesg"])] == ["tasks", "panic"]
    with pytest.raises(TsubakiError, match="unknown analysis 'nope'"):
        select(available, only=["nope"])


# -- tasks (pure) ------------------------------------------------------------------


def _task(nr, **kw):
    base = dict(nr=nr, address=0xFFFF0000 + nr, pid=nr, ppid=1, comm=f"t{nr}", state="S", cpu=0, on_cpu=False)
    base.update(kw)
    return tasks.TaskRecord(**base)


def test_tasks_result_says_which_pids_were_not_collected():
    records = [_task(1), _task(30, comm=NotCollected(0x30), state=NotCollected(0x30)), _task(31, ppid=NotCollected(0x31)), _task(109, state="R", on_cpu=True)]
    missing = [Missing("30", 0x30, group="pid"), Missing("31", 0x31, group="pid")]
    cpus = [tasks.CpuRecord(0, 0xFFFFFFFF, 0, "swapper/0"), tasks.CpuRecord(1, 0xFFFF0000 + 109, 109, "t109")]
    result = tasks.tasks_result(records, cpus, 109, missing, walk_complete=True)
    assert result.completeness[0].summary() == "tasks: 2 of 4 readable; pids 30, 31 not collected"
    table = result.table("tasks")
    assert table.column("crashed") == [False, False, False, True]
    assert table.column("comm")[1] == NotCollected(0x30)
    assert result.table("cpus").column("crashed") == [False, True]


def test_tasks_result_when_the_pid_tree_is_lost():
    result = tasks.tasks_result([_task(1)], [], NotCollected(0x99), [Missing("PID tree (init_pid_ns.idr)", 0x5000)], walk_complete=False)
    c = result.completeness[0]
    assert c.total is None and not c.complete
    assert "PID tree (init_pid_ns.idr) at 0x5000 not collected" in c.summary()
    assert result.fact("crashed pid") == NotCollected(0x99)
    assert result.notes


# -- dmesg (pure) ------------------------------------------------------------------


def _record(seq, ns, level, text):
    return PrintkRecord(text=text, facility=0, level=level, seq=seq, timestamp=ns, caller_tid=seq, caller_cpu=None, continuation=False, context={})


def test_log_lines_and_tail():
    lines = dmesg.log_lines([_record(0, 0, 5, b"Linux version"), _record(1, 2_694_986_669, 4, b"bad \xff byte")])
    assert lines[1].time == pytest.approx(2.694986669)
    assert lines[1].text == "bad \\xff byte"
    assert lines[0].caller == "T0"
    assert dmesg.tail(lines, 1) == [lines[1]]
    assert dmesg.tail(lines, 0) == []
    assert dmesg.tail(lines, None) == lines
    with pytest.raises(ValueError):
        dmesg.tail(lines, -1)


def test_dmesg_result_without_the_ring_lists_nothing():
    result = dmesg.dmesg_result(None, [Missing("printk ring buffer", 0xFFFFFFFF83000000)])
    assert result.tables == ()
    assert result.completeness[0].summary() == "log records: 0 of ? readable; printk ring buffer at 0xffffffff83000000 not collected"


# -- panic (pure) ------------------------------------------------------------------


def test_kernel_frames_stop_at_the_first_user_address():
    frames = [panic.Frame(0xFFFFFFFF81000000, "panic"), panic.Frame(0xFFFFFFFF81A00126, "entry_SYSCALL_64"), panic.Frame(0x7F0000001000, None), panic.Frame(0, None), panic.Frame(0xFFFFFFFF81000000, "bogus")]
    kept, dropped = panic.kernel_frames(frames)
    assert [f.function for f in kept] == ["panic", "entry_SYSCALL_64"]
    assert dropped == 3
    assert panic.is_user_address(0) and panic.is_user_address(0x8000_0000_0000_0000)
    assert not panic.is_user_address(0xFFFF_8000_0000_0000)
    assert panic.is_user_address(0xBFFF_FFFF, 4) and not panic.is_user_address(0xC000_0000, 4)


def test_format_location_like_the_kernel():
    assert panic.format_location(panic.Frame(0x10, "__handle_sysrq", "__handle_sysrq.cold", 0x44, 0x11C)) == "__handle_sysrq.cold+0x44/0x11c"
    assert panic.format_location(panic.Frame(0x10, "pde_write", inline=True)) == "pde_write"
    assert panic.format_location(panic.Frame(0xFFFFFFFFC0484230, None)) == "0xffffffffc0484230"


def test_panic_result_reports_missing_stack_pages():
    crashed = panic.Backtrace(1, 109, "sh", (panic.Frame(0xFFFFFFFF81000000, "panic", "panic", 0x10, 0x100, "kernel/panic.c", 300),), 1, (Missing("stack page", 0xFFFFC90000004000),))
    other = panic.Backtrace(0, 0, "swapper/0", (panic.Frame(0xFFFFFFFF81000100, "native_halt"),))
    result = panic.panic_result("Kernel panic - not syncing: x", 1, crashed, [other], [])
    assert result.fact("crashed pid") == 109
    assert [t.name for t in result.tables] == ["backtrace", "cpu0"]
    assert result.table("backtrace").dicts()[0]["file"] == "kernel/panic.c"
    assert result.completeness[0].summary() == "backtraces: 1 of 2 readable; stack page at 0xffffc90000004000 not collected"


def test_panic_message_from_log_prefers_the_panic_line():
    line = lambda text: dmesg.LogLine(0.0, 0, text)  # noqa: E731
    log = [line("Oops: 0002 [#1] SMP NOPTI"), line("BUG: kernel NULL pointer dereference, address: 0"), line("Kernel panic - not syncing: Fatal exception"), line("Kernel panic - not syncing: second")]
    assert panic.panic_message_from_log(log) == "Kernel panic - not syncing: Fatal exception"
    assert panic.panic_message_from_log(log[:2]) == "BUG: kernel NULL pointer dereference, address: 0"
    assert panic.panic_message_from_log([line("[ 1.0] kernel BUG at mm/slub.c:42!")]) == "kernel BUG at mm/slub.c:42!"
    assert panic.panic_message_from_log([line("all is well")]) is None
