"""``inspect``'s :class:`DumpDescription` as text or as the JSON of docs/JSON.md.

Both write as they go: a dump of a million records has a million present
ranges, written a few thousand lines (text) or items (JSON,
:class:`~.json_stream.JsonStream`) at a time, never held as a million dicts
or lines (issue 22).  Strings from the dump pass :func:`~.safe.safe_text` in text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO, Any

from ..contracts.inspect import DumpDescription, MemoryGap, PresentRange
from .json_stream import JsonStream, write_json
from .safe import safe_text

__all__ = ["description_json", "render_json", "render_text", "range_dicts", "spans"]

#: lines (text) or items (JSON) written at once
_BATCH = 4096


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _listed(runs: Sequence, item: Any) -> list | JsonStream:
    """A map's ranges as JSON items: a list, or streamed when they are columns
    (a crafted map of millions of ranges, issue 22; the same values)."""
    if hasattr(runs, "starts"):
        return JsonStream(map(item, runs))
    return [item(r) for r in runs]


def range_dicts(ranges: Sequence[PresentRange]) -> Iterator[dict[str, Any]]:
    """``{"start", "length", "kind"}`` per present range, made as they are
    written: from the numpy columns of a ``RangeList``, else from the range objects."""
    if not hasattr(ranges, "starts"):
        yield from ({"start": r.start, "length": r.length, "kind": r.kind} for r in ranges)
        return
    starts, lasts, zero = ranges.starts, ranges.lasts, ranges.zero  # type: ignore[attr-defined]
    for k in range(0, len(starts), _BATCH):
        yield from ({"start": a, "length": b - a + 1, "kind": "zero" if z else "data"}
                    for a, b, z in zip(starts[k:k + _BATCH].tolist(), lasts[k:k + _BATCH].tolist(),
                                       zero[k:k + _BATCH].tolist()))


def spans(ranges: Sequence[PresentRange]) -> Iterator[tuple[int, int, int]]:
    """Contiguous present spans as (start, end, zero bytes), for a short text view."""
    if hasattr(ranges, "starts"):  # a RangeList: numpy columns, one span at a time
        yield from _array_spans(ranges)
        return
    out: list[list[int]] = []
    for r in ranges:
        end = r.start + r.length
        zero = r.length if r.kind == "zero" else 0
        if out and out[-1][1] == r.start:
            out[-1][1] = end
            out[-1][2] += zero
        else:
            out.append([r.start, end, zero])
    yield from (tuple(x) for x in out)  # type: ignore[misc]


def _array_spans(ranges: Any) -> Iterator[tuple[int, int, int]]:
    import numpy as np

    s, last, zero = ranges.starts, ranges.lasts, ranges.zero
    if not len(s):
        return
    first = np.flatnonzero(np.concatenate(([True], (s[1:] - last[:-1]) != 1)))
    ends = np.append(first[1:], len(s)) - 1
    zbytes = np.where(zero, last - s, 0).astype(np.uint64)
    zcount = zero.astype(np.int64)
    for k in range(0, len(first), _BATCH):
        f, e = first[k:k + _BATCH], ends[k:k + _BATCH]
        lo, hi = int(f[0]), int(e[-1]) + 1  # reduceat sums up to the next index, the last to the end
        zb = np.add.reduceat(zbytes[lo:hi], f - lo).tolist()
        zc = np.add.reduceat(zcount[lo:hi], f - lo).tolist()
        yield from ((a, b + 1, z + c) for a, b, z, c in zip(s[f].tolist(), last[e].tolist(), zb, zc))


def _gap_dict(g: MemoryGap) -> dict[str, Any]:
    return {"start": g.start, "length": g.length, "kind": g.kind, "reason": g.reason}


def description_json(d: DumpDescription) -> dict[str, Any]:
    """The ``inspect --format json`` document (docs/JSON.md); ``memory.ranges``,
    ``missing`` and ``missing_records`` are :class:`JsonStream`\\ s."""
    m = d.memory
    mm = m.memory_map
    return {
        "status": d.status,
        "complete": d.complete,
        "dump_id": d.dump_id,
        "format": d.format,
        "arch": d.arch, "page_size": d.page_size, "endian": d.endian,
        "producer": d.producer,
        "created": d.created,
        "files": [{"path": f.path, "bytes": f.nbytes, "footer": f.footer,
                   "memory_records": f.memory_records} for f in d.files],
        "kernel_release": d.kernel_release,
        "vmcoreinfo_bytes": d.vmcoreinfo_bytes,
        "notes": {"bytes": d.notes.nbytes, "count": d.notes.count, "prstatus": d.notes.prstatus},
        "properties": dict(d.properties),
        "memory": {
            "dump_level": m.dump_level,
            "pages": None if m.pages is None else
            {"total": m.pages.total, "kept": m.pages.kept, "excluded": dict(m.pages.excluded)},
            "excluded_bytes": m.excluded_bytes,
            "present_bytes": m.present_bytes, "data_bytes": m.data_bytes,
            "zero_bytes": m.zero_bytes,
            "expected_bytes": m.expected_bytes, "missing_bytes": m.missing_bytes,
            "missing_bytes_exact": m.missing_bytes_exact,
            "completeness_percent": m.completeness_percent, "complete": m.complete,
            "completeness_at_most_percent": m.completeness_at_most_percent,
            "completeness_reason": m.completeness_reason,
            "memory_map": None if mm is None else {
                "dump_level": mm.dump_level,
                "ranges": _listed(mm.ranges, lambda r: {"start": r[0], "length": r[1]}),
                "excluded": _listed(mm.excluded, lambda r: {"start": r[0], "length": r[1], "level_bit": r[2]}),
                "bytes": mm.nbytes},
            "outside_map_bytes": m.outside_map_bytes,
            "compression_ratio": m.compression_ratio,
            # every present range, in address order; streamed (a million: issue 22)
            "ranges": JsonStream(range_dicts(m.ranges)),
            "missing": JsonStream(map(_gap_dict, m.missing)),
            "missing_records": JsonStream({"start": a, "length": n, "reason": why}
                                          for a, n, why in m.missing_records),
        },
        "events": [{"time_s": e.time_s, "kind": e.kind, "fields": e.fields} for e in d.events],
        "problems": [{"path": p.path, "offset": p.offset, "message": p.message} for p in d.problems],
    }


def render_json(d: DumpDescription, out: IO[str]) -> None:
    """The JSON document, written as it is made."""
    write_json(description_json(d), out)


def _status_line(d: DumpDescription) -> str:
    """The first line: COMPLETE, INCOMPLETE or UNKNOWN, and why."""
    word = {"complete": "COMPLETE", "incomplete": "INCOMPLETE", "unknown": "UNKNOWN completeness"}
    text = f"status         {word[d.status]}: {safe_text(d.memory.completeness_reason)}"
    if any(not f.footer for f in d.files):
        text += "; file not closed (no footer)"
    return text


def _head(d: DumpDescription) -> list[str]:
    m = d.memory
    lines = [_status_line(d),
             f"dump id        {d.dump_id}",
             f"format         {d.format}, {d.arch}, {d.endian}-endian, page size {d.page_size}",
             f"producer       {safe_text(d.producer)}, created {d.created}",
             f"kernel         {safe_text(d.kernel_release or 'unknown')}",
             f"vmcoreinfo     {d.vmcoreinfo_bytes} bytes; notes: {d.notes.count} "
             f"({d.notes.prstatus} NT_PRSTATUS)"]
    for f in d.files:
        if not d.is_tsd:  # not a .tsd: no records, no footer to speak of
            lines.append(f"file           {safe_text(f.path)}: {f.nbytes} bytes")
            continue
        lines.append(f"file           {safe_text(f.path)}: {f.nbytes} bytes, "
                     f"{f.memory_records} memory/zero/missing records, "
                     f"{'closed (footer)' if f.footer else 'NO FOOTER (recovered by scan)'}")
    for k, v in sorted(d.properties.items()):
        lines.append(f"property       {safe_text(k)} = {safe_text(v)}")
    mm = m.memory_map
    if mm is not None:
        lines.append(f"memory map     {_mib(mm.nbytes)} in {len(mm.ranges)} ranges, dump level "
                     f"{mm.dump_level}" + (f", {len(mm.excluded)} excluded ranges" if mm.excluded else ""))
    else:
        lines.append("memory map     none (written before format 1.3): the total is unknown")
    if m.pages is not None:
        parts = ", ".join(f"{k} {v}" for k, v in m.pages.excluded.items() if v)
        lines.append(f"pages          {m.pages.total} total, {m.pages.kept} kept at dump level "
                     f"{m.dump_level}" + (f"; excluded: {parts}" if parts else ""))
    if m.completeness_percent is not None:
        share = f"complete {m.completeness_percent}%"
    elif m.completeness_at_most_percent is not None:
        share = f"complete: unknown, at most {m.completeness_at_most_percent}%"
    else:
        share = "complete: unknown"
    missing = f"{_mib(m.missing_bytes)} missing" if m.missing_bytes_exact else f"{_mib(m.missing_bytes)} known missing"
    lines.append(f"memory         {_mib(m.present_bytes)} present ({_mib(m.data_bytes)} data, "
                 f"{_mib(m.zero_bytes)} zero), "
                 + (f"{_mib(m.excluded_bytes)} excluded by the dump level, " if m.excluded_bytes else "")
                 + f"{missing}; {share}; ratio {m.compression_ratio}x")
    return lines


def _body(d: DumpDescription) -> Iterator[str]:
    for start, end, zero in spans(d.memory.ranges):  # a million spans: written as they come
        yield f"  present      {start:#014x}-{end:#014x}  {_mib(end - start)} ({_mib(zero)} zero)"
    for g in d.memory.missing:  # a million gaps (a hostile map): written as they come too
        why = g.reason if g.kind == "unreadable" else "not in the dump"
        yield (f"  missing      {g.start:#014x}-{g.start + g.length:#014x}  {_mib(g.length)}"
               + (f" ({safe_text(why)})" if why else ""))
    for e in d.events:
        fields = " ".join(f"{k}={safe_text(v)}" for k, v in e.fields.items())
        yield f"event {e.time_s:9.3f}s {safe_text(e.kind)} {fields}".rstrip()
    for p in d.problems:
        yield f"problem        {safe_text(p.path)} offset {p.offset}: {safe_text(p.message)}"


def render_text(d: DumpDescription, out: IO[str]) -> None:
    """Header and metadata, then one line per present span, gap, event and problem."""
    out.write("\n".join(_head(d)) + "\n")
    batch: list[str] = []
    for line in _body(d):
        batch.append(line)
        if len(batch) >= _BATCH:
            out.write("\n".join(batch) + "\n")
            batch = []
    if batch:
        out.write("\n".join(batch) + "\n")
    out.flush()
