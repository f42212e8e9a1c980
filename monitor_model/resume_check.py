"""Check the file ``collect --resume-from F`` is about to trust.

Why: resuming counts every range F holds as saved and hands those regions
back to Linux.  On main only the properties the two runs share were
compared, so a forged F of two ZERO records for the same RAM size made
collect write 10 KB, hand back every region, and ``verify`` then passed an
all-zero "complete" dump.  F is now accepted only if it is this crash's:

- the same machine: its MEMORY_MAP lists the source's physical ranges, and
  its VMCOREINFO (kernel build, layout) is the source's, byte for byte;
- the same memory: a deterministic sample of the pages F holds (data and
  zero alike; the first and last page of every range and up to
  :data:`SAMPLES` spread over the rest) reads back equal to the source.
  An all-zero F of a machine whose sampled pages are not zero is refused
  with its own message.

Every refusal is one :class:`~tsubaki_forensics.errors.TsubakiError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsubaki_forensics.errors import TsubakiError

__all__ = ["verify_resume", "SAMPLES"]

SAMPLES = 256  # pages compared beyond each range's first and last (bounded work)
PAGE = 4096


def _merged(ranges) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, length in sorted((int(a), int(n)) for a, n in ranges if n > 0):
        if out and start <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], start + length - out[-1][0])
        else:
            out.append([start, length])
    return [(a, n) for a, n in out]


def _sample_pages(ranges: list[tuple[int, int]], count: int) -> list[int]:
    """First and last page of each range, then ``count`` pages spread evenly over all."""
    pages: set[int] = set()
    total = 0
    for start, length in ranges:
        if length >= PAGE:
            pages.add(start)
            pages.add(start + (length // PAGE - 1) * PAGE)
        total += length // PAGE
    if total:
        step = max(1, total // count)
        k = 0
        for start, length in ranges:
            n = length // PAGE
            for i in range((-k) % step, n, step):
                pages.add(start + i * PAGE)
            k += n
    return sorted(pages)


def verify_resume(path: Path, source: Any) -> None:
    """Refuse ``path`` unless it holds this source's crash (see the module doc).

    :param source: the collect source (``ranges``, ``vmcoreinfo``, ``read``).
    :raises TsubakiError: one line saying what differs.
    """
    from tsubaki_forensics.errors import NotCollectedError
    from tsubaki_forensics.tsd import open_dump

    what = f"--resume-from {path}"
    with open_dump(path) as dump:
        kept = [r for r in dump.memory.ranges() if r.kind != "missing"]
        if not kept:
            return  # it holds no memory (cut inside the notice): nothing will be trusted
        mm = dump.memory_map
        if mm is None:
            raise TsubakiError(f"{what}: has no memory map (not a dump written by collect); "
                               "cannot tell it is this machine's")
        want = _merged(source.ranges)
        if _merged(mm.ranges) != want:
            raise TsubakiError(f"{what}: its memory map ({mm.total_bytes} bytes in {len(mm.ranges)} "
                               f"ranges) is not this source's ({sum(n for _, n in want)} bytes in "
                               f"{len(want)} ranges): another machine")
        mine = bytes(source.vmcoreinfo or b"")
        theirs = bytes(dump.vmcoreinfo or b"")
        if mine != theirs:
            raise TsubakiError(f"{what}: its VMCOREINFO differs from this source's (another kernel "
                               "or another crash)")
        pages = _sample_pages([(r.start, r.length) for r in kept], SAMPLES)
        data_records = sum(1 for r in kept if r.kind == "data")
        for paddr in pages:
            try:
                expect = source.read(paddr, PAGE)
            except Exception:  # a source page it cannot read: nothing to compare
                continue
            try:
                got = dump.memory.read(paddr, PAGE)
            except NotCollectedError:
                continue
            if got != expect:
                if data_records == 0:
                    raise TsubakiError(f"{what}: says every page it holds is zero, but this source's "
                                       f"page at {paddr:#x} is not (a forged or foreign file)")
                raise TsubakiError(f"{what}: its page at {paddr:#x} differs from this source's "
                                   "(not this crash's memory)")
