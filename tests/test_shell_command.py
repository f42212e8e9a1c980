"""``shell`` off a terminal on the shipped sample: ``-e CODE``, a script, statements on stdin.

As ``drgn -e`` / ``drgn script.py`` behave: ``sys.argv``, ``prog`` (and our
``dump``), no ``>>>`` prompt when stdin is not a terminal, exit 1 after an
uncaught exception, the script's own ``SystemExit`` code.
"""

from __future__ import annotations

import subprocess

from _cli import CLI


def _shell(sample, *args, stdin=""):
    return subprocess.run([*CLI, "shell", str(sample), "--self-contained", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_exec_code_with_arguments(tsubaki_sample_path, tsubaki_sample_truth):
    r = _shell(tsubaki_sample_path, "-e", "import sys; print(prog['init_uts_ns'].name.release.string_().decode(), sys.argv)",
               "a", "b")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{tsubaki_sample_truth['kernel_release']} ['-e', 'a', 'b']\n"


def test_script_with_arguments_and_its_exception(tsubaki_sample_path, tsubaki_sample_truth, tmp_path):
    script = tmp_path / "tasks.py"
    script.write_text(
        "import sys\n"
        "from drgn.helpers.linux.pid import for_each_task\n"
        "print(__name__, sys.argv[1:], dump.dump_id is not None)\n"
        "print(sorted(t.pid.value_() for t in for_each_task(prog)))\n"
        "if '--fail' in sys.argv:\n"
        "    raise ValueError('boom')\n"
    )
    r = _shell(tsubaki_sample_path, script, "x", "--", "--verbose")
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert first == "__main__ ['x', '--verbose'] True"
    assert eval(second) == sorted(t["pid"] for t in tsubaki_sample_truth["tasks"])
    r = _shell(tsubaki_sample_path, script, "--", "--fail")
    assert r.returncode == 1
    assert r.stdout.startswith("__main__ ['--fail'] True\n")
    assert r.stderr.splitlines()[-1] == "ValueError: boom"
    assert f'File "{script}", line 6' in r.stderr and "runpy" not in r.stderr


def test_piped_statements_have_no_prompt_and_fail_with_exit_1(tsubaki_sample_path, tsubaki_sample_truth):
    stdin = "prog['init_uts_ns'].name.release.string_()\n%crash sym jiffies\n1/0\nprint('after')\n"
    r = _shell(tsubaki_sample_path, stdin=stdin)
    assert ">>>" not in r.stdout + r.stderr and "..." not in r.stdout
    lines = r.stdout.splitlines()
    assert lines[0] == repr(tsubaki_sample_truth["kernel_release"].encode())
    assert lines[1].endswith(" jiffies") and lines[2] == "after"
    assert "ZeroDivisionError" in r.stderr
    assert r.returncode == 1
    ok = _shell(tsubaki_sample_path, stdin="x = 1\nprint(x + 1)\n")
    assert (ok.returncode, ok.stdout) == (0, "2\n")


def test_system_exit_code_and_bad_script(tsubaki_sample_path, tmp_path):
    assert _shell(tsubaki_sample_path, "-e", "raise SystemExit(3)").returncode == 3
    r = _shell(tsubaki_sample_path, tmp_path / "missing.py")
    assert r.returncode == 1 and r.stderr.splitlines()[-1] == f"error: {tmp_path / 'missing.py'}: no such script"
    assert "Traceback" not in r.stderr


def test_user_code_runs_with_the_garbage_collector(tsubaki_sample_path):
    """The start-up runs without the cyclic collector (cli/app.py); the user's code gets it back."""
    r = _shell(tsubaki_sample_path, "-e", "import gc; print(gc.isenabled(), gc.get_freeze_count() > 0)")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "True True\n"
