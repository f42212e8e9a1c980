"""arm64 end to end: a Debian arm64 kernel panicked under qemu-system-aarch64, then every step of ours.

The crash lab boots Debian's cloud-arm64 kernel under TCG (docs/LAB.md,
"arm64 guests"); the ground truth is plain drgn on QEMU's ELF vmcore with the
DWARF vmlinux, computed on this x86_64 host.  Everything expected is read
from that ground truth at run time.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from _analysis import analyze_file, result_named
from _cli import run_cli
from _free_pages import buddy_free_pages

from tsubaki_forensics.analysis import Status
from tsubaki_forensics.lab.ground_truth import panic_callers, panic_entry
from tsubaki_forensics.triage.signature import clean_function
from tsubaki_forensics.vmcore.importer import import_vmcore

pytestmark = pytest.mark.realkernel


def cli(*args, ok=True):
    return run_cli(*args, ok=ok, timeout=900)


# CI runs one arm64 crash (sysrq, idle, 512M: ~1 min of TCG plus a ~290 MB
# download on a fresh machine); TSUBAKI_ARM64_MATRIX=1 runs every scenario,
# workload and size of the proof (docs/LAB.md has the last run).
_MATRIX = [("6.1", "sysrq", "idle", "512M")]
if os.environ.get("TSUBAKI_ARM64_MATRIX"):
    _MATRIX = [("6.1", s, w, m) for s in ("sysrq", "oom", "hung-task") for w in ("idle", "busy")
               for m in ("512M", "2G")] + [("6.12", "sysrq", "idle", "512M"), ("6.12", "hung-task", "idle", "512M")]


@pytest.fixture(scope="module", params=_MATRIX, ids=["-".join(p) for p in _MATRIX])
def arm_crash(request, crash_lab):
    kernel, scenario, workload, mem = request.param
    return crash_lab(scenario=scenario, workload=workload, mem=mem, kernel=kernel, arch="arm64")


@pytest.fixture(scope="module")
def arm_tsd(arm_crash, tmp_path_factory):
    path = tmp_path_factory.mktemp("arm64") / "crash.tsd"
    import_vmcore(arm_crash.vmcore, path)
    return path


def test_the_lab_made_an_arm64_crash(arm_crash):
    m, gt = arm_crash.manifest, arm_crash.ground_truth
    assert m["arch"] == "arm64" and m["qemu_argv"][0] == "qemu-system-aarch64"
    assert m["panic_event"]["event"] == "SHUTDOWN"  # the reset panic=-1 makes, kept paused
    assert gt["kernel_release"].endswith("arm64") and gt["panic_message"]
    # The panicking CPU stopped in the reset path called from panic(): the
    # scenario's caller is still below the panic machinery.
    assert panic_callers(gt["backtrace"]), gt["backtrace"]


def test_import_inspect_verify_export_round_trip(arm_crash, arm_tsd, tmp_path):
    info = json.loads(cli("inspect", arm_tsd, "--format", "json").stdout)
    assert info["arch"] == "aarch64"
    assert info["kernel_release"] == arm_crash.ground_truth["kernel_release"]
    assert info["memory"]["completeness_percent"] == 100.0
    verified = json.loads(cli("verify", arm_tsd, "--format", "json").stdout)
    assert verified["ok"], verified["problems"]
    out = tmp_path / "export.elf"
    cli("export", arm_tsd, "-o", out)
    assert _memory(out) == _memory(arm_crash.vmcore)
    out.unlink()  # as large as the guest's RAM: the matrix would keep one per crash


def _memory(elf_path):
    """{physical address: (size, sha256)} of every PT_LOAD of an ELF vmcore, read in 8 MiB pieces."""
    import hashlib

    from elftools.elf.elffile import ELFFile

    out = {}
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == "EM_AARCH64"
        loads = [(s["p_paddr"], s["p_offset"], s["p_filesz"], s["p_memsz"])
                 for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        for paddr, offset, filesz, memsz in loads:
            digest, done = hashlib.sha256(), 0
            f.seek(offset)
            while done < filesz:
                piece = f.read(min(8 << 20, filesz - done))
                assert piece, f"{elf_path} ends inside the segment at {paddr:#x}"
                digest.update(piece)
                done += len(piece)
            digest.update(bytes(memsz - filesz))  # a tail past p_filesz reads as zeros
            out[paddr] = (memsz, digest.hexdigest())
    return out


@pytest.fixture(scope="module")
def report(arm_tsd, arm_crash):
    return analyze_file(arm_tsd, arm_crash.vmlinux, ["tasks", "dmesg", "panic"])


def test_analyze_equals_ground_truth(report, arm_crash):
    gt = arm_crash.ground_truth
    assert [(r.name, r.status) for r in report.results] == [
        ("tasks", Status.OK), ("dmesg", Status.OK), ("panic", Status.OK)]
    tasks = result_named(report, "tasks").table("tasks").dicts()
    assert [{k: r[k] for k in ("pid", "ppid", "comm", "state", "cpu", "on_cpu")} for r in tasks] == \
        sorted(gt["tasks"], key=lambda t: t["pid"])
    log = result_named(report, "dmesg").table("log").dicts()
    assert [{"time": r["time"], "level": r["level"], "text": r["text"]} for r in log] == gt["dmesg"]
    panic = result_named(report, "panic")
    assert panic.fact("panic message") == "Kernel panic - not syncing: " + gt["panic_message"]
    assert (panic.fact("panicking CPU"), panic.fact("crashed pid")) == (gt["crashed_cpu"], gt["crashed_pid"])
    frames = panic.table("backtrace").dicts()
    assert [f["function"] for f in frames] == gt["backtrace"]
    # arm64 unwinds by frame pointer: every frame that is not inline has a frame address.
    assert all(f["sp"] for f in frames if not f["inline"])


def test_analyze_from_the_cli_in_crash_order(arm_tsd, arm_crash):
    text = cli("analyze", arm_tsd, "--vmlinux", arm_crash.vmlinux).stdout
    assert "MACHINE: aarch64" in text
    assert f"PANIC: Kernel panic - not syncing: {arm_crash.ground_truth['panic_message']}" in text


@pytest.mark.parametrize("direction", ["arm64 dump, x86_64 vmlinux", "x86_64 dump, arm64 vmlinux"])
def test_vmlinux_of_the_other_architecture_is_one_line(direction, arm_tsd, arm_crash, real_crash):
    dump, vmlinux = (arm_tsd, real_crash.vmlinux) if direction.startswith("arm64") else \
        (real_crash.vmcore, arm_crash.vmlinux)
    proc = cli("analyze", dump, "--vmlinux", vmlinux, ok=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "aarch64" in line and "x86_64" in line, line


def test_no_vmlinux_a_symbol_pack_gives_the_ground_truth(arm_crash, tmp_path):
    """Debian's arm64 kernels lack CONFIG_KALLSYMS_ALL, so the dump cannot describe itself;
    a symbol pack cut from the -dbg vmlinux can, and drgn unwinds by frame pointer."""
    import drgn
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    from tsubaki_forensics.selfcontained.verify import KERNEL_SPACE, observe
    from tsubaki_forensics.symbolpack import attach_symbolpack, read_pack

    pack_path = tmp_path / "arm64.tsp"
    cli("symbols", "pack", arm_crash.vmlinux, "-o", pack_path)
    prog = drgn.Program()
    prog.set_core_dump(str(arm_crash.vmcore))  # drgn's own ELF path, no vmlinux
    report = attach_symbolpack(prog, read_pack(pack_path))
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    assert report.frame_pointers and report.kernel_offset != 0  # KASLR applied to arm64's image addresses
    seen, truth = observe(prog), arm_crash.ground_truth
    for key in ("kernel_release", "crashed_cpu", "crashed_pid", "tasks", "dmesg"):
        assert seen[key] == truth[key], key

    dwarf = drgn.Program()
    dwarf.set_core_dump(str(arm_crash.vmcore))
    dwarf.load_debug_info([str(arm_crash.vmlinux)])

    def pcs(p):
        return [f.pc for f in p.crashed_thread().stack_trace() if not f.is_inline and f.pc >= KERNEL_SPACE]

    assert pcs(prog) == pcs(dwarf) and pcs(prog)


def _kallsyms_lists_data(vmcore) -> bool:
    """Whether the kernel's kallsyms has data symbols (CONFIG_KALLSYMS_ALL), read by drgn from the dump."""
    import drgn
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    return bool(load_vmlinux_kallsyms(prog)(prog, "init_task", None, True))


