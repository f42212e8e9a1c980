"""The TSUBAKI ELF note: what a dump level left out of an exported ELF vmcore.

Why a note: ``export`` of a level-31 ``.tsd`` writes an ELF without the
excluded pages (no PT_LOAD covers them), which alone would make them look
lost; the note carries the dump's memory map, its dump level and its
excluded runs with their class, so that ``import`` of that ELF records them
as excluded again (the classes round-trip).  Readers that do not know the
note (drgn, crash, makedumpfile) skip it like any unknown note.

Descriptor layout (little-endian): ``u32 map_bytes, u32 bodies``, then a
MEMORY_MAP body (FORMAT.md §4.3) of ``map_bytes`` bytes, then ``bodies``
EXCLUDED bodies (§4.9), each self-delimiting by its run count.  Every length
is checked before it is used, with the format's own codecs.
"""

from __future__ import annotations

import struct

from ..errors import FormatError
from ..limits import MAX_RUNS
from ..tsd import records as R
from .notes import build_note, iter_notes

__all__ = ["TSUBAKI_NOTE_NAME", "NT_TSUBAKI_EXCLUDED", "build_filter_note", "parse_filter_note",
           "strip_filter_note", "notes_for_export"]

TSUBAKI_NOTE_NAME = "TSUBAKI"
NT_TSUBAKI_EXCLUDED = 0x54530001  # "TS" 1: the dump level's memory map and excluded runs
_HEAD = struct.Struct("<II")


def build_filter_note(memory_map: R.MemoryMap, excluded: list[R.ExcludedRange], page_size: int) -> bytes:
    """The note (header, name, descriptor) for ``memory_map`` and ``excluded``."""
    body = R.pack_memory_map(memory_map)
    # a record's worth of runs at a time: the runs may be columns (millions, issue 22)
    parts = [R.pack_excluded([(r.paddr, r.length, int(r.cls)) for r in excluded[i:i + R.MAX_EXCLUDED_RUNS]],
                             page_size)
             for i in range(0, len(excluded), R.MAX_EXCLUDED_RUNS)]
    return build_note(TSUBAKI_NOTE_NAME, NT_TSUBAKI_EXCLUDED,
                      _HEAD.pack(len(body), len(parts)) + body + b"".join(parts))


def parse_filter_note(notes: bytes, page_size: int,
                      limit: int = MAX_RUNS) -> tuple[R.MemoryMap, list[R.ExcludedRange]] | None:
    """The memory map and excluded runs of the TSUBAKI note in ``notes``, or None;
    at most ``limit`` runs (:func:`~tsubaki_forensics.limits.max_runs` of the vmcore's size).

    :raises FormatError: the note is there but malformed (one line, names it).
    """
    note = next((n for n in iter_notes(notes) if n.name == TSUBAKI_NOTE_NAME
                 and n.type == NT_TSUBAKI_EXCLUDED), None)
    if note is None:
        return None
    d = memoryview(note.desc)
    try:
        if len(d) < _HEAD.size:
            raise FormatError(f"descriptor of {len(d)} bytes is shorter than its {_HEAD.size}-byte head")
        map_bytes, bodies = _HEAD.unpack_from(d)
        at = _HEAD.size
        if at + map_bytes > len(d):
            raise FormatError(f"memory map of {map_bytes} bytes runs past the descriptor")
        memory_map = R.unpack_memory_map(d[at:at + map_bytes], limit)
        at += map_bytes
        runs: list[R.ExcludedRange] = []
        cols: list[tuple] = []  # past a few runs: numpy columns, never an object per run (issue 22)
        total = 0
        for _ in range(bodies):
            if at + R.EXCLUDED_HEAD.size > len(d):
                raise FormatError("an EXCLUDED body runs past the descriptor")
            (count,) = R.EXCLUDED_HEAD.unpack_from(d, at)
            size = R.EXCLUDED_HEAD.size + min(count, R.MAX_EXCLUDED_RUNS + 1) * R.EXCLUDED_RUN.size
            total += count
            if total > limit:
                raise FormatError(f"more than {limit} EXCLUDED runs: over the memory budget")
            if cols or total > _SMALL:
                if runs:
                    cols.append(_columns(runs))
                    runs = []
                cols.append(R.unpack_excluded_columns(d[at:at + size], page_size))
            else:
                runs += R.unpack_excluded(d[at:at + size], page_size)
            at += size
        if at != len(d):
            raise FormatError(f"{len(d) - at} bytes after the last EXCLUDED body")
        if cols:
            import numpy as np

            a, n, c = (np.concatenate(x) for x in zip(*cols))
            del cols
            if len(a) > 1 and (a[1:] < a[:-1] + n[:-1]).any():
                raise FormatError("EXCLUDED runs out of order or overlapping")
            return memory_map, R.excluded_list(a, n, c)
        if any(b.paddr < a.end for a, b in zip(runs, runs[1:])):
            raise FormatError("EXCLUDED runs out of order or overlapping")
    except FormatError as e:
        raise FormatError(f"ELF note {TSUBAKI_NOTE_NAME}: {e}") from None
    return memory_map, runs


_SMALL = 1 << 14  # runs read as a list below this (no numpy), as columns beyond


def _columns(runs: list[R.ExcludedRange]) -> tuple:
    import numpy as np

    return (np.array([r.paddr for r in runs], np.uint64), np.array([r.length for r in runs], np.uint64),
            np.array([int(r.cls) for r in runs], np.uint32))


def strip_filter_note(notes: bytes) -> bytes:
    """``notes`` without any TSUBAKI note (the original PT_NOTE bytes of the dump)."""
    out = b""
    blob = bytes(notes)
    cuts = [(n.offset, n.name == TSUBAKI_NOTE_NAME) for n in iter_notes(blob)]
    ends = [o for o, _ in cuts[1:]] + [len(blob)]
    last = 0
    for (off, drop), end in zip(cuts, ends):
        if drop:
            out += blob[last:off]
            last = end
    return out + blob[last:]


def notes_for_export(notes: bytes | None, memory_map: R.MemoryMap | None,
                     excluded: list[R.ExcludedRange], page_size: int) -> bytes | None:
    """The PT_NOTE bytes ``export`` writes: ``notes`` unchanged for a dump that
    leaves nothing out, else without any old TSUBAKI note and with a new one
    saying what the dump level left out (so ``import`` of the ELF keeps it)."""
    if memory_map is None or not (excluded or memory_map.dump_level & ~R.DUMP_LEVEL_ZERO_AS_RECORDS):
        return notes
    return strip_filter_note(notes or b"") + build_filter_note(memory_map, excluded, page_size)
