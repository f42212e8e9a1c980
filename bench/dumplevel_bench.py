"""Benchmark: ``import -d 31`` against ``makedumpfile -c -d 31`` on the same busy crash.

Targets (issue 15): on a busy 2 GiB lab crash, ``import --dump-level 31``
takes <= 0.5x the time of Debian's ``makedumpfile -c -d 31`` (what
kdump-tools runs) and writes <= 0.8x its output, with peak RSS <= 150 MB.
Both read the same /proc/vmcore-style copy of the crash
(``vmcore.export.copy_as_proc_vmcore``; makedumpfile refuses QEMU's ELF)
with a warm page cache, in alternating order, ``--repeats`` times; wall time
is measured here, CPU time and peak RSS by GNU time around each command
(``import_bench.run_child``); medians and ratios of medians.  Our import
also reports how long its classification took (``classify_seconds``).

    python bench/dumplevel_bench.py [--crash 6.1:busy:2G --crash 6.12:busy:2G] [--repeats 3] \
        [--out docs/benchmarks/dumplevel.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_bench import machine, run_child, warm  # noqa: E402

__all__ = ["bench_crash", "main"]

DEFAULT_CRASHES = ("6.1:busy:2G", "6.12:busy:2G")
TARGETS = {"time": 0.5, "size": 0.8, "rss_mib": 150 * 1e6 / (1 << 20)}


def crash_vmcore(spec: str) -> tuple[str, Path]:
    """(label, QEMU ELF) of a crash-lab crash ``kernel:workload:mem`` (cached; built if absent)."""
    from tsubaki_forensics.lab import CrashParams, cached_crash

    kernel, workload, mem = spec.split(":")
    res = cached_crash(CrashParams("sysrq", mem, 2, workload, kernel, False).normalized(),
                       log=lambda m: sys.stderr.write(f"crash lab: {m}\n"))
    return f"{kernel} {workload} {mem}", Path(res.vmcore)


def bench_crash(vmcore: Path, repeats: int, tmp: Path) -> dict:
    """Every run of both tools on one crash, plus the level-31 page counts."""
    from tsubaki_forensics.vmcore.export import copy_as_proc_vmcore

    proc = tmp / "vmcore.proc"
    copy_as_proc_vmcore(vmcore, proc)
    cli = shutil.which("tsubaki-forensics") or str(Path(sys.executable).parent / "tsubaki-forensics")
    ours_out, theirs_out = tmp / "d31.tsd", tmp / "d31.kdump"
    tools = {
        "tsubaki import -d 31": [cli, "import", str(proc), "-o", str(ours_out), "-d", "31",
                                 "--force", "--format", "json"],
        "makedumpfile -c -d 31": ["makedumpfile", "-c", "-d", "31", str(proc), str(theirs_out)],
        "tsubaki import -d 31 --level 1": [cli, "import", str(proc), "-o", str(ours_out), "-d", "31",
                                           "--level", "1", "--force", "--format", "json"],
    }
    runs: dict[str, list[dict]] = {k: [] for k in tools}
    warm(proc)
    for i in range(repeats):
        order = list(tools)[i % len(tools):] + list(tools)[:i % len(tools)]  # rotate
        for name in order:
            out = ours_out if name.startswith("tsubaki") else theirs_out
            runs[name].append(run_child(tools[name], out))
            sys.stderr.write(f"  {name}: {runs[name][-1]['wall']:.2f} s\n")
    info = json.loads(__import__("subprocess").run([cli, "inspect", str(ours_out), "--format", "json"],
                                                   capture_output=True, text=True).stdout)
    proc.unlink()
    return {"runs": runs, "pages": info["memory"]["pages"]}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs if key in r)


def render(args: argparse.Namespace, results: list[tuple[str, dict]], started: str, load: tuple) -> str:
    cmd = "python bench/dumplevel_bench.py " + " ".join(
        [*(f"--crash {c}" for c in args.crash), f"--repeats {args.repeats}"])
    lines = [
        "# `import -d 31` vs `makedumpfile -c -d 31` (issue 15)", "",
        f"Command: `{cmd}`  ",
        f"Run: {started} UTC, load average {load[0]:.1f} -> {os.getloadavg()[0]:.1f}  ",
        f"Machine: {machine()}", "",
        "Both read the same /proc/vmcore-style copy of the crash (warm page cache), alternating,",
        f"{args.repeats} times each; medians; ratio = ours / makedumpfile's. RSS: GNU time's peak.",
        "Targets: time <= 0.5x, size <= 0.8x, peak RSS <= 150 MB (143 MiB).", "",
        "| crash | tool | wall s | CPU s | output MB | peak RSS MiB | classify s |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = ["", "| crash | time ratio | size ratio | our peak RSS MiB | met? |", "|---|---|---|---|---|"]
    for label, r in results:
        med = {name: {k: _median(runs, k) for k in ("wall", "cpu", "bytes", "rss_mib")}
               for name, runs in r["runs"].items()}
        for name, runs in r["runs"].items():
            m = med[name]
            cls = f"{_median(runs, 'classify_seconds'):.2f}" if any("classify_seconds" in x for x in runs) else ""
            lines.append(f"| {label} | `{name}` | {m['wall']:.2f} | {m['cpu']:.2f} | "
                         f"{m['bytes'] / 1e6:.1f} | {m['rss_mib']:.0f} | {cls} |")
        theirs = med["makedumpfile -c -d 31"]
        for name in r["runs"]:
            if not name.startswith("tsubaki"):
                continue
            ours = med[name]
            t, s = ours["wall"] / theirs["wall"], ours["bytes"] / theirs["bytes"]
            tc = ours["cpu"] / theirs["cpu"]
            ok = t <= TARGETS["time"] and s <= TARGETS["size"] and ours["rss_mib"] <= TARGETS["rss_mib"]
            summary.append(f"| {label}, `{name}` | {t:.2f}x (CPU {tc:.2f}x) | {s:.2f}x | "
                           f"{ours['rss_mib']:.0f} | {'**yes**' if ok else '**no**'} |")
        p = r["pages"]
        summary.append(f"| | pages: {p['total']} total, {p['kept']} kept; "
                       + ", ".join(f"{k} {v}" for k, v in p["excluded"].items() if v) + " | | | |")
    return "\n".join(lines + summary) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crash", action="append", help="kernel:workload:mem (repeatable)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path, help="also write the raw runs here")
    args = ap.parse_args(argv)
    args.crash = args.crash or list(DEFAULT_CRASHES)
    if shutil.which("makedumpfile") is None:
        raise SystemExit("makedumpfile is not installed (apt-get install makedumpfile)")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()
    results = []
    for spec in args.crash:
        label, vmcore = crash_vmcore(spec)
        sys.stderr.write(f"{label}: {vmcore}\n")
        with tempfile.TemporaryDirectory(prefix="tsubaki-dl-") as tmp:
            t0 = time.perf_counter()
            results.append((label, bench_crash(vmcore, args.repeats, Path(tmp))))
            sys.stderr.write(f"{label}: {time.perf_counter() - t0:.0f} s\n")
    text = render(args, results, started, load)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
