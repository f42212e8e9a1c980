"""Benchmark: drgn with the DWARF vmlinux vs self-contained (the dump's own BTF/kallsyms/ORC).

Each run is a whole child process (interpreter, imports, program set-up,
then the same work: every task with its state, the whole printk log, the
crashed thread's and the other CPUs' backtraces).  The two modes are
interleaved, N runs each; the report gives per-stage medians, wall time and
peak RSS (``wait4`` rusage of the child), with ratios, plus how many BTF
types agree with DWARF.  Results go to docs/benchmarks/selfcontained.md.

    python bench/selfcontained_bench.py [--runs 5] [--crashes /tmp/tsubaki-shared/crashes.json]

By default the crash lab's sysrq/idle/512M/2-vCPU crash of each kernel
series in the crash list is used.
"""

from __future__ import annotations

from machine_info import cpu_model
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["child", "main", "measure"]

ROOT = Path(__file__).resolve().parent.parent
MODES = ("dwarf", "selfcontained")


def child(mode: str, vmcore: str, vmlinux: str) -> dict:
    """One measured run (in the child process): stage timings and what was read."""
    t0 = time.perf_counter()
    import drgn
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    from tsubaki_forensics.selfcontained import attach_selfcontained
    from tsubaki_forensics.selfcontained.verify import observe

    stages = {"import": time.perf_counter() - t0}
    t = time.perf_counter()
    prog = drgn.Program()
    prog.set_core_dump(vmcore)
    stages["open"] = time.perf_counter() - t
    t = time.perf_counter()
    parts = {}
    if mode == "dwarf":
        prog.load_debug_info([vmlinux])
    else:
        parts = attach_selfcontained(prog).seconds
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    stages["debug info"] = time.perf_counter() - t
    t = time.perf_counter()
    seen = observe(prog)
    stages["analyses"] = time.perf_counter() - t
    return {"stages": stages, "parts": parts, "tasks": len(seen["tasks"]), "dmesg": len(seen["dmesg"]),
            "frames": len(seen["backtrace"])}


