"""``tsubaki-forensics collect``: run the Tsubaki monitor emulation on a crash.

The command parses options into the emulation's parameters and hands over
to :func:`monitor_model.session.collect`; progress goes to stderr, the
summary (``summarize``: a typed ``CollectSummary``, rendered by
``render/collect.py`` as a text table or ``--format json``) to stdout.  docs/COLLECT.md
explains the model, the parameters and the JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import StorageError, TsubakiError
from ..safewrite import check_output, claim_output
from . import output as cli_output
from .output import format_option, print_json, print_warning, safe_text

__all__ = ["register", "collect"]


def _size(value: str, option: str) -> int:
    from monitor_model.machine import parse_size_option

    return parse_size_option(value, option)


def collect(
    source: Annotated[Optional[str], typer.Argument(
        help="ELF vmcore, raw image (with IMAGE.json), or crash-lab spec like "
             "lab:sysrq,mem=2G,workload=busy. Default: the crash lab's default scenario.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Dump file to write (.tsd).")] = Path("dump.tsd"),
    policy: Annotated[str, typer.Option(
        help="kdump, kdump-full, reboot-only, dump-then-reset, tsubaki or tsubaki-triage.")] = "tsubaki",
    dump_level: Annotated[int, typer.Option(
        "--dump-level", "-d", min=0, max=31,
        help="makedumpfile's -d bits for tsubaki and tsubaki-triage: 1 zero, 2 non-private cache, "
             "4 private cache, 8 user data, 16 free (31: all). Left-out pages are recorded as "
             "excluded; reboot regions are those needing least written at this level.")] = 1,
    kdump_level: Annotated[int, typer.Option(
        "--kdump-level", min=0, max=31,
        help="makedumpfile -d of the kdump policy (kdump-tools' default: 31).")] = 31,
    storage: Annotated[str, typer.Option(
        help="sd-class10, sd-uhs1, emmc, nvme, unlimited, or custom:bw=20MB/s,lat=2ms,gran=4K,flush=10ms.")] = "sd-uhs1",
    region_size: Annotated[str, typer.Option(help="Hand-back unit (memory-hotplug block).")] = "128M",
    reboot_mem: Annotated[str, typer.Option(help="Memory Linux needs to reboot (lowest regions).")] = "256M",
    reboot_regions: Annotated[str, typer.Option(
        help="sparse: region 0 plus regions a zero-page scan finds nearly empty (cheap to save); "
             "low: the lowest regions.")] = "sparse",
    boot_time: Annotated[Optional[float], typer.Option(
        help="Seconds from reboot to service restart. Default: the source's measured boot.")] = None,
    capture_boot_time: Annotated[Optional[float], typer.Option(
        help="kdump: seconds for the capture kernel to boot. Default: the boot time.")] = None,
    cpu_scale: Annotated[Optional[float], typer.Option(
        help="Put this host's measured compression CPU time, times this factor, on the monitor's "
             "timeline instead of the CPU model (docs/COLLECT.md). Default: the model, deterministic.")] = None,
    demand_rate: Annotated[str, typer.Option(
        help="How fast Linux's memory demand grows after restart, per second.")] = "64M",
    boot_footprint: Annotated[str, typer.Option(help="Memory Linux uses right after boot.")] = "128M",
    level: Annotated[int, typer.Option(help="zstd level.")] = 3,
    source_type: Annotated[Optional[str], typer.Option(help="Force a registered source type.")] = None,
    vmlinux: Annotated[Optional[Path], typer.Option(
        help="vmlinux with debug info, used by tsubaki-triage to locate the triage data.")] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Run every policy on the same input and print one table.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Draw the timeline to FILE.png|svg|pdf.")] = None,
    fmt: Annotated[str, format_option(help="Summary format: text or json.")] = "text",
    fsync: Annotated[bool, typer.Option(help="fsync the dump at every save point.")] = True,
    symbols: Annotated[Optional[Path], typer.Option(
        "--symbols", metavar="PACK.tsp",
        help="Symbol pack of the source's kernel (symbols pack): stored in the dump with the panic "
             "notice, so analyze needs no vmlinux.")] = None,
    resume_from: Annotated[Optional[Path], typer.Option(
        "--resume-from", help="An interrupted .tsd of this dump (disk full, killed): write -o as its "
                              "second file, same dump id, skipping the memory it already holds.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace -o if it exists (never a device or link).")] = False,
) -> None:
    """Emulate the Tsubaki monitor: dump region by region, reboot early, hand memory back."""
    from monitor_model.engine import CollectParams, check_params
    from monitor_model.policies import POLICIES
    from monitor_model.session import COMPARE_ORDER, collect as run_collect, summarize
    from monitor_model.sources import open_source
    from monitor_model.storage import get_profile

    if fmt not in ("text", "json"):
        raise TsubakiError(f"--format {fmt!r}: choose text or json")
    if policy not in POLICIES:
        raise TsubakiError(f"--policy {policy!r}: choose one of {', '.join(POLICIES)}")
    for name, value in (("--boot-time", boot_time), ("--capture-boot-time", capture_boot_time),
                        ("--cpu-scale", cpu_scale)):
        if value is not None and value < 0:
            raise TsubakiError(f"{name} must not be negative")
    params = CollectParams(
        storage=get_profile(storage),
        region_size=_size(region_size, "--region-size"),
        reboot_mem=_size(reboot_mem, "--reboot-mem"),
        reboot_choice=reboot_regions,
        boot_s=boot_time,
        capture_boot_s=capture_boot_time,
        cpu_scale=cpu_scale,
        demand_rate=_size(demand_rate, "--demand-rate"),
        boot_footprint=_size(boot_footprint, "--boot-footprint"),
        level=level,
        fsync=fsync,
        dump_level=dump_level,
        kdump_level=kdump_level,
    )
    if plot is not None:
        from monitor_model.plot import check_plot_path

        check_plot_path(plot)
    policies = [policy] + [p for p in COMPARE_ORDER if p != policy] if compare else [policy]
    if resume_from is not None:
        if compare:
            raise TsubakiError("--resume-from and --compare exclude each other")
        if resume_from.resolve() == output.resolve():
            raise TsubakiError(f"--resume-from {resume_from}: write the rest to another file (-o)")
    # a second collect in the same directory must not destroy the first dump (safewrite.py)
    check_output(output, force, *([resume_from] if resume_from is not None else []))

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with cli_output.stderr.status(f"opening {safe_text(source or 'the default crash-lab scenario')}"):
        src = open_source(source, source_type)
    try:
        check_params(src, params)  # bad sizes fail before any progress bar
        if symbols is not None:
            params.symbolpack = _symbol_pack(symbols, src)
        total = sum(n for _, n in src.ranges) * sum(1 for p in policies if POLICIES[p].dumps)
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      DownloadColumn(binary_units=True), TimeElapsedColumn(),
                      console=cli_output.stderr, transient=True) as bar:
            task = bar.add_task("dumping", total=total or None)

            def on_plan(plan):
                for note in plan.notes:
                    print_warning(f"triage: {note}")

            claim_output(output, force=force, inputs=(resume_from,) if resume_from else ())
            try:
                results = run_collect(src, policies, params, output, vmlinux=vmlinux,
                                      progress=lambda n: bar.advance(task, n), on_plan=on_plan,
                                      resume_from=resume_from)
            except StorageError as e:
                raise StorageError(f"{e}; {output} keeps every record saved before the fault "
                                   f"(analyse it, or finish the dump with --resume-from {output} "
                                   f"-o ANOTHER.tsd)") from None
            except BaseException:
                if output.is_file() and output.stat().st_size == 0:
                    output.unlink()  # claimed but nothing written: leave no empty dump behind
                raise
        if plot is not None:
            from monitor_model.plot import plot_timeline

            plot_timeline(results, plot)
        from ..render import collect as render_collect

        summary = summarize(results, params, src)
        if fmt == "json":
            print_json(render_collect.summary_json(summary))
        else:
            render_collect.render_text(summary, sys.stdout, plot=plot, warn=print_warning)
    finally:
        src.close()


def _symbol_pack(path: Path, src) -> bytes:
    """The bytes of the pack in ``path``, checked to decode and to be of the source's kernel."""
    from ..symbolpack import SymbolPackError, SymbolPackMismatch, check_pack_matches, read_pack

    try:
        pack = read_pack(path)  # missing, unreadable, not a pack, damaged
    except SymbolPackError as e:
        raise SymbolPackError(f"--symbols: {e}") from None
    try:
        check_pack_matches(pack, src.vmcoreinfo, f"the source {src.name}")
    except SymbolPackMismatch as e:
        raise SymbolPackMismatch(f"--symbols {path}: {e}") from None
    return path.read_bytes()


def register(app: typer.Typer) -> None:
    """Add ``collect`` to ``app``."""
    app.command("collect")(collect)
