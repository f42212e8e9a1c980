"""Import an ELF vmcore into a ``.tsd`` dump, streaming with a flat RSS.

Why ``write_file_range``: the writer's worker threads ``pread`` their own
chunks of the vmcore (measured: 2.5x cheaper than faulting an mmap in and
dropping it again), so reading, zero detection and
compression run on both cores and a 4 GiB vmcore costs the same memory as a
512 MiB one.  Holes of a sparse vmcore (our own ``export``, ``cp --sparse``
copies) are found with SEEK_DATA/SEEK_HOLE and become ZERO records unread.
"""

from __future__ import annotations

import errno
import os
import time
from typing import TYPE_CHECKING, Callable

from ..contracts.frozen import Frozen
from ..errors import PageClassError
from ..limits import max_runs
from ..tsd import MemoryMap, TsdWriter, WriteStats
from ..tsd.records import DUMP_LEVEL_ZERO_AS_RECORDS, PageClass
from .filter_note import parse_filter_note, strip_filter_note
from ..tsd.writer import DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL
from .elf import ElfVmcore

if TYPE_CHECKING:  # the page classifier needs drgn: imported only for a dump level above 1
    from ..pageclass import PageClassification

__all__ = ["import_vmcore", "ImportResult", "vmcoreinfo_fields", "file_extents", "byte_progress",
           "ELF_LEFT_OUT_LEVEL"]

#: makedumpfile -E does not record its dump level; the pages it left out are
#: written as EXCLUDED runs, which format 1.4 allows only at a level above 1.
ELF_LEFT_OUT_LEVEL = 31

WINDOW = 64 << 20  # pages classified per write_file_pages call (bounds its job list)


class ImportResult(Frozen):
    """What an import wrote.  ``dedup_pages``: pages stored as references
    (dedup=True); ``dump_level``: the level the dump was written at (after any
    fallback); ``excluded_bytes``: bytes left out as EXCLUDED runs;
    ``fallback``: why the level fell back to 1 (fallback_level_1), or "".
    A :class:`~..contracts.frozen.Frozen`, not a frozen dataclass (no
    ``exec`` per method at import: issue 21)."""

    _fields = ("dump_id", "source", "output", "stats", "seconds", "file_bytes", "segments",
               "dedup_pages", "dump_level", "excluded_bytes", "fallback", "classify_seconds")
    dump_id: str
    source: str
    output: str
    stats: WriteStats
    seconds: float
    file_bytes: int
    segments: int
    dedup_pages: int
    dump_level: int
    excluded_bytes: int
    fallback: str
    classify_seconds: float

    def __init__(self, dump_id: str, source: str, output: str, stats: WriteStats, seconds: float,
                 file_bytes: int, segments: int, dedup_pages: int = 0, dump_level: int = 1,
                 excluded_bytes: int = 0, fallback: str = "", classify_seconds: float = 0.0) -> None:
        for name, value in zip(self._fields, (dump_id, source, output, stats, seconds, file_bytes,
                                              segments, dedup_pages, dump_level, excluded_bytes,
                                              fallback, classify_seconds)):
            object.__setattr__(self, name, value)


def vmcoreinfo_fields(vmcoreinfo: bytes | None) -> dict[str, str]:
    """VMCOREINFO ``KEY=value`` lines as a dict (OSRELEASE, PAGESIZE, ...)."""
    out: dict[str, str] = {}
    for line in (vmcoreinfo or b"").decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def file_extents(fd: int, offset: int, length: int, *, min_hole: int) -> list[tuple[int, int, bool]]:
    """(offset, length, is_data) extents of a file range, from SEEK_DATA/SEEK_HOLE.

    Holes shorter than ``min_hole`` count as data (reading them is cheaper
    than splitting the pipeline); without filesystem support it is all data.
    """
    end = offset + length
    out: list[tuple[int, int, bool]] = []
    pos = offset
    try:
        while pos < end:
            try:
                data = min(os.lseek(fd, pos, os.SEEK_DATA), end)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                data = end  # no data after pos: the rest is a hole
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end) if data < end else end
            if data - pos >= min_hole:
                out.append((pos, data - pos, False))
            elif data > pos:
                data = pos  # a short hole: read it with the data after it
            if hole > data:
                if out and out[-1][2]:
                    out[-1] = (out[-1][0], hole - out[-1][0], True)
                else:
                    out.append((data, hole - data, True))
            pos = hole
    except (OSError, AttributeError):
        return [(offset, length, True)]
    return out


