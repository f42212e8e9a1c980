"""``collect``'s summary as text (a rich table) or as the JSON document of docs/COLLECT.md.

Reads only :mod:`tsubaki_forensics.contracts.collect`; the emulation
(``monitor_model.session.summarize``) builds the :class:`CollectSummary`.
rich is imported only for text output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..contracts.collect import CollectSummary, PolicyOutcome
from ..sizes import format_size
from .safe import safe_text

__all__ = ["outcome_json", "summary_json", "render_text"]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def outcome_json(o: PolicyOutcome) -> dict[str, Any]:
    """One policy's row of ``policies`` (docs/COLLECT.md), times rounded to the microsecond."""
    return {
        "policy": o.policy,
        "storage": o.storage,
        "source": o.source,
        "output": o.output,
        "memory_bytes": o.memory_bytes,
        "used_bytes": o.used_bytes,
        "boot_s": _r(o.boot_s),
        "reboot_start_s": _r(o.reboot_start_s),
        "dump_level": o.dump_level,
        "restart_s": _r(o.restart_s),
        "full_memory_s": _r(o.full_memory_s),
        "dump_complete_s": _r(o.dump_complete_s),
        "stall_s": _r(o.stall_s),
        "bytes_written": o.bytes_written,
        "ideal_restart_s": _r(o.ideal_restart_s),
        "cpu_compress_s": _r(o.cpu_compress_s),
        "cpu_model_s": _r(o.cpu_model_s),
        "pages": None if o.pages is None else
        {"total": o.pages.total, "kept": o.pages.kept, "excluded": dict(o.pages.excluded)},
        "notes": list(o.notes),
        "wall_s": _r(o.wall_s),
        "unsafe_handbacks": o.unsafe_handbacks,
        "regions": [{"index": r.index, "base": r.base, "bytes": r.nbytes, "file_bytes": r.file_bytes,
                     "saved_s": r.saved_s, "given_s": r.given_s} for r in o.regions],
        "steps": [{"label": s.label, "memory_bytes": s.memory_bytes, "file_end": s.file_end,
                   "saved_s": s.saved_s} for s in o.steps],
        "events": [{"time_s": _r(e.time_s), "kind": e.kind, **e.fields} for e in o.events],
    }


def summary_json(summary: CollectSummary) -> dict[str, Any]:
    """The ``collect --format json`` document (docs/COLLECT.md)."""
    policies = {}
    for o in summary.outcomes:
        row = outcome_json(o)
        speedup = summary.speedup(o)
        if speedup is not None:
            row["restart_speedup_vs_kdump"] = round(speedup, 3)
        policies[o.policy] = row
    st, p = summary.storage, summary.settings
    return {
        "source": summary.source,
        "memory_bytes": summary.memory_bytes,
        "storage": {
            "name": st.name,
            "bandwidth_Bps": st.bandwidth_Bps,
            "write_latency_s": st.write_latency_s,
            "granularity": st.granularity,
            "flush_latency_s": st.flush_latency_s,
        },
        "params": {
            "region_size": p.region_size,
            "reboot_mem": p.reboot_mem,
            "boot_s": p.boot_s,
            "capture_boot_s": p.capture_boot_s,
            "reboot_regions": p.reboot_regions,
            "monitor_mem": p.monitor_mem,
            "scan_bandwidth_Bps": p.scan_bandwidth_Bps,
            "cpu_scale": p.cpu_scale,
            "demand_rate_Bps": p.demand_rate_Bps,
            "boot_footprint": p.boot_footprint,
            "zstd_level": p.zstd_level,
            "dump_level": p.dump_level,
            "kdump_level": p.kdump_level,
            "cpu": dict(p.cpu),
        },
        "policies": policies,
    }


def render_text(summary: CollectSummary, out: IO[str], *, plot: Path | None = None,
                warn: Callable[[str], None] | None = None) -> None:
    """One row per policy (restart, full memory, complete, stall, MiB, vs kdump), then what
    the figures mean; each outcome's notes go to ``warn`` (stderr) between the two."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False, soft_wrap=True)
    outcomes = summary.outcomes
    baseline = summary.baseline
    table = Table(title=f"collect: {safe_text(summary.source)} ({format_size(outcomes[0].memory_bytes)}, "
                        f"{summary.storage.description})")
    table.add_column("policy", no_wrap=True, min_width=14)
    table.add_column("-d", justify="right", no_wrap=True)
    for col in ("restart", "full mem", "complete", "stall", "MiB", "vs kdump"):
        table.add_column(col, justify="right", no_wrap=True)
    for o in outcomes:
        speedup = summary.speedup(o)
        table.add_row(
            o.policy, "-" if o.dump_level is None else str(o.dump_level), f"{o.restart_s:.2f}",
            f"{o.full_memory_s:.2f}", "never" if o.dump_complete_s is None else f"{o.dump_complete_s:.2f}",
            f"{o.stall_s:.2f}", f"{o.bytes_written / (1 << 20):.1f}", "-" if speedup is None else f"{speedup:.2f}x",
        )
    console.print(table)
    if warn is not None:
        for o in outcomes:
            for note in o.notes:
                warn(note)
    first = outcomes[0]
    if first.output:
        console.print("seconds of emulated time since the panic; MiB written to the dump; "
                      "vs kdump = how many times sooner the service restarts")
        console.print(f"dump: {first.output} ({first.policy}); boot {first.boot_s:.2f} s, "
                      f"ideal restart {first.ideal_restart_s:.2f} s, compression CPU "
                      f"{first.cpu_compress_s:.2f} s (real, this host), CPU on the timeline "
                      f"{first.cpu_model_s:.2f} s")
    if baseline is not None:
        console.print(f"kdump = kdump-tools' default: capture kernel with nr_cpus=1 running "
                      f"makedumpfile -F -c -d {baseline.dump_level} (modelled, docs/COLLECT.md)")
    if plot is not None:
        console.print(f"timeline plot: {plot}")
