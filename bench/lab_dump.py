"""Crash-lab benchmark: boot-to-panic time and QEMU's two dump formats, idle vs busy.

For each memory size and workload the script boots the Debian cloud kernel
under QEMU, panics it with sysrq-c, and dumps the same paused guest twice:
as an ELF vmcore (what the lab keeps) and as QEMU's compressed
``kdump-zlib`` (makedumpfile's flattened format) — the peer measured in the
same run.  Results go to docs/benchmarks/lab.md.

    python bench/lab_dump.py --mem 512M --mem 2G --repeat 3
"""

from __future__ import annotations

from machine_info import cpu_model
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tsubaki_forensics.lab import ensure_kernel, get_scenario, get_workload, parse_size
from tsubaki_forensics.lab.host import find_static_busybox, probe_accelerator
from tsubaki_forensics.lab.initramfs import MARKER_PREFIX, READY_LINE, build_initramfs
from tsubaki_forensics.lab.debpkg import select_modules
from tsubaki_forensics.lab.kernel import GUEST_MODULES
from tsubaki_forensics.lab.qemu import GuestSpec, run_guest

PEER = "kdump-zlib"


def one_run(kern, mem: int, workload: str, accel: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tsk-bench-lab-", dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        initrd = tmp / "initrd.cpio"
        build_initramfs(initrd, find_static_busybox(), select_modules(kern.modules, GUEST_MODULES),
                        get_scenario("sysrq"), get_workload(workload), f"{MARKER_PREFIX} bench")
        spec = GuestSpec(bzimage=kern.bzimage, initrd=initrd, mem=mem, smp=2, workdir=tmp / "run", accel=accel,
                         ready_line=READY_LINE, timeout=900, extra_dumps=(PEER,))
        t0 = time.monotonic()
        run = run_guest(spec)
        return {
            "boot_to_panic_s": run.timings["boot_to_panic_s"],
            "elf_s": run.timings["dump_s"],
            "peer_s": run.timings[f"dump_{PEER}_s"],
            "elf_bytes": run.vmcore.stat().st_size,
            "peer_bytes": (spec.workdir / f"vmcore.{PEER}").stat().st_size,
            "wall_s": time.monotonic() - t0,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", action="append", help="guest RAM (repeatable); default 512M and 2G")
    ap.add_argument("--workload", action="append", choices=["idle", "busy"], help="default both")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs/benchmarks/lab.md")
    args = ap.parse_args()
    mems = args.mem or ["512M", "2G"]
    workloads = args.workload or ["idle", "busy"]
    kern = ensure_kernel(args.kernel)
    accel = probe_accelerator(kern.bzimage)
    rows = []
    for mem in mems:
        for workload in workloads:
            runs = [one_run(kern, parse_size(mem), workload, accel) for _ in range(args.repeat)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append((mem, workload, med))
            print(mem, workload, {k: round(v, 2) for k, v in med.items()}, flush=True)
    cpu = cpu_model()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [
        "# Crash lab: boot to panic, and QEMU's ELF dump vs kdump-zlib",
        "",
        f"Command: `python bench/lab_dump.py {' '.join('--mem ' + m for m in mems)} "
        f"{' '.join('--workload ' + w for w in workloads)} --repeat {args.repeat}`  ",
        f"Machine: {cpu}, {os.cpu_count()} CPUs (shared with other jobs), {platform.system()} {platform.release()}, "
        f"{qemu}, accelerator {accel}, kernel {kern.release}, sysrq-c, 2 vCPUs.  ",
        f"Medians of {args.repeat} boots per row; the two dumps are of the same paused guest, one after the other, "
        "into the same file system.",
        "",
        f"| RAM | workload | boot→panic s | ELF dump s | {PEER} dump s | time {PEER}/ELF | ELF MiB | {PEER} MiB | size {PEER}/ELF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mem, workload, m in rows:
        lines.append(
            f"| {mem} | {workload} | {m['boot_to_panic_s']:.1f} | {m['elf_s']:.2f} | {m['peer_s']:.2f} | "
            f"{m['peer_s'] / m['elf_s']:.1f}x | {m['elf_bytes'] / 2**20:.0f} | {m['peer_bytes'] / 2**20:.0f} | "
            f"{m['peer_bytes'] / m['elf_bytes']:.2f} |"
        )
    lines += ["", "kdump-zlib compresses page by page inside QEMU on one thread and skips zero pages; "
              "the ELF dump is a plain copy of guest RAM. On an idle guest (mostly zero pages) the "
              "compressed dump looks cheap; with the busy workload it is several times slower than "
              "the copy: idle-only measurements mislead, which is why the lab has a busy workload.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if shutil.which("qemu-system-x86_64") is None:
        raise SystemExit("qemu-system-x86_64 is needed (apt-get install qemu-system-x86)")
    main()
