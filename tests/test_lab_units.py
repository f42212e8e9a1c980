"""Fast tests of the crash lab's pure parts: no QEMU, no download, no kernel."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import json
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsubaki_forensics.errors import LabError
from tsubaki_forensics.lab import CrashParams, get_scenario, get_workload, load_crash
from tsubaki_forensics.lab import arch, host, kernel, qemu
from tsubaki_forensics.lab.cache import COMPLETE_MARKER, atomic_entry, cache_root, entry_is_complete
from tsubaki_forensics.lab.ground_truth import backtrace_names, panic_callers, panic_entry, panic_message_from_dmesg
from tsubaki_forensics.lab.initramfs import READY_LINE, CpioWriter, render_init
from tsubaki_forensics.lab.scenarios import SCENARIOS
from tsubaki_forensics.lab.sizes import MAX_GUEST_MEM, MIN_GUEST_MEM, format_size, parse_size

MIB = 1 << 20


# --- sizes -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 * MIB), ("4G", 4096 * MIB), ("1.5G", 1536 * MIB), ("256MiB", 256 * MIB),
     (str(512 * MIB), 512 * MIB), ("2gb", 2048 * MIB), (" 3072 M ", 3072 * MIB), (1 << 30, 1 << 30)],
)
def test_parse_size_accepts_qemu_spellings(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12Q", "", "M", "-1G", "100K", "64M", "1T"])
def test_parse_size_rejects_with_a_clear_message(text):
    with pytest.raises(LabError, match="memory size"):
        parse_size(text)


def test_a_bare_number_is_bytes_as_everywhere_not_qemus_mib():
    """One size semantics in the project (tsubaki_forensics.sizes): ``512`` is refused with a hint."""
    with pytest.raises(LabError, match=r"a bare number is bytes.*write 512M"):
        parse_size("512")


@given(st.integers(MIN_GUEST_MEM // MIB, MAX_GUEST_MEM // MIB))
def test_format_size_round_trips(mib):
    assert parse_size(format_size(mib * MIB)) == mib * MIB


def test_format_size_is_canonical():
    assert format_size(4096 * MIB) == "4G"
    assert format_size(1536 * MIB) == "1536M"


# --- kernel resolution ---------------------------------------------------------

APT_CACHE_61 = """linux-image-cloud-amd64
  Depends: linux-image-6.1.0-56-cloud-amd64
"""
APT_CACHE_612 = """linux-image-6.12-cloud-amd64
  Depends: linux-image-6.12.117+deb12-cloud-amd64
