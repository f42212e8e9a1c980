"""Benchmark: ``analyze`` start-up before/after a CLI change, with plain drgn, in the same run.

Why: start-up costs of tens of milliseconds drown in the noise of a shared
machine unless the old and the new command run interleaved.  The *before*
command is ``cli/app.py`` as committed at ``--ref`` (default HEAD), executed
inside today's ``tsubaki_forensics.cli`` package (so only the app module
differs), next to the current command and ``bench/analyze_peer.py``.

    python bench/startup_bench.py [--ref HEAD] [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analyze_bench import measure  # sibling script

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
_RUN_OLD = (
    "import sys, types, tsubaki_forensics.cli as pkg\n"
    "mod = types.ModuleType('tsubaki_forensics.cli._before_app')\n"
    "mod.__package__ = 'tsubaki_forensics.cli'\n"
    "sys.modules[mod.__name__] = mod\n"
    "exec(compile(open(sys.argv.pop(1)).read(), 'app.py@ref', 'exec'), mod.__dict__)\n"
    "sys.exit(mod.main(sys.argv[1:]))\n"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="HEAD", help="git ref of the 'before' cli/app.py")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args(argv)
    from tsubaki_forensics.lab import cached_crash
    from tsubaki_forensics.vmcore.importer import import_vmcore

    crash = cached_crash()
    old = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.ref}:tsubaki_forensics/cli/app.py"],
                         capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tsd, old_app = Path(tmp) / "crash.tsd", Path(tmp) / "app_before.py"
        old_app.write_text(old)
        import_vmcore(crash.vmcore, tsd)
        tail = ["analyze", str(tsd), "--vmlinux", str(crash.vmlinux), "--format", "json"]
        cmds = {
            "after": [sys.executable, "-m", "tsubaki_forensics.cli.app", *tail],
            "before": [sys.executable, "-c", _RUN_OLD, str(old_app), *tail],
            "peer": [sys.executable, str(ROOT / "bench" / "analyze_peer.py"), str(crash.vmcore), str(crash.vmlinux)],
            "help (after)": [sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", "--help"],
            "help (before)": [sys.executable, "-c", _RUN_OLD, str(old_app), "analyze", "--help"],
        }
        for argv_ in cmds.values():
            measure(argv_)
        rows: dict[str, list] = {k: [] for k in cmds}
        for _ in range(args.runs):
            for name, argv_ in cmds.items():
                rows[name].append(measure(argv_))
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in rows.items()}
    print(f"# analyze start-up, before ({args.ref}) vs after, {args.runs} interleaved runs, medians; "
          f"load {os.getloadavg()[0]:.2f}")
    print("| command | wall s | CPU s | peak RSS MiB | wall / peer | CPU / peer |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (wall, rss, cpu) in med.items():
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {rss / 2**20:.0f} | {wall / med['peer'][0]:.2f}x | {cpu / med['peer'][2]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