def test_no_vmlinux_the_dump_describes_itself_or_says_why(arm_crash, arm_tsd):
    """Debian's 6.1 arm64 kernel lacks CONFIG_KALLSYMS_ALL (one line says so); 6.12's has it, and
    then the dump's own BTF and kallsyms give the ground truth's panic without any vmlinux."""
    proc = cli("analyze", arm_tsd, "--self-contained", "--format", "json", ok=False)
    assert "Traceback" not in proc.stderr
    if _kallsyms_lists_data(arm_crash.vmcore):
        assert proc.returncode == 0, proc.stderr
        assert arm_crash.ground_truth["panic_message"] in proc.stdout
        assert "frame-pointer unwinder" in proc.stderr  # arm64 has no ORC, and needs none
    else:
        assert proc.returncode != 0
        assert "CONFIG_KALLSYMS_ALL" in proc.stderr.strip().splitlines()[-1]


def test_collect_of_an_arm64_crash_is_the_captured_memory(arm_crash, tmp_path):
    """The monitor emulation on an arm64 crash: its dump, exported, is QEMU's memory byte for byte."""
    out, elf = tmp_path / "collected.tsd", tmp_path / "collected.elf"
    cli("collect", arm_crash.vmcore, "-o", out, "--policy", "tsubaki")
    verified = json.loads(cli("verify", out, "--format", "json").stdout)
    assert verified["ok"], verified["problems"]
    cli("export", out, "-o", elf)
    assert _memory(elf) == _memory(arm_crash.vmcore)
    elf.unlink()
    out.unlink()


