"""Group triage records by signature, and render the groups for people and programs.

Grouping is pure (records in, :class:`Group` list out), so it is tested
without a kernel.  Renderers write to a stream:

- ``text``: a rich table, one row per signature;
- ``json``: a list of groups (docs/TRIAGE.md lists the fields);
- ``jsonl``: one line per *dump* (its record plus ``signature``), for
  pipelines that regroup or load into a database;
- ``html``: a self-contained page (no scripts, no external resources), one
  ``<section>`` per signature.  Every string from a dump (panic messages,
  function names, command names, paths) goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

from ..render.safe import safe_text

__all__ = ["Group", "group_records", "groups_json", "RENDERERS", "render_text", "render_json", "render_jsonl", "render_html"]


@dataclass(frozen=True)
class Group:
    """All the dumps that share one signature.

    :param representative: the record shown for the group: a complete
        analysis if there is one, else the earliest crash.
    :param records: the members, earliest first.
    """

    signature: str
    signature_id: str
    message: str
    frames: tuple[str, ...]
    records: tuple[dict[str, Any], ...]
    representative: dict[str, Any]

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def first_seen(self) -> str | None:
        times = [t for t in map(_seen, self.records) if t]
        return min(times) if times else None

    @property
    def last_seen(self) -> str | None:
        times = [t for t in map(_seen, self.records) if t]
        return max(times) if times else None

    @property
    def kernel_releases(self) -> list[str]:
        return sorted({r["kernel_release"] for r in self.records if r.get("kernel_release")})

    @property
    def failed(self) -> bool:
        return bool(self.representative.get("error"))


def _seen(record: dict[str, Any]) -> str | None:
    """When a dump's crash happened: the kernel's clock, else when the dump was written (ISO, sortable)."""
    return record.get("crash_time") or record.get("dumped_at")


def _order(record: dict[str, Any]) -> tuple:
    return (_seen(record) or "~", record.get("dump_id") or "", record.get("path") or "")


def _when(record: dict[str, Any]) -> str:
    """A dump's time for people: the kernel's clock, else the file's write time, said so."""
    if record.get("crash_time"):
        return str(record["crash_time"])
    if record.get("dumped_at"):
        return f"{record['dumped_at']} (file written; kernel clock unreadable)"
    return "?"


def group_records(records: Iterable[dict[str, Any]]) -> list[Group]:
    """Pure: group records by ``signature``; most frequent first, then by signature."""
    by_signature: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_signature.setdefault(record["signature"], []).append(record)
    groups = []
    for signature, members in by_signature.items():
        members.sort(key=_order)
        complete = [r for r in members if r.get("completeness", {}).get("complete")]
        representative = (complete or members)[0]
        groups.append(
            Group(
                signature=signature,
                signature_id=representative["signature_id"],
                message=representative["normalized_message"],
                frames=tuple(representative["signature_frames"]),
                records=tuple(members),
                representative=representative,
            )
        )
    groups.sort(key=lambda g: (g.failed, -g.count, g.signature))
    return groups


def _member(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "dump_id": record["dump_id"],
        "paths": record["paths"],
        "kernel_release": record.get("kernel_release"),
        "crash_time": record.get("crash_time"),
        "dumped_at": record.get("dumped_at"),
        "complete": record.get("completeness", {}).get("complete", False),
        "error": record.get("error"),
        "unreadable": bool(record.get("unreadable")),
    }


def groups_json(groups: Sequence[Group]) -> list[dict[str, Any]]:
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
                "dumps": [r["path"] for r in g.records],
                "representative": {
                    "dump_id": rep["dump_id"],
                    "path": rep["path"],
                    "panic_message": rep.get("panic_message"),
                    "crashed_pid": rep.get("crashed_pid"),
                    "crashed_command": rep.get("crashed_command"),
                    "backtrace": rep.get("frames", []),
                    "completeness": rep.get("completeness"),
                    "error": rep.get("error"),
                },
                "members": [_member(r) for r in g.records],
            }
        )
    return out


def render_json(groups: Sequence[Group], out: IO[str]) -> None:
    json.dump(groups_json(groups), out, indent=2)
    out.write("\n")


def render_jsonl(groups: Sequence[Group], out: IO[str]) -> None:
    for g in groups:
        for record in g.records:
            out.write(json.dumps(record, sort_keys=True) + "\n")


def render_text(groups: Sequence[Group], out: IO[str]) -> None:
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
            f"{safe_text(g.message)}{frames}\n  e.g. {safe_text(g.representative['path'])}",
            "\n".join(safe_text(k) for k in g.kernel_releases) or "?",
            f"{g.first_seen or '?'}\n{g.last_seen or '?'}",
        )
    console.print(table, markup=False)
    failures = [r for g in groups for r in g.records if r.get("error")]
    if failures:
        console.print(f"{len(failures)} could not be analysed or read:", markup=False)
        for r in failures:
            what = "unreadable" if r.get("unreadable") else f"dump {r.get('dump_id')}"
            console.print(safe_text(f"  {r['path']} ({what}): {r['error']}"), markup=False, soft_wrap=True)


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


def _html_section(g: Group) -> list[str]:
    rep = g.representative
    cls = "signature failed" if g.failed else "signature"
    lines = [
        f'<section class="{cls}" id="sig-{_e(g.signature_id)}" data-count="{g.count}">',
        f"<h2><span class=\"count\">{g.count}&times;</span> {_e(g.message)}</h2>",
        "<p>Frames: " + (" &larr; ".join(f"<code>{_e(f)}</code>" for f in g.frames) or "<em>none</em>") + "</p>",
        f"<p>Kernels: {_e(', '.join(g.kernel_releases) or '?')}; first seen {_e(g.first_seen or '?')},"
        f" last seen {_e(g.last_seen or '?')}</p>",
        f"<h3>Representative: <code>{_e(rep['path'])}</code></h3>",
        f"<p>Panic message: <code>{_e(rep.get('panic_message') or rep.get('error'))}</code>;"
        f" crashed task: {_e(rep.get('crashed_command'))} (pid {_e(rep.get('crashed_pid'))})</p>",
        "<pre class=\"backtrace\">" + _e("\n".join(rep.get("frames") or ["(no backtrace)"])) + "</pre>",
        "<table><tr><th>dump</th><th>kernel</th><th>crash time</th><th>complete</th><th>paths</th><th>error</th></tr>",
    ]
    for r in g.records:
        dump = "unreadable" if r.get("unreadable") else r.get("dump_id")
        lines.append(
            f"<tr><td><code>{_e(dump)}</code></td><td>{_e(r.get('kernel_release') or '?')}</td>"
            f"<td>{_e(_when(r))}</td><td>{'yes' if r.get('completeness', {}).get('complete') else 'no'}</td>"
            f"<td>{'<br>'.join(f'<code>{_e(p)}</code>' for p in r['paths'])}</td>"
            f"<td class=\"error\">{_e(r.get('error') or '')}</td></tr>"
        )
    lines += ["</table>", "</section>"]
    return lines


def render_html(groups: Sequence[Group], out: IO[str]) -> None:
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


RENDERERS: dict[str, Callable[[Sequence[Group], IO[str]], None]] = {
    "text": render_text,
    "json": render_json,
    "jsonl": render_jsonl,
    "html": render_html,
}
