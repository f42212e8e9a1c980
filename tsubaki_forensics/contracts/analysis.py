"""How an analysis is declared (:class:`AnalysisSpec`, :class:`AnalysisOption`) and what it gets.

A plugin registers an analysis through ``tsubaki_register_analyses``; the
plugin manager (``plugin_system``) builds the spec, the runner
(``analysis``) calls its function with an :class:`AnalysisContext`, and the
CLI adds each declared :class:`AnalysisOption` to ``analyze`` (as pytest's
``pytest_addoption`` lets a plugin add its own command-line options).  The
types sit in the bottom layer because the plugin system (which builds them)
is below the analysis layer (which runs them).  ``tsubaki_forensics.analysis``
and ``analysis.spec`` re-export them, their old homes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from .frozen import FACTORY, Frozen, dataclass_fields
from .needs import Need
from .results import fact_key

if TYPE_CHECKING:
    import drgn

__all__ = ["AnalysisContext", "AnalysisFunction", "AnalysisOption", "AnalysisSpec"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
#: the value types an analysis option may have on the command line
OPTION_TYPES = (int, float, str, bool)


@dataclass_fields
class AnalysisContext(Frozen):
    """What an analysis gets: the program, the dump it came from, options.

    :param prog: the ``drgn.Program`` built by the drgn bridge.
    :param dump: the dump (a :class:`tsubaki_forensics.tsd.Dump` or another
        object with the same attributes) or ``None`` when the program did not
        come from a dump (tests, drgn's own ELF path).
    :param options: analysis options from the command line (each analysis's
        declared :class:`AnalysisOption`, e.g. dmesg's ``tail``).
    :param capabilities: the :class:`Need` values this program satisfies.

    A dataclass (the runner ``replace``-s its options) whose methods are
    written here, not generated (:func:`~.frozen.dataclass_fields`).
    """

    prog: drgn.Program
    dump: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)
    capabilities: frozenset[Need] = frozenset(Need)

    def __init__(self, prog: drgn.Program, dump: Any = None, options: Mapping[str, Any] = FACTORY,
                 capabilities: frozenset[Need] = frozenset(Need)) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "prog", prog)
        setattr_(self, "dump", dump)
        setattr_(self, "options", {} if options is FACTORY else options)
        setattr_(self, "capabilities", capabilities)

    def option(self, name: str, default: Any = None) -> Any:
        """One option, or ``default`` when it was not given."""
        value = self.options.get(name)
        return default if value is None else value


#: ``function(ctx) -> AnalysisResult`` (``tsubaki_forensics.analysis.results``).
AnalysisFunction = Callable[[AnalysisContext], Any]


class AnalysisOption(Frozen):
    """A command-line option an analysis declares: ``analyze --NAME VALUE``.

    :param name: the option's name (``tail`` gives ``--tail``; ``_`` becomes ``-``);
        the analysis reads it with ``ctx.option(name)``.
    :param type: ``int``, ``float``, ``str`` or ``bool`` (a flag).
    :param help: one line for ``analyze --help``.
    :param min: the smallest value accepted (numbers only).
    :param short: a one-letter alias (``-T``), as the crash command the option mirrors has it.
    """

    _fields = ("name", "type", "help", "min", "short")
    name: str
    type: type
    help: str
    min: float | None
    short: str | None

    def __init__(self, name: str, type: type = str, help: str = "", min: float | None = None,
                 short: str | None = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "type", type)
        setattr_(self, "help", help)
        setattr_(self, "min", min)
        setattr_(self, "short", short)
        self._check()

    def _check(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name.replace("_", "-")):
            raise ValueError(f"option name {self.name!r} must match {_NAME.pattern}")
        if self.type not in OPTION_TYPES:
            raise TypeError(f"option {self.name!r}: type must be one of int, float, str, bool")
        if not isinstance(self.help, str) or not self.help.strip():
            raise ValueError(f"option {self.name!r} needs a help text")
        if self.short is not None and not (isinstance(self.short, str) and len(self.short) == 2
                                           and self.short[0] == "-" and self.short[1].isalpha()):
            raise ValueError(f"option {self.name!r}: short must be '-' and one letter, not {self.short!r}")

    @property
    def flag(self) -> str:
        """``--tail`` for ``tail``."""
        return "--" + self.name.replace("_", "-")


@dataclass_fields
class AnalysisSpec(Frozen):
    """A named analysis as a plugin registered it.

    A dataclass whose methods are written here, not generated
    (:func:`~.frozen.dataclass_fields`).
    """

    name: str
    function: AnalysisFunction
    description: str
    needs: frozenset[Need] = frozenset()
    plugin: str = "?"
    options: tuple[AnalysisOption, ...] = ()
    #: the keys of the facts it may give (``panic_message``): its results are
    #: held to them, and consumers such as triage rely on them; empty: undeclared.
    facts: tuple[str, ...] = ()

    def __init__(self, name: str, function: AnalysisFunction, description: str,
                 needs: frozenset[Need] = frozenset(), plugin: str = "?",
                 options: tuple[AnalysisOption, ...] = (), facts: tuple[str, ...] = ()) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "function", function)
        setattr_(self, "description", description)
        setattr_(self, "needs", needs)
        setattr_(self, "plugin", plugin)
        setattr_(self, "options", options)
        setattr_(self, "facts", facts)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"analysis name {self.name!r} must match {_NAME.pattern}")
        if not callable(self.function):
            raise TypeError(f"analysis {self.name!r}: function {self.function!r} is not callable")
        if not self.description.strip():
            raise ValueError(f"analysis {self.name!r} needs a description")
        for option in self.options:
            if not isinstance(option, AnalysisOption):
                raise TypeError(f"analysis {self.name!r}: option {option!r} is not an AnalysisOption")
        for key in self.facts:
            if not isinstance(key, str) or fact_key(key) != key:
                raise ValueError(f"analysis {self.name!r}: fact {key!r} is not a key "
                                 f"(lower-case words joined by '_', as fact_key() makes them)")

    def missing_needs(self, capabilities: frozenset[Need]) -> list[Need]:
        """The needs this program does not satisfy, in a stable order."""
        return sorted(self.needs - capabilities, key=lambda n: n.value)
