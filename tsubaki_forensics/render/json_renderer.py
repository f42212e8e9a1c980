"""The ``json`` renderer: one JSON document per run, schema in docs/JSON.md.

Values keep their types; placeholders become objects
(``{"not_collected": true, "address": "0x1000"}`` or
``{"unreadable": "reason"}``) so a consumer can never mistake a missing value
for a real one.  Bump :data:`SCHEMA_VERSION` on any incompatible change.

Schema 2 (volatility3's ``-r json`` is the model): table rows are objects
keyed by snake_case column names, fact keys are snake_case, and addresses
(``fmt="address"`` columns, placeholder and completeness addresses) are
``"0x..."`` strings, because a 64-bit kernel address as a JSON number is
corrupted by jq 1.6 and JavaScript (doubles: 53 bits of mantissa).
"""

from __future__ import annotations

import json
from typing import IO, Any

from ..contracts.report import Report
from ..contracts.results import AnalysisResult, Completeness, NotCollected, Table, Unreadable, Value, fact_key

__all__ = ["SCHEMA", "SCHEMA_VERSION", "value_to_json", "report_to_json", "dumps", "render", "snake_case", "address_to_json"]

SCHEMA = "tsubaki-forensics/analyze"
SCHEMA_VERSION = 2

_KINDS = {int: "integer", float: "number", str: "string", bool: "boolean"}


#: ``"panic message"`` -> ``"panic_message"``: fact keys and column names (one rule, in contracts).
snake_case = fact_key


def address_to_json(address: int | None) -> str | None:
    """An address as ``"0x..."`` (lower-case hex, no padding), so that no 64-bit value is a JSON number."""
    return None if address is None else f"0x{address:x}"


def value_to_json(value: Value, *, address: bool = False) -> Any:
    """A cell or fact as JSON: plain for real values (``"0x..."`` when ``address``), an object for placeholders."""
    if isinstance(value, NotCollected):
        if value.excluded:  # left out by the dump level on purpose (format 1.4)
            return {"not_collected": True, "address": address_to_json(value.address), "excluded": value.excluded}
        return {"not_collected": True, "address": address_to_json(value.address)}
    if isinstance(value, Unreadable):
        return {"unreadable": value.reason}
    if address and isinstance(value, int) and not isinstance(value, bool):
        return address_to_json(value)
    return value


def _column_type(column: Any) -> str:
    if column.fmt == "address" and column.kind is int:
        return "address"
    return _KINDS.get(column.kind, "string")


#: The types of a cell :func:`value_to_json` returns as it is (exactly these: a subclass takes the long way).
_PLAIN = frozenset({int, float, str, bool, type(None)})


def _table(table: Table) -> dict[str, Any]:
    keys = [snake_case(c.name) for c in table.columns]
    addresses = [c.fmt == "address" and c.kind is int for c in table.columns]
    spots = [i for i, a in enumerate(addresses) if a]
    rows = []
    for row in table.rows:
        if _PLAIN.issuperset(map(type, row)):  # most rows: only the address cells change
            cells = list(row)
            for i in spots:
                if type(cells[i]) is int:
                    cells[i] = f"0x{cells[i]:x}"
            rows.append(dict(zip(keys, cells)))
        else:
            rows.append({k: value_to_json(v, address=a) for k, v, a in zip(keys, row, addresses)})
    return {
        "name": table.name,
        "title": table.title,
        "columns": [{"name": k, "title": c.title, "type": _column_type(c)} for k, c in zip(keys, table.columns)],
        "rows": rows,
    }


def _completeness(c: Completeness) -> dict[str, Any]:
    return {
        "unit": c.unit,
        "readable": c.readable,
        "total": c.total,
        "complete": c.complete,
        "summary": c.summary(),
        "missing": [
            {
                "what": m.what,
                "group": m.group,
                "address": address_to_json(m.address),
                "reason": "excluded" if m.excluded else "not_collected" if m.not_collected else "unreadable",
            }
            for m in c.missing
        ],
    }


def _result(r: AnalysisResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "title": r.title,
        "status": r.status.value,
        "error": r.error,
        "seconds": round(r.seconds, 6),
        "facts": {snake_case(k): value_to_json(v) for k, v in r.facts},
        "completeness": [_completeness(c) for c in r.completeness],
        "tables": [_table(t) for t in r.tables],
        "notes": list(r.notes),
    }


