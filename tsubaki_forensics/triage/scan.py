"""Analyse one dump for triage: a small JSON-able record, never an exception.

The record is built with the same public calls ``analyze`` uses
(:func:`~tsubaki_forensics.analysis.session.open_program` and
:func:`~tsubaki_forensics.analysis.session.analyze_dump`, only the bundled
``panic`` analysis), so triage sees exactly what ``analyze`` shows.  It runs
in worker processes (local or Dask): arguments and result are plain data,
and a dump that cannot be analysed becomes a record with ``error`` set, so one
bad dump never stops a fleet run.

The time of the crash is the kernel's own wall clock at the panic, as
crash's ``DATE`` and drgn's ``ktime_get_real_seconds`` read it: ``CRASHTIME``
from VMCOREINFO when kdump wrote one, else ``tk_core.timekeeper.xtime_sec``
(updated every tick).  It works without a vmlinux too (the self-contained
object finder types ``tk_core``).  ``dumped_at`` is when the ``.tsd`` file
was written, shown only as a fallback and said to be one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

from ..contracts.results import fact_key
from ..contracts.triage import TriageCompleteness, TriageRecord
from .signature import DEFAULT_DEPTH, Signature, make_signature, normalize_message

__all__ = ["RECORD_VERSION", "PANIC_FACTS", "check_panic_facts", "ScanOptions", "scan_dump", "failed_record", "unreadable_record", "iso_utc", "as_record"]

#: Bumped when the fields of a record change; older cached records are redone.
RECORD_VERSION = 1
#: The facts of the ``panic`` analysis a record is made of, by key: whichever
#: plugin provides ``panic`` must declare them (``register(..., facts=[...])``).
PANIC_FACTS = ("panic_message", "crashed_pid", "crashed_command")


class ScanOptions(TypedDict, total=False):
    """What changes a record (and so is part of the cache key)."""

    depth: int  # meaningful frames in the signature
    self_contained: bool  # the dump's own BTF, never a vmlinux
    debug_dirs: list[str]  # searched for a vmlinux before the defaults


def iso_utc(seconds: float | None) -> str | None:
    """``2026-11-26T07:22:24Z`` for a Unix time, ``None`` for ``None``."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _crash_time(prog: Any) -> float | None:
    """The kernel's realtime clock (seconds) at its last tick, or ``None`` if unreadable."""
    from drgn.helpers.linux.timekeeping import ktime_get_real_seconds

    try:
        seconds = ktime_get_real_seconds(prog).value_()
    except Exception:  # drgn: LookupError, FaultError, ObjectAbsentError; page not collected
        return None
    return float(seconds) if seconds > 0 else None


def failed_record(dump_id: str, parts: Sequence[str], created_ns: int, error: str) -> dict[str, Any]:
    """The record of a dump that could not be analysed: grouped by its normalised error."""
    reason = error.splitlines()[0] if error else "unknown error"
    generic = reason
    for part in parts:  # "x.tsd: truncated" and "y.tsd: truncated" are one failure
        generic = generic.replace(str(part), "<dump>")
    signature = Signature(f"<analysis failed: {normalize_message(generic)}>", ())
    return {
        "version": RECORD_VERSION,
        "dump_id": dump_id,
        "parts": list(parts),
        "kernel_release": None,
        "build_id": None,
        "panic_message": None,
        "crashed_pid": None,
        "crashed_command": None,
        "frames": [],
        **_signature_fields(signature),
        "crash_time": None,
        "dumped_at": iso_utc(created_ns / 1e9) if created_ns else None,  # 0: the file says not (ELF)
        "debug_info": None,
        "completeness": {"status": "failed", "complete": False, "details": [reason]},
        "error": reason,
        "seconds": 0.0,
    }


def unreadable_record(path: str, reason: str) -> dict[str, Any]:
    """The record of a file that is not a readable ``.tsd`` (no header, so no dump id).

    It is grouped like a failed analysis, under ``<unreadable: normalised
    reason>``, so every output format lists it with its error; ``dump_id``
    is ``None`` and ``unreadable`` is ``True``.
    """
    generic = normalize_message(reason.replace(path, "<file>"))
    record = failed_record("", [path], 0, reason)
    record.update(_signature_fields(Signature(f"<unreadable: {generic}>", ())))
    record.update(dump_id=None, dumped_at=None, unreadable=True, paths=[path], path=path)
    return record


def _signature_fields(signature: Signature) -> dict[str, Any]:
    return {
        "signature": signature.key,
        "signature_id": signature.id,
        "normalized_message": signature.message,
        "signature_frames": list(signature.frames),
    }


def _plain(value: Any) -> Any:
    """A fact's value as JSON data (placeholders become their text)."""
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


