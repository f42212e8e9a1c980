"""One ``collect`` invocation: a source, one or more policies, their dumps.

The CLI stays thin: it parses options into :class:`~.engine.CollectParams`
and calls :func:`collect`, which plans the triage data once (only when a
triage policy runs), runs each policy on the same source and returns the
results in order.  With several policies only the first keeps its dump at
``output``; the others are written for real (the compression is part of the
measurement) into a temporary directory and removed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tsubaki_forensics.contracts.collect import CollectSettings, CollectSummary, StorageSummary

from .engine import CollectParams, Resume, RunResult, run_policy
from .pages import PageBook
from .policies import get_policy
from .resume_check import verify_resume
from .triage import TriagePlan, plan_triage

__all__ = ["collect", "summarize", "COMPARE_ORDER"]

COMPARE_ORDER = ("reboot-only", "kdump", "kdump-full", "tsubaki", "tsubaki-triage")


def collect(
    source,
    policies: Sequence[str],
    params: CollectParams,
    output: Path,
    *,
    vmlinux: Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[TriagePlan], None] | None = None,
    resume_from: Path | None = None,
) -> list[RunResult]:
    """Run ``policies`` on ``source``; the first one's dump goes to ``output``.

    :param resume_from: an interrupted file of the same dump (disk full, a
        kill): ``output`` becomes its second file, with the same dump id and
        only what the first one lacks.
    """
    resume = None
    if resume_from is not None:
        verify_resume(resume_from, source)  # trust only this crash's own file
        resume = Resume.from_file(resume_from)
    plan: TriagePlan | None = None

    def triage(machine):
        nonlocal plan
        if plan is None:
            plan = plan_triage(source, vmlinux)
            if on_plan:
                on_plan(plan)
        return plan.steps()

    book = PageBook(source)  # struct pages read, zero pages and zlib sizes found once
    results = []
    with tempfile.TemporaryDirectory(prefix="tsubaki-collect-") as tmp:
        for i, name in enumerate(policies):
            policy = get_policy(name)
            # kdump's timeline is a model of makedumpfile: its .tsd is written only when kept
            out = output if i == 0 else None if policy.kdump_model else Path(tmp) / f"{name}.tsd"
            result = run_policy(source, policy, params, out, triage=triage, progress=progress,
                                resume=resume if i == 0 else None, book=book)
            if i:
                result = replace(result, output=None)
            results.append(result)
    return results


def summarize(results: Sequence[RunResult], params: CollectParams, source) -> CollectSummary:
    """The typed summary of one run (rendered by ``render/collect.py``: text, or the
    ``--format json`` document of docs/COLLECT.md)."""
    storage = params.storage
    return CollectSummary(
        source=getattr(source, "name", "?"),
        memory_bytes=results[0].memory_bytes if results else None,
        storage=StorageSummary(
            name=storage.name,
            bandwidth_Bps=None if storage.bandwidth == float("inf") else storage.bandwidth,
            write_latency_s=storage.write_latency,
            granularity=storage.granularity,
            flush_latency_s=storage.flush_latency,
            description=storage.describe(),
        ),
        settings=CollectSettings(
            region_size=params.region_size,
            reboot_mem=params.reboot_mem,
            boot_s=results[0].boot_s if results else params.boot_s,
            capture_boot_s=params.capture_boot_s if params.capture_boot_s is not None
            else (results[0].boot_s if results else None),
            reboot_regions=params.reboot_choice,
            monitor_mem=params.monitor_mem,
            scan_bandwidth_Bps=params.scan_bandwidth,
            cpu_scale=params.cpu_scale,
            demand_rate_Bps=params.demand_rate,
            boot_footprint=params.boot_footprint,
            zstd_level=params.level,
            dump_level=params.dump_level,
            kdump_level=params.kdump_level,
            cpu=params.cpu.to_json(),
        ),
        outcomes=tuple(r.outcome() for r in results),
    )
