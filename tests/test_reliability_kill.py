"""SIGKILL the collector at exact points of a real crash's dump.

The collector runs in a subprocess through ``tests/_kill_collector.py``,
which makes it SIGKILL itself right after the first record that brings the
writer's byte count to a target (no poll, no race: the same record on any
machine, loaded or not).  The targets come from the layout of a complete run
of the same crash: just before each ``reboot`` / ``hand-back`` EVENT record,
one writer buffer past its end, the last record, and evenly spaced points.

The collector's output is deterministic (storage-bound timeline, records
written in submission order), so every run lays out the same records at the
same offsets; only the dump id and the creation time differ.  After every
kill:

* the collector wrote exactly the record the target names, and the killed
  file is what the OS held at that instant (at most one writer buffer short
  of it): SIGKILL loses only the user-space buffer;
* the file is a valid prefix: its records are the complete run's first
  records, every one that ends within the file, at the same offsets; its
  only problems are at its tail (a record cut short, no footer);
* it says Linux was given exactly the regions whose ``reboot`` /
  ``hand-back`` EVENT of the complete run ends within the file;
* each region it says was given is intact (read back, it equals the vmcore)
  and was handed back only after its records: in file order, each
  hand-back EVENT comes after every record covering its region (the
  collector writes it after the flush that made them durable).

At least one kill lands before the first hand-over and one after it, by
construction.  ``TSUBAKI_KILLS`` adds evenly spaced points (bench/fuzz_long.py
raises it); ``TSUBAKI_KILL_SEED`` places each one at a seeded random offset
inside its slice instead of the middle.  Either way every verdict is exact.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from tsubaki_forensics.tsd import open_dump, open_file
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.vmcore import ElfVmcore

KILLS = int(os.environ.get("TSUBAKI_KILLS", "3"))
SEED = os.environ.get("TSUBAKI_KILL_SEED")
REGION = 128 << 20
# TsdWriter opens its file with buffering=1 MiB (io.BufferedWriter never holds
# more than its buffer size): what a kill may lose beyond the OS's bytes.
WRITER_BUFFER = 1 << 20
GIVE = ("reboot", "hand-back")
TAIL_PROBLEMS = ("file ends inside", "no END footer", "nothing sound follows")
LAUNCHER = Path(__file__).with_name("_kill_collector.py")
HANG_GUARD_S = 900  # a hung collector fails the test; never part of a verdict


def collect(vmcore: Path, out: Path, target: int) -> dict | None:
    """Run the collector, killed right after the record that reaches ``target``
    bytes; returns the launcher's report, or None if the run completed."""
    report = out.with_suffix(".kill")
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), str(target), str(report), "--",
         "collect", str(vmcore), "-o", str(out),
         "--storage", "sd-uhs1", "--region-size", "128M", "--format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=HANG_GUARD_S)
    if report.exists():
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
        rep = json.loads(report.read_text())
        report.unlink()
        return rep
    assert proc.returncode == 0, proc.stderr[-2000:]
    return None


def walk(path: Path) -> list[tuple[int, int, tuple]]:
    """(offset, end, what) of every sound record, in file order: ``what`` is
    ("range", paddr, length, type), ("event", kind, fields) or ("record", type)."""
    out = []
    with open_file(path) as f:
        offset = f.data_start
        while offset < f.size:
            try:
                hdr, payload = f.read_record(offset)
            except Exception:
                break  # the tail: checked by check_prefix
            if hdr.type in (R.RecordType.MEMORY, R.RecordType.ZERO, R.RecordType.MISSING):
                paddr, length = R.RANGE_PAYLOAD.unpack_from(payload) if hdr.type != R.RecordType.MEMORY \
                    else R.MEMORY_PREFIX.unpack_from(payload)[:2]
                what: tuple = ("range", paddr, length, int(hdr.type))
            elif hdr.type == R.RecordType.EVENT:
                kind, _, fields = R.unpack_event(payload)
                what = ("event", kind, fields)
            else:
                what = ("record", int(hdr.type))
            out.append((offset, offset + hdr.size, what))
            offset += hdr.size
    return out


