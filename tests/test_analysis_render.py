"""The text and JSON renderers: placeholders visible, dump strings escaped, schema stable."""

from __future__ import annotations

import io
import json

from tsubaki_forensics.analysis import AnalysisResult, Column, Completeness, Missing, NotCollected, Status, Table, Unreadable
from tsubaki_forensics.analysis.report import DumpSummary, Report
from tsubaki_forensics.render import json_renderer, text_renderer


def _report():
    tasks = Table.build(
        "tasks",
        "Tasks",
        (Column("pid", "PID", int, "right"), Column("task", "TASK", int, fmt="address"), Column("comm", "COMM", str)),
        [(1, 0xFFFF888001000000, "init"), (30, None, NotCollected(0x1234000)), (31, 0xFFFF888002000000, "evil\x1b[31mred")],
    )
    log = Table.build(
        "log", "Kernel log",
        (Column("time", "TIME", float), Column("level", "LEVEL", int), Column("caller", "CALLER", str), Column("text", "TEXT", str)),
        [(2.694986669, 0, "T1", "Kernel panic - not syncing: sysrq triggered crash")],
    )
    results = (
        AnalysisResult(
            "tasks", "Tasks", facts=(("crashed pid", 109), ("panic message", Unreadable("bad"))), tables=(tasks, log),
            completeness=(Completeness("tasks", 2, 3, (Missing("30", 0x1234000, group="pid"),)),), status=Status.PARTIAL,
        ),
        AnalysisResult("broken", "broken", status=Status.FAILED, error="KeyError: 'prb'"),
    )
    return Report(DumpSummary(paths=("a.tsd",), kernel_release="6.1.0-56-cloud-amd64", build_id="3b43", present_bytes=1 << 29, registers=True), results)


def test_text_renderer_is_crash_like_and_safe():
    out = io.StringIO()
    text_renderer.render(_report(), out)
    text = out.getvalue()
    assert "   RELEASE: 6.1.0-56-cloud-amd64" in text
    assert "ffff888001000000" in text
    assert "<not collected 0x1234000>" in text
    assert "<unreadable: bad>" in text
    assert "\x1b" not in text and "evil\\x1b[31mred" in text
    assert "[    2.694987] [T1] Kernel panic - not syncing: sysrq triggered crash" in text  # dmesg's format + caller
    assert "INCOMPLETE: tasks: 2 of 3 readable; pid 30 not collected" in text
    assert "== broken: broken [failed] ==" in text and "KeyError: 'prb'" in text


def test_json_renderer_schema():
    out = io.StringIO()
    json_renderer.render(_report(), out)
    doc = json.loads(out.getvalue())
    assert doc["schema"] == "tsubaki-forensics/analyze" and doc["schema_version"] == 2
    assert doc["dump"]["kernel_release"] == "6.1.0-56-cloud-amd64"
    tasks = doc["analyses"][0]
    assert tasks["status"] == "partial"
    assert tasks["facts"] == {"crashed_pid": 109, "panic_message": {"unreadable": "bad"}}
    table = tasks["tables"][0]
    assert [c["type"] for c in table["columns"]] == ["integer", "address", "string"]
    assert table["rows"][0] == {"pid": 1, "task": "0xffff888001000000", "comm": "init"}
    assert table["rows"][1] == {"pid": 30, "task": None, "comm": {"not_collected": True, "address": "0x1234000"}}
    assert table["rows"][2]["comm"] == "evil\x1b[31mred"  # JSON keeps the data; escaping is the terminal's business
    assert tasks["completeness"][0]["missing"] == [{"what": "30", "group": "pid", "address": "0x1234000", "reason": "not_collected"}]
    assert doc["analyses"][1] == {
        "name": "broken", "title": "broken", "status": "failed", "error": "KeyError: 'prb'", "seconds": 0.0,
        "facts": {}, "completeness": [], "tables": [], "notes": [],
    }


def test_json_snake_case_and_addresses():
    assert json_renderer.snake_case("panicking CPU") == "panicking_cpu"
    assert json_renderer.snake_case("crashed pid") == "crashed_pid"
    assert json_renderer.snake_case("%MEM") == "mem"
    assert json_renderer.address_to_json(0xFFFFFFFFC0591230) == "0xffffffffc0591230"
    assert json_renderer.value_to_json(True, address=True) is True


def test_text_backtrace_is_crash_bt_and_comes_before_tasks_and_log():
    from tsubaki_plugins import panic

    frames = (
        panic.Frame(0xFFFFFFFFC0591230, None, "pvpanic_panic_notify", 0x60, 0x85, sp=0xFFFFC96A004238D0, module="pvpanic"),
        panic.Frame(0xFFFFFFFF81000100, "notifier_call_chain", inline=True),
        panic.Frame(0xFFFFFFFF81000100, "panic", "panic", 0x177, 0x2F4, "kernel/panic.c", 300, sp=0xFFFFC96A00423918),
    )
    result = panic.panic_result("Kernel panic - not syncing: x", 0, panic.Backtrace(0, 112, "dd", frames), [], [])
    base = _report()
    report = Report(base.dump, (*base.results, result))
    out = io.StringIO()
    text_renderer.render(report, out)
    text = out.getvalue()
    assert " #0 [ffffc96a004238d0] pvpanic_panic_notify+0x60/0x85 at ffffffffc0591230 [pvpanic]" in text
    assert " #1 (inline)           notifier_call_chain" in text
    assert " #2 [ffffc96a00423918] panic+0x177/0x2f4 at ffffffff81000100\n    kernel/panic.c: 300" in text
    assert text.index("== panic") < text.index("== tasks")
    doc = json.loads(_json(report))
    (row0, _, _) = doc["analyses"][-1]["tables"][0]["rows"]
    assert (row0["sp"], row0["size"], row0["module"]) == ("0xffffc96a004238d0", 0x85, "pvpanic")


