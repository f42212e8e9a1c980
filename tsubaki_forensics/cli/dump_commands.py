"""``import``, ``export``, ``inspect``, ``verify``: the dump-file commands.

Data goes to stdout (text for people, ``--format json`` for programs);
progress goes to stderr.  Every failure is a TsubakiError that ``app.py``
turns into one line and a non-zero exit; ``verify`` exits 2 when it finds
problems so scripts can tell "damaged dump" (2) from "could not run" (1).
"""

from __future__ import annotations

import datetime
import enum
import os
import re
from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from ..errors import TsubakiError
from . import output as cli_output
from .output import print_json, safe_text

__all__ = ["register", "OutputFormat", "VerifyFailed"]


class VerifyFailed(TsubakiError):
    """``verify`` found damaged or missing pieces (already listed on stdout)."""

    exit_code = 2


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="text for people, json for programs.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")]


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a size such as 1M or 262144")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _check_output(output: Path, force: bool, *inputs: Path) -> None:
    if output.is_dir():
        raise TsubakiError(f"{output}: is a directory; give a file name with -o")
    for src in inputs:
        if src.exists() and output.exists() and os.path.samefile(src, output):
            raise TsubakiError(f"{output}: output would overwrite its own input")
    if output.exists() and not force:
        raise TsubakiError(f"{output}: already exists; use --force to replace it")


