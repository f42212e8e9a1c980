"""Crash signatures, pure: message normalisation and the choice of meaningful frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsubaki_forensics.triage.signature import (
    Signature,
    clean_function,
    make_signature,
    meaningful_frames,
    normalize_message,
)

# Backtraces as the crash lab's ground truth records them (plain drgn, DWARF),
# innermost first, for kernels 6.1 and 6.12.
SYSRQ_61 = ["pvpanic_panic_notify", "notifier_call_chain", "atomic_notifier_call_chain", "panic",
            "sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger", "pde_write", "proc_reg_write",
            "vfs_write", "ksys_write", "do_syscall_x64", "do_syscall_64", "entry_SYSCALL_64"]
SYSRQ_612 = ["pvpanic_send_event.part.0", *SYSRQ_61[:-1]]
# An arm64 guest stops in the reset panic=-1 makes (no pvpanic on Debian's arm64 kernels).
SYSRQ_ARM64 = ["__arm_smccc_hvc", "psci_sys_reset", "notifier_call_chain", "atomic_notifier_call_chain",
               "do_kernel_restart", "machine_restart", "machine_emergency_restart", "emergency_restart", "panic",
               "sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger", "pde_write", "proc_reg_write",
               "vfs_write", "ksys_write", "__do_sys_write", "__se_sys_write", "__arm64_sys_write",
               "__invoke_syscall", "invoke_syscall", "el0_svc_common", "do_el0_svc", "el0_svc",
               "el0t_64_sync_handler", "el0t_64_sync"]
HUNG_ARM64 = ["__arm_smccc_hvc", "psci_sys_reset", "emergency_restart", "panic",
              "check_hung_uninterruptible_tasks", "watchdog", "kthread", "ret_from_fork"]
OOM_61 = ["pvpanic_panic_notify", "notifier_call_chain", "atomic_notifier_call_chain", "panic",
          "check_panic_on_oom", "out_of_memory", "__alloc_pages_may_oom", "__alloc_pages_slowpath",
          "__alloc_pages", "__folio_alloc"]
OOM_612 = ["pvpanic_send_event.part.0", "pvpanic_panic_notify", "notifier_call_chain", "atomic_notifier_call_chain",
           "panic", "check_panic_on_oom", "out_of_memory", "__alloc_pages_may_oom", "__alloc_pages_slowpath",
           "__alloc_pages_noprof", "alloc_pages_mpol_noprof"]
NMI_61 = ["pvpanic_panic_notify", "notifier_call_chain", "atomic_notifier_call_chain", "panic", "nmi_panic",
          "nmi_panic.cold", "unknown_nmi_error", "unknown_nmi_error.cold", "exc_nmi", "asm_exc_nmi"]
HUNG_61 = ["pvpanic_panic_notify", "notifier_call_chain", "atomic_notifier_call_chain", "panic",
           "check_hung_uninterruptible_tasks", "watchdog", "kthread", "ret_from_fork"]
# panic_on_oops: the oops path sits between panic() and the faulting function.
OOPS = ["panic", "oops_end", "page_fault_oops", "exc_page_fault", "asm_exc_page_fault",
        "my_driver_ioctl", "__x64_sys_ioctl", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Kernel panic - not syncing: sysrq triggered crash", "sysrq triggered crash"),
        ("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00002a00", "Attempted to kill init! exitcode=<hex>"),
        ("BUG: kernel NULL pointer dereference, address: 0000000000000008",
         "BUG: kernel NULL pointer dereference, address: <hex>"),
        ("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:2:117]",
         "watchdog: BUG: soft lockup - CPU#<n> stuck for <n>s! [kworker/<n>:<n>:<n>]"),
        ("Kernel panic - not syncing: Fatal exception in   interrupt\n", "Fatal exception in interrupt"),
        ("EXT4-fs (vda1): panic forced after error", "EXT4-fs (vda1): panic forced after error"),
        (None, "<no panic message>"),
        ("", "<no panic message>"),
    ],
)
def test_normalize_message(raw, expected):
    assert normalize_message(raw) == expected


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 99999), st.integers(0, 99999))
def test_message_independent_of_numbers(addr1, addr2, pid1, pid2):
    template = "BUG: unable to handle page fault for address: {a:#x} pid {p} comm sh at {a:016x}"
    assert normalize_message(template.format(a=addr1, p=pid1)) == normalize_message(template.format(a=addr2, p=pid2))


@pytest.mark.parametrize(
    "raw, expected",
    [
        # the kernel release in a message groups across builds, its flavour stays a word
        ("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) 6.1.0-57-cloud-amd64",
         "VFS: Unable to mount root fs on unknown-block(<n>,<n>) <n>-<n>-cloud-amd64"),
        ("Kernel panic - not syncing: Fatal exception in interrupt; CPU: 1 PID: 0 Comm: swapper/1 "
         "Not tainted 6.12.118+deb12-cloud-amd64 #1",
         "Fatal exception in interrupt; CPU: <n> PID: <n> Comm: swapper/<n> Not tainted <n>+deb12-cloud-amd64 #<n>"),
        ("Kernel panic - not syncing: System is deadlocked on memory",
         "System is deadlocked on memory"),
        ("Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled",
         "Out of memory: compulsory panic_on_oom is enabled"),
        ("Kernel panic - not syncing: hung_task: blocked tasks", "hung_task: blocked tasks"),
        ("Kernel panic - not syncing: NMI: Not continuing", "NMI: Not continuing"),
        ("Kernel panic - not syncing: x86_64 sha256 crc32c self-test failed in ext4 on vda1",
         "x86_64 sha256 crc32c self-test failed in ext4 on vda1"),
        ("Kernel panic - not syncing: corrupted stack end detected inside scheduler",
         "corrupted stack end detected inside scheduler"),
        ("Kernel panic - not syncing: softlockup: hung tasks [kworker/u4:2:57] stuck for 23s",
         "softlockup: hung tasks [kworker/u4:<n>:<n>] stuck for <n>s"),
        ("<analysis failed: cannot read kallsyms: self-contained analysis needs Linux >= 6.0>",
         "<analysis failed: cannot read kallsyms: self-contained analysis needs Linux >= 6.0>"),
    ],
)
def test_normalize_keeps_words_whole(raw, expected):
    assert normalize_message(raw) == expected


_NAME = st.from_regex(r"[g-zG-Z_][A-Za-z_]{0,6}[0-9]{1,4}[A-Za-z0-9_]{0,4}", fullmatch=True)


@given(_NAME, st.integers(0, 99999))
def test_names_with_digits_survive_next_to_any_number(name, value):
    """A word that starts with a letter is a name: never cut into by a placeholder."""
    out = normalize_message(f"Kernel panic - not syncing: {name} failed, error {value} on cpu{value % 8}")
    assert out == f"{name} failed, error <n> on cpu{value % 8}"


@pytest.mark.parametrize(
    "name, expected",
    [("nmi_panic.cold", "nmi_panic"), ("__alloc_pages_slowpath.constprop.0", "__alloc_pages_slowpath"),
     ("pvpanic_send_event.part.0", "pvpanic_send_event"), ("foo.isra.0.cold", "foo"), ("ext4_iget", "ext4_iget"),
     (None, None)],
)
def test_clean_function(name, expected):
    assert clean_function(name) == expected


@pytest.mark.parametrize(
    "trace, expected",
    [
        (SYSRQ_61, ("sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger")),
        (SYSRQ_ARM64, ("sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger")),
        (HUNG_ARM64, ("check_hung_uninterruptible_tasks", "watchdog")),
        (OOM_61, ("check_panic_on_oom", "out_of_memory", "__alloc_pages_may_oom")),
        (NMI_61, ("nmi_panic", "unknown_nmi_error", "exc_nmi")),  # inline + .cold counted once; stop at asm_exc_nmi
        (HUNG_61, ("check_hung_uninterruptible_tasks", "watchdog")),  # stops at kthread
        (OOPS, ("my_driver_ioctl", "__x64_sys_ioctl")),  # the oops path is plumbing; stops at the syscall entry
        (["panic", "entry_SYSCALL_64"], ()),
        ([], ()),
    ],
)
def test_meaningful_frames(trace, expected):
    assert meaningful_frames(trace) == expected


def test_depth_and_unnamed_frames():
    assert meaningful_frames(SYSRQ_61, depth=5) == ("sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger",
                                                     "pde_write", "proc_reg_write")
    assert meaningful_frames(["panic", None, "foo"], depth=2) == ("?", "foo")


def test_same_bug_on_two_kernels_has_one_signature():
    """6.12 adds a pvpanic frame and renames allocators below the third frame."""
    assert make_signature("Kernel panic - not syncing: sysrq triggered crash", SYSRQ_61) == make_signature(
        "Kernel panic - not syncing: sysrq triggered crash", SYSRQ_612)
    oom = "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled"
    assert make_signature(oom, OOM_61) == make_signature(oom, OOM_612)
    assert make_signature(oom, OOM_61, depth=7) != make_signature(oom, OOM_612, depth=7)


def test_different_bugs_have_different_signatures():
    sigs = {make_signature("Kernel panic - not syncing: x", t) for t in (SYSRQ_61, OOM_61, NMI_61, HUNG_61, OOPS)}
    assert len(sigs) == 5
    assert make_signature("a", SYSRQ_61) != make_signature("b", SYSRQ_61)


def test_signature_key_and_id():
    sig = make_signature("Kernel panic - not syncing: NMI: Not continuing", NMI_61)
    assert sig.key == "NMI: Not continuing | nmi_panic < unknown_nmi_error < exc_nmi"
    assert len(sig.id) == 16 and int(sig.id, 16) >= 0
    assert sig.id == Signature(sig.message, sig.frames).id
    assert Signature("m", ()).key == "m | <no frames>"
