"""Benchmark: one CPU's throughput for each step of a dump, on real crash memory.

Why: ``collect`` puts the CPU work of every policy on its timeline from
constants (monitor_model/cpu.py), so the timeline stays deterministic; those
constants must come from a real CPU.  This script measures, on one thread, on
the non-zero pages of a real lab crash:

- *zstd-3*: the writer's own compressor (level 3, whole-chunk window) on
  8 MiB chunks, what the monitor does;
- *zlib-1*: ``zlib.compress(page, 1)`` page by page, what ``makedumpfile -c``
  does (``compress2(..., Z_BEST_SPEED)`` on every 4 KiB page);
- *zero test*: "is this 4 KiB page all zeros", numpy over 8 MiB at a time
  (both the monitor and makedumpfile test every page they read);
- *classification*: locating and reducing the struct pages and applying the
  level-31 rules (:class:`~tsubaki_forensics.pageclass.PageClassifier`
  without its zero scan), seconds per GiB of RAM.

Throughputs are of *input* bytes, from the process's CPU time (not wall
time: the 2-CPU host is shared with other jobs); medians of ``--repeats``.

    python bench/codec_throughput.py [--crash 6.12:busy:2G:2] [--sample 256M] [--repeats 3] [--out docs/benchmarks/codec.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

__all__ = ["measure", "main"]

PAGE = 4096
CHUNK = 8 << 20


def _crash(spec: str) -> Path:
    from tsubaki_forensics.lab import CrashParams, cached_crash

    kernel, workload, mem, smp = spec.split(":")
    params = CrashParams("sysrq", mem, int(smp), workload, kernel, False).normalized()
    return cached_crash(params, log=lambda m: sys.stderr.write(f"crash lab: {m}\n")).vmcore


def _sample(vmcore, limit: int) -> bytes:
    """Up to ``limit`` bytes of non-zero pages from 8 MiB chunks spread evenly
    over all memory (every k-th chunk, k chosen so about twice the sample is read)."""
    chunks = [pos for s, n, *_ in vmcore.ranges() for pos in range(s, s + n - CHUNK + 1, CHUNK)]
    step = max(1, len(chunks) * CHUNK // (2 * limit))
    out, got = [], 0
    for pos in chunks[::step] + [c for i, c in enumerate(chunks) if i % step]:
        pages = np.frombuffer(bytes(vmcore.read(pos, CHUNK)), np.uint64).reshape(-1, PAGE // 8)
        kept = pages[pages.any(axis=1)].tobytes()
        out.append(kept)
        got += len(kept)
        if got >= limit:
            break
    return b"".join(out)[:limit]


def _time(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t = time.process_time()  # CPU time of this (single-threaded) process: the shared
        fn()                     # host's other jobs do not count against the codec
        runs.append(time.process_time() - t)
    return statistics.median(runs)


def measure(vmcore_path: Path, sample: int, repeats: int) -> dict:
    """Seconds and bytes of every measured step (medians)."""
    from tsubaki_forensics.pageclass import PageClassifier
    from tsubaki_forensics.pageclass.rules import classify_struct_pages
    from tsubaki_forensics.tsd.encode import compressor
    from tsubaki_forensics.vmcore import ElfVmcore

    with ElfVmcore(vmcore_path) as v:
        data = _sample(v, sample)
        ram = sum(n for _, n, *_ in v.ranges())
        cctx = compressor(3, 23)
        view = memoryview(data)
        out = {"sample_bytes": len(data), "ram_bytes": ram}

        def zstd():
            out["zstd_out"] = sum(len(cctx.compress(view[i:i + CHUNK])) for i in range(0, len(view), CHUNK))

        def zlib1():
            out["zlib_out"] = sum(min(PAGE, len(zlib.compress(view[i:i + PAGE], 1)))
                                  for i in range(0, len(view), PAGE))

        def zero():
            for i in range(0, len(view), CHUNK):
                np.frombuffer(view[i:i + CHUNK], np.uint64).reshape(-1, PAGE // 8).any(axis=1)

        out["zstd_s"] = _time(zstd, repeats)
        out["zlib_s"] = _time(zlib1, max(1, repeats))
        out["zero_s"] = _time(zero, repeats)
        PageClassifier(v, v.vmcoreinfo)._program_once()  # drgn plugin discovery, once

        def classify():
            c = PageClassifier(v, v.vmcoreinfo)
            c._program_once()
            classify_struct_pages(c.features, 31, free_area_orders=c.layout.free_area_orders,
                                  present=c.present)

        out["classify_s"] = _time(classify, repeats)
        release = (v.vmcoreinfo or b"").decode(errors="replace").split("OSRELEASE=", 1)[-1].split("\n", 1)[0]
        out["release"] = release
    return out


def report(res: dict, crash: str, command: str, repeats: int) -> str:
    from machine_info import cpu_model

    mb = 1e6
    n = res["sample_bytes"]
    gib = res["ram_bytes"] / (1 << 30)
    rows = [
        ("zstd level 3, 8 MiB chunks (monitor)", n / res["zstd_s"] / mb, f"{n / res['zstd_out']:.2f}"),
        ("zlib level 1, per 4 KiB page (makedumpfile -c)", n / res["zlib_s"] / mb, f"{n / res['zlib_out']:.2f}"),
        ("zero-page test (numpy, 8 MiB at a time)", n / res["zero_s"] / mb, "-"),
    ]
    lines = ["# Benchmark: per-codec CPU throughput (one thread)", "",
             f"Command: `{command}` (medians of {repeats} repeats, CPU time of one thread).", "",
             f"- Machine: {platform.machine()}, {cpu_model()}, Python {platform.python_version()}; "
             "2 CPUs shared with other jobs.",
             f"- Input: {n / (1 << 20):.0f} MiB of non-zero pages sampled evenly across the memory of "
             f"the lab crash `{crash}` ({res['release']}, {gib:.2f} GiB).",
             "- These figures are the constants of `monitor_model/cpu.py` (collect's CPU model).", "",
             "| step | MB/s of input (10^6 B) | compression ratio |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:,.0f} | {ratio} |" for name, rate, ratio in rows]
    lines += ["", f"Page classification (struct pages + level-31 rules, no zero scan): "
                  f"{res['classify_s']:.3f} s for {gib:.2f} GiB = "
                  f"**{res['classify_s'] / gib:.3f} s/GiB**.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crash", default="6.12:busy:2G:2", help="KERNEL:WORKLOAD:MEM:SMP of a lab crash")
    ap.add_argument("--sample", default="256M", help="bytes of non-zero pages to compress")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="-", help="markdown file, or - for stdout")
    args = ap.parse_args(argv)
    from monitor_model.machine import parse_size

    res = measure(_crash(args.crash), parse_size(args.sample), args.repeats)
    command = "python bench/codec_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(res, args.crash, command.strip(), args.repeats)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
