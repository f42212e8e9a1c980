"""Benchmark: collect's five policies at their dump levels on real crashes (issue 15).

For each lab crash (KERNEL:MEM:WORKLOAD), on one storage profile (sd-uhs1 by
default) with every other parameter at its default, runs, on the same
vmcore and sharing one page classification:

- ``reboot-only`` (the lower bound: nothing saved);
- ``kdump``: kdump-tools' default, ``makedumpfile -F -c -d 31`` in a
  capture kernel with one CPU (modelled, monitor_model/kdump_run.py);
- ``kdump-full``: the same at level 1;
- ``tsubaki`` and ``tsubaki-triage`` at ``-d 1`` (every page) and ``-d 31``.

All figures are emulated seconds (deterministic: storage model, CPU model
of monitor_model/cpu.py, the guest's measured boot time), so one run
suffices; ratios are against rows of the same run.  ``--kdump-check`` also
runs the real ``makedumpfile -F -c -d 31`` on a /proc/vmcore-style copy and
reports the size model's error (meaningful on 6.1: Debian's makedumpfile
1.7.2 predates 6.12's page flags).

    python bench/collect_levels.py --out docs/benchmarks/collect-levels.md [--kdump-check]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitor_model.engine import CollectParams, run_policy  # noqa: E402
from monitor_model.pages import PageBook  # noqa: E402
from monitor_model.policies import get_policy  # noqa: E402
from monitor_model.sources import VmcoreSource, lab_boot_seconds  # noqa: E402
from monitor_model.storage import PROFILES  # noqa: E402

CRASHES = ["6.1:512M:idle", "6.1:512M:busy", "6.1:2G:idle", "6.1:2G:busy", "6.1:4G:idle",
           "6.1:4G:busy", "6.12:2G:busy"]
ROWS = [("reboot-only", None), ("kdump", None), ("kdump-full", None), ("tsubaki", 1),
        ("tsubaki-triage", 1), ("tsubaki", 31), ("tsubaki-triage", 31)]


def open_crash(spec: str):
    from tsubaki_forensics.lab import CrashParams, cached_crash

    kernel, mem, workload = spec.split(":")
    crash = cached_crash(CrashParams("sysrq", mem, 2, workload, kernel, False).normalized(),
                         log=lambda m: sys.stderr.write(f"crash lab: {m}\n"))
    props = {"vmlinux": str(crash.vmlinux)}
    boot = lab_boot_seconds(crash.ground_truth)
    if boot is not None:
        props["boot_s"] = str(boot)
    return crash, VmcoreSource(crash.vmcore, props)


def run_crash(spec: str, storage: str, tmp: Path, kdump_check: bool) -> dict:
    from monitor_model.triage import plan_triage

    crash, source = open_crash(spec)
    try:
        book = PageBook(source)
        base = CollectParams(storage=PROFILES[storage], fsync=False)
        plan = None

        def triage(machine):
            nonlocal plan
            plan = plan or plan_triage(source, crash.vmlinux)
            return plan.steps()

        rows = {}
        for name, level in ROWS:
            params = base if level is None else replace(base, dump_level=level)
            out = None if name.startswith("kdump") else tmp / "b.tsd"
            t = time.perf_counter()
            r = run_policy(source, get_policy(name), params, out, triage=triage, book=book)
            key = name if level is None else f"{name} -d{level}"
            rows[key] = {"level": r.dump_level, "restart_s": r.restart_s, "full_memory_s": r.full_memory_s,
                         "complete_s": r.dump_complete_s, "stall_s": r.stall_s,
                         "bytes_written": r.bytes_written, "kept_pages": (r.pages or {}).get("kept"),
                         "total_pages": (r.pages or {}).get("total"), "wall_s": time.perf_counter() - t}
        res = {"spec": spec, "release": crash.manifest.get("kernel", {}).get("release", "?"),
               "memory": sum(n for _, n in source.ranges), "used": book.used_bytes(), "rows": rows}
        if kdump_check:
            from tsubaki_forensics.lab.makedumpfile import makedumpfile_output_size

            t = time.perf_counter()
            real = makedumpfile_output_size(crash.vmcore, 31, proc_copy=tmp / "vmcore.proc")
            res["makedumpfile_31"] = {"bytes": real, "wall_s": time.perf_counter() - t,
                                      "model_error": rows["kdump"]["bytes_written"] / real - 1}
            (tmp / "vmcore.proc").unlink(missing_ok=True)
        return res
    finally:
        source.close()


def render(results: list[dict], storage: str, command: str) -> str:
    from machine_info import cpu_model

    lines = ["# Benchmark: collect at dump levels (issue 15)", "",
             f"Command: `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}.",
             "", f"Storage `{storage}`, every other parameter at its default; emulated seconds since the "
             "panic (deterministic; CPU model in docs/benchmarks/codec.md).  `x kdump` = kdump's "
             "restart / this row's restart; `x reboot-only` = this row's restart / reboot-only's.", ""]
    lines += ["| crash | policy | -d | restart s | x kdump | x reboot-only | full memory s | "
              "dump complete s | stall s | MB written |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        k = res["rows"]["kdump"]["restart_s"]
        ro = res["rows"]["reboot-only"]["restart_s"]
        for key, r in res["rows"].items():
            comp = "-" if r["complete_s"] is None else f"{r['complete_s']:.2f}"
            lines.append(f"| {res['spec']} | {key.split(' ')[0]} | {'-' if r['level'] is None else r['level']} | "
                         f"{r['restart_s']:.2f} | {k / r['restart_s']:.2f} | {r['restart_s'] / ro:.2f} | "
                         f"{r['full_memory_s']:.2f} | {comp} | {r['stall_s']:.2f} | "
                         f"{r['bytes_written'] / 1e6:.1f} |")
    checks = [r for r in results if "makedumpfile_31" in r]
    if checks:
        lines += ["", "kdump size model against the real `makedumpfile -F -c -d 31` (1.7.2) on the same memory:", "",
                  "| crash | kernel | model MB | makedumpfile MB | error |", "|---|---|---:|---:|---:|"]
        for r in checks:
            m = r["makedumpfile_31"]
            lines.append(f"| {r['spec']} | {r['release']} | {r['rows']['kdump']['bytes_written'] / 1e6:.2f} | "
                         f"{m['bytes'] / 1e6:.2f} | {m['model_error'] * 100:+.2f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crash", action="append", help=f"KERNEL:MEM:WORKLOAD (default: {' '.join(CRASHES)})")
    ap.add_argument("--storage", default="sd-uhs1")
    ap.add_argument("--kdump-check", action="store_true")
    ap.add_argument("--out", default="-")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-levels-") as tmp:
        for spec in args.crash or CRASHES:
            results.append(run_crash(spec, args.storage, Path(tmp), args.kdump_check))
            sys.stderr.write(f"{spec}: done\n")
    command = "python bench/collect_levels.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(results, args.storage, command.strip())
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        sys.stdout.write(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
