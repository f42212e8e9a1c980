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

    PANIC_NOTICE = "panic_notice"  # first record of a dump: the monitor took over (cpus)
    NOTICE_SAVED = "notice_saved"  # the panic notice is on storage (bytes)
    SAVED = "saved"  # one step or region is on storage (step, bytes)
    RESUMED = "resumed"  # a restarted monitor continued an earlier dump
    PAGES_CLASSIFIED = "pages_classified"  # dump-level page classification done (level, kept)
    REBOOT_START = "reboot_start"  # the kernel starts booting (regions)
    RESTART = "restart"  # the service is back
    HAND_BACK = "hand-back"  # a saved region is given back to Linux (region)
    PANIC_AGAIN = "panic_again"  # the rebooted guest panicked again (live)
    STALL_START = "stall_start"  # the rebooted system waits for memory not handed back yet
    STALL_END = "stall_end"  # ... and no longer (seconds)
    CPU_RETURNED = "cpu_returned"  # the monitor's CPU is given back: the run is complete (cpu)
