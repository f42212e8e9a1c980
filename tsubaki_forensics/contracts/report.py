"""The whole answer of one ``analyze`` run, handed to a renderer."""

from __future__ import annotations

from .frozen import Frozen
from .results import AnalysisResult

__all__ = ["DumpSummary", "Report"]


class DumpSummary(Frozen):
    """What the report says about the dump and the debug info it used.

    :param present_bytes: bytes of physical memory in the dump (data + zero).
    :param expected_bytes: bytes the dump's memory map says it should hold
        (None: a file before format 1.3, the total is unknown).
    :param complete: True only if every byte of the map is present; None unknown.
    :param completeness_percent: present / expected, rounded down (None: unknown).
    :param completeness: one sentence saying what the figure is measured against.
    :param problems: human-readable dump problems (lost regions, truncation).
    :param dump_level: makedumpfile's -d level the dump was written at (None: no
        memory map); ``excluded_bytes``: the bytes it left out on purpose
        (excluded, never missing or damage).
    """

    _fields = (
        "paths", "dump_id", "kernel_release", "build_id", "vmlinux", "present_bytes", "expected_bytes", "complete",
        "completeness_percent", "completeness", "registers", "problems", "dump_level", "excluded_bytes",
    )
    paths: tuple[str, ...]
    dump_id: str | None
    kernel_release: str | None
    build_id: str | None
    vmlinux: str | None
    present_bytes: int | None
    expected_bytes: int | None
    complete: bool | None
    completeness_percent: float | None
    completeness: str | None
    registers: bool
    problems: tuple[str, ...]
    dump_level: int | None
    excluded_bytes: int

    def __init__(self, paths: tuple[str, ...], dump_id: str | None = None, kernel_release: str | None = None,
                 build_id: str | None = None, vmlinux: str | None = None, present_bytes: int | None = None,
                 expected_bytes: int | None = None, complete: bool | None = None,
                 completeness_percent: float | None = None, completeness: str | None = None,
                 registers: bool = False, problems: tuple[str, ...] = (), dump_level: int | None = None,
                 excluded_bytes: int = 0) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "paths", paths)
        setattr_(self, "dump_id", dump_id)
        setattr_(self, "kernel_release", kernel_release)
        setattr_(self, "build_id", build_id)
        setattr_(self, "vmlinux", vmlinux)
        setattr_(self, "present_bytes", present_bytes)
        setattr_(self, "expected_bytes", expected_bytes)
        setattr_(self, "complete", complete)
        setattr_(self, "completeness_percent", completeness_percent)
        setattr_(self, "completeness", completeness)
        setattr_(self, "registers", registers)
        setattr_(self, "problems", problems)
        setattr_(self, "dump_level", dump_level)
        setattr_(self, "excluded_bytes", excluded_bytes)


class Report(Frozen):
    """One dump's summary and the result of every analysis that was asked for."""

    _fields = ("dump", "results", "warnings")
    dump: DumpSummary
    results: tuple[AnalysisResult, ...]
    warnings: tuple[str, ...]

    def __init__(self, dump: DumpSummary, results: tuple[AnalysisResult, ...], warnings: tuple[str, ...] = ()) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "dump", dump)
        setattr_(self, "results", results)
        setattr_(self, "warnings", warnings)
