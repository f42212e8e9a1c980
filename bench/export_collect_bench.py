"""Whole-process cost of ``export`` and ``collect``: wall, CPU, minor faults per page, peak RSS.

Why (issue 21, "the same for export and collect"): ``import`` reads with
``pread`` into per-thread buffers and its minor faults stay far below one per
4 KiB page of input; this measures whether ``export`` (``.tsd`` -> ELF) and
``collect`` (the monitor model writing a ``.tsd`` from a vmcore) do too, and
what buffer reuse changed.  Each command is a child under GNU time
(``%e %U %S %R %M``), page cache warm, in rotating order, ``--runs`` times;
medians.  ``--baseline REV`` runs the same commands on an older revision
(``git archive`` into a temporary directory, first on ``PYTHONPATH``) in the
same rounds, so before and after share the machine's load.  Both trees are
byte-compiled first.  The ``.tsd`` that ``export`` reads is made once by this
revision's ``import`` (level 3, so both revisions read the same file).

    python bench/export_collect_bench.py --runs 5 --baseline 6c2cdf7 \\
        --crash 6.12.118+deb12-cloud-amd64/sysrq-busy-2G-smp2

writes docs/benchmarks/export_collect.md (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from import_pipeline_bench import CLI, baseline_tree, compile_trees, timed, warm
from machine_info import cpu_model

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def commands(vmcore: Path, tsd: Path, tmp: Path, tag: str) -> dict[str, tuple[list[str], Path]]:
    py = sys.executable
    return {
        "export": ([py, "-c", CLI, "export", str(tsd), "-o", str(tmp / f"exp-{tag}.elf"), "--force"],
                   tmp / f"exp-{tag}.elf"),
        "collect": ([py, "-c", CLI, "collect", str(vmcore), "-o", str(tmp / f"col-{tag}.tsd"),
                     "--storage", "unlimited", "--force"], tmp / f"col-{tag}.tsd"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--crash", action="append", default=[],
                   help="a cached lab crash, RELEASE/KEY under the crash cache; may repeat")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--baseline", help="git revision whose commands also run (before/after)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "export_collect.md")
    args = p.parse_args(argv)
    from tsubaki_forensics.lab.cache import cache_root

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["# export and collect: whole processes, before and after", "",
             f"Command: `python bench/export_collect_bench.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "", f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}.", "",
             f"Medians of {args.runs} interleaved runs (rotating order, page cache warm); user/sys/minor "
             "faults/peak RSS from GNU time around each child. Faults/page = minor faults per 4 KiB "
             "page of the vmcore. \"baseline\" is the same command on "
             f"{'revision `' + args.baseline + '`' if args.baseline else 'no older revision'}, in the "
             "same rounds. `collect` runs the default policy with `--storage unlimited`.", ""]
    with tempfile.TemporaryDirectory(prefix="tsd-expcol-", dir=os.environ.get("TMPDIR", "/tmp")) as d:
        tmp = Path(d)
        envs: dict[str, dict | None] = {"": None}
        trees = [ROOT / "tsubaki_forensics"]
        if args.baseline:
            base = baseline_tree(args.baseline, tmp, "tsubaki_forensics", "monitor_model")
            envs[" (baseline)"] = {**os.environ, "PYTHONPATH": str(base)}
            trees.append(base)
        compile_trees(trees)
        for key in args.crash:
            vmcore = cache_root() / "crashes" / key / "vmcore.elf"
            if not vmcore.exists():
                raise SystemExit(f"no cached crash {key} ({vmcore})")
            tsd = tmp / "in.tsd"
            subprocess.run([sys.executable, "-c", CLI, "import", str(vmcore), "-o", str(tsd), "--level", "3",
                            "--force"], check=True, capture_output=True)
            table: dict[str, tuple[list[str], Path, dict | None]] = {}
            for suffix, env in envs.items():
                for name, (cmd, out) in commands(vmcore, tsd, tmp, "b" if suffix else "n").items():
                    table[name + suffix] = (cmd, out, env)
            names = sorted(table)
            results: dict[str, list[dict]] = {n: [] for n in names}
            for r in range(args.runs):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    cmd, out, env = table[name]
                    warm(vmcore)
                    warm(tsd)
                    results[name].append(timed(cmd, out, env, cwd=tmp))
                    out.unlink()
                sys.stderr.write(f"  {key}: round {r + 1}/{args.runs}\n")
            pages = vmcore.stat().st_size / 4096
            lines += [f"## {key} ({vmcore.stat().st_size / 2**20:.0f} MiB vmcore)", "",
                      "| command | wall (s) | user (s) | sys (s) | minor faults | faults/page | "
                      "peak RSS (MiB) | output (MB) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for name in names:
                s = results[name]

                def m(k: str) -> float:
                    return statistics.median(x[k] for x in s)
                lines.append(f"| {name} | {m('wall'):.2f} | {m('user'):.2f} | {m('sys'):.2f} | "
                             f"{m('minflt'):,.0f} | {m('minflt') / pages:.3f} | "
                             f"{max(x['rss_mib'] for x in s):.0f} | {m('bytes') / 1e6:.1f} |")
            lines.append("")
            tsd.unlink()
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines.append(f"Load average before / after: {load_before} / {load_after} (a shared 2-core machine: "
                 "compare rows within a run).")
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
