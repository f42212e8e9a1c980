"""Benchmark: reading makedumpfile's kdump files: ours vs drgn's libkdumpfile, on the same file.

Debian's makedumpfile writes a kdump-compressed file (and its flattened
form) from a lab crash; then, interleaved, N times each (whole processes,
medians, ratios within the run):

* ``analyze`` directly on the kdump file vs plain drgn (``analyze_peer.py``:
  the same tasks + dmesg + panic work, drgn opening the file with its own
  libkdumpfile);
* ``import`` of the kdump file to ``.tsd`` (whole CLI), beside
  ``makedumpfile -R`` (flattened -> plain, the tool's own reassembly);
* every page of the file read in-process: our reader vs drgn's
  ``Program.read`` through libkdumpfile.

    python bench/kdump_bench.py [--runs 5] [--crash 6.1,busy,2G] [--options "-c -d 31"]
        [--out docs/benchmarks/kdump.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analyze_bench import measure  # noqa: E402
from machine_info import cpu_model  # noqa: E402

__all__ = ["main", "read_all_ours", "read_all_drgn"]

ROOT = Path(__file__).resolve().parent.parent


def read_all_ours(path: Path, pfns: list[int]) -> float:
    """Seconds to open ``path`` and read the pages ``pfns`` with our reader."""
    from tsubaki_forensics.vmcore.kdump import KdumpFile

    t0 = time.perf_counter()
    with KdumpFile(path) as k:
        for pfn in pfns:
            k.read_page(pfn)
    return time.perf_counter() - t0


def read_all_drgn(path: Path, pfns: list[int]) -> float:
    """Seconds for drgn (libkdumpfile) to open ``path`` and read the pages ``pfns``."""
    import drgn

    t0 = time.perf_counter()
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    for pfn in pfns:
        prog.read(pfn << 12, 4096, True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--crash", default="6.1,busy,2G", help="kernel,workload,mem of the lab crash")
    ap.add_argument("--options", default="-c -d 31", help="makedumpfile options")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "kdump.md")
    args = ap.parse_args()
    from tsubaki_forensics.lab import CrashParams, cached_crash
    from tsubaki_forensics.vmcore.kdump import KdumpFile

    kernel, workload, mem = args.crash.split(",")
    crash = cached_crash(CrashParams("sysrq", mem, 2, workload, kernel, False).normalized())
    cli = [sys.executable, "-m", "tsubaki_forensics.cli.app"]
    with tempfile.TemporaryDirectory(prefix="tsubaki-kdump-bench-") as tmp:
        tmp = Path(tmp)
        proc = tmp / "vmcore.proc"
        # In a child: the copy maps the whole vmcore, and Linux reports a child's
        # peak RSS as at least its parent's at fork time.
        subprocess.run([sys.executable, "-c", "import sys; from tsubaki_forensics.vmcore.export "
                        "import copy_as_proc_vmcore as c; c(sys.argv[1], sys.argv[2])",
                        str(crash.vmcore), str(proc)], check=True)
        kdump, flat = tmp / "dump.kdump", tmp / "dump.flat"
        subprocess.run(["makedumpfile", *args.options.split(), str(proc), str(kdump)],
                       check=True, capture_output=True)
        with open(flat, "wb") as f:
            subprocess.run(["makedumpfile", "-F", *args.options.split(), str(proc)], stdout=f,
                           check=True, stderr=subprocess.DEVNULL)
        proc.unlink()
        with KdumpFile(kdump) as k:
            pages, kept_pfns = k.header.max_mapnr, [int(p) for p in k.dumped_pfns]
        kept = len(kept_pfns)
        vml = str(crash.vmlinux)
        commands = {
            "analyze ours (kdump)": [*cli, "analyze", str(kdump), "--vmlinux", vml, "--format", "json"],
            "analyze peer (drgn, kdump)": [sys.executable, str(ROOT / "bench" / "analyze_peer.py"), str(kdump), vml],
            "analyze ours (flattened)": [*cli, "analyze", str(flat), "--vmlinux", vml, "--format", "json"],
            "analyze peer (drgn, flattened)": [sys.executable, str(ROOT / "bench" / "analyze_peer.py"), str(flat), vml],
            "import ours (kdump -> .tsd)": [*cli, "import", str(kdump), "-o", str(tmp / "o.tsd"), "--force"],
            "import ours (flattened -> .tsd)": [*cli, "import", str(flat), "-o", str(tmp / "o.tsd"), "--force"],
            "makedumpfile -R (flattened -> kdump)": ["sh", "-c", f"makedumpfile -R {tmp / 'r.kdump'} < {flat}"],
        }
        for argv in commands.values():
            measure(argv)  # warm the page cache
            (tmp / "r.kdump").unlink(missing_ok=True)
        rows: dict[str, list] = {name: [] for name in commands}
        reads: dict[str, list] = {"ours": [], "drgn": []}
        for _ in range(args.runs):
            for name, argv in commands.items():
                rows[name].append(measure(argv))
                (tmp / "r.kdump").unlink(missing_ok=True)
            reads["ours"].append(read_all_ours(kdump, kept_pfns))
            reads["drgn"].append(read_all_drgn(kdump, kept_pfns))
        sizes = (kdump.stat().st_size, flat.stat().st_size)
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in rows.items()}
    rmed = {k: statistics.median(v) for k, v in reads.items()}
    cmd = f"python bench/kdump_bench.py --runs {args.runs} --crash {args.crash} --options \"{args.options}\""
    lines = ["# Benchmark: makedumpfile's kdump files\n",
             f"Command: `{cmd}` (whole processes, interleaved, {args.runs} runs each after one warm-up; medians).\n",
             f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, Linux {platform.release()}",
             f"- Crash: {crash.vmcore} ({kernel}, {workload}, {mem}); `makedumpfile {args.options}`: "
             f"{sizes[0] / 2**20:.1f} MiB kdump-compressed, {sizes[1] / 2**20:.1f} MiB flattened (`-F`); "
             f"{kept} of {pages} pages kept",
             "- peer: `python bench/analyze_peer.py FILE VMLINUX` (plain drgn doing the default analyze "
             "run's work: sys, ps, dmesg, panic; the file opened by drgn's libkdumpfile)\n",
             "| | wall (s) | CPU (s) | peak RSS (MiB) |", "|---|---:|---:|---:|"]
    for name, (w, r, c) in med.items():
        lines.append(f"| {name} | {w:.3f} | {c:.3f} | {r / 2**20:.1f} |")
    for fmt in ("kdump", "flattened"):
        o, p = med[f"analyze ours ({fmt})"], med[f"analyze peer (drgn, {fmt})"]
        lines.append(f"| ratio analyze ours / peer ({fmt}) | {o[0] / p[0]:.2f}x | {o[2] / p[2]:.2f}x | {o[1] / p[1]:.2f}x |")
    lines += ["", f"Every kept page of the kdump file read in-process ({kept} pages, file opened "
              f"each time): ours "
              f"{rmed['ours']:.2f} s, drgn/libkdumpfile {rmed['drgn']:.2f} s "
              f"(ratio {rmed['ours'] / rmed['drgn']:.2f}x).", "",
              f"Load average at the end: {os.getloadavg()[0]:.2f} (the machine is shared).", "",
              "All runs (wall s, RSS MiB, CPU s):"]
    for name, v in rows.items():
        lines.append(f"- {name}: {[(round(w, 3), round(r / 2**20, 1), round(c, 3)) for w, r, c in v]}")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