def check_panic_facts(spec: Any) -> None:
    """Refuse (:class:`TsubakiError`, one line) a ``panic`` analysis that does not
    declare the facts triage reads: a record made without them would group
    every dump under "no panic message" instead of saying why."""
    from ..errors import TsubakiError

    if spec is None:
        raise TsubakiError("no analysis 'panic' is registered (is the bundled plugin disabled?): triage reads its facts")
    lacking = [key for key in PANIC_FACTS if key not in spec.facts]
    if lacking:
        raise TsubakiError(f"analysis 'panic' (plugin {spec.plugin!r}) does not declare the facts triage reads: "
                           f"{', '.join(lacking)} (register(..., facts=[...]), docs/PLUGINS.md)")


def scan_dump(dump_id: str, parts: Sequence[str], created_ns: int, options: ScanOptions | None = None) -> dict[str, Any]:
    """Analyse the dump made of ``parts`` and return its triage record (see docs/TRIAGE.md)."""
    from ..analysis.session import analyze_dump, open_program
    from ..drgn_bridge.debuginfo import DEFAULT_DEBUG_DIRS
    from ..plugin_system import get_plugins

    options = ScanOptions(**(options or {}))
    depth = int(options.get("depth", DEFAULT_DEPTH))
    debug_dirs = [Path(d) for d in options.get("debug_dirs", ())] + list(DEFAULT_DEBUG_DIRS)
    t0 = time.perf_counter()
    try:
        plugins = get_plugins()
        check_panic_facts(plugins.analyses().get("panic"))
        opened = open_program([Path(p) for p in parts], plugins, debug_dirs=debug_dirs,
                              self_contained=bool(options.get("self_contained")))
        try:
            report = analyze_dump(opened, plugins, only=["panic"])
            crash_time = _crash_time(opened.program.prog)
            used = opened.program.debug_info  # the vmlinux path, "symbol pack" or "self-contained (BTF)"
            debug_info = used.label if used is not None else None
        finally:
            opened.close()
    except Exception as e:  # one bad dump is a record, not the end of the run
        record = failed_record(dump_id, parts, created_ns, str(e) or type(e).__name__)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        return record
    panic = report.results[0]
    facts = {fact_key(name): value for name, value in panic.facts}
    try:
        rows = panic.table("backtrace").dicts()
    except KeyError:
        rows = []
    frames = [r["function"] or r["symbol"] for r in rows]
    message = facts.get("panic_message")
    message = message if isinstance(message, str) else None
    signature = make_signature(message, frames, depth)
    details = [c.summary() for c in panic.completeness if not c.complete]
    details += list(report.dump.problems)
    if panic.error:
        details.append(panic.error)
    if not isinstance(facts.get("panic_message"), str):
        details.append(f"panic message: {_plain(facts.get('panic_message')) or 'none found in the log'}")
    status = panic.status.value
    return {
        "version": RECORD_VERSION,
        "dump_id": dump_id,
        "parts": list(parts),
        "kernel_release": report.dump.kernel_release,
        "build_id": report.dump.build_id,
        "panic_message": message,
        "crashed_pid": _plain(facts.get("crashed_pid")),
        "crashed_command": _plain(facts.get("crashed_command")),
        "frames": [f or "?" for f in frames],
        **_signature_fields(signature),
        "crash_time": iso_utc(crash_time),
        "dumped_at": iso_utc(created_ns / 1e9) if created_ns else None,  # 0: the file says not (ELF)
        "debug_info": debug_info,
        "completeness": {"status": status, "complete": status == "ok" and not details, "details": details},
        "error": None,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def as_record(data: dict[str, Any]) -> TriageRecord:
    """The typed record of a worker's (or the cache's) plain record.

    Records cross process boundaries (Dask, the local pool) and the SQLite
    cache as JSON data; the run turns each into a :class:`TriageRecord`
    before it is grouped and rendered.
    """
    c = data.get("completeness") or {}
    return TriageRecord(
        version=data.get("version", RECORD_VERSION),
        dump_id=data.get("dump_id"),
        parts=tuple(data.get("parts") or ()),
        signature=data["signature"],
        signature_id=data["signature_id"],
        normalized_message=data["normalized_message"],
        signature_frames=tuple(data.get("signature_frames") or ()),
        completeness=TriageCompleteness(c.get("status", "failed"), bool(c.get("complete", False)),
                                        tuple(c.get("details") or ())),
        kernel_release=data.get("kernel_release"),
        build_id=data.get("build_id"),
        panic_message=data.get("panic_message"),
        crashed_pid=data.get("crashed_pid"),
        crashed_command=data.get("crashed_command"),
        frames=tuple(data.get("frames") or ()),
        crash_time=data.get("crash_time"),
        dumped_at=data.get("dumped_at"),
        debug_info=data.get("debug_info"),
        error=data.get("error"),
        seconds=data.get("seconds", 0.0),
        unreadable=bool(data.get("unreadable")),
        paths=tuple(data.get("paths") or ()),
        path=data.get("path"),
    )
