"""What every reader of a foreign dump file shares: the checks before it opens
the file, and a read-only ``mmap`` of the whole file closed with the reader.

Why mmap: a vmcore is as large as the guest's RAM; the readers slice the
mapping instead of reading copies, and the page cache stays the kernel's
business.  Why one place: the ELF, kdump-compressed and LiME readers each had
their own copy of the close/context-manager code, and a fix to one (a view
still alive when the reader closes) has to reach all three.
"""

from __future__ import annotations

import mmap
import os
from typing import IO, Self

from ..errors import FormatError
from ..inputs import stat_input

__all__ = ["MappedDumpFile", "stat_dump_file"]


def stat_dump_file(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """``os.stat`` of a dump a reader is about to open, as one-line errors: missing,
    unreadable, a directory (:func:`~tsubaki_forensics.inputs.stat_input`), or empty
    (``what`` names the format, e.g. "an ELF vmcore")."""
    st = stat_input(path, what)
    if st.st_size == 0:
        raise FormatError(f"{path}: empty file, not {what}")
    return st


class MappedDumpFile:
    """Base of the foreign-dump readers: ``self._file`` and its mapping ``self._mm``.

    Subclasses open ``self._file`` and call :meth:`_map` when they are ready to
    slice it; :meth:`close` (also on ``with`` exit) unmaps and closes, and is
    safe to call from a constructor that failed half-way.
    """

    _file: IO[bytes]
    _mm: mmap.mmap | None = None

    def _map(self) -> mmap.mmap:
        """Map the whole open file read-only (it is not empty: :func:`stat_dump_file`)."""
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view is still alive; the GC unmaps it with the last view
                pass
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
