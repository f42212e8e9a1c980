"""``import``, ``export``, ``inspect``, ``verify``: the dump-file commands.

Data goes to stdout (text for people, ``--format json`` for programs);
progress, missing ranges and problems go to stderr.  Every failure is a
TsubakiError that ``app.py`` turns into one line and a non-zero exit.
``verify`` exits 0 when every record is sound and every byte of the memory
map is present, 2 when anything is damaged, and 4 when every record is sound
but the dump is incomplete (cut short, or memory the map lists is not in it),
so scripts can tell the three apart from "could not run" (1).
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

import typer

from ..errors import SizeError, TsubakiError
from ..safewrite import atomic_output, check_output
from ..sizes import parse_size
from . import output as cli_output
from .output import JsonStream, format_option, print_json, safe_text

__all__ = ["register", "OutputFormat", "VerifyFailed", "VerifyIncomplete", "EXIT_DAMAGED",
           "EXIT_INCOMPLETE"]

EXIT_DAMAGED = 2
EXIT_INCOMPLETE = 4  # as ``analyze``'s "partial": what is there is sound, not all is there


class VerifyFailed(TsubakiError):
    """``verify`` found damaged records (already listed on stdout)."""

    exit_code = EXIT_DAMAGED


class VerifyIncomplete(TsubakiError):
    """``verify`` found every record sound but memory missing (listed on stdout)."""

    exit_code = EXIT_INCOMPLETE


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


DUMPS_HELP = ("The file(s) of one dump: .tsd, ELF vmcore, makedumpfile kdump-compressed or flattened "
              "(also in gzip/bzip2/xz/lz4), or every file of a --split set; told apart by magic.")
FormatOpt = Annotated[str, format_option()]  # checked like every command's --format (one line, exit 1)
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")]


def _size(text: str) -> int:
    """``--chunk-size``: the project's one size parser (a bare number is bytes)."""
    try:
        return parse_size(text)
    except SizeError as e:
        raise typer.BadParameter(str(e)) from None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _check_output(output: Path, force: bool, *inputs: Path) -> None:
    check_output(output, force, *inputs)  # the write protocol: safewrite.py


