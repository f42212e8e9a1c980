"""analyze's warm start: the guess from argv, and the rules that make a wrong guess harmless.

The real-kernel tests check the result: the same report with and without
the warm start, a program built for another vmlinux never used, and a
warm thread that imports nothing (imports on two threads can deadlock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsubaki_forensics.analysis import warmstart
from tsubaki_forensics.analysis.warmstart import Guess, guess


@pytest.fixture
def files(tmp_path):
    dump, second, vmlinux = tmp_path / "a.tsd", tmp_path / "b.tsd", tmp_path / "vmlinux"
    for p in (dump, second, vmlinux):
        p.write_bytes(b"x")
    return dump, second, vmlinux


def test_guess_plain_lines(files):
    dump, second, vmlinux = files
    assert guess(["analyze", str(dump)]) == Guess((dump,), None)
    assert guess(["analyze", str(dump), str(second), "--vmlinux", str(vmlinux)]) == Guess((dump, second), vmlinux)
    assert guess(["analyze", f"--vmlinux={vmlinux}", str(dump), "--format", "json", "--only", "tasks,panic",
                  "--tail=5", "--timeout", "10", "--strict", "--exclude", "dmesg"]) == Guess((dump,), vmlinux)


@pytest.mark.parametrize("extra", [
    ["--debug-dir", "/usr/lib/debug"],   # changes where the vmlinux comes from
    ["--self-contained"],                # changes how the program is built
    ["--disable", "tasks"],              # changes which plugins run
    ["--help"], ["-h"], ["--"], ["--unknown-option"],
    ["--format"],                        # a value option with no value
])
def test_guess_declines_anything_else(files, extra):
    dump, _, vmlinux = files
    assert guess(["analyze", str(dump), "--vmlinux", str(vmlinux), *extra]) is None


def test_guess_declines_other_commands_and_missing_files(files, tmp_path):
    dump, _, vmlinux = files
    assert guess([]) is None
    assert guess(["inspect", str(dump)]) is None
    assert guess(["analyze"]) is None
    assert guess(["analyze", str(tmp_path / "missing.tsd")]) is None
    assert guess(["analyze", str(dump), "--vmlinux", str(tmp_path / "missing")]) is None
    assert guess(["analyze", str(dump), "--vmlinux", str(vmlinux), "--vmlinux", str(vmlinux)]) is None


def test_start_respects_the_switch(files, monkeypatch):
    dump, _, _ = files
    monkeypatch.setenv(warmstart.ENV, "0")
    assert warmstart.start(["analyze", str(dump)]) is None


def test_a_failed_warm_start_is_dropped_silently(files):
    """The file is not a dump: the warm thread fails, take() gives nothing, no output."""
    dump, _, vmlinux = files
    warm = warmstart.start(["analyze", str(dump), "--vmlinux", str(vmlinux)])
    assert warm is not None
    warm.wait()
    assert warm.result is None and warm.error is not None
    from tsubaki_forensics.plugin_system import Plugins

    assert warmstart.take([dump], Plugins.load(entry_points=False), vmlinux=vmlinux, debug_dirs=None,
                          self_contained=False) is None


# -- on a real crash ----------------------------------------------------------

CLI = [sys.executable, "-m", "tsubaki_forensics.cli.app"]


@pytest.fixture(scope="module")
def real_tsd(real_crash, tmp_path_factory) -> Path:
    from tsubaki_forensics.vmcore.importer import import_vmcore

    path = tmp_path_factory.mktemp("warm") / "crash.tsd"
    import_vmcore(real_crash.vmcore, path)
    return path


def _analyze_json(real_tsd, vmlinux, **env) -> dict:
    proc = subprocess.run([*CLI, "analyze", str(real_tsd), "--vmlinux", str(vmlinux), "--format", "json"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for a in data["analyses"]:
        a.pop("seconds", None)
    return data


@pytest.mark.realkernel
def test_same_report_with_and_without_warm_start(real_tsd, real_crash):
    warm = _analyze_json(real_tsd, real_crash.vmlinux)
    cold = _analyze_json(real_tsd, real_crash.vmlinux, **{warmstart.ENV: "0"})
    assert [a["status"] for a in warm["analyses"]] == ["ok", "ok", "ok"]
    assert warm == cold


@pytest.mark.realkernel
def test_warm_program_is_used_only_for_the_same_command(real_tsd, real_crash, tmp_path):
    from tsubaki_forensics.plugin_system import Plugins

    plugins = Plugins.load()
    argv = ["analyze", str(real_tsd), "--vmlinux", str(real_crash.vmlinux), "--format", "json"]

    warm = warmstart.start(argv)
    assert warm is not None
    other = tmp_path / "other-vmlinux"
    other.write_bytes(b"")
    assert warmstart.take([real_tsd], plugins, vmlinux=other, debug_dirs=None, self_contained=False) is None
    assert warm.result is None  # discarded: its dump is closed

    warm = warmstart.start(argv)
    assert warmstart.take([real_tsd], plugins, vmlinux=real_crash.vmlinux, debug_dirs=None,
                          self_contained=True) is None

    warm = warmstart.start(argv)
    taken = warmstart.take([real_tsd], plugins, vmlinux=real_crash.vmlinux, debug_dirs=None, self_contained=False)
    assert taken is not None
    dump, program = taken
    try:
        assert program.vmlinux is not None
        assert program.prog["init_task"].comm.string_() == b"swapper/0"
    finally:
        dump.close()
    assert warmstart.take([real_tsd], plugins, vmlinux=real_crash.vmlinux, debug_dirs=None,
                          self_contained=False) is None  # taken once


@pytest.mark.realkernel
def test_a_third_party_reassembler_wins_over_the_guess(real_tsd, real_crash):
    from tsubaki_forensics.plugin_system import Plugins, hookimpl

    class Reassembler:
        @hookimpl
        def tsubaki_reassemble(self, paths):
            return None  # declines: the built-in still opens the dump

    plugins = Plugins.load()
    plugins.pm.register(Reassembler(), name="third-party-reassembler")
    warmstart.start(["analyze", str(real_tsd), "--vmlinux", str(real_crash.vmlinux)])
    assert warmstart.take([real_tsd], plugins, vmlinux=real_crash.vmlinux, debug_dirs=None,
                          self_contained=False) is None


@pytest.mark.realkernel
def test_the_warm_thread_imports_nothing(real_tsd, real_crash):
    """Every module it needs is imported before it starts (import locks, see warmstart)."""
    code = (
        "import sys, threading\n"
        "from tsubaki_forensics.analysis import warmstart\n"
        "seen = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if threading.current_thread().name == 'tsubaki-warmstart':\n"
        "            seen.append(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Spy())\n"
        "w = warmstart.start(sys.argv[1:])\n"
        "w.wait()\n"
        "assert w.error is None, repr(w.error)\n"
        "assert w.result is not None\n"
        "print(','.join(seen))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "analyze", str(real_tsd), "--vmlinux",
                           str(real_crash.vmlinux)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