def import_vmcore(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, level: int = DEFAULT_LEVEL,
                  threads: int = 2, min_zero_pages: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  dedup: bool = False, dump_level: int = DUMP_LEVEL_ZERO_AS_RECORDS,
                  fallback_level_1: bool = False,
                  warn: Callable[[str], None] | None = None) -> ImportResult:
    """Copy every PT_LOAD, the notes and VMCOREINFO of ``source`` into ``output``.

    ``dedup``: store repeated pages as references (format 1.2, ``TsdWriter``).
    ``dump_level``: makedumpfile's ``-d`` bits (0..31).  0 and 1 write every
    page (today's files, byte for byte); a level with any bit above 1 classifies
    every page from the crashed kernel's struct pages (:mod:`..pageclass`) and
    records the pages it leaves out as EXCLUDED runs with their class
    (format 1.4).  When VMCOREINFO lacks what that needs, a
    :class:`~..errors.PageClassError` names the field, unless
    ``fallback_level_1``: then the dump is written at level 1 and ``warn``
    gets one line saying why.
    """
    t0 = time.perf_counter()
    if isinstance(dump_level, bool) or not 0 <= dump_level <= 31:
        raise PageClassError(f"dump level must be an integer from 0 to 31, not {dump_level!r}", None)
    with ElfVmcore(source) as core:
        classification = None
        fallback = ""
        t_cls = time.perf_counter()
        info = vmcoreinfo_fields(core.vmcoreinfo)
        page_size = int(info.get("PAGESIZE", "4096") or 4096)
        # An ELF that our own export wrote from a filtered dump says what it left out
        filtered = parse_filter_note(core.notes, page_size, max_runs(core.file_size)) if core.notes else None
        notes = strip_filter_note(core.notes) if filtered is not None else core.notes
        if filtered is not None:
            if dump_level not in (DUMP_LEVEL_ZERO_AS_RECORDS, filtered[0].dump_level):
                raise PageClassError(f"{os.fspath(source)} was exported from a dump at level "
                                     f"{filtered[0].dump_level}; import it at that level (or the "
                                     f"default) to keep its excluded pages", None)
            dump_level = filtered[0].dump_level
        elif dump_level & ~DUMP_LEVEL_ZERO_AS_RECORDS:
            if dedup:
                raise PageClassError("--dedup does not combine with a dump level above 1 yet", None)
            from ..pageclass import PageClassifier

            try:
                classification = PageClassifier(core, core.vmcoreinfo, arch=core.arch).classify(dump_level)
            except PageClassError as e:
                if not fallback_level_1:
                    raise
                fallback = f"dump level {dump_level} impossible ({e}); writing level 1"
                if warn:
                    warn(fallback)
                dump_level = DUMP_LEVEL_ZERO_AS_RECORDS
        classify_seconds = time.perf_counter() - t_cls
        props = {"source": "elf-vmcore", "source_name": os.path.basename(os.fspath(source)),
                 "source_bytes": str(core.file_size)}
        if "OSRELEASE" in info:
            props["kernel_release"] = info["OSRELEASE"]
        extra: dict = {} if min_zero_pages is None else {"min_zero_pages": min_zero_pages}
        if dedup:
            extra["dedup"] = True
        ranges = core.ranges()
        total = sum(length for _, length, _ in ranges)
        done = 0
        # The notice first: what the dump should hold (every PT_LOAD), so any
        # prefix of the output knows its total (FORMAT.md §4.3, §7.4).
        # makedumpfile -E marks the pages its dump level left out as p_memsz beyond
        # p_filesz: excluded by the producer (class UNKNOWN, format 1.4), never zeros
        tails, ragged = _left_out(ranges, page_size)
        if tails and not dump_level & ~DUMP_LEVEL_ZERO_AS_RECORDS and filtered is None:
            dump_level = ELF_LEFT_OUT_LEVEL  # -E records no level; any level above 1 says "left out"
            props["dump_level"] = "unknown (makedumpfile -E: p_memsz beyond p_filesz)"
        memory_map = MemoryMap.from_ranges([(start, length) for start, length, _ in ranges] + core.cut_off,
                                           dump_level=dump_level)
        if filtered is not None:
            memory_map = filtered[0]
        if dump_level & ~DUMP_LEVEL_ZERO_AS_RECORDS and "dump_level" not in props:
            props["dump_level"] = str(dump_level)
        with TsdWriter(output, arch=core.arch, page_size=page_size, chunk_size=chunk_size,
                       level=level, threads=threads, memory_map=memory_map, **extra) as w:
            w.write_metadata(vmcoreinfo=core.vmcoreinfo, notes=notes or None,
                             properties=props)
            runs = [(r.paddr, r.length, r.cls) for r in (filtered[1] if filtered is not None else ())]
            for paddr, length, cls in sorted(runs + [(a, n, PageClass.UNKNOWN) for a, n in tails]):
                w.write_excluded(paddr, length, cls)
            for paddr, length in ragged:
                w.write_missing(paddr, length, "left out by the ELF's producer (p_memsz beyond "
                                               "p_filesz), not whole pages")
            for start, length, seg in ranges:
                file_end = min(start + length, seg.paddr + seg.size)
                base = seg.offset - seg.paddr  # file offset = paddr + base
                if classification is not None:
                    _write_classified(w, core.fileno(), base, start, file_end, classification)
                    done += file_end - start
                    if progress:
                        progress(done, total)
                    done += start + length - file_end  # the tail: excluded above
                    continue
                for off, n, is_data in file_extents(core.fileno(), start + base, file_end - start,
                                                    min_hole=chunk_size):
                    if not is_data:  # a hole in a sparse vmcore: zero without reading it
                        w.write_zero(off - base, n)
                        done += n
                        continue
                    # one call per extent: the pipeline stays full to its end
                    w.write_file_range(off - base, core.fileno(), off, n,
                                       progress=byte_progress(progress, done, total))
                    done += n
                done += start + length - file_end  # p_memsz beyond p_filesz: excluded above
            for paddr, length in core.cut_off:  # a file cut short: what it lacks is missing
                if length > 0:
                    w.write_missing(paddr, length, "not in the ELF file (cut short)")
            if core.problems and warn:
                warn(f"{os.fspath(source)}: {core.problems[0]}"
                     + (f" (and {len(core.problems) - 1} more segments)" if len(core.problems) > 1 else ""))
            stats = w.stats
            dump_id = str(w.dump_id)
            dedup_pages = w.dedup_pages
            excluded_bytes = w.excluded_bytes
        nseg = len(core.segments)
    return ImportResult(dump_id, os.fspath(source), os.fspath(output), stats,
                        time.perf_counter() - t0, os.path.getsize(output), nseg, dedup_pages,
                        dump_level, excluded_bytes, fallback, classify_seconds)


