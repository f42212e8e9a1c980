"""Benchmark: random-access read latency for drgn's own access pattern, cold and warm.

Why: ``analyze`` lives on small random physical reads (page-table walks,
task_structs, the printk ring), so what matters is how fast the .tsd serves
*drgn's* reads, not a sequential scan.  The pattern is recorded, not
invented: the tasks+dmesg+panic analyses run once through the drgn bridge
with a recording wrapper around the ``read_fn`` drgn calls, and the recorded
``(paddr, size)`` list is then replayed against

- the .tsd ``PhysicalMemory`` (``open_dump(...).memory.read``): *cold* is a
  freshly opened dump (empty chunk LRU), *warm* a second pass on it;
- the same through the bridge's ``read_fn`` (its page LRU in front of the
  chunk LRU: what drgn really calls);
- the ELF vmcore through ``mmap`` (PT_LOAD ``p_paddr`` -> file offset, one
  slice per read): *cold* is a fresh mapping, *warm* a second pass.

The OS page cache is warm for both files in every case (the machine is
shared; dropping caches is not ours to do), so "cold" means the reader's
own state.  Reads drgn made that fall outside the ELF's segments are dropped
from all replays so both sides serve the same list.

    python bench/readlatency_bench.py [--vmcore V --vmlinux L] [--repeats 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import mmap
import statistics
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["record_reads", "elf_segments", "replay", "bench", "main"]


def record_reads(tsd: Path, vmlinux: Path) -> list[tuple[int, int]]:
    """The physical reads drgn makes for tasks+dmesg+panic, in order.

    Wraps :func:`tsubaki_forensics.drgn_bridge.program.segment_reader` so the
    recorder sits between drgn and the bridge's page cache: every callback
    drgn makes is recorded, cached or not.
    """
    from tsubaki_forensics.analysis.session import analyze_dump, open_program
    from tsubaki_forensics.drgn_bridge import program as bridge
    from tsubaki_forensics.plugin_system import Plugins

    reads: list[tuple[int, int]] = []
    original = bridge.segment_reader

    def recording_segment_reader(read, page_size=4096):
        inner = original(read, page_size)

        def read_fn(address, count, offset, physical):
            reads.append((address, count))
            return inner(address, count, offset, physical)

        return read_fn

    bridge.segment_reader = recording_segment_reader
    try:
        plugins = Plugins.load()
        opened = open_program([tsd], plugins, vmlinux=vmlinux)
        try:
            analyze_dump(opened, plugins, only=["tasks", "dmesg", "panic"])
        finally:
            opened.close()
    finally:
        bridge.segment_reader = original
    return reads


def elf_segments(vmcore: Path) -> list[tuple[int, int, int]]:
    """``(paddr, filesz, offset)`` of each PT_LOAD of an ELF vmcore."""
    from elftools.elf.elffile import ELFFile

    with open(vmcore, "rb") as f:
        return sorted(
            (s["p_paddr"], s["p_filesz"], s["p_offset"])
            for s in ELFFile(f).iter_segments()
            if s["p_type"] == "PT_LOAD" and s["p_filesz"]
        )


def _elf_reader(mm: mmap.mmap, segments: list[tuple[int, int, int]]):
    import bisect

    starts = [s[0] for s in segments]

    def read(paddr: int, size: int) -> bytes:
        i = bisect.bisect_right(starts, paddr) - 1
        if i < 0 or paddr + size > segments[i][0] + segments[i][1]:
            raise KeyError(paddr)
        start, _, offset = segments[i]
        at = offset + paddr - start
        return mm[at : at + size]

    return read


def _in_elf(segments: list[tuple[int, int, int]], paddr: int, size: int) -> bool:
    return any(s <= paddr and paddr + size <= s + n for s, n, _ in segments)


def _drgn_call_shape(read_fn):
    """``read(paddr, size)`` over a drgn ``read_fn(address, count, offset, physical)``."""
    return lambda paddr, size: read_fn(paddr, size, 0, True)


def replay(read, reads: list[tuple[int, int]]) -> tuple[float, list[int]]:
    """Total seconds for the whole list and each read's nanoseconds."""
    clock = time.perf_counter_ns
    per: list[int] = []
    start = time.perf_counter()
    for paddr, size in reads:
        t = clock()
        read(paddr, size)
        per.append(clock() - t)
    return time.perf_counter() - start, per


def _summary(total: float, per: list[int]) -> dict:
    ordered = sorted(per)
    return {
        "total_ms": total * 1e3,
        "p50_us": ordered[len(ordered) // 2] / 1e3,
        "p99_us": ordered[int(len(ordered) * 0.99)] / 1e3,
        "max_us": ordered[-1] / 1e3,
    }


def bench(vmcore: Path, vmlinux: Path, tsd: Path, repeats: int = 5) -> dict:
    """Record once, then ``repeats`` cold+warm replays per reader; medians per metric."""
    from tsubaki_forensics.drgn_bridge.program import segment_reader
    from tsubaki_forensics.tsd import open_dump

    segments = elf_segments(vmcore)
    recorded = record_reads(tsd, vmlinux)
    reads = [r for r in recorded if _in_elf(segments, *r)]
    runs: dict[str, list[dict]] = {}

    def add(name: str, total: float, per: list[int]) -> None:
        runs.setdefault(name, []).append(_summary(total, per))

    for _ in range(repeats):
        dump = open_dump(tsd)
        try:
            add("tsd PhysicalMemory, cold", *replay(dump.memory.read, reads))
            add("tsd PhysicalMemory, warm", *replay(dump.memory.read, reads))
        finally:
            close = getattr(dump, "close", None)
            if close:
                close()
        dump = open_dump(tsd)
        try:
            bridge_read = _drgn_call_shape(segment_reader(dump.memory.read))
            add("tsd via bridge read_fn, cold", *replay(bridge_read, reads))
            add("tsd via bridge read_fn, warm", *replay(bridge_read, reads))
        finally:
            close = getattr(dump, "close", None)
            if close:
                close()
        with open(vmcore, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            read = _elf_reader(mm, segments)
            add("ELF vmcore mmap, cold", *replay(read, reads))
            add("ELF vmcore mmap, warm", *replay(read, reads))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    pages = {(a >> 12) for a, _ in reads}
    return {
        "reads": len(reads),
        "recorded": len(recorded),
        "bytes": sum(n for _, n in reads),
        "distinct_pages": len(pages),
        "distinct_mib": len({a >> 20 for a, _ in reads}),
        "repeats": repeats,
        "median": med,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmcore", type=Path)
    ap.add_argument("--vmlinux", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the result here as JSON")
    args = ap.parse_args(argv)
    if args.vmcore is None:
        from tsubaki_forensics.lab import cached_crash

        crash = cached_crash()
        args.vmcore, args.vmlinux = crash.vmcore, crash.vmlinux
    from tsubaki_forensics.vmcore.importer import import_vmcore

    with tempfile.TemporaryDirectory() as tmp:
        tsd = Path(tmp) / "crash.tsd"
        import_vmcore(args.vmcore, tsd)
        result = bench(args.vmcore, args.vmlinux, tsd, args.repeats)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
