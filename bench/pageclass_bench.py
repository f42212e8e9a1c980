"""Benchmark: page classification time per GiB of RAM on real lab crashes.

Target (issue 15): classification alone <= 1 s per 4 GiB of RAM.  Measured
phase by phase on a fresh :class:`~tsubaki_forensics.pageclass.PageClassifier`
per repeat (in one process, so imports and drgn's one-time plugin discovery
are outside the figures; they are reported separately, once):

- *program*: the drgn program over the ELF's physical memory
  (``set_linux_kernel_custom``, no debug info);
- *struct pages*: locate ``mem_map`` through ``mem_section`` and read and
  reduce every struct page (64 B per 4 KiB page) through drgn;
- *rules 31*: the struct-page rules at level 31 (numpy only);
- *zero 31*: the zero scan of the pages level 31 keeps (reads their content);
- *classify 31*: all of it end to end (program + struct pages + rules + zero);
- *zero 1*: level 1 alone, the zero scan of every page (for scale: this is
  reading all of RAM, what any dump already does while writing it).

The ELF file is read once first so the OS page cache is warm; medians of the
repeats.

    python bench/pageclass_bench.py [--crash sysrq-busy-2G ...] [--repeats 5] [--out docs/benchmarks/pageclass.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

__all__ = ["bench_one", "main"]

DEFAULT_CRASHES = ("6.1:busy:2G:2", "6.1:idle:4G:4", "6.12:busy:1G:2")


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def bench_one(vmcore: Path, repeats: int) -> dict:
    """Phase timings (lists, seconds) and the level-31 counts for one ELF vmcore."""
    from tsubaki_forensics.pageclass import PageClassifier
    from tsubaki_forensics.pageclass.rules import classify_struct_pages
    from tsubaki_forensics.vmcore import ElfVmcore

    _warm(vmcore)
    phases: dict[str, list[float]] = {k: [] for k in ("program", "struct pages", "rules 31", "zero 31",
                                                      "classify 31", "zero 1")}
    with ElfVmcore(vmcore) as v:
        t = time.perf_counter()
        PageClassifier(v, v.vmcoreinfo)._program_once()  # drgn plugin discovery: once per process
        first_program = time.perf_counter() - t
        ram = sum(length for _, length, _ in v.ranges())
        for _ in range(repeats):
            c = PageClassifier(v, v.vmcoreinfo)
            t0 = time.perf_counter()
            c._program_once()
            t1 = time.perf_counter()
            feat = c.features
            t2 = time.perf_counter()
            classify_struct_pages(feat, 31, free_area_orders=c.layout.free_area_orders, present=c.present)
            t3 = time.perf_counter()
            r = c.classify(31)  # rules again + the zero scan of what they keep
            t4 = time.perf_counter()
            phases["program"].append(t1 - t0)
            phases["struct pages"].append(t2 - t1)
            phases["rules 31"].append(t3 - t2)
            phases["zero 31"].append(max(0.0, (t4 - t3) - (t3 - t2)))
            phases["classify 31"].append(t4 - t0)
            c1 = PageClassifier(v, v.vmcoreinfo, prog=c._prog)
            t5 = time.perf_counter()
            c1.classify(1)
            phases["zero 1"].append(time.perf_counter() - t5)
        counts = r.summary()
        release = (v.vmcoreinfo or b"").decode(errors="replace").split("OSRELEASE=", 1)[-1].split("\n", 1)[0]
    return {"vmcore": str(vmcore), "release": release, "ram_bytes": ram, "phases": phases,
            "first_program_s": first_program, "level31": counts}


def _crash(spec: str) -> Path:
    from tsubaki_forensics.lab import CrashParams, cached_crash

    kernel, workload, mem, smp = spec.split(":")
    params = CrashParams("sysrq", mem, int(smp), workload, kernel, False).normalized()
    return cached_crash(params, log=lambda m: sys.stderr.write(f"crash lab: {m}\n")).vmcore


def report(results: list[dict], command: str, repeats: int) -> str:
    from machine_info import cpu_model

    med = statistics.median
    lines = ["# Benchmark: page classification (`tsubaki_forensics.pageclass`)", "",
             f"Command: `{command}` (medians of {repeats} repeats, one process, page cache warm).", "",
             f"- Machine: {platform.machine()}, {cpu_model()}, Python {platform.python_version()}; "
             "2 CPUs shared with other jobs (QEMU guests under TCG).",
             "- Target (issue 15): classification <= 1 s per 4 GiB of RAM.", "",
             "| crash | RAM | program | struct pages | rules 31 | zero 31 | **classify 31** | per 4 GiB "
             "| zero 1 (all RAM) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        p = {k: med(v) for k, v in res["phases"].items()}
        gib = res["ram_bytes"] / (1 << 30)
        lines.append(f"| {res['release']} {Path(res['vmcore']).parent.name} | {gib:.2f} GiB | "
                     f"{p['program']:.3f} | {p['struct pages']:.3f} | {p['rules 31']:.3f} | {p['zero 31']:.3f} | "
                     f"**{p['classify 31']:.3f} s** | {p['classify 31'] / gib * 4:.3f} s | {p['zero 1']:.3f} |")
    lines += ["", "Seconds.  *program*: drgn over physical memory (`set_linux_kernel_custom`); the first one in "
              "a process also discovers drgn's plugins: " +
              ", ".join(f"{r['first_program_s']:.2f} s" for r in results) +
              " (outside the table).  *struct pages*: locate `mem_map` via `mem_section`, read every struct page "
              "through drgn and reduce it to 4 bytes.  *zero 31*: content scan of the pages level 31 keeps.  "
              "*classify 31* = program + struct pages + rules + zero 31.  *zero 1*: the zero scan of every page.", "",
              "Level-31 counts (pages) of each crash:", ""]
    for res in results:
        lines.append(f"- {res['release']} {Path(res['vmcore']).parent.name}: `{json.dumps(res['level31'])}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crash", action="append", help="KERNEL:WORKLOAD:MEM:SMP of a lab crash (repeatable); "
                    f"default {' '.join(DEFAULT_CRASHES)}")
    ap.add_argument("--vmcore", action="append", type=Path, help="an ELF vmcore instead of lab crashes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the Markdown report here")
    ap.add_argument("--json", type=Path, help="write the raw timings here")
    args = ap.parse_args(argv)
    vmcores = args.vmcore or [_crash(s) for s in (args.crash or DEFAULT_CRASHES)]
    results = [bench_one(v, args.repeats) for v in vmcores]
    command = "python bench/pageclass_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, command.strip(), args.repeats)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