def _progress(label: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress callback drawing on stderr when it is a terminal."""
    if not cli_output.stderr.is_terminal:
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
    vmcore: Annotated[Path, typer.Argument(help="ELF vmcore (QEMU dump-guest-memory or /proc/vmcore copy).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .tsd file to write.")],
    chunk_size: Annotated[str, typer.Option(help="Largest MEMORY record, e.g. 8M "
                                                 "(default: the format's measured default).")] = "",
    level: Annotated[int, typer.Option(help="zstd level.")] = 3,
    threads: Annotated[int, typer.Option(help="Compression threads.")] = 2,
    dedup: Annotated[bool, typer.Option(
        "--dedup", help="Store a page that repeats an earlier page as a reference to it "
                        "(format 1.2; readers before 1.2 cannot read those pages).")] = False,
    force: ForceOpt = False,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Convert an ELF vmcore into a .tsd dump (memory, VMCOREINFO and notes)."""
    from ..tsd.writer import DEFAULT_CHUNK_SIZE

    size = _size(chunk_size) if chunk_size else DEFAULT_CHUNK_SIZE
    _check_output(output, force, vmcore)
    if not 1 <= level <= 22:
        raise typer.BadParameter("zstd level must be 1..22", param_hint="--level")
    partial = output.with_name(output.name + ".part")
    update, stop = _progress("import")
    try:
        from ..vmcore.importer import import_vmcore

        res = import_vmcore(vmcore, partial, chunk_size=size, level=level, threads=threads,
                            progress=update, **({"dedup": True} if dedup else {}))
    except BaseException as e:
        partial.unlink(missing_ok=True)  # half an import is of no use to anyone
        if isinstance(e, ValueError):
            raise TsubakiError(str(e)) from None
        raise
    finally:
        stop()
    os.replace(partial, output)
    s = res.stats
    data = {"dump_id": res.dump_id, "source": str(vmcore), "output": str(output),
            "segments": res.segments, "raw_bytes": s.raw_bytes, "zero_bytes": s.zero_bytes,
            "data_bytes": s.raw_bytes - s.zero_bytes, "file_bytes": res.file_bytes,
            "records": s.records, "seconds": round(res.seconds, 4),
            "compress_cpu_seconds": round(s.compress_seconds, 4),
            "ratio": round(s.raw_bytes / res.file_bytes, 3) if res.file_bytes else None}
    if dedup:
        data["dedup_pages"] = res.dedup_pages
    if fmt == OutputFormat.json:
        print_json(data)
        return
    speed = s.raw_bytes / res.seconds / (1 << 20) if res.seconds else 0
    typer.echo(f"imported {safe_text(vmcore)} -> {safe_text(output)}\n"
               f"dump id   {res.dump_id}\n"
               f"memory    {_mib(s.raw_bytes)} in {res.segments} segments: "
               f"{_mib(s.raw_bytes - s.zero_bytes)} data, {_mib(s.zero_bytes)} zero\n"
               f"stored    {_mib(res.file_bytes)} in {s.records} records (ratio {data['ratio']}x)\n"
               f"time      {res.seconds:.2f} s ({speed:.0f} MiB/s)"
               + (f"\ndedup     {res.dedup_pages} pages stored as references" if dedup else ""))


# --- export -------------------------------------------------------------------

def export_cmd(
    dumps: Annotated[list[Path], typer.Argument(help="The .tsd file(s) of one dump.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The ELF vmcore to write.")],
    force: ForceOpt = False,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Write a dump as an ELF vmcore that drgn opens and makedumpfile accepts."""
    from ..tsd import open_dump
    from ..vmcore import write_elf_vmcore

    _check_output(output, force, *dumps)
    with open_dump(dumps) as dump:
        update, stop = _progress("export")
        try:
            size = write_elf_vmcore(output, dump.memory, dump.vmcoreinfo, dump.notes,
                                    arch=dump.header.arch, page_size=dump.header.page_size,
                                    progress=update)
        finally:
            stop()
        ranges = dump.memory.ranges()
        missing = dump.memory.missing_ranges()
        data = {"dump_id": str(dump.dump_id), "output": str(output), "file_bytes": size,
                "present_bytes": dump.memory.present_bytes,
                "missing_bytes": sum(r.length for r in missing), "ranges": len(ranges),
                "problems": [str(p) for p in dump.problems]}
    if fmt == OutputFormat.json:
        print_json(data)
        return
    typer.echo(f"exported {data['dump_id']} -> {safe_text(output)}: {_mib(data['present_bytes'])} "
               f"of memory, {_mib(size)} file (sparse where zero)")
    if missing:
        typer.echo(f"not in the export (missing): {_mib(data['missing_bytes'])}")
    for p in data["problems"]:
        typer.echo(f"problem: {safe_text(p)}")


# --- inspect ------------------------------------------------------------------

def _describe(dump: Any) -> dict[str, Any]:
    from ..vmcore.importer import vmcoreinfo_fields
    from ..vmcore.notes import NT_PRSTATUS, iter_notes

    mem = dump.memory
    ranges = mem.ranges()
    missing = mem.missing_ranges()
    present = mem.present_bytes
    missing_bytes = sum(r.length for r in missing)
    file_bytes = sum(f.size for f in dump.files)
    info = vmcoreinfo_fields(dump.vmcoreinfo)
    notes = list(iter_notes(dump.notes)) if dump.notes else []
    h = dump.header
    return {
        "dump_id": str(dump.dump_id),
        "format": f"{h.major}.{h.minor}",
        "arch": h.arch, "page_size": h.page_size, "endian": h.endian.name.lower(),
        "producer": h.producer,
        "created": datetime.datetime.fromtimestamp(h.created_ns / 1e9, datetime.UTC).isoformat(),
        "files": [{"path": f.name, "bytes": f.size, "footer": f.has_footer,
                   "memory_records": len(f.records)} for f in dump.files],
        "kernel_release": dump.properties.get("kernel_release") or info.get("OSRELEASE"),
        "vmcoreinfo_bytes": len(dump.vmcoreinfo or b""),
        "notes": {"bytes": len(dump.notes or b""), "count": len(notes),
                  "prstatus": sum(1 for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS)},
        "properties": dump.properties,
        "memory": {
            "present_bytes": present, "data_bytes": present - mem.zero_bytes,
            "zero_bytes": mem.zero_bytes, "missing_bytes": missing_bytes,
            "completeness_percent": round(100 * present / (present + missing_bytes), 3)
            if present + missing_bytes else 100.0,
            "compression_ratio": round(present / file_bytes, 3) if file_bytes else None,
            "ranges": [{"start": r.start, "length": r.length, "kind": r.kind} for r in ranges],
            "missing": [{"start": r.start, "length": r.length, "kind": r.kind} for r in missing],
            "missing_records": [{"start": a, "length": n, "reason": why}
                                for a, n, why in mem.missing_reasons()],
        },
        "events": [{"time_s": e.time_s, "kind": e.kind, "fields": e.fields} for e in dump.events],
        "problems": [{"path": p.path, "offset": p.offset, "message": p.message}
                     for p in dump.problems],
    }


def _spans(ranges: list[dict]) -> list[tuple[int, int, int]]:
    """Contiguous present spans as (start, end, zero bytes), for a short text view."""
    out: list[list[int]] = []
    for r in ranges:
        end = r["start"] + r["length"]
        zero = r["length"] if r["kind"] == "zero" else 0
        if out and out[-1][1] == r["start"]:
            out[-1][1] = end
            out[-1][2] += zero
        else:
            out.append([r["start"], end, zero])
    return [tuple(x) for x in out]  # type: ignore[misc]


def _print_inspect(d: dict[str, Any]) -> None:
    m = d["memory"]
    lines = [f"dump id        {d['dump_id']}",
             f"format         {d['format']}, {d['arch']}, {d['endian']}-endian, "
             f"page size {d['page_size']}",
             f"producer       {safe_text(d['producer'])}, created {d['created']}",
             f"kernel         {safe_text(d['kernel_release'] or 'unknown')}",
             f"vmcoreinfo     {d['vmcoreinfo_bytes']} bytes; notes: {d['notes']['count']} "
             f"({d['notes']['prstatus']} NT_PRSTATUS)"]
    for f in d["files"]:
        lines.append(f"file           {safe_text(f['path'])}: {f['bytes']} bytes, "
                     f"{f['memory_records']} memory/zero/missing records, "
                     f"{'closed (footer)' if f['footer'] else 'NO FOOTER (recovered by scan)'}")
    for k, v in sorted(d["properties"].items()):
        lines.append(f"property       {safe_text(k)} = {safe_text(v)}")
    lines.append(f"memory         {_mib(m['present_bytes'])} present ({_mib(m['data_bytes'])} data, "
                 f"{_mib(m['zero_bytes'])} zero), {_mib(m['missing_bytes'])} missing; "
                 f"complete {m['completeness_percent']}%; ratio {m['compression_ratio']}x")
    for start, end, zero in _spans(m["ranges"]):
        lines.append(f"  present      {start:#014x}-{end:#014x}  {_mib(end - start)} "
                     f"({_mib(zero)} zero)")
    reasons = {(r["start"], r["length"]): r["reason"] for r in m["missing_records"]}
    for r in m["missing"]:
        why = reasons.get((r["start"], r["length"]))
        lines.append(f"  missing      {r['start']:#014x}-{r['start'] + r['length']:#014x}  "
                     f"{_mib(r['length'])}" + (f" ({safe_text(why)})" if why else ""))
    for e in d["events"]:
        fields = " ".join(f"{k}={safe_text(v)}" for k, v in e["fields"].items())
        lines.append(f"event {e['time_s']:9.3f}s {safe_text(e['kind'])} {fields}".rstrip())
    for p in d["problems"]:
        lines.append(f"problem        {safe_text(p['path'])} offset {p['offset']}: "
                     f"{safe_text(p['message'])}")
    typer.echo("\n".join(lines))


def inspect_cmd(
    dumps: Annotated[list[Path], typer.Argument(help="The .tsd file(s) of one dump.")],
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Show header, metadata, ranges present/zero/missing, completeness and events."""
    from ..tsd import open_dump

    with open_dump(dumps) as dump:
        d = _describe(dump)
    if fmt == OutputFormat.json:
        print_json(d)
    else:
        _print_inspect(d)


# --- verify -------------------------------------------------------------------

def verify_cmd(
    dumps: Annotated[list[Path], typer.Argument(help="The .tsd file(s) of one dump.")],
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Check every record; exit 0 only if all are sound (2 if anything is bad or missing)."""
    from ..tsd.verify import verify_dump

    update, stop = _progress("verify")
    try:
        report = verify_dump(dumps, progress=update)
    finally:
        stop()
    data = {"ok": report.ok,
            "files": [vars(f) for f in report.files],
            "problems": [{"path": p.path, "offset": p.offset, "message": p.message}
                         for p in report.problems]}
    if fmt == OutputFormat.json:
        print_json(data)
    else:
        for f in report.files:
            index = {True: "index matches", False: "index BAD", None: "no index"}[f.index_matches]
            typer.echo(f"{safe_text(f.path)}: {f.size} bytes, {f.memory_records} MEMORY records decompressed, "
                       f"{'footer' if f.has_footer else 'NO FOOTER'}, {index}")
        for p in report.problems:
            typer.echo(f"BAD {safe_text(p.path)} offset {p.offset}: {safe_text(p.message)}")
        typer.echo("OK: every record is sound" if report.ok
                   else f"FAILED: {len(report.problems)} problem(s)")
    if not report.ok:
        raise VerifyFailed(f"verify found {len(report.problems)} problem(s) in "
                           f"{', '.join(str(p) for p in dumps)}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("import")(import_cmd)
    app.command("export")(export_cmd)
    app.command("inspect")(inspect_cmd)
    app.command("verify")(verify_cmd)
