"""Every command on makedumpfile's own output of real lab crashes (6.1 and 6.12),
opened directly (vmcore/foreign.py): inspect, verify, export, triage, collect;
files cut at offsets chosen from their own structure and a seeded RNG, bit
flips in their headers and page descriptors; makedumpfile -E imported with its
left-out pages excluded.  Expectations come from the same crash at run time
(the original ELF's bytes, the file's own bitmaps, the ground truth).
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess

import numpy as np
import pytest

from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.tsd.records import PageClass
from tsubaki_forensics.triage.run import triage
from tsubaki_forensics.triage.signature import make_signature
from tsubaki_forensics.vmcore import ElfVmcore
from tsubaki_forensics.vmcore.export import copy_as_proc_vmcore
from tsubaki_forensics.vmcore.importer import import_vmcore
from tsubaki_forensics.vmcore.kdump import DISK_DUMP_HEADER, KdumpFile

from _cli import CLI, run_cli
from test_kdump_real import _pfn_mask, kdump_files  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.realkernel,
              pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")]

KERNELS = ["6.1", "6.12"]


def _kept_equal(elf_path, orig_path, kept: np.ndarray) -> None:
    with ElfVmcore(elf_path) as out, ElfVmcore(orig_path) as orig:
        exported = _pfn_mask([(a, n) for a, n, _ in out.ranges()], len(kept))
        assert np.array_equal(exported, kept)
        for pfn in np.flatnonzero(kept).tolist():
            assert out.read(pfn << 12, 4096) == orig.read(pfn << 12, 4096), f"page {pfn:#x}"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("options,level", [("-c", 31), ("-F -l", 1)])
def test_inspect_verify_export_directly(kdump_files, tmp_path, kernel, options, level):
    crash, path = kdump_files(kernel, options, level)
    with KdumpFile(path) as k:
        kept, valid = k.present_mask(), k.valid.copy()
    excluded = int((valid & ~kept).sum()) * 4096
    d = json.loads(run_cli("inspect", path, "--format", "json").stdout)
    m = d["memory"]
    assert d["status"] == "complete" and m["missing_bytes"] == 0
    assert m["excluded_bytes"] == excluded and m["present_bytes"] == int(kept.sum()) * 4096
    assert d["kernel_release"] == crash.ground_truth["kernel_release"]
    assert d["notes"]["prstatus"] > 0  # the crashed CPUs' registers came through
    run = run_cli("verify", path)
    assert f"{int(kept.sum())} of {int(kept.sum())} dumped pages decompress" in run.stdout
    assert f"{excluded // 4096} pages excluded by the producer" in run.stdout
    elf = tmp_path / "out.elf"
    run_cli("export", path, "-o", elf)
    _kept_equal(elf, crash.vmcore, kept)
    run_cli("import", elf, "-o", tmp_path / "back.tsd")  # the TSUBAKI note keeps the excluded runs
    with open_dump([tmp_path / "back.tsd"]) as dump:
        assert dump.completeness().complete is True
        assert sum(r.length for r in dump.excluded) == excluded


def _structure(blob: bytes, flattened: bool) -> dict[str, tuple[int, int]]:
    """Byte spans of a (plain) kdump file's parts, from its own header."""
    assert not flattened
    f = DISK_DUMP_HEADER.unpack_from(blob)
    block, sub_hdr, bitmap_blocks = f[6], f[7], f[8]
    bitmaps = (1 + sub_hdr) * block
    descs = bitmaps + bitmap_blocks * block
    with_data = int(np.unpackbits(np.frombuffer(blob[bitmaps + bitmap_blocks * block // 2:descs], np.uint8)).sum())
    data = descs + 24 * with_data
    return {"header": (0, block), "bitmaps": (bitmaps, descs), "descriptors": (descs, data),
            "data": (data, len(blob))}


@pytest.mark.parametrize("kernel", KERNELS)
def test_cut_at_structure_offsets_reads_to_the_cut(kdump_files, tmp_path, kernel):
    """Cuts inside each part of the file (seeded offsets within it): headers or bitmaps
    cut are one line (exit 1); descriptors or data cut read every page before the
    cut as the original's and name the rest missing (verify exit 4, no damage)."""
    crash, path = kdump_files(kernel, "-c", 31)
    blob = path.read_bytes()
    spans = _structure(blob, False)
    rng = random.Random(f"issue18-{kernel}")
    with ElfVmcore(crash.vmcore) as orig:
        for part, (a, b) in spans.items():
            cut = rng.randrange(a + 1, b)
            p = tmp_path / f"cut-{part}"
            p.write_bytes(blob[:cut])
            run = subprocess.run([*CLI, "verify", str(p)], capture_output=True, text=True, timeout=300)
            assert "Traceback" not in run.stderr
            if part in ("header", "bitmaps"):
                assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
                continue
            assert run.returncode == 4 and "cut short" in run.stdout and "BAD" not in run.stdout, run.stdout
            with KdumpFile(p) as k:
                present = k.present_mask()
                missing = _pfn_mask(k.missing_ranges(), k.header.max_mapnr)
                assert missing.any() and np.array_equal(present | missing, k.dumped)
                for pfn in np.flatnonzero(present)[::5].tolist():
                    assert k.read(pfn << 12, 4096) == orig.read(pfn << 12, 4096)
            d = json.loads(run_cli("inspect", p, "--format", "json").stdout)
            assert d["status"] == "incomplete" and d["memory"]["missing_bytes"] == int(missing.sum()) * 4096


@pytest.mark.parametrize("options", ["-c", "-F -c"])
def test_bit_flips_in_headers_and_descriptors_never_trace(kdump_files, tmp_path, options):
    """Seeded bit flips in the header block, the bitmaps and the page descriptors of a
    real file: verify, inspect and import give one-line errors or named damage."""
    crash, path = kdump_files("6.1", options, 31)
    blob = path.read_bytes()
    if "-F" in options:
        span = (0, min(len(blob), 64 << 10))  # the flattened header and first pieces
    else:
        s = _structure(blob, False)
        span = (0, s["descriptors"][1])
    rng = random.Random(1818)
    outcomes = set()
    for n in range(12):
        raw = bytearray(blob)
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(*span)] ^= 1 << rng.randrange(8)
        p = tmp_path / f"flip{n}"
        p.write_bytes(bytes(raw))
        for cmd in (["verify", p], ["inspect", p], ["import", p, "-o", tmp_path / f"f{n}.tsd"]):
            run = subprocess.run([*CLI, *map(str, cmd)], capture_output=True, text=True, timeout=300)
            assert "Traceback" not in run.stderr, run.stderr
            errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
            assert len(errors) <= 1 and run.returncode in (0, 1, 2, 4), (cmd, run.returncode, run.stderr)
            if cmd[0] == "verify":
                outcomes.add(run.returncode)
    # the offsets of the descriptors themselves: a flipped high bit is named damage
    if "-F" not in options:
        a, _ = _structure(blob, False)["descriptors"]
        raw = bytearray(blob)
        raw[a + 24 * 10 + 5] ^= 0x40  # descriptor 10's offset, far past the end of the file
        p = tmp_path / "flip-desc"
        p.write_bytes(bytes(raw))
        run = subprocess.run([*CLI, "verify", str(p)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 2 and "damaged page descriptor" in run.stdout, run.stdout
    assert outcomes  # verify ran on every file


def test_makedumpfile_elf_output_imports_left_out_pages_as_excluded(crash_lab, tmp_path):
    crash = crash_lab(kernel="6.1")
    proc, out = tmp_path / "vmcore.proc", tmp_path / "e.elf"
    copy_as_proc_vmcore(crash.vmcore, proc)
    run = subprocess.run(["makedumpfile", "-E", "-d", "31", str(proc), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
    proc.unlink()
    with ElfVmcore(out) as e:
        tails = [(s.paddr + s.size, s.memsz - s.size) for s in e.segments if s.memsz > s.size]
        held = [(s.paddr, s.size) for s in e.segments if s.size]
    assert tails
    run_cli("import", out, "-o", tmp_path / "e.tsd")
    with open_dump([tmp_path / "e.tsd"]) as dump:
        pages = max(a + n for a, n in tails + held) >> 12
        ex = _pfn_mask([(r.paddr, r.length) for r in dump.excluded], pages)
        assert np.array_equal(ex, _pfn_mask(tails, pages))
        assert {r.cls for r in dump.excluded} == {PageClass.UNKNOWN}
        assert dump.completeness().complete is True
        zero = _pfn_mask([(r.start, r.length) for r in dump.memory.ranges() if r.kind == "zero"], pages)
        assert not (zero & ex).any()  # never recorded as zeros
    run_cli("export", tmp_path / "e.tsd", "-o", tmp_path / "back.elf")
    _kept_equal(tmp_path / "back.elf", crash.vmcore, _pfn_mask(held, pages))


@pytest.mark.slow
def test_triage_groups_tsd_elf_and_kdump_files_by_signature(kdump_files, crash_lab, tmp_path):
    """A /var/crash-like directory: a .tsd, an ELF vmcore, a kdump file and a
    flattened one of the same 6.1 crash, a kdump file of the 6.12 crash, and the
    dmesg text and vmlinux beside them (not dumps).  Every dump file is found by
    its magic and grouped under the signature its ground truth implies."""
    directory = tmp_path / "crash"
    directory.mkdir()
    c61, k61 = kdump_files("6.1", "-c", 31)
    _, f61 = kdump_files("6.1", "-F -l", 1)
    c612, k612 = kdump_files("6.12", "-c", 31)
    import_vmcore(c61.vmcore, directory / "a.tsd")
    shutil.copy(c61.vmcore, directory / "vmcore")
    shutil.copy(k61, directory / "dump.202612030000")
    shutil.copy(f61, directory / "dump.202612030001")
    shutil.copy(k612, directory / "dump.202612030002")
    (directory / "dmesg.202612030000").write_text("not a dump\n")
    run = triage([str(directory)], jobs=2)
    paths = sorted(r.path.rsplit("/", 1)[1] for r in run.records)
    assert paths == ["a.tsd", "dump.202612030000", "dump.202612030001", "dump.202612030002", "vmcore"]
    assert not run.unreadable
    sig = {k: make_signature(c.ground_truth["panic_message"], c.ground_truth["backtrace"]).key
           for k, c in (("6.1", c61), ("6.12", c612))}
    got = {r.path.rsplit("/", 1)[1]: r for r in run.records}
    for name in ("a.tsd", "vmcore", "dump.202612030000", "dump.202612030001"):
        assert got[name].error is None and got[name].signature == sig["6.1"], got[name]
        assert got[name].kernel_release == c61.ground_truth["kernel_release"]
    assert got["dump.202612030002"].signature == sig["6.12"]
    assert got["dump.202612030002"].kernel_release == c612.ground_truth["kernel_release"]
    assert len({r.dump_id for r in run.records}) == 5


@pytest.mark.parametrize("kernel", KERNELS)
def test_lime_image_of_a_lab_crash(crash_lab, tmp_path, kernel):
    """A LiME image written from the crash's ELF (one range header per PT_LOAD, as
    LiME and AVML lay it out): opened directly it finds the kernel's own
    VMCOREINFO, analyze reads the ground-truth log, and import then export gives
    memory byte-identical to the original."""
    from tsubaki_forensics.vmcore.lime import LIME_HEADER, LIME_MAGIC

    crash = crash_lab(kernel=kernel)
    lime = tmp_path / "mem.lime"
    with ElfVmcore(crash.vmcore) as orig, open(lime, "wb") as f:
        ranges = [(a, n) for a, n, _ in orig.ranges()]
        for a, n in ranges:
            f.write(LIME_HEADER.pack(LIME_MAGIC, 1, a, a + n - 1))
            for pos in range(a, a + n, 64 << 20):
                f.write(orig.read(pos, min(64 << 20, a + n - pos)))
    d = json.loads(run_cli("inspect", lime, "--format", "json").stdout)
    assert d["kernel_release"] == crash.ground_truth["kernel_release"] and d["status"] == "complete"
    from tsubaki_forensics.analysis.session import analyze_dump, open_program
    from tsubaki_forensics.plugin_system import Plugins

    plugins = Plugins.load()
    opened = open_program([lime], plugins, vmlinux=crash.vmlinux)
    try:
        report = analyze_dump(opened, plugins, only=["dmesg"])
    finally:
        opened.close()
    log = report.results[0].table("log").dicts()
    assert [{"time": r["time"], "level": r["level"], "text": r["text"]} for r in log] == \
        crash.ground_truth["dmesg"]
    run_cli("import", lime, "-o", tmp_path / "m.tsd", timeout=600)
    run_cli("export", tmp_path / "m.tsd", "-o", tmp_path / "m.elf", timeout=600)
    with ElfVmcore(tmp_path / "m.elf") as out, ElfVmcore(crash.vmcore) as orig:
        assert [(a, n) for a, n, _ in out.ranges()] == ranges
        for a, n in ranges:
            for pos in range(a, a + n, 16 << 20):
                k = min(16 << 20, a + n - pos)
                assert out.read(pos, k) == orig.read(pos, k), f"{pos:#x}"


@pytest.mark.parametrize("kernel", KERNELS)
def test_cut_lab_vmcore_reads_to_the_cut(crash_lab, tmp_path, kernel):
    """The lab's ELF vmcore cut at a seeded offset inside its memory (a copy that ran
    out of space): verify exits 4, import keeps every held byte and records the
    rest as missing, exactly as many bytes as were cut."""
    crash = crash_lab(kernel=kernel)
    with ElfVmcore(crash.vmcore) as orig:
        segs = [(s.offset, s.size) for s in orig.segments if s.size]
    first = min(o for o, _ in segs)
    end = max(o + n for o, n in segs)
    cut_at = random.Random(f"elf-{kernel}").randrange(first + (end - first) // 2, end)
    cut = tmp_path / "vmcore.cut"
    with open(crash.vmcore, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(cut_at))
    run = subprocess.run([*CLI, "verify", str(cut)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 4 and "Traceback" not in run.stderr, run.stdout + run.stderr
    run_cli("import", cut, "-o", tmp_path / "c.tsd", timeout=600)
    lost = sum(max(0, o + n - max(o, cut_at)) for o, n in segs)
    with open_dump([tmp_path / "c.tsd"]) as dump, ElfVmcore(crash.vmcore) as orig:
        c = dump.completeness()
        assert c.complete is False and c.missing_bytes == lost
        for r in dump.memory.ranges():
            for a in range(r.start, r.start + r.length, 4096 * 97):
                n = min(4096, r.start + r.length - a)
                assert dump.memory.read(a, n) == orig.read(a, n)
