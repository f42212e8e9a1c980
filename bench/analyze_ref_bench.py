"""Benchmark: ``analyze`` of this checkout against an earlier commit, same dump, interleaved.

For a change to the bundled analyses (issue 19 added %MEM/VSZ/RSS to
``tasks`` and SP/size/module to ``panic``): the earlier commit is extracted
with ``git archive`` and run from its own source tree (core and plugins),
both with this venv's drgn.  Each run is a whole process
(``analyze DUMP --vmlinux V --format json``); reported are medians of the
wall time, the child's CPU time (less sensitive to a shared machine's
load) and each analysis's own ``seconds`` from the JSON.

    python bench/analyze_ref_bench.py --ref ad1d57a [--runs 7] [--tsd T --vmlinux V] [--out FILE]

Without --tsd the crash lab's default crash (sysrq, 512M, 2 vCPUs, 6.1) is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["measure", "main"]

ROOT = Path(__file__).resolve().parent.parent


def measure(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, dict[str, float]]:
    """Wall s, the child's CPU s (user + system) and each analysis's own seconds, for one run."""
    before, start = os.times(), time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout
    wall, after = time.perf_counter() - start, os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, {a["name"]: a["seconds"] for a in json.loads(out)["analyses"]}


def _absent_plugins(tree: Path) -> list[str]:
    """Installed entry points (this checkout's) whose module the earlier tree does not have: disabled there."""
    from importlib.metadata import entry_points

    absent = []
    for ep in entry_points(group="tsubaki_forensics"):
        parts = ep.value.split(":")[0].split(".")
        if not any((tree / base / Path(*parts)).with_suffix(".py").exists() or (tree / base / Path(*parts)).is_dir()
                   for base in ("", "plugins")):
            absent.append(ep.name)
    return absent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="The earlier commit to compare with.")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--tsd", type=Path)
    ap.add_argument("--vmlinux", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tsd, vmlinux = args.tsd, args.vmlinux
        if tsd is None:
            from tsubaki_forensics.lab import cached_crash
            from tsubaki_forensics.vmcore.importer import import_vmcore

            crash = cached_crash()
            tsd, vmlinux = Path(tmp) / "crash.tsd", crash.vmlinux
            import_vmcore(crash.vmcore, tsd)
        old = Path(tmp) / "ref"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        cmd = [sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(tsd), "--vmlinux", str(vmlinux), "--format", "json"]
        envs = {
            "this checkout": (dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'plugins'}"), str(ROOT)),
            f"ref {args.ref}": (dict(os.environ, PYTHONPATH=f"{old}:{old / 'plugins'}",
                                     TSUBAKI_DISABLE_PLUGINS=",".join(_absent_plugins(old))), str(old)),
        }
        runs: dict[str, list] = {k: [] for k in envs}
        for _ in range(args.runs):
            for name, (env, cwd) in envs.items():
                runs[name].append(measure(cmd, env, cwd))
    # every analysis either side ran, in the order of the first run that has it ("-": not run)
    names = list(dict.fromkeys(a for rows in runs.values() for a in rows[0][2]))
    lines = [f"Command: `python bench/analyze_ref_bench.py --ref {args.ref} --runs {args.runs}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}); "
             f"`analyze {tsd.name} --vmlinux ... --format json`, medians of {args.runs} interleaved runs.", "",
             "| code | wall s | CPU s | " + " | ".join(f"{a} s" for a in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    medians = {}
    for name, rows in runs.items():
        med = lambda xs: statistics.median(xs)  # noqa: E731
        per = {a: f"{med([r[2][a] for r in rows]):.4f}" if a in rows[0][2] else "-" for a in names}
        medians[name] = (med([r[0] for r in rows]), med([r[1] for r in rows]))
        lines.append(f"| {name} | {medians[name][0]:.3f} | {medians[name][1]:.3f} | "
                     + " | ".join(per[a] for a in names) + " |")
    (new_wall, new_cpu), (old_wall, old_cpu) = medians.values()
    lines += ["", f"Ratio this/ref: wall {new_wall / old_wall:.3f}x, CPU {new_cpu / old_cpu:.3f}x."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
