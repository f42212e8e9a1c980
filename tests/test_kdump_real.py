"""makedumpfile's own output of real lab crashes, read, imported, exported and analysed.

Debian's makedumpfile writes each variant from a /proc/vmcore-style copy of a
lab crash (6.1 and 6.12).  Expectations come from the same crash at run time:
the original ELF's bytes, the pages drgn's own kdump reader (libkdumpfile,
inside drgn's wheel) can and cannot read in the same file, and the crash's
ground truth (tasks, dmesg, panic).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import drgn
import numpy as np
import pytest

from tsubaki_forensics.analysis.results import Status
from tsubaki_forensics.analysis.session import analyze_dump, open_program
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.errors import NotCollectedError
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.tsd.records import PageClass
from tsubaki_forensics.vmcore import ElfVmcore
from tsubaki_forensics.vmcore.export import copy_as_proc_vmcore
from tsubaki_forensics.vmcore.kdump import KdumpFile

from _cli import CLI

pytestmark = [pytest.mark.realkernel,
              pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")]

# (makedumpfile options, dump level): -c zlib, -l lzo, -p snappy (Debian's build
# lacks snappy and stores those pages raw), -F flattened.
VARIANTS = [("-c", 1), ("-c", 31), ("-l", 1), ("-l", 31), ("-p", 31), ("-F -c", 31), ("-F -l", 1)]
KERNELS = ["6.1", "6.12"]


@pytest.fixture(scope="module")
def kdump_files(crash_lab, tmp_path_factory):
    """``get(kernel, options, level) -> (crash, kdump path)``, made once each."""
    made: dict = {}
    procs: dict = {}

    def get(kernel: str, options: str, level: int):
        crash = crash_lab(kernel=kernel)
        if kernel not in procs:
            procs[kernel] = tmp_path_factory.mktemp(f"proc-{kernel}") / "vmcore"
            copy_as_proc_vmcore(crash.vmcore, procs[kernel])
        key = (kernel, options, level)
        if key not in made:
            out = tmp_path_factory.mktemp("kdump") / f"dump{options.replace(' ', '')}-d{level}"
            args = ["makedumpfile", *options.split(), "-d", str(level), str(procs[kernel])]
            if "-F" in options:
                with open(out, "wb") as f:
                    run = subprocess.run(args, stdout=f, stderr=subprocess.PIPE, text=True)
            else:
                run = subprocess.run([*args, str(out)], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr[-500:]
            made[key] = out
        return crash, made[key]

    return get


def _pfn_mask(ranges, pages: int, page_size: int = 4096) -> np.ndarray:
    mask = np.zeros(pages, bool)
    for start, length in ranges:
        mask[start // page_size:(start + length) // page_size] = True
    return mask


def _libkdumpfile_present(path: Path, pages: int) -> np.ndarray:
    """Which pfns drgn's own kdump reader (libkdumpfile) reads in ``path``."""
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    mask = np.zeros(pages, bool)
    for pfn in range(pages):
        try:
            prog.read(pfn << 12, 1, True)
            mask[pfn] = True
        except drgn.FaultError:
            pass
    return mask


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("options,level", VARIANTS)
def test_import_export_is_the_original_memory(kdump_files, tmp_path, kernel, options, level):
    crash, path = kdump_files(kernel, options, level)
    tsd, elf = tmp_path / "d.tsd", tmp_path / "out.elf"
    for args in (["import", path, "-o", tsd], ["export", tsd, "-o", elf]):
        run = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    with KdumpFile(path) as k, ElfVmcore(crash.vmcore) as orig, ElfVmcore(elf) as out:
        pages = k.header.max_mapnr
        assert k.header.dump_level == level and k.flattened == ("-F" in options)
        assert not k.problems and not k.missing_ranges()
        kept = k.present_mask()
        # kept and excluded pages are exactly what libkdumpfile reads and faults on
        assert np.array_equal(kept, _libkdumpfile_present(path, pages))
        exported = _pfn_mask([(a, n) for a, n, _ in out.ranges()], pages)
        assert np.array_equal(exported, kept)
        for pfn in np.flatnonzero(kept):
            a = int(pfn) << 12
            assert out.read(a, 4096) == orig.read(a, 4096), f"page {a:#x}"
        if level == 1:
            assert kept.all() == k.valid.all() and kept.sum() == k.valid.sum()
        else:
            assert (k.valid & ~kept).sum() > 0  # -d 31 did filter something
        excluded = _pfn_mask(k.excluded_ranges(), pages)
    with open_dump([tsd]) as dump:
        c = dump.completeness()
        assert c.complete is True, c.reason
        assert dump.memory_map.dump_level == (level if excluded.any() else 1)
        # excluded exactly where makedumpfile excluded, as "excluded by the producer"
        assert np.array_equal(_pfn_mask([(r.paddr, r.length) for r in dump.excluded], pages), excluded)
        assert {r.cls for r in dump.excluded} <= {PageClass.UNKNOWN}
        if excluded.any():
            a = int(np.flatnonzero(excluded)[0]) << 12
            with pytest.raises(NotCollectedError, match="excluded"):
                dump.memory.read(a, 8)
        assert c.expected_bytes == int(kept.sum()) * 4096


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("options,level", [("-F -c", 31), ("-l", 1)])
def test_analyze_opens_kdump_directly(kdump_files, kernel, options, level):
    crash, path = kdump_files(kernel, options, level)
    gt = crash.ground_truth
    plugins = Plugins.load()
    opened = open_program([path], plugins, vmlinux=crash.vmlinux)
    try:
        report = analyze_dump(opened, plugins, only=["tasks", "dmesg", "panic"])
    finally:
        opened.close()
    statuses = {r.name: r.status for r in report.results}
    assert statuses["dmesg"] == statuses["panic"] == Status.OK
    assert (report.dump.kernel_release, report.dump.build_id) == (gt["kernel_release"], gt["build_id"])
    results = {r.name: r for r in report.results}
    # Every task reads as plain drgn read it from the ELF, except those whose
    # memory makedumpfile excluded (Debian 12's 1.7.2 at -d 31 on 6.12 leaves
    # out some pages in use: docs/FORMATS.md); those say so, with an address
    # in the file's excluded ranges.
    with KdumpFile(path) as k:
        excluded = _pfn_mask(k.excluded_ranges(), k.header.max_mapnr)
    truth = {t["pid"]: t for t in gt["tasks"]}
    read, unread = [], []
    for t in results["tasks"].table("tasks").dicts():
        lost = [v.address for v in t.values() if hasattr(v, "address")]
        (unread if lost else read).append(t)
        assert all(excluded[a >> 12] for a in lost), (t["pid"], lost)
    assert [{k: t[k] for k in ("pid", "ppid", "comm", "state", "cpu", "on_cpu")} for t in read] == \
        [truth[t["pid"]] for t in read]
    assert len(read) + len(unread) == len(gt["tasks"])
    assert statuses["tasks"] == (Status.PARTIAL if unread else Status.OK)
    if level == 1:
        assert not unread
    log = results["dmesg"].table("log").dicts()
    assert [{"time": r["time"], "level": r["level"], "text": r["text"]} for r in log] == gt["dmesg"]
    panic = results["panic"]
    assert panic.fact("panic message") == "Kernel panic - not syncing: " + gt["panic_message"]
    assert panic.fact("crashed pid") == gt["crashed_pid"]
    assert [f["function"] for f in panic.table("backtrace").dicts()] == gt["backtrace"]


