"""Turn drgn's read errors into typed placeholders.

The drgn bridge raises ``drgn.FaultError`` for memory that the dump does not
hold; analyses read each value through :func:`read_value` so that a missing
page becomes :class:`~.results.NotCollected` (with its address) and any other
read error :class:`~.results.Unreadable`, instead of ending the analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import drgn

from .results import Missing, NotCollected, Unreadable

__all__ = ["READ_ERRORS", "EXCLUDED_PREFIX", "excluded_reason", "placeholder_for", "missing_for",
           "read_value"]

T = TypeVar("T")

#: What a read of kernel memory can raise on a partial or corrupt dump.
READ_ERRORS: tuple[type[BaseException], ...] = (drgn.FaultError, LookupError, ValueError, OverflowError)


#: How the drgn bridge words a fault on a page the dump level left out.
EXCLUDED_PREFIX = "excluded by dump level"


def excluded_reason(error: BaseException) -> str | None:
    """"excluded by dump level 31 (user data)" if ``error`` is a fault on an
    excluded page (format 1.4: left out on purpose, not lost), else None."""
    if isinstance(error, drgn.FaultError) and str(error.message).startswith(EXCLUDED_PREFIX):
        return str(error.message)
    return None


def placeholder_for(error: BaseException) -> NotCollected | Unreadable:
    """The placeholder that says why a read failed."""
    if isinstance(error, drgn.FaultError):
        return NotCollected(error.address, excluded_reason(error))
    return Unreadable(f"{type(error).__name__}: {error}")


def missing_for(what: str, error: BaseException, group: str | None = None) -> Missing:
    """A :class:`~.results.Missing` entry for a failed read of ``what``."""
    if isinstance(error, drgn.FaultError):
        return Missing(what, error.address, True, group, excluded_reason(error))
    return Missing(f"{what} ({type(error).__name__}: {error})", None, False, group)


def read_value(read: Callable[[], T]) -> T | NotCollected | Unreadable:
    """``read()``, or the placeholder for the error it raised."""
    try:
        return read()
    except READ_ERRORS as e:
        return placeholder_for(e)
