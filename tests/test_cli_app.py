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
