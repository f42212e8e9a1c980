"""Group triage records by signature (pure: records in, :class:`SignatureGroup` list out).

Tested without a kernel.  The groups are rendered by ``render/triage.py``
(text, json, jsonl, html); its renderers are re-exported here, their old home.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..contracts.triage import SignatureGroup, TriageRecord
from ..render.triage import RENDERERS, groups_json, record_json, render_html, render_json, render_jsonl, render_text

__all__ = ["Group", "group_records", "groups_json", "record_json", "RENDERERS", "render_text", "render_json",
           "render_jsonl", "render_html"]

#: the old name of :class:`SignatureGroup`
Group = SignatureGroup


def _order(record: TriageRecord) -> tuple:
    return (record.seen or "~", record.dump_id or "", record.path or "")


def group_records(records: Iterable[TriageRecord]) -> list[SignatureGroup]:
    """Pure: group records by ``signature``; most frequent first, then by signature."""
    by_signature: dict[str, list[TriageRecord]] = {}
    for record in records:
        by_signature.setdefault(record.signature, []).append(record)
    groups = []
    for signature, members in by_signature.items():
        members.sort(key=_order)
        complete = [r for r in members if r.completeness.complete]
        representative = (complete or members)[0]
        groups.append(
            SignatureGroup(
                signature=signature,
                signature_id=representative.signature_id,
                message=representative.normalized_message,
                frames=tuple(representative.signature_frames),
                records=tuple(members),
                representative=representative,
            )
        )
    groups.sort(key=lambda g: (g.failed, -g.count, g.signature))
    return groups
