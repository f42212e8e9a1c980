"""How an analysis is declared and what it receives when it runs (re-exported).

The types live in the bottom layer, :mod:`tsubaki_forensics.contracts.analysis`
(the plugin manager, below this layer, builds the specs); this module, their
old home, re-exports them: plugins import them from here and from
``tsubaki_forensics.analysis``.
"""

from __future__ import annotations

from ..contracts.analysis import AnalysisContext, AnalysisFunction, AnalysisOption, AnalysisSpec
from ..contracts.needs import Need  # re-exported: plugins import Need from here and from analysis

__all__ = ["Need", "AnalysisContext", "AnalysisFunction", "AnalysisOption", "AnalysisSpec"]
