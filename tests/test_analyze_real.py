"""analyze on a real crashed Debian kernel: same tasks, log lines and frames as plain drgn (ground truth)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _analysis import analyze_file, result_named

from tsubaki_forensics.analysis import Status
from tsubaki_forensics.lab import get_scenario
from tsubaki_forensics.lab.ground_truth import panic_callers, panic_entry
from tsubaki_forensics.vmcore.importer import import_vmcore

pytestmark = pytest.mark.realkernel

CLI = [sys.executable, "-m", "tsubaki_forensics.cli.app"]
#: every bundled analysis (a default run runs them all)
BUNDLED = ("sys", "tasks", "dmesg", "panic", "blocked", "runq", "memory", "modules")


@pytest.fixture(scope="module")
def real_tsd(real_crash, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("real") / "crash.tsd"
    import_vmcore(real_crash.vmcore, path)
    return path


@pytest.fixture(scope="module")
def report(real_tsd, real_crash):
    return analyze_file(real_tsd, real_crash.vmlinux, ["tasks", "dmesg", "panic"])


def test_every_analysis_is_complete(report, real_crash):
    assert [(r.name, r.status) for r in report.results] == [
        ("tasks", Status.OK), ("dmesg", Status.OK), ("panic", Status.OK)
    ]
    gt = real_crash.ground_truth
    assert (report.dump.kernel_release, report.dump.build_id) == (gt["kernel_release"], gt["build_id"])
    assert report.dump.registers


def test_tasks_match_ground_truth(report, real_crash):
    gt = real_crash.ground_truth
    result = result_named(report, "tasks")
    rows = result.table("tasks").dicts()
    ours = [{k: r[k] for k in ("pid", "ppid", "comm", "state", "cpu", "on_cpu")} for r in rows]
    assert ours == sorted(gt["tasks"], key=lambda t: t["pid"])
    assert [r["pid"] for r in rows if r["crashed"]] == [gt["crashed_pid"]]
    cpus = {r["cpu"]: r for r in result.table("cpus").dicts()}
    assert cpus[gt["crashed_cpu"]]["pid"] == gt["crashed_pid"] and cpus[gt["crashed_cpu"]]["crashed"]
    assert result.completeness[0].summary() == f"tasks: {len(gt['tasks'])} of {len(gt['tasks'])} readable"


def test_dmesg_matches_ground_truth(report, real_crash):
    rows = result_named(report, "dmesg").table("log").dicts()
    assert [{"time": r["time"], "level": r["level"], "text": r["text"]} for r in rows] == real_crash.ground_truth["dmesg"]


def test_panic_matches_ground_truth(report, real_crash):
    gt = real_crash.ground_truth
    result = result_named(report, "panic")
    assert result.fact("panic message") == "Kernel panic - not syncing: " + gt["panic_message"]
    assert result.fact("panicking CPU") == gt["crashed_cpu"]
    assert result.fact("crashed pid") == gt["crashed_pid"]
    frames = result.table("backtrace").dicts()
    assert [f["function"] for f in frames] == gt["backtrace"]
    assert all(f["pc"] >= 0xFFFF800000000000 for f in frames)  # nothing past the kernel entry
    real = [f for f in frames if not f["inline"]]
    assert all(f["symbol"] and isinstance(f["offset"], int) for f in real)  # function+offset
    with_source = [f for f in frames if f["file"]]
    assert len(with_source) >= len(frames) - 1 and all(f["line"] > 0 for f in with_source)  # module frames lack DWARF
    others = {t.name: [f["function"] for f in t.dicts()] for t in result.tables
              if t.name != "backtrace" and not t.name.endswith("_registers")}  # exception frames' registers
    assert others == {f"cpu{cpu}": names for cpu, names in gt["cpu_backtraces"].items()}


def _cli(*args, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kw)


def test_cli_analyze_json(real_tsd, real_crash):
    run = _cli("analyze", real_tsd, "--vmlinux", real_crash.vmlinux, "--format", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["schema_version"] == 2
    assert {a["name"]: a["status"] for a in doc["analyses"]} == dict.fromkeys(BUNDLED, "ok")
    assert "running panic" in run.stderr  # progress on stderr, data on stdout


def test_cli_only_exclude_tail(real_tsd, real_crash):
    run = _cli("analyze", real_tsd, "--vmlinux", real_crash.vmlinux, "--only", "dmesg", "--tail", "3", "--format", "json")
    assert run.returncode == 0, run.stderr
    (dmesg,) = json.loads(run.stdout)["analyses"]
    assert [row["text"] for row in dmesg["tables"][0]["rows"]] == [d["text"] for d in real_crash.ground_truth["dmesg"][-3:]]
    others = ",".join(name for name in BUNDLED if name != "panic")
    run = _cli("analyze", real_tsd, "--vmlinux", real_crash.vmlinux, "--exclude", others, "--format", "json")
    assert [a["name"] for a in json.loads(run.stdout)["analyses"]] == ["panic"]


def test_cli_text_reads_like_crash(real_tsd, real_crash):
    gt = real_crash.ground_truth
    run = _cli("analyze", real_tsd, "--vmlinux", real_crash.vmlinux)
    assert run.returncode == 0, run.stderr
    assert f"   RELEASE: {gt['kernel_release']}" in run.stdout
    assert f"panic message: Kernel panic - not syncing: {gt['panic_message']}" in run.stdout
    assert f"{panic_callers(gt['backtrace'])[0]}+0x" in run.stdout  # what called panic, per the ground truth
    assert "drivers/tty/sysrq.c: " in run.stdout


def test_vmlinux_found_by_build_id_without_option(real_tsd, real_crash):
    run = _cli("analyze", real_tsd, "--only", "tasks", "--format", "json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["dump"]["vmlinux"] == str(real_crash.vmlinux)


def test_debug_dir_option(real_tsd, real_crash, tmp_path):
    build_id = real_crash.ground_truth["build_id"]
    link = tmp_path / "dbg" / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    link.parent.mkdir(parents=True)
    link.symlink_to(real_crash.vmlinux)
    import os

    env = {**os.environ, "TSUBAKI_CACHE_DIR": str(tmp_path / "empty-cache")}  # hide the lab's cache
    # No vmlinux anywhere: the dump describes itself (BTF, kallsyms, ORC) and says so.
    run = _cli("analyze", real_tsd, "--only", "tasks", "--format", "json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["dump"]["vmlinux"] is None
    assert "self-contained: no vmlinux" in run.stderr
    run = _cli("analyze", real_tsd, "--debug-dir", tmp_path / "dbg", "--only", "tasks", "--format", "json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["dump"]["vmlinux"] is not None
    assert "self-contained" not in run.stderr


def test_mismatched_vmlinux_is_one_line_naming_what_is_needed(real_tsd, real_crash):
    gt = real_crash.ground_truth
    run = _cli("analyze", real_tsd, "--vmlinux", "/bin/true")
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: --vmlinux /bin/true has build id ")
    assert f"needs build id {gt['build_id']}, kernel {gt['kernel_release']}" in line
    assert "Traceback" not in run.stderr


def test_missing_dump_file_is_one_line(tmp_path):
    run = _cli("analyze", tmp_path / "nope.tsd")
    assert run.returncode == 1 and run.stderr.strip().endswith("nope.tsd: no such file")


def test_shell_has_prog_and_drgn_commands(real_tsd, real_crash):
    script = (
        "print('REL', prog['UTS_RELEASE'].string_().decode())\n"
        "print('BT', [f.name for f in prog.crashed_thread().stack_trace()][3])\n"
        "print('TASKS', sum(1 for _ in for_each_task(prog)))\n"
        "%crash bt\n"
    )
    run = _cli("shell", real_tsd, "--vmlinux", real_crash.vmlinux, input=script)
    gt = real_crash.ground_truth
    assert f"REL {gt['kernel_release']}" in run.stdout, run.stderr
    assert f"BT {gt['backtrace'][3]}" in run.stdout
    assert f"TASKS {len(gt['tasks'])}" in run.stdout
    # drgn's crash commands: the crashed task and what called panic (from the ground truth, not a name)
    assert f"PID: {gt['crashed_pid']}" in run.stdout and panic_callers(gt["backtrace"])[0] in run.stdout


def test_testing_plugin_fixtures(tsubaki_run_analysis, tsubaki_program, real_crash):
    """The pytest11 fixtures give third-party authors the same answers."""
    assert tsubaki_program.info.build_id == real_crash.ground_truth["build_id"]
    result = tsubaki_run_analysis("tasks")
    assert result.status is Status.OK
    assert len(result.table("tasks").rows) == len(real_crash.ground_truth["tasks"])


def test_vmlinux_found_in_a_debug_directory_by_build_id(real_tsd, real_crash, tmp_path):
    from tsubaki_forensics.drgn_bridge import program_from_dump
    from tsubaki_forensics.tsd import open_dump

    build_id = real_crash.ground_truth["build_id"]
    link = tmp_path / "debug" / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    link.parent.mkdir(parents=True)
    link.symlink_to(real_crash.vmlinux)
    with open_dump([real_tsd]) as dump:
        bridged = program_from_dump(dump, debug_dirs=[tmp_path / "debug"])
        assert bridged.vmlinux.resolve() == link.resolve()  # drgn reports the real path
        assert bridged.prog["init_uts_ns"].name.release.string_().decode() == real_crash.ground_truth["kernel_release"]


def test_debug_info_chain_goes_on_after_a_file_that_does_not_match(real_tsd, real_crash, tmp_path):
    """A wrong vmlinux found first is passed over; the next provider's (the crash lab's) is loaded."""
    from tsubaki_forensics.drgn_bridge.chain import attach_debug_info
    from tsubaki_forensics.drgn_bridge.debuginfo import VmlinuxFiles
    from tsubaki_forensics.drgn_bridge import program_from_dump
    from tsubaki_forensics.lab.provider import LabKernels
    from tsubaki_forensics.tsd import open_dump

    wrong = tmp_path / "debug" / "vmlinux"  # an ELF file of no kernel: drgn ignores it
    wrong.parent.mkdir()
    wrong.symlink_to(sys.executable)
    with open_dump([real_tsd]) as dump:
        built = program_from_dump(dump, debug_info=False)
        report = attach_debug_info(built.prog, dump, built.info, [LabKernels(), VmlinuxFiles()],
                                   search_paths=[tmp_path / "debug"])
        assert report.provider == "lab-kernels" and report.vmlinux.resolve() == Path(real_crash.vmlinux).resolve()
        assert built.prog["init_uts_ns"].name.release.string_().decode() == real_crash.ground_truth["kernel_release"]


def test_self_contained_without_vmlinux(real_tsd, real_crash):
    """--self-contained: types from the dump's own BTF; same tasks and log, limitations stated."""
    gt = real_crash.ground_truth
    run = _cli("analyze", real_tsd, "--self-contained", "--format", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["dump"]["vmlinux"] is None
    assert any("BTF" in w for w in doc["warnings"]) and "warning: limitation:" in run.stderr
    analyses = {a["name"]: a for a in doc["analyses"]}
    assert {n: a["status"] for n, a in analyses.items()} == dict.fromkeys(BUNDLED, "ok")
    tasks = analyses["tasks"]["tables"][0]
    ours = [{k: row[k] for k in ("pid", "ppid", "comm", "state", "cpu", "on_cpu")} for row in tasks["rows"]]
    assert ours == sorted(gt["tasks"], key=lambda t: t["pid"])
    log = analyses["dmesg"]["tables"][0]["rows"]
    assert [{"time": r["time"], "level": r["level"], "text": r["text"]} for r in log] == gt["dmesg"]
    frames = analyses["panic"]["tables"][0]["rows"]
    functions = [r["function"] for r in frames]
    # the panic path (found by property: panic, or vpanic since 6.12.118) and the scenario's promised frames
    assert panic_entry(functions) is not None, functions
    sysrq = get_scenario("sysrq")
    assert {sysrq.expected_frames[0], sysrq.expected_frames[-1]} <= set(functions), functions
    assert all(r["file"] is None for r in frames)  # no file:line without DWARF, none invented
    bad = _cli("analyze", real_tsd, "--self-contained", "--vmlinux", real_crash.vmlinux)
    assert bad.returncode == 1 and "exclude each other" in bad.stderr