def check_prefix(path: Path, vmcore: ElfVmcore) -> dict:
    """The invariants of a killed collection; returns what was checked."""
    with open_file(path) as f:
        bad = [p for p in f.problems if not p.message.startswith(TAIL_PROBLEMS)]
        assert not bad, bad
        tail = [p for p in f.problems if p.offset < f.size and not p.message.startswith("no END")]
        assert len(tail) <= 1
    records = walk(path)
    covered: list[tuple[int, int, int]] = []  # (paddr, end, file end of the record)
    given: list[tuple[int, int]] = []  # (region index, file offset of its hand-back event)
    for start, end, what in records:
        if what[0] == "range":
            covered.append((what[1], what[1] + what[2], end))
        elif what[0] == "event" and what[1] in GIVE:
            given.append((what[2]["region"], start))
    checked = 0
    with open_dump(path) as dump:
        for region, event_at in given:
            base = region * REGION
            for paddr, length, _ in vmcore.ranges():
                a, b = max(paddr, base), min(paddr + length, base + REGION)
                if a >= b:
                    continue
                # every byte of the region was recorded before the hand-back event
                before = sorted((s, e) for s, e, rec_end in covered if rec_end <= event_at and s < b and e > a)
                pos = a
                for s, e in before:
                    if s <= pos:
                        pos = max(pos, e)
                assert pos >= b, f"region {region} handed back at offset {event_at} before {pos:#x} was saved"
                # and reads back intact
                for addr in range(a, b, 8 << 20):
                    n = min(8 << 20, b - addr)
                    assert dump.memory.read(addr, n) == vmcore.read(addr, n), f"region {region}"
                    checked += n
    return {"records": len(records), "given": len(given), "bytes_checked": checked}


def kill_targets(full: list[tuple[int, int, tuple]], size: int) -> list[int]:
    """Kill points from the complete run's layout (see the module docstring)."""
    notice_end = next(e for _, e, w in full if w[:2] == ("event", "panic_notice"))
    targets = {size}
    for start, end, what in full:
        if what[0] == "event" and what[1] in GIVE:
            targets.add(start)  # the record before it: the event cannot be in the file
            targets.add(min(end + WRITER_BUFFER, size))  # it must be, unless past the end
    rng = random.Random(int(SEED)) if SEED is not None else None
    span = size - notice_end
    for i in range(KILLS):  # one point in each of KILLS equal slices after the panic notice
        lo, hi = notice_end + i * span // KILLS + 1, notice_end + (i + 1) * span // KILLS
        targets.add(rng.randint(lo, hi) if rng else (lo + hi) // 2)
    return sorted(targets)


def _record(row: dict) -> None:
    out = os.environ.get("TSUBAKI_FUZZ_STATS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": "kill", **row}) + "\n")


def test_sigkill_at_exact_points_leaves_a_valid_prefix(real_crash, tmp_path):
    vmcore = ElfVmcore(real_crash.vmcore)
    full_path = tmp_path / "full.tsd"
    assert collect(real_crash.vmcore, full_path, 1 << 62) is None
    size = full_path.stat().st_size
    full = walk(full_path)
    assert full[-1][1] == size and full[-1][2] == ("record", R.RecordType.END)
    with open_file(full_path) as f:
        assert not f.problems, f.problems
    regions = {r for paddr, n, _ in vmcore.ranges() for r in range(paddr // REGION, (paddr + n - 1) // REGION + 1)}
    gives = [(s, e) for s, e, w in full if w[0] == "event" and w[1] in GIVE]
    assert check_prefix(full_path, vmcore)["given"] == len(gives) == len(regions)
    # the premise of the two guaranteed kills: the first hand-over is not at the very end
    assert gives[0][1] + WRITER_BUFFER < size
    ends = [e for _, e, _ in full]

    # kills that name the same record are the same kill: run each once
    kills = {ends[bisect.bisect_left(ends, t)]: t for t in reversed(kill_targets(full, size))}
    seen = []
    for i, (record_end, target) in enumerate(sorted(kills.items())):
        out = tmp_path / f"k{i}.tsd"
        rep = collect(real_crash.vmcore, out, target)
        assert rep is not None, f"target {target} <= {size}: the collector must have been killed"
        # the kill came right after the record that reaches the target, at the same offset
        assert rep["bytes_written"] == record_end, (target, rep)
        at = out.stat().st_size
        assert at == rep["os_size"], "SIGKILL lost bytes the OS already had"
        assert record_end - WRITER_BUFFER <= at <= record_end, (at, rep)
        # a valid prefix: the complete run's records that end within the file, no more, no fewer
        killed = walk(out)
        assert killed == full[:bisect.bisect_right(ends, at)], f"kill at {at}: not a prefix of the complete run"
        result = check_prefix(out, vmcore)
        assert result["given"] == sum(1 for _, e in gives if e <= at), (at, result)
        seen.append(result)
        _record({"target": target, "killed_at": at, **result})
        out.unlink()
    assert any(r["given"] == 0 for r in seen)  # a kill before the first hand-over (by construction)
    assert any(r["given"] > 0 for r in seen)  # and one after it
