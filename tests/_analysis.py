"""How tests run the bundled analyses on a dump, as ``analyze`` does, and pick one result."""

from __future__ import annotations

from pathlib import Path

from tsubaki_forensics.analysis.session import analyze_dump, open_program
from tsubaki_forensics.plugin_system import Plugins

__all__ = ["analyze_file", "result_named"]


def analyze_file(path: Path, vmlinux: Path | None, only: list[str]):
    """The report of ``only`` (in that order) on the dump at ``path``, with ``vmlinux``."""
    plugins = Plugins.load()
    opened = open_program([path], plugins, vmlinux=vmlinux)
    try:
        return analyze_dump(opened, plugins, only=only)
    finally:
        opened.close()


def result_named(report, name: str):
    """The one result called ``name`` in ``report``."""
    (result,) = [r for r in report.results if r.name == name]
    return result
