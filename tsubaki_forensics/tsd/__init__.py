"""The ``.tsd`` dump format: chunked, zstd-compressed, append-only, self-checking.

The specification is ``docs/FORMAT.md``; :mod:`.records` holds its byte
layouts, :mod:`.writer` appends records (framing in :mod:`.framing`, chunking
and compression in :mod:`.encode`, page dedup in :mod:`.dedup`), :mod:`.reader` opens files (via the
footer's index, or by scanning a file whose writer died), and :mod:`.memory`
reassembles physical memory from one or several files of one dump;
:mod:`.verify` checks every byte of a dump.
"""

from __future__ import annotations

from ..lazy import lazy_exports
from .records import MemoryMap

# Each side loads only what it uses (issue 21): the writer pulls in numpy
# (zero-page scan) and a thread pool, the verifier its own checks, the
# reader its record table, memory reassembly and completeness.  ``analyze``
# should not pay for the writer at start-up, nor ``import`` for the reader
# (~20 ms of CPU), so these names load on first use.
_LAZY = {
    **dict.fromkeys(("DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL", "TsdWriter", "WriteStats"), "writer"),
    **dict.fromkeys(("VerifyReport", "verify_dump"), "verify"),
    **dict.fromkeys(("Dump", "Event", "Problem", "TsdFile", "open_dump", "open_file"), "reader"),
    **dict.fromkeys(("PhysicalMemory", "Range"), "memory"),
    **dict.fromkeys(("Completeness", "Gap"), "completeness"),
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "TsdWriter", "WriteStats", "DEFAULT_CHUNK_SIZE", "DEFAULT_LEVEL",
    "open_dump", "open_file", "Dump", "TsdFile", "Event", "Problem",
    "PhysicalMemory", "Range", "verify_dump", "VerifyReport",
    "MemoryMap", "Completeness", "Gap",
]