def _progress(label: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress callback drawing on stderr when it is a terminal."""
    # isatty first: asking rich imports it (0.1 s) only to say "no" in a pipe
    if not sys.stderr.isatty() or not cli_output.stderr.is_terminal:
        return None, lambda: None
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), console=cli_output.stderr, transient=True)
    task = bar.add_task(label, total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


# --- import -------------------------------------------------------------------

def import_cmd(
    vmcore: Annotated[list[Path], typer.Argument(
        metavar="DUMP...", help="ELF vmcore (QEMU dump-guest-memory or /proc/vmcore copy), makedumpfile's "
                                "kdump-compressed or flattened (-F) file (also in gzip/bzip2/xz/lz4), or "
                                "every file of a makedumpfile --split set.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .tsd file to write.")],
    chunk_size: Annotated[str, typer.Option(help="Largest MEMORY record, e.g. 8M "
                                                 "(default: the format's measured default).")] = "",
    level: Annotated[int, typer.Option(help="zstd level.")] = 3,
    threads: Annotated[int, typer.Option(help="Compression threads.")] = 2,
    dedup: Annotated[bool, typer.Option(
        "--dedup", help="Store a page that repeats an earlier page as a reference to it "
                        "(format 1.2; readers before 1.2 cannot read those pages).")] = False,
    dump_level: Annotated[int, typer.Option(
        "--dump-level", "-d", min=0, max=31,
        help="makedumpfile's -d bits: 1 zero, 2 non-private cache, 4 private cache, 8 user "
             "data, 16 free (31: all). Pages left out are recorded as excluded with their "
             "class (format 1.4; docs/FILTER.md). 1 (default) keeps every page.")] = 1,
    fallback_level_1: Annotated[bool, typer.Option(
        "--fallback-level-1", help="If VMCOREINFO lacks what the dump level needs, write level 1 "
                                   "with a warning instead of failing.")] = False,
    force: ForceOpt = False,
    fmt: FormatOpt = "text",
) -> None:
    """Convert an ELF vmcore or a makedumpfile file into a .tsd dump (memory, VMCOREINFO and notes)."""
    from ..tsd.writer import DEFAULT_CHUNK_SIZE

    size = _size(chunk_size) if chunk_size else DEFAULT_CHUNK_SIZE
    _check_output(output, force, *vmcore)
    if dump_level & ~1:
        # Classification builds a drgn program with no debug info; drgn's own
        # plugins (its crash-style commands, which import all of
        # drgn.helpers.linux) serve nothing here and cost 0.05-0.2 s a run.
        # A user's own setting is kept.
        os.environ.setdefault("DRGN_DISABLE_PLUGINS", "*")
    if not 1 <= level <= 22:
        raise typer.BadParameter("zstd level must be 1..22", param_hint="--level")
    update, stop = _progress("import")
    try:
        from ..vmcore.detect import import_any

        # half an import is of no use to anyone: published only once complete
        with atomic_output(output, force=force, inputs=tuple(vmcore)) as partial:
            res = import_any(vmcore if len(vmcore) > 1 else vmcore[0], partial, chunk_size=size,
                             level=level, threads=threads, progress=update,
                             **({"dedup": True} if dedup else {}),
                             dump_level=dump_level, fallback_level_1=fallback_level_1,
                             warn=cli_output.print_warning)
    except ValueError as e:
        raise TsubakiError(str(e)) from None
    finally:
        stop()
    # the .tsd is published (fsync'd, renamed): once the summary below is
    # written the process may end without tearing down its heap (cli/app.py)
    cli_output.allow_quick_exit()
    s = res.stats
    source = ", ".join(map(str, vmcore))
    data = {"dump_id": res.dump_id, "source": source, "output": str(output),
            "segments": res.segments, "raw_bytes": s.raw_bytes, "zero_bytes": s.zero_bytes,
            "data_bytes": s.raw_bytes - s.zero_bytes - s.excluded_bytes, "file_bytes": res.file_bytes,
            "records": s.records, "seconds": round(res.seconds, 4),
            "compress_cpu_seconds": round(s.compress_seconds, 4),
            "ratio": round(s.raw_bytes / res.file_bytes, 3) if res.file_bytes else None,
            "dump_level": res.dump_level, "excluded_bytes": res.excluded_bytes,
            "classify_seconds": round(res.classify_seconds, 4)}
    if dedup:
        data["dedup_pages"] = res.dedup_pages
    if fmt == OutputFormat.json:
        print_json(data)
        return
    speed = s.raw_bytes / res.seconds / (1 << 20) if res.seconds else 0
    typer.echo(f"imported {safe_text(source)} -> {safe_text(output)}\n"
               f"dump id   {res.dump_id}\n"
               f"memory    {_mib(s.raw_bytes)} in {res.segments} segments: "
               f"{_mib(s.raw_bytes - s.zero_bytes - s.excluded_bytes)} data, {_mib(s.zero_bytes)} zero\n"
               f"stored    {_mib(res.file_bytes)} in {s.records} records (ratio {data['ratio']}x)\n"
               + (f"level     {res.dump_level}: {_mib(res.excluded_bytes)} excluded\n"
                  if res.dump_level not in (0, 1) else "")
               + f"time      {res.seconds:.2f} s ({speed:.0f} MiB/s)"
               + (f"\ndedup     {res.dedup_pages} pages stored as references" if dedup else ""))


# --- export -------------------------------------------------------------------

def _gap_lines(completeness: Any) -> Iterator[str]:
    """One line per range the dump should hold and does not, made as they are written."""
    for g in completeness.gaps:
        why = f"MISSING record: {safe_text(g.reason)}" if g.kind == "unreadable" else \
            "no record of it in the dump"
        yield f"missing: physical {g.start:#x}-{g.end:#x} ({_mib(g.length)}, {why})"


def _completeness_json(c: Any) -> dict[str, Any]:
    """``Completeness.to_json()`` with its gaps written as a stream (a million
    holes in a hostile map: no dict per gap held at once, issue 22)."""
    d = c.to_json(gaps=False)
    d["gaps"] = JsonStream({"start": g.start, "length": g.length, "kind": g.kind, "reason": g.reason}
                           for g in c.gaps)
    return d


def export_cmd(
    dumps: Annotated[list[Path], typer.Argument(help=DUMPS_HELP)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The ELF vmcore to write.")],
    force: ForceOpt = False,
    fmt: FormatOpt = "text",
) -> None:
    """Write a dump as an ELF vmcore that drgn opens and makedumpfile accepts.

    A partial dump is exported as far as it goes: every missing range is
    named on stderr (it gets no PT_LOAD, so readers fault instead of seeing
    zeros).  Refused, with nothing written, when the dump holds no memory or
    no VMCOREINFO (no reader could use the ELF).
    """
    from ..vmcore import write_elf_vmcore
    from ..vmcore.export import check_exportable

    from ..vmcore.foreign import open_any

    _check_output(output, force, *dumps)
    with open_any(dumps) as dump:  # .tsd, ELF, kdump, flattened, split, wrapped: vmcore/foreign.py
        completeness = dump.completeness()
        check_exportable(dump.memory, dump.vmcoreinfo, dump.notes,
                         what=", ".join(str(p) for p in dumps))
        # the ELF has no PT_LOAD for excluded pages: a TSUBAKI note says what
        # they were, so that `import` of it records them as excluded again
        from ..vmcore.filter_note import notes_for_export

        notes = notes_for_export(dump.notes, dump.memory_map, dump.excluded, dump.header.page_size)
        update, stop = _progress("export")
        try:
            with atomic_output(output, force=force, inputs=tuple(dumps)) as partial:  # no partial ELF
                size = write_elf_vmcore(partial, dump.memory, dump.vmcoreinfo, notes,
                                        arch=dump.header.arch, page_size=dump.header.page_size,
                                        progress=update)
        finally:
            stop()
        ranges = dump.memory.ranges()
        data = {"dump_id": str(dump.dump_id), "output": str(output), "file_bytes": size,
                "present_bytes": dump.memory.present_bytes,
                "missing_bytes": completeness.missing_bytes, "ranges": len(ranges),
                "complete": completeness.complete, "completeness": _completeness_json(completeness),
                "problems": [str(p) for p in dump.problems]}
    for line in _gap_lines(completeness):
        sys.stderr.write(line + "\n")
    for p in data["problems"]:
        sys.stderr.write(f"problem: {safe_text(p)}\n")
    if completeness.complete is not True:
        sys.stderr.write(f"{completeness.status}: {safe_text(completeness.reason)}\n")
    if fmt == OutputFormat.json:
        print_json(data)
        return
    typer.echo(f"exported {data['dump_id']} -> {safe_text(output)}: {_mib(data['present_bytes'])} "
               f"of memory, {_mib(size)} file (sparse where zero)"
               + ("" if completeness.complete else
                  f"; {completeness.status.upper()}, {_mib(completeness.missing_bytes)} "
                  f"{'missing' if completeness.missing_exact else 'known missing'}"))


# --- inspect ------------------------------------------------------------------

def inspect_cmd(
    dumps: Annotated[list[Path], typer.Argument(help=DUMPS_HELP)],
    fmt: FormatOpt = "text",
) -> None:
    """Show header, metadata, ranges present/zero/missing, completeness and events."""
    from ..render import inspect as render_inspect
    from ..vmcore.describe import describe_dump
    from ..vmcore.foreign import open_any

    with open_any(dumps) as dump:  # any format, by magic (vmcore/foreign.py)
        description = describe_dump(dump)
    if fmt == OutputFormat.json:
        render_inspect.render_json(description, sys.stdout)
    else:
        render_inspect.render_text(description, sys.stdout)


# --- verify -------------------------------------------------------------------

def verify_cmd(
    dumps: Annotated[list[Path], typer.Argument(help=DUMPS_HELP)],
    fmt: FormatOpt = "text",
) -> None:
    """Check every record and measure completeness against the memory map.

    Exit codes: 0 every record is sound and every byte of the memory map is
    present (for files before format 1.3, which have no map: every record
    sound, nothing known missing, total unknown); 2 DAMAGED: some record is
    bad, conflicting or unreadable (wins over 4); 4 INCOMPLETE: every record
    is sound but memory is missing (a file cut short, or ranges of the map
    not in the dump); 1 the files could not be read as a dump at all.
    """
    from ..vmcore.verify import verify_any

    update, stop = _progress("verify")
    try:
        report = verify_any(dumps, progress=update)  # .tsd: tsd/verify.py; others: vmcore/verify.py
    finally:
        stop()
    c = report.completeness
    data = {"ok": report.ok, "status": report.status,
            "complete": c.complete if c is not None else False,
            "completeness": _completeness_json(c) if c is not None else None,
            "files": [vars(f) for f in report.files],
            "problems": [{"path": p.path, "offset": p.offset, "message": p.message,
                          "damage": p in report.damage}
                         for p in report.problems]}
    if fmt == OutputFormat.json:
        print_json(data)
    else:
        for f in report.files:
            if getattr(f, "format", None):  # not a .tsd (vmcore/verify.py): its own summary
                typer.echo(f"{safe_text(f.path)}: {f.size} bytes, {f.format}: {f.summary}")
                continue
            index = {True: "index matches", False: "index BAD", None: "no index"}[f.index_matches]
            typer.echo(f"{safe_text(f.path)}: {f.size} bytes, {f.memory_records} MEMORY records decompressed, "
                       f"{'footer' if f.has_footer else 'NO FOOTER'}, {index}")
        damage = report.damage
        for p in report.problems:
            typer.echo(f"{'BAD' if p in damage else 'CUT'} {safe_text(p.path)} offset {p.offset}: "
                       f"{safe_text(p.message)}")
        if c is not None:
            for line in _gap_lines(c):
                typer.echo(line)
            typer.echo(f"memory: {safe_text(c.reason)}")
        typer.echo({"ok": "OK: every record is sound" + ("" if c is None or c.complete else
                                                         "; completeness unknown (no memory map)"),
                    "damaged": f"DAMAGED: {len(damage)} problem(s)",
                    "incomplete": "INCOMPLETE: every record is sound, but the dump is not whole"}
                   [report.status])
    where = ", ".join(str(p) for p in dumps)
    if report.status == "damaged":
        raise VerifyFailed(f"verify found {len(report.damage)} damaged piece(s) in {where}")
    if report.status == "incomplete":
        missing = f"{_mib(c.missing_bytes)} missing" if c is not None and c.missing_exact else \
            "memory missing"
        raise VerifyIncomplete(f"{where} is incomplete ({missing}); every record is sound")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("import")(import_cmd)
    app.command("export")(export_cmd)
    app.command("inspect")(inspect_cmd)
    app.command("verify")(verify_cmd)
