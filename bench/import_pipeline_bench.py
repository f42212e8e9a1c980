"""Whole-process cost of ``tsubaki-forensics import`` against ``zstd -3 -T2`` and makedumpfile.

Why this shape (issue 21): the targets are ratios of whole processes on the
same file in the same run -- wall, CPU, minor page faults and peak RSS of
``tsubaki-forensics import`` (the CLI, start-up included) against
``zstd -3 -T2`` on the same ELF, and against ``makedumpfile -l -d 1`` on a
small crash (on our ``/proc/vmcore``-style copy: makedumpfile refuses QEMU's
ELF, so every tool of that crash reads the copy).  Every tool is a child under
GNU time (``%e %U %S %R %M``), page cache warm, in rotating order, ``--runs``
times; medians are reported.  ``--baseline REV`` also runs the import of an
older revision of the package (``git archive`` into a temporary directory,
first on ``PYTHONPATH``), so "before" and "after" share the run and its load.
A phase breakdown of one process says what part of a small import is Python
rather than work: the interpreter's start (spawn to first statement), the
CLI's modules (typer), the importer's, the import itself (opening, the
pipeline, close and its fsync), and the exit (last statement to the parent
seeing the process end: interpreter finalisation and the kernel's teardown),
medians over ``--runs``, at the default level and (``--small``) at level 1;
plus whether numpy was loaded.  A small input (``--small``) also
runs ``--level 1``, zstd's fast level beside makedumpfile's LZO (the default
is level 3, the one whose output stays below ``zstd -3``'s).  Both trees are
byte-compiled first (``compileall``), so no run pays for compiling modules.

    python bench/import_pipeline_bench.py --runs 5 --baseline c9ed92b \\
        --crash 6.12.118+deb12-cloud-amd64/sysrq-busy-2G-smp2 \\
        --crash 6.1.0-57-cloud-amd64/sysrq-busy-4G-smp2 \\
        --small 6.1.0-57-cloud-amd64/sysrq-idle-256M-smp1-ramfile

writes docs/benchmarks/import_pipeline.md (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_info import cpu_model

from tsubaki_forensics.tsd.writer import DEFAULT_LEVEL

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
CLI = "import sys; from tsubaki_forensics.cli.app import main; sys.argv[0] = 'tsubaki-forensics'; main()"
# Stamps are time.perf_counter() (CLOCK_MONOTONIC): the parent's and the child's compare.
BREAKDOWN = """import time; t0 = time.perf_counter()
import json, sys
import typer, tsubaki_forensics.cli.app, tsubaki_forensics.cli.root
t1 = time.perf_counter(); from tsubaki_forensics.vmcore.importer import import_vmcore
t2 = time.perf_counter(); import_vmcore(sys.argv[1], sys.argv[2], level=int(sys.argv[3]))
t3 = time.perf_counter()
print(json.dumps({"t0": t0, "cli": t1 - t0, "importer": t2 - t1, "work": t3 - t2, "t3": t3,
                  "numpy": "numpy" in sys.modules}))
"""
PHASES = ("start", "cli", "importer", "work", "exit")


def phases(src: Path, out: Path, level: int, cwd: Path) -> dict:
    """One child's phases (see BREAKDOWN), in seconds."""
    if out.exists():
        out.unlink()
    t_spawn = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", BREAKDOWN, str(src), str(out), str(level)],
                       capture_output=True, text=True, cwd=cwd, check=True)
    t_end = time.perf_counter()
    b = json.loads(p.stdout)
    return {"start": b["t0"] - t_spawn, "cli": b["cli"], "importer": b["importer"], "work": b["work"],
            "exit": t_end - b["t3"], "numpy": b["numpy"]}


