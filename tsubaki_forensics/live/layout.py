"""Where a live guest's memory is: base RAM and hot-pluggable DIMMs, as host files.

The guest gets ``base`` bytes of ordinary RAM (what firmware and a booting
kernel may use) and ``dimms`` memory devices of ``dimm_size`` bytes each
(``pc-dimm``, one ``memory-backend-file`` per DIMM).  Every byte lives in a
file under ``ram_dir`` that the host maps shared, so the monitor reads guest
memory with ``pread`` while the guest runs or is paused.

The base RAM is the *reboot region* of the protocol; each DIMM is one
hand-back unit (a multiple of the guest's 128 MiB memory block, onlined
block by block).  Physical addresses of the DIMMs are QEMU's choice
(``query-memory-devices``), so a :class:`Layout` learns them at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TsubakiError

__all__ = ["BLOCK", "LEGACY_HOLE", "Layout", "Piece", "plan_layout"]

BLOCK = 128 << 20
"""x86_64 memory block size below 64 GiB: the unit Linux onlines memory in."""

LEGACY_HOLE = (0xA0000, 0x100000)
"""VGA window and BIOS ROMs: shadowed in the base RAM file, not Linux's memory."""

MIN_BASE = 192 << 20
MAX_BASE = 2 << 30  # below the PCI hole: guest-physical address == file offset


@dataclass(frozen=True)
class Piece:
    """One hand-back unit: guest-physical ranges backed by one host file."""

    name: str  # "base" or "dimm3"
    path: Path
    ranges: tuple[tuple[int, int], ...]  # (paddr, length); file offset = paddr - file_base
    file_base: int = 0

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self.ranges)

    @property
    def blocks(self) -> list[int]:
        """Guest memory-block numbers covered (``/sys/devices/system/memory/memoryN``)."""
        out: set[int] = set()
        for start, length in self.ranges:
            out.update(range(start // BLOCK, (start + length + BLOCK - 1) // BLOCK))
        return sorted(out)


@dataclass
class Layout:
    """The guest's memory: sizes first, DIMM addresses once QEMU has placed them."""

    base: int
    dimm_size: int
    dimms: int
    ram_dir: Path
    dimm_addrs: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.base + self.dimm_size * self.dimms

    def base_path(self) -> Path:
        return self.ram_dir / "base.ram"

    def dimm_path(self, i: int) -> Path:
        return self.ram_dir / f"dimm{i}.ram"

    def base_piece(self) -> Piece:
        """The base RAM minus the legacy hole: the memory the reset guest boots in."""
        lo, hi = LEGACY_HOLE
        return Piece("base", self.base_path(), ((0, lo), (hi, self.base - hi)))

    def dimm_pieces(self) -> list[Piece]:
        """One piece per DIMM, at the address QEMU gave it."""
        if len(self.dimm_addrs) != self.dimms:
            raise TsubakiError("DIMM addresses are not known yet (query-memory-devices not read)")
        return [Piece(f"dimm{i}", self.dimm_path(i), ((addr, self.dimm_size),), file_base=addr)
                for i, addr in enumerate(self.dimm_addrs)]

    def pieces(self) -> list[Piece]:
        return [self.base_piece(), *self.dimm_pieces()]

    def ranges(self) -> list[tuple[int, int]]:
        """Every guest-physical range of Linux's memory, sorted."""
        return sorted(r for p in self.pieces() for r in p.ranges)


def plan_layout(mem: int, base: int, dimm_size: int, ram_dir: Path) -> Layout:
    """Split ``mem`` bytes into base RAM and DIMMs.

    :raises TsubakiError: sizes that do not split into whole memory blocks.
    """
    if not MIN_BASE <= base <= MAX_BASE or base % (1 << 20):
        raise TsubakiError(f"--base {base >> 20}M: base RAM must be a whole MiB from "
                           f"{MIN_BASE >> 20}M to {MAX_BASE >> 20}M")
    if dimm_size <= 0 or dimm_size % BLOCK:
        raise TsubakiError(f"--dimm-size {dimm_size >> 20}M: must be a multiple of 128M "
                           "(the guest's memory block)")
    rest = mem - base
    if rest <= 0 or rest % dimm_size:
        raise TsubakiError(f"--mem {mem >> 20}M minus --base {base >> 20}M must be a positive "
                           f"multiple of --dimm-size {dimm_size >> 20}M")
    return Layout(base=base, dimm_size=dimm_size, dimms=rest // dimm_size, ram_dir=Path(ram_dir))
