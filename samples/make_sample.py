"""Regenerate the shipped sample dump ``samples/lab-oom.tsd`` and its ground truth.

    python samples/make_sample.py            # writes samples/lab-oom.tsd + .ground_truth.json

The sample is a real crash of the crash lab (Debian 12 cloud kernel 6.1,
``oom`` scenario, 512 MiB, 2 vCPUs, idle workload), collected by the public
CLI in the ``tsubaki-triage`` order exactly as a user would:

    tsubaki-forensics collect lab:oom,mem=512M,smp=2,workload=idle,kernel=6.1 \\
        --policy tsubaki-triage --level 19 --no-fsync -o samples/lab-oom.tsd

Why this crash: an OOM panic leaves almost every free page zeroed (the
``dd`` buffer took them all, and the kernel clears anonymous pages), so a
full dump is ~12 MB; an idle sysrq crash keeps the stale, incompressible
bzImage copies of the boot in free memory and stays above 33 MB even at
zstd level 19 with 256 MiB of RAM (samples/README.md has the numbers).

The ground truth is the lab's own ``ground_truth.json`` of that crash
(plain drgn + DWARF vmlinux), unchanged, plus a ``sample`` section made here
with the same DWARF vmlinux: the real (not inlined) frames of every
backtrace with their pc, which is what an analysis without DWARF can see
(no inline frames), so the tests can compare frame by frame.  Needs the lab
(QEMU, and root/apt/network the first time a kernel is downloaded);
using the sample needs none of it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["NAME", "SCENARIO", "LEVEL", "make_sample", "real_frames", "main"]

HERE = Path(__file__).resolve().parent
NAME = "lab-oom"
SCENARIO = {"scenario": "oom", "mem": "512M", "smp": 2, "workload": "idle", "kernel": "6.1"}
LEVEL = 19  # zstd: 12.5 MB instead of 15.4 MB at the default 3, for ~45 s of compression once


def _spec() -> str:
    rest = ",".join(f"{k}={v}" for k, v in SCENARIO.items() if k != "scenario")
    return f"lab:{SCENARIO['scenario']},{rest}"


def _cli() -> list[str]:
    """The installed ``tsubaki-forensics`` of this interpreter (or its entry function)."""
    exe = Path(sys.executable).parent / "tsubaki-forensics"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("tsubaki-forensics")
    if found:
        return [found]
    return [sys.executable, "-c", "from tsubaki_forensics.cli.app import main; main()"]


def real_frames(vmcore: Path, vmlinux: Path, ground_truth: dict) -> dict:
    """Real frames (name, pc) of the crashed thread and of every other present CPU, from DWARF.

    Set up like the lab's ground truth (plain drgn on the ELF vmcore, module
    frames named from the modules' kallsyms); inline frames are left out.
    """
    import drgn
    from drgn.helpers.linux.cpumask import for_each_present_cpu
    from drgn.helpers.linux.kallsyms import load_module_kallsyms
    from drgn.helpers.linux.sched import cpu_curr

    from tsubaki_forensics.selfcontained.verify import KERNEL_SPACE

    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)

    def frames(trace) -> list[dict]:
        out = []
        for frame in trace:
            if frame.pc < KERNEL_SPACE:
                break
            if not frame.is_inline:
                name = frame.name or prog.symbol(frame.pc).name
                out.append({"function": name, "pc": frame.pc})
        return out

    crashed_cpu = int(ground_truth["crashed_cpu"])
    return {
        "backtrace": frames(prog.crashed_thread().stack_trace()),
        "cpu_backtraces": {str(cpu): frames(prog.stack_trace(cpu_curr(prog, cpu)))
                           for cpu in for_each_present_cpu(prog) if cpu != crashed_cpu},
    }


def make_sample(out_dir: Path = HERE, level: int = LEVEL) -> tuple[Path, Path]:
    """Collect the sample with the public CLI and write its ground truth beside it."""
    from tsubaki_forensics.lab import CrashParams, cached_crash
    from tsubaki_forensics.tsd import open_dump

    crash = cached_crash(CrashParams(**SCENARIO).normalized(), log=lambda m: print(f"lab: {m}", file=sys.stderr))
    truth = dict(crash.ground_truth)
    if truth.get("backtrace_source") != "task":
        raise SystemExit(f"the lab's crash unwound from CPU registers ({truth.get('backtrace_source')}); "
                         "re-make it with `tsubaki-forensics lab crash oom --force` and run again")
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_path, truth_path = out_dir / f"{NAME}.tsd", out_dir / f"{NAME}.ground_truth.json"
    tmp = out_dir / f".{NAME}.tsd.tmp"
    command = [*_cli(), "collect", _spec(), "--policy", "tsubaki-triage", "--level", str(level),
               "--no-fsync", "-o", str(tmp)]
    print("+", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, stdout=sys.stderr)

    dump = open_dump([tmp])
    try:  # the dump must be of the very crash whose ground truth we ship
        props = dict(dump.properties)
        if props.get("vmcore") != str(crash.vmcore):
            raise SystemExit(f"collect read {props.get('vmcore')}, not the lab crash {crash.vmcore}")
    finally:
        dump.close()

    truth["sample"] = {
        "name": NAME,
        "command": f"tsubaki-forensics collect {_spec()} --policy tsubaki-triage --level {level} --no-fsync",
        "crash": dict(SCENARIO),
        "zstd_level": level,
        "dump_bytes": tmp.stat().st_size,
        "dwarf_real_frames": real_frames(crash.vmcore, crash.vmlinux, truth),
    }
    os.replace(tmp, dump_path)
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    return dump_path, truth_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write (default: samples/)")
    parser.add_argument("--level", type=int, default=LEVEL, help=f"zstd level (default {LEVEL})")
    args = parser.parse_args(argv)
    dump_path, truth_path = make_sample(args.out_dir, args.level)
    print(f"{dump_path} ({dump_path.stat().st_size} bytes), {truth_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
