"""Analyse one dump three ways and compare time and peak memory: DWARF vmlinux, the
dump's own BTF (self-contained), and a symbol pack.

    python bench/symbolpack_bench.py --runs 5 [--dump samples/lab-oom.tsd]

Each run is a fresh process (peak RSS is per process) that builds the drgn
bridge's program and runs every registered analysis, as ``analyze`` does;
the modes are interleaved so machine load hits them alike.  The 6.1 vmlinux
comes from the crash lab's cache; the pack is made from it once, first
(its build time is reported apart).  Writes docs/benchmarks/symbolpack.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, re, sys, time
from pathlib import Path
def hwm():  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec)
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
clock = time.perf_counter()
from tsubaki_forensics.analysis import AnalysisContext, Need, run_analyses, select
from tsubaki_forensics.drgn_bridge import program_from_dump
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.tsd import open_dump
mode, dump_path, vmlinux, pack_path = sys.argv[1:5]
dump = open_dump([Path(dump_path)])
if mode == "dwarf":
    program = program_from_dump(dump, vmlinux=Path(vmlinux))
elif mode == "btf":
    program = program_from_dump(dump, self_contained=True)
else:
    from drgn.helpers.linux.kallsyms import load_module_kallsyms
    from tsubaki_forensics.symbolpack import attach_symbolpack, read_pack
    program = program_from_dump(dump, debug_info=False)
    attach_symbolpack(program.prog, read_pack(Path(pack_path)))
    program.prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(program.prog), enable_index=-1)
setup = time.perf_counter() - clock
caps = frozenset(program.capabilities | {Need.DEBUG_INFO})
results = run_analyses(select(Plugins.load().analyses()), AnalysisContext(program.prog, dump, {}, caps))
assert all(r.status.value == "ok" for r in results), [(r.name, r.status) for r in results]
print(json.dumps({"setup": setup, "total": time.perf_counter() - clock,
                  "rss_mib": hwm()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dump", type=Path, default=REPO / "samples" / "lab-oom.tsd")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "symbolpack.md")
    args = parser.parse_args()
    from tsubaki_forensics.lab import CrashParams, cached_crash
    from tsubaki_forensics.symbolpack import write_pack
    from tsubaki_forensics.symbolpack.extract import build_pack

    vmlinux = cached_crash(CrashParams(scenario="oom")).vmlinux
    with tempfile.TemporaryDirectory() as tmp:
        pack_path = Path(tmp) / "kernel.tsp"
        clock = time.perf_counter()
        size = write_pack(build_pack(vmlinux), pack_path)
        build_s = time.perf_counter() - clock
        runs: dict[str, list[dict]] = {"dwarf": [], "btf": [], "pack": []}
        for _ in range(args.runs):
            for mode in runs:
                out = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.dump), str(vmlinux), str(pack_path)],
                                     check=True, capture_output=True, text=True).stdout
                runs[mode].append(json.loads(out.strip().splitlines()[-1]))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("setup", "total", "rss_mib")} for m, rs in runs.items()}
    base = med["dwarf"]
    lines = [
        "# Symbol pack vs DWARF vs BTF: analysing one dump", "",
        f"Command: `python bench/symbolpack_bench.py --runs {args.runs}` on `{args.dump.name}`; "
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        "shared 2-core machine (other jobs running). Medians of interleaved fresh processes: "
        "set-up (open dump, build the drgn program, attach debug info) and total (set-up + "
        "dmesg, panic, tasks); peak RSS of the process.", "",
        f"Pack: {size:,} bytes from a {vmlinux.stat().st_size:,}-byte vmlinux "
        f"({size / vmlinux.stat().st_size:.2%}), built in {build_s:.1f} s.", "",
        "| mode | set-up s | total s | peak RSS MiB | total vs DWARF | RSS vs DWARF |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, label in (("dwarf", "DWARF vmlinux"), ("btf", "dump's BTF (self-contained)"), ("pack", "symbol pack")):
        m = med[mode]
        lines.append(f"| {label} | {m['setup']:.2f} | {m['total']:.2f} | {m['rss_mib']:.0f} | "
                     f"{m['total'] / base['total']:.2f}x | {m['rss_mib'] / base['rss_mib']:.2f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