def _json(report) -> str:
    out = io.StringIO()
    json_renderer.render(report, out)
    return out.getvalue()


# --- json_renderer.dumps: the text of json.dumps(indent=2), rows through the C encoder ---------------

from hypothesis import given, settings
from hypothesis import strategies as st

# Strings that stress the row boundaries: braces, commas, the separators' own
# characters, escapes, non-ASCII, and the renderer's own mark.
_TRICKY = st.sampled_from(["}", "{", "},\n{", '"', "\\", "\n", "\x00", "\u2028", "é漢", ",", ": ", " " * 14,
                           json_renderer._MARK, json_renderer._MARK + "0", json_renderer._QUOTED_MARK])
_TEXT = st.lists(st.one_of(st.text(max_size=6), _TRICKY), max_size=4).map("".join)
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), _TEXT)
_PLACEHOLDER = st.one_of(st.builds(lambda a: {"not_collected": True, "address": a}, st.none() | _TEXT),
                         st.builds(lambda r: {"unreadable": r}, _TEXT))
_KEY = st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), _TEXT)


@st.composite
def _documents(draw):
    def table():
        keys = draw(st.lists(_KEY, max_size=5, unique=True))
        cell = st.one_of(_SCALAR, _PLACEHOLDER) if draw(st.booleans()) else _SCALAR
        rows = draw(st.lists(st.fixed_dictionaries({k: cell for k in keys}), max_size=6))
        return {"name": draw(_TEXT), "title": draw(_TEXT), "columns": [{"name": k} for k in keys], "rows": rows}

    analyses = [{"name": draw(_TEXT), "facts": draw(st.dictionaries(_KEY, st.one_of(_SCALAR, _PLACEHOLDER), max_size=3)),
                 "tables": [table() for _ in range(draw(st.integers(0, 3)))], "notes": draw(st.lists(_TEXT, max_size=2))}
                for _ in range(draw(st.integers(0, 3)))]
    return {"schema": json_renderer.SCHEMA, "dump": {"paths": draw(st.lists(_TEXT, max_size=2))},
            "warnings": draw(st.lists(_TEXT, max_size=2)), "analyses": analyses}


@settings(max_examples=300, deadline=None)
@given(_documents())
def test_json_dumps_is_byte_identical_to_indented_json_dumps(doc):
    before = json.dumps(doc)
    assert json_renderer.dumps(doc) == json.dumps(doc, indent=2, ensure_ascii=False)
    assert json.dumps(doc) == before  # the document is left as it was


def test_json_render_is_indented_json_dumps_of_the_report():
    out = io.StringIO()
    json_renderer.render(_report(), out)
    assert out.getvalue() == json.dumps(json_renderer.report_to_json(_report()), indent=2, ensure_ascii=False) + "\n"


def test_json_rows_are_value_to_json_of_each_cell():
    """The rows of plain values (the short way) are what value_to_json makes of each cell."""
    class Pid(int):
        pass

    columns = (Column("task", "TASK", int, fmt="address"), Column("flag", "FLAG", int, fmt="address"),
               Column("pid", "PID", int), Column("comm", "COMM", str))
    rows = [(0xFFFF888001000000, True, 1, "init"), (None, 0, Pid(7), "x"), (NotCollected(0x1000), 5, 2, Unreadable("r")),
            (-1, False, 3, "é\n\"")]
    table = Table.build("t", "T", columns, rows)
    expected = [{k: json_renderer.value_to_json(v, address=c.fmt == "address")
                 for k, v, c in zip(("task", "flag", "pid", "comm"), row, columns)} for row in rows]
    assert json_renderer._table(table)["rows"] == expected
    assert [type(v) for r in json_renderer._table(table)["rows"] for v in r.values()] == \
        [type(v) for r in expected for v in r.values()]


def test_text_lines_print_as_rich_prints_each_line():
    """Lines batched into one rich Text come out as rich prints each line alone."""
    from rich.console import Console
    from rich.text import Text

    lines = ["plain", "", "\ttab\tin\tthe middle", "bell\x07 cr\r ff\x0c vt\x0b bs\x08", "trailing   ", "x" * 250 + "  ",
             "[bold]not markup[/bold]", "漢字 wide " * 30, "emoji 🙂", "  ", "\x1b[31mred", "last"]

    def console(out):
        return Console(file=out, highlight=False, soft_wrap=True, color_system=None, width=200)

    one_by_one, batched = io.StringIO(), io.StringIO()
    plain = console(one_by_one)
    for line in lines:
        plain.print(Text(line))
    plain.print()
    printer = text_renderer._Lines(console(batched))
    for line in lines:
        printer.line(line)
    printer.line("")
    printer.flush()
    assert batched.getvalue() == one_by_one.getvalue()
