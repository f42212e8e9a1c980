"""The kdump baseline: makedumpfile in a capture kernel, then a reboot.

Why a model of its own: kdump does not hand memory back region by region;
it is one serial job on one CPU.  Debian's kdump-tools (1.8.1) boots the
capture kernel with ``nr_cpus=1`` and runs ``makedumpfile -F -c -d 31``:

1. the capture kernel boots (``capture_boot_s``);
2. makedumpfile reads the struct pages and applies the level's rules
   (:meth:`.cpu.CpuModel.classify_s` per byte of RAM; only when the level
   reads struct pages);
3. every page the rules keep is read and tested for zeros, each non-zero
   page compressed alone with zlib level 1, and the output written: one
   CPU does all of it and writes synchronously, so CPU time and device
   time add up (no pipeline);
4. the dump is synced and the machine reboots; the service restarts
   ``boot_s`` later with all of its memory (no stalls).

The size is :func:`.kdumpfile.kdump_size` (real per-page zlib sizes of this
crash, makedumpfile's layout).  With an output path, the same pages at the
same level are also written as a ``.tsd`` (untimed: the timeline is the
makedumpfile job's), so ``collect --policy kdump -o`` still gives a dump to
analyse.  A source whose VMCOREINFO cannot classify pages falls back to
level 1, with a note in the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tsubaki_forensics.contracts.events import EventKind
from tsubaki_forensics.errors import TsubakiError

from .kdumpfile import kdump_size
from .machine import Machine
from .pages import PageBook
from .policies import Policy, TsubakiPolicy, region_step
from .results import CollectParams, HandBack, RunResult
from .storage import StorageDevice
from .timeline import Timeline

__all__ = ["run_kdump"]


def run_kdump(source, policy: Policy, params: CollectParams, output, book: PageBook,
              run_policy: Callable[..., RunResult]) -> RunResult:
    """The kdump policy's outcome (and its dump at ``output``, if given).

    :param run_policy: the engine's ``run_policy``, which writes the ``.tsd``
        (a callback: the engine calls this module, so it cannot import the engine).
    """
    wall0 = time.perf_counter()
    machine = Machine.from_ranges(source.ranges, params.region_size, monitor_mem=params.monitor_mem)
    cpu, notes = params.cpu, []
    level = policy.level(params)
    try:
        pages = book.at(level)
    except TsubakiError as e:
        notes.append(f"kdump: level {level} needs struct pages ({e}); modelled at level 1")
        level = 1
        pages = book.at(level)
    size = kdump_size(pages, book.zlib_sizes(), vmcoreinfo_bytes=len(source.vmcoreinfo or b""),
                      notes_bytes=len(source.notes or b""))
    timeline = Timeline()
    timeline.add(0.0, EventKind.PANIC, memory=machine.total)
    now = params.capture_boot_s
    timeline.add(now, EventKind.CAPTURE_KERNEL_READY, cpus=1)
    model_cpu = 0.0
    if pages.struct_pages or level > 1:
        model_cpu += cpu.classify_s(machine.total)
        now += cpu.classify_s(machine.total)
        timeline.add(now, EventKind.PAGES_CLASSIFIED, level=level, kept=size.data_pages)
    # one CPU: read + zero test + zlib, and the synchronous writes, one after the other
    work = cpu.zero_test_s(size.candidate_bytes) + cpu.zlib_s(size.input_bytes)
    model_cpu += work
    measured = 0.0
    device = StorageDevice(params.storage)
    now = device.write(size.total, now + work)
    now = device.flush(now)
    timeline.save(now, size.total)
    timeline.add(now, EventKind.DUMP_COMPLETE, bytes=size.total, format="makedumpfile -F -c",
                 level=level)
    handbacks = [HandBack(now, r.index, EventKind.REBOOT, size.total, size.total, True) for r in machine.regions]
    timeline.add(now, EventKind.REBOOT_START, regions=[r.index for r in machine.regions])
    timeline.give(now, machine.total)
    timeline.add(now + params.boot_s, EventKind.RESTART)
    out_path = Path(output) if output is not None else None
    if out_path is not None:
        measured = _write_tsd(source, policy, params, out_path, book, level, run_policy)
    restart = now + params.boot_s
    ideal = params.capture_boot_s + params.storage.write_time(size.total) + params.boot_s
    regions = [{"index": r.index, "base": r.base, "bytes": r.nbytes, "file_bytes": None,
                "saved_s": round(now, 6), "given_s": round(now, 6)} for r in machine.regions]
    counts = pages.counts()
    kept = counts.pop("kept")
    return RunResult(
        policy=policy.name, storage=params.storage.name, source=getattr(source, "name", "?"),
        output=out_path, memory_bytes=machine.total, used_bytes=_used(book),
        boot_s=params.boot_s, reboot_start_s=now, restart_s=restart, full_memory_s=now,
        dump_complete_s=now, stall_s=0.0, bytes_written=size.total, ideal_restart_s=ideal,
        cpu_compress_s=measured, wall_s=time.perf_counter() - wall0, regions=regions,
        steps=[{"label": f"makedumpfile -F -c -d {level}", "memory_bytes": size.candidate_bytes,
                "file_end": size.total, "saved_s": round(now, 6)}],
        handbacks=handbacks, stalls=[], timeline=timeline, flushes=list(device.flushes),
        dump_level=level, cpu_model_s=model_cpu,
        pages={"total": kept + sum(counts.values()), "kept": kept, "excluded": counts},
        notes=notes,
    )


def _used(book: PageBook) -> int:
    try:
        return book.used_bytes()
    except TsubakiError:
        return 0


def _write_tsd(source, policy: Policy, params: CollectParams, path: Path, book: PageBook,
               level: int, run_policy: Callable[..., RunResult]) -> float:
    """The same pages at the same level as a ``.tsd`` (what kdump keeps); its CPU seconds."""

    class _Writer(TsubakiPolicy):  # the engine's writer, every region in address order
        name = policy.name
        reboots_early = False

        def level(self, p) -> int:
            return level

        def steps(self, ctx):
            return [region_step(r) for r in ctx.machine.regions]

        def on_saved(self, ctx, step) -> None:
            pass

        def on_finished(self, ctx) -> None:
            ctx.reboot(ctx.machine.regions)

    result = run_policy(source, _Writer(), replace(params, reboot_choice="low"), path, book=book)
    return result.cpu_compress_s
