"""Which dump format a file is (by its magic), and opening the ones that are not ``.tsd``.

Why by magic: users hand every command whatever ``/var/crash`` holds,
named ``dump.202612030000`` or ``vmcore``; the first bytes say what it is.
:func:`open_foreign` gives an ELF vmcore or a kdump file the shape of a
``.tsd`` ``Dump`` (``vmcoreinfo``, ``notes``, ``memory``, ``header``,
``problems``) so ``analyze``, ``shell`` and ``export`` read it directly;
an unknown file is one line naming the formats understood.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..tsd.memory import Range
from .unwrap import WRAPPERS, unwrap

__all__ = ["sniff", "open_foreign", "ForeignDump", "UNDERSTOOD", "is_tsd", "require_tsd", "import_any",
           "unsupported"]

UNDERSTOOD = ("understood formats: .tsd; ELF vmcore (/proc/vmcore, QEMU dump-guest-memory, "
              "makedumpfile -E); makedumpfile kdump-compressed (-c, -l, -p, -z) and "
              "flattened (-F); any of those but .tsd in gzip, bzip2, xz or lz4")
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
]
_NOT_YET = {"lime": "a LiME memory image", "diskdump": "an old diskdump file"}


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


def is_tsd(path: str | os.PathLike[str]) -> bool:
    try:
        return sniff(path) == "tsd"
    except FormatError:
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


@dataclass(frozen=True)
class _Header:
    arch: str
    page_size: int


class _Memory:
    """``ranges()`` / ``read()`` over an ``ElfVmcore`` or a ``KdumpFile``."""

    def __init__(self, reader: Any, present: list[tuple[int, int]],
                 missing: list[tuple[int, int]]) -> None:
        self._reader = reader
        self._ranges = [Range(a, n, "data") for a, n in present]
        self._missing = [Range(a, n, "missing") for a, n in missing]
        self.present_bytes = sum(n for _, n in present)
        self.zero_bytes = 0

    def ranges(self) -> list[Range]:
        return list(self._ranges)

    def missing_ranges(self) -> list[Range]:
        return list(self._missing)

    def read(self, paddr: int, size: int) -> bytes:
        return self._reader.read(paddr, size)


class _HeldOnly:
    """An ``ElfVmcore`` whose reads fault outside the file-backed ranges ``held``."""

    def __init__(self, core: Any, held: list[tuple[int, int]]) -> None:
        self._core, self._held = core, held
        self._starts = [a for a, _ in held]
        self.vmcoreinfo, self.notes = core.vmcoreinfo, core.notes

    def read(self, paddr: int, size: int) -> bytes:
        import bisect

        from ..errors import NotCollectedError

        pos, end = paddr, paddr + size
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i < 0 or pos >= self._held[i][0] + self._held[i][1]:
                raise NotCollectedError(pos, f"physical {pos:#x} is not in the ELF file "
                                             f"(left out by its producer)")
            pos = self._held[i][0] + self._held[i][1]
        return self._core.read(paddr, size)

    def close(self) -> None:
        self._core.close()


class ForeignDump:
    """An ELF vmcore or kdump file, seen as a ``.tsd`` ``Dump`` by the commands."""

    def __init__(self, path: Path, kind: str, reader: Any, memory: _Memory, arch: str,
                 page_size: int, problems: list[str]) -> None:
        self.path, self.kind, self._reader = path, kind, reader
        self.files = [path]
        self.memory = memory
        self.header = _Header(arch, page_size)
        self.vmcoreinfo = reader.vmcoreinfo
        self.notes = reader.notes or None
        self.problems = problems
        self.dump_id = None
        self.properties = {"source": kind, "source_name": path.name}
        self.events: list = []

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> ForeignDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_foreign(paths: list[Path]) -> ForeignDump:
    """Open one ELF vmcore or kdump file as a ``Dump``-like object.

    :raises FormatError: several files, a ``.tsd``, or a format not read here.
    """
    path = Path(paths[0])
    if len(paths) != 1:
        kinds = {sniff(p) for p in paths}
        if not kinds <= {"kdump", "flattened"}:
            raise FormatError(f"{', '.join(map(str, paths))}: only .tsd dumps and makedumpfile "
                              f"--split sets come in several files")
        kind = "kdump"
    else:
        kind = sniff(path)
    if kind in WRAPPERS:
        inner, problem = unwrap(path, kind)
        try:
            inner_kind = sniff(inner)
            if inner_kind not in ("elf", "kdump", "flattened"):
                raise unsupported(f"{path} (decompressed)", inner_kind)
            dump = open_foreign([inner])
        finally:
            inner.unlink(missing_ok=True)  # the open reader keeps it alive; nothing is left behind
        dump.path = path
        dump.files = [path]
        dump.properties["source_name"] = path.name
        dump.properties["wrapper"] = kind
        if problem:
            dump.problems.insert(0, problem)
        return dump
    if kind == "elf":
        from .elf import ElfVmcore

        core = ElfVmcore(path)
        info_ps = _page_size(core.vmcoreinfo)
        # Only the bytes the file holds: p_memsz beyond p_filesz is how makedumpfile -E
        # marks the pages its dump level left out (the kernel and QEMU never write it),
        # so a read there faults instead of seeing zeros the machine may not have had.
        held, left_out = [], 0
        for start, length, seg in core.ranges():
            n = max(0, min(start + length, seg.paddr + seg.size) - start)
            if n:
                held.append((start, n))
            left_out += length - n
        mem = _Memory(_HeldOnly(core, held), held, [])
        problems = [f"{left_out >> 20} MiB of the ELF's segments are not in the file "
                    f"(p_memsz beyond p_filesz: left out by its producer, e.g. makedumpfile -E -d N)"
                    ] if left_out else []
        return ForeignDump(path, "elf-vmcore", core, mem, core.arch, info_ps, problems)
    if kind in ("kdump", "flattened"):
        from .kdump import open_kdump

        k = open_kdump([Path(p) for p in paths])
        try:
            mem = _Memory(k, k.present_ranges(), k.missing_ranges())
            problems = list(k.problems)
            excluded = sum(n for _, n in k.excluded_ranges())
            if excluded:
                problems.append(f"{excluded >> 20} MiB excluded by the producer "
                                f"(makedumpfile -d {k.header.dump_level})")
        except BaseException:
            k.close()
            raise
        label = "kdump-flattened" if k.flattened else "kdump-compressed"
        return ForeignDump(path, label, k, mem, k.arch, k.page_size, problems)
    raise unsupported(path, kind)


def _page_size(vmcoreinfo: bytes | None) -> int:
    for line in (vmcoreinfo or b"").decode("ascii", "replace").splitlines():
        if line.startswith("PAGESIZE="):
            try:
                return int(line.split("=", 1)[1])
            except ValueError:
                break
    return 4096


_LABELS = {"elf": "an ELF vmcore", "kdump": "a makedumpfile kdump-compressed file",
           "flattened": "a makedumpfile flattened (-F) file"}


def require_tsd(paths: list[Path]) -> None:
    """For commands that read ``.tsd`` only: a file of another format is one line
    saying what it is and how to use it (never ``bad magic``).

    Missing files are left to the ``.tsd`` reader's own message.
    """
    for p in paths:
        if not Path(p).exists():
            continue
        kind = sniff(p)
        if kind == "tsd":
            continue
        if kind in _LABELS:
            raise FormatError(f"{p}: {_LABELS[kind]}, not a .tsd: `tsubaki-forensics import {p} "
                              f"-o {Path(p).name}.tsd` converts it (analyze and shell open it "
                              f"directly)")
        raise unsupported(p, kind, "a .tsd dump")


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
            if sniff(inner) not in ("elf", "kdump", "flattened"):
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
    if kind == "tsd":
        raise FormatError(f"{source}: already a .tsd dump (nothing to import)")
    raise unsupported(source, kind, "an ELF vmcore or kdump file")
