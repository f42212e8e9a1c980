"""What an analysis returns: typed tables and facts, never printed text.

Analyses hand these to the renderers (:mod:`tsubaki_forensics.render`), which
own all output (volatility3's ``TreeGrid`` idea).  A value that could not be
read is a typed placeholder (:class:`NotCollected` when the memory is not in
the dump, :class:`Unreadable` for any other reason), so a partial dump gives
a partial answer that says what is missing instead of a crash or a blank.
Every result carries a :class:`Completeness` that says how much of what it
needed was present.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import field
from typing import Union

from .frozen import FACTORY, Frozen, dataclass_fields

__all__ = [
    "NotCollected",
    "Unreadable",
    "Placeholder",
    "Value",
    "Column",
    "Table",
    "Missing",
    "Completeness",
    "Status",
    "AnalysisResult",
    "is_placeholder",
    "fact_key",
]


class NotCollected(Frozen):
    """The value lives in physical memory that the dump does not contain.

    :param address: first missing physical or virtual address, as drgn
        reported it (``drgn.FaultError.address``).
    :param excluded: why the dump lacks it when that was on purpose: "excluded
        by dump level 31 (user data)" (format 1.4); None: lost or never collected.
    """

    _fields = ("address", "excluded")
    address: int | None
    excluded: str | None

    def __init__(self, address: int | None = None, excluded: str | None = None) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "excluded", excluded)

    def __str__(self) -> str:
        how = self.excluded or "not collected"
        if self.address is None:
            return f"<{how}>"
        return f"<{how} {self.address:#x}>"


class Unreadable(Frozen):
    """The value could not be read for a reason other than missing memory."""

    _fields = ("reason",)
    reason: str

    def __init__(self, reason: str) -> None:
        object.__setattr__(self, "reason", reason)

    def __str__(self) -> str:
        return f"<unreadable: {self.reason}>"


Placeholder = Union[NotCollected, Unreadable]
Value = Union[int, float, str, bool, None, NotCollected, Unreadable]


_PLACEHOLDERS = (NotCollected, Unreadable)


def is_placeholder(value: object) -> bool:
    """True for :class:`NotCollected` and :class:`Unreadable`."""
    return isinstance(value, _PLACEHOLDERS)


class Column(Frozen):
    """One typed column: ``kind`` is the Python type of its non-placeholder values.

    ``fmt`` is a hint for renderers: ``"address"`` for an address (hex in
    text, a ``"0x..."`` string in JSON, where a 64-bit number is not safe),
    ``"hex"`` for another number shown in hex (an offset, a size; a JSON
    number).
    """

    _fields = ("name", "title", "kind", "align", "fmt")
    name: str
    title: str
    kind: type
    align: str
    fmt: str | None

    def __init__(self, name: str, title: str, kind: type = str, align: str = "left", fmt: str | None = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "title", title)
        setattr_(self, "kind", kind)
        setattr_(self, "align", align)
        setattr_(self, "fmt", fmt)


class Table(Frozen):
    """A titled grid of typed rows; each cell is a :data:`Value`.

    Rows are checked against the columns when the table is built so that a
    renderer never meets a value it cannot place.
    """

    _fields = ("name", "title", "columns", "rows")
    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Value, ...], ...]

    def __init__(self, name: str, title: str, columns: tuple[Column, ...], rows: tuple[tuple[Value, ...], ...]) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "title", title)
        setattr_(self, "columns", columns)
        setattr_(self, "rows", rows)
        self._check()

    def _check(self) -> None:
        width = len(self.columns)
        kinds = [c.kind for c in self.columns]
        for row in self.rows:
            if len(row) != width:
                raise ValueError(f"table {self.name}: row {row!r} has {len(row)} cells, expected {width}")
            for kind, cell in zip(kinds, row):
                # most cells are exactly of their column's type: one identity test each
                if type(cell) is kind or cell is None or isinstance(cell, _PLACEHOLDERS):
                    continue
                if not isinstance(cell, kind) and not (kind is float and type(cell) is int):
                    self._refuse(row)

    def _refuse(self, row: tuple[Value, ...]) -> None:
        """The TypeError for the first cell of ``row`` that its column does not accept."""
        for column, cell in zip(self.columns, row):
            if cell is None or is_placeholder(cell):
                continue
            if column.kind is float and isinstance(cell, int) and not isinstance(cell, bool):
                continue
            if not isinstance(cell, column.kind):
                raise TypeError(
                    f"table {self.name}: column {column.name} wants {column.kind.__name__}, "
                    f"got {type(cell).__name__} {cell!r}"
                )

    @classmethod
    def build(cls, name: str, title: str, columns: Sequence[Column], rows: Sequence[Sequence[Value]]) -> Table:
        """Build a table from any sequences (converted to tuples)."""
        return cls(name, title, tuple(columns), tuple(tuple(r) for r in rows))

    def column(self, name: str) -> list[Value]:
        """All the values of one column, in row order."""
        index = [c.name for c in self.columns].index(name)
        return [row[index] for row in self.rows]

    def dicts(self) -> list[dict[str, Value]]:
        """Rows as ``{column name: value}`` dictionaries."""
        names = [c.name for c in self.columns]
        return [dict(zip(names, row)) for row in self.rows]


class Missing(Frozen):
    """One thing an analysis needed and could not read.

    :param what: what it is, in the words of the analysis (``"30"`` in
        group ``"pid"``, ``"printk ring"``).
    :param address: the first missing address, when known.
    :param group: ``"pid"``: several are summarised as "pids 30, 31 ...".
    :param excluded: "excluded by dump level 31 (user data)": on purpose.
    """

    _fields = ("what", "address", "not_collected", "group", "excluded")
    what: str
    address: int | None
    not_collected: bool
    group: str | None
    excluded: str | None

    def __init__(self, what: str, address: int | None = None, not_collected: bool = True, group: str | None = None,
                 excluded: str | None = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "what", what)
        setattr_(self, "address", address)
        setattr_(self, "not_collected", not_collected)
        setattr_(self, "group", group)
        setattr_(self, "excluded", excluded)

    def __str__(self) -> str:
        what = f"{self.group} {self.what}" if self.group else self.what
        where = f" at {self.address:#x}" if self.address is not None else ""
        how = self.excluded or ("not collected" if self.not_collected else "unreadable")
        return f"{what}{where} {how}"


class Completeness(Frozen):
    """How much of what an analysis needed was present.

    ``readable`` of ``total`` ``unit`` could be read; ``missing`` lists the
    rest.  ``total`` is ``None`` when the analysis cannot know how many there
    should have been (for example when the list that counts them is lost).
    """

    _fields = ("unit", "readable", "total", "missing")
    unit: str
    readable: int
    total: int | None
    missing: tuple[Missing, ...]

    def __init__(self, unit: str, readable: int, total: int | None, missing: tuple[Missing, ...] = ()) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "unit", unit)
        setattr_(self, "readable", readable)
        setattr_(self, "total", total)
        setattr_(self, "missing", missing)

    @property
    def complete(self) -> bool:
        return not self.missing and self.total is not None and self.readable == self.total

    def summary(self) -> str:
        """One line, e.g. ``tasks: 55 of 57 readable; pid 30, pid 31 not collected``."""
        total = "?" if self.total is None else str(self.total)
        line = f"{self.unit}: {self.readable} of {total} readable"
        if self.missing:
            line += "; " + "; ".join(_group_missing(self.missing))
        return line


def _group_missing(missing: Sequence[Missing]) -> list[str]:
    """Group ``pid 30 not collected``, ``pid 31 not collected`` into ``pids 30, 31 not collected``."""
    groups: dict[tuple[str, bool], list[str]] = {}
    singles: list[str] = []
    for item in missing:
        if item.group and not item.excluded:
            groups.setdefault((item.group, item.not_collected), []).append(item.what)
        else:
            singles.append(str(item))
    out = []
    for (head, not_collected), tails in groups.items():
        how = "not collected" if not_collected else "unreadable"
        noun = head if len(tails) == 1 else head + "s"
        out.append(f"{noun} {', '.join(tails)} {how}")
    return out + singles


class Status(str, enum.Enum):
    """How an analysis ended: the runner records one per analysis."""

    OK = "ok"  # everything it needed was present
    PARTIAL = "partial"  # it ran; some of what it needed was missing
    FAILED = "failed"  # it raised; ``error`` says why
    SKIPPED = "skipped"  # a need (debug info, registers) was not met


_NOT_WORD = re.compile(r"[^0-9a-z]+")


def fact_key(name: str) -> str:
    """The stable key of a fact (or column) named ``name`` for people:
    ``"panic message"`` -> ``"panic_message"``, ``"panicking CPU"`` -> ``"panicking_cpu"``.

    Keys are what programs use: JSON output names facts by them, analyses
    declare the facts they produce by them (``register(..., facts=[...])``) and
    triage reads the panic's facts by them, so a label can be reworded for
    readers without breaking a consumer.
    """
    return _NOT_WORD.sub("_", name.lower()).strip("_") or "_"


@dataclass_fields
class AnalysisResult(Frozen):
    """Everything one analysis found.

    :param facts: ordered ``(name, value)`` pairs, the headline of the result
        (``panic message``, ``panicking CPU``); each name's :func:`fact_key`
        (``panic_message``) is what programs read it by.
    :param tables: the grids (tasks, log lines, frames).
    :param completeness: one entry per kind of thing it needed.
    :param notes: remarks for the reader (why something is absent).

    A dataclass (``dataclasses.replace`` gives a changed copy) whose methods
    are written here, not generated (:func:`~.frozen.dataclass_fields`).
    """

    name: str
    title: str
    facts: tuple[tuple[str, Value], ...] = ()
    tables: tuple[Table, ...] = ()
    completeness: tuple[Completeness, ...] = ()
    notes: tuple[str, ...] = ()
    status: Status = Status.OK
    error: str | None = None
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __init__(self, name: str, title: str, facts: tuple[tuple[str, Value], ...] = (),
                 tables: tuple[Table, ...] = (), completeness: tuple[Completeness, ...] = (),
                 notes: tuple[str, ...] = (), status: Status = Status.OK, error: str | None = None,
                 seconds: float = 0.0, extra: dict[str, object] = FACTORY) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "title", title)
        setattr_(self, "facts", facts)
        setattr_(self, "tables", tables)
        setattr_(self, "completeness", completeness)
        setattr_(self, "notes", notes)
        setattr_(self, "status", status)
        setattr_(self, "error", error)
        setattr_(self, "seconds", seconds)
        setattr_(self, "extra", {} if extra is FACTORY else extra)

    def fact(self, name: str) -> Value:
        """The value of one fact, by its key (``panic_message``) or its name
        (``panic message``); ``KeyError`` if the analysis did not give it."""
        for label, value in self.facts:
            if label == name or fact_key(label) == name:
                return value
        raise KeyError(name)

    def table(self, name: str) -> Table:
        """One table by name; ``KeyError`` if absent."""
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)
