"""A damaged or missing piece of a ``.tsd`` file (:class:`Problem`).

Its own module, below both of its writers: the reader lists problems found
while opening (gaps, bad checksums), the memory view those found while
reading (a damaged chunk, overlaps not compared).  ``tsd.reader`` re-exports
it, its old home.
"""

from __future__ import annotations

from ..contracts.frozen import Frozen

__all__ = ["Problem"]


class Problem(Frozen):
    """Something wrong or missing in a file, with where it starts.

    A :class:`~tsubaki_forensics.contracts.frozen.Frozen` record, not a
    frozen dataclass (~0.5 ms at every ``analyze``'s import, issue 21).
    """

    _fields = ("path", "offset", "message")
    path: str
    offset: int
    message: str

    def __init__(self, path: str, offset: int, message: str) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "path", path)
        setattr_(self, "offset", offset)
        setattr_(self, "message", message)

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset}: {self.message}"
