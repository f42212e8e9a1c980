"""How tests run the command line as a user would: this interpreter's own console script.

Never ``shutil.which``: on a machine with another installation on PATH that
would test some other copy of the code.
"""

import sys
from pathlib import Path

__all__ = ["CLI"]

_script = Path(sys.executable).parent / "tsubaki-forensics"
CLI: list[str] = [str(_script)] if _script.is_file() else [sys.executable, "-m", "tsubaki_forensics.cli.app"]
