"""The shipped sample (samples/lab-oom.tsd) analysed as a fresh install would: no vmlinux.

Not ``realkernel``: the sample is in the repository, so these run everywhere.
The CLI runs in a subprocess with the crash lab's cache, ``$HOME`` and
``$XDG_CACHE_HOME`` pointed at empty directories (and, where ``unshare -n``
works, without a network), so nothing but the dump itself is available.
Every result is checked against the ground truth the lab computed when the
sample was made (plain drgn + the DWARF vmlinux, stored beside the sample),
modulo what BTF cannot give (docs/SELFCONTAINED.md): inline frames, GCC's
``.cold``/``.constprop`` suffixes, assembly named after its nearest label.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _cli import CLI

from tsubaki_forensics.selfcontained.verify import base_name, observe
from tsubaki_forensics.testing import SAMPLE_NAME

REPO = Path(__file__).resolve().parents[1]
LIMIT = 25 * 1000 * 1000  # bytes a sample may take in the repository


def _cli() -> list[str]:
    return list(CLI)


def _no_network() -> list[str]:
    """``unshare -n`` where it works (root or user namespaces), else nothing."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory) -> dict[str, str]:
    """An environment that hides every cache and debug file this machine has."""
    empty = tmp_path_factory.mktemp("no-cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUBAKI_")}
    env.update(HOME=str(empty), XDG_CACHE_HOME=str(empty), TSUBAKI_CACHE_DIR=str(empty))
    return env


@pytest.fixture(scope="module")
def analyzed(tsubaki_sample_path, tsubaki_sample_truth, bare_env) -> dict:
    """``tsubaki-forensics analyze SAMPLE --format json``, as on a bare machine."""
    from tsubaki_forensics.drgn_bridge.debuginfo import candidate_paths

    if candidate_paths(tsubaki_sample_truth["build_id"], tsubaki_sample_truth["kernel_release"]):
        pytest.skip("this machine has the sample kernel's vmlinux installed: cannot test the no-vmlinux path")
    run = subprocess.run([*_no_network(), *_cli(), "analyze", str(tsubaki_sample_path), "--format", "json"],
                         env=bare_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _analysis(report: dict, name: str) -> dict:
    (found,) = [a for a in report["analyses"] if a["name"] == name]
    assert found["status"] == "ok", found
    return found


def _rows(analysis: dict, table: str) -> list[dict]:
    (t,) = [t for t in analysis["tables"] if t["name"] == table]
    return t["rows"]  # schema 2: rows are objects keyed by column name


def _same_function(selfcontained: str, dwarf: str) -> bool:
    """Names of one real frame: kallsyms keeps GCC's suffixes and names assembly after
    its nearest label (``entry_SYSCALL_64_after_hwframe`` inside ``entry_SYSCALL_64``)."""
    name, dwarf = base_name(selfcontained), base_name(dwarf)
    return name == dwarf or name.startswith(dwarf + "_")


def _check_frames(rows: list[dict], real: list[dict]) -> None:
    """Frame by frame: the pc DWARF unwound, a name of the same function, nothing guessed."""
    assert [r["pc"] for r in rows] == [f"{f['pc']:#x}" for f in real]  # addresses are "0x..." strings
    for row, frame in zip(rows, real):
        assert _same_function(row["function"], frame["function"]), (row, frame)
        assert row["file"] is None and row["line"] is None and row["inline"] is False  # BTF has no lines


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(name == other for other in it) for name in short)


def test_sample_is_small_complete_and_sound(tsubaki_sample_path, tsubaki_sample_dump, tsubaki_sample_truth):
    assert tsubaki_sample_path.name == f"{SAMPLE_NAME}.tsd"
    size = tsubaki_sample_path.stat().st_size
    assert size <= LIMIT
    assert size == tsubaki_sample_truth["sample"]["dump_bytes"]  # the ground truth is of this very file
    props = tsubaki_sample_dump.properties
    assert props["collect.policy"] == "tsubaki-triage" and props["lab.scenario"] == "oom"
    memory = tsubaki_sample_dump.memory
    assert memory.missing_ranges() == [] and tsubaki_sample_dump.problems == []
    assert memory.present_bytes == int(props["collect.memory_bytes"])  # a full dump: BTF, kallsyms, ORC inside
    run = subprocess.run([*_cli(), "verify", str(tsubaki_sample_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_analyze_finds_no_vmlinux_and_says_so(analyzed, tsubaki_sample_truth):
    dump = analyzed["dump"]
    assert dump["vmlinux"] is None
    assert dump["kernel_release"] == tsubaki_sample_truth["kernel_release"]
    assert dump["build_id"] == tsubaki_sample_truth["build_id"]
    assert dump["problems"] == []
    warnings = "\n".join(analyzed["warnings"])
    assert "self-contained: no vmlinux" in warnings
    assert "no source file:line" in warnings and "no inline frames" in warnings
    for analysis in analyzed["analyses"]:
        assert analysis["status"] == "ok", analysis["name"]
        assert all(c["complete"] for c in analysis["completeness"]), analysis["name"]


def test_tasks_equal_ground_truth(analyzed, tsubaki_sample_truth):
    tasks = _analysis(analyzed, "tasks")
    got = sorted((r["pid"], r["ppid"], r["comm"], r["state"], r["cpu"], r["on_cpu"]) for r in _rows(tasks, "tasks"))
    want = sorted((t["pid"], t["ppid"], t["comm"], t["state"], t["cpu"], t["on_cpu"])
                  for t in tsubaki_sample_truth["tasks"])
    assert got == want
    assert tasks["facts"]["crashed_pid"] == tsubaki_sample_truth["crashed_pid"]


def test_dmesg_equals_ground_truth(analyzed, tsubaki_sample_truth):
    rows = _rows(_analysis(analyzed, "dmesg"), "log")
    truth = tsubaki_sample_truth["dmesg"]
    assert [(r["level"], r["text"]) for r in rows] == [(d["level"], d["text"]) for d in truth]
    assert [r["time"] for r in rows] == pytest.approx([d["time"] for d in truth], abs=1e-6)


def test_panic_and_backtraces_equal_ground_truth(analyzed, tsubaki_sample_truth):
    panic = _analysis(analyzed, "panic")
    truth = tsubaki_sample_truth
    assert panic["facts"]["panic_message"] == "Kernel panic - not syncing: " + truth["panic_message"]
    assert panic["facts"]["crashed_pid"] == truth["crashed_pid"]
    assert panic["facts"]["panicking_cpu"] == truth["crashed_cpu"]
    real = truth["sample"]["dwarf_real_frames"]
    crashed = _rows(panic, "backtrace")
    _check_frames(crashed, real["backtrace"])
    # and, against the lab's names (which include inline frames), the same order
    names = [f["function"] for f in real["backtrace"]]
    assert _is_subsequence(names, truth["backtrace"])
    assert {"panic", "out_of_memory", "do_syscall_64"} <= {base_name(r["function"]) for r in crashed}
    assert set(real["cpu_backtraces"]) == set(truth["cpu_backtraces"])
    for cpu, frames in real["cpu_backtraces"].items():
        _check_frames(_rows(panic, f"cpu{cpu}"), frames)
        assert _is_subsequence([f["function"] for f in frames], truth["cpu_backtraces"][cpu])


def test_text_output_on_a_bare_machine(tsubaki_sample_path, tsubaki_sample_truth, bare_env):
    run = subprocess.run([*_no_network(), *_cli(), "analyze", str(tsubaki_sample_path), "--only", "panic"],
                         env=bare_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert tsubaki_sample_truth["panic_message"] in run.stdout
    assert "self-contained" in run.stderr


def test_fixture_program_reads_what_plain_drgn_read(tsubaki_sample_program, tsubaki_sample_truth):
    """The pytest11 fixture: drgn's helpers on the self-contained program give the ground truth."""
    assert tsubaki_sample_program.vmlinux is None and tsubaki_sample_program.debug_info.kind == "btf"
    seen = observe(tsubaki_sample_program.prog)
    truth = tsubaki_sample_truth
    for key in ("kernel_release", "crashed_cpu", "crashed_pid", "tasks", "dmesg"):
        assert seen[key] == truth[key], key
    real = [f["function"] for f in truth["sample"]["dwarf_real_frames"]["backtrace"]]
    assert len(seen["backtrace"]) == len(real)
    assert all(_same_function(s, d) for s, d in zip(seen["backtrace"], real)), (seen["backtrace"], real)


def test_fixture_runs_a_plugin_analysis(tsubaki_sample_run_analysis, tsubaki_sample_truth):
    result = tsubaki_sample_run_analysis("tasks")
    assert result.status.value == "ok"
    assert result.fact("tasks") == len(tsubaki_sample_truth["tasks"])
