"""SIGKILL the collector at random points of a real crash's dump.

A subprocess runs ``tsubaki-forensics collect`` on the real crash's ELF
vmcore; the test watches the file grow and kills the process with SIGKILL
when it passes a random size.  After every kill:

* the file is a valid prefix: it opens, and its only problems are at its
  tail (a record cut short, no footer);
* every region the file says was given to Linux (``reboot`` / ``hand-back``
  EVENT records) is intact: read back from the dump, it equals the vmcore;
* no region was handed back before its records: in file order, each
  hand-back EVENT comes after every record covering its region (the
  collector writes it after the flush that made them durable).

``KILLS`` is small for CI; bench/fuzz_kill.py runs many more.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


from tsubaki_forensics.tsd import open_dump, open_file
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.vmcore import ElfVmcore

KILLS = int(os.environ.get("TSUBAKI_KILLS", "8"))
REGION = 128 << 20
TAIL_PROBLEMS = ("file ends inside", "no END footer", "nothing sound follows")


def collector(vmcore: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tsubaki_forensics.cli.app", "collect", str(vmcore), "-o", str(out),
         "--storage", "sd-uhs1", "--region-size", "128M", "--format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_at(vmcore: Path, out: Path, target: int, timeout: float = 120) -> int:
    """Run the collector, SIGKILL it once ``out`` reaches ``target`` bytes;
    returns the size at the kill (or the final size if it finished first)."""
    proc = collector(vmcore, out)
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            if out.exists() and out.stat().st_size >= target:
                proc.send_signal(signal.SIGKILL)
                break
            if time.monotonic() - t0 > timeout:
                raise AssertionError("collector did not finish")
            time.sleep(0.002)
    finally:
        proc.wait()
    return out.stat().st_size if out.exists() else 0


def walk(path: Path) -> list[tuple[int, int, object]]:
    """(offset, end, decoded) of every sound record, in file order."""
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
                out.append((offset, offset + hdr.size, ("range", paddr, length)))
            elif hdr.type == R.RecordType.EVENT:
                kind, t, fields = R.unpack_event(payload)
                out.append((offset, offset + hdr.size, ("event", kind, fields)))
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
        elif what[1] in ("reboot", "hand-back"):
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


def _record(row: dict) -> None:
    out = os.environ.get("TSUBAKI_FUZZ_STATS")
    if out:
        import json

        with open(out, "a") as f:
            f.write(json.dumps({"test": "kill", **row}) + "\n")


def test_sigkill_at_random_points_leaves_a_valid_prefix(real_crash, tmp_path):
    vmcore = ElfVmcore(real_crash.vmcore)
    full = tmp_path / "full.tsd"
    kill_at(real_crash.vmcore, full, 1 << 62)
    size = full.stat().st_size
    assert check_prefix(full, vmcore)["given"] >= 4
    rng = random.Random(int(os.environ.get("TSUBAKI_KILL_SEED", "8")))
    # one random point in each of KILLS equal slices of the file: spread over the whole run
    targets = [rng.randrange(i * size // KILLS + 1, (i + 1) * size // KILLS) for i in range(KILLS)]
    seen = []
    for i, target in enumerate(targets):
        out = tmp_path / f"k{i}.tsd"
        at = kill_at(real_crash.vmcore, out, target)
        if at == 0:
            continue
        seen.append((at, check_prefix(out, vmcore)))
        _record({"target": target, "killed_at": at, **seen[-1][1]})
        out.unlink()
    assert len(seen) >= KILLS // 2
    assert any(r["given"] for _, r in seen)  # some kills came after hand-backs
