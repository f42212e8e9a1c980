"""What plain drgn says about a crash: the reference our own analyses are tested against.

Computed on QEMU's ELF vmcore with the DWARF vmlinux through drgn's own core
dump path only (no code of this project between drgn and the file), so a bug
in our dump format or drgn bridge cannot hide in both sides of a comparison.
Pure text parsing (the panic message) is split from the drgn walk.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import LabError

__all__ = ["compute_ground_truth", "panic_message_from_dmesg", "backtrace_names", "panic_entry", "panic_callers",
           "PANIC_PREFIX"]

PANIC_PREFIX = "Kernel panic - not syncing: "
# Kernel text is in the upper half (x86_64 and arm64 alike); the first lower-half pc ends the kernel stack.
_KERNEL_SPACE = 0xFFFF800000000000
_MAX_FRAMES = 128


def panic_message_from_dmesg(lines: list[str]) -> str:
    """The text after the last ``Kernel panic - not syncing:`` in the log ('' if none)."""
    for text in reversed(lines):
        i = text.find(PANIC_PREFIX)
        if i >= 0:
            return text[i + len(PANIC_PREFIX):].rstrip()
    return ""


def panic_entry(backtrace: list[str]) -> int | None:
    """Index of the frame where the kernel entered its panic path, or None if it never did.

    A property, not a name, because kernel updates rename it: ``panic`` on
    6.1 and 6.12.117, ``vpanic`` (called by ``panic``, or tail-called from
    ``nmi_panic``) on 6.12.118.  It is the innermost frame whose name contains
    ``panic`` and that is not part of the pvpanic notifier the lab's guests
    stop in (``pvpanic_panic_notify``, ``pvpanic_send_event.part.0``).
    """
    for i, name in enumerate(backtrace):
        if "panic" in name and not name.startswith("pvpanic"):
            return i
    return None


def panic_callers(backtrace: list[str]) -> list[str]:
    """The frames below the panic machinery: what made the kernel panic, innermost first.

    From :func:`panic_entry` on, every consecutive frame whose name contains
    ``panic`` is the machinery (``panic``/``vpanic``, ``nmi_panic``,
    ``check_panic_on_oom``...); the first frame after them is the caller
    (``sysrq_handle_crash``, ``out_of_memory``, ``do_exit``...).  Empty when the
    trace has no panic entry.
    """
    i = panic_entry(backtrace)
    if i is None:
        return []
    while i < len(backtrace) and "panic" in backtrace[i]:
        i += 1
    return backtrace[i:]


def _frame_name(prog, frame) -> str:
    name = frame.name
    if name:
        return name
    try:
        return prog.symbol(frame.pc).name
    except LookupError:
        return hex(frame.pc)


def backtrace_names(prog, trace) -> list[str]:
    """Function names of a stack trace, innermost first, up to the first user-space pc."""
    names = []
    for frame in trace:
        if frame.pc < _KERNEL_SPACE or len(names) >= _MAX_FRAMES:
            break
        names.append(_frame_name(prog, frame))
    return names


def compute_ground_truth(vmcore: Path, vmlinux: Path) -> dict:
    """The ground-truth dict of COMMON.md for one ELF vmcore.

    :raises LabError: drgn cannot open the pair (no VMCOREINFO, mismatched vmlinux).
    """
    import drgn
    from drgn.helpers.linux.cpumask import for_each_present_cpu
    from drgn.helpers.linux.kallsyms import load_module_kallsyms
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.printk import get_printk_records
    from drgn.helpers.linux.sched import cpu_curr, task_cpu, task_state_to_char

    prog = drgn.Program()
    try:
        prog.set_core_dump(str(vmcore))
        prog.load_debug_info([str(vmlinux)])
    except (drgn.MissingDebugInfoError, ValueError, OSError) as e:
        raise LabError(f"drgn cannot read {vmcore.name} with {vmlinux.name}: {e}") from e
    try:
        prog["init_task"]
    except LookupError as e:  # drgn ignores a vmlinux whose build ID does not match the dump
        raise LabError(f"{vmlinux} does not match the kernel in {vmcore.name} (build IDs differ)") from e
    # Module frames (pvpanic_panic_notify is the innermost) have no DWARF here:
    # name them from the modules' own kallsyms in kernel memory.
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)

    release = prog["UTS_RELEASE"].string_().decode()
    build_id = _vmcoreinfo_field(prog, "BUILD-ID")
    records = get_printk_records(prog)
    dmesg = [
        {"time": r.timestamp / 1e9, "level": int(r.level), "text": r.text.decode(errors="replace")}
        for r in records
    ]
    crashed_cpu = int(prog["panic_cpu"].counter)
    crashed = prog.crashed_thread()
    crashed_pid = int(crashed.tid)
    backtrace = backtrace_names(prog, crashed.stack_trace())
    source = "task"
    if panic_entry(backtrace) is None:
        # An NMI that lands between "rq->curr = next" and "next->on_cpu = 1" in
        # __schedule() makes drgn unwind next's saved context: use the panic
        # CPU's own registers, which are where panic() really ran.
        backtrace = backtrace_names(prog, prog.stack_trace(_prstatus_regs(prog, vmcore, crashed_cpu)))
        source = "cpu registers"

    tasks = []
    for task in for_each_task(prog):
        tasks.append({
            "pid": int(task.pid),
            "ppid": int(task.real_parent.tgid),
            "comm": task.comm.string_().decode(errors="replace"),
            "state": task_state_to_char(task),
            "cpu": int(task_cpu(task)),
            "on_cpu": bool(task.on_cpu),
        })
    cpu_backtraces: dict[str, list[str]] = {}
    # panic() takes the other CPUs offline while stopping them: walk the present ones.
    for cpu in for_each_present_cpu(prog):
        if cpu == crashed_cpu:
            continue
        try:
            cpu_backtraces[str(cpu)] = backtrace_names(prog, prog.stack_trace(cpu_curr(prog, cpu)))
        except (LookupError, ValueError, drgn.FaultError) as e:
            cpu_backtraces[str(cpu)] = [f"<unavailable: {e}>"]
    return {
        "kernel_release": release,
        "build_id": build_id,
        "crashed_cpu": crashed_cpu,
        "crashed_pid": crashed_pid,
        "panic_message": panic_message_from_dmesg([d["text"] for d in dmesg]),
        "tasks": tasks,
        "dmesg": dmesg,
        "backtrace": backtrace,
        "backtrace_source": source,
        "cpu_backtraces": cpu_backtraces,
    }


# struct elf_prstatus on 64-bit Linux: pr_reg starts at 112; its first registers
# are laid out as struct pt_regs (x86_64: 21 of user_regs_struct; arm64: regs[31],
# sp, pc, pstate).
_PR_REG_OFFSET = 112
_PT_REGS_WORDS = {"X86_64": 21, "AARCH64": 34}


def _prstatus_regs(prog, vmcore: Path, cpu: int):
    """``struct pt_regs`` of ``cpu`` from the dump's NT_PRSTATUS notes (QEMU writes one per CPU, in order)."""
    import drgn
    from elftools.elf.elffile import ELFFile

    with open(vmcore, "rb") as f:
        notes = [n["n_desc"] for seg in ELFFile(f).iter_segments() if seg["p_type"] == "PT_NOTE"
                 for n in seg.iter_notes() if n["n_type"] == "NT_PRSTATUS"]
    words = _PT_REGS_WORDS.get(prog.platform.arch.name)
    if words is None:
        raise LabError(f"no pt_regs layout known for {prog.platform.arch.name}")
    size = words * 8
    if cpu >= len(notes) or len(notes[cpu]) < _PR_REG_OFFSET + size:
        raise LabError(f"{vmcore.name} has no usable NT_PRSTATUS note for CPU {cpu}")
    raw = notes[cpu][_PR_REG_OFFSET:_PR_REG_OFFSET + size]
    return drgn.Object.from_bytes_(prog, "struct pt_regs", raw)


def _vmcoreinfo_field(prog, key: str) -> str:
    """One ``KEY=value`` of the kernel's own vmcoreinfo note (read from kernel memory)."""
    data = prog["vmcoreinfo_data"]
    size = int(prog["vmcoreinfo_size"])
    text = prog.read(data.value_(), size).decode(errors="replace")
    m = re.search(rf"^{re.escape(key)}=(\S+)$", text, re.MULTILINE)
    return m.group(1) if m else ""
