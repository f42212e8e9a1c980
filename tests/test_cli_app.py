"""The one error boundary of the CLI: usage errors and domain errors are one line, never a traceback."""

import subprocess
import sys

import pytest

from tsubaki_forensics.cli.app import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsubaki_forensics.cli.app", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args", [("nosuch",), ("lab", "crash"), ("inspect",)])
def test_usage_errors_exit_2_without_traceback(args):
    run = _run(*args)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "Error:" in run.stderr


def test_domain_error_is_one_line(tmp_path):
    run = _run("inspect", str(tmp_path / "missing.tsd"))
    assert run.returncode == 1
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert "Traceback" not in run.stderr


def test_typer_exit_code_is_returned(monkeypatch):
    # --help ends through typer/click's Exit(0): main() must return, not raise.
    assert main(["--help"]) == 0


# A process that runs ``analyze`` through main() without argv, as the console
# script does: it reports what its exit ran (an atexit handler, a __del__ at
# teardown) and the collector's state, on stderr.
_PROCESS = """
import atexit, gc, sys
from tsubaki_forensics.cli.app import main

class Teardown:
    def __del__(self):
        sys.stderr.write("teardown ran\\n")

kept = Teardown()

def report():
    sys.stderr.write(f"atexit ran gc={gc.isenabled()} frozen={gc.get_freeze_count() > 0}\\n")

atexit.register(report)
if sys.argv[1] == "--plugin-renderer":  # a renderer of a plugin, not of the core
    from tsubaki_forensics.plugin_system import hookimpl
    from tsubaki_forensics.plugin_system.manager import get_plugins

    class Renderer:
        @hookimpl
        def tsubaki_register_renderers(self, register):
            register("mine", lambda report, out: out.write("mine\\n"), "a plugin's format")

    get_plugins().pm.register(Renderer(), name="renderer-test-plugin")
    del sys.argv[1]
sys.argv = ["tsubaki-forensics", *sys.argv[1:]]
sys.exit(main(None if sys.argv[1] != "--in-process" else sys.argv[2:]))
"""


def test_analyze_as_the_process_ends_without_teardown(tsubaki_sample_path):
    """The output is whole and the exit code right; atexit handlers run; the heap is not torn down;
    the collector paused for the start-up is running again (and the start-up's objects frozen)."""
    run = subprocess.run([sys.executable, "-c", _PROCESS, "analyze", str(tsubaki_sample_path), "--format", "json", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 4), run.stderr
    import json

    assert json.loads(run.stdout)["schema_version"] == 2
    assert "atexit ran gc=True frozen=True" in run.stderr, run.stderr
    assert "teardown ran" not in run.stderr, run.stderr


def test_main_with_argv_returns_and_keeps_the_collector(tsubaki_sample_path):
    """Called with argv (tests, embedding code) main() returns normally: teardown runs, nothing is frozen."""
    run = subprocess.run([sys.executable, "-c", _PROCESS, "--in-process", "analyze", str(tsubaki_sample_path),
                          "--format", "json", "-q"], capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 4), run.stderr
    assert "atexit ran gc=True frozen=False" in run.stderr, run.stderr
    assert "teardown ran" in run.stderr, run.stderr


def test_other_commands_end_normally(tmp_path):
    """Only a command that allows it ends quickly: an error of ``inspect`` returns through the normal exit."""
    run = subprocess.run([sys.executable, "-c", _PROCESS, "inspect", str(tmp_path / "missing.tsd")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "teardown ran" in run.stderr and "atexit ran gc=True frozen=False" in run.stderr, run.stderr


def test_a_plugin_renderer_gets_the_normal_exit(tsubaki_sample_path):
    """A plugin's renderer may leave a file for the exit to flush: the process ends normally."""
    run = subprocess.run([sys.executable, "-c", _PROCESS, "--plugin-renderer", "analyze", str(tsubaki_sample_path),
                          "--format", "mine", "-q"], capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 4), run.stderr
    assert run.stdout == "mine\n"
    assert "teardown ran" in run.stderr, run.stderr


def test_import_as_the_process_ends_without_teardown_and_publishes_the_dump(tmp_path):
    """``import`` ends quickly once its .tsd is published: the file is whole (it reads back and
    verifies), atexit handlers ran, the heap was not torn down."""
    from test_vmcore_elf import qemu_style_elf, sample_notes

    from tsubaki_forensics.tsd import open_dump

    data = bytes(range(256)) * 64  # four 4 KiB pages, none zero
    elf, out = tmp_path / "in.elf", tmp_path / "out.tsd"
    qemu_style_elf(elf, [(0x100000, data)], sample_notes())
    run = subprocess.run([sys.executable, "-c", _PROCESS, "import", str(elf), "-o", str(out), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "atexit ran" in run.stderr and "teardown ran" not in run.stderr, run.stderr
    import json

    assert json.loads(run.stdout)["output"] == str(out)
    with open_dump(out) as dump:
        assert dump.memory.read(0x100000, len(data)) == data
        assert dump.completeness().complete
