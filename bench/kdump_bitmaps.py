"""Benchmark: peak memory of opening a kdump file, bitmaps packed vs expanded.

makedumpfile's kdump-compressed format holds two bitmaps of one bit per
page frame of the machine (``max_mapnr`` frames, a header field).  The
reader used to expand both to one byte per frame at open (8x the bitmaps,
plus an 8-byte pfn per dumped page), so a header claiming a huge machine
cost memory in proportion to the claim; it now reads them a slice at a
time.  Measured here, each case a child process (peak RSS by ``wait4``),
the tree under test against the same code at ``--before REV`` (exported
with ``git archive``), interleaved:

* ``crafted-N``: a sparse file whose header claims ``N`` frames (its
  bitmaps, all but one bit zero, take the sparse file's full length, as a
  real file's would), no pages;
* ``real``: Debian's ``makedumpfile -c -d 31`` of the cached default lab
  crash (made at run time from a /proc/vmcore-style copy).

Each child opens the file, lists memory / present / missing / excluded
ranges and reads every dumped page (the crafted file has none).

    python bench/kdump_bitmaps.py --before 0f2fd7e [--pfns 268435456] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "crafted"]

ROOT = Path(__file__).resolve().parent.parent
PS = 4096

_CHILD = r"""
import sys, time, json
t = time.perf_counter()
from tsubaki_forensics.vmcore.kdump import KdumpFile
with KdumpFile(sys.argv[1]) as k:
    ranges = [len(k.memory_ranges()), len(k.present_ranges()), len(k.missing_ranges()), len(k.excluded_ranges())]
    pages = 0
    for start, length in k.present_ranges():
        for pfn in range(start // k.page_size, (start + length) // k.page_size):
            k.read_page(pfn)
            pages += 1
print(json.dumps({"ranges": ranges, "pages": pages, "seconds": time.perf_counter() - t}))
"""


def crafted(path: Path, pfns: int) -> None:
    """A kdump header claiming ``pfns`` frames, bitmaps of full length (sparse), no pages."""
    sys.path.insert(0, str(ROOT / "tests"))
    from kdump_synth import write_claimed_machine

    write_claimed_machine(path, pfns)


def real(path: Path) -> None:
    from tsubaki_forensics.lab.crash import cached_crash
    from tsubaki_forensics.lab.makedumpfile import _tool
    from tsubaki_forensics.vmcore.export import copy_as_proc_vmcore

    crash = cached_crash(log=lambda m: print(m, file=sys.stderr))
    proc = path.with_suffix(".proc")
    copy_as_proc_vmcore(crash.vmcore, proc)
    try:
        subprocess.run([_tool(), "-c", "-d", "31", str(proc), str(path)], check=True, capture_output=True)
    finally:
        proc.unlink(missing_ok=True)


def run_child(tree: Path | None, path: Path) -> dict:
    """One child: its peak RSS from wait4, its own figures from stdout."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=out, stderr=err, env=env,
                             cwd=str(tree or ROOT))
        _, status, usage = os.wait4(p.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = {"peak_mib": usage.ru_maxrss // 1024, "wall": round(time.monotonic() - start, 2), "exit": code}
        if code == 0:
            result.update(json.loads(out.read()))
        else:
            result["error"] = (err.read().decode(errors="replace").strip().splitlines() or ["?"])[-1]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="git revision to compare with (exported with git archive)")
    ap.add_argument("--pfns", type=int, action="append", help="frames the crafted header claims")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-real", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        tmp = Path(tmp)
        trees: dict[str, Path | None] = {"now": None}
        if a.before:
            (tmp / "before").mkdir()
            archive = subprocess.run(["git", "archive", a.before, "tsubaki_forensics"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp / "before")], input=archive, check=True)
            trees = {"before": tmp / "before", "now": None}
        cases: dict[str, Path] = {}
        for n in a.pfns or [1 << 28]:
            cases[f"crafted-{n}"] = tmp / f"crafted-{n}"
            crafted(cases[f"crafted-{n}"], n)
        if not a.no_real:
            cases["real"] = tmp / "real.kdump"
            real(cases["real"])
        rows = []
        for case, path in cases.items():
            got: dict[str, list[dict]] = {t: [] for t in trees}
            for _ in range(a.repeat):
                for name, tree in trees.items():
                    got[name].append(run_child(tree, path))
            for name, results in got.items():
                ok = [r for r in results if r["exit"] == 0]
                row = {"case": case, "tree": name, "file_bytes": path.stat().st_size,
                       "disk_bytes": path.stat().st_blocks * 512,
                       "peak_mib": statistics.median(r["peak_mib"] for r in results),
                       "wall_s": statistics.median(r["wall"] for r in results),
                       "exits": [r["exit"] for r in results]}
                if ok:
                    row.update(ranges=ok[0]["ranges"], pages=ok[0]["pages"])
                else:
                    row["error"] = results[0]["error"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
