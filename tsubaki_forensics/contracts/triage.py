"""What ``triage`` found: one :class:`TriageRecord` per dump, grouped in :class:`SignatureGroup`\\ s.

Workers (local processes or Dask) return each record as plain JSON data
(``triage/scan.py``; it is also what the result cache stores);
``triage/run.py`` turns them into these types, ``triage/report.py`` groups
them and ``render/triage.py`` prints the groups as text, JSON, JSON lines or
HTML (docs/TRIAGE.md lists the fields).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SignatureGroup", "TriageCompleteness", "TriageRecord"]


@dataclass(frozen=True)
class TriageCompleteness:
    """How whole the panic analysis was: ``status`` ``ok``, ``partial`` or ``failed``, and why not."""

    status: str
    complete: bool
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class TriageRecord:
    """One dump as triage sees it (a failed or unreadable one too: ``error`` says why).

    :param dump_id: ``None`` for a file that is not a readable dump (``unreadable``).
    :param parts: the files analysed; ``paths``: every file of the dump,
        copies included, ``path`` the first (set once the run has found them all).
    :param frames: the panicking CPU's backtrace; ``signature_frames`` the
        meaningful ones the signature keeps.
    :param crash_time: the kernel's wall clock at the panic (ISO, UTC);
        ``dumped_at`` when the file was written, a fallback.
    :param debug_info: what the types came from (a vmlinux path, ``symbol pack``,
        ``self-contained (BTF)``).
    """

    version: int
    dump_id: str | None
    parts: tuple[str, ...]
    signature: str
    signature_id: str
    normalized_message: str
    signature_frames: tuple[str, ...]
    completeness: TriageCompleteness
    kernel_release: str | None = None
    build_id: str | None = None
    panic_message: str | None = None
    crashed_pid: int | str | None = None
    crashed_command: str | None = None
    frames: tuple[str, ...] = ()
    crash_time: str | None = None
    dumped_at: str | None = None
    debug_info: str | None = None
    error: str | None = None
    seconds: float = 0.0
    unreadable: bool = False
    paths: tuple[str, ...] = ()
    path: str | None = None

    @property
    def seen(self) -> str | None:
        """When the crash happened: the kernel's clock, else when the dump was written (ISO, sortable)."""
        return self.crash_time or self.dumped_at


@dataclass(frozen=True)
class SignatureGroup:
    """All the dumps that share one signature.

    :param representative: the record shown for the group: a complete
        analysis if there is one, else the earliest crash.
    :param records: the members, earliest first.
    """

    signature: str
    signature_id: str
    message: str
    frames: tuple[str, ...]
    records: tuple[TriageRecord, ...]
    representative: TriageRecord

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def first_seen(self) -> str | None:
        times = [t for t in (r.seen for r in self.records) if t]
        return min(times) if times else None

    @property
    def last_seen(self) -> str | None:
        times = [t for t in (r.seen for r in self.records) if t]
        return max(times) if times else None

    @property
    def kernel_releases(self) -> list[str]:
        return sorted({r.kernel_release for r in self.records if r.kernel_release})

    @property
    def failed(self) -> bool:
        return bool(self.representative.error)
