"""Damage on a real dump: truncation at many offsets, random bit flips.

The real crash's vmcore is imported into a ``.tsd`` (~37 MiB, ~540 records).
For every truncation point, every record that is complete before the cut is
still served (same records, same bytes); for every flipped bit, ``verify``
names the record that holds it and every other record is still served; and
when the damaged record holds what an analysis needs (``init_task``), the
``analyze`` report says which result is affected and why.

``TSUBAKI_DAMAGE_POINTS`` raises the counts (bench/fuzz_long.py).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.errors import FormatError
from tsubaki_forensics.tsd import open_dump, open_file
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.vmcore import ElfVmcore
from tsubaki_forensics.vmcore.importer import import_vmcore

POINTS = int(os.environ.get("TSUBAKI_DAMAGE_POINTS", "32"))
KERNEL_MAP = 0xFFFFFFFF80000000  # x86_64 __START_KERNEL_map: __pa_symbol(x) = x - it + phys_base


def _stats(row: dict) -> None:
    out = os.environ.get("TSUBAKI_FUZZ_STATS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def real(real_crash, tmp_path_factory):
    path = tmp_path_factory.mktemp("damage") / "crash.tsd"
    import_vmcore(real_crash.vmcore, path)
    with open_file(path, verify=True) as f:
        records = [(r.type, r.offset, r.size, r.paddr, r.length) for r in f.records]
        assert not f.problems
        index_offset = f.index_offset
    return path, records, index_offset


def served(path: Path) -> list[tuple]:
    with open_file(path) as f:
        return [(r.type, r.offset, r.size, r.paddr, r.length) for r in f.records], list(f.problems)


def test_truncation_keeps_every_complete_record(real, real_crash, tmp_path):
    path, records, index_offset = real
    size = path.stat().st_size
    rng = random.Random(11)
    ends = [off + sz for _, off, sz, _, _ in records]
    cuts = {size - 1, size - R.END_RECORD_SIZE, index_offset, index_offset + 1, R.FILE_HEADER_SIZE,
            R.FILE_HEADER_SIZE + 1}
    for end in rng.sample(ends, POINTS // 2):
        cuts |= {end, end + rng.choice([1, 4, R.RECORD_HEADER_SIZE - 1, R.RECORD_HEADER_SIZE + 7])}
    cuts |= {rng.randrange(R.FILE_HEADER_SIZE, size) for _ in range(POINTS // 2)}
    cut_path = tmp_path / "cut.tsd"
    shutil.copyfile(path, cut_path)
    vmcore = ElfVmcore(real_crash.vmcore)
    for cut in sorted(cuts, reverse=True):  # truncate the same copy, shorter each time
        os.truncate(cut_path, cut)
        got, problems = served(cut_path)
        want = [r for r in records if r[1] + r[2] <= cut]
        assert got == want, cut
        assert all(p.message.startswith(("file ends inside", "no END footer", "nothing sound"))
                   for p in problems), (cut, problems)
        last = [r for r in want if r[0] == R.RecordType.MEMORY][-1:]
        with open_dump(cut_path) as dump:
            for _, _, _, paddr, length in last:  # the record just before the cut decodes intact
                assert dump.memory.read(paddr, length) == vmcore.read(paddr, length)
    _stats({"test": "truncation", "points": len(cuts)})


def test_bit_flips_are_named_and_confined(real, tmp_path, capsys):
    path, records, index_offset = real
    size = path.stat().st_size
    rng = random.Random(12)
    flip_path = tmp_path / "flip.tsd"
    shutil.copyfile(path, flip_path)
    named = 0
    with open(flip_path, "r+b") as f:
        for i in range(POINTS):
            pos = rng.randrange(size)
            bit = 1 << rng.randrange(8)
            f.seek(pos)
            old = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([old ^ bit]))
            f.flush()
            try:
                _check_flip(flip_path, records, pos, verify_cli=i < 4)
                named += 1
            finally:
                f.seek(pos)
                f.write(bytes([old]))
                f.flush()
    capsys.readouterr()
    _stats({"test": "bitflip", "flips": POINTS, "named": named})


def _check_flip(path: Path, records: list[tuple], pos: int, *, verify_cli: bool) -> None:
    if pos < R.FILE_HEADER_SIZE:  # the file header: refused whole, with offset 0
        with pytest.raises(FormatError, match="offset 0|bad magic|version|implausible|byte order"):
            open_file(path)
        return
    hit = next((r for r in records if r[1] <= pos < r[1] + r[2]), None)
    with open_file(path, verify=True) as f:
        got = [(r.type, r.offset, r.size, r.paddr, r.length) for r in f.records]
        problems = list(f.problems)
    if hit is None:  # INDEX or END: every memory record still served by the scan
        assert got == records
        return
    assert hit[1] in [p.offset for p in problems], (pos, hit, problems)
    assert got == [r for r in records if r is not hit]  # only the damaged record is lost
    if verify_cli:
        assert main(["verify", str(path)]) != 0
        assert f"BAD {path} offset {hit[1]}: checksum mismatch" in _out()


_capsys = None


def _out() -> str:
    return _capsys.readouterr().out if _capsys else ""


@pytest.fixture(autouse=True)
def _keep_capsys(capsys):
    global _capsys
    _capsys = capsys
    yield
    _capsys = None


def test_analyze_says_which_results_a_damaged_record_affects(real, real_crash, tmp_path, capsys):
    from tsubaki_forensics.analysis.session import open_program
    from tsubaki_forensics.drgn_bridge.vmcoreinfo import parse_vmcoreinfo  # noqa: F401
    from tsubaki_forensics.plugin_system import get_plugins

    path, records, _ = real
    opened = open_program([path], get_plugins(), vmlinux=real_crash.vmlinux)
    try:
        vmcoreinfo = opened.dump.vmcoreinfo.decode()
        phys_base = int(next(line.split("=")[1] for line in vmcoreinfo.splitlines()
                             if line.startswith("NUMBER(phys_base)=")))
        virt = opened.program.prog["init_task"].address_
    finally:
        opened.close()
    phys = virt - KERNEL_MAP + phys_base
    hit = next(r for r in records if r[0] == R.RecordType.MEMORY and r[3] <= phys < r[3] + r[4])
    bad = tmp_path / "bad.tsd"
    shutil.copyfile(path, bad)
    with open(bad, "r+b") as f:  # one bit in the middle of the record's payload
        f.seek(hit[1] + hit[2] // 2)
        b = f.read(1)[0]
        f.seek(hit[1] + hit[2] // 2)
        f.write(bytes([b ^ 0x10]))
    rc = main(["analyze", str(bad), "--vmlinux", str(real_crash.vmlinux), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc in (4, 5)
    results = {r["name"]: r for r in out["analyses"]}
    tasks = results["tasks"]
    assert tasks["status"] in ("partial", "failed"), tasks
    assert any(f"offset {hit[1]}" in p for p in out["dump"]["problems"]), out["dump"]["problems"]
    if tasks["status"] == "partial":
        assert any(c["missing"] for c in tasks["completeness"])
    # the text report marks it too
    rc = main(["analyze", str(bad), "--vmlinux", str(real_crash.vmlinux), "--only", "tasks"])
    text = capsys.readouterr()
    assert rc in (4, 5) and ("INCOMPLETE" in text.out or "[failed]" in text.out)
    assert f"offset {hit[1]}" in text.err
