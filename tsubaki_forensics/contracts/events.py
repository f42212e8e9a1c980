"""The kinds of event the Tsubaki monitor records (:class:`EventKind`).

Both runs of the protocol write them: the emulation (``monitor_model/engine.py``,
``kdump_run.py``) into its timeline and the dump's EVENT records, the live
monitor (``live/monitor.py``) into the dump, and ``live/resume.py`` reads them
back to resume.  One enum keeps the two writers and the reader spelling them
alike.  A ``StrEnum`` member *is* its string (``EventKind.SAVED == "saved"``,
``json.dumps`` writes ``"saved"``), so dumps and timelines are unchanged and
EVENT records written before the enum existed still match.
"""

from __future__ import annotations

import enum

__all__ = ["EventKind"]


class EventKind(enum.StrEnum):
    """One kind of timeline event / EVENT record (values are on-disk strings: never rename)."""

    # written by both runs (timeline and/or the dump's EVENT records)
    PANIC_NOTICE = "panic_notice"  # first record of a dump: the monitor took over (cpus)
    NOTICE_SAVED = "notice_saved"  # the panic notice is on storage (bytes)
    SAVED = "saved"  # one step or region is on storage (step, bytes)
    RESUMED = "resumed"  # a restarted monitor continued an earlier dump
    REBOOT_START = "reboot_start"  # the kernel starts booting (regions)
    HAND_BACK = "hand-back"  # a saved region is given back to Linux (region)
    # the emulation's timeline (monitor_model)
    PANIC = "panic"  # time zero (cpus, memory)
    CPU_TAKEN = "cpu_taken"  # the monitor holds one CPU (cpu)
    CAPTURE_KERNEL_READY = "capture_kernel_ready"  # a capture kernel booted (kdump, capture_boot policies)
    PAGES_CLASSIFIED = "pages_classified"  # dump-level page classification done (level, kept)
    REBOOT_REGIONS_CHOSEN = "reboot_regions_chosen"  # the regions Linux reboots in (regions, write_bytes)
    REBOOT = "reboot"  # a region given to Linux by the reboot itself (region, bytes)
    RESTART = "restart"  # the service is back
    STALL_START = "stall_start"  # the rebooted system waits for memory not handed back yet
    STALL_END = "stall_end"  # ... and no longer (seconds)
    DUMP_COMPLETE = "dump_complete"  # the dump file is closed (bytes)
    CPU_RETURNED = "cpu_returned"  # the monitor's CPU is given back: the run is complete (cpu)
    # the live monitor (live/)
    PANIC_AGAIN = "panic_again"  # the rebooted guest panicked again (at)
