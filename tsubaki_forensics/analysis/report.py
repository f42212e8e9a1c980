"""The whole answer of one ``analyze`` run (re-exported from the bottom layer).

:class:`Report` and :class:`DumpSummary` live in
:mod:`tsubaki_forensics.contracts.report`, below the renderers that read
them; this module, their old home, re-exports them.
"""

from __future__ import annotations

from ..contracts.report import DumpSummary, Report

__all__ = ["DumpSummary", "Report"]