def measure(mode: str, vmcore: str, vmlinux: str) -> dict:
    """Run :func:`child` in a fresh interpreter; add its wall time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, vmcore, vmlinux],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} run failed: {proc.stderr.read().decode()[-800:] if proc.stderr else ''}")
    result = json.loads(out)
    result["wall"] = time.perf_counter() - start
    result["rss"] = usage.ru_maxrss * 1024
    return result


def type_agreement(vmcore: str, vmlinux: str) -> dict:
    """How many named BTF types equal their DWARF counterparts (see compare.py)."""
    import drgn

    from tsubaki_forensics.selfcontained import attach_selfcontained
    from tsubaki_forensics.selfcontained.btf import BtfKind
    from tsubaki_forensics.selfcontained.compare import KNOWN, compare_types

    mine = drgn.Program()
    mine.set_core_dump(vmcore)
    report = attach_selfcontained(mine)
    dwarf = drgn.Program()
    dwarf.set_core_dump(vmcore)
    dwarf.load_debug_info([vmlinux])
    btf = report.finders.btf
    prefixes = {BtfKind.STRUCT: "struct ", BtfKind.UNION: "union ", BtfKind.ENUM: "enum ", BtfKind.TYPEDEF: ""}
    names = sorted({prefixes[btf.kind(i)] + btf.type(i).name for i in btf.iter_kind(*prefixes) if btf.type(i).name})
    counts = {"named types": len(names), "not in DWARF": 0, "equal": 0, "known BTF limits only": 0,
              "ambiguous name": 0, "other": 0}
    ambiguous = set(report.ambiguous_types())
    for name in names:
        try:
            theirs = dwarf.type(name)
        except LookupError:
            counts["not in DWARF"] += 1
            continue
        diffs = compare_types(mine.type(name), theirs)
        if not diffs:
            counts["equal"] += 1
        elif all(d.startswith(KNOWN) for d in diffs):
            counts["known BTF limits only"] += 1
        elif name in ambiguous:
            counts["ambiguous name"] += 1
        else:
            counts["other"] += 1
    return counts


def _in_child(flag: str, vmcore: str, vmlinux: str) -> dict:
    """Run a heavy step in a child: a big parent would inflate the children's peak RSS
    (a forked child's RSS before ``exec`` counts in its ``ru_maxrss``)."""
    out = subprocess.run([sys.executable, __file__, flag, vmcore, vmlinux], check=True, capture_output=True, cwd=ROOT)
    return json.loads(out.stdout)


def _median(runs: list[dict], key: str, stage: str | None = None) -> float:
    return statistics.median(r["stages"][stage] if stage else r[key] for r in runs)


def _default_crashes(path: Path) -> list[dict]:
    crashes = json.loads(path.read_text())
    wanted = [c for c in crashes if (c["scenario"], c["workload"], c["mem"], c["smp"]) == ("sysrq", "idle", "512M", 2)]
    return wanted or crashes[:1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--crashes", type=Path, default=Path("/tmp/tsubaki-shared/crashes.json"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "selfcontained.md")
    args = parser.parse_args(argv)

    lines = [
        "# Self-contained analysis: no vmlinux vs the DWARF vmlinux",
        "",
        f"Command: `python bench/selfcontained_bench.py --runs {args.runs}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
        f"drgn {_drgn_version()}; shared with other jobs, so absolute times are noisy.  ",
        "Each run is a fresh process: imports, `set_core_dump` of the crash lab's ELF vmcore, then either "
        "`load_debug_info([vmlinux])` (**dwarf**) or `attach_selfcontained(prog)` (**self-contained**), "
        "then the same work through drgn's helpers (`verify.observe`: every task with "
        "`task_state_to_char`, all printk records, the crashed thread's and the other CPUs' backtraces). "
        f"Medians of {args.runs} interleaved runs per mode; peak RSS from `wait4`.",
        "",
    ]
    for crash in _default_crashes(args.crashes):
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                runs[mode].append(measure(mode, crash["vmcore"], crash["vmlinux"]))
        d, s = runs["dwarf"], runs["selfcontained"]
        lines += [
            f"## {crash['kernel_release']} ({crash['scenario']}, {crash['mem']}, {crash['smp']} vCPUs)",
            "",
            f"Read in both modes: {s[0]['tasks']} tasks, {s[0]['dmesg']} log records, "
            f"{s[0]['frames']} frames in the crashed thread (dwarf: {d[0]['frames']}, with inline frames).",
            "",
            "| stage | dwarf (s) | self-contained (s) | self-contained / dwarf |",
            "|---|---:|---:|---:|",
        ]
        for stage in ("import", "open", "debug info", "analyses"):
            a, b = _median(d, "", stage), _median(s, "", stage)
            lines.append(f"| {stage} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
        a, b = _median(d, "wall"), _median(s, "wall")
        lines.append(f"| **whole process (wall)** | {a:.3f} | {b:.3f} | {b / a:.2f} |")
        a, b = _median(d, "rss"), _median(s, "rss")
        lines.append(f"| **peak RSS (MB)** | {a / 1e6:.0f} | {b / 1e6:.0f} | {b / a:.2f} |")
        parts = {k: statistics.median(r["parts"][k] for r in s) for k in s[0]["parts"]}
        lines += ["", "Self-contained \"debug info\" stage, medians: "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items())
                  + " (kallsyms: drgn's decoder; btf: read + index; orc: address range + module list)."]
        counts = _in_child("--types", crash["vmcore"], crash["vmlinux"])  # keeps this process small
        lines += ["", "BTF types against DWARF (every named struct, union, enum and typedef of the BTF):", ""]
        lines += [f"- {k}: {v}" for k, v in counts.items()]
        lines.append("")
        print(f"{crash['kernel_release']}: done", file=sys.stderr)
    lines += [
        "\"known BTF limits only\": the type differs only where BTF cannot say what DWARF says "
        "(`T x[0]` read as `T x[]`; multi-dimensional arrays flattened by pahole). \"ambiguous name\": "
        "the kernel defines that name several times; the finder serves the first BTF definition and "
        "DWARF picked another. \"other\" must be 0 (tests/test_selfcontained_real.py checks it on a sample).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _drgn_version() -> str:
    import drgn

    return drgn.__version__


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(*sys.argv[2:])))
        sys.exit(0)
    if len(sys.argv) == 4 and sys.argv[1] == "--types":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(type_agreement(*sys.argv[2:])))
        sys.exit(0)
    sys.exit(main())
