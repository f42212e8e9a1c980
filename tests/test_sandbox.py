"""Issue 22 findings 9 and 10: plugin code cannot corrupt stdout, overrun its
time limit unnoticed, or end a run with a traceback.

Unit tests drive the runner and the plugin manager directly (capfd sees fd
1, so a write from C or ``os.write`` is caught too); the real-kernel test
runs ``analyze --format json`` on a real crash with a plugin that prints
everywhere it can and checks stdout is exactly the JSON document.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time

import pytest

from tsubaki_forensics.analysis.results import AnalysisResult, Status
from tsubaki_forensics.analysis.runner import run_analyses
from tsubaki_forensics.analysis.spec import AnalysisContext, AnalysisSpec
from tsubaki_forensics.errors import PluginError
from tsubaki_forensics.plugin_system import Plugins, hookimpl
from tsubaki_forensics.sandbox import plugin_call


def context():
    return AnalysisContext(prog=None, dump=None, capabilities=frozenset(), options={})


def loud(ctx):
    print("print from a plugin")
    sys.stdout.write("sys.stdout.write from a plugin\n")
    os.write(1, b"fd 1 from a plugin\n")
    return AnalysisResult("loud", "loud")


def late_and_swallowing(ctx):
    """Swallows every interruption, then returns a result as if all were well."""
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:  # noqa: B036 - the hostile plugin
            pass
    return AnalysisResult("late", "late")


def test_analysis_output_goes_to_stderr(capfd):
    (result,) = run_analyses([AnalysisSpec("loud", loud, "loud", frozenset(), "p")], context())
    out, err = capfd.readouterr()
    assert result.status is Status.OK
    assert out == ""
    for text in ("print from a plugin", "sys.stdout.write", "fd 1 from a plugin"):
        assert text in err
    print("stdout works again")
    os.write(1, b"fd 1 too\n")
    assert capfd.readouterr().out == "stdout works again\nfd 1 too\n"


def test_swallowed_timeout_is_failed_not_ok():
    """On main a plugin swallowing BaseException overran --timeout and was reported ok."""
    (result,) = run_analyses([AnalysisSpec("late", late_and_swallowing, "late", frozenset(), "p")],
                             context(), timeout=0.5)
    assert result.status is Status.FAILED
    assert "time limit" in result.error


def test_plugin_call_one_line_errors(capfd):
    def boom():
        raise ValueError("multi\nline")

    with pytest.raises(PluginError, match=r"^plugin 'p' \(h\) raised ValueError: multi$") as info:
        plugin_call("p", "h", boom)
    assert "\n" not in str(info.value)
    with pytest.raises(PluginError, match="called sys.exit"):
        plugin_call("p", "h", lambda: sys.exit(2))
    with pytest.raises(PluginError, match="time limit"):
        plugin_call("p", "h", late_and_swallowing, None, timeout=0.3)
    assert plugin_call("p", "h", lambda: print("hi") or 7) == 7
    assert capfd.readouterr().out == ""


class ReadyHooks:
    def __init__(self, behaviour):
        self.behaviour = behaviour

    @hookimpl
    def tsubaki_program_ready(self, prog, dump):
        if self.behaviour == "raise":
            raise ValueError("cannot adjust")
        if self.behaviour == "loop":
            while True:
                try:
                    time.sleep(0.05)
                except BaseException:  # noqa: B036
                    if time.monotonic() > self.give_up:
                        return
        print("ready")

    give_up = 0.0


def test_program_ready_is_time_limited_and_named(capfd):
    plugins = Plugins.load(entry_points=False)
    plugins.hook_timeout = 0.3
    plugins.pm.register(ReadyHooks("print"), name="printer")
    plugins.program_ready(None, None)
    assert capfd.readouterr().out == ""
    plugins.pm.register(ReadyHooks("raise"), name="raiser")
    with pytest.raises(PluginError, match="'raiser' .*tsubaki_program_ready.* ValueError: cannot adjust"):
        plugins.program_ready(None, None)
    plugins.pm.unregister(name="raiser")
    hook = ReadyHooks("loop")
    hook.give_up = time.monotonic() + 1.5
    plugins.pm.register(hook, name="looper")
    with pytest.raises(PluginError, match="'looper' .*time limit"):
        plugins.program_ready(None, None)


def test_import_time_print_does_not_reach_stdout(tmp_path, monkeypatch, capfd):
    (tmp_path / "noisy_plugin_mod.py").write_text(
        "import os\nprint('import-time print')\nos.write(1, b'import-time fd 1\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint("noisy", "noisy_plugin_mod", "tsubaki_test_group")
    from tsubaki_forensics.plugin_system import manager

    # the manager's own entry-point scan (manager.entry_points), not importlib.metadata's
    monkeypatch.setattr(manager, "entry_points", lambda group: [ep] if group == "tsubaki_test_group" else [])
    plugins = Plugins.load(group="tsubaki_test_group")
    assert "noisy" in {i.name for i in plugins.plugins()}
    out, err = capfd.readouterr()
    assert out == "" and "import-time print" in err and "import-time fd 1" in err


def test_raising_renderer_is_one_line():
    from tsubaki_forensics.cli.analyze_commands import _render
    from tsubaki_forensics.plugin_system.specs import RendererSpec

    def bad(report, stream):
        raise AttributeError("no such field\nsecond line")

    with pytest.raises(PluginError, match=r"^renderer 'bad' \(plugin 'p'\) raised AttributeError: no such field$"):
        _render(RendererSpec("bad", bad, "bad", "p"), None)


class NoisyPlugin:
    @hookimpl
    def tsubaki_program_ready(self, prog, dump):
        print("noise from program_ready")

    @hookimpl
    def tsubaki_register_analyses(self, register):
        register("zz_loud", loud, "prints everywhere")


def test_real_analyze_json_stays_json(real_crash, tmp_path, capfd):
    from tsubaki_forensics.cli.app import main
    from tsubaki_forensics.plugin_system.manager import get_plugins, reset_plugins
    from tsubaki_forensics.vmcore.importer import import_vmcore

    tsd = tmp_path / "crash.tsd"
    import_vmcore(real_crash.vmcore, tsd)
    reset_plugins()
    try:
        get_plugins().pm.register(NoisyPlugin(), name="noisy-test-plugin")
        capfd.readouterr()
        rc = main(["analyze", str(tsd), "--vmlinux", str(real_crash.vmlinux), "--format", "json",
                   "--only", "zz_loud,dmesg"])
        out, err = capfd.readouterr()
        doc = json.loads(out)  # exactly one JSON document: nothing else reached stdout
        assert rc == 0, err
        assert {r["name"]: r["status"] for r in doc["analyses"]} == {"zz_loud": "ok", "dmesg": "ok"}
        assert "noise from program_ready" in err and "fd 1 from a plugin" in err
    finally:
        reset_plugins()
