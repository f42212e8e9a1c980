"""Peak RSS and time of reading a ``.tsd`` with very many records (issue 22, finding 14).

Why: a dump of a million tiny ZERO (or DATA) records is a 96 MB file; each
record used to become several Python objects, so ``inspect`` peaked at 12x the
file.  This builds such files with :class:`TsdWriter` (records 4 KiB long with
4 KiB gaps, so the writer cannot coalesce them), then runs ``inspect``,
``inspect --format json``, ``verify`` and open+completeness+ranges each in a child process and reports
its peak RSS (``os.wait4``) and wall time, median of ``--repeat`` runs.

    python bench/many_records.py --n 100000 --n 1000000 [--kind zero --kind data --kind missing]
    python bench/many_records.py --n 1000000 --kind missing --before /tmp/old-tree  # the same, older code
    python bench/many_records.py --real DUMP.tsd --repeat 5   # no slowdown on a real dump
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

__all__ = ["build", "measure"]

TIMEOUT = 0.0  # seconds per operation (--timeout); 0: none
BENCH = os.path.dirname(os.path.abspath(__file__))
STRIDE = 8192
LENGTH = 4096

_OPEN = ("import sys; from tsubaki_forensics.tsd import open_dump; d = open_dump(sys.argv[1]); "
         "c = d.completeness(); r = d.memory.ranges(); m = d.memory.missing_ranges(); "
         "print(c.status, len(r), len(m))")


def build(path: str, n: int, kind: str) -> None:
    """``n`` records of ``kind`` ("zero", "data" or "missing", each MISSING
    record with a reason of its own), never adjacent."""
    from tsubaki_forensics.tsd import TsdWriter

    page = bytes(range(256)) * (LENGTH // 256)
    with TsdWriter(path, producer="bench", threads=0) as w:
        for i in range(n):
            if kind == "zero":
                w.write_zero(i * STRIDE, LENGTH)
            elif kind == "missing":
                w.write_missing(i * STRIDE, LENGTH, f"read error at {i * STRIDE:#x}: Input/output error")
            else:
                w.write_memory(i * STRIDE, page)


def _child(argv: list[str]) -> tuple[int, float, int]:
    """(exit status, seconds, peak RSS bytes) of ``argv`` run as a child."""
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    while True:  # killed past --timeout (the quadratic cases before the fix never end)
        done, status, usage = os.wait4(pid, os.WNOHANG if TIMEOUT else 0)
        if done:
            return os.waitstatus_to_exitcode(status), time.perf_counter() - t, usage.ru_maxrss * 1024
        if time.perf_counter() - t > TIMEOUT:
            os.kill(pid, 9)
        time.sleep(0.2)


def _cli() -> list[str]:
    """This interpreter's console script, else ``-m`` (a venv without the script)."""
    if os.environ.get("PYTHONPATH"):  # --before: the older tree comes first on sys.path
        return [sys.executable, "-m", "tsubaki_forensics.cli.app"]
    script = os.path.join(os.path.dirname(sys.executable), "tsubaki-forensics")
    # (with -m, run it from outside a checkout: the current directory comes first on sys.path)
    return [script] if os.path.isfile(script) else [sys.executable, "-m", "tsubaki_forensics.cli.app"]


def measure(path: str, repeat: int) -> dict[str, tuple[float, int, int]]:
    """Per operation: (median seconds, max peak RSS, exit status)."""
    cli = _cli()
    ops = {"inspect": [*cli, "inspect", path], "inspect --format json": [*cli, "inspect", "--format", "json", path],
           "verify": [*cli, "verify", path],
           "open+completeness": [sys.executable, "-c", _OPEN, path]}
    out = {}
    for name, argv in ops.items():
        runs = [_child(argv) for _ in range(repeat)]
        out[name] = (statistics.median(r[1] for r in runs), max(r[2] for r in runs), runs[-1][0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, action="append", help="records per file (repeatable)")
    ap.add_argument("--kind", action="append", choices=["zero", "data", "missing"])
    ap.add_argument("--before", help="measure the tsubaki_forensics tree in this directory (e.g. "
                                     "git archive REV tsubaki_forensics | tar -x -C DIR) instead")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where to build the files (default: a temp dir)")
    ap.add_argument("--real", help="time inspect and analyze --only panic on this real .tsd instead")
    ap.add_argument("--timeout", type=float, default=0, help="kill an operation after this many seconds "
                                                             "(reported with rc -9)")
    a = ap.parse_args()
    global TIMEOUT
    TIMEOUT = a.timeout
    if a.before:
        os.environ["PYTHONPATH"] = os.path.abspath(a.before)
        os.chdir(a.before)
    if a.real:
        for op, argv in (("inspect", [*_cli(), "inspect", a.real]),
                         ("analyze --only panic", [*_cli(), "analyze", a.real, "--only", "panic"])):
            runs = [_child(argv) for _ in range(a.repeat)]
            print(f"{op:22} median {statistics.median(r[1] for r in runs):.3f} s "
                  f"(runs {' '.join(f'{r[1]:.3f}' for r in runs)}), peak {max(r[2] for r in runs) >> 20} MiB, "
                  f"rc {runs[-1][0]}", flush=True)
        return
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        print(f"{'kind':5} {'records':>9} {'file MB':>8}  {'operation':21} {'seconds':>8} {'peak MiB':>9} rc")
        for kind in a.kind or ["zero"]:
            for n in a.n or [100_000, 1_000_000]:
                path = os.path.join(tmp, f"{kind}-{n}.tsd")
                # built in a child: Linux keeps a parent's peak RSS across
                # fork+exec, so building here would inflate every figure
                subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                                "from many_records import build; build(sys.argv[2], int(sys.argv[3]), sys.argv[4])",
                                BENCH, path, str(n), kind], check=True)
                size = os.path.getsize(path)
                for op, (sec, rss, rc) in measure(path, a.repeat).items():
                    print(f"{kind:5} {n:>9} {size / 1e6:>8.1f}  {op:21} {sec:>8.2f} {rss / (1 << 20):>9.0f} {rc}",
                          flush=True)
                os.unlink(path)


if __name__ == "__main__":
    main()
