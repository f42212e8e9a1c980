"""How each crash is provoked, and what it must look like afterwards.

A scenario is data: the sysctls set before the workload, the shell that
provokes the panic inside the guest (run by a process named ``tsk-trigger``
so the crashed task is recognisable), an optional QMP command sent by the
host once the guest says it is ready, and the facts a test checks on the
ground truth: the panic message and functions the crashed backtrace must
contain.  The backtraces were chosen to differ: a syscall path, a page-fault
path into the OOM killer, the exit path of PID 1, and an NMI.
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
            name="nmi",
            summary="kernel.unknown_nmi_panic=1 and an NMI injected by the host (QMP inject-nmi)",
            sysctls={"kernel.unknown_nmi_panic": "1"},
            qmp_trigger=("inject-nmi", {}),
            panic_message="NMI: Not continuing",
            expected_frames=("nmi_panic", "exc_nmi"),
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