def timed(cmd: list[str], out: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``cmd`` under GNU time: wall, user, sys, minor faults, peak RSS, output size."""
    if out.exists():
        out.unlink()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %R %M", "-o", tf.name, *cmd],
                              capture_output=True, env=env, cwd=cwd)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}): "
                             f"{proc.stderr.decode()[-400:]}")
        user, sys_, minflt, rss = tf.read().split()[-4:]
    return {"wall": wall, "user": float(user), "sys": float(sys_), "minflt": int(minflt),
            "rss_mib": int(rss) / 1024, "bytes": out.stat().st_size}


def baseline_tree(rev: str, tmp: Path, *paths: str) -> Path:
    """``paths`` of git revision ``rev`` extracted under ``tmp/baseline`` (put it first on
    ``PYTHONPATH`` to run that revision's package)."""
    base = tmp / "baseline"
    base.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *paths],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    return base


def compile_trees(trees: list[Path]) -> None:
    """Byte-compile each tree once: with PYTHONDONTWRITEBYTECODE set (or a fresh archive)
    every timed run would compile ~30 modules again, 0.03 s of CPU a user never pays."""
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True,
                       stdout=subprocess.DEVNULL)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def tools(src: Path, tmp: Path, base: Path | None, with_mdf: bool) -> dict[str, tuple[list[str], Path, dict | None]]:
    """name -> (command, output file, environment or None)."""
    py = sys.executable
    t: dict[str, tuple[list[str], Path, dict | None]] = {
        "tsubaki-forensics import": ([py, "-c", CLI, "import", str(src), "-o", str(tmp / "new.tsd"),
                                      "--force"], tmp / "new.tsd", None),
        "zstd -3 -T2": (["zstd", "-q", "-f", "-3", "-T2", str(src), "-o", str(tmp / "z3.zst")],
                        tmp / "z3.zst", None),
    }
    if base is not None:
        env = {**os.environ, "PYTHONPATH": str(base)}
        t["tsubaki-forensics import (baseline)"] = (
            [py, "-c", CLI, "import", str(src), "-o", str(tmp / "old.tsd"), "--force"], tmp / "old.tsd", env)
    if with_mdf:  # makedumpfile -l is LZO: our fast level beside the default (level 3)
        t["tsubaki-forensics import --level 1"] = (
            [py, "-c", CLI, "import", str(src), "-o", str(tmp / "l1.tsd"), "--force", "--level", "1"],
            tmp / "l1.tsd", None)
        if base is not None:
            t["tsubaki-forensics import --level 1 (baseline)"] = (
                [py, "-c", CLI, "import", str(src), "-o", str(tmp / "l1old.tsd"), "--force", "--level", "1"],
                tmp / "l1old.tsd", {**os.environ, "PYTHONPATH": str(base)})
        t["makedumpfile -l -d 1"] = (["makedumpfile", "-l", "-d", "1", str(src), str(tmp / "l.kd")],
                                     tmp / "l.kd", None)
    return t


def bench(label: str, src: Path, runs: int, tmp: Path, base: Path | None, with_mdf: bool) -> dict:
    table = tools(src, tmp, base, with_mdf)
    names = list(table)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            cmd, out, env = table[name]
            warm(src)
            results[name].append(timed(cmd, out, env, cwd=tmp))
            out.unlink()
        sys.stderr.write(f"  {label}: round {r + 1}/{runs}\n")
    levels = [DEFAULT_LEVEL, 1] if with_mdf else [DEFAULT_LEVEL]
    breakdown: dict[int, list[dict]] = {lv: [] for lv in levels}
    for r in range(runs):
        for lv in levels[r % len(levels):] + levels[:r % len(levels)]:
            warm(src)
            breakdown[lv].append(phases(src, tmp / "bd.tsd", lv, tmp))
    return {"label": label, "input": str(src), "bytes": src.stat().st_size, "results": results,
            "breakdown": {lv: {k: (statistics.median(b[k] for b in bs) if k != "numpy" else
                                   any(b[k] for b in bs)) for k in bs[0]}
                          for lv, bs in breakdown.items()}}


