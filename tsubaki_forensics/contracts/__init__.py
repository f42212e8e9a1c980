"""The bottom layer: the vocabulary every other layer of tsubaki-forensics shares.

Everything here imports only the standard library (and ``errors``), so any
layer may depend on it without reaching sideways or up (docs/ARCHITECTURE.md,
"Layers"; the import-linter contracts in pyproject.toml keep it so).

* :class:`Need`: what an analysis needs from the program besides memory.
* :class:`EventKind`: the kinds of the monitor's timeline and EVENT records,
  shared by the emulation (``monitor_model``) and the live monitor (``live``).
* :class:`MemoryRange`, :class:`MemoryView`, :class:`Dump`: what the drgn
  bridge, the analysis session and the hooks rely on in a reassembled dump.
* :class:`MemorySource`: what ``collect`` reads guest memory from.
* :class:`DebugInfoProvider`, :class:`DebugInfoRequest`, :class:`DebugInfoReport`,
  :class:`DebugInfoKind`: the chain of places the kernel's debug info comes from.
* :class:`AnalysisSpec`, :class:`AnalysisOption`, :class:`AnalysisContext`,
  ``AnalysisFunction``: how an analysis is declared (with its own options) and what it gets.
* :mod:`.results` and :mod:`.report`: what an analysis returns (``AnalysisResult``,
  ``Table``, placeholders) and the whole ``analyze`` answer (``Report``): the
  renderers read only these, so ``render/`` sits below the plugin system.
* :mod:`.collect`, :mod:`.inspect`, :mod:`.triage`: the typed results of those
  commands (``CollectSummary``, ``DumpDescription``, ``TriageRecord`` and
  ``SignatureGroup``), built in each command's own layer, rendered in ``render/``.
"""

from __future__ import annotations

from ..lazy import lazy_exports

# Each name is imported from its module on first use (issue 21): ``analyze``
# reaches the package through ``contracts.analysis`` and should not pay for the
# monitor's event kinds or the memory-source protocol.
_WHERE = {
    "AnalysisContext": "analysis", "AnalysisFunction": "analysis", "AnalysisOption": "analysis",
    "AnalysisSpec": "analysis",
    "DebugInfoKind": "debuginfo", "DebugInfoProvider": "debuginfo", "DebugInfoReport": "debuginfo",
    "DebugInfoRequest": "debuginfo",
    "Dump": "dump", "MemoryRange": "dump", "MemoryView": "dump",
    "EventKind": "events",
    "Need": "needs",
    "MemorySource": "sources",
}
__getattr__ = lazy_exports(__name__, _WHERE)

__all__ = ["Need", "EventKind", "MemoryRange", "MemoryView", "Dump", "MemorySource",
           "DebugInfoKind", "DebugInfoProvider", "DebugInfoReport", "DebugInfoRequest",
           "AnalysisContext", "AnalysisFunction", "AnalysisOption", "AnalysisSpec"]
