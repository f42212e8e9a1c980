"""Which dump format a file is (by its magic), and importing any of them.

Why by magic: users hand every command whatever ``/var/crash`` holds,
named ``dump.202612030000`` or ``vmcore``; the first bytes say what it is.
Opening one for the commands is :mod:`.foreign` (``open_any``); an unknown
file is one line naming the formats understood.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import FormatError
from .unwrap import WRAPPERS, unwrap

__all__ = ["sniff", "UNDERSTOOD", "is_dump_file", "import_any", "unsupported", "DUMP_KINDS"]

UNDERSTOOD = ("understood formats: .tsd; ELF vmcore (/proc/vmcore, QEMU dump-guest-memory, "
              "makedumpfile -E); makedumpfile kdump-compressed (-c, -l, -p, -z) and "
              "flattened (-F); LiME (LiME, AVML uncompressed); any of those but .tsd in gzip, bzip2, xz or lz4")
_MAGICS = [
    (b"\x89TSD\r\n\x1a\n", "tsd"),
    (b"\x7fELF", "elf"),
    (b"KDUMP   ", "kdump"),
    (b"makedumpfile\0\0\0\0", "flattened"),
    (b"DISKDUMP", "diskdump"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\0", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"EMiL", "lime"),
    (b"AVML", "avml"),  # AVML's compressed image (snappy-framed ranges)
]
_NOT_YET = {"diskdump": "an old diskdump file",
            "avml": "AVML's compressed image (`avml-convert` writes it as uncompressed LiME)"}
#: Kinds every command opens (wrapped ones once decompressed).
DUMP_KINDS = ("tsd", "elf", "kdump", "flattened", "lime")
_ET_CORE = 4


def sniff(path: str | os.PathLike[str]) -> str:
    """``tsd``, ``elf``, ``kdump``, ``flattened``, ``gzip``, ... or ``unknown``."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a dump") from None
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except OSError as e:
        raise FormatError(f"{path}: {e.strerror or e}") from None
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return "unknown"


def is_dump_file(path: str | os.PathLike[str]) -> bool:
    """A file some command opens as a dump: ``.tsd``, an ELF *core* (not a
    vmlinux or module beside it), a kdump or flattened file, or one of those
    in gzip/bzip2/xz/lz4 (its first decompressed bytes are checked).  For
    directory scans (``triage``): never raises."""
    try:
        kind = sniff(path)
        if kind == "elf":
            with open(path, "rb") as f:
                head = f.read(18)
            return len(head) == 18 and head[16] + (head[17] << 8) == _ET_CORE  # e_type, little-endian
        if kind in WRAPPERS:
            from .unwrap import peek

            return any(peek(path, kind).startswith(m) for m, k in _MAGICS if k in DUMP_KINDS)
        return kind in DUMP_KINDS
    except (FormatError, OSError, EOFError, ValueError):
        return False


def unsupported(path: str | os.PathLike[str], kind: str, wanted: str = "a dump") -> FormatError:
    """The one-line error for a file of a format no reader here takes.

    :param wanted: what the command expected ("a .tsd dump", "an ELF vmcore
        or kdump file"), named first in the message.
    """
    if kind == "unknown":
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        what = f"empty file, not {wanted}" if empty else f"not {wanted} (unknown magic)"
    else:
        what = f"{_NOT_YET.get(kind, kind)}, which this tool does not read yet"
    return FormatError(f"{path}: {what}; {UNDERSTOOD}")


def import_any(source: Path | list[Path], output: Path, **options: Any):
    """Import an ELF vmcore or a kdump file (by magic), or the files of a
    makedumpfile ``--split`` set, into ``output``.

    :returns: :class:`~tsubaki_forensics.vmcore.importer.ImportResult`.
    :raises FormatError: a ``.tsd`` or a format not read here.
    """
    if isinstance(source, (list, tuple)):
        if len(source) > 1:
            if {sniff(p) for p in source} <= {"kdump", "flattened"}:
                from .kdump_import import import_kdump

                if options.pop("dump_level", None) not in (None, 0, 1):
                    raise FormatError("a makedumpfile file keeps the dump level it was written "
                                      "at; --dump-level applies to ELF vmcores")
                for key in ("min_zero_pages", "fallback_level_1", "warn"):
                    options.pop(key, None)
                return import_kdump(list(source), output, **options)
            raise FormatError(f"{', '.join(map(str, source))}: several files import only as a "
                              f"makedumpfile --split set")
        source = source[0]
    kind = sniff(source)
    if kind in WRAPPERS:
        inner, problem = unwrap(source, kind)
        try:
            if sniff(inner) not in ("elf", "kdump", "flattened", "lime"):
                raise unsupported(f"{source} (decompressed)", sniff(inner), "an ELF vmcore or kdump file")
            warn = options.get("warn")
            if problem and warn:
                warn(problem)
            return import_any(inner, output, **options)
        finally:
            inner.unlink(missing_ok=True)
    if kind == "elf":
        from .importer import import_vmcore

        return import_vmcore(source, output, **options)
    if kind in ("kdump", "flattened"):
        from .kdump_import import import_kdump

        level = options.pop("dump_level", None)
        if level not in (None, 0, 1):
            raise FormatError(f"{source}: a makedumpfile file keeps the dump level it was written "
                              f"at; --dump-level applies to ELF vmcores")
        for key in ("min_zero_pages", "fallback_level_1", "warn"):
            options.pop(key, None)
        return import_kdump(source, output, **options)
    if kind == "lime":
        from .lime import import_lime

        for key in ("dump_level", "min_zero_pages", "fallback_level_1", "warn"):
            if key == "dump_level" and options.get(key) not in (None, 0, 1):
                raise FormatError(f"{source}: --dump-level needs VMCOREINFO and struct pages; "
                                  f"import a LiME image at level 1")
            options.pop(key, None)
        return import_lime(source, output, **options)
    if kind == "tsd":
        raise FormatError(f"{source}: already a .tsd dump (nothing to import)")
    raise unsupported(source, kind, "an ELF vmcore or kdump file")