def test_cli_analyze_and_inspect_on_kdump(kdump_files):
    crash, path = kdump_files("6.1", "-F -c", 31)
    run = subprocess.run([*CLI, "analyze", str(path), "--vmlinux", str(crash.vmlinux), "--only", "panic"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert crash.ground_truth["panic_message"] in run.stdout
    release = crash.ground_truth["kernel_release"]
    for cmd in (["shell", str(path), "-e", "print(prog['init_uts_ns'].name.release.string_().decode())"],
                ["crash", str(path), "-c", "sys"]):
        run = subprocess.run([*CLI, *cmd, "--vmlinux", str(crash.vmlinux)], capture_output=True, text=True)
        assert run.returncode == 0 and release in run.stdout, (cmd, run.stderr)
    run = subprocess.run([*CLI, "inspect", str(path)], capture_output=True, text=True)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr  # opened directly (issue 18)
    assert "kdump-flattened" in run.stdout and release in run.stdout


@pytest.mark.parametrize("options", ["-c", "-F -c"])
def test_cut_real_files_read_to_the_cut(kdump_files, tmp_path, options):
    """makedumpfile's files cut at seeded offsets past the headers: every page still
    in the file is the original's, every dumped page after the cut is named missing."""
    import random

    crash, path = kdump_files("6.1", options, 31)
    blob = path.read_bytes()
    rng = random.Random(18)
    with ElfVmcore(crash.vmcore) as orig:
        for cut in sorted(rng.randrange(len(blob) // 8, len(blob)) for _ in range(3)):
            part = tmp_path / f"cut{cut}"
            part.write_bytes(blob[:cut])
            with KdumpFile(part) as k:
                present, dumped = k.present_mask(), k.dumped
                missing = _pfn_mask(k.missing_ranges(), k.header.max_mapnr)
                assert missing.any() and k.problems
                assert np.array_equal(present | missing, dumped)
                for pfn in np.flatnonzero(present)[::7]:
                    a = int(pfn) << 12
                    assert k.read(a, 4096) == orig.read(a, 4096)
                with pytest.raises(NotCollectedError):
                    k.read(int(np.flatnonzero(missing)[0]) << 12, 8)
            run = subprocess.run([*CLI, "import", str(part), "-o", str(tmp_path / "c.tsd"), "--force"],
                                 capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            with open_dump([tmp_path / "c.tsd"]) as dump:
                c = dump.completeness()
                assert c.complete is False and c.missing_bytes == int(missing.sum()) * 4096


@pytest.mark.parametrize("level", [1, 31])
def test_split_set_imports_and_analyzes_in_any_order(crash_lab, tmp_path, level):
    """``makedumpfile --split`` into 3 files, given shuffled: the import equals the
    original on every kept page, analyze reads the ground truth panic."""
    crash = crash_lab(kernel="6.1")
    proc = tmp_path / "vmcore.proc"
    copy_as_proc_vmcore(crash.vmcore, proc)
    parts = [tmp_path / f"part{i}" for i in range(3)]
    run = subprocess.run(["makedumpfile", "--split", "-l", "-d", str(level), str(proc), *map(str, parts)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
    proc.unlink()
    shuffled = [parts[2], parts[0], parts[1]]
    tsd = tmp_path / "d.tsd"
    run = subprocess.run([*CLI, "import", *map(str, shuffled), "-o", str(tsd)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with open_dump([tsd]) as dump, ElfVmcore(crash.vmcore) as orig:
        assert dump.completeness().complete is True
        for r in dump.memory.ranges():
            for a in range(r.start, r.end, 4096 * 13):
                assert dump.memory.read(a, 4096) == orig.read(a, 4096)
    run = subprocess.run([*CLI, "analyze", *map(str, shuffled), "--vmlinux", str(crash.vmlinux),
                          "--only", "panic"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert crash.ground_truth["panic_message"] in run.stdout


def test_makedumpfile_elf_output_faults_where_pages_were_left_out(crash_lab, tmp_path):
    """``makedumpfile -E -d 31`` marks left-out pages as p_memsz beyond p_filesz:
    analyze on it reads what the file holds and faults (never zeros) on the rest."""
    from tsubaki_forensics.errors import NotCollectedError
    from tsubaki_forensics.vmcore.foreign import open_foreign

    crash = crash_lab(kernel="6.1")
    proc, out = tmp_path / "vmcore.proc", tmp_path / "e.elf"
    copy_as_proc_vmcore(crash.vmcore, proc)
    run = subprocess.run(["makedumpfile", "-E", "-d", "31", str(proc), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
    with ElfVmcore(out) as e, ElfVmcore(crash.vmcore) as orig, open_foreign([out]) as dump:
        tails = [(s.paddr + s.size, s.end) for s in e.segments if s.memsz > s.size]
        assert tails and [(r.paddr, r.end) for r in dump.excluded] == tails  # excluded, not missing
        with pytest.raises(NotCollectedError):
            dump.memory.read(tails[0][0], 8)
        for r in dump.memory.ranges()[:50]:
            assert dump.memory.read(r.start, min(r.length, 1 << 16)) == orig.read(r.start, min(r.length, 1 << 16))
    run = subprocess.run([*CLI, "analyze", str(out), "--vmlinux", str(crash.vmlinux), "--only", "panic"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and crash.ground_truth["panic_message"] in run.stdout, run.stderr
