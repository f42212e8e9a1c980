"""One entry point for every peer comparison of issue 7, written to docs/benchmarks/summary.md.

Why one harness: a ratio only means something when ours and the peer ran
in the same run on the same dump, and every later change should be judged
by re-running one command.  This script builds (or reuses) the crash-lab
dumps and calls the per-topic scripts' own functions (or runs them as
subprocesses) instead of copying them:

- import: ``import_bench`` (ours vs ``zstd -1/-3 -T2`` and makedumpfile
  ``-l``/``-c`` x ``-d 1``/``-d 31`` on our exported ELF): wall, CPU, peak RSS, size;
- QEMU ``kdump-zlib``: ``lab_dump.one_run`` (a fresh guest, dumped both ways);
- analyze: ``analyze_bench.measure`` (the CLI vs plain drgn on the ELF);
- read latency: ``readlatency_bench.bench`` (drgn's recorded reads, cold and warm);
- downtime: ``collect_compare.py`` (policies x storage profiles x sizes);
- growth: every cost at the largest size over the cost at 512 MiB, next to the size ratio.

    python bench/run_all.py --quick            # 512 MiB idle+busy, 3 repeats: a few minutes
    python bench/run_all.py                    # 512M, 2G, 4G idle+busy, 5 repeats
    python bench/run_all.py --sizes 512M,4G --repeats 3 --skip lab
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

# The per-topic scripts beside this file (bench/ is not a package).
from machine_info import cpu_model
import import_bench
import readlatency_bench

__all__ = ["main", "import_section", "analyze_section", "latency_section", "lab_section", "downtime_section"]

SECTIONS = ("import", "lab", "analyze", "latency", "downtime")
SIZE_BYTES = {"512M": 512 << 20, "1G": 1 << 30, "2G": 2 << 30, "4G": 4 << 30}
PEERS_D31 = ("makedumpfile -l -d 31", "makedumpfile -c -d 31")
OURS_IMPORT = "tsubaki-forensics import (CLI, end to end)"


def log(msg: str) -> None:
    sys.stderr.write(f"[run_all {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def crashes(sizes: list[str], workloads: list[str]) -> dict[str, object]:
    """``"512M:idle"`` -> CrashResult, made through the lab API when not cached."""
    from tsubaki_forensics.lab import cached_crash

    out = {}
    for mem in sizes:
        for workload in workloads:
            log(f"crash {mem} {workload} (cached or made now)")
            out[f"{mem}:{workload}"] = cached_crash(scenario="sysrq", mem=mem, smp=2, workload=workload)
    return out


def _median(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


# -- import ----------------------------------------------------------------


def import_section(vmcore: Path, repeats: int, tmp: Path) -> dict:
    """Ours and every peer on the same exported ELF, rotated, ``repeats`` rounds; medians."""
    from tsubaki_forensics.tsd import open_dump
    from tsubaki_forensics.vmcore import write_elf_vmcore
    from tsubaki_forensics.vmcore.importer import import_vmcore

    export = tmp / "export.elf"
    res = import_vmcore(vmcore, tmp / "prep.tsd")
    with open_dump(tmp / "prep.tsd") as dump:
        write_elf_vmcore(export, dump.memory, dump.vmcoreinfo, dump.notes)
    (tmp / "prep.tsd").unlink()
    table = import_bench.tools(vmcore, export, tmp)
    for name in PEERS_D31:
        flag = name.split()[1]
        out = tmp / f"d31{flag}.kd"
        table[name] = (["makedumpfile", flag, "-d", "31", str(export), str(out)], out, export)
    runs: dict[str, list[dict]] = {name: [] for name in table}
    names = list(table)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            cmd, out, src = table[name]
            import_bench.warm(src)
            runs[name].append(import_bench.run_child(cmd, out))
            out.unlink()
    export.unlink()
    return {"memory_bytes": res.stats.raw_bytes, "data_bytes": res.stats.raw_bytes - res.stats.zero_bytes,
            "vmcore_bytes": vmcore.stat().st_size, "median": {n: _median(v) for n, v in runs.items()}}


# -- QEMU kdump-zlib -------------------------------------------------------


def lab_section(mem: str, workload: str, repeats: int) -> dict:
    """QEMU's own compressed dump of a fresh guest next to its ELF dump (``lab_dump.one_run``)."""
    import lab_dump
    from tsubaki_forensics.lab import ensure_kernel, parse_size
    from tsubaki_forensics.lab.host import probe_accelerator

    kern = ensure_kernel("6.1")
    accel = probe_accelerator(kern.bzimage)
    runs = [lab_dump.one_run(kern, parse_size(mem), workload, accel) for _ in range(repeats)]
    return {"accel": accel, "repeats": repeats, "median": _median(runs)}


# -- analyze ---------------------------------------------------------------


