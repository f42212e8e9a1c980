"""Peak RSS of the CLI on files of millions of runs (issue 22): before and now.

Why: a kdump bitmap alternating every frame, a ``.tsd`` of millions of
EXCLUDED runs, a memory map of a million ranges and a ``--split`` set
claiming a huge machine each made one Python object per run (or a byte per
frame).  This builds those files (tests/test_hostile_runs.py's generators)
and runs each command under ``/usr/bin/time -v`` (peak RSS, wall time),
optionally also with an older tree (``--before DIR``: ``git archive REV
tsubaki_forensics`` unpacked in DIR), under a 6 GB address-space limit so
that the older code fails instead of swapping.  Results: docs/RELIABILITY.md.

    python bench/hostile_runs.py --dir /var/tmp/hr [--before /tmp/before]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CASES = [
    ("alternating kdump, 16 MiB (2^26 frames)", "inspect", ["alt16.kdump"]),
    ("alternating kdump, 16 MiB", "verify", ["alt16.kdump"]),
    ("alternating kdump, 16 MiB", "import", ["alt16.kdump", "-o", "out.tsd"]),
    ("alternating kdump at MAX_RUNS (512 KiB)", "inspect", ["alt_bound.kdump"]),
    ("alternating kdump at MAX_RUNS", "verify", ["alt_bound.kdump"]),
    ("alternating kdump at MAX_RUNS", "import", ["alt_bound.kdump", "-o", "out.tsd"]),
    ("its import: 1 Mi MISSING + 1 Mi EXCLUDED (167 MB .tsd)", "inspect", ["imported.tsd"]),
    ("its import", "verify", ["imported.tsd"]),
    (".tsd of 2 Mi EXCLUDED runs (32 MiB)", "inspect", ["exc2m.tsd"]),
    (".tsd of 2 Mi EXCLUDED runs", "verify", ["exc2m.tsd"]),
    (".tsd, memory map of 1 Mi ranges (16 MiB)", "inspect", ["map1m.tsd"]),
    ("--split set of 2 claiming 2^27 frames", "inspect", ["s1", "s2"]),
    ("--split set of 2 claiming 2^27 frames", "verify", ["s1", "s2"]),
    ("--split set of 2 claiming 2^27 frames", "import", ["s1", "s2", "-o", "out.tsd"]),
]


def build(d: Path) -> None:
    from test_hostile_runs import MAX_RUNS, PS, _map_file, write_alternating_kdump
    from tsubaki_forensics.tsd import TsdWriter
    from tsubaki_forensics.tsd.records import MemoryMap, PageClass
    from tsubaki_forensics.vmcore.kdump_import import import_kdump

    write_alternating_kdump(d / "alt16.kdump", 1 << 26)
    write_alternating_kdump(d / "alt_bound.kdump", 2 * MAX_RUNS)
    if not (d / "imported.tsd").exists():
        import_kdump(d / "alt_bound.kdump", d / "imported.tsd")
    _map_file(d / "map1m.tsd", MAX_RUNS)
    n = 2 * MAX_RUNS
    with TsdWriter(d / "exc2m.tsd", producer="bench", threads=0,
                   memory_map=MemoryMap.from_ranges([(0, 2 * n * PS)], dump_level=31)) as w:
        for i in range(n):
            w.write_excluded(2 * i * PS, PS, PageClass.FREE)
    frames = 1 << 27
    write_alternating_kdump(d / "s1", frames, split=(0, frames // 2))
    write_alternating_kdump(d / "s2", frames, split=(frames // 2, frames))


def measure(d: Path, tree: str | None, command: str, args: list[str]) -> str:
    (d / "out.tsd").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=tree) if tree else dict(os.environ)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c",
                        "import sys; from tsubaki_forensics.cli.app import main; sys.exit(main())",
                        command, *args], cwd=d, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, preexec_fn=limit, timeout=900)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) >> 10
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", p.stderr).group(1)
    said = [ln for ln in p.stderr.splitlines() if ln and not ln[0].isspace() and "Command exited" not in ln]
    what = "MemoryError traceback" if "MemoryError" in p.stderr else \
        (said[-1][:90] if said and p.returncode else "ok")
    code = p.returncode
    return f"{rss} MiB, {wall}, exit {code}: {what}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/hostile_runs"))
    ap.add_argument("--before", help="an older tsubaki_forensics tree (its parent directory)")
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    build(a.dir)
    print("| file | command | " + ("before | " if a.before else "") + "now |")
    print("|---|---|" + ("---|" if a.before else "") + "---|")
    for label, command, args in CASES:
        cells = [measure(a.dir, a.before, command, args)] if a.before else []
        cells.append(measure(a.dir, None, command, args))
        print(f"| {label} | `{command}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
