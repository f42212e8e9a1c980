"""How each crash is provoked, and what it must look like afterwards.

A scenario is data: the sysctls set before the workload, the shell that
provokes the panic inside the guest (run by a process named ``tsk-trigger``
so the crashed task is recognisable), an optional QMP command sent by the
host once the guest says it is ready, and the facts a test checks on the
ground truth: the panic message and functions the crashed backtrace must
contain.  The backtraces were chosen to differ: a syscall path, a page-fault
path into the OOM killer, the exit path of PID 1, a kernel thread (the
hung-task watchdog) and an NMI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LabError

__all__ = ["Scenario", "SCENARIOS", "get_scenario"]


@dataclass(frozen=True)
class Scenario:
    """One way to panic a guest."""

    name: str
    summary: str
    sysctls: dict[str, str] = field(default_factory=dict)
    # Shell run by /usr/bin/tsk-trigger in the guest ("" = nothing, the host acts).
    trigger: str = ""
    # Shell run by /init itself after the trigger (used when PID 1 is the victim).
    init_tail: str = "while :; do sleep 3600; done"
    # QMP command (name, arguments) the host sends once the guest is ready.
    qmp_trigger: tuple[str, dict] | None = None
    panic_message: str = ""            # prefix of the text after "Kernel panic - not syncing: "
    expected_frames: tuple[str, ...] = ()  # all must appear in the crashed backtrace
    crashed_comm: str | None = None    # comm of the crashed task, when deterministic
    modules: tuple[str, ...] = ()      # guest modules beyond pvpanic and qemu_fw_cfg
    helpers: dict[str, str] = field(default_factory=dict)  # extra /usr/bin scripts
    # Console line after which the host sends qmp_trigger (the guest prints it when armed).
    armed_line: str = "TSUBAKI-LAB-READY"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="sysrq",
            summary="write 'c' to /proc/sysrq-trigger: panic() from a write(2) syscall",
            trigger="echo c > /proc/sysrq-trigger",
            panic_message="sysrq triggered crash",
            expected_frames=("sysrq_handle_crash", "write_sysrq_trigger", "vfs_write"),
            crashed_comm="tsk-trigger",
        ),
        Scenario(
            name="oom",
            summary="vm.panic_on_oom=1 and a process faulting in more anonymous memory than exists",
            sysctls={"vm.panic_on_oom": "1", "vm.overcommit_memory": "1"},
            # busybox dd allocates one buffer of bs bytes and fills it from /dev/zero:
            # the page faults inside read(2) reach out_of_memory().
            trigger="exec dd if=/dev/zero of=/dev/null bs=$((TSK_MEM_KB * 2))k count=1",
            panic_message="Out of memory: system-wide panic_on_oom is enabled",
            expected_frames=("out_of_memory", "__alloc_pages_slowpath", "handle_mm_fault"),
            crashed_comm="dd",
        ),
        Scenario(
            name="init-exit",
            summary="PID 1 exits: 'Attempted to kill init!' from do_exit()",
            init_tail="exit 42",
            panic_message="Attempted to kill init! exitcode=0x00002a00",
            expected_frames=("do_exit", "do_group_exit"),
            crashed_comm="init",
        ),
        Scenario(
            name="hung-task",
            summary="kernel.hung_task_panic=1 and a writer stuck (D state) on a frozen ext2 image: khungtaskd panics",
            modules=("loop",),
            # Set here, not at boot: a 2 s limit must not catch the workload's own short waits.
            trigger=(
                "dd if=/dev/zero of=/data/disk.img bs=1M count=16 2>/dev/null\n"
                "mke2fs -F /data/disk.img >/dev/null\n"
                "mkdir -p /mnt/journal && mount -t ext4 -o loop /data/disk.img /mnt/journal\n"
                "fsfreeze --freeze /mnt/journal\n"
                "sysctl -w kernel.hung_task_timeout_secs=2 kernel.hung_task_check_interval_secs=1 "
                "kernel.hung_task_panic=1 >/dev/null\n"
                "echo flush > /mnt/journal/flush.log"
            ),
            panic_message="hung_task: blocked tasks",
            expected_frames=("check_hung_uninterruptible_tasks", "kthread"),
            crashed_comm="khungtaskd",
        ),
        Scenario(
            name="nmi",
            summary="kernel.unknown_nmi_panic=1, every vCPU busy in user space, then an NMI from the host (QMP inject-nmi)",
            sysctls={"kernel.unknown_nmi_panic": "1"},
            # One spinner per vCPU, so the NMI interrupts a known task in user
            # mode instead of racing with idle entry or a context switch.
            helpers={"tsk-spin": "while :; do :; done"},
            trigger=(
                "for i in $(seq $(nproc)); do tsk-spin & done\n"
                "sleep 1\n"
                "echo '<5>TSUBAKI-LAB-ARMED' > /dev/kmsg\n"
                "wait"
            ),
            armed_line="TSUBAKI-LAB-ARMED",
            qmp_trigger=("inject-nmi", {}),
            panic_message="NMI: Not continuing",
            expected_frames=("nmi_panic", "exc_nmi"),
            crashed_comm="tsk-spin",
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``.

    :raises LabError: unknown name (the message lists the known ones).
    """
    try:
        return SCENARIOS[name]
    except KeyError:
        raise LabError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}") from None
