"""Dumps wrapped in gzip, bzip2, xz or lz4 (kdump-tools' ``KDUMP_COMPRESSION``).

Why a temporary file: the kdump and ELF readers need random access, and
none of these streams offers it; decompressing once (streamed, flat memory,
by the codec's own library: :mod:`gzip`, :mod:`bz2`, :mod:`lzma`,
``lz4.frame``) into ``$TMPDIR`` and unlinking the file as soon as it is open
costs one pass and leaves nothing behind.  A stream that is cut short or
damaged keeps what decompressed before the fault (the readers then name the
rest missing) and says so in one line.
"""

from __future__ import annotations

import bz2
import lzma
import os
from pathlib import Path

from ..errors import FormatError

__all__ = ["WRAPPERS", "unwrap", "peek"]

WRAPPERS = ("gzip", "bzip2", "xz", "lz4")
COPY = 64 << 10  # a stream that breaks loses at most this much of what decompressed


def _open(path: Path, kind: str):
    if kind == "gzip":  # gzip and tempfile load when a wrapped file comes (issue 21: start-up)
        import gzip

        return gzip.open(path, "rb")
    if kind == "bzip2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    import lz4.frame

    return lz4.frame.open(path, "rb")


def peek(path: str | os.PathLike[str], kind: str, size: int = 16) -> bytes:
    """The first ``size`` decompressed bytes (for telling what a wrapped file holds)."""
    try:
        with _open(Path(path), kind) as src:
            return src.read(size)
    except (EOFError, OSError, lzma.LZMAError, RuntimeError, ValueError):
        return b""


def unwrap(path: str | os.PathLike[str], kind: str) -> tuple[Path, str | None]:
    """Decompress ``path`` (a ``kind`` stream) into a temporary file.

    :returns: the file (the caller opens it, then unlinks it) and a problem
        line if the stream ended early or was damaged, else ``None``.
    :raises FormatError: nothing at all could be decompressed.
    """
    import tempfile

    fd, name = tempfile.mkstemp(prefix="tsubaki-unwrap-")
    out = Path(name)
    problem = None
    try:
        with os.fdopen(fd, "wb") as dst, _open(Path(path), kind) as src:
            read = getattr(src, "read1", src.read)  # one step at a time: a break loses little
            while True:
                try:
                    block = read(COPY)
                except (EOFError, OSError, lzma.LZMAError, RuntimeError, ValueError) as e:
                    problem = (f"the {kind} stream of {path} ends or breaks after "
                               f"{dst.tell()} decompressed bytes ({type(e).__name__}: {e})")
                    break
                if not block:
                    break
                try:
                    dst.write(block)
                except OSError as e:
                    raise FormatError(f"{path}: cannot decompress into {tempfile.gettempdir()} "
                                      f"(set TMPDIR): {e.strerror or e}") from None
            size = dst.tell()
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    if size == 0:
        out.unlink(missing_ok=True)
        raise FormatError(f"{path}: nothing decompresses from this {kind} file"
                          + (f" ({problem.split('(', 1)[1]}" if problem else ""))
    return out, problem
