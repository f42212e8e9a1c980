"""The ``json`` renderer: one JSON document per run, schema in docs/JSON.md.

Values keep their types; placeholders become objects
(``{"not_collected": true, "address": 4096}`` or
``{"unreadable": "reason"}``) so a consumer can never mistake a missing value
for a real one.  Bump :data:`SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import json
from typing import IO, Any

from ..analysis.report import Report
from ..analysis.results import AnalysisResult, Completeness, NotCollected, Table, Unreadable, Value

__all__ = ["SCHEMA", "SCHEMA_VERSION", "value_to_json", "report_to_json", "render"]

SCHEMA = "tsubaki-forensics/analyze"
SCHEMA_VERSION = 1

_KINDS = {int: "integer", float: "number", str: "string", bool: "boolean"}


def value_to_json(value: Value) -> Any:
    """A cell or fact as JSON: plain for real values, an object for placeholders."""
    if isinstance(value, NotCollected):
        if value.excluded:  # left out by the dump level on purpose (format 1.4)
            return {"not_collected": True, "address": value.address, "excluded": value.excluded}
        return {"not_collected": True, "address": value.address}
    if isinstance(value, Unreadable):
        return {"unreadable": value.reason}
    return value


def _table(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "title": table.title,
        "columns": [{"name": c.name, "title": c.title, "type": _KINDS.get(c.kind, "string")} for c in table.columns],
        "rows": [[value_to_json(v) for v in row] for row in table.rows],
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
                "address": m.address,
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
        "facts": {k: value_to_json(v) for k, v in r.facts},
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


def render(report: Report, out: IO[str]) -> None:
    """Write the report as indented JSON followed by a newline."""
    json.dump(report_to_json(report), out, indent=2, ensure_ascii=False)
    out.write("\n")
