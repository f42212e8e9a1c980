"""``triage``'s groups as text, JSON, JSON lines or HTML (docs/TRIAGE.md).

- ``text``: a rich table, one row per signature;
- ``json``: a list of groups;
- ``jsonl``: one line per *dump* (its record, :func:`record_json`), for
  pipelines that regroup or load into a database;
- ``html``: a self-contained page (no scripts, no external resources), one
  ``<section>`` per signature.  Every string from a dump (panic messages,
  function names, command names, paths) goes through :func:`html.escape`.

Reads only :mod:`tsubaki_forensics.contracts.triage`; ``triage/report.py``
groups the records.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

from ..contracts.triage import SignatureGroup, TriageRecord
from .safe import safe_text

__all__ = ["RENDERERS", "groups_json", "record_json", "render_html", "render_json", "render_jsonl", "render_text"]


def _when(record: TriageRecord) -> str:
    """A dump's time for people: the kernel's clock, else the file's write time, said so."""
    if record.crash_time:
        return str(record.crash_time)
    if record.dumped_at:
        return f"{record.dumped_at} (file written; kernel clock unreadable)"
    return "?"


def record_json(r: TriageRecord) -> dict[str, Any]:
    """One dump's record as plain data (a line of ``--format jsonl``; docs/TRIAGE.md)."""
    out: dict[str, Any] = {
        "version": r.version,
        "dump_id": r.dump_id,
        "parts": list(r.parts),
        "kernel_release": r.kernel_release,
        "build_id": r.build_id,
        "panic_message": r.panic_message,
        "crashed_pid": r.crashed_pid,
        "crashed_command": r.crashed_command,
        "frames": list(r.frames),
        "signature": r.signature,
        "signature_id": r.signature_id,
        "normalized_message": r.normalized_message,
        "signature_frames": list(r.signature_frames),
        "crash_time": r.crash_time,
        "dumped_at": r.dumped_at,
        "debug_info": r.debug_info,
        "completeness": {"status": r.completeness.status, "complete": r.completeness.complete,
                         "details": list(r.completeness.details)},
        "error": r.error,
        "seconds": r.seconds,
    }
    if r.unreadable:  # only a file that is not a readable dump says so
        out["unreadable"] = True
    out["paths"] = list(r.paths)
    out["path"] = r.path
    return out


def _member(record: TriageRecord) -> dict[str, Any]:
    return {
        "dump_id": record.dump_id,
        "paths": list(record.paths),
        "kernel_release": record.kernel_release,
        "crash_time": record.crash_time,
        "dumped_at": record.dumped_at,
        "complete": record.completeness.complete,
        "error": record.error,
        "unreadable": record.unreadable,
    }


def groups_json(groups: Sequence[SignatureGroup]) -> list[dict[str, Any]]:
    """The ``--format json`` document: a list of groups."""
    out = []
    for g in groups:
        rep = g.representative
        out.append(
            {
                "signature": g.signature,
                "signature_id": g.signature_id,
                "message": g.message,
                "frames": list(g.frames),
                "count": g.count,
                "first_seen": g.first_seen,
                "last_seen": g.last_seen,
                "kernel_releases": g.kernel_releases,
                "dumps": [r.path for r in g.records],
                "representative": {
                    "dump_id": rep.dump_id,
                    "path": rep.path,
                    "panic_message": rep.panic_message,
                    "crashed_pid": rep.crashed_pid,
                    "crashed_command": rep.crashed_command,
                    "backtrace": list(rep.frames),
                    "completeness": record_json(rep)["completeness"],
                    "error": rep.error,
                },
                "members": [_member(r) for r in g.records],
            }
        )
    return out


def render_json(groups: Sequence[SignatureGroup], out: IO[str]) -> None:
    json.dump(groups_json(groups), out, indent=2)
    out.write("\n")


def render_jsonl(groups: Sequence[SignatureGroup], out: IO[str]) -> None:
    for g in groups:
        for record in g.records:
            out.write(json.dumps(record_json(record), sort_keys=True) + "\n")


