"""The memory budget for hostile input, and bounded helpers every reader uses.

Why: a dump comes from a machine that may be compromised, and a few crafted
kilobytes can claim gigabytes (an ELF with thousands of PT_NOTE headers over
the whole file, ``e_phnum`` = PN_XNUM with 2^32 headers, a zstd frame that
inflates to 256 MiB of ``[{},...]``, JSON nested 100 000 deep).  Each reader
checks what an input *claims* against its real size and against one
documented budget, :data:`BUDGET`, before it copies or parses anything, and
refuses with a one-line :class:`~tsubaki_forensics.errors.FormatError`.
docs/RELIABILITY.md ("Memory budget") lists every bound.

This is the bottom layer: it imports nothing from the project but
:mod:`.errors`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import zstandard

from .errors import FormatError

__all__ = [
    "BUDGET", "BYTES_PER_RUN", "JSON_BUDGET", "MAX_RUNS", "max_runs", "MAX_JSON_DEPTH", "MAX_NOTE_BYTES", "json_cost",
    "check_json", "load_json", "check_count", "decompress_bounded",
]

#: What one hostile input may make a command allocate, whatever it claims.
BUDGET = 256 << 20
#: What parsing one JSON document may cost (estimated before parsing).
JSON_BUDGET = BUDGET // 2
#: Deepest JSON nesting any reader accepts (real documents nest < 10 deep).
MAX_JSON_DEPTH = 64
#: Most runs (page ranges) one list of a dump may hold: a kdump bitmap's
#: runs of one kind, a ``.tsd`` file's EXCLUDED runs.  Runs are numpy
#: columns (16 bytes each, a few copies while measuring completeness), so
#: 1 Mi runs stay inside :data:`BUDGET`; a bitmap alternating every frame
#: claims one run per two frames and is refused past it (issue 22).
MAX_RUNS = 1 << 20
#: Bytes of input a real dump spends at least per run it records: a run of
#: kept pages holds one page or more (a 24-byte descriptor and its compressed
#: data in a kdump file, a record in a ``.tsd``); Debian's default
#: ``makedumpfile -c -d 31`` of a busy 4 GiB lab crash spends 7.7 KB per
#: excluded run.  A big input may so hold more than :data:`MAX_RUNS` runs
#: (a fragmented machine of a TiB), costing memory in proportion to its size.
BYTES_PER_RUN = 256


def max_runs(input_bytes: int) -> int:
    """Most runs one list of a dump of ``input_bytes`` bytes may hold: a
    fixed :data:`MAX_RUNS` for any small (maybe crafted) input, one per
    :data:`BYTES_PER_RUN` bytes of a big one, so that a real dump of a big,
    fragmented machine is never refused for its size."""
    return max(MAX_RUNS, input_bytes // BYTES_PER_RUN)
#: Largest total of ELF note bytes a vmcore may carry (real ones: < 1 MiB).
MAX_NOTE_BYTES = 64 << 20

# A JSON string (escapes included); linear, never backtracks: a string
# without its closing quote can only be the document's last one.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_OPEN = frozenset(b"[{")
_KEEP = bytes(range(256)).translate(None, b"[]{}")  # every byte but brackets
# Per-item costs of CPython objects (measured on 3.11 with tracemalloc, plus
# allocator slack): an empty dict/list in a list, a scalar value, a string.
_CONTAINER_COST, _VALUE_COST, _STRING_COST = 96, 48, 64
_CHUNK = 1 << 20
#: Up to this many brackets a Python loop is cheaper than importing numpy.
_SMALL_BRACKETS = 1 << 16


def json_cost(data: bytes | str) -> tuple[int, int]:
    """(estimated bytes ``json.loads(data)`` allocates, deepest nesting).

    An over-estimate by design: brackets, commas and colons are counted
    outside strings; each container, value and string is charged what
    CPython spends on it.  Linear time; the working copies are bounded by
    ``len(data)`` and a 4 MiB chunk.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if b'"' in raw:
        bare, strings = _STRING.subn(b"", raw)
    else:  # no strings: no copy (a bomb of brackets costs its own size once)
        bare, strings = bytes(raw) if not isinstance(raw, bytes) else raw, 0
    values = bare.count(b",") + bare.count(b":") + 1
    brackets = bare.translate(None, _KEEP)
    del bare
    containers, depth, level = 0, 0, 0
    if len(brackets) <= _SMALL_BRACKETS:  # a dump's properties, a symbol pack's tables: no numpy (issue 21)
        for c in brackets:
            if c in _OPEN:
                containers += 1
                level += 1
                depth = max(depth, level)
            else:
                level -= 1
        brackets = b""
    else:
        import numpy as np
    for at in range(0, len(brackets), _CHUNK):
        b = np.frombuffer(brackets, np.uint8, min(_CHUNK, len(brackets) - at), at)
        step = np.where((b == 0x5B) | (b == 0x7B), 1, -1).astype(np.int32)
        containers += int((step > 0).sum())
        run = np.cumsum(step, dtype=np.int64) + level
        depth = max(depth, int(run.max()))
        level = int(run[-1])
    cost = (len(raw) + containers * _CONTAINER_COST + values * _VALUE_COST + strings * _STRING_COST)
    return cost, depth