def report_to_json(report: Report) -> dict[str, Any]:
    """The whole report as a JSON-ready dictionary."""
    d = report.dump
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "dump": {
            "paths": list(d.paths),
            "dump_id": d.dump_id,
            "kernel_release": d.kernel_release,
            "build_id": d.build_id,
            "vmlinux": d.vmlinux,
            "present_bytes": d.present_bytes,
            "expected_bytes": d.expected_bytes,
            "dump_level": d.dump_level,
            "excluded_bytes": d.excluded_bytes,
            "complete": d.complete,
            "completeness_percent": d.completeness_percent,
            "completeness": d.completeness,
            "registers": d.registers,
            "problems": list(d.problems),
        },
        "warnings": list(report.warnings),
        "analyses": [_result(r) for r in report.results],
    }


#: Stands for a table's rows while the rest of the document is encoded (JSON: "\u0000tsubaki-forensics rows N").
_MARK = "\x00tsubaki-forensics rows "
_QUOTED_MARK = json.dumps(_MARK)[:-1]
_SCALARS = (str, int, float)


def dumps(doc: dict[str, Any]) -> str:
    """``json.dumps(doc, indent=2, ensure_ascii=False)`` of a :func:`report_to_json`
    document, the same text, with the tables' rows encoded by the C encoder.

    Why: ``indent`` makes ``json`` use its pure-Python encoder, 4-7 ms a run
    on the lab's crashes (issue 21), and the rows are most of the document.
    The document is encoded with each table's rows replaced by a mark, then
    each mark by :func:`_rows_json`.  If a string of the dump holds the mark,
    the plain ``json.dumps`` is used.
    """
    tables = [t for r in doc["analyses"] for t in r["tables"] if t["rows"]]
    held = [t["rows"] for t in tables]
    try:
        for i, t in enumerate(tables):
            t["rows"] = f"{_MARK}{i}"
        text = json.dumps(doc, indent=2, ensure_ascii=False)
    finally:
        for t, rows in zip(tables, held):
            t["rows"] = rows
    parts = text.split(_QUOTED_MARK)
    if len(parts) != len(held) + 1:
        return json.dumps(doc, indent=2, ensure_ascii=False)
    out = [parts[0]]
    for before, part in zip(parts, parts[1:]):
        number, rest = part.split('"', 1)
        line = before[before.rfind("\n") + 1 :]  # '<pad>"rows": '
        out += [_rows_json(held[int(number)], line[: len(line) - len(line.lstrip(" "))]), rest]
    return "".join(out)


def _rows_json(rows: list[dict[str, Any]], pad: str) -> str:
    """``rows`` (not empty) as ``json.dumps(indent=2)`` writes them as the value of a key indented by ``pad``.

    Rows of plain values are one call of the C encoder with each cell's
    separator (comma, newline, indentation) as its item separator: what it
    writes differs from the indented text only in the line breaks around each
    row's braces, and a ``},<newline>{`` is always a boundary between two rows
    (a string never holds a raw newline).  Rows with a placeholder (an
    object) or no cell: the pure-Python encoder, re-indented.
    """
    if not all(row and all(v is None or isinstance(v, _SCALARS) for v in row.values()) for row in rows):
        return json.dumps(rows, indent=2, ensure_ascii=False).replace("\n", "\n" + pad)
    inner, cell = pad + "  ", pad + "    "
    text = json.JSONEncoder(ensure_ascii=False, separators=(",\n" + cell, ": ")).encode(rows)
    text = text.replace("},\n" + cell + "{", "\n" + inner + "},\n" + inner + "{\n" + cell)
    return "[\n" + inner + "{\n" + cell + text[2:-2] + "\n" + inner + "}\n" + pad + "]"


def render(report: Report, out: IO[str]) -> None:
    """Write the report as indented JSON followed by a newline (:func:`dumps`).

    One ``write`` of the whole text: ``json.dump`` writes every token
    separately (18,000 writes for one lab crash's report, ~1/3 of the
    renderer's time, issue 21).  The text is held once in memory: 150-180 KiB
    on the lab's crashes, a few MiB for a machine of ten thousand tasks.
    """
    out.write(dumps(report_to_json(report)) + "\n")