def render_text(groups: Sequence[SignatureGroup], out: IO[str]) -> None:
    width = Console(file=out).width if out.isatty() else 160
    console = Console(file=out, highlight=False, soft_wrap=False, width=width)
    table = RichTable(box=box.SIMPLE_HEAD, title=f"{sum(g.count for g in groups)} dumps, {len(groups)} signatures")
    table.add_column("COUNT", justify="right", no_wrap=True)
    table.add_column("SIGNATURE (message, frames, representative dump)", overflow="fold")
    table.add_column("KERNELS", no_wrap=True)
    table.add_column("FIRST / LAST SEEN", no_wrap=True)
    for g in groups:
        frames = "".join(f"\n  {safe_text(f)}" for f in g.frames) or "\n  <no frames>"
        table.add_row(
            str(g.count),
            f"{safe_text(g.message)}{frames}\n  e.g. {safe_text(g.representative.path)}",
            "\n".join(safe_text(k) for k in g.kernel_releases) or "?",
            f"{g.first_seen or '?'}\n{g.last_seen or '?'}",
        )
    console.print(table, markup=False)
    failures = [r for g in groups for r in g.records if r.error]
    if failures:
        console.print(f"{len(failures)} could not be analysed or read:", markup=False)
        for r in failures:
            what = "unreadable" if r.unreadable else f"dump {r.dump_id}"
            console.print(safe_text(f"  {r.path} ({what}): {r.error}"), markup=False, soft_wrap=True)


_CSS = """
body{font-family:sans-serif;margin:2em;max-width:75em}
section{border:1px solid #ccc;border-radius:4px;padding:0 1em 1em;margin:1em 0}
section.failed{border-color:#c33}
table{border-collapse:collapse}td,th{text-align:left;padding:2px 8px;border-bottom:1px solid #eee}
code,pre{font-family:monospace}.count{font-size:140%}
"""


def _e(value: object) -> str:
    """Escaped for HTML, control and bidi characters shown as ``\\xNN`` (no raw ESC/BEL)."""
    return html.escape("" if value is None else safe_text(value), quote=True)


def _html_section(g: SignatureGroup) -> list[str]:
    rep = g.representative
    cls = "signature failed" if g.failed else "signature"
    lines = [
        f'<section class="{cls}" id="sig-{_e(g.signature_id)}" data-count="{g.count}">',
        f"<h2><span class=\"count\">{g.count}&times;</span> {_e(g.message)}</h2>",
        "<p>Frames: " + (" &larr; ".join(f"<code>{_e(f)}</code>" for f in g.frames) or "<em>none</em>") + "</p>",
        f"<p>Kernels: {_e(', '.join(g.kernel_releases) or '?')}; first seen {_e(g.first_seen or '?')},"
        f" last seen {_e(g.last_seen or '?')}</p>",
        f"<h3>Representative: <code>{_e(rep.path)}</code></h3>",
        f"<p>Panic message: <code>{_e(rep.panic_message or rep.error)}</code>;"
        f" crashed task: {_e(rep.crashed_command)} (pid {_e(rep.crashed_pid)})</p>",
        "<pre class=\"backtrace\">" + _e("\n".join(rep.frames or ["(no backtrace)"])) + "</pre>",
        "<table><tr><th>dump</th><th>kernel</th><th>crash time</th><th>complete</th><th>paths</th><th>error</th></tr>",
    ]
    for r in g.records:
        dump = "unreadable" if r.unreadable else r.dump_id
        lines.append(
            f"<tr><td><code>{_e(dump)}</code></td><td>{_e(r.kernel_release or '?')}</td>"
            f"<td>{_e(_when(r))}</td><td>{'yes' if r.completeness.complete else 'no'}</td>"
            f"<td>{'<br>'.join(f'<code>{_e(p)}</code>' for p in r.paths)}</td>"
            f"<td class=\"error\">{_e(r.error or '')}</td></tr>"
        )
    lines += ["</table>", "</section>"]
    return lines


def render_html(groups: Sequence[SignatureGroup], out: IO[str]) -> None:
    total = sum(g.count for g in groups)
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
        f"<title>tsubaki-forensics triage: {total} dumps, {len(groups)} signatures</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Crash triage: {total} dumps, {len(groups)} signatures</h1>",
        "<ol>" + "".join(f'<li><a href="#sig-{_e(g.signature_id)}">{g.count}&times; {_e(g.signature)}</a></li>' for g in groups) + "</ol>",
    ]
    for g in groups:
        lines += _html_section(g)
    lines.append("</body></html>")
    out.write("\n".join(lines) + "\n")


RENDERERS: dict[str, Callable[[Sequence[SignatureGroup], IO[str]], None]] = {
    "text": render_text,
    "json": render_json,
    "jsonl": render_jsonl,
    "html": render_html,
}
