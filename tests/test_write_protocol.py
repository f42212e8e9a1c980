"""Issue 22's write findings (6, 7, 11): no command clobbers what it should not.

Crafted situations built here: a second collect to the same -o, an output
that is one of the inputs (by another path), a planted symlink, a FIFO in
place of the output, two imports racing to one -o, a disk that fills up
during export (RLIMIT_FSIZE), more than 65,535 ranges, addresses near 2^47,
2^63 and 2^64, and a full stdout.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import pytest

from tsubaki_forensics.errors import TsubakiError
from tsubaki_forensics.safewrite import atomic_output, check_output, claim_output
from tsubaki_forensics.tsd import TsdWriter, open_dump
from tsubaki_forensics.vmcore import ElfVmcore

from _budget import assert_one_line_error, run_cli
from test_collect_cli import raw_image  # noqa: F401 - fixture
from test_fuzz_tsd import build_sample

PAGE = 4096
VMCOREINFO = b"OSRELEASE=6.1.0\nPAGESIZE=4096\n"


def small_dump(path, ranges=((0, b"\x11" * PAGE),), zeros=()):
    with TsdWriter(path, threads=0) as w:
        w.write_metadata(vmcoreinfo=VMCOREINFO, properties={"t": "1"})
        for paddr, data in ranges:
            w.write_memory(paddr, data)
        for paddr, n in zeros:
            w.write_zero(paddr, n)
    return path


def exported(tmp_path, name="v.elf"):
    src = small_dump(tmp_path / "s.tsd", ranges=((0, os.urandom(4 * PAGE)),))
    out = tmp_path / name
    assert run_cli("export", src, "-o", out).returncode == 0
    return out


# -- 6. clobbering ----------------------------------------------------------------

def test_second_collect_refuses_the_first_dump(raw_image, tmp_path):  # noqa: F811
    out = tmp_path / "dump.tsd"
    first = run_cli("collect", raw_image, "-o", out, "--region-size", "1M", "--reboot-mem", "1M", "--no-fsync")
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    again = run_cli("collect", raw_image, "-o", out, "--region-size", "1M", "--reboot-mem", "1M", "--no-fsync")
    assert_one_line_error(again, needle="already exists")
    assert out.read_bytes() == before
    link = tmp_path / "link.tsd"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link.symlink_to(victim)
    run = run_cli("collect", raw_image, "-o", link, "--region-size", "1M", "--reboot-mem", "1M", "--no-fsync", "--force")
    assert_one_line_error(run, needle="symbolic link")
    assert victim.read_bytes() == b"keep"
    forced = run_cli("collect", raw_image, "-o", out, "--region-size", "1M", "--reboot-mem", "1M", "--no-fsync", "--force")
    assert forced.returncode == 0, forced.stderr
    with open_dump([out]) as d:
        assert d.completeness().complete


def test_symbols_attach_never_replaces_its_dump(tmp_path):
    dump = tmp_path / "d.tsd"
    build_sample(dump)
    before = dump.read_bytes()
    pack = tmp_path / "k.tsp"
    pack.write_bytes(b"not really a pack")
    for out in (dump, tmp_path / "alias.tsd"):
        if out != dump:
            os.link(dump, out)  # the same inode by another name
        run = run_cli("symbols", "attach", pack, dump, "-o", out, "--force")
        assert_one_line_error(run, needle="its own input")
    assert dump.read_bytes() == before


def test_triage_report_never_replaces_an_input(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    build_sample(d / "x.tsd")
    before = (d / "x.tsd").read_bytes()
    run = run_cli("triage", d, "--no-cache", "-j", "1", "-o", d / "x.tsd", "--force")
    assert_one_line_error(run, needle="its own input")
    assert (d / "x.tsd").read_bytes() == before


# -- 7. temporary files, races, devices ---------------------------------------------

def test_planted_part_symlink_is_not_followed(tmp_path):
    vmcore = exported(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "out.tsd.part").symlink_to(victim)
    run = run_cli("import", vmcore, "-o", tmp_path / "out.tsd")
    assert run.returncode == 0, run.stderr
    assert victim.read_bytes() == b"keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tsd.")]  # no temp left


def test_fifo_or_device_output_is_never_replaced(tmp_path):
    """On main ``import -o /dev/full --force`` replaced the device node (a FIFO stands in)."""
    vmcore = exported(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for cmd in (["import", vmcore, "-o", fifo, "--force"],
                ["export", tmp_path / "s.tsd", "-o", fifo, "--force"]):
        run = run_cli(*cmd)
        assert_one_line_error(run, needle="not a regular file")
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_two_imports_to_one_output(tmp_path):
    """One wins, the other says so in one line; the result verifies."""
    vmcore = exported(tmp_path)
    out = tmp_path / "out.tsd"
    runs = [None, None]

    def go(i):
        runs[i] = run_cli("import", vmcore, "-o", out, "--threads", "1")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in runs)
    assert codes[0] == 0, [r.stderr for r in runs]
    for r in runs:
        if r.returncode != 0:
            assert_one_line_error(r, needle="already exists")
    assert run_cli("verify", out).returncode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


# -- 11. export --------------------------------------------------------------------

def test_export_on_a_full_disk_leaves_nothing(tmp_path):
    src = small_dump(tmp_path / "s.tsd", ranges=((0, os.urandom(64 * PAGE)),))
    out = tmp_path / "v.elf"
    run = run_cli("export", src, "-o", out, fsize=16 * PAGE)
    assert_one_line_error(run)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s.tsd"]


def test_export_more_than_65535_ranges_uses_pn_xnum(tmp_path):
    n = 70_000
    src = tmp_path / "many.tsd"
    with TsdWriter(src, threads=0) as w:
        w.write_metadata(vmcoreinfo=VMCOREINFO)
        for i in range(n):
            w.write_zero(2 * i * PAGE, PAGE)
    out = tmp_path / "v.elf"
    run = run_cli("export", src, "-o", out, timeout=300)
    assert run.returncode == 0, run.stderr
    with ElfVmcore(out) as v:
        assert len(v.segments) == n
        assert v.read(2 * (n - 1) * PAGE, PAGE) == bytes(PAGE)
    run = run_cli("import", out, "-o", tmp_path / "back.tsd", timeout=300)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("paddr", [1 << 47, (1 << 63) - PAGE, (1 << 64) - 2 * PAGE])
def test_export_high_addresses(tmp_path, paddr):
    src = small_dump(tmp_path / "s.tsd", ranges=((0, b"\x22" * PAGE), (paddr, b"\x33" * PAGE)))
    out = tmp_path / "v.elf"
    run = run_cli("export", src, "-o", out)
    assert run.returncode == 0, run.stderr
    with ElfVmcore(out) as v:
        assert v.read(paddr, PAGE) == b"\x33" * PAGE


def test_full_stdout_is_one_line(tmp_path):
    src = small_dump(tmp_path / "s.tsd")
    with open("/dev/full", "wb") as full:
        for cmd in (["inspect", src], ["inspect", src, "--format", "json"]):
            run = run_cli(*cmd, stdout=full)
            assert_one_line_error(run, needle="cannot write the output")


# -- the helper itself ------------------------------------------------------------

def test_atomic_output_cleans_up_on_failure(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole"
    with pytest.raises(TsubakiError, match="already exists"):
        with atomic_output(out) as tmp:
            pass
    with pytest.raises(TsubakiError, match="already exists"):
        claim_output(out)
    claim_output(out, force=True)
    assert out.read_bytes() == b""
    with pytest.raises(TsubakiError, match="is a directory"):
        check_output(tmp_path, True)
