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
no ``exec`` (0.1 ms a class, not 0.6-1.2 ms: issue 21); its ``_fields`` come
from its annotations.

Bottom layer: standard library only.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, fields
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
    every field by name), ``asdict`` and ``is_dataclass`` work; ``__init__``
    is the class's, and ``repr``, ``==`` and ``hash`` the record's, over the
    fields in that order (``_fields``), leaving out those a ``field`` keeps
    out of ``repr`` or comparison, as a dataclass does.
    """
    cls = dataclass(init=False, repr=False, eq=False, match_args=False)(cls)
    described = fields(cls)
    cls._fields = cls.__match_args__ = tuple(f.name for f in described)  # type: ignore[attr-defined]
    cls._shown = tuple(f.name for f in described if f.repr)  # type: ignore[attr-defined]
    cls._compared = tuple(f.name for f in described if f.compare)  # type: ignore[attr-defined]
    return cls


class Record:
    """Base of a mutable record whose fields are ``_fields``, in ``__init__``'s order.

    What ``@dataclass`` gave: ``repr`` (``Name(a=1, b='x')``), ``==`` (same
    class, equal fields) and no ``hash``.  Every field is shown and compared
    (``_shown``, ``_compared``), but for a :func:`dataclass_fields` class
    those its ``field(repr=False)`` or ``field(compare=False)`` keep out.
    Instances keep a ``__dict__`` (as a non-slotted dataclass does), so
    ``vars()`` and pickling work.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    #: the fields ``repr`` shows and ``==`` and ``hash`` compare
    _shown: ClassVar[tuple[str, ...]] = ()
    _compared: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__match_args__ = cls._shown = cls._compared = cls._fields

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
    with :func:`object.__setattr__`).  A subclass with ``__slots__`` pickles
    as a call of its ``__init__`` with its ``_fields``."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("__slots__") and "__reduce__" not in cls.__dict__:
            # no __dict__ for pickle to restore, and no __setattr__ to restore slots
            # with: a slotted record is pickled as a call of its __init__ with its fields
            cls.__reduce__ = _by_fields  # type: ignore[method-assign]

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


def _by_fields(self: Frozen) -> tuple[Any, ...]:
    """``__reduce__`` of a slotted :class:`Frozen`: its class and its fields, in ``__init__``'s order."""
    return type(self), tuple([getattr(self, n) for n in self._fields])
