"""``tsubaki-forensics crash`` on the shipped sample: drgn's crash commands with no vmlinux.

Expected values come from the sample's ground truth (plain drgn with the
DWARF vmlinux on the original crash); the per-command run lists what fails
without a vmlinux, and every entry must be explained in docs/SELFCONTAINED.md.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest
from crash_probes import NO_PROBE, PROBES, probe_lines

from _cli import CLI
from tsubaki_forensics.analysis.crash import CommandFailure, CrashSession, command_lines
from tsubaki_forensics.selfcontained.verify import base_name

DOCS = Path(__file__).resolve().parent.parent / "docs" / "SELFCONTAINED.md"


@pytest.fixture(autouse=True, scope="module")
def _no_debug_info_on_this_machine(tmp_path_factory):
    """The sample is analysed as on a fresh install: no vmlinux in any cache.

    The crash lab may have cached the sample's own kernel (a run pinned to its
    release does), and analyze would then rightly find its vmlinux there.
    """
    empty = tmp_path_factory.mktemp("empty-home")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HOME", "XDG_CACHE_HOME", "TSUBAKI_CACHE_DIR"):
            mp.setenv(name, str(empty))
        yield


def _crash(sample: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "crash", str(sample), "-q", *args], input=stdin, capture_output=True, text=True,
                          timeout=300)


def _sys_fields(text: str) -> dict[str, str]:
    return {m["key"]: m["value"] for m in re.finditer(r"^\s*(?P<key>[A-Z][A-Z ]*): (?P<value>.*)$", text, re.M)}


def documented_failures() -> dict[str, str]:
    """The table of docs/SELFCONTAINED.md: crash command line -> why it fails without a vmlinux."""
    text = DOCS.read_text()
    section = text.split("## crash commands without a vmlinux", 1)[1].split("\n## ", 1)[0]
    return {m["command"]: m["why"] for m in re.finditer(r"^\| `(?P<command>[^`]+)` \| (?P<why>[^|]+)\|", section, re.M)}


def test_batch_sys_ps_log_match_ground_truth(tsubaki_sample_path, tsubaki_sample_truth):
    truth = tsubaki_sample_truth
    r = _crash(tsubaki_sample_path, "-c", "sys", "-c", "set", "-c", "ps", "-c", "log")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # -q: no warning lines
    fields = _sys_fields(r.stdout)
    assert fields["RELEASE"] == truth["kernel_release"]
    assert truth["panic_message"] in fields["PANIC"]
    assert int(fields["PID"]) == truth["crashed_pid"]
    rows = re.findall(r"^[> ]\s*(\d+)\s+(\d+)\s+(\d+)\s+([0-9a-f]{16})\s+(\S+)\s+[\d.]+\s+\d+\s+\d+\s+\[?(.*?)\]?$",
                      r.stdout, re.M)
    ps = {(int(pid), comm) for pid, _, _, _, _, comm in rows if int(pid) > 0}
    assert ps == {(t["pid"], t["comm"]) for t in truth["tasks"]}
    log = [line.split("] ", 1)[1] for line in r.stdout.splitlines() if re.match(r"^\[\s*\d+\.\d{6}\] ", line)]
    assert log == [m["text"].split("\n", 1)[0] for m in truth["dmesg"]]


def test_bt_is_the_crashed_thread_of_the_ground_truth(tsubaki_sample_path, tsubaki_sample_truth):
    truth = tsubaki_sample_truth
    r = _crash(tsubaki_sample_path, "-c", "bt")
    assert r.returncode == 0, r.stderr
    header = re.search(r"^PID: (\d+)\s+TASK: ([0-9a-f]+)\s+CPU: (\d+)", r.stdout, re.M)
    assert (int(header[1]), int(header[3])) == (truth["crashed_pid"], truth["crashed_cpu"])
    names = [base_name(n) for n in re.findall(r"^\s*#\d+ \[[0-9a-f]+\] (\S+) at [0-9a-f]+", r.stdout, re.M)]
    expected = [base_name(n) for n in truth["backtrace"]]
    known = [n for n in names if n in expected]
    # In the ground truth's order (it also has inline frames, which BTF cannot give) ...
    it = iter(expected)
    assert all(n in it for n in known), (names, expected)
    # ... and at most the entry code's kallsyms label named differently (docs/SELFCONTAINED.md).
    assert len(names) - len(known) <= 1, (names, expected)


def test_failed_command_is_one_error_line_and_exit_5_and_the_rest_runs(tsubaki_sample_path):
    r = _crash(tsubaki_sample_path, "-c", "no_such_command", "-c", "sys")
    assert r.returncode == 5
    assert r.stderr.splitlines() == ["error: no_such_command: command not found"]
    assert "RELEASE" in _sys_fields(r.stdout)


def test_input_file_and_stdin_run_the_same_commands_without_a_prompt(tsubaki_sample_path, tmp_path):
    direct = _crash(tsubaki_sample_path, "-c", "sys", "-c", "mod")
    assert direct.returncode == 0, direct.stderr
    commands = tmp_path / "cmds"
    commands.write_text("# a comment\nsys\n\n   mod  \n")
    from_file = _crash(tsubaki_sample_path, "-i", str(commands))
    from_stdin = _crash(tsubaki_sample_path, stdin="sys\nmod\n")
    assert from_file.stdout == direct.stdout and from_file.returncode == 0
    assert from_stdin.stdout == direct.stdout and from_stdin.returncode == 0
    assert "crash>" not in from_stdin.stdout + from_stdin.stderr


def test_bad_input_is_one_line(tsubaki_sample_path, tmp_path):
    r = _crash(tsubaki_sample_path, "-i", str(tmp_path / "missing"))
    assert r.returncode == 1 and r.stderr.splitlines() == [f"error: {tmp_path / 'missing'}: no such file"]
    r = subprocess.run([*CLI, "crash", str(tmp_path / "none.tsd"), "-c", "sys"], capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ")


def test_warnings_unless_quiet(tsubaki_sample_path):
    r = subprocess.run([*CLI, "crash", str(tsubaki_sample_path), "-c", "sym jiffies"], capture_output=True, text=True)
    assert r.returncode == 0
    assert any(line.startswith("warning: limitation:") for line in r.stderr.splitlines())


def test_command_lines_skip_blanks_and_comments():
    assert list(command_lines(["", "  # x", " bt -a ", "ps|grep UN"])) == ["bt -a", "ps|grep UN"]


def test_failure_message_is_one_line():
    assert CommandFailure("struct", ValueError("a\nb")).message() == "struct: ValueError: b"


def run_every_probe(prog) -> dict[str, str]:
    """Each probe of each enabled crash command: command line -> failure message (failures only)."""
    session = CrashSession(prog)
    names = session.names()
    assert set(names) - NO_PROBE <= set(PROBES), f"drgn has crash commands with no probe: {set(names) - set(PROBES) - NO_PROBE}"
    failed = {}
    for line in probe_lines(prog, names):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            failures = session.run(line)
        if failures:
            failed[line] = "; ".join(f.message() for f in failures)
        else:
            assert out.getvalue().strip(), f"{line}: printed nothing"
    return failed


def test_every_crash_command_without_vmlinux_fails_only_as_documented(tsubaki_sample_program):
    failed = run_every_probe(tsubaki_sample_program.prog)
    print("\n".join(f"{k}: {v}" for k, v in failed.items()))
    documented = documented_failures()
    undocumented = {k: v for k, v in failed.items() if k not in documented}
    assert not undocumented, f"crash commands failing without a vmlinux, not in docs/SELFCONTAINED.md: {undocumented}"


@pytest.mark.parametrize("line", sorted(documented_failures()))
def test_documented_failures_name_a_probe(line):
    assert any(line in p for ps in PROBES.values() for p in ps), f"{line}: documented but never run"


def test_analyze_ps_figures_equal_drgn_crash_ps(tsubaki_sample_path):
    """The tasks analysis's %MEM, VSZ, RSS and kernel-thread flag are those of drgn's own ``ps``."""
    import json

    ps = _crash(tsubaki_sample_path, "-c", "ps")
    assert ps.returncode == 0, ps.stderr
    theirs = {}
    for m in re.finditer(r"^[> ]\s*(\d+)\s+\d+\s+\d+\s+[0-9a-f]{16}\s+\S+\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(.*)$", ps.stdout, re.M):
        pid, mem, vsz, rss, comm = int(m[1]), float(m[2]), int(m[3]), int(m[4]), m[5]
        if pid:
            theirs[pid] = (mem, vsz, rss, comm.startswith("[") and comm.endswith("]"))
    run = subprocess.run([*CLI, "analyze", str(tsubaki_sample_path), "-q", "-f", "json", "--only", "tasks"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (tasks,) = json.loads(run.stdout)["analyses"]
    ours = {r["pid"]: (r["mem_percent"], r["vsz"], r["rss"], r["kthread"]) for r in tasks["tables"][0]["rows"]}
    assert ours == theirs
    assert any(m > 50 for m, *_ in ours.values())  # the OOM sample: one task holds most of memory


def test_analyze_text_is_in_crash_order(tsubaki_sample_path, tsubaki_sample_truth):
    run = subprocess.run([*CLI, "analyze", str(tsubaki_sample_path), "-q"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert text.index("== sys") < text.index("== panic") < text.index("== tasks") < text.index("== dmesg")
    assert "    KERNEL: (no vmlinux: types from the dump's own BTF" in text  # not a bare '-'
    assert re.search(r"^       TAINT: ", text, re.M)
    pid = tsubaki_sample_truth["crashed_pid"]
    assert re.search(rf"^>\s+{pid}\s", text, re.M)  # crash's '>' on the task that was on a CPU
    log = [line for line in text.splitlines() if re.match(r"^\[\s*\d+\.\d{6}\] ", line)]
    assert len(log) == 50  # the tail; --full for all
    last = tsubaki_sample_truth["dmesg"][-1]["text"].split("\n")[0]
    assert log[-1].endswith(last)
    full = subprocess.run([*CLI, "analyze", str(tsubaki_sample_path), "-q", "--full", "--only", "dmesg"],
                          capture_output=True, text=True, timeout=300)
    assert sum(bool(re.match(r"^\[\s*\d+\.\d{6}\] ", line)) for line in full.stdout.splitlines()) == len(tsubaki_sample_truth["dmesg"])


def test_sys_analysis_equals_drgn_crash_sys(tsubaki_sample_path, tsubaki_sample_truth):
    """The ``sys`` analysis (first in analyze's text) gives drgn's own ``sys`` figures, and the taint."""
    import json

    r = _crash(tsubaki_sample_path, "-c", "sys", "-c", "set")
    theirs = {k: v.strip('"') for k, v in _sys_fields(r.stdout).items() if k not in ("KERNEL", "DUMPFILE")}
    run = subprocess.run([*CLI, "analyze", str(tsubaki_sample_path), "-q", "-f", "json", "--only", "sys"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (sys_,) = json.loads(run.stdout)["analyses"]
    facts = {k.upper().replace("_", " "): str(v) for k, v in sys_["facts"].items()}
    assert facts.pop("TAINT")  # crash's sys prints it only in KERNEL's [TAINTED]; we name the flags
    assert {k: v for k, v in facts.items() if k in theirs} == theirs
    assert set(theirs) <= set(facts)
    assert facts["RELEASE"] == tsubaki_sample_truth["kernel_release"] and int(facts["PID"]) == tsubaki_sample_truth["crashed_pid"]


def _bt_block(text: str, title_prefix: str) -> list[str]:
    """The lines of one backtrace in analyze's text, without ``+off/size`` (drgn's bt prints names only)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title_prefix)) + 1
    block = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("  ") and not line.startswith("    "):
            break
        block.append(re.sub(r"\+0x[0-9a-f]+(/0x[0-9a-f]+)? at ", " at ", line))
    return block


def test_analyze_bt_is_drgn_crash_bt(tsubaki_sample_path):
    """analyze's crashed-task backtrace: drgn's crash ``bt`` line for line (SP, PC, module, exception
    frames' registers, the user-space entry registers), plus crash's ``+off/size``."""
    ours = subprocess.run([*CLI, "analyze", str(tsubaki_sample_path), "-q", "--only", "panic"],
                          capture_output=True, text=True, timeout=300)
    theirs = _crash(tsubaki_sample_path, "-c", "bt")
    assert _bt_block(ours.stdout, "Backtrace of the crashed task") == theirs.stdout.splitlines()[1:]
    assert re.search(r"^ #0 \[[0-9a-f]{16}\] \S+\+0x[0-9a-f]+/0x[0-9a-f]+ at [0-9a-f]{16}", ours.stdout, re.M)
    assert "    RIP: " in ours.stdout
