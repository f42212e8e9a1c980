"""A damaged or missing piece of a ``.tsd`` file (:class:`Problem`).

Its own module, below both of its writers: the reader lists problems found
while opening (gaps, bad checksums), the memory view those found while
reading (a damaged chunk, overlaps not compared).  ``tsd.reader`` re-exports
it, its old home.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """Something wrong or missing in a file, with where it starts."""

    path: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset}: {self.message}"
