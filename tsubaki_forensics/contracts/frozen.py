"""Value classes that cost microseconds to define, not a millisecond.

Why: every ``analyze`` imports the contracts, and Python 3.11 builds a
``@dataclass(frozen=True)`` by compiling each generated method with its own
``exec`` (0.4-1 ms a class; docs/BENCHMARKS.md, "Fourth pass").  A
:class:`Frozen` subclass lists its fields in ``_fields`` and writes its own
``__init__`` (with :func:`object.__setattr__`); it gets what the dataclass
gave, with the same results: ``repr`` (``Name(a=1, b='x')``), ``==`` (same
class, equal fields), ``hash`` of the fields, and attributes that cannot be
assigned or deleted (:class:`dataclasses.FrozenInstanceError`).  A
:class:`Record` is the same for a plain (mutable) ``@dataclass``: ``repr``
and ``==``, no ``hash``.  What they do not give (``dataclasses.replace``,
``fields``, ``asdict``) nothing uses on these classes.  The classes that are
``replace``-d (``AnalysisResult``, ``AnalysisSpec``, ``AnalysisContext``,
``DebugInfoReport``: plugins may ``replace`` them too) are still dataclasses,
declared with :func:`dataclass_fields`: a :class:`Frozen` with its own
``__init__`` that ``dataclasses`` then only describes (``fields``,
``replace``, ``asdict``, ``is_dataclass``), with no generated method and so
no ``exec`` (0.1 ms a class, not 0.6-1.2 ms: issue 21).

Bottom layer: standard library only.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from typing import Any, ClassVar, TypeVar

__all__ = ["Frozen", "Record", "FACTORY", "dataclass_fields"]

_C = TypeVar("_C", bound=type)


class _Factory:
    """The default of a field made by a factory, shown as a dataclass shows it (``extra=<factory>``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


#: Default of an ``__init__`` argument whose field has a ``default_factory``:
#: ``def __init__(self, extra=FACTORY)`` then ``dict() if extra is FACTORY else extra``.
FACTORY: Any = _Factory()


def dataclass_fields(cls: _C) -> _C:
    """Make a :class:`Record` (or :class:`Frozen`) a dataclass without generated methods.

    Its annotations and defaults (``field(default_factory=..., repr=False,
    compare=False)`` included) become ``dataclasses.fields``, so
    ``dataclasses.replace`` (which calls the class's own ``__init__`` with
    every field by name), ``asdict`` and ``is_dataclass`` work; ``__init__``,
    ``repr``, ``==`` and ``hash`` stay the record's, and a field left out of
    ``repr`` or ``==`` is listed in ``_not_shown`` or ``_not_compared``.
    """
    return dataclass(init=False, repr=False, eq=False, match_args=False)(cls)


class Record:
    """Base of a mutable record whose fields are ``_fields``, in ``__init__``'s order.

    What ``@dataclass`` gave: ``repr`` (``Name(a=1, b='x')``), ``==`` (same
    class, equal fields) and no ``hash``.  Every field is shown and compared
    but those named in ``_not_shown`` and ``_not_compared`` (what a
    dataclass's ``field(repr=False)`` and ``field(compare=False)`` did).
    Instances keep a ``__dict__`` (as a non-slotted dataclass does), so
    ``vars()`` and pickling work.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    #: fields a dataclass had as ``field(repr=False)`` / ``field(compare=False)``
    _not_shown: ClassVar[tuple[str, ...]] = ()
    _not_compared: ClassVar[tuple[str, ...]] = ()
    _shown: ClassVar[tuple[str, ...]] = ()
    _compared: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__match_args__ = cls._fields
        cls._shown = tuple(n for n in cls._fields if n not in cls._not_shown)
        cls._compared = tuple(n for n in cls._fields if n not in cls._not_compared)

    def _key(self) -> tuple[Any, ...]:
        return tuple([getattr(self, n) for n in self._compared])

    def __repr__(self) -> str:
        inner = ", ".join([f"{n}={getattr(self, n)!r}" for n in self._shown])
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._key() == other._key()  # type: ignore[attr-defined]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as a dataclass with eq


class Frozen(Record):
    """A :class:`Record` that cannot change: ``hash`` of the fields, and
    attributes that cannot be assigned or deleted (``__init__`` sets them
    with :func:`object.__setattr__`)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
