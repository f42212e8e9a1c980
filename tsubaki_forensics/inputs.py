"""The first look at a file a command is about to read: one-line errors for
the usual mistakes, the same for every format.

Why one place: the ``.tsd`` reader and the foreign-dump readers (ELF, kdump,
LiME) each checked "missing, unreadable, a directory" with their own copy of
the same lines; it sits at the bottom so that ``tsd`` (below ``vmcore``) can
use it too.
"""

from __future__ import annotations

import os
import stat

from .errors import FormatError

__all__ = ["stat_input"]


def stat_input(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """``os.stat`` of ``path`` as one-line :class:`FormatError`\\ s: no such file,
    unreadable, or a directory (``what`` names the format, e.g. "a .tsd dump")."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except OSError as e:
        raise FormatError(f"{path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise FormatError(f"{path}: is a directory, not {what}")
    return st