def test_collect_compare_models_kdump_at_level_31_on_arm64(arm_crash, tmp_path):
    """kdump's level 31 and the triage policy read arm64's page tables and struct pages."""
    proc = cli("collect", arm_crash.vmcore, "--compare", "-o", tmp_path / "c.tsd", "-f", "json")
    policies = json.loads(proc.stdout)["policies"]
    assert policies["kdump"]["dump_level"] == 31 and policies["kdump"]["pages"]["kept"] > 0
    # Which restarts sooner is a finding (docs/COLLECT.md), not a property: on a busy 512 MiB
    # guest kdump's -d 31 can win; every policy restarts after the panic, none before reboot-only.
    assert all(p["restart_s"] >= policies["reboot-only"]["restart_s"] for p in policies.values())
    assert "address" not in proc.stderr and "modelled at level 1" not in proc.stderr, proc.stderr


def test_page_classes_on_arm64_match_the_kernel_counters(arm_crash, tmp_path):
    """Dump level 31 reads arm64's vmemmap from VMCOREINFO; its free pages are those on the buddy
    allocator's free lists, counted by drgn walking them (tests/_free_pages.py)."""
    out = tmp_path / "d31.tsd"
    cli("import", arm_crash.vmcore, "-d", "31", "-o", out)
    info = json.loads(cli("inspect", out, "--format", "json").stdout)
    free = buddy_free_pages(arm_crash.vmcore, arm_crash.vmlinux)
    assert info["memory"]["dump_level"] == 31
    assert info["memory"]["pages"]["excluded"]["free"] == free, info["memory"]["pages"]


def test_triage_groups_arm64_by_the_bug_not_the_reset_path(arm_crash, arm_tsd, real_crash, tmp_path):
    """Triage of both architectures at once: the frames above panic() (the reset that stops the
    lab's arm64 guests, pvpanic on x86_64) are plumbing, so the same bug is one group."""
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    shutil.copyfile(arm_tsd, dumps / "arm64.tsd")
    import_vmcore(real_crash.vmcore, dumps / "x86_64.tsd")  # the default x86_64 crash: sysrq
    groups = json.loads(cli("triage", dumps, "--format", "json", "--no-cache").stdout)
    (arm_group,) = [g for g in groups if str(dumps / "arm64.tsd") in g["dumps"]]
    # The signature starts right below panic(): the frames after the ground truth's panic entry.
    backtrace = arm_crash.ground_truth["backtrace"]
    below_panic = [clean_function(name) for name in backtrace[panic_entry(backtrace) + 1:]]
    frames = arm_group["frames"]
    # 6.12 enters through vpanic under panic: the signature is a run of the frames below the entry.
    starts = [i for i in range(len(below_panic)) if below_panic[i:i + len(frames)] == frames]
    assert frames and starts, (frames, backtrace)
    same_bug = arm_crash.manifest["scenario"] == real_crash.manifest["scenario"]
    assert (str(dumps / "x86_64.tsd") in arm_group["dumps"]) is same_bug, groups
