"""One exception family for the whole domain.

Library code raises these with a message a person can act on; only the CLI
boundary (:mod:`tsubaki_forensics.cli.app`) turns them into a one-line
``error: ...`` and a non-zero exit code.  Anything else escaping is a bug.
"""

from __future__ import annotations

__all__ = [
    "TsubakiError",
    "FormatError",
    "UnsupportedVersionError",
    "ConflictError",
    "NotCollectedError",
    "ExcludedPageError",
    "DebugInfoError",
    "SourceError",
    "LabError",
    "LiveError",
    "PluginError",
    "SizeError",
    "StorageError",
    "PageClassError",
]


class TsubakiError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class FormatError(TsubakiError, ValueError):
    """A ``.tsd`` (or ELF vmcore) is malformed; the message names the offset."""


class UnsupportedVersionError(FormatError):
    """A ``.tsd`` written by a newer major version of the format."""


class ConflictError(FormatError):
    """Two records of one dump disagree about the same physical bytes."""


class NotCollectedError(TsubakiError, LookupError):
    """Physical memory that the dump does not contain (not collected or lost)."""

    def __init__(self, address: int, message: str | None = None) -> None:
        self.address = address
        super().__init__(message or f"physical address {address:#x} was not collected")


class ExcludedPageError(NotCollectedError):
    """Physical memory the dump's level left out on purpose (format 1.4): not lost.

    ``reason`` reads "excluded by dump level 31 (user data)"; the drgn bridge
    puts it in the FaultError, so an analysis tells it apart from damage.
    """

    def __init__(self, address: int, reason: str) -> None:
        self.reason = reason
        super().__init__(address, f"physical address {address:#x} was {reason}")


class DebugInfoError(TsubakiError):
    """No usable debug info (missing or mismatched vmlinux)."""


class SourceError(TsubakiError):
    """A memory source for collection cannot be opened or read."""


class LabError(TsubakiError):
    """The crash lab could not produce a crashed guest."""


class LiveError(TsubakiError):
    """The live guest or the live protocol failed (QEMU, agent, timeouts; ``tsubaki_forensics.live``)."""


class SizeError(TsubakiError, ValueError):
    """Not a size (``tsubaki_forensics.sizes.parse_size``: ``128M``, ``2G``, ``4096`` bytes)."""


class PluginError(TsubakiError):
    """A plugin failed to load or broke the plugin contract."""


class StorageError(TsubakiError):
    """Writing the dump failed (disk full, I/O error); saved data is kept."""

    exit_code = 3


class PageClassError(TsubakiError):
    """Pages cannot be classified (filtered) from this dump; ``field`` names what is missing.

    Raised instead of guessing: a filter built on a missing VMCOREINFO field
    could drop pages that hold evidence.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)
