"""Benchmark: command-line start-up, before (a git ref) and after, with Python's own floor, in the same run.

Why: start-up costs of tens of milliseconds drown in the noise of a shared
machine unless the old and the new command run interleaved.  The *before*
commands run the code of ``--ref`` (default ``main``) from a temporary git
worktree placed first on ``PYTHONPATH`` (same interpreter and packages);
the *after* commands run this checkout.  Both trees are byte-compiled first,
as ``pip install`` leaves an installed package (this matters where
``PYTHONDONTWRITEBYTECODE`` is set).  Floors: ``python -c pass`` and
``python -c "import typer.main"`` (what any typer command costs).

    python bench/startup_bench.py [--ref main] [--runs 15] [--out docs/benchmarks/startup.md]

Target (issue 21): ``--version`` and ``--help`` within 0.15 s wall.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analyze_bench import measure  # noqa: E402  (sibling script)
from machine_info import cpu_model  # noqa: E402

__all__ = ["main", "COMMANDS"]

ROOT = Path(__file__).resolve().parent.parent
#: The light command lines measured (each must exit 0).
COMMANDS = (["--version"], ["--help"], ["analyze", "--help"], ["import", "--help"], ["lab", "crash", "--help"])
_SOURCES = ("tsubaki_forensics", "monitor_model", "plugins")


def _compile(tree: Path) -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(tree / s) for s in _SOURCES)],
                   check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main", help="git ref of the 'before' code")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "startup.md")
    args = ap.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="tsubaki-startup-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.ref], check=True)
        try:
            rev = subprocess.run(["git", "-C", str(before), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, check=True).stdout.strip()
            _compile(before)
            _compile(ROOT)
            os.chdir(tmp)  # python -m puts the working directory first on sys.path: not this checkout
            env_before = dict(os.environ, PYTHONPATH=os.pathsep.join([str(before), str(before / "plugins")]))
            cli = [py, "-m", "tsubaki_forensics.cli.app"]
            runs: dict[str, tuple[list[str], dict | None]] = {
                "python -c pass": ([py, "-c", "pass"], None),
                "python -c 'import typer.main'": ([py, "-c", "import typer.main"], None),
            }
            for c in COMMANDS:
                runs[f"{' '.join(c)} (before)"] = ([*cli, *c], env_before)
                runs[f"{' '.join(c)} (after)"] = ([*cli, *c], None)
            for argv_, env in runs.values():  # warm-up, and every command must work
                measure(argv_, env=env)
            rows: dict[str, list] = {k: [] for k in runs}
            for _ in range(args.runs):
                for name, (argv_, env) in runs.items():
                    rows[name].append(measure(argv_, env=env))
        finally:
            os.chdir(ROOT)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in rows.items()}
    load = os.getloadavg()[0]
    lines = [
        "# Benchmark: command-line start-up\n",
        f"Command: `python bench/startup_bench.py --ref {args.ref} --runs {args.runs}` (whole processes, "
        f"interleaved, {args.runs} runs each after one warm-up; medians). Before: `{args.ref}` at {rev}; "
        "after: this checkout. Both byte-compiled.\n",
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Linux {platform.release()}; load average at the end {load:.2f} (shared machine: wall times "
        "under load are inflated, CPU times much less)",
        "- Target (issue 21): `--version` and `--help` within 0.15 s wall.\n",
        "| command | wall s | CPU s | peak RSS MiB | wall after / before |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (wall, rss, cpu) in med.items():
        ratio = ""
        if name.endswith("(after)"):
            ratio = f"{wall / med[name.replace('(after)', '(before)')][0]:.2f}x"
        lines.append(f"| `{name}` | {wall:.3f} | {cpu:.3f} | {rss / 2**20:.0f} | {ratio} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
