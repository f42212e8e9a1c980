"""How an analysis is declared and what it receives when it runs.

A plugin registers an :class:`AnalysisSpec` through the
``tsubaki_register_analyses`` hook; the runner calls its function with an
:class:`AnalysisContext` and gets back an
:class:`~tsubaki_forensics.analysis.results.AnalysisResult`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..contracts.needs import Need  # re-exported: plugins import Need from here and from analysis

if TYPE_CHECKING:
    import drgn

    from .results import AnalysisResult

__all__ = ["Need", "AnalysisContext", "AnalysisFunction", "AnalysisSpec"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class AnalysisContext:
    """What an analysis gets: the program, the dump it came from, options.

    :param prog: the ``drgn.Program`` built by the drgn bridge.
    :param dump: the dump (a :class:`tsubaki_forensics.tsd.Dump` or another
        object with the same attributes) or ``None`` when the program did not
        come from a dump (tests, drgn's own ELF path).
    :param options: analysis options from the command line (``tail``).
    :param capabilities: the :class:`Need` values this program satisfies.
    """

    prog: drgn.Program
    dump: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)
    capabilities: frozenset[Need] = frozenset(Need)

    def option(self, name: str, default: Any = None) -> Any:
        """One option, or ``default`` when it was not given."""
        value = self.options.get(name)
        return default if value is None else value


AnalysisFunction = Callable[[AnalysisContext], "AnalysisResult"]


@dataclass(frozen=True)
class AnalysisSpec:
    """A named analysis as a plugin registered it."""

    name: str
    function: AnalysisFunction
    description: str
    needs: frozenset[Need] = frozenset()
    plugin: str = "?"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"analysis name {self.name!r} must match {_NAME.pattern}")
        if not callable(self.function):
            raise TypeError(f"analysis {self.name!r}: function {self.function!r} is not callable")
        if not self.description.strip():
            raise ValueError(f"analysis {self.name!r} needs a description")

    def missing_needs(self, capabilities: frozenset[Need]) -> list[Need]:
        """The needs this program does not satisfy, in a stable order."""
        return sorted(self.needs - capabilities, key=lambda n: n.value)