def med(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def render(args: argparse.Namespace, crashes: list[dict], load: tuple[str, str]) -> str:
    import numpy
    import zstandard

    lines = ["# Import pipeline: whole processes against zstd and makedumpfile", "",
             f"Command: `python bench/import_pipeline_bench.py {' '.join(args.argv)}`", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
             f"zstandard {zstandard.__version__}, numpy {numpy.__version__}. Load average "
             f"before / after: {load[0]} / {load[1]} (a shared 2-core machine: compare ratios "
             "within a run, not absolute times across runs).", "",
             f"Medians of {args.runs} interleaved runs (rotating order, page cache warm); wall "
             "from this script, user/sys/minor faults/peak RSS from GNU time around each child. "
             "Ours is the whole CLI process (`tsubaki-forensics import IN -o OUT`, start-up "
             "included). \"baseline\" is the same command on "
             f"{'revision `' + args.baseline + '`' if args.baseline else 'no older revision'}, in "
             "the same run. Faults/page = minor faults per 4 KiB page of input.", ""]
    for c in crashes:
        pages = c["bytes"] / 4096
        res = c["results"]
        lines += [f"## {c['label']} ({c['bytes'] / 2**20:.0f} MiB input)", "",
                  f"Input: `{c['input']}`", "",
                  "| tool | wall (s) | user (s) | sys (s) | minor faults | faults/page | "
                  "peak RSS (MiB) | output (MB) | wall / zstd | wall / makedumpfile |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        z = med(res["zstd -3 -T2"], "wall")
        mdf = med(res["makedumpfile -l -d 1"], "wall") if "makedumpfile -l -d 1" in res else None
        for name, s in res.items():
            w = med(s, "wall")
            lines.append(f"| {name} | {w:.2f} | {med(s, 'user'):.2f} | {med(s, 'sys'):.2f} | "
                         f"{med(s, 'minflt'):,.0f} | {med(s, 'minflt') / pages:.3f} | "
                         f"{max(x['rss_mib'] for x in s):.0f} | {med(s, 'bytes') / 1e6:.1f} | "
                         f"{w / z:.2f} | {w / mdf if mdf else float('nan'):.2f} |")
        lines += ["", "Phases of one process (medians, ms): interpreter start (spawn to first "
                  "statement), the CLI's modules (typer), the importer's modules, the import "
                  "(open, pipeline, close with its fsync), exit (finalisation and teardown).", "",
                  "| level | " + " | ".join(PHASES) + " | sum | numpy loaded |",
                  "|---:|" + "---:|" * (len(PHASES) + 1) + "---|"]
        for lv, b in c["breakdown"].items():
            lines.append(f"| {lv} | " + " | ".join(f"{b[k] * 1000:.1f}" for k in PHASES)
                         + f" | {sum(b[k] for k in PHASES) * 1000:.1f} | {'yes' if b['numpy'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--crash", action="append", default=[],
                   help="a cached lab crash, RELEASE/KEY under the crash cache; may repeat")
    p.add_argument("--small", action="append", default=[],
                   help="a cached lab crash also timed against makedumpfile (on a /proc/vmcore copy)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--baseline", help="git revision whose import also runs (before/after)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "import_pipeline.md")
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    from tsubaki_forensics.lab.cache import cache_root
    from tsubaki_forensics.vmcore.export import copy_as_proc_vmcore

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    crashes = []
    with tempfile.TemporaryDirectory(prefix="tsd-pipe-", dir=os.environ.get("TMPDIR", "/tmp")) as d:
        tmp = Path(d)
        base = baseline_tree(args.baseline, tmp, "tsubaki_forensics") if args.baseline else None
        compile_trees([ROOT / "tsubaki_forensics"] + ([base / "tsubaki_forensics"] if base else []))
        for key, small in [(k, False) for k in args.crash] + [(k, True) for k in args.small]:
            vmcore = cache_root() / "crashes" / key / "vmcore.elf"
            if not vmcore.exists():
                raise SystemExit(f"no cached crash {key} ({vmcore})")
            src = tmp / "input.elf"
            if small:  # makedumpfile refuses QEMU's ELF: every tool reads the same copy
                copy_as_proc_vmcore(vmcore, src)
            else:  # a hard link keeps the input stable while the lab may replace its cache
                try:
                    os.link(vmcore, src)
                except OSError:
                    shutil.copyfile(vmcore, src)
            sys.stderr.write(f"benchmarking {key}\n")
            crashes.append(bench(key + (" (/proc/vmcore copy)" if small else ""), src, args.runs,
                                 tmp, base, small))
            crashes[-1]["input"] = str(vmcore)
            src.unlink()
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = render(args, crashes, (load_before, load_after))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
