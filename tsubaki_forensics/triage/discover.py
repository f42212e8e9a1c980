"""Find the dumps behind ``DIR|GLOB|FILE`` arguments, by dump id, from the file headers only.

A dump is identified by the dump id in its files' headers (FORMAT.md), not by
its path, so:

- the files of one dump spread over several ``.tsd`` files (a monitor that
  rotated files) are analysed together, as ``analyze`` would;
- a byte copy of a file (same dump id, same ``created_ns``, same size, same
  content identity: :mod:`.identity`) is *the same dump*: it is listed under the dump's ``paths`` but analysed once
  and counted once.  Two copies of one crash are one crash; two crashes of the
  same bug are two dumps with one signature.

Files of other formats (ELF vmcores, makedumpfile's kdump, flattened and
``--split`` files, any of those wrapped in gzip/bzip2/xz/lz4: what
``/var/crash`` holds) are found by their magic, not their name, and named by
:func:`~tsubaki_forensics.vmcore.foreign.foreign_identity`: the files of one
``--split`` set share a dump id, any other file is a dump of its own.

The ``fingerprint`` of a dump is its set of distinct files; the result cache
reuses a record only while the fingerprint is unchanged, so a dump that gains
a file (or a file that is still growing) is analysed again.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import TsubakiError
from ..tsd import open_file
from ..vmcore.detect import is_dump_file
from ..vmcore.foreign import foreign_identity, tsd_or_kind
from .identity import file_identity

__all__ = ["DumpFiles", "Unreadable", "find_files", "group_dumps", "TRIAGE_SUFFIX"]

TRIAGE_SUFFIX = ".tsd"


@dataclass(frozen=True)
class DumpFiles:
    """The files of one dump found on disk.

    :param paths: every file with this dump id, copies included (sorted).
    :param parts: one path per distinct file: what is opened.
    :param fingerprint: ``created_ns:size:identity`` of the distinct files, sorted and joined.
    :param created_ns: when its oldest file was created (the writer's clock).
    """

    dump_id: str
    paths: tuple[str, ...]
    parts: tuple[str, ...]
    fingerprint: str
    created_ns: int


@dataclass(frozen=True)
class Unreadable:
    """A file whose header could not be read: reported, never analysed."""

    path: str
    reason: str


def find_files(arguments: Iterable[str]) -> list[Path]:
    """Every dump file named by the arguments: a directory (searched recursively), a glob, or a file.

    In a directory or glob: ``*.tsd`` files and any file whose magic is a dump
    (an ELF core, not a vmlinux; kdump; flattened; a wrapped one), never the
    ``dmesg`` text and debug files beside them.

    :raises TsubakiError: when an argument matches nothing.
    """
    found: dict[str, Path] = {}
    for arg in arguments:
        path = Path(arg)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _is_dump(p))
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            matches = [p for p in matches if _is_dump(p)]
        if not matches:
            raise TsubakiError(f"{arg}: no dump files (.tsd, ELF vmcore, kdump) here (not a directory, "
                               f"file or matching glob)")
        for p in matches:
            found.setdefault(str(p.resolve()), p.resolve())
    return [found[k] for k in sorted(found)]


def _is_dump(path: Path) -> bool:
    return path.name.endswith(TRIAGE_SUFFIX) or is_dump_file(path)


def _key(path: Path) -> tuple[str, tuple[int, int, str]]:
    """(dump id, (created_ns, size, identity)) from the header, whatever the format."""
    if tsd_or_kind(path) != "tsd":
        dump_id, identity, written_ns = foreign_identity(path)  # the file's own time: copies are equal
        return dump_id, (written_ns, os.path.getsize(path), identity)
    with open_file(path) as f:
        # content, not header fields: a forged file with the same id, time
        # and size is another part (then checked against the real one), never a copy
        return str(f.header.dump_id), (f.header.created_ns, os.path.getsize(path), file_identity(f))


def group_dumps(files: Iterable[Path]) -> tuple[list[DumpFiles], list[Unreadable]]:
    """Read each file's header and group the files into dumps by dump id."""
    by_id: dict[str, dict[tuple[int, int], list[str]]] = {}
    bad: list[Unreadable] = []
    for path in files:
        try:
            dump_id, key = _key(path)
        except (TsubakiError, OSError, ValueError, RecursionError, MemoryError) as e:
            # one hostile file is reported as unreadable; it never aborts the run
            bad.append(Unreadable(str(path), str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        by_id.setdefault(dump_id, {}).setdefault(key, []).append(str(path))
    dumps = []
    for dump_id, distinct in sorted(by_id.items()):
        keys = sorted(distinct)
        dumps.append(
            DumpFiles(
                dump_id=dump_id,
                paths=tuple(sorted(p for ps in distinct.values() for p in ps)),
                parts=tuple(sorted(distinct[k])[0] for k in keys),
                fingerprint=",".join(f"{ns}:{size}:{ident}" for ns, size, ident in keys),
                created_ns=keys[0][0],
            )
        )
    return dumps, bad
