"""One opening path for every command: any dump file as the same ``Dump``.

Why one path: ``inspect``, ``verify``, ``export``, ``analyze``, ``shell``,
``crash``, ``triage`` and ``collect`` all take the files users have (a
``.tsd``, an ELF vmcore, makedumpfile's kdump-compressed, flattened or
``--split`` files, any of those but ``.tsd`` in gzip/bzip2/xz/lz4).  Each
used to special-case them (or refuse them: "import it first").
:func:`open_any` picks by magic and returns either the ``.tsd`` reader's
``Dump`` or a :class:`ForeignDump` that offers the same surface the commands
read (``memory`` with ``ranges``/``read``/``missing_reasons``, ``memory_map``,
``excluded``, ``completeness()``, ``header``, ``files``, ``problems``,
``dump_id``), so the code after the opening step is the same for every
format.  Pages a producer left out (makedumpfile's dump level, the
``p_memsz`` tails of ``makedumpfile -E``) are *excluded* runs of class
``UNKNOWN``, never missing and never zeros; pages the file should hold and
does not (cut short, INCOMPLETE) are missing with the reason.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any

from ..contracts.frozen import Frozen
from ..errors import ExcludedPageError, FormatError
from ..limits import max_runs
from ..tsd import MemoryMap
from ..tsd.completeness import Completeness, measure
from ..tsd.memory import Range, RangeList
from ..tsd.records import DUMP_LEVEL_ZERO_AS_RECORDS, Endian, ExcludedRange, PageClass, excluded_list
from ..tsd.table import RunList
from .detect import sniff, unsupported
from .unwrap import WRAPPERS, unwrap

__all__ = ["open_any", "open_foreign", "ForeignDump", "ForeignProblem", "ForeignFile",
           "ForeignHeader", "foreign_identity", "foreign_dump_id", "tsd_or_kind"]

_MAGIC_KIND = {"kdump-compressed": "kdump", "kdump-flattened": "flattened", "elf-vmcore": "elf"}
_SAMPLE = 1 << 20  # bytes hashed at each end of a file for its identity


class ForeignProblem(str):
    """A problem line (a ``str``, as ``analyze`` prints it) that also has the
    ``path``/``offset``/``message`` of a ``.tsd`` ``Problem`` (``inspect``)."""

    path: str
    offset: int
    message: str

    def __new__(cls, path: str, message: str, offset: int = 0) -> ForeignProblem:
        self = super().__new__(cls, message)
        self.path, self.offset, self.message = path, offset, message
        return self


class ForeignHeader(Frozen):
    """What ``inspect`` shows of a ``.tsd`` header, for a file of another format
    (``format``: "kdump-compressed (makedumpfile header version 6)", "ELF64 vmcore").
    A :class:`~..contracts.frozen.Frozen`, not a frozen dataclass (no ``exec`` per
    method at import: issue 21).
    """

    _fields = ("arch", "page_size", "format", "producer", "created_ns", "endian", "major", "minor")
    arch: str
    page_size: int
    format: str
    producer: str
    created_ns: int
    endian: Endian
    major: int | None
    minor: int | None

    def __init__(self, arch: str, page_size: int, format: str, producer: str, created_ns: int,
                 endian: Endian = Endian.LITTLE, major: int | None = None,
                 minor: int | None = None) -> None:
        for name, value in zip(self._fields, (arch, page_size, format, producer, created_ns, endian,
                                              major, minor)):
            object.__setattr__(self, name, value)


class ForeignFile(Frozen):
    """One file of a foreign dump (``inspect``'s file lines); ``has_footer``: nothing
    to close, the format has no footer.
    A :class:`~..contracts.frozen.Frozen`, not a frozen dataclass (no ``exec`` per
    method at import: issue 21).
    """

    _fields = ("name", "size", "has_footer", "records")
    name: str
    size: int
    has_footer: bool
    records: tuple

    def __init__(self, name: str, size: int, has_footer: bool = True, records: tuple = ()) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "has_footer", has_footer)
        object.__setattr__(self, "records", records)


class _Memory:
    """``ranges()`` / ``read()`` / ``missing_reasons()`` over an ``ElfVmcore`` or a ``KdumpFile``.

    ``present`` and ``missing`` may be lists or :class:`~..tsd.table.RunList`
    columns (a kdump bitmap's runs: millions of them, issue 22); columns
    stay columns, with no object per run."""

    def __init__(self, reader: Any, present, missing) -> None:
        self._reader = reader
        if getattr(present, "columnar", False):
            import numpy as np

            starts = present.starts
            self._ranges = RangeList(starts, starts + (present.lengths - np.uint64(1)),
                                     np.zeros(len(starts), bool))
            self.present_bytes = present.total()
        else:
            # the .tsd reader's lazy sequence, over lists: numpy only if a caller asks for its columns
            self._ranges = RangeList([a for a, _ in present], [a + n - 1 for a, n in present],
                                     [False] * len(present))
            self.present_bytes = sum(n for _, n in present)
        self._missing = missing
        self.zero_bytes = 0

    def ranges(self) -> RangeList:
        return self._ranges

    def range_arrays(self):
        """:meth:`ranges` as numpy columns (first, inclusive last, zero) for completeness."""
        r = self._ranges
        return r.starts, r.lasts, r.zero

    def missing_ranges(self):
        if isinstance(self._missing, _ReasonRuns):
            import numpy as np

            m = self._missing
            return RangeList(m.starts, m.starts + (m.lengths - np.uint64(1)), np.zeros(len(m), bool),
                             kind="missing")
        return [Range(a, n, "missing") for a, n, _ in self._missing]

    def missing_reasons(self):
        return self._missing if isinstance(self._missing, _ReasonRuns) else list(self._missing)

    def read(self, paddr: int, size: int) -> bytes:
        return self._reader.read(paddr, size)


class _ReasonRuns(RunList):
    """Missing runs that share one reason, as ``(paddr, length, reason)``: the
    surface of the ``.tsd`` reader's ``MissingList`` (``starts``, ``lengths``,
    ``reason(i)``, ``said()``) over a kdump file's run columns."""

    __slots__ = ("_why",)

    def __init__(self, runs: RunList, why: str) -> None:
        super().__init__(runs.starts, runs.lengths, make=lambda a, n, _: (a, n, why))
        self._why = why

    def reason(self, i: int) -> str:
        return self._why

    def said(self):
        import numpy as np

        return np.full(len(self), bool(self._why))


def _missing_runs(runs, why: str):
    """``(paddr, length, why)`` for each run: columns stay columns."""
    if getattr(runs, "columnar", False):
        return _ReasonRuns(runs, why)
    return [(a, n, why) for a, n in runs]


class _HeldOnly:
    """An ``ElfVmcore`` whose reads fault outside the file-backed ranges ``held``."""

    def __init__(self, core: Any, held: list[tuple[int, int]]) -> None:
        self._core, self._held = core, held
        self._starts = [a for a, _ in held]
        self.vmcoreinfo, self.notes = core.vmcoreinfo, core.notes

    def read(self, paddr: int, size: int) -> bytes:
        pos, end = paddr, paddr + size
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i < 0 or pos >= self._held[i][0] + self._held[i][1]:
                raise ExcludedPageError(pos, "not in the ELF file (left out by its producer, "
                                             "e.g. makedumpfile -E -d N)")
            pos = self._held[i][0] + self._held[i][1]
        return self._core.read(paddr, size)

    def close(self) -> None:
        self._core.close()


class ForeignDump:
    """An ELF vmcore or kdump file (set), seen as a ``.tsd`` ``Dump`` by the commands."""

    def __init__(self, paths: list[Path], kind: str, reader: Any, memory: _Memory,
                 header: ForeignHeader, memory_map: MemoryMap, excluded: list[ExcludedRange],
                 problems: list[str], properties: dict[str, str], vmcoreinfo: bytes | None,
                 notes: bytes | None) -> None:
        self.path, self.kind, self._reader = paths[0], kind, reader
        self.files = [ForeignFile(str(p), _size(p)) for p in paths]
        self.memory = memory
        self.header = header
        self.memory_map = memory_map
        self.excluded = excluded
        self.vmcoreinfo = vmcoreinfo
        self.notes = notes or None
        self.problems = [ForeignProblem(str(self.path), p) for p in problems]
        self.properties = {"source": kind, "source_name": ",".join(p.name for p in paths),
                           **properties}
        self.dump_id = foreign_dump_id(_MAGIC_KIND.get(kind, kind), reader, paths)  # as triage names it
        self.events: list = []
        self._completeness: Completeness | None = None

    def completeness(self) -> Completeness:
        """Present memory against the file's own map, excluded runs left out (as for ``.tsd``)."""
        if self._completeness is None:
            self._completeness = measure(self.memory, self.memory_map, self.properties,
                                         excluded=self.excluded)
        return self._completeness

    @property
    def truncated(self) -> bool:
        return False  # a cut file's lost pages are missing ranges, measured above

    @property
    def reader(self) -> Any:
        """The format's own reader (``ElfVmcore``, ``KdumpFile`` or ``KdumpSet``)."""
        return self._reader

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> ForeignDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # a wrapped file's temporary copy, already unlinked


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _sample_hash(path: Path) -> str:
    """BLAKE2b-128 of the size and the first and last MiB: equal for byte copies."""
    import hashlib  # here: OpenSSL's start-up is 5-7 ms of every .tsd opened (issue 21)

    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        h.update(f.read(_SAMPLE))
        if size > _SAMPLE:
            f.seek(max(_SAMPLE, size - _SAMPLE))
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


def foreign_dump_id(kind: str, reader: Any, paths: list[Path]) -> str:
    """What names the dump: the files of one ``--split`` set share it (their
    common header and VMCOREINFO); any other file is a dump of its own, named
    by its content (so a copy is the same dump)."""
    header = getattr(reader, "header", None)
    if getattr(header, "split", False):
        import hashlib

        h = hashlib.blake2b(digest_size=12)
        h.update(repr((header.header_version, header.release, header.max_mapnr,
                       header.dump_level)).encode())
        h.update(reader.vmcoreinfo or b"")
        h.update(reader.notes or b"")
        return f"kdump-split-{h.hexdigest()}"
    try:
        return f"{kind}-{_sample_hash(paths[0])[:24]}"
    except OSError:
        return f"{kind}-{paths[0].name}"


def foreign_identity(path: Path) -> tuple[str, str, int]:
    """``(dump id, content identity, written at ns)`` of a dump file that is not a
    ``.tsd``, for ``triage``'s grouping: opened only as far as the header (a
    wrapped file is not decompressed: each is a dump of its own).  The time is
    the one in the file (makedumpfile's header), the same for every copy; 0
    where the format has none (ELF).

    :raises FormatError: not a dump this tool reads.
    """
    path = Path(path)
    kind = sniff(path)
    identity = _sample_hash(path)
    if kind in WRAPPERS or kind in ("elf", "lime"):
        return f"{kind}-{identity[:24]}", identity, 0
    if kind in ("kdump", "flattened"):
        from .kdump import KdumpFile

        with KdumpFile(path) as k:
            return foreign_dump_id(kind, k, [path]), identity, k.header.timestamp_ns
    raise unsupported(path, kind)


def tsd_or_kind(path: Path) -> str:
    """:func:`~.detect.sniff`, but a file *named* ``.tsd`` that has no known magic
    is left to the ``.tsd`` reader, whose message says what is wrong with it."""
    kind = sniff(path)
    return "tsd" if kind == "unknown" and Path(path).suffix == ".tsd" else kind


def open_any(paths: list[str | os.PathLike[str]] | tuple, *, cache_bytes: int | None = None) -> Any:
    """Open the files of one dump, whatever their format (by magic).

    :param cache_bytes: the ``.tsd`` reader's decompressed-chunk LRU (default: its own).
    :returns: the ``.tsd`` reader's ``Dump`` or a :class:`ForeignDump`.
    :raises FormatError: one line: a missing file, a format not read here,
        or ``.tsd`` files mixed with others.
    """
    from ..tsd import open_dump

    paths = [Path(p) for p in paths]
    if not paths:
        raise FormatError("no dump file given")
    kinds = [tsd_or_kind(p) for p in paths]
    if all(k == "tsd" for k in kinds):
        return open_dump(paths, cache_bytes=cache_bytes)
    if "tsd" in kinds:
        raise FormatError(f"{', '.join(map(str, paths))}: .tsd files and files of other formats "
                          f"are not one dump")
    return open_foreign(paths)


def open_foreign(paths: list[Path]) -> ForeignDump:
    """Open one ELF vmcore or kdump file, or a ``--split`` set, as a ``Dump``-like object.

    :raises FormatError: several files that are not one split set, a
        ``.tsd``, or a format not read here.
    """
    paths = [Path(p) for p in paths]
    path = paths[0]
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
            if inner_kind not in ("elf", "kdump", "flattened", "lime"):
                raise unsupported(f"{path} (decompressed)", inner_kind)
            dump = open_foreign([inner])
        finally:
            inner.unlink(missing_ok=True)  # the open reader keeps it alive; nothing is left behind
        dump.path = path
        dump.files = [ForeignFile(str(path), _size(path))]
        dump.properties["source_name"] = path.name
        dump.properties["wrapper"] = kind
        dump.dump_id = f"{kind}-{_sample_hash(path)[:24]}"
        if problem:
            dump.problems.insert(0, ForeignProblem(str(path), problem))
        return dump
    if kind == "elf":
        return _open_elf(path)
    if kind in ("kdump", "flattened"):
        return _open_kdump(paths)
    if kind == "lime":
        return _open_lime(path)
    raise unsupported(path, kind)


def _open_lime(path: Path) -> ForeignDump:
    from .importer import vmcoreinfo_fields
    from .lime import LimeFile

    img = LimeFile(path)
    try:
        missing = [(a, n, "not in the LiME file (cut short)") for a, n in img.missing_ranges()]
        props = {"source_bytes": str(img.file_size)}
        release = vmcoreinfo_fields(img.vmcoreinfo).get("OSRELEASE")
        if release:
            props["kernel_release"] = release
        header = ForeignHeader(img.arch, img.page_size, "LiME (version 1)",
                               "LiME or AVML (VMCOREINFO found in memory)" if img.vmcoreinfo
                               else "LiME or AVML", _mtime_ns(path))
        return ForeignDump([path], "lime", img, _Memory(img, img.ranges(), missing), header,
                           MemoryMap.from_ranges(img.memory_ranges()), [], list(img.problems),
                           props, img.vmcoreinfo, None)
    except BaseException:
        img.close()
        raise


def _open_elf(path: Path) -> ForeignDump:
    from .elf import ElfVmcore
    from .filter_note import parse_filter_note, strip_filter_note
    from .importer import ELF_LEFT_OUT_LEVEL, vmcoreinfo_fields

    core = ElfVmcore(path)
    try:
        info = vmcoreinfo_fields(core.vmcoreinfo)
        page_size = int(info.get("PAGESIZE", "4096") or 4096)
        # Only the bytes the file holds: p_memsz beyond p_filesz is how makedumpfile -E
        # marks the pages its dump level left out (the kernel and QEMU never write it),
        # so a read there faults as excluded instead of seeing zeros the machine may not have had.
        held, tails = [], []
        for start, length, seg in core.ranges():
            n = max(0, min(start + length, seg.paddr + seg.size) - start)
            if n:
                held.append((start, n))
            if length > n:
                tails.append((start + n, length - n))
        filtered = parse_filter_note(core.notes, page_size, max_runs(core.file_size)) if core.notes else None
        notes = strip_filter_note(core.notes) if filtered is not None else core.notes
        excluded = [ExcludedRange(a, n, PageClass.UNKNOWN) for a, n in tails]
        if filtered is not None:  # our own export of a filtered dump says what it left out
            memory_map, excluded = filtered[0], _joined_excluded(filtered[1], excluded)
        else:
            memory_map = MemoryMap.from_ranges(
                [(a, n) for a, n, _ in core.ranges()] + core.cut_off,
                dump_level=ELF_LEFT_OUT_LEVEL if tails else DUMP_LEVEL_ZERO_AS_RECORDS)
        props = {"source_bytes": str(core.file_size)}
        if info.get("OSRELEASE"):
            props["kernel_release"] = info["OSRELEASE"]
        if tails:
            props["left_out_by_producer"] = f"{sum(n for _, n in tails)} bytes (p_memsz beyond p_filesz)"
        header = ForeignHeader(core.arch, page_size, f"ELF{core.elfclass} vmcore",
                               "ELF vmcore (/proc/vmcore, QEMU dump-guest-memory or makedumpfile -E)",
                               _mtime_ns(path),
                               Endian.LITTLE if core.little_endian else Endian.BIG)
        reader = _HeldOnly(core, held)
        missing = [(a, n, "not in the ELF file (cut short)") for a, n in core.cut_off if n > 0]
        return ForeignDump([path], "elf-vmcore", reader, _Memory(reader, held, missing), header,
                           memory_map, excluded, list(core.problems), props, core.vmcoreinfo, notes)
    except BaseException:
        core.close()
        raise


def _joined_excluded(noted, tails: list[ExcludedRange]):
    """The runs our export's note names and the ``p_memsz`` tails, by address:
    a list, or columns when the note's runs are columns (millions, issue 22)."""
    if not hasattr(noted, "starts"):
        return sorted(list(noted) + tails, key=lambda r: r.paddr)
    if not tails:
        return noted
    import numpy as np

    a = np.concatenate((noted.starts, np.array([r.paddr for r in tails], np.uint64)))
    n = np.concatenate((noted.lengths, np.array([r.length for r in tails], np.uint64)))
    c = np.concatenate((noted.tags, np.array([int(r.cls) for r in tails], np.uint32)))
    order = np.argsort(a, kind="stable")
    return excluded_list(a[order], n[order], c[order])


def _excluded_runs(runs) -> list[ExcludedRange] | RunList:
    """A kdump file's excluded runs as ``ExcludedRange`` of class UNKNOWN (the
    file does not say which class): a list when few, columns past SMALL_TABLE."""
    from ..tsd.table import SMALL_TABLE

    if len(runs) <= SMALL_TABLE or not getattr(runs, "columnar", False):
        return [ExcludedRange(a, n, PageClass.UNKNOWN) for a, n in runs]
    import numpy as np

    return excluded_list(runs.starts, runs.lengths, np.full(len(runs), int(PageClass.UNKNOWN), np.uint32))


def _open_kdump(paths: list[Path]) -> ForeignDump:
    from .kdump import open_kdump
    from .kdump_import import kdump_properties

    k = open_kdump(paths)
    try:
        ps = k.page_size
        excluded = _excluded_runs(k.excluded_ranges())
        level = k.header.dump_level if k.header.dump_level is not None and len(excluded) else 1
        memory_map = MemoryMap.from_ranges(k.memory_ranges(), dump_level=level | 1)
        why = "; ".join(getattr(k, "missing_reason", {})) or "not in the kdump file"
        mem = _Memory(k, k.present_ranges(), _missing_runs(k.missing_ranges(), why))
        label = "kdump-flattened" if k.flattened else "kdump-compressed"
        header = ForeignHeader(k.arch, ps, f"{label} (makedumpfile header version "
                                           f"{k.header.header_version})",
                               f"makedumpfile -d {k.header.dump_level}"
                               + (f", --split into {len(paths)}" if len(paths) > 1 else ""),
                               k.header.timestamp_ns or _mtime_ns(paths[0]))  # makedumpfile's own time
        props = kdump_properties(k, [p.name for p in paths])
        return ForeignDump(paths, label, k, mem, header, memory_map, excluded, list(k.problems),
                           props, k.vmcoreinfo, k.notes)
    except BaseException:
        k.close()
        raise