"""


def test_parse_depends_reads_the_release():
    assert kernel.parse_depends(APT_CACHE_61) == "6.1.0-56-cloud-amd64"
    assert kernel.parse_depends(APT_CACHE_612) == "6.12.117+deb12-cloud-amd64"


def test_parse_depends_accepts_an_unsigned_dependency():
    assert kernel.parse_depends("x\n  Depends: linux-image-6.1.0-9-amd64-unsigned\n") == "6.1.0-9-amd64"


def test_parse_depends_without_kernel_is_an_error():
    with pytest.raises(LabError, match="no linux-image dependency"):
        kernel.parse_depends("linux-image-cloud-amd64\n  Depends: <nothing>\n")


def test_meta_package_per_series():
    assert kernel.meta_package("6.1") == "linux-image-cloud-amd64"
    assert kernel.meta_package("6.12") == "linux-image-6.12-cloud-amd64"
    assert kernel.meta_package("6.12", "amd64") == "linux-image-6.12-amd64"
    with pytest.raises(LabError, match="MAJOR.MINOR"):
        kernel.meta_package("latest")
    with pytest.raises(LabError, match="flavour"):
        kernel.meta_package("6.1", "rt-arm64")


def test_resolve_release_unknown_series_says_what_to_do(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # no apt-get update attempt
    with pytest.raises(LabError, match="apt does not know linux-image-5.99-cloud-amd64"):
        kernel.resolve_release("5.99")


def test_no_network_leaves_no_kernel_entry(monkeypatch, tmp_path):
    """apt-get download failing (offline, non-root) is one clear error and no half entry."""
    monkeypatch.setenv("TSUBAKI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(kernel, "resolve_release", lambda series, flavour="cloud-amd64": "6.1.0-99-cloud-amd64")
    monkeypatch.setattr(kernel, "_apt_version", lambda package: "6.1.999-1")
    monkeypatch.setattr(kernel, "ensure_host_tools", lambda tools: None)

    def offline(argv, *, what, **kwargs):
        raise LabError(f"{what} failed (apt-get download exit 100): Temporary failure resolving 'deb.debian.org'")

    monkeypatch.setattr(kernel, "run_tool", offline)
    with pytest.raises(kernel.DownloadError, match="network needed once.*Temporary failure resolving"):
        kernel.ensure_kernel("6.1")
    leftovers = [p.name for p in (tmp_path / "kernels").iterdir() if not p.name.startswith(".lock-")]
    assert leftovers == []


def test_module_names_use_the_kernel_spelling():
    from tsubaki_forensics.lab.debpkg import module_name

    assert module_name("lib/modules/6.12/kernel/drivers/misc/pvpanic/pvpanic-mmio.ko.xz") == "pvpanic_mmio"
    assert module_name("qemu_fw_cfg.ko") == "qemu_fw_cfg"


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)")
def test_damaged_package_is_a_lab_error(tmp_path):
    from tsubaki_forensics.lab.debpkg import extract_vmlinux

    bad = tmp_path / "linux-image-6.1.0-1-cloud-amd64-dbg_1_amd64.deb"
    bad.write_bytes(b"!<arch>\n" + b"\0" * 100)
    with pytest.raises(LabError, match="damaged download"):
        extract_vmlinux(bad, "6.1.0-1-cloud-amd64", tmp_path / "vmlinux")


def test_cached_releases_sort_by_version():
    assert sorted(["6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64"], key=kernel._release_key) == [
        "6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64"]


# --- cache atomicity -------------------------------------------------------------

def test_atomic_entry_publishes_only_complete_entries(tmp_path):
    final = tmp_path / "kernels" / "6.1.0-1-cloud-amd64"
    with atomic_entry(final) as tmp:
        (tmp / "vmlinux").write_bytes(b"x")
        assert not final.exists()
    assert entry_is_complete(final)
    assert (final / "vmlinux").read_bytes() == b"x"
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_atomic_entry_failure_leaves_nothing(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError):
        with atomic_entry(final) as tmp:
            (tmp / "half").write_bytes(b"half-written")
            raise RuntimeError("killed mid-download")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_entry_disk_full_is_a_lab_error(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(LabError, match="No space left"):
        with atomic_entry(final):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_atomic_entry_replaces_an_incomplete_entry(tmp_path):
    final = tmp_path / "entry"
    final.mkdir()
    (final / "stale").write_text("left by a crash of an old version")
    with atomic_entry(final) as tmp:
        (tmp / "fresh").write_text("ok")
    assert sorted(p.name for p in final.iterdir()) == [COMPLETE_MARKER, "fresh"]


def test_atomic_entry_removes_leftovers_of_dead_writers(tmp_path):
    dead = tmp_path / ".tmp-entry-999999999-abc"
    dead.mkdir()
    with atomic_entry(tmp_path / "entry"):
        pass
    assert not dead.exists()


def test_atomic_entry_unwritable_cache_is_a_lab_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LabError, match="cannot write the cache"):
        with atomic_entry(blocker / "sub" / "entry"):
            pass


def test_cache_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("TSUBAKI_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "tsubaki-forensics"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "tsubaki-forensics"


# --- host tools and accelerator ----------------------------------------------------

def test_missing_tool_without_root_names_the_package(monkeypatch):
    monkeypatch.setattr(host.shutil, "which", lambda name: None)
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="apt-get install --no-install-recommends qemu-system-x86"):
        host.ensure_host_tools(["qemu-system-x86_64"])


def test_present_tools_need_nothing(monkeypatch):
    monkeypatch.setattr(host.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(host.subprocess, "run", pytest.fail)  # no apt-get
    host.ensure_host_tools(["qemu-system-x86_64", "objcopy"])


def test_accelerator_override_and_missing_kvm(monkeypatch):
    host.probe_accelerator.cache_clear()
    monkeypatch.setenv("TSUBAKI_LAB_ACCEL", "kvm")
    assert host.probe_accelerator() == "kvm"
    host.probe_accelerator.cache_clear()
    monkeypatch.delenv("TSUBAKI_LAB_ACCEL")
    monkeypatch.setattr(host.os, "access", lambda path, mode: False)
    assert host.probe_accelerator() == "tcg"
    host.probe_accelerator.cache_clear()


def test_probe_sector_is_a_boot_sector():
    assert len(host._PROBE_SECTOR) == 512 and host._PROBE_SECTOR.endswith(b"\x55\xaa")


# --- QEMU failure paths without a guest ---------------------------------------------

def test_qemu_missing_is_a_clear_error(tmp_path):
    missing = dataclasses.replace(arch.X86_64, qemu=str(tmp_path / "no-such-qemu"), qemu_package="qemu-pkg")
    spec = qemu.GuestSpec(bzimage=tmp_path / "bz", initrd=tmp_path / "rd", mem=512 * MIB, smp=1,
                          workdir=tmp_path / "w", arch=missing)
    with pytest.raises(LabError, match="not installed .Debian package qemu-pkg"):
        qemu.run_guest(spec)


def test_qemu_argv_has_the_crash_plumbing(tmp_path):
    spec = qemu.GuestSpec(bzimage=Path("/k"), initrd=Path("/i"), mem=4096 * MIB, smp=4, workdir=tmp_path,
                          ram_file=tmp_path / "ram.bin")
    argv = qemu.qemu_argv(spec, tmp_path / "q.sock", tmp_path / "c.log")
    joined = " ".join(argv)
    for needed in ("-device pvpanic", "-device vmcoreinfo", "-action panic=pause", "-S", "-m 4G", "-smp 4",
                   f"mem-path={tmp_path / 'ram.bin'},share=on", "memory-backend=ram0"):
        assert needed in joined


def test_arm64_argv_pauses_on_the_reset_that_panic_makes(tmp_path):
    """Debian's arm64 kernels have no pvpanic: panic=-1 resets, -no-reboot + shutdown=pause keep the guest."""
    spec = qemu.GuestSpec(bzimage=Path("/k"), initrd=Path("/i"), mem=2048 * MIB, smp=2, workdir=tmp_path,
                          arch=arch.ARM64)
    argv = qemu.qemu_argv(spec, tmp_path / "q.sock", tmp_path / "c.log")
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-aarch64"
    for needed in ("-machine virt", "-cpu max", "-no-reboot", "-action shutdown=pause", "-device vmcoreinfo",
                   "console=ttyAMA0 panic=-1"):
        assert needed in joined
    assert "pvpanic" not in joined and "panic=pause" not in joined
    x86 = " ".join(qemu.qemu_argv(qemu.GuestSpec(bzimage=Path("/k"), initrd=Path("/i"), mem=MIB, smp=1,
                                                 workdir=tmp_path), tmp_path / "q", tmp_path / "c"))
    assert "console=ttyS0 panic=-1" in x86 and "shutdown=pause" not in x86