def check_json(data: bytes | str, what: str, *, max_bytes: int | None = None,
               max_depth: int = MAX_JSON_DEPTH, budget: int = JSON_BUDGET) -> None:
    """Refuse ``data`` (one line) if parsing it would exceed a bound.

    :raises FormatError: larger than ``max_bytes``, nested deeper than
        ``max_depth``, or estimated to cost more than ``budget`` bytes.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise FormatError(f"{what}: {len(data)} bytes of JSON exceeds the {max_bytes}-byte limit")
    cost, depth = json_cost(data)
    if depth > max_depth:
        raise FormatError(f"{what}: JSON nested {depth} levels deep (the limit is {max_depth})")
    if cost > budget:
        raise FormatError(f"{what}: JSON would need ~{cost >> 20} MiB to parse "
                          f"(the budget is {budget >> 20} MiB; possible JSON bomb)")


def load_json(data: bytes | str, what: str, *, max_bytes: int | None = None,
              max_depth: int = MAX_JSON_DEPTH, budget: int = JSON_BUDGET) -> Any:
    """``json.loads(data)`` after :func:`check_json`.

    :raises FormatError: the bounds of :func:`check_json`, or not UTF-8 JSON.
    """
    check_json(data, what, max_bytes=max_bytes, max_depth=max_depth, budget=budget)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"{what}: not UTF-8 JSON ({e})") from None


def check_count(count: int, what: str, *, item_size: int, available: int,
                limit: int | None = None) -> int:
    """``count`` items of ``item_size`` bytes each, checked against the input.

    A header that claims ``count`` items must hold them: ``count *
    item_size`` may not exceed ``available`` (the bytes the file really
    has), nor ``limit`` items.

    :raises FormatError: the claim cannot be true.
    """
    if count < 0:
        raise FormatError(f"{what}: negative count {count}")
    if item_size > 0 and count * item_size > available:
        raise FormatError(f"{what}: {count} entries of {item_size} bytes need {count * item_size} bytes "
                          f"but only {available} are there")
    if limit is not None and count > limit:
        raise FormatError(f"{what}: {count} entries exceed the limit of {limit}")
    return count


def decompress_bounded(data: bytes | memoryview, what: str, *, max_output: int = BUDGET // 4) -> bytes:
    """One zstd frame, never inflated past ``max_output`` bytes.

    :raises FormatError: damaged, or larger than ``max_output`` once inflated.
    """
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as e:
        raise FormatError(f"{what}: not a zstd frame ({e})") from None
    if params.content_size > max_output and params.content_size != zstandard.CONTENTSIZE_UNKNOWN:
        raise FormatError(f"{what}: content inflates to {params.content_size} bytes (the limit is {max_output})")
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=max_output)
    except zstandard.ZstdError as e:
        raise FormatError(f"{what}: unreadable content, or larger than {max_output} bytes ({e})") from None
    return out
