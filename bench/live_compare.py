"""Benchmark: live mode, measured on a real guest: ``tsubaki`` against dump-then-reset.

One QEMU guest per memory size (Debian 12 cloud 6.1, TCG, 256 MiB base RAM +
128 MiB DIMMs).  For each storage profile it panics the guest twice in the
same QEMU process: first the ``tsubaki`` order, then, once the guest is back
with all its memory, ``dump-then-reset``.  Before each panic the guest
fills the same amount of memory with random data.  Times are real seconds
since QEMU stamped GUEST_PANICKED: service ready = the init's marker on the
serial console, dump complete = INDEX+END flushed, all online = the last
hand-back acknowledged by the guest agent.  Beside each, the emulation's
prediction (monitor_model, same dump, same regions and storage profile,
compression CPU on the timeline, boot time = the measured undisturbed boot
of the dump-then-reset runs).  Every figure is the median of ``--repeat``
panics per order, the orders alternating in the same guest.

    python bench/live_compare.py --mem 1G --storage unlimited --storage sd-uhs1 --repeat 3 --json /tmp/live.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from monitor_model.machine import parse_size
from monitor_model.storage import get_profile
from tsubaki_forensics.live import GuestConfig, LiveParams, collect_panic, normal_operation, open_guest
from tsubaki_forensics.live.predict import predict
from tsubaki_forensics.live.session import remove_ram


async def one_guest(mem: int, storages: list[str], fill_mib: int, work: Path, repeat: int,
                    smp: int, threads: int) -> list[dict]:
    guest = open_guest(GuestConfig(mem=mem, smp=smp), work / f"guest-{mem >> 20}M")
    rows = []
    try:
        async with guest:
            await normal_operation(guest, fill_mib=fill_mib)
            for rep, storage in ((rep, s) for rep in range(repeat) for s in storages):
                for order in ("tsubaki", "dump-then-reset"):
                    out = work / f"{mem >> 20}M-{storage.replace(':', '_')}-{order}-{rep}.tsd"
                    r = await collect_panic(guest, out, LiveParams(policy=order, storage=get_profile(storage), threads=threads),
                                            progress=lambda m: print(f"  {order}: {m}", file=sys.stderr))
                    rows.append({"mem": mem, "fill_mib": fill_mib, "storage_spec": storage, "rep": rep,
                                 "smp": smp, "threads": threads,
                                 **r.to_json()})
                    print(f"{mem >> 20}M {storage} {order}: ready {r.ready_s:.2f} s, complete "
                          f"{r.dump_complete_s:.2f} s, all online {r.all_online_s:.2f} s", file=sys.stderr)
                    # back to normal operation for the next panic: all memory, the same data volume
                    await normal_operation(guest, fill_mib=fill_mib, wait_agent=False)
            ranges = guest.layout.ranges()
            base = guest.layout.base_piece().nbytes
    finally:
        remove_ram(guest)
    out = []
    for storage in storages:
        runs = [r for r in rows if r["storage_spec"] == storage]
        # the emulation's boot time: the median undisturbed boot (after the whole dump)
        boot = statistics.median(r["boot_s"] for r in runs if r["order"] == "dump-then-reset")
        for order in ("tsubaki", "dump-then-reset"):
            mine = [r for r in runs if r["order"] == order]
            row = {k: (statistics.median(r[k] for r in mine) if k in MEDIAN_KEYS else v)
                   for k, v in mine[0].items()}
            row["runs"] = [{k: r[k] for k in MEDIAN_KEYS} for r in mine]
            p = predict(Path(mine[0]["output"]), ranges, order, storage=get_profile(storage),
                        reboot_mem=base, boot_s=boot)
            row["predicted"] = {"boot_s": boot, "restart_s": p.restart_s, "reboot_start_s": p.reboot_start_s,
                                "dump_complete_s": p.dump_complete_s, "full_memory_s": p.full_memory_s}
            out.append(row)
    for r in rows:
        Path(r["output"]).unlink(missing_ok=True)
    return out


MEDIAN_KEYS = ("reset_s", "ready_s", "boot_s", "dump_complete_s", "all_online_s", "bytes_written")


def table(rows: list[dict]) -> str:
    out = ["| guest | storage | order | runs | reset | service ready (pred.) | boot | dump complete (pred.) "
           "| all memory online (pred.) | dump file |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = r["predicted"]
        out.append(
            f"| {r['mem'] >> 20} MiB, {r['fill_mib']} MiB filled, {r['smp']} vCPU, {r['threads']} thr "
            f"| {r['storage']} | {r['order']} "
            f"| {len(r['runs'])} "
            f"| {r['reset_s']:.2f} | **{r['ready_s']:.2f}** ({p['restart_s']:.2f}) | {r['boot_s']:.2f} "
            f"| {r['dump_complete_s']:.2f} ({p['dump_complete_s']:.2f}) "
            f"| {r['all_online_s']:.2f} ({p['full_memory_s']:.2f}) | {r['bytes_written'] / 1e6:.0f} MB |")
    for mem in sorted({r["mem"] for r in rows}):
        for storage in dict.fromkeys(r["storage"] for r in rows):
            pair = {r["order"]: r for r in rows if r["mem"] == mem and r["storage"] == storage}
            if len(pair) == 2:
                t, k = pair["tsubaki"], pair["dump-then-reset"]
                out.append(f"\n{mem >> 20} MiB, {storage}: service back {k['ready_s'] / t['ready_s']:.2f}x "
                           f"sooner with tsubaki ({t['ready_s']:.2f} s vs {k['ready_s']:.2f} s); predicted "
                           f"{k['predicted']['restart_s'] / t['predicted']['restart_s']:.2f}x.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", action="append", default=None, help="guest memory (repeatable), default 1G")
    ap.add_argument("--storage", action="append", default=None, help="storage profile (repeatable)")
    ap.add_argument("--fill", default="3/8", help="data to fill before each panic: size or fraction of --mem")
    ap.add_argument("--repeat", type=int, default=3, help="panics per order and storage (medians)")
    ap.add_argument("--smp", type=int, default=2, help="guest vCPUs")
    ap.add_argument("--threads", type=int, default=2, help="the monitor's compression threads")
    ap.add_argument("--json", type=Path, help="write the raw rows here")
    args = ap.parse_args()
    mems = [parse_size(m) for m in (args.mem or ["1G"])]
    storages = args.storage or ["unlimited", "sd-uhs1"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tsk-live-bench-") as tmp:
        for mem in mems:
            if "/" in args.fill:
                a, b = args.fill.split("/")
                fill = mem * int(a) // int(b) >> 20
            else:
                fill = parse_size(args.fill) >> 20
            rows += asyncio.run(one_guest(mem, storages, fill // 16 * 16, Path(tmp), args.repeat,
                                         args.smp, args.threads))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {qemu}, TCG; load average at the end "
          f"{' '.join(load)}; "
          f"command: python bench/live_compare.py {' '.join(sys.argv[1:])}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
