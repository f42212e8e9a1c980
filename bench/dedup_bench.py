"""Benchmark: page deduplication (format 1.2, ``import --dedup``) on real crashes.

For each crash-lab dump (sysrq, 2 vCPUs; 512M/2G/4G x idle/busy; all cached,
nothing is booted) it measures the in-process import (``import_vmcore``) with
dedup off and on, at zstd levels 3 and 1: wall (``perf_counter``), CPU of the
whole process (``getrusage`` user+sys, worker threads included) and output
bytes, against ``zstd -3 -T2`` of the same ELF.  Rounds are rotated over the
configurations; the tables give medians.  Then the read cost: drgn's access
pattern (recorded by bench/readlatency_bench.py) replayed through
``PhysicalMemory.read`` on a fresh dump (cold) and again (warm), plain vs
dedup, and ``tsubaki-forensics analyze --format json`` wall time.

    python bench/dedup_bench.py [--repeats 3] [--dumps 512M-idle,2G-busy] [--json OUT] [--md OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine_info import cpu_model  # noqa: E402

DUMPS = [("512M", "idle"), ("512M", "busy"), ("2G", "idle"), ("2G", "busy"), ("4G", "idle"), ("4G", "busy")]
CONFIGS = [(3, False), (3, True), (1, False), (1, True)]
READ_DUMPS = [("512M", "idle"), ("2G", "busy")]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def zstd_ref(vmcore: Path, tmp: Path) -> dict:
    out = tmp / "ref.zst"
    t = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["zstd", "-q", "-f", "-3", "-T2", str(vmcore), "-o", str(out)], check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {"bytes": out.stat().st_size, "wall": time.perf_counter() - t,
           "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)}
    out.unlink()
    return res


def import_once(vmcore: Path, out: Path, level: int, dedup: bool) -> dict:
    from tsubaki_forensics.vmcore.importer import import_vmcore

    c0, t0 = _cpu(), time.perf_counter()
    res = import_vmcore(vmcore, out, level=level, dedup=dedup)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"wall": wall, "cpu": cpu, "bytes": res.file_bytes, "dedup_pages": res.dedup_pages,
            "raw": res.stats.raw_bytes, "zero": res.stats.zero_bytes}


def bench_imports(repeats: int, dumps: list[tuple[str, str]], tmp: Path) -> list[dict]:
    from tsubaki_forensics.lab import cached_crash

    rows = []
    for mem, wl in dumps:
        crash = cached_crash(scenario="sysrq", mem=mem, smp=2, workload=wl)
        vmcore = Path(crash.vmcore)
        _warm(vmcore)
        ref = zstd_ref(vmcore, tmp)
        runs: dict[tuple[int, bool], list[dict]] = {c: [] for c in CONFIGS}
        for r in range(repeats):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
            for level, dedup in order:
                out = tmp / "out.tsd"
                runs[(level, dedup)].append(import_once(vmcore, out, level, dedup))
                out.unlink()
        row = {"dump": f"{mem} {wl}", "zstd3": ref, "configs": {}}
        for (level, dedup), rs in runs.items():
            row["configs"][f"L{level} {'on' if dedup else 'off'}"] = {
                "wall": statistics.median(x["wall"] for x in rs),
                "cpu": statistics.median(x["cpu"] for x in rs),
                "wall_min": min(x["wall"] for x in rs), "wall_max": max(x["wall"] for x in rs),
                "bytes": rs[0]["bytes"], "dedup_pages": rs[0]["dedup_pages"],
                "data_bytes": rs[0]["raw"] - rs[0]["zero"],
            }
        rows.append(row)
        print(f"{mem} {wl}: " + ", ".join(f"{k} {v['wall']:.2f}s/{v['cpu']:.2f}s/{v['bytes'] / 1e6:.1f}MB"
                                          for k, v in row["configs"].items())
              + f"; zstd -3 {ref['bytes'] / 1e6:.1f}MB", file=sys.stderr)
    return rows


def _readlatency():
    spec = importlib.util.spec_from_file_location("readlatency_bench", HERE / "readlatency_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_reads(repeats: int, dumps: list[tuple[str, str]], tmp: Path) -> list[dict]:
    from tsubaki_forensics.lab import cached_crash
    from tsubaki_forensics.tsd import open_dump
    from tsubaki_forensics.vmcore.importer import import_vmcore

    rl = _readlatency()
    rows = []
    for mem, wl in dumps:
        crash = cached_crash(scenario="sysrq", mem=mem, smp=2, workload=wl)
        plain, dedup = tmp / "plain.tsd", tmp / "dedup.tsd"
        import_vmcore(crash.vmcore, plain)
        import_vmcore(crash.vmcore, dedup, dedup=True)
        reads = rl.record_reads(plain, Path(crash.vmlinux))
        row: dict = {"dump": f"{mem} {wl}", "reads": len(reads)}
        for name, path in (("plain", plain), ("dedup", dedup)):
            cold, warm, dec = [], [], []
            for _ in range(repeats):
                d = open_dump(path)
                try:
                    cold.append(rl.replay(d.memory.read, reads)[0])
                    warm.append(rl.replay(d.memory.read, reads)[0])
                    dec.append(d.memory.decompressed)
                finally:
                    d.close()
            analyze = []
            for _ in range(repeats):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(path),
                                "--vmlinux", str(crash.vmlinux), "--format", "json"],
                               check=True, capture_output=True)
                analyze.append(time.perf_counter() - t)
            row[name] = {"cold_ms": statistics.median(cold) * 1e3, "warm_ms": statistics.median(warm) * 1e3,
                         "records_decoded": dec[0], "analyze_s": statistics.median(analyze),
                         "analyze_min_max": [min(analyze), max(analyze)]}
        rows.append(row)
        print(f"reads {mem} {wl}: {json.dumps(row)}", file=sys.stderr)
        plain.unlink()
        dedup.unlink()
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Page deduplication (format 1.2, `import --dedup`): size, import cost, read cost",
        "",
        "Made by:",
        "",
        f"    {result['command']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}; Python {m['python']}, "
        f"zstandard {m['zstandard']} (libzstd {m['libzstd']}), xxhash {m['xxhash']}; {m['zstd_cli']}",
        f"- load average (1/5/15 min) before {result['load_before']}, after {result['load_after']}; "
        f"the machine is shared; {result['minutes']:.1f} min; medians of {result['repeats']} rotated rounds",
        "- import: `import_vmcore(vmcore, out, level=L, dedup=...)` in-process, 2 threads; wall = "
        "`perf_counter`, CPU = `getrusage(RUSAGE_SELF)` user+sys (all threads); the vmcore is in the "
        "page cache; `zstd -3 -T2` reads the same ELF (one run, size is deterministic)",
        "",
        "## Size and import cost",
        "",
        "| dump | data MiB | dup pages (refs) | zstd -3 -T2 MB | L3 off MB (vs zstd) | L3 on MB (vs zstd) "
        "| L1 off MB (vs zstd) | L1 on MB (vs zstd) | L3 off wall / CPU | L3 on wall / CPU "
        "| L1 off wall / CPU | L1 on wall / CPU | zstd -3 wall / CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["imports"]:
        z = r["zstd3"]["bytes"]
        c = r["configs"]

        def size(k):
            return f"{c[k]['bytes'] / 1e6:.1f} ({c[k]['bytes'] / z:.2f}x)"

        def cost(k):
            return f"{c[k]['wall']:.2f} / {c[k]['cpu']:.2f} s"

        lines.append(
            f"| {r['dump']} | {c['L3 off']['data_bytes'] / (1 << 20):.0f} | {c['L3 on']['dedup_pages']} "
            f"| {z / 1e6:.1f} | {size('L3 off')} | {size('L3 on')} | {size('L1 off')} | {size('L1 on')} "
            f"| {cost('L3 off')} | {cost('L3 on')} | {cost('L1 off')} | {cost('L1 on')} "
            f"| {r['zstd3']['wall']:.2f} / {r['zstd3']['cpu']:.2f} s |")
    lines += ["", "Wall min-max per configuration:", ""]
    for r in result["imports"]:
        lines.append(f"- {r['dump']}: " + ", ".join(
            f"{k} {v['wall_min']:.2f}-{v['wall_max']:.2f} s" for k, v in r["configs"].items()))
    if result.get("reads"):
        lines += [
            "",
            "## Read cost (plain vs dedup, level 3)",
            "",
            "drgn's reads recorded once by `readlatency_bench.record_reads` (an `analyze` of the plain "
            "dump), replayed through `PhysicalMemory.read` on a freshly opened dump (cold) and again "
            "(warm); `analyze --format json` wall (CLI, new process each run).",
            "",
            "| dump | reads | plain cold / warm ms | dedup cold / warm ms | records decoded plain / dedup "
            "| analyze plain s | analyze dedup s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result["reads"]:
            p, d = r["plain"], r["dedup"]
            lines.append(
                f"| {r['dump']} | {r['reads']} | {p['cold_ms']:.1f} / {p['warm_ms']:.1f} "
                f"| {d['cold_ms']:.1f} / {d['warm_ms']:.1f} | {p['records_decoded']} / {d['records_decoded']} "
                f"| {p['analyze_s']:.2f} ({p['analyze_min_max'][0]:.2f}-{p['analyze_min_max'][1]:.2f}) "
                f"| {d['analyze_s']:.2f} ({d['analyze_min_max'][0]:.2f}-{d['analyze_min_max'][1]:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dumps", default="", help="e.g. 512M-idle,2G-busy (default: all six)")
    ap.add_argument("--no-reads", action="store_true", help="skip the read-cost part")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path, help="write the markdown tables here")
    args = ap.parse_args(argv)
    dumps = [tuple(d.split("-")) for d in args.dumps.split(",")] if args.dumps else DUMPS
    import xxhash
    import zstandard

    zstd_cli = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip(" *\n")
    load_before = "/".join(f"{x:.2f}" for x in os.getloadavg())
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    try:
        imports = bench_imports(args.repeats, dumps, tmp)
        reads = [] if args.no_reads else bench_reads(
            args.repeats, [d for d in READ_DUMPS if d in dumps], tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "command": "python bench/dedup_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "system": f"{platform.system()} {platform.release()}",
                    "python": platform.python_version(), "zstandard": zstandard.__version__,
                    "libzstd": ".".join(map(str, zstandard.ZSTD_VERSION)), "xxhash": xxhash.VERSION,
                    "zstd_cli": zstd_cli},
        "load_before": load_before, "load_after": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "minutes": (time.perf_counter() - t0) / 60, "repeats": args.repeats,
        "imports": imports, "reads": reads,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    md = markdown(result)
    if args.md:
        args.md.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
