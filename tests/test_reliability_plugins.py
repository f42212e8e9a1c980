"""Plugins that raise, hang, exit, return garbage or tamper with options
cannot take down ``analyze`` or change another analysis's result; ``--strict``
makes the first failure fatal (exit 5, one error line).

The unit tests drive the runner directly; the real-kernel test registers the
bad plugins beside the built-ins and runs ``analyze`` on a real crash, then
compares the built-ins' results with a clean run.
"""

from __future__ import annotations

import json
import time

import drgn
import pytest

from tsubaki_forensics.analysis.results import AnalysisResult, Column, Status, Table
from tsubaki_forensics.analysis import runner
from tsubaki_forensics.analysis.runner import run_analyses
from tsubaki_forensics.analysis.spec import AnalysisContext, AnalysisSpec
from tsubaki_forensics.errors import PluginError
from tsubaki_forensics.plugin_system import hookimpl


def raises(ctx):
    raise KeyError("boom")


def hangs(ctx):
    while True:  # a busy loop: no I/O to time out on
        pass


def sleeps_and_swallows(ctx):
    while True:
        try:
            time.sleep(60)
        except Exception:  # a plugin that catches everything it can
            continue


def exits(ctx):
    raise SystemExit(3)


def wrong_type(ctx):
    return {"tasks": 1}


def bad_rows(ctx):
    table = Table.build("t", "T", [Column("a", "A", str)], [("x",)])
    object.__setattr__(table, "rows", (("x", "y"),))  # bypasses the Table check
    return AnalysisResult("bad_rows", "bad", tables=(table,))


def bad_fact(ctx):
    return AnalysisResult("bad_fact", "bad", facts=(("k", object()),))


def tampers(ctx):
    ctx.options["tail"] = 1  # read-only: TypeError
    return AnalysisResult("tampers", "t")


def good(ctx):
    return AnalysisResult("good", "Good", facts=(("tail", ctx.option("tail")),))


BAD = {"raises": raises, "hangs": hangs, "sleeps_and_swallows": sleeps_and_swallows, "exits": exits,
       "wrong_type": wrong_type, "bad_rows": bad_rows, "bad_fact": bad_fact, "tampers": tampers}


def specs(names):
    funcs = {**BAD, "good": good}
    return [AnalysisSpec(n, funcs[n], n, plugin="test") for n in names]


@pytest.fixture
def limit_only(monkeypatch):
    """``limit_only(names)``: the runner applies its time limit to those
    analyses only; the others run without one.

    Why: a hanging analysis can only be stopped by the limit, but a limit on
    the analyses that must succeed would make their verdict depend on the
    machine's speed (a loaded CI machine; issue 23).  The mechanism under test
    (the runner's own SIGALRM deadline, and the CLI's ``--timeout``) is
    unchanged for the named ones.
    """
    real = runner._run_one

    def use(names):
        def run_one(spec, context, timeout=None):
            return real(spec, context, timeout if spec.name in names else None)
        monkeypatch.setattr(runner, "_run_one", run_one)
    return use


def test_bad_plugins_fail_alone(limit_only):
    ctx = AnalysisContext(drgn.Program(), None, {"tail": 7})
    order = ["good", *BAD, "good"]
    limit_only({"hangs", "sleeps_and_swallows"})
    results = run_analyses(specs(order), ctx, timeout=1.0)
    by = {}
    for r in results:
        by.setdefault(r.name, []).append(r)
    for g in by["good"]:
        assert g.status is Status.OK and g.fact("tail") == 7
    for name in BAD:
        (r,) = by[name]
        assert r.status is Status.FAILED and r.error and "\n" not in r.error, (name, r.error)
    assert "time limit" in by["hangs"][0].error and "time limit" in by["sleeps_and_swallows"][0].error
    assert "sys.exit" in by["exits"][0].error
    assert "malformed" in by["bad_rows"][0].error and "malformed" in by["bad_fact"][0].error
    assert ctx.options == {"tail": 7}


def test_strict_makes_the_first_failure_fatal():
    ctx = AnalysisContext(drgn.Program(), None, {})
    with pytest.raises(PluginError, match="--strict: analysis raises"):
        run_analyses(specs(["good", "raises", "good"]), ctx, strict=True)
    assert [r.status for r in run_analyses(specs(["good"]), ctx, strict=True)] == [Status.OK]


class BadPlugin:
    """Registered beside the built-ins for the real-kernel run."""

    @hookimpl
    def tsubaki_register_analyses(self, register):
        register("zz_raises", raises, "raises")
        register("zz_hangs", hangs, "hangs")
        register("zz_garbage", bad_rows, "malformed")
        register("zz_exits", exits, "exits")


def test_real_analyze_survives_bad_plugins_and_strict_fails(real_crash, tmp_path, capsys, limit_only):
    from tsubaki_forensics.cli.app import main
    from tsubaki_forensics.plugin_system.manager import get_plugins, reset_plugins
    from tsubaki_forensics.vmcore.importer import import_vmcore

    tsd = tmp_path / "crash.tsd"
    import_vmcore(real_crash.vmcore, tsd)
    base = ["analyze", str(tsd), "--vmlinux", str(real_crash.vmlinux), "--format", "json"]
    reset_plugins()
    try:
        assert main(base) == 0
        clean = json.loads(capsys.readouterr().out)
        get_plugins().pm.register(BadPlugin(), name="bad-test-plugin")
        limit_only({"zz_hangs"})  # the built-ins' verdict must not depend on the machine's speed
        rc = main([*base, "--timeout", "2"])
        out = capsys.readouterr().out
        assert rc == 5
        dirty = json.loads(out)
        results = {r["name"]: r for r in dirty["analyses"]}
        for name in ("zz_raises", "zz_hangs", "zz_garbage", "zz_exits"):
            assert results[name]["status"] == "failed", results[name]
        for r in clean["analyses"]:  # the built-ins' results are untouched
            other = dict(results[r["name"]])
            mine = dict(r)
            for row in (other, mine):
                row.pop("seconds", None)
            assert other == mine
        rc = main([*base, "--timeout", "2", "--strict"])
        captured = capsys.readouterr()
        assert rc == 5 and captured.out == ""
        errors = [x for x in captured.err.splitlines() if x.startswith("error:")]
        assert len(errors) == 1 and "--strict: analysis zz_" in errors[0]
    finally:
        reset_plugins()
