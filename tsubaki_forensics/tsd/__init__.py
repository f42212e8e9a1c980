"""The ``.tsd`` dump format: chunked, zstd-compressed, append-only, self-checking.

The specification is ``docs/FORMAT.md``; :mod:`.records` holds its byte
layouts, :mod:`.writer` appends records (framing in :mod:`.framing`, chunking
and compression in :mod:`.encode`, page dedup in :mod:`.dedup`), :mod:`.reader` opens files (via the
footer's index, or by scanning a file whose writer died), and :mod:`.memory`
reassembles physical memory from one or several files of one dump;
:mod:`.verify` checks every byte of a dump.
"""

from __future__ import annotations

from .completeness import Completeness, Gap
from .memory import PhysicalMemory, Range
from .records import MemoryMap
from .reader import Dump, Event, Problem, TsdFile, open_dump, open_file

# The writer pulls in numpy (zero-page scan) and a thread pool, the verifier
# its own checks: readers such as ``analyze`` should not pay for either at
# start-up (issue 21), so their names load on first use.
_WRITER_NAMES = frozenset({"DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL", "TsdWriter", "WriteStats"})
_VERIFY_NAMES = frozenset({"VerifyReport", "verify_dump"})


def __getattr__(name: str):
    if name in _WRITER_NAMES:
        from . import writer

        return getattr(writer, name)
    if name in _VERIFY_NAMES:
        from . import verify

        return getattr(verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TsdWriter", "WriteStats", "DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL",
    "open_dump", "open_file", "Dump", "TsdFile", "Event", "Problem",
    "PhysicalMemory", "Range", "verify_dump", "VerifyReport",
    "MemoryMap", "Completeness", "Gap",
]