@pytest.mark.parametrize("guest, event, is_panic", [
    ("x86_64", {"event": "GUEST_PANICKED", "data": {"action": "pause"}}, True),
    ("x86_64", {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"}}, False),
    ("arm64", {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"}}, True),
    ("arm64", {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-shutdown"}}, False),
    ("arm64", {"event": "RESET", "data": {"guest": True}}, False),
])
def test_panic_event_per_arch(guest, event, is_panic):
    assert qemu._is_panic(event, arch.get_arch(guest)) is is_panic


def test_arch_names_flavours_and_packages():
    assert arch.get_arch("aarch64") is arch.ARM64 and arch.get_arch("amd64") is arch.X86_64
    with pytest.raises(LabError, match="unknown guest architecture 'sparc'; choose one of x86_64, arm64"):
        arch.get_arch("sparc")
    assert arch.arch_of_flavour("cloud-arm64") is arch.ARM64
    assert kernel.arch_of_release("6.1.0-57-cloud-arm64") is arch.ARM64
    assert kernel.arch_of_release("6.12.118+deb12-amd64") is arch.X86_64
    assert kernel.flavour_of_release("6.1.0-57-cloud-amd64") == "cloud-amd64"
    # A foreign architecture's packages are qualified for apt on the amd64 host.
    assert arch.ARM64.package("busybox-static") == "busybox-static:arm64"
    assert arch.X86_64.package("busybox-static") == "busybox-static"
    assert kernel.parse_depends("  Depends: linux-image-6.1.0-57-cloud-arm64:arm64\n") == "6.1.0-57-cloud-arm64"


def test_arm64_refuses_the_nmi_scenario():
    with pytest.raises(LabError, match="needs QMP inject-nmi, which the lab sends only to x86_64 guests, not arm64"):
        CrashParams(scenario="nmi", arch="arm64").normalized()
    assert CrashParams(scenario="sysrq", arch="aarch64").normalized().arch == "arm64"


def test_cached_releases_filter_by_flavour(tmp_path, monkeypatch):
    monkeypatch.setenv("TSUBAKI_CACHE_DIR", str(tmp_path / "tsk"))
    for release in ("6.1.0-57-cloud-amd64", "6.1.0-57-cloud-arm64", "6.1.0-57-amd64"):
        entry = kernel.kernels_dir() / release
        entry.mkdir(parents=True)
        (entry / ".complete").write_text("")
        (entry / "kernel.json").write_text(json.dumps({
            "series": "6.1", "release": release, "version": "1", "modules": [], "build_id": "",
            "download_bytes": 0, "timings": {}}))
    assert [k.release for k in kernel.cached_releases("6.1", "cloud-amd64")] == ["6.1.0-57-cloud-amd64"]
    assert [(k.release, k.arch) for k in kernel.cached_releases("6.1", "cloud-arm64")] == \
        [("6.1.0-57-cloud-arm64", "arm64")]
    assert len(kernel.cached_releases("6.1")) == 3


def test_console_tail_is_one_line(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("\n".join(f"line {i}" for i in range(40)) + "\n")
    tail = qemu.console_tail(log, lines=3)
    assert tail == "line 37 | line 38 | line 39"
    assert qemu.console_tail(tmp_path / "none") == "(no console output)"
    log.write_text("Kernel panic - not syncing: boom\n" + "\n".join(f"trace {i}" for i in range(40)))
    assert qemu.console_tail(log, lines=2) == "Kernel panic - not syncing: boom | ... | trace 38 | trace 39"


# --- scenarios, workloads, initramfs ---------------------------------------------------

def test_unknown_names_list_the_choices():
    with pytest.raises(LabError, match="sysrq, oom, init-exit, hung-task, nmi"):
        get_scenario("bogus")
    with pytest.raises(LabError, match="idle, busy"):
        get_workload("bogus")


def test_scenarios_expect_different_backtraces():
    frames = [frozenset(s.expected_frames) for s in SCENARIOS.values()]
    assert len(SCENARIOS) >= 4
    assert all(a.isdisjoint(b) for i, a in enumerate(frames) for b in frames[i + 1:])


def _read_newc(blob: bytes) -> dict[str, tuple[int, bytes]]:
    """Minimal reader used to check the writer (name -> (mode, data))."""
    out, pos = {}, 0
    while True:
        assert blob[pos:pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize, mode = fields[11], fields[6], fields[1]
        name = blob[pos + 110: pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        data = blob[pos: pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(blob)
            return out
        out[name] = (mode, data)


def test_cpio_writer_round_trips():
    w = CpioWriter()
    w.directory("bin")
    w.file("bin/x", b"abc", 0o755)
    w.symlink("bin/sh", "busybox")
    w.chardev("dev/console", 5, 1)
    entries = _read_newc(w.getvalue())
    assert entries["bin/x"] == (stat.S_IFREG | 0o755, b"abc")
    assert entries["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and stat.S_ISDIR(entries["bin"][0])


def test_init_loads_modules_in_order_then_marks_and_triggers():
    init = render_init(get_scenario("oom"), get_workload("idle"), ["pvpanic.ko", "pvpanic_mmio.ko", "qemu_fw_cfg.ko"],
                       "TSUBAKI-LAB-MARKER run=1")
    assert init.index("insmod /lib/modules/pvpanic.ko") < init.index("insmod /lib/modules/pvpanic_mmio.ko")
    assert "sysctl -w vm.panic_on_oom=1" in init
    assert init.index("TSUBAKI-LAB-MARKER run=1") < init.index(READY_LINE) < init.index("tsk-trigger &")
    init_exit = render_init(get_scenario("init-exit"), get_workload("idle"), [], "M")
    assert init_exit.rstrip().endswith("exit 42") and "tsk-trigger" not in init_exit


def test_busy_workload_ships_its_helpers():
    busy = get_workload("busy")
    assert {"tsk-cache", "tsk-vault"} <= set(busy.helpers)
    assert "/dev/urandom" in busy.script


# --- params, ground-truth parsing, manifests ---------------------------------------------

def test_crash_params_normalise_and_key():
    p = CrashParams(mem="4096M", smp="4").normalized()
    assert (p.mem, p.smp) == ("4G", 4)
    assert p.key("6.1.0-56-cloud-amd64") == "6.1.0-56-cloud-amd64/sysrq-idle-4G-smp4"
    assert CrashParams(ram_file=True).normalized().key("r").endswith("-ramfile")
    with pytest.raises(LabError, match="--smp"):
        CrashParams(smp=0).normalized()


def test_panic_message_is_the_last_panic_line():
    lines = ["boot", "Kernel panic - not syncing: first", "x", "Kernel panic - not syncing: sysrq triggered crash"]
    assert panic_message_from_dmesg(lines) == "sysrq triggered crash"
    assert panic_message_from_dmesg(["no panic here"]) == ""


def test_backtrace_stops_at_user_space_and_names_unknown_frames():
    def sym(pc):
        if pc == 0xFFFFFFFFC0000010:
            return SimpleNamespace(name="pvpanic_panic_notify")
        raise LookupError(pc)

    prog = SimpleNamespace(symbol=sym)
    frames = [SimpleNamespace(pc=0xFFFFFFFFC0000010, name=None), SimpleNamespace(pc=0xFFFFFFFF81000000, name="panic"),
              SimpleNamespace(pc=0xFFFFFFFF81000100, name=None), SimpleNamespace(pc=0x401000, name=None),
              SimpleNamespace(pc=0, name=None)]
    assert backtrace_names(prog, frames) == ["pvpanic_panic_notify", "panic", "0xffffffff81000100"]


NOTIFIER = ["pvpanic_send_event.part.0", "pvpanic_panic_notify", "notifier_call_chain", "atomic_notifier_call_chain"]


@pytest.mark.parametrize("machinery, callers", [
    (["panic"], ["sysrq_handle_crash", "__handle_sysrq"]),                    # 6.1
    (["vpanic", "panic"], ["sysrq_handle_crash", "__handle_sysrq"]),          # 6.12.118: panic() calls vpanic()
    (["vpanic", "nmi_panic", "nmi_panic"], ["unknown_nmi_error", "exc_nmi"]),  # panic() tail-called away
    (["panic", "check_panic_on_oom"], ["out_of_memory"]),
])
def test_panic_entry_survives_renames(machinery, callers):
    """Synthetic traces shaped like the lab's: the entry is a property, not the name ``panic``."""
    trace = NOTIFIER + machinery + callers
    assert panic_entry(trace) == len(NOTIFIER)
    assert panic_callers(trace) == callers
    assert panic_entry(NOTIFIER[1:] + machinery) == len(NOTIFIER) - 1


def test_trace_without_panic_has_no_entry():
    """The race the ground truth falls back from: a saved context with no panic in it."""
    raced = ["context_switch", "__schedule", "schedule", "exit_to_user_mode_loop"]
    assert panic_entry(raced) is None and panic_callers(raced) == []
    assert panic_entry(NOTIFIER) is None


def test_load_crash_refuses_other_directories(tmp_path):
    with pytest.raises(LabError, match="not a crash-lab directory"):
        load_crash(tmp_path)


def test_crash_refuses_to_overwrite_foreign_directories(tmp_path):
    from tsubaki_forensics.lab import crash

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(LabError, match="not a crash-lab directory"):
        crash(out_dir=tmp_path)
    (tmp_path / "precious.txt").unlink()
    (tmp_path / "manifest.json").write_text(json.dumps({}))
    with pytest.raises(LabError, match="--force"):
        crash(out_dir=tmp_path)


# --- CLI -----------------------------------------------------------------------------------

def test_cli_lab_list_json(capsys, monkeypatch, tmp_path):
    from tsubaki_forensics.cli.app import main

    monkeypatch.setenv("TSUBAKI_CACHE_DIR", str(tmp_path))
    assert main(["lab", "list", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["scenarios"]) == set(SCENARIOS)
    assert data["kernels"] == [] and data["cache"] == str(tmp_path)


def test_cli_lab_bad_scenario_is_one_line(capsys, tmp_path):
    from tsubaki_forensics.cli.app import main

    assert main(["lab", "crash", "--scenario", "bogus", "-o", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown scenario 'bogus'") and err.count("\n") == 1


def test_guest_timings_from_dmesg():
    from tsubaki_forensics.lab.crash import guest_timings

    dmesg = [{"time": 0.0, "level": 6, "text": "Linux version"},
             {"time": 1.5, "level": 5, "text": "tsubaki-lab: starting workload busy for scenario sysrq"},
             {"time": 9.25, "level": 2, "text": "TSUBAKI-LAB-MARKER run=1"},
             {"time": 9.5, "level": 0, "text": "Kernel panic - not syncing: sysrq triggered crash"}]
    assert guest_timings(dmesg, "TSUBAKI-LAB-MARKER run=1") == {
        "workload_start_s": 1.5, "marker_s": 9.25, "panic_s": 9.5}
    assert guest_timings([], "M")["panic_s"] is None


def test_guest_digest_tracks_what_enters_the_guest(monkeypatch):
    """Changing a workload's script invalidates cached crashes; a description does not."""
    import dataclasses

    from tsubaki_forensics.lab import workloads
    from tsubaki_forensics.lab.crash import guest_digest

    before = guest_digest("sysrq", "busy")
    assert before == guest_digest("sysrq", "busy") and before != guest_digest("oom", "busy")
    busy = workloads.WORKLOADS["busy"]
    monkeypatch.setitem(workloads.WORKLOADS, "busy", dataclasses.replace(busy, summary="reworded"))
    assert guest_digest("sysrq", "busy") == before
    monkeypatch.setitem(workloads.WORKLOADS, "busy", dataclasses.replace(busy, script=busy.script + "sleep 1\n"))
    assert guest_digest("sysrq", "busy") != before
    assert guest_digest("no-such-scenario", "idle") == ""


@pytest.mark.parametrize("early_panics, boots", [(0, 1), (1, 2), (2, 2)])
def test_a_guest_that_panics_before_its_marker_is_booted_once_more(tmp_path, monkeypatch, early_panics, boots):
    """A panic that is not the scenario's (the workload never printed its
    marker) costs one more boot; a second one is the error, naming why."""
    crash_mod = importlib.import_module("tsubaki_forensics.lab.crash")

    calls, logged = [], []

    def fake_crash_into(tmp, params, kern, timeout, log):
        calls.append(tmp)
        if len(calls) <= early_panics:
            raise crash_mod._PanicBeforeMarker("the guest panicked before printing its marker (panic: X)")
        return {"timings": {}}

    monkeypatch.setattr(crash_mod, "ensure_host_tools", lambda tools: None)
    monkeypatch.setattr(crash_mod, "_crash_into", fake_crash_into)
    monkeypatch.setattr(crash_mod, "load_crash", lambda out: out)
    params = CrashParams("sysrq", "512M", 2, "idle", "6.1", False).normalized()
    out = tmp_path / "crash"
    if early_panics >= 2:
        with pytest.raises(LabError, match=r"before printing its marker \(panic: X\)"):
            crash_mod._crash(params, out, SimpleNamespace(), timeout=None, force=False, log=logged.append)
        assert not out.exists()
    else:
        assert crash_mod._crash(params, out, SimpleNamespace(), timeout=None, force=False, log=logged.append) == out
        assert (out / "manifest.json").is_file()
    assert len(calls) == boots
    assert sum("booting the guest once more" in line for line in logged) == min(early_panics, 1)


def test_foreign_architecture_gets_a_longer_panic_bound():
    from tsubaki_forensics.lab.crash import _timeout_for

    x86 = _timeout_for(512 * MIB, "idle", "tcg", arch.X86_64)
    assert _timeout_for(512 * MIB, "idle", "tcg", arch.ARM64) == 4 * x86
    assert _timeout_for(512 * MIB, "idle", "kvm", arch.X86_64) == x86 / 2
