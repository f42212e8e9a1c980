"""Benchmark: ``tsubaki-forensics triage`` throughput (dumps per minute).

The fleet is every cached 512 MiB crash-lab dump (several scenarios, kernels
6.1 and 6.12), imported once to ``.tsd`` files.  Each configuration runs the
real command as a whole process with ``--no-cache`` (so every dump is
analysed), interleaved, N times after one warm-up:

- ``triage -j 1`` and ``triage -j 2`` (local worker processes);
- ``triage --dask ADDRESS`` on a Dask ``LocalCluster`` of 2 single-thread
  worker processes started by this script (its start-up is not timed: a
  cluster is something that already runs);
- the peer: a loop of ``tsubaki-forensics analyze --only panic --format json``,
  one process per dump, which is what one would script without triage.

    python bench/triage_bench.py [--runs 3] [--fleet-dir DIR] [--out docs/benchmarks/triage.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["build_fleet", "measure", "main"]

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tsubaki_forensics.cli.app"]


def build_fleet(directory: Path) -> list[Path]:
    """Import every cached 512M crash of the lab into ``directory`` (kept between runs)."""
    from tsubaki_forensics.lab.cache import cache_root
    from tsubaki_forensics.vmcore.importer import import_vmcore

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for vmcore in sorted((cache_root() / "crashes").glob("*/*-512M-smp2/vmcore.elf")):
        target = directory / f"{vmcore.parent.parent.name}_{vmcore.parent.name}.tsd"
        if not target.exists():
            print(f"importing {vmcore}", file=sys.stderr)
            import_vmcore(vmcore, target)
        out.append(target)
    if not out:
        raise SystemExit("no cached 512M crashes: run `tsubaki-forensics lab crash` first")
    return out


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user+sys, the process and the workers it waited for)."""
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def _peer(dumps: list[Path]) -> tuple[float, float]:
    wall = cpu = 0.0
    for d in dumps:
        w, c = measure([*CLI, "analyze", str(d), "--only", "panic", "--format", "json"])
        wall, cpu = wall + w, cpu + c
    return wall, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fleet-dir", type=Path, default=Path(tempfile.gettempdir()) / "tsubaki-triage-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "triage.md")
    args = parser.parse_args(argv)

    from distributed import LocalCluster

    dumps = build_fleet(args.fleet_dir)
    n = len(dumps)
    fleet = str(args.fleet_dir)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        configs = {
            "triage -j 1": lambda: measure([*CLI, "triage", fleet, "--no-cache", "-j", "1", "--format", "json"]),
            "triage -j 2": lambda: measure([*CLI, "triage", fleet, "--no-cache", "-j", "2", "--format", "json"]),
            "triage --dask (LocalCluster, 2 workers)": lambda: measure(
                [*CLI, "triage", fleet, "--no-cache", "--dask", cluster.scheduler_address, "--format", "json"]),
            "peer: analyze --only panic, one process per dump": lambda: _peer(dumps),
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in configs}
        for k, run in configs.items():  # warm-up: page cache, Dask workers' imports
            print(f"warm-up: {k}", file=sys.stderr)
            run()
        for i in range(args.runs):
            for k, run in configs.items():
                results[k].append(run())
                print(f"run {i + 1}: {k}: {results[k][-1][0]:.2f} s", file=sys.stderr)
    load = os.getloadavg()[0]
    write_report(args, dumps, results, load)


def write_report(args: argparse.Namespace, dumps: list[Path], results: dict, load: float) -> None:
    n = len(dumps)
    med = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    one = med["triage -j 1"]
    peer = med["peer: analyze --only panic, one process per dump"]
    size = sum(d.stat().st_size for d in dumps) / 2**20
    lines = [
        "# Benchmark: triage",
        "",
        f"Command: `python bench/triage_bench.py --runs {args.runs}` (whole processes, `--no-cache`, interleaved,"
        f" {args.runs} runs each after one warm-up; medians).",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" Linux {platform.release()}",
        f"- Fleet: {n} dumps ({size:.0f} MiB of .tsd), every cached 512 MiB crash-lab dump:"
        f" {', '.join(sorted({d.stem.split('_', 1)[1].rsplit('-512M', 1)[0] for d in dumps}))};"
        f" kernels {', '.join(sorted({d.stem.split('_', 1)[0] for d in dumps}))}",
        "- Each dump: open, DWARF vmlinux from the lab cache, the `panic` analysis, the kernel clock.",
        "",
        "| | wall (s, median) | dumps / minute | speed-up vs -j 1 | CPU user+sys (s, median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in results:
        c = f"{cpu[k]:.1f}" if not k.startswith("triage --dask") else "(in the cluster)"
        lines.append(f"| {k} | {med[k]:.2f} | {n / med[k] * 60:.1f} | {one / med[k]:.2f}x | {c} |")
    lines += [
        "",
        f"Ratio triage -j 1 / peer (wall): {one / peer:.2f}x; triage -j 2 / peer: {med['triage -j 2'] / peer:.2f}x.",
        "",
        "Notes: the machine has 2 CPUs shared with other jobs, so 2 workers cannot reach 2x; the Dask",
        "workers are warm (drgn and the plugins already imported) while each local run forks fresh workers",
        "that import them, which is part of the per-run cost the table shows.",
        f"Load average at the end: {load:.2f}.",
        "",
        "All runs (wall s, CPU s):",
        "",
    ]
    for k, v in results.items():
        lines.append(f"- {k}: {json.dumps([(round(w, 2), round(c, 2)) for w, c in v])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
