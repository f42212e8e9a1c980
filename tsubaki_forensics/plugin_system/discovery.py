"""Which installed distributions declare plugins, read without importing them.

The root ``--help`` lists plugin commands, but the plugins bundled with
tsubaki-forensics add none; so it loads plugins only when some *other*
distribution declares an entry point of the group.  This module answers
that from the ``entry_points.txt`` files on ``sys.path`` with the standard
library's plain file functions: ``importlib.metadata`` itself imports the
``email`` package (~15-50 ms, a third of the 0.15 s start-up budget of
issue 21).  It only decides whether to load plugins; loading them is
``importlib.metadata``'s job (:mod:`.manager`).  Zipped eggs are not
scanned (their plugins still load for every command that uses plugins).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

from .names import PROJECT_NAME

__all__ = ["OWN_DISTRIBUTION", "foreign_entry_points"]

#: The distribution of the bundled plugins (none of them adds commands; tests check it).
OWN_DISTRIBUTION = "tsubaki-forensics"
_SUFFIXES = (".dist-info", ".egg-info")


def _normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _declares(text: str, group: str) -> bool:
    """``entry_points.txt`` (an INI file) has at least one entry in ``[group]``."""
    inside = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == f"[{group}]"
        elif inside and line and not line.startswith(("#", ";")) and "=" in line:
            return True
    return False


def foreign_entry_points(group: str = PROJECT_NAME, path: Iterable[str] | None = None) -> list[str]:
    """Distributions other than tsubaki-forensics that declare entry points in ``group``.

    :param path: the directories to scan (default ``sys.path``).
    :returns: their normalized names, in ``sys.path`` order.
    """
    found: list[str] = []
    own = _normalize(OWN_DISTRIBUTION)
    for entry in sys.path if path is None else path:
        try:
            with os.scandir(entry or ".") as it:
                names = [e.name for e in it if e.name.endswith(_SUFFIXES)]
        except OSError:  # not a directory (a zip, a missing path)
            continue
        for name in names:
            dist = _normalize(name.rsplit(".", 1)[0].split("-", 1)[0])
            if dist == own or dist in found:
                continue
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if _declares(text, group):
                found.append(dist)
    return found