def byte_progress(progress: Callable[[int, int], None] | None, done: int,
            total: int) -> Callable[[int], None] | None:
    """``progress(done, total)`` counted on from ``done`` by the writer's per-job bytes."""
    if progress is None:
        return None
    at = [done]

    def tick(n: int) -> None:
        at[0] += n
        progress(at[0], total)

    return tick


def _left_out(ranges: list, page_size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The ``p_memsz`` tails beyond ``p_filesz`` as (whole pages, ragged edges)."""
    whole, ragged = [], []
    for start, length, seg in ranges:
        a, b = max(start, seg.paddr + seg.size), start + length
        if a >= b:
            continue
        pa, pb = -(-a // page_size) * page_size, b // page_size * page_size
        if pa < pb:
            whole.append((pa, pb - pa))
            ragged += [(x, y - x) for x, y in ((a, pa), (pb, b)) if y > x]
        else:
            ragged.append((a, b - a))
    return whole, ragged


def _write_classified(w: TsdWriter, fd: int, base: int, start: int, end: int,
                      classification: PageClassification) -> None:
    """Write ``[start, end)`` of the vmcore (file offset = paddr + ``base``) page by
    page class: partial pages at the edges are written whole, as data."""
    import numpy as np  # the classifier loaded it; level 1 imports stay numpy-free (issue 21)

    ps = w.page_size
    a, b = -(-start // ps) * ps, end // ps * ps
    if a >= b:
        w.write_file_range(start, fd, start + base, end - start)
        return
    if start < a:
        w.write_file_range(start, fd, start + base, a - start)
    classes = classification.classes
    pfn_a, pfn_b = a // ps, b // ps
    cls = np.full(pfn_b - pfn_a, PageClass.KEPT, np.uint8)
    have = max(0, min(pfn_b, classes.size) - pfn_a)
    cls[:have] = classes[pfn_a:pfn_a + have]
    for pos in range(0, cls.size, WINDOW // ps):  # windows bound each call's job list
        n = min(WINDOW // ps, cls.size - pos)
        w.write_file_pages(a + pos * ps, fd, a + pos * ps + base, n * ps, cls[pos:pos + n])
    if b < end:
        w.write_file_range(b, fd, b + base, end - b)