def _measure(argv: list[str]) -> dict:
    """Wall, CPU and peak RSS of one child, RSS and CPU through GNU time.

    Not ``analyze_bench.measure``'s ``wait4``: this process grows to hundreds
    of MiB (in-process imports of 4 GiB dumps) and Linux carries a forking
    parent's peak RSS over into the child's ``ru_maxrss`` across exec.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", tf.name, *argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
        user, sys_, rss_kib = tf.read().split()[-3:]
    return {"wall": wall, "cpu": float(user) + float(sys_), "rss_mib": int(rss_kib) / 1024}


def analyze_section(crash, repeats: int, tmp: Path) -> dict:
    """The real ``analyze`` command on a .tsd vs plain drgn on the ELF; interleaved; medians."""
    from tsubaki_forensics.vmcore.importer import import_vmcore

    tsd = tmp / "analyze.tsd"
    import_vmcore(crash.vmcore, tsd)
    cmds = {
        "ours": [sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(tsd),
                 "--vmlinux", str(crash.vmlinux), "--format", "json"],
        "peer": [sys.executable, str(BENCH / "analyze_peer.py"), str(crash.vmcore), str(crash.vmlinux)],
    }
    for argv in cmds.values():
        _measure(argv)  # warm the page cache
    runs: dict[str, list[dict]] = {k: [] for k in cmds}
    for _ in range(repeats):
        for name, argv in cmds.items():
            runs[name].append(_measure(argv))
    tsd.unlink()
    return {n: _median(v) for n, v in runs.items()}


# -- read latency ----------------------------------------------------------


def latency_section(crash, repeats: int, tmp: Path) -> dict:
    from tsubaki_forensics.vmcore.importer import import_vmcore

    tsd = tmp / "latency.tsd"
    import_vmcore(crash.vmcore, tsd)
    try:
        return readlatency_bench.bench(crash.vmcore, crash.vmlinux, tsd, repeats)
    finally:
        tsd.unlink()


# -- downtime --------------------------------------------------------------


def downtime_section(specs: list[str], repeats: int, tmp: Path) -> str:
    """The emulated downtime tables from ``collect_compare.py`` (its own markdown, headings demoted)."""
    out = tmp / "collect.md"
    cmd = [sys.executable, str(BENCH / "collect_compare.py"), "--repeat", str(repeats), "--out", str(out), "--plot", ""]
    for spec in specs:
        cmd += ["--crash", spec]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    lines = out.read_text().splitlines()
    body = [("#" + line if line.startswith("## ") else line) for line in lines if not line.startswith("# ")]
    return "\n".join(body).strip() + "\n"


# -- environment -----------------------------------------------------------


def _version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def environment() -> dict:
    import drgn
    import typer
    import zstandard

    mem_total = next((int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "ram_mib": mem_total,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "drgn": drgn.__version__,
        "zstandard": f"{zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
        "typer": typer.__version__,
        "zstd": _version(["zstd", "--version"]),
        "makedumpfile": _version(["makedumpfile", "-v"]),
        "qemu": _version(["qemu-system-x86_64", "--version"]),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512M only, 3 repeats, one lab boot per workload")
    ap.add_argument("--sizes", default=None, help="comma-separated guest RAM sizes (default 512M,2G,4G)")
    ap.add_argument("--workloads", default="idle,busy")
    ap.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 5; --quick 3)")
    ap.add_argument("--lab-repeats", type=int, default=1, help="fresh QEMU boots per crash for kdump-zlib")
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "summary.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    ap.add_argument("--from-json", type=Path, default=None, help="only re-render a previous --json result")
    args = ap.parse_args(argv)
    from run_all_report import render  # the markdown and the plots live beside this file

    if args.from_json:
        args.out.write_text(render(json.loads(args.from_json.read_text()), args.out))
        log(f"wrote {args.out}")
        return 0
    sizes = (args.sizes or ("512M" if args.quick else "512M,2G,4G")).split(",")
    workloads = args.workloads.split(",")
    repeats = args.repeats or (3 if args.quick else 5)
    skip = {s for s in args.skip.split(",") if s}
    if unknown := skip - set(SECTIONS):
        raise SystemExit(f"unknown section(s) to skip: {', '.join(sorted(unknown))}")
    command = "python bench/run_all.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result: dict = {"command": command.strip(), "sizes": sizes, "workloads": workloads, "repeats": repeats,
                    "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_start": load(),
                    "env": environment(), "import": {}, "lab": {}, "analyze": {}, "latency": {}, "downtime": None}
    t0 = time.monotonic()
    dumps = crashes(sizes, workloads)
    with tempfile.TemporaryDirectory(prefix="bench-all-", dir=os.environ.get("TMPDIR")) as tmpdir:
        tmp = Path(tmpdir)
        for spec, crash in dumps.items():
            if "import" not in skip:
                log(f"import {spec}")
                result["import"][spec] = import_section(crash.vmcore, repeats, tmp)
            if "analyze" not in skip:
                log(f"analyze {spec}")
                result["analyze"][spec] = analyze_section(crash, repeats, tmp)
            if "latency" not in skip:
                log(f"read latency {spec}")
                result["latency"][spec] = latency_section(crash, repeats, tmp)
            if "lab" not in skip:
                log(f"QEMU kdump-zlib {spec} ({args.lab_repeats} fresh boot(s))")
                result["lab"][spec] = lab_section(*spec.split(":"), args.lab_repeats)
        if "downtime" not in skip:
            log("downtime table (collect_compare.py)")
            result["downtime"] = downtime_section(list(dumps), repeats, tmp)
    result["seconds"] = time.monotonic() - t0
    result["load_end"] = load()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    text = render(result, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"wrote {args.out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
