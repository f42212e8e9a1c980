"""The emulated machine: Linux's physical memory cut into regions, the monitor's
reserved memory, the CPUs, and the emulated RAM that a rebooting Linux rewrites.

Regions are aligned blocks of physical address space (default 128 MiB, the
x86_64 memory-hotplug block: the unit in which a real monitor could hand memory
back to Linux with memory hot-add).  A region holds the parts of the source's
physical ranges that fall inside it; holes (PCI hole, legacy ranges) are not
Linux's memory and are never dumped.

:class:`EmulatedRam` is a copy-on-write overlay over the read-only memory
source: overwriting a range records only *that* it was overwritten (and with
which seed), and reads synthesise the rebooted kernel's bytes on the fly, so
the emulation never holds a copy of guest memory and its RSS stays flat.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from tsubaki_forensics.errors import SourceError, TsubakiError
from tsubaki_forensics.sizes import format_size, parse_size  # format_size re-exported (its old home)

__all__ = [
    "HOTPLUG_BLOCK",
    "Region",
    "Machine",
    "IntervalSet",
    "EmulatedRam",
    "parse_size",
    "parse_size_option",
    "format_size",
    "RebootChoice",
    "choose_reboot_regions",
]

HOTPLUG_BLOCK = 128 << 20
"""x86_64 ``memory_block_size_bytes()`` on a machine below 64 GiB."""


def parse_size_option(text: str, option: str) -> int:
    """:func:`~tsubaki_forensics.sizes.parse_size` (the project's one size parser, re-exported
    here) for a command-line option: the error names ``option``."""
    try:
        return parse_size(text)
    except TsubakiError as e:
        raise TsubakiError(f"{option}: {e}") from None


class IntervalSet:
    """Disjoint half-open ``[start, end)`` intervals, merged on insert.

    Used for what has been saved, what has been overwritten, and to cut a
    region into the parts that a triage pass has not already written.
    """

    def __init__(self, intervals: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, length in intervals or ():
            self.add(start, length)

    def add(self, start: int, length: int) -> None:
        """Insert ``[start, start+length)`` and merge neighbours."""
        if length <= 0:
            return
        end = start + length
        i = bisect.bisect_left(self._ends, start)
        j = i
        while j < len(self._starts) and self._starts[j] <= end:
            start = min(start, self._starts[j])
            end = max(end, self._ends[j])
            j += 1
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def __iter__(self):
        return iter(zip(self._starts, self._ends))

    def __len__(self) -> int:
        return len(self._starts)

    def total(self) -> int:
        """Bytes covered."""
        return sum(e - s for s, e in self)

    def overlaps(self, start: int, length: int) -> list[tuple[int, int]]:
        """The covered pieces of ``[start, start+length)`` as ``(start, end)``."""
        end = start + length
        i = bisect.bisect_right(self._ends, start)
        out = []
        while i < len(self._starts) and self._starts[i] < end:
            out.append((max(start, self._starts[i]), min(end, self._ends[i])))
            i += 1
        return out

    def covers(self, start: int, length: int) -> bool:
        """True if every byte of the range is covered."""
        return sum(e - s for s, e in self.overlaps(start, length)) == length

    def subtract_from(self, start: int, length: int) -> list[tuple[int, int]]:
        """The uncovered pieces of the range, as ``(start, length)``."""
        out, pos = [], start
        for s, e in self.overlaps(start, length):
            if s > pos:
                out.append((pos, s - pos))
            pos = e
        if pos < start + length:
            out.append((pos, start + length - pos))
        return out


@dataclass(frozen=True)
class Region:
    """One hand-back unit: an aligned block and the Linux memory inside it."""

    index: int
    base: int
    size: int
    ranges: tuple[tuple[int, int], ...]  # (paddr, length) of Linux memory in the block

    @property
    def nbytes(self) -> int:
        """Bytes of Linux memory in the region (holes excluded)."""
        return sum(length for _, length in self.ranges)

    def __str__(self) -> str:
        return f"region {self.index} [{self.base:#x}, {self.base + self.size:#x})"


@dataclass
class Machine:
    """Linux's memory in regions, the monitor's carve-out, and the CPUs.

    In normal operation Linux holds every CPU and every region; the monitor
    only its reserved memory (``monitor_mem``, a secure-world carve-out that is
    never part of Linux's memory and therefore never dumped).  On a panic the
    monitor takes one CPU (hotplug) for the dump and gives it back at the end.
    """

    regions: list[Region]
    region_size: int = HOTPLUG_BLOCK
    monitor_mem: int = 64 << 20
    cpus: int = 2
    monitor_cpus: int = 1
    page_size: int = 4096
    _by_base: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._by_base = [r.base for r in self.regions]

    @classmethod
    def from_ranges(
        cls,
        ranges: list[tuple[int, int]],
        region_size: int = HOTPLUG_BLOCK,
        **kwargs,
    ) -> Machine:
        """Cut the source's physical ranges into aligned regions."""
        page = kwargs.get("page_size", 4096)
        if region_size <= 0 or region_size % page:
            raise TsubakiError(f"region size must be a positive multiple of {page} bytes")
        blocks: dict[int, list[tuple[int, int]]] = {}
        for start, length in sorted(ranges):
            pos, end = start, start + length
            while pos < end:
                base = pos - pos % region_size
                stop = min(end, base + region_size)
                blocks.setdefault(base, []).append((pos, stop - pos))
                pos = stop
        if not blocks:
            raise SourceError("the memory source has no physical memory ranges")
        regions = [
            Region(i, base, region_size, tuple(parts))
            for i, (base, parts) in enumerate(sorted(blocks.items()))
        ]
        return cls(regions=regions, region_size=region_size, **kwargs)

    @property
    def total(self) -> int:
        """Bytes of Linux memory."""
        return sum(r.nbytes for r in self.regions)

    def region_of(self, paddr: int) -> Region | None:
        """The region containing ``paddr``, if any."""
        i = bisect.bisect_right(self._by_base, paddr) - 1
        if i >= 0 and paddr < self.regions[i].base + self.regions[i].size:
            return self.regions[i]
        return None

    def reboot_regions(self, reboot_mem: int) -> list[Region]:
        """The lowest regions holding at least ``reboot_mem`` bytes of memory.

        A rebooting x86_64 kernel needs low memory (real-mode trampoline below
        1 MiB, the kernel image loaded from 16 MiB), so the reboot regions are
        taken from the bottom of physical memory up.
        """
        out, got = [], 0
        for region in self.regions:
            if got >= reboot_mem:
                break
            out.append(region)
            got += region.nbytes
        if got < reboot_mem:
            raise TsubakiError(
                f"--reboot-mem {format_size(reboot_mem)} is more than Linux's memory "
                f"({format_size(self.total)})"
            )
        return out


@dataclass(frozen=True)
class RebootChoice:
    """Where Linux reboots, and what it cost the monitor to decide."""

    regions: list[Region]
    scanned: int  # bytes of memory the zero-page scan read
    sparse: list[int]  # indices of regions found sparse (cheap to save)


SPARSE_FRACTION = 1 / 16
"""A region is *sparse* when at most this fraction of it is non-zero pages."""

_SCAN_PIECE = 1 << 20


def choose_reboot_regions(machine: Machine, ram, reboot_mem: int,
                          sparse_fraction: float = SPARSE_FRACTION) -> RebootChoice:
    """The reboot regions that are cheapest to save: the region holding the
    first MiB (the x86 real-mode trampoline and BIOS data must be there),
    then sparse regions found by a zero-page scan, then the lowest others.

    The scan reads a region in pieces (1 MiB at most) and gives up on it as soon as
    more than ``sparse_fraction`` of it is non-zero, so dense memory costs
    the monitor little to rule out; it stops once enough sparse regions are
    found.  The monitor controls the memory map of the kernel it boots
    (``memmap=exactmap``), so any regions will do.
    """
    import numpy as np

    first = machine.regions[0]
    chosen, got, scanned, sparse = [first], first.nbytes, 0, []
    dense: list[Region] = []
    for region in machine.regions[1:]:
        if got >= reboot_mem:
            break
        limit = region.nbytes * sparse_fraction
        piece = max(4096, min(_SCAN_PIECE, region.nbytes // 32 // 4096 * 4096))
        nonzero = 0
        for start, length in region.ranges:
            for pos in range(start, start + length, piece):
                size = min(piece, start + length - pos)
                data = ram.read(pos, size)
                scanned += size
                words = np.frombuffer(data, np.uint64, size // 8)
                pages = words[: len(words) - len(words) % 512].reshape(-1, 512)
                nonzero += int(pages.any(axis=1).sum()) * 4096 + (4096 if words[len(pages) * 512 :].any() else 0)
                if nonzero > limit:
                    break
            if nonzero > limit:
                break
        if nonzero > limit:
            dense.append(region)
            continue
        sparse.append(region.index)
        chosen.append(region)
        got += region.nbytes
    for region in dense:  # not enough sparse memory: the lowest dense regions
        if got >= reboot_mem:
            break
        chosen.append(region)
        got += region.nbytes
    if got < reboot_mem:
        machine.reboot_regions(reboot_mem)  # raises the size error
    return RebootChoice(sorted(chosen, key=lambda r: r.index), scanned, sparse)


class EmulatedRam:
    """The crashed machine's RAM as the monitor sees it while Linux reboots.

    Reads come from the read-only source unless the range was overwritten by
    the rebooting Linux; overwritten bytes are synthesised from a seed per
    overwrite (different from anything in a real image), never stored.
    """

    def __init__(self, source) -> None:
        self.source = source
        self._overwrites: list[tuple[int, int, int]] = []  # (start, end, seed)
        self.overwritten = IntervalSet()

    def overwrite(self, start: int, length: int, seed: int) -> None:
        """Linux now owns ``[start, start+length)`` and writes over it."""
        self._overwrites.append((start, start + length, seed))
        self.overwritten.add(start, length)

    def read(self, paddr: int, size: int) -> bytes:
        """Bytes at ``paddr`` as they are in RAM now."""
        data = self.source.read(paddr, size)
        if not self.overwritten.overlaps(paddr, size):
            return data
        buf = bytearray(data)
        self._overlay(paddr, memoryview(buf))
        return bytes(buf)

    def read_into(self, paddr: int, view: memoryview) -> None:
        """:meth:`read` into ``view`` (the source's own ``read_into`` when it has one)."""
        view = memoryview(view).cast("B")
        size = len(view)
        if _reads_into(self.source):
            self.source.read_into(paddr, view)
        else:  # a plugin's source may only read (or a subclass change what reads return)
            data = self.source.read(paddr, size)
            if len(data) != size:  # a short read would shift every later byte
                raise SourceError(f"short read at {paddr:#x}: {len(data)} of {size} bytes")
            view[:] = data
        if self.overwritten.overlaps(paddr, size):
            self._overlay(paddr, view)

    def _overlay(self, paddr: int, view: memoryview) -> None:
        """Write what the rebooting Linux put over ``view`` (the bytes at ``paddr``)."""
        for start, end, seed in self._overwrites:
            s, e = max(start, paddr), min(end, paddr + len(view))
            if s < e:
                view[s - paddr : e - paddr] = _garbage(seed, s, e - s)


def _reads_into(source) -> bool:
    """True when ``source.read_into`` reads what ``source.read`` would: it is
    defined on the class that defines ``read``, or below it."""
    mro = type(source).__mro__
    into = next((i for i, c in enumerate(mro) if "read_into" in vars(c)), None)
    read = next((i for i, c in enumerate(mro) if "read" in vars(c)), None)
    return into is not None and (read is None or into <= read)


def _garbage(seed: int, start: int, length: int) -> bytes:
    """What a booting kernel left in a range: never zero, never the old bytes.

    Deterministic from ``(seed, start)`` so that two runs agree; each 8-byte
    word mixes the seed with its own address, which no real image contains.
    """
    first = start // 8
    words = np.arange(first, first + (length + (start % 8) + 15) // 8, dtype=np.uint64)
    words = (words * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(seed * 0xBF58476D1CE4E5B9 % (1 << 64) | 1)
    raw = words.tobytes()
    off = start % 8
    return raw[off : off + length]
