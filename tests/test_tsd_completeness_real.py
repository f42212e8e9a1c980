"""Completeness of real dumps cut anywhere, measured against the truth.

The real crash's ELF vmcore is imported (one file) and collected with the
Tsubaki policy, interrupted and resumed (two files of one dump).  Each is cut
at every record boundary and at seeded random byte offsets; the multi-file
set is opened in a shuffled order.  For every cut, the reader's present and
missing bytes must equal the truth computed here independently: the PT_LOADs
of the source ELF (read with pyelftools) and the MEMORY/ZERO records whose
bytes are whole in the prefix (walked with the byte layouts of records.py).
Never 100 % unless every byte of the map is present.  A few seeded bit flips
check the same through ``verify``, which takes damaged records out.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

from elftools.elf.elffile import ELFFile

from _cli import CLI
from monitor_model.engine import CollectParams, Resume, run_policy
from monitor_model.policies import get_policy
from monitor_model.sources import VmcoreSource
from monitor_model.storage import PROFILES
from tsubaki_forensics.tsd import open_dump, verify_dump
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.vmcore.importer import import_vmcore

RANDOM_CUTS = 24
SEED = 16


def pt_loads(vmcore) -> list[tuple[int, int]]:
    with open(vmcore, "rb") as f:
        return merge((s["p_paddr"], s["p_paddr"] + s["p_memsz"])
                     for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD" and s["p_memsz"])


def merge(ranges) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def overlap(x, y) -> int:
    """Bytes in both interval lists (each sorted and merged)."""
    n, i, j = 0, 0, 0
    while i < len(x) and j < len(y):
        n += max(0, min(x[i][1], y[j][1]) - max(x[i][0], y[j][0]))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return n


def walk(path) -> list[tuple[int, int, tuple[int, int] | None]]:
    """(offset, end, memory range or None) of every record of a whole file."""
    raw = path.read_bytes()
    out, offset = [], R.unpack_file_header(raw[:R.FILE_HEADER_SIZE]).header_size
    while offset < len(raw):
        hdr = R.unpack_record_header(raw[offset:offset + R.RECORD_HEADER_SIZE], offset)
        assert hdr is not None, offset
        body = raw[offset + R.RECORD_HEADER_SIZE:offset + hdr.size]
        assert R.record_checksum_ok(raw[offset:offset + 48], body, hdr.checksum)
        rng = None
        if hdr.type == R.RecordType.MEMORY:
            a, n, _ = R.MEMORY_PREFIX.unpack_from(body)
            rng = (a, a + n)
        elif hdr.type == R.RecordType.ZERO:
            a, n = R.RANGE_PAYLOAD.unpack_from(body)
            rng = (a, a + n)
        out.append((offset, offset + hdr.size, rng))
        offset += hdr.size
    return out


def truth(expected, records_in_prefix) -> tuple[int, int]:
    """(present, missing) bytes of ``expected`` given the records whole in a prefix."""
    present = overlap(expected, merge(r for r in records_in_prefix if r))
    return present, sum(b - a for a, b in expected) - present


def cuts(records, size, rng) -> list[int]:
    return sorted({e for _, e, _ in records} | {rng.randrange(129, size) for _ in range(RANDOM_CUTS)},
                  reverse=True)


def check(paths, expected, present, missing) -> None:
    with open_dump(paths) as dump:
        c = dump.completeness()
    assert c.has_map and c.expected_bytes == sum(b - a for a, b in expected)
    assert (c.present_bytes, c.missing_bytes) == (present, missing), paths
    assert c.complete == (missing == 0) and (c.percent == 100.0) == (missing == 0)
    assert sum(g.length for g in c.gaps) == missing


def test_every_cut_of_an_imported_real_dump(real_crash, tmp_path):
    expected = pt_loads(real_crash.vmcore)
    full = tmp_path / "full.tsd"
    import_vmcore(real_crash.vmcore, full)
    records = walk(full)
    assert truth(expected, [r for *_, r in records]) == (sum(b - a for a, b in expected), 0)
    work = tmp_path / "cut.tsd"
    shutil.copyfile(full, work)
    checked = 0
    for cut in cuts(records, full.stat().st_size, random.Random(SEED)):
        os.truncate(work, cut)  # from the end down: each cut is a prefix of the last
        present, missing = truth(expected, [r for _, e, r in records if e <= cut])
        check([work], expected, present, missing)
        checked += 1
    assert checked > len(records) // 2
    # the cases, through the CLI: a 1000-byte prefix cannot be exported
    os.truncate(work, 1000)
    elf = tmp_path / "out.elf"
    proc = subprocess.run([*CLI, "export", str(work), "-o", str(elf)], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert not elf.exists()
    # a 6 MB prefix says INCOMPLETE first, and never 100 %
    shutil.copyfile(full, work)
    os.truncate(work, 6_000_000)
    proc = subprocess.run([*CLI, "inspect", str(work), "--format", "json"], capture_output=True, text=True)
    info = json.loads(proc.stdout)
    present, missing = truth(expected, [r for _, e, r in records if e <= 6_000_000])
    assert info["status"] == "incomplete" and missing > 0
    assert info["memory"]["missing_bytes"] == missing and info["memory"]["completeness_percent"] < 100
    proc = subprocess.run([*CLI, "verify", str(work)], capture_output=True, text=True)
    assert proc.returncode == 4, proc.stderr


def test_seeded_bit_flips_are_taken_out_by_verify(real_crash, tmp_path):
    expected = pt_loads(real_crash.vmcore)
    full = tmp_path / "full.tsd"
    import_vmcore(real_crash.vmcore, full)
    records = walk(full)
    memory = [(o, e, r) for o, e, r in records if r]
    rng = random.Random(SEED)
    for _ in range(3):
        o, e, r = rng.choice(memory)
        pos = rng.randrange(o + R.RECORD_HEADER_SIZE, e)
        bad = tmp_path / "flip.tsd"
        shutil.copyfile(full, bad)
        with open(bad, "r+b") as f:
            f.seek(pos)
            byte = f.read(1)
            f.seek(pos)
            f.write(bytes([byte[0] ^ 0x40]))
        report = verify_dump([bad])
        present, missing = truth(expected, [x for oo, _, x in records if oo != o])
        c = report.completeness
        assert report.status == "damaged" and (c.present_bytes, c.missing_bytes) == (present, missing)
        assert missing > 0 and c.complete is False and c.percent < 100


def test_every_cut_of_a_resumed_multi_file_collection(real_crash, tmp_path):
    expected = pt_loads(real_crash.vmcore)
    params = CollectParams(storage=PROFILES["unlimited"], region_size=128 << 20, fsync=False)
    first = tmp_path / "first.tsd"
    with VmcoreSource(real_crash.vmcore) as src:
        run_policy(src, get_policy("tsubaki"), params, first)
    rec_a = walk(first)
    # the collector "died" halfway: keep the records up to the middle one
    half = rec_a[len(rec_a) // 2][1]
    os.truncate(first, half)
    rec_a = [r for r in rec_a if r[1] <= half]
    second = tmp_path / "second.tsd"
    with VmcoreSource(real_crash.vmcore) as src:
        run_policy(src, get_policy("tsubaki"), params, second, resume=Resume.from_file(first))
    rec_b = walk(second)
    mine = [r for *_, r in rec_a]
    assert truth(expected, mine + [r for *_, r in rec_b])[1] == 0  # together: the whole map
    assert truth(expected, mine)[1] > 0
    rng = random.Random(SEED)
    work = tmp_path / "cut.tsd"
    shutil.copyfile(second, work)
    for cut in cuts(rec_b, second.stat().st_size, rng):
        os.truncate(work, cut)
        present, missing = truth(expected, mine + [r for _, e, r in rec_b if e <= cut])
        paths = [first, work]
        rng.shuffle(paths)
        check(paths, expected, present, missing)
