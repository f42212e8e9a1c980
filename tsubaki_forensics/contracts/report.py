"""The whole answer of one ``analyze`` run, handed to a renderer."""

from __future__ import annotations

from dataclasses import dataclass, field

from .results import AnalysisResult

__all__ = ["DumpSummary", "Report"]


@dataclass(frozen=True)
class DumpSummary:
    """What the report says about the dump and the debug info it used.

    :param present_bytes: bytes of physical memory in the dump (data + zero).
    :param expected_bytes: bytes the dump's memory map says it should hold
        (None: a file before format 1.3, the total is unknown).
    :param complete: True only if every byte of the map is present; None unknown.
    :param completeness_percent: present / expected, rounded down (None: unknown).
    :param completeness: one sentence saying what the figure is measured against.
    :param problems: human-readable dump problems (lost regions, truncation).
    """

    paths: tuple[str, ...]
    dump_id: str | None = None
    kernel_release: str | None = None
    build_id: str | None = None
    vmlinux: str | None = None
    present_bytes: int | None = None
    expected_bytes: int | None = None
    complete: bool | None = None
    completeness_percent: float | None = None
    completeness: str | None = None
    registers: bool = False
    problems: tuple[str, ...] = ()
    #: makedumpfile's -d level the dump was written at (None: no memory map), and
    #: the bytes it left out on purpose (excluded, never missing or damage).
    dump_level: int | None = None
    excluded_bytes: int = 0


@dataclass(frozen=True)
class Report:
    """One dump's summary and the result of every analysis that was asked for."""

    dump: DumpSummary
    results: tuple[AnalysisResult, ...]
    warnings: tuple[str, ...] = field(default=())
