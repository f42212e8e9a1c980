"""The long reliability run: the CI tests of docs/RELIABILITY.md, scaled up.

Runs the fuzz and fault tests in one pytest child with larger counts
(hypothesis examples, SIGKILL points, truncation points and bit flips),
collects the figures each test appends to a JSON-lines file, measures the
child's peak RSS, and writes docs/benchmarks/fuzz.md.

    python bench/fuzz_long.py [--examples 5000] [--kills 40] [--points 400]

It also times the two bounded attacks with their bound switched off, in a
subprocess with a timeout, so the table shows what the bound is worth.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_fuzz_tsd.py", "tests/test_fuzz_elf.py", "tests/test_fuzz_kdump.py", "tests/test_reliability_hostile.py",
         "tests/test_reliability_collect.py", "tests/test_reliability_damage.py",
         "tests/test_reliability_kill.py", "tests/test_reliability_plugins.py"]

UNBOUNDED = """
import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, {tests!r})
import tsubaki_forensics.tsd.reader as rd, tsubaki_forensics.tsd.memory as mem
import test_reliability_hostile as H
if {what!r} == "resync":
    if {off!r}:
        rd.RESYNC_WORK_FACTOR = 10**9
    test = H.test_resync_bomb_is_bounded
else:
    if {off!r}:
        mem.OVERLAP_CHECK_MIN = 10**15
    test = H.test_overlapping_decompression_bombs_are_bounded
t0 = time.perf_counter()
try:
    test(Path(tempfile.mkdtemp()))
except AssertionError:
    pass
print(time.perf_counter() - t0)
"""


def unbounded(what: str, limit: float, off: bool = True) -> str:
    """Seconds the attack takes with its bound off (or on: ``off=False``), or '> limit'.

    The tests check the bounds as work (bytes hashed or decompressed); the
    seconds are measured here, on this machine, as a benchmark."""
    try:
        out = subprocess.run([sys.executable, "-c", UNBOUNDED.format(tests=str(ROOT / "tests"), what=what,
                                                                   off=off)],
                             capture_output=True, text=True, timeout=limit, cwd=ROOT)
        return f"{float(out.stdout.strip().splitlines()[-1]):.1f} s"
    except subprocess.TimeoutExpired:
        return f"> {limit:.0f} s (killed)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=5000, help="hypothesis examples per fuzz test")
    ap.add_argument("--kills", type=int, default=40,
                    help="SIGKILL points on the real crash, one per equal slice of the dump "
                         "(on top of the points around each hand-over the test always kills at)")
    ap.add_argument("--kill-seed", type=int, default=None,
                    help="seed placing each of those points at random in its slice "
                         "(default: a new seed, printed in the report; every verdict is exact "
                         "wherever a point lands, the seed only says which points were tried)")
    ap.add_argument("--points", type=int, default=400, help="truncation points and bit flips")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/fuzz.md")
    args = ap.parse_args()
    stats = Path(tempfile.mkdtemp()) / "stats.jsonl"
    seed = args.kill_seed if args.kill_seed is not None else int.from_bytes(os.urandom(4), "little")
    env = dict(os.environ, TSUBAKI_FUZZ_EXAMPLES=str(args.examples), TSUBAKI_KILLS=str(args.kills),
               TSUBAKI_KILL_SEED=str(seed),
               TSUBAKI_DAMAGE_POINTS=str(args.points), TSUBAKI_FUZZ_STATS=str(stats))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-x", *TESTS]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-400:]
    rows = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
    fuzz = [r for r in rows if "executions" in r]
    kills = [r for r in rows if r.get("test") == "kill"]
    trunc = sum(r["points"] for r in rows if r.get("test") == "truncation")
    flips = [r for r in rows if r.get("test") == "bitflip"]
    resync = unbounded("resync", 120)
    overlap = unbounded("overlap", 120)
    resync_on = unbounded("resync", 120, off=False)
    overlap_on = unbounded("overlap", 120, off=False)
    lines = [
        "# Reliability: long fuzz and fault run",
        "",
        f"Command: `python bench/fuzz_long.py --examples {args.examples} --kills {args.kills} "
        f"--kill-seed {seed} --points {args.points}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.  ",
        f"pytest: `{tail}` in {wall:.0f} s; peak RSS of the test process {rss_mib:.0f} MiB.",
        "",
        "| fuzz target | executions | handled errors (library raises + non-zero exits) | slowest example |",
        "|---|---:|---:|---:|",
        *[f"| {r['test']} | {r['executions']} | {r['handled_errors']} | {r['slowest_s']} s |" for r in fuzz],
        "",
        f"Truncation points on the real dump: {trunc}; bit flips: {sum(r['flips'] for r in flips)}, "
        f"named by verify: {sum(r['named'] for r in flips)}.  ",
        f"SIGKILL points on a real collect: {len(kills)}; kills after a hand-back: "
        f"{sum(1 for k in kills if k['given'])}; bytes of handed-back regions compared with the "
        f"vmcore: {sum(k['bytes_checked'] for k in kills)}; bytes lost: 0 (every compare is an "
        f"assertion; the run {'passed' if proc.returncode == 0 else 'FAILED'}).",
        "",
        "| attack (tests/test_reliability_hostile.py) | with the bound | bound switched off |",
        "|---|---:|---:|",
        f"| resync bomb (16 MiB of candidate headers) | {resync_on} | {resync} |",
        f"| 300 overlapping 64 MiB zstd frames (600 KiB file) | {overlap_on} | {overlap} |",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
