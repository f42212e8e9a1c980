"""How much of what a dump should hold is in it: the one completeness figure.

Why one module: ``inspect``, ``verify``, ``export``, ``analyze`` and triage all
report completeness, and each used to divide what was present by what was
present plus what a MISSING record named, so a file cut short (no MISSING
record for what was never written) claimed 100 %.  Since format 1.3 the
first record of a dump is its MEMORY_MAP (FORMAT.md §4.3): the machine's
physical memory map and the dump level.  Every figure here is measured
against it, for any prefix, any set of merged files and any damage
(FORMAT.md §7.4).  A file without a map (before 1.3) has an unknown total:
it is never called complete, at best "unknown", and a lower bound on the
total (the collector's ``collect.memory_bytes`` property) is used only as
such and said so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Protocol

from .records import MemoryMap

__all__ = ["Completeness", "Gap", "measure", "LOWER_BOUND_PROPERTY"]

#: Property a collector writes with the bytes of Linux memory it was to dump;
#: for files without a map it bounds the total from below.
LOWER_BOUND_PROPERTY = "collect.memory_bytes"


class _MemoryLike(Protocol):
    def ranges(self) -> list: ...  # Range(start, length, kind "data" | "zero")
    def missing_reasons(self) -> list[tuple[int, int, str]]: ...


@dataclass(frozen=True)
class Gap:
    """A range the dump should hold and does not.

    ``kind`` is "absent" (no record covers it: never written, or its file was
    cut short or lost) or "unreadable" (a MISSING record: the collector tried
    and failed, ``reason`` says why).
    """

    start: int
    length: int
    kind: str
    reason: str = ""

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class Completeness:
    """Completeness of one dump (one file or several merged).

    With a map, ``present_bytes + missing_bytes == expected_bytes`` exactly,
    and ``complete`` is True only when every expected byte is present.  Without
    one, ``expected_bytes`` and ``percent`` are None, ``missing_bytes`` counts
    only what MISSING records name (``missing_exact`` False), and ``complete``
    is None (unknown) or False (proven incomplete).
    """

    has_map: bool
    dump_level: int | None
    map_bytes: int | None
    excluded_bytes: int
    expected_bytes: int | None
    present_bytes: int
    data_bytes: int
    zero_bytes: int
    missing_bytes: int
    missing_exact: bool
    outside_map_bytes: int
    complete: bool | None
    percent: float | None
    at_most_percent: float | None
    lower_bound_bytes: int | None
    truncated: bool
    reason: str
    gaps: tuple[Gap, ...] = ()

    @property
    def status(self) -> str:
        """"complete", "incomplete" or "unknown"."""
        return {True: "complete", False: "incomplete", None: "unknown"}[self.complete]

    def to_json(self) -> dict:
        d = asdict(self)
        d["status"] = self.status
        d["gaps"] = [asdict(g) for g in self.gaps]
        return d


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) intervals."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _intersect(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, j = [], 0
    for a, b in x:
        pos = a
        while j < len(y) and y[j][1] <= pos:
            j += 1
        k = j
        while k < len(y) and y[k][0] < b:
            if y[k][0] > pos:
                out.append((pos, y[k][0]))
            pos = max(pos, y[k][1])
            k += 1
        if pos < b:
            out.append((pos, b))
    return out


def _size(x: list[tuple[int, int]]) -> int:
    return sum(b - a for a, b in x)


def _floor_percent(part: int, whole: int) -> float:
    """``part/whole`` in percent, rounded *down* to 3 decimals: never 100.0
    unless ``part == whole``."""
    return math.floor(100_000 * part / whole) / 1000


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _gaps(absent: list[tuple[int, int]], recorded: list[tuple[int, int, str]]) -> tuple[Gap, ...]:
    """Name every gap: the parts a MISSING record covers with its reason."""
    failed = _merge((a, a + n) for a, n, _ in recorded)
    reasons = sorted(recorded)
    out: list[Gap] = []
    for a, b in _intersect(absent, failed):
        why = next((r for s, n, r in reasons if s < b and a < s + n and r), "")
        out.append(Gap(a, b - a, "unreadable", why))
    out += [Gap(a, b - a, "absent") for a, b in _subtract(absent, failed)]
    return tuple(sorted(out, key=lambda g: g.start))


def measure(memory: _MemoryLike, memory_map: MemoryMap | None, properties: dict[str, str] | None = None,
            *, truncated: bool = False, excluded: Iterable = ()) -> Completeness:
    """Completeness of ``memory`` (a :class:`~.memory.PhysicalMemory`) against ``memory_map``.

    :param properties: the dump's properties; without a map, the collector's
        ``collect.memory_bytes`` bounds the total from below.
    :param truncated: some file of the dump has no END footer.
    :param excluded: the dump's EXCLUDED runs (format 1.4, ``.paddr``/``.length``):
        left out on purpose, so neither expected nor missing.
    """
    left_out = _merge((r.paddr, r.paddr + r.length) for r in excluded)
    present = _merge((r.start, r.start + r.length) for r in memory.ranges())
    data = _merge((r.start, r.start + r.length) for r in memory.ranges() if r.kind == "data")
    recorded = memory.missing_reasons()
    if memory_map is not None:
        mapped = [(a, a + n) for a, n in memory_map.ranges]
        planned = _merge([(a, a + n) for a, n, _ in memory_map.excluded] + left_out)
        expected = _subtract(mapped, planned)
        have = _intersect(present, expected)
        data_in = _size(_intersect(data, expected))
        present_in = _size(have)
        want = _size(expected)
        absent = _subtract(expected, have)
        missing = want - present_in
        complete = missing == 0
        gaps = _gaps(absent, recorded)
        percent = 100.0 if complete else _floor_percent(present_in, want)
        if complete:
            reason = (f"every byte of the {_mib(want)} the memory map asks for is present "
                      f"(dump level {memory_map.dump_level})")
        else:
            reason = (f"{_mib(present_in)} of the {_mib(want)} the memory map asks for "
                      f"{'is' if present_in == 1 else 'are'} present; {_mib(missing)} missing "
                      f"in {len(gaps)} range(s)")
        return Completeness(
            has_map=True, dump_level=memory_map.dump_level, map_bytes=memory_map.total_bytes,
            excluded_bytes=_size(_intersect(mapped, planned)), expected_bytes=want,
            present_bytes=present_in, data_bytes=data_in, zero_bytes=present_in - data_in,
            missing_bytes=missing, missing_exact=True,
            outside_map_bytes=_size(_subtract(present, expected)), complete=complete,
            percent=percent, at_most_percent=None, lower_bound_bytes=None,
            truncated=truncated, reason=reason, gaps=gaps)
    # No map (a file written before format 1.3): the total is unknown.
    present_n, data_n = _size(present), _size(data)
    failed = _subtract(_subtract(_merge((a, a + n) for a, n, _ in recorded), present), left_out)
    gaps = _gaps(failed, recorded)
    known_missing = _size(failed)
    lower = _lower_bound(properties or {})
    bound = max(lower or 0, present_n + known_missing)
    proven = known_missing > 0 or (lower is not None and present_n < lower)
    at_most = _floor_percent(present_n, bound) if bound and present_n < bound else None
    reason = (f"{_mib(present_n)} present; the total is unknown (no memory map: file "
              f"written before format 1.3)")
    if lower is not None:
        reason += f"; {LOWER_BOUND_PROPERTY} = {lower} bytes is a lower bound on it"
    if at_most is not None:
        reason += f", so at most {at_most}% is present"
    if known_missing:
        reason += f"; MISSING records name {_mib(known_missing)} that could not be read"
    return Completeness(
        has_map=False, dump_level=None, map_bytes=None, excluded_bytes=_size(left_out),
        expected_bytes=None,
        present_bytes=present_n, data_bytes=data_n, zero_bytes=present_n - data_n,
        missing_bytes=known_missing, missing_exact=False, outside_map_bytes=0,
        complete=False if proven else None, percent=None, at_most_percent=at_most,
        lower_bound_bytes=lower, truncated=truncated, reason=reason, gaps=gaps)


def _lower_bound(properties: dict[str, str]) -> int | None:
    try:
        value = int(properties.get(LOWER_BOUND_PROPERTY, ""))
    except ValueError:
        return None
    return value if value > 0 else None
