"""On a real crashed Debian kernel: import then export round-trips memory and
notes bit for bit, and makedumpfile accepts the export."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.vmcore import ElfVmcore, iter_notes, write_elf_vmcore
from tsubaki_forensics.vmcore.importer import import_vmcore

pytestmark = pytest.mark.realkernel

WINDOW = 8 << 20


@pytest.fixture(scope="module")
def round_trip(real_crash, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    tsd, out = tmp / "real.tsd", tmp / "export.elf"
    res = import_vmcore(real_crash.vmcore, tsd)
    with open_dump(tsd) as dump:
        write_elf_vmcore(out, dump.memory, dump.vmcoreinfo, dump.notes,
                         arch=dump.header.arch, page_size=dump.header.page_size)
    return res, tsd, out


def test_memory_and_notes_round_trip_bit_for_bit(real_crash, round_trip):
    res, tsd, out = round_trip
    with ElfVmcore(real_crash.vmcore) as a, ElfVmcore(out) as b:
        assert a.vmcoreinfo and b"OSRELEASE=" + real_crash.ground_truth["kernel_release"].encode() \
            in a.vmcoreinfo
        assert b.notes == a.notes and b.vmcoreinfo == a.vmcoreinfo
        cpus = sum(1 for n in iter_notes(a.notes) if n.name == "CORE" and n.type == 1)
        assert cpus == real_crash.manifest.get("smp", cpus) and cpus >= 1
        assert [(s, n) for s, n, _ in b.ranges()] == [(s, n) for s, n, _ in a.ranges()]
        for start, length, _ in a.ranges():
            for pos in range(start, start + length, WINDOW):
                n = min(WINDOW, start + length - pos)
                assert a.read(pos, n) == b.read(pos, n), f"differs in {pos:#x}+{n:#x}"
    assert res.stats.raw_bytes == sum(n for _, n, _ in ElfVmcore(real_crash.vmcore).ranges())


def test_dump_is_smaller_than_the_data_it_holds(round_trip):
    res, tsd, _ = round_trip
    data = res.stats.raw_bytes - res.stats.zero_bytes
    assert 0 < res.file_bytes < data  # zstd did real work on real memory


@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")
def test_makedumpfile_accepts_the_export(round_trip, tmp_path):
    _, _, out = round_trip
    target = tmp_path / "dumpfile"
    proc = subprocess.run(["makedumpfile", "-l", "-d", "1", str(out), str(target)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert target.stat().st_size > 0
    with open(target, "rb") as f:
        assert f.read(8) == b"KDUMP   "
