"""How tests run the command line as a user would: this interpreter's own console script.

Never ``shutil.which``: on a machine with another installation on PATH that
would test some other copy of the code.
"""

import subprocess
import sys
from pathlib import Path

__all__ = ["CLI", "run_cli"]

_script = Path(sys.executable).parent / "tsubaki-forensics"
CLI: list[str] = [str(_script)] if _script.is_file() else [sys.executable, "-m", "tsubaki_forensics.cli.app"]


def run_cli(*args, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the console script as a user would: never a traceback, exit 0 unless ``ok=False``."""
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc
