"""The crash lab on real Debian kernels: the crashes really happened as designed.

Each check reads what plain drgn found in the ELF vmcore (the ground truth)
or the vmcore bytes themselves; nothing here trusts the lab's own summary.
Nothing names a kernel release or the panic function: the panic path is found
by a property (``panic_entry``: ``panic`` on 6.1, ``vpanic`` on 6.12.118), and
every failure of ``_check_crash`` says on which kernel it happened and, when
the cache holds the same crash of an earlier release of the series, how the
crashed backtrace changed since.
"""

from __future__ import annotations

import difflib
import json
import mmap
from pathlib import Path

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from tsubaki_forensics.errors import LabError
from tsubaki_forensics.lab import SCENARIOS, ensure_kernel, get_scenario, get_workload, resolve_release
from tsubaki_forensics.lab.cache import cache_root
from tsubaki_forensics.lab.crash import GROUND_TRUTH
from tsubaki_forensics.lab.ground_truth import PANIC_PREFIX, panic_callers, panic_entry
from tsubaki_forensics.lab.kernel import _release_key
from tsubaki_forensics.lab.pinning import PIN_ENV, env_pins
from tsubaki_forensics.lab.host import find_static_busybox
from tsubaki_forensics.lab.initramfs import MARKER_PREFIX, READY_LINE, build_initramfs
from tsubaki_forensics.lab.debpkg import module_depends, read_build_id, select_modules
from tsubaki_forensics.lab.qemu import GuestSpec, run_guest
from tsubaki_forensics.lab.scenarios import Scenario

pytestmark = pytest.mark.realkernel

GIB = 1 << 30
DAEMONS = {"tsk-sensord", "tsk-logger", "tsk-netd"}


def _loads(vmcore: Path) -> list[tuple[int, int, int]]:
    """(physical address, size, file offset) of every PT_LOAD."""
    with open(vmcore, "rb") as f:
        return [(s["p_paddr"], s["p_filesz"], s["p_offset"])
                for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]


def _notes(vmcore: Path) -> list[str]:
    with open(vmcore, "rb") as f:
        return [f"{n['n_name']}:{n['n_type']}" for s in ELFFile(f).iter_segments()
                if s["p_type"] == "PT_NOTE" for n in s.iter_notes()]


def _zero_page_fraction(vmcore: Path) -> float:
    zero = total = 0
    with open(vmcore, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for _, size, offset in _loads(vmcore):
            pages = np.frombuffer(m, dtype=np.uint64, count=size // 8, offset=offset).reshape(-1, 512)
            nonzero = pages.any(axis=1)
            zero += int((~nonzero).sum())
            total += len(nonzero)
            del pages, nonzero
    return zero / total


def _earlier_backtrace(result) -> tuple[str, list[str]] | None:
    """(release, crashed backtrace) of the same crash on the newest earlier cached release of the series."""
    here = result.directory
    release = result.manifest["kernel"]["release"]
    series = result.manifest["kernel"]["series"]
    others = []
    for gt in here.parent.parent.glob(f"*/{here.name}/{GROUND_TRUTH}"):
        other = gt.parent.parent.name
        if other != release and _release_key(other) < _release_key(release):
            manifest = json.loads((gt.parent / "manifest.json").read_text())
            if manifest["kernel"]["series"] == series:
                others.append((_release_key(other), other, json.loads(gt.read_text())["backtrace"]))
    return max(others)[1:] if others else None


def _what_changed(result) -> str:
    """How the crashed backtrace differs from the same crash of an earlier release ('' if none cached)."""
    earlier = _earlier_backtrace(result)
    if earlier is None:
        return ""
    release, old = earlier
    diff = [line for line in difflib.unified_diff(old, result.ground_truth["backtrace"], lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return f"; since {release} the crashed backtrace changed: {' '.join(diff) or 'nothing'}"


def _check_crash(result, scenario: Scenario, smp: int) -> None:
    """Every fact the scenario promises; a failure names the kernel and what changed in the backtrace."""
    try:
        _check_facts(result, scenario, smp)
    except AssertionError as e:
        kern = result.manifest["kernel"]
        raise AssertionError(
            f"scenario {scenario.name} on kernel {kern['release']} ({kern['version']}, requested "
            f"{kern.get('requested', '?')}): {e}{_what_changed(result)}") from e


def _check_facts(result, scenario: Scenario, smp: int) -> None:
    gt = result.ground_truth
    texts = [d["text"] for d in gt["dmesg"]]
    marker = result.manifest["marker"]
    assert marker.startswith(MARKER_PREFIX)
    assert [d["level"] for d in gt["dmesg"] if d["text"] == marker] == [2]
    assert gt["panic_message"].startswith(scenario.panic_message)
    assert PANIC_PREFIX + gt["panic_message"] in texts
    # the marker was logged before the panic
    assert texts.index(marker) < texts.index(PANIC_PREFIX + gt["panic_message"])
    by_pid = {t["pid"]: t for t in gt["tasks"]}
    assert by_pid[1]["comm"] == "init"
    assert DAEMONS <= {t["comm"] for t in gt["tasks"]}
    if scenario.crashed_comm:
        crashed = by_pid[gt["crashed_pid"]]
        assert crashed["comm"] == scenario.crashed_comm and crashed["on_cpu"]
        assert crashed["cpu"] == gt["crashed_cpu"]
    bt = gt["backtrace"]
    assert bt[0].startswith("pvpanic_"), f"the innermost frame is not the pvpanic notifier: {bt}"
    assert panic_entry(bt) is not None, f"no frame of the panic path (a name with 'panic') in {bt}"
    missing = [frame for frame in scenario.expected_frames if frame not in bt]
    assert not missing, (f"scenario.expected_frames {missing} (lab/scenarios.py) are not in the crashed "
                         f"backtrace {bt} (renamed or inlined by this kernel?)")
    assert 0 <= gt["crashed_cpu"] < smp
    assert sorted(gt["cpu_backtraces"]) == sorted(str(c) for c in range(smp) if c != gt["crashed_cpu"])
    notes = _notes(result.vmcore)
    assert notes.count("CORE:NT_PRSTATUS") == smp
    assert "VMCOREINFO:0" in notes
    assert gt["build_id"] == result.manifest["kernel"]["build_id"] == read_build_id(result.vmlinux)
    assert gt["kernel_release"] == result.manifest["kernel"]["release"]


def test_default_crash_really_happened(real_crash):
    sysrq = get_scenario("sysrq")
    _check_crash(real_crash, sysrq, 2)
    gt = real_crash.ground_truth
    assert gt["kernel_release"] == real_crash.manifest["kernel"]["release"]
    assert real_crash.manifest["kernel"]["series"] == "6.1"
    # what called panic() is the sysrq handler, the scenario's first expected frame
    assert panic_callers(gt["backtrace"])[0] == sysrq.expected_frames[0], gt["backtrace"]


@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_suite_runs_on_the_newest_kernel_of_the_archive(crash_lab, series):
    """The day Debian publishes a kernel, the real-kernel suite boots it, and this says so by name.

    The newest release is what apt resolves for the series' meta package
    (CI refreshes the lists first); the crash fixtures must have booted it
    (the dump's own UTS release), unless TSUBAKI_LAB_KERNELS pins the series.
    """
    newest = resolve_release(series)
    pin = env_pins().get(series)
    result = crash_lab(kernel=series)
    used = result.manifest["kernel"]["release"]
    if pin is None:
        assert used == newest, (f"the {series} crashes of this run are of {used}, but the archive's newest {series} "
                                f"is {newest} (apt offline, or a stale cache entry?)")
    else:
        assert used in (pin, newest), f"{PIN_ENV} pins {pin}, the archive's newest is {newest}, the crashes used {used}"
    assert result.ground_truth["kernel_release"] == used
    _check_crash(result, get_scenario("sysrq"), 2)


def test_pinning_the_current_release_reuses_its_cache(real_crash, crash_lab):
    """``--kernel <release>`` of the release in use: the same cached kernel and crash, nothing downloaded."""
    kern = real_crash.manifest["kernel"]
    abi = kern["release"].removesuffix("-cloud-amd64")
    kernels = sorted(p.name for p in (cache_root() / "kernels").iterdir())
    pinned = ensure_kernel(abi)
    assert (pinned.release, pinned.requested, pinned.build_id) == (kern["release"], kern["release"], kern["build_id"])
    assert crash_lab(kernel=abi).directory == real_crash.directory
    assert sorted(p.name for p in (cache_root() / "kernels").iterdir()) == kernels


def test_pin_gone_from_the_archive_falls_back_to_the_newest(real_crash):
    """Real apt: a release the archive does not have is replaced by the series' newest, with a warning."""
    from tsubaki_forensics.lab.kernel import choose_release, in_archive
    from tsubaki_forensics.lab.pinning import parse_kernel_request

    gone = parse_kernel_request("6.1.0-0", environ={})  # ABI 0: no Debian 12 kernel ever had it
    assert not in_archive(gone.pinned) and in_archive(real_crash.manifest["kernel"]["release"])
    warnings = []
    assert choose_release(gone, warnings.append) == resolve_release("6.1")
    assert warnings == [f"kernel {gone.pinned} is no longer in the archive nor in the cache; "
                        f"using the newest 6.1: {resolve_release('6.1')}"]


def test_default_crash_memory_holds_the_written_file(real_crash):
    """The report file /init wrote is in the dump (tmpfs page cache), and RAM is mostly zero."""
    with open(real_crash.vmcore, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert m.find(b"tsubaki crash lab report\nscenario=sysrq workload=idle\n") >= 0
    assert _zero_page_fraction(real_crash.vmcore) > 0.6


def test_manifest_describes_the_files(real_crash):
    m = real_crash.manifest
    # Crashes cached before guests had an architecture were all x86_64.
    assert {"arch": "x86_64", **m["params"]} == {"scenario": "sysrq", "mem": "512M", "smp": 2, "workload": "idle",
                                                 "kernel": "6.1", "ram_file": False, "arch": "x86_64"}
    assert m["kernel"]["requested"] in ("6.1", env_pins().get("6.1"))
    assert m["files"]["vmcore"]["bytes"] == real_crash.vmcore.stat().st_size
    assert sum(size for _, size, _ in _loads(real_crash.vmcore)) >= m["mem_bytes"]
    assert m["panic_event"]["event"] == "GUEST_PANICKED"
    assert m["kernel"]["download_bytes"] > 100_000_000
    assert all(v >= 0 for v in m["timings"].values()) and m["timings"]["boot_to_panic_s"] > 0
    assert real_crash.console.read_text(errors="replace").count(READY_LINE) == 1


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"sysrq"}))
def test_scenario_crash(crash_lab, name):
    _check_crash(crash_lab(scenario=name), get_scenario(name), 2)


def test_hung_task_victim_is_blocked(crash_lab):
    """khungtaskd panicked because the writer on the frozen file system sat in D state."""
    tasks = crash_lab(scenario="hung-task").ground_truth["tasks"]
    assert [t["state"] for t in tasks if t["comm"] == "tsk-trigger"] == ["D"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_crash_on_6_12(crash_lab, name):
    """Same scenarios, other kernel series: different struct layouts, same facts."""
    result = crash_lab(scenario=name, kernel="6.12")
    _check_crash(result, get_scenario(name), 2)
    assert result.manifest["kernel"]["series"] == "6.12"
    assert result.ground_truth["kernel_release"] == result.manifest["kernel"]["release"]


def test_scenarios_have_different_backtraces(crash_lab):
    """Below the panic path the crashed threads took different paths."""
    below = {}
    for name in SCENARIOS:
        below[name] = tuple(panic_callers(crash_lab(scenario=name).ground_truth["backtrace"]))
    assert all(below.values()), below
    assert len(set(below.values())) == len(SCENARIOS), below


@pytest.mark.slow
def test_busy_workload_fills_memory(crash_lab, real_crash):
    busy = crash_lab(workload="busy")
    _check_crash(busy, get_scenario("sysrq"), 2)
    comms = {t["comm"] for t in busy.ground_truth["tasks"]}
    assert {"awk", "dd"} <= comms  # the record cache and the random-key vault are resident
    assert _zero_page_fraction(busy.vmcore) < 0.35
    assert _zero_page_fraction(real_crash.vmcore) > 0.6


@pytest.mark.slow
def test_large_guest_is_split_by_the_pci_hole(crash_lab):
    result = crash_lab(mem="4G", smp=4)
    _check_crash(result, get_scenario("sysrq"), 4)
    ram = [(start, size) for start, size, _ in _loads(result.vmcore) if size >= 1 << 20]
    assert ram == [(0, 3 * GIB), (4 * GIB, GIB)]


def test_ram_file_matches_the_dump(crash_lab):
    result = crash_lab(mem="256M", smp=1, ram_file=True)
    _check_crash(result, get_scenario("sysrq"), 1)
    assert result.ram_file is not None and result.ram_file.stat().st_size == 256 << 20
    with open(result.vmcore, "rb") as core, open(result.ram_file, "rb") as ram:
        start, size, offset = _loads(result.vmcore)[0]
        assert start == 0
        for paddr in (1 << 20, 16 << 20, 200 << 20):
            core.seek(offset + paddr)
            ram.seek(paddr)
            assert core.read(1 << 20) == ram.read(1 << 20)


def test_kernel_cache_has_the_guest_modules(real_crash):
    kern = ensure_kernel("6.1")
    names = [p.name for p in kern.modules]
    assert {"pvpanic.ko", "pvpanic_mmio.ko", "qemu_fw_cfg.ko"} <= set(names)
    for i, path in enumerate(kern.modules):  # load order: dependencies first
        for dep in module_depends(path):
            assert names.index(f"{dep}.ko") < i
    assert kern.bzimage.read_bytes()[0x202:0x206] == b"HdrS"  # the Linux boot protocol header
    picked = [p.name for p in select_modules(kern.modules, ("pvpanic-mmio",))]
    assert picked[-1] == "pvpanic_mmio.ko" and set(picked) == {"pvpanic_mmio.ko", *(f"{d}.ko" for d in
                                                                   module_depends(kern.modules[names.index("pvpanic_mmio.ko")]))}


def _guest(tmp_path: Path, scenario: Scenario, modules, timeout: float = 600,
           panic_window: float | None = None) -> GuestSpec:
    """A failing guest.  ``timeout`` only guards against hangs (a loaded CI
    machine may take minutes to boot); what a test asserts never depends on it."""
    kern = ensure_kernel("6.1")
    initrd = tmp_path / "initrd.cpio"
    build_initramfs(initrd, find_static_busybox(), modules(kern), scenario, get_workload("idle"),
                    f"{MARKER_PREFIX} failure-test")
    return GuestSpec(bzimage=kern.bzimage, initrd=initrd, mem=256 << 20, smp=1, workdir=tmp_path / "run",
                     ready_line=READY_LINE, timeout=timeout, panic_window=panic_window)


def test_guest_that_never_panics_is_a_clear_error(tmp_path, real_crash):
    calm = Scenario(name="calm", summary="never panics")
    # The window starts when the host sees the ready line, so however slow the
    # boot, the error always comes with the ready line in its console tail.
    with pytest.raises(LabError, match=r"did not panic within 10 s of its ready line: .*TSUBAKI-LAB-READY"):
        run_guest(_guest(tmp_path, calm, lambda k: k.modules, panic_window=10))


def test_guest_without_pvpanic_is_a_clear_error(tmp_path, real_crash):
    no_pvpanic = lambda k: [m for m in k.modules if "pvpanic" not in m.name]  # noqa: E731
    with pytest.raises(LabError, match=r"without a GUEST_PANICKED event \(was pvpanic loaded\?\).*not syncing: sysrq triggered crash"):
        run_guest(_guest(tmp_path, get_scenario("sysrq"), no_pvpanic))


def test_cli_lab_crash_end_to_end(tmp_path, capsys, real_crash):
    """The user's command, pinned to the release in use: kernel from the cache, a fresh boot, a crash directory."""
    from tsubaki_forensics.cli.app import main

    out = tmp_path / "crash"
    release = real_crash.manifest["kernel"]["release"]
    argv = ["lab", "crash", "--scenario", "init-exit", "--mem", "256M", "--smp", "1", "-o", str(out), "--format", "json",
            "--kernel", release.removesuffix("-cloud-amd64")]
    assert main(argv) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (manifest["kernel"]["requested"], manifest["kernel"]["release"]) == (release, release)
    assert manifest["panic_message"].startswith("Attempted to kill init!")
    assert (out / "vmcore.elf").stat().st_size == manifest["files"]["vmcore"]["bytes"]
    assert sorted(p.name for p in out.iterdir()) == [".complete", "console.log", "ground_truth.json",
                                                     "manifest.json", "vmcore.elf"]
    assert main(argv) == 1  # refuses to overwrite without --force
    assert "--force" in capsys.readouterr().err


def test_cpu_register_backtrace_agrees_with_the_task_backtrace(real_crash):
    """The fallback for a panic racing a context switch unwinds the same stack when there is no race."""
    import drgn
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    from tsubaki_forensics.lab.ground_truth import _prstatus_regs, backtrace_names

    gt = real_crash.ground_truth
    assert gt["backtrace_source"] == "task"
    prog = drgn.Program()
    prog.set_core_dump(str(real_crash.vmcore))
    prog.load_debug_info([str(real_crash.vmlinux)])
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    regs = _prstatus_regs(prog, real_crash.vmcore, gt["crashed_cpu"])
    assert backtrace_names(prog, prog.stack_trace(regs)) == gt["backtrace"]


def test_mismatched_vmlinux_is_a_clear_error(real_crash, crash_lab):
    from tsubaki_forensics.lab.ground_truth import compute_ground_truth

    other = crash_lab(kernel="6.12").vmlinux
    with pytest.raises(LabError, match="does not match the kernel in vmcore.elf"):
        compute_ground_truth(real_crash.vmcore, other)
