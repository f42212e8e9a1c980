"""``triage``: many dumps, analysed in parallel, grouped by crash signature.

Data (the report) goes to stdout or ``-o FILE``; progress and warnings to
stderr.  Exit codes: 0 every dump analysed; 4 some dump could not be analysed
or some file was unreadable (they are in the report, with their error, in
every format: not only on stderr); 1 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..errors import TsubakiError
from ..safewrite import atomic_output, check_output
from .output import format_option, print_warning, safe_text

if TYPE_CHECKING:
    from ..contracts.triage import TriageRecord

__all__ = ["register", "EXIT_SOME_FAILED"]

EXIT_SOME_FAILED = 4

FORMATS = ("text", "json", "jsonl", "html")


def triage(
    sources: Annotated[
        list[str],
        typer.Argument(metavar="DIR|GLOB|FILE...", help="Directories (searched recursively for *.tsd), globs or .tsd files.", show_default=False),
    ],
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Local worker processes (default: one per CPU).")] = None,
    dask: Annotated[
        Optional[str],
        typer.Option("--dask", metavar="ADDRESS", help="Run on this Dask distributed scheduler (tcp://host:8786); workers must see the same paths."),
    ] = None,
    dask_timeout: Annotated[float, typer.Option("--dask-timeout", min=0.1, help="Seconds to wait for the Dask scheduler.")] = 20.0,
    format: Annotated[str, format_option(("text", "json", "jsonl", "html"), help="text, json (list of groups), jsonl (one dump per line) or html.")] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the report here instead of stdout.")] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse results of dumps analysed before (keyed by dump id).")] = True,
    cache_file: Annotated[
        Optional[Path], typer.Option("--cache-file", help="The result cache (default: ~/.cache/tsubaki-forensics/triage/results.sqlite).")
    ] = None,
    depth: Annotated[int, typer.Option("--frames", min=1, max=32, help="Meaningful backtrace frames in a signature.")] = 3,
    debug_dir: Annotated[
        Optional[list[Path]], typer.Option("--debug-dir", help="Also search this debug directory for vmlinux files; repeatable.")
    ] = None,
    self_contained: Annotated[
        bool, typer.Option("--self-contained", help="Never look for a vmlinux: use each dump's own BTF, kallsyms and ORC.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the -o report if it exists.")] = False,
) -> None:
    """Group many dumps by crash signature: counts, first/last seen, kernels, one representative each."""
    from ..triage.cache import ResultCache, default_cache_path
    from ..render.triage import RENDERERS
    from ..triage.report import group_records
    from ..triage.run import triage as run_triage

    if format not in RENDERERS:
        raise TsubakiError(f"unknown format {format!r} (available: {', '.join(RENDERERS)})")
    if dask and jobs:
        raise TsubakiError("--jobs and --dask exclude each other (the cluster decides its workers)")
    if output is not None:  # never one of the dumps it reads, never an existing file unasked
        from ..triage.discover import find_files
        try:
            inputs = find_files(sources)
        except TsubakiError:
            inputs = []
        check_output(output, force, *inputs)
    options = {
        "depth": depth,
        "self_contained": self_contained,
        "debug_dirs": sorted(str(p.resolve()) for p in debug_dir or ()),
    }

    def progress(done: int, total: int, record: TriageRecord) -> None:
        what = record.error or record.signature
        sys.stderr.write(f"[{done}/{total}] {safe_text(record.parts[0] if record.parts else '?')}: {safe_text(what)}\n")

    store = ResultCache(cache_file or default_cache_path()) if cache else None
    try:
        run = run_triage(sources, jobs=jobs, dask=dask, dask_timeout=dask_timeout, cache=store, options=options, progress=progress)
    finally:
        if store is not None:
            store.close()
    for bad in run.unreadable:
        reason = bad.reason if bad.path in bad.reason else f"{bad.path}: {bad.reason}"
        print_warning(f"not analysed: {reason}")
    sys.stderr.write(
        f"{len(run.records) - len(run.unreadable)} dumps: {len(run.analysed)} analysed ({run.engine}, {run.workers} workers),"
        f" {len(run.cached)} from the cache, in {run.seconds:.1f} s\n"
    )
    groups = group_records(run.records)
    if output is not None:
        try:
            with atomic_output(output, force=force) as partial, open(partial, "w", encoding="utf-8") as out:
                RENDERERS[format](groups, out)
        except OSError as e:
            raise TsubakiError(f"{output}: cannot write the report: {e.strerror or e}") from e
    else:
        RENDERERS[format](groups, sys.stdout)
        sys.stdout.flush()
    if run.unreadable or any(r.error for r in run.records):
        sys.exit(EXIT_SOME_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``triage`` to ``app``."""
    app.command("triage")(triage)
