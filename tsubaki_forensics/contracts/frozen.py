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
``fields``, ``asdict``) nothing uses on these classes; the classes that are
``replace``-d (``AnalysisResult``, ``AnalysisSpec``, ``AnalysisContext``,
``DebugInfoReport``) stay dataclasses.

Bottom layer: standard library only.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any, ClassVar

__all__ = ["Frozen", "Record"]


class Record:
    """Base of a mutable record whose fields are ``_fields``, in ``__init__``'s order.

    What ``@dataclass`` gave: ``repr`` (``Name(a=1, b='x')``), ``==`` (same
    class, equal fields) and no ``hash``.  Every field is shown and compared
    (none of these classes had a ``field(repr=False, compare=False)``).
    Instances keep a ``__dict__`` (as a non-slotted dataclass does), so
    ``vars()`` and pickling work.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__match_args__ = cls._fields

    def _key(self) -> tuple[Any, ...]:
        return tuple([getattr(self, n) for n in self._fields])

    def __repr__(self) -> str:
        inner = ", ".join([f"{n}={getattr(self, n)!r}" for n in self._fields])
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
