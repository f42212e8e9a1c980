"""Import a kdump-compressed (or flattened) file into a ``.tsd`` dump.

The file's 1st bitmap is the machine's memory and its 2nd bitmap what
makedumpfile kept: the notice (FORMAT.md §4.3) states the whole map at the
producer's dump level, and the pages left out become EXCLUDED records
(§4.9) of class ``UNKNOWN`` ("excluded by the producer": the file does not
say which class each page was), written first, so every reader tells them
from lost pages.  Pages the file should hold and does not (cut short,
INCOMPLETE) become MISSING records with the reason; a page that does not
decompress becomes a MISSING record naming the damage.  Pages are batched
into runs (in one reused buffer) so the writer compresses on its threads.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from ..tsd import MemoryMap, TsdWriter
from ..tsd.records import PageClass
from ..tsd.writer import DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL
from .importer import ImportResult, vmcoreinfo_fields
from ..errors import NotCollectedError
from .kdump import PageDamage, open_kdump

__all__ = ["import_kdump", "kdump_properties"]

BATCH = 8 << 20


def kdump_properties(k: Any, names: list[str]) -> dict[str, str]:
    """The properties of a kdump file (set): what ``import`` and ``inspect`` show."""
    info = vmcoreinfo_fields(k.vmcoreinfo)
    props = {"source": "kdump-flattened" if k.flattened else "kdump-compressed",
             "source_name": ",".join(names),
             "source_bytes": str(k.file_size),
             "kdump_header_version": str(k.header.header_version),
             "kdump_codecs": ",".join(sorted(k.codecs())) or "none"}
    if k.header.dump_level is not None:
        props["kdump_dump_level"] = str(k.header.dump_level)
    if k.header.incomplete:
        props["kdump_incomplete"] = "1"
    release = info.get("OSRELEASE") or k.header.release
    if release:
        props["kernel_release"] = release
    return props


class _RunsInOrder:
    """Held and missing runs of dumped pages as (pfn, count, held), in address
    order, from two sorted :class:`~..tsd.table.RunList` columns: the order is
    made as columns and the tuples only a slice at a time."""

    def __init__(self, pfn, count, held) -> None:
        self._cols = (pfn, count, held)
        self.pages = int(count.sum()) if len(count) else 0

    def __iter__(self):
        pfn, count, held = self._cols
        for k in range(0, len(pfn), 4096):
            yield from zip(pfn[k:k + 4096].tolist(), count[k:k + 4096].tolist(), held[k:k + 4096].tolist())


def _runs_in_order(present, missing, ps: int) -> _RunsInOrder:
    import numpy as np

    def cols(runs):
        if hasattr(runs, "starts"):
            return runs.starts // np.uint64(ps), runs.lengths // np.uint64(ps)
        return (np.array([a // ps for a, _ in runs], np.uint64), np.array([n // ps for _, n in runs], np.uint64))

    (pa, pn), (ma, mn) = cols(present), cols(missing)
    pfn = np.concatenate((pa, ma))
    count = np.concatenate((pn, mn))
    held = np.concatenate((np.ones(len(pa), bool), np.zeros(len(ma), bool)))
    del pa, pn, ma, mn
    order = np.lexsort((~held, pfn))  # as sorted() orders (pfn, count, held): the two never share a pfn
    return _RunsInOrder(pfn[order], count[order], held[order])


def import_kdump(source: str | os.PathLike[str] | list, output: str | os.PathLike[str], *,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, level: int = DEFAULT_LEVEL,
                 threads: int = 2, progress: Callable[[int, int], None] | None = None,
                 dedup: bool = False) -> ImportResult:
    """Copy every kept page, VMCOREINFO and the notes of ``source`` (one file, or
    the files of a ``--split`` set in any order) into ``output``."""
    t0 = time.perf_counter()
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    with open_kdump(sources) as k:
        ps = k.page_size
        props = kdump_properties(k, [os.path.basename(os.fspath(p)) for p in sources])
        excluded = k.excluded_ranges()
        dump_level = k.header.dump_level if k.header.dump_level is not None else 1
        if not len(excluded):
            dump_level = 1  # nothing left out: a level-1 file any 1.3 reader takes
        memory_map = MemoryMap.from_ranges(k.memory_ranges(), dump_level=dump_level | 1)
        # Runs of dumped pages, held or missing, in address order: never a
        # mask or a pfn per frame of the machine (a header may claim a huge one).
        # Columns, walked a slice at a time (a bitmap alternating every frame
        # has a run per two frames: never a tuple per run, issue 22).
        ps_runs = _runs_in_order(k.present_ranges(), k.missing_ranges(), ps)
        total = ps_runs.pages * ps
        done = 0
        extra: dict = {"dedup": True} if dedup else {}
        # One buffer for every batch: write_memory returns once the batch is
        # written, so the next batch reuses it (no growing bytearray per batch).
        batch = memoryview(bytearray(BATCH // ps * ps))
        with TsdWriter(output, arch=k.arch, page_size=ps, chunk_size=chunk_size, level=level,
                       threads=threads, memory_map=memory_map, **extra) as w:
            w.write_metadata(vmcoreinfo=k.vmcoreinfo, notes=k.notes or None, properties=props)
            for a, n in excluded:
                w.write_excluded(a, n, PageClass.UNKNOWN)
            for pfn, count, held in ps_runs:
                if not held:  # a run of missing pages: one MISSING record
                    reason = next(iter(k.missing_reason), "not in the kdump file")
                    w.write_missing(pfn * ps, count * ps, reason)
                    done += count * ps
                    continue
                pos, end = pfn, pfn + count
                while pos < end:
                    stop = min(end, pos + BATCH // ps)
                    fill, first = 0, pos  # pages of ``batch`` filled, from pfn ``first``
                    while pos < stop:
                        try:
                            page = k.read_page(pos)
                        except (PageDamage, NotCollectedError) as e:  # flush, name the damage
                            if fill:
                                w.write_memory(first * ps, batch[:fill * ps])
                            why = f"damaged in the kdump file: {e}" if isinstance(e, PageDamage) \
                                else f"not in the kdump file: {e}"
                            w.write_missing(pos * ps, ps, why)
                            fill, first = 0, pos + 1
                        else:
                            batch[fill * ps:(fill + 1) * ps] = page
                            fill += 1
                        pos += 1
                    if fill:
                        w.write_memory(first * ps, batch[:fill * ps])
                    if progress:
                        progress(done + (pos - pfn) * ps, total)
                done += count * ps
            stats = w.stats
            dump_id = str(w.dump_id)
            dedup_pages = w.dedup_pages
            excluded_bytes = w.excluded_bytes
    return ImportResult(dump_id, ",".join(map(os.fspath, sources)), os.fspath(output), stats,
                        time.perf_counter() - t0, os.path.getsize(output),
                        len(memory_map.ranges), dedup_pages, dump_level=dump_level | 1,
                        excluded_bytes=excluded_bytes)
