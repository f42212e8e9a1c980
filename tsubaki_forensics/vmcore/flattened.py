"""makedumpfile's flattened format (``-F``): a stream of (offset, size, data) pieces.

Why this exists: Debian's kdump-tools writes ``makedumpfile -F`` (so the
dump can go through a pipe or ssh), and the kdump-compressed file inside it
is only reachable by replaying the pieces at their offsets.  We index the
pieces once (one pass over 16-byte headers, no data read) and serve random
reads from the index, so a flattened file reads like the file it encodes
without ``makedumpfile -R``.  The layout (docs/FORMATS.md): a 4096-byte
header starting ``makedumpfile\\0\\0\\0\\0`` then big-endian ``type`` and
``version`` (both 1); then pieces, each a big-endian ``i64 offset``,
``i64 size`` and ``size`` bytes; ``offset = -1`` ends the stream.

A stream cut short keeps every whole piece and the readable part of the
last one; what it lacks reads as absent (:class:`Gap`), never as zeros.
"""

from __future__ import annotations

import bisect
import struct
from typing import NamedTuple

from ..errors import FormatError

__all__ = ["FLAT_SIGNATURE", "FLAT_HEADER_SIZE", "FlatIndex", "Gap", "is_flattened"]

FLAT_SIGNATURE = b"makedumpfile\0\0\0\0"
FLAT_HEADER = struct.Struct(">16sqq")   # signature, type, version
FLAT_HEADER_SIZE = 4096                 # MAX_SIZE_MDF_HEADER
PIECE_HEADER = struct.Struct(">qq")     # offset, size
TYPE_FLAT_HEADER, VERSION_FLAT_HEADER = 1, 1
END_FLAG = -1
MAX_LOGICAL = 1 << 50  # 1 PiB: no real dump is larger; bounds a crafted offset
MAX_CLUSTER = 256      # pieces that may overwrite each other (bounds the quadratic repaint)


def is_flattened(head: bytes) -> bool:
    """Whether the first bytes of a file are a flattened-format header."""
    return head[:len(FLAT_SIGNATURE)] == FLAT_SIGNATURE


class Gap(Exception):
    """Logical bytes the stream does not hold (cut short, or never written)."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"logical offset {offset:#x} is not in the flattened stream")
        self.offset = offset


class _Piece(NamedTuple):
    """A stretch of the reassembled file: logical ``start``, ``length``, where it is
    in the flattened file (a NamedTuple, not a frozen dataclass: no ``exec`` at import)."""

    start: int
    length: int
    file_off: int


class FlatIndex:
    """Random access to the logical file a flattened stream encodes.

    :param buf: the whole flattened file (an mmap or bytes).
    :ivar complete: the end marker was found (the stream was not cut).
    :ivar problems: one line per oddity found while indexing.
    """

    def __init__(self, buf, where: str) -> None:
        self.where = where
        self.problems: list[str] = []
        size = len(buf)
        if size < FLAT_HEADER.size:
            raise FormatError(f"{where}: flattened header cut short ({size} bytes)")
        sig, ftype, version = FLAT_HEADER.unpack_from(buf, 0)
        if ftype != TYPE_FLAT_HEADER or version != VERSION_FLAT_HEADER:
            raise FormatError(f"{where}: flattened header type {ftype} version {version} "
                              f"(only type 1 version 1 is known)")
        pieces: list[tuple[int, int, int, int]] = []  # (start, length, file_off, seq)
        pos = FLAT_HEADER_SIZE
        self.complete = False
        while True:
            if pos + PIECE_HEADER.size > size:
                if pos < size or pos == size:
                    self.problems.append(f"flattened stream ends at byte {size} without its end "
                                         f"marker (cut short?)")
                break
            off, n = PIECE_HEADER.unpack_from(buf, pos)
            if off == END_FLAG:
                self.complete = True
                break
            if off < 0 or n <= 0 or off + n > MAX_LOGICAL:
                raise FormatError(f"{where}: flattened piece header at byte {pos} is damaged "
                                  f"(offset {off}, size {n})")
            data = pos + PIECE_HEADER.size
            avail = min(n, size - data)
            if avail > 0:
                pieces.append((off, avail, data, len(pieces)))
            if avail < n:
                self.problems.append(f"flattened stream cut inside the piece at byte {pos} "
                                     f"({avail} of {n} bytes)")
                break
            pos = data + n
        self._set(pieces)

    def _set(self, pieces: list[tuple[int, int, int, int]]) -> None:
        pieces.sort()
        overlap = any(a[0] + a[1] > b[0] for a, b in zip(pieces, pieces[1:]))
        if overlap:
            pieces = _resolve(pieces)
        merged: list[_Piece] = []
        for start, length, file_off, _ in pieces:
            last = merged[-1] if merged else None
            if last and last.start + last.length == start and last.file_off + last.length == file_off:
                merged[-1] = _Piece(last.start, last.length + length, last.file_off)
            else:
                merged.append(_Piece(start, length, file_off))
        self._pieces = merged
        self._starts = [p.start for p in merged]
        self.size = merged[-1].start + merged[-1].length if merged else 0

    @property
    def pieces(self) -> int:
        return len(self._pieces)

    def covered_many(self, offsets, lengths):
        """Vectorised :meth:`covered`: a bool per (offset, length) (numpy arrays)."""
        import numpy as np

        spans: list[list[int]] = []
        for p in self._pieces:  # logical coverage, whatever the file offsets
            if spans and spans[-1][1] == p.start:
                spans[-1][1] = p.start + p.length
            else:
                spans.append([p.start, p.start + p.length])
        if not spans:
            return np.zeros(len(offsets), bool)
        starts = np.array([a for a, _ in spans], np.int64)
        ends = np.array([b for _, b in spans], np.int64)
        i = np.searchsorted(starts, offsets, side="right") - 1
        ok = i >= 0
        j = np.where(ok, i, 0)
        return ok & (offsets >= starts[j]) & (offsets + lengths <= ends[j])

    def covered(self, offset: int, length: int) -> bool:
        """Whether every logical byte of ``offset .. offset+length`` is in the stream."""
        pos, end = offset, offset + length
        i = bisect.bisect_right(self._starts, pos) - 1
        while pos < end:
            if i < 0 or i >= len(self._pieces):
                return False
            p = self._pieces[i]
            if not p.start <= pos < p.start + p.length:
                return False
            pos = p.start + p.length
            i += 1
        return True

    def locate(self, offset: int, length: int) -> list[tuple[int, int]]:
        """(file offset, length) parts holding logical ``offset .. offset+length``.

        :raises Gap: at the first logical byte the stream lacks.
        """
        out = []
        pos, end = offset, offset + length
        i = bisect.bisect_right(self._starts, pos) - 1
        while pos < end:
            if i < 0 or i >= len(self._pieces):
                raise Gap(pos)
            p = self._pieces[i]
            if not p.start <= pos < p.start + p.length:
                raise Gap(pos)
            n = min(end, p.start + p.length) - pos
            out.append((p.file_off + pos - p.start, n))
            pos += n
            i += 1
        return out


def _resolve(pieces: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Overlapping pieces: a later piece of the stream overwrites an earlier one
    (makedumpfile rewrites its header at the end), as replaying them would.

    Only clusters of mutually overlapping pieces are resolved (real streams
    have a handful); a crafted stream of huge clusters is refused.
    """
    out: list[tuple[int, int, int, int]] = []
    cluster: list[tuple[int, int, int, int]] = []
    end = -1
    for p in pieces + [(MAX_LOGICAL + 1, 0, 0, 0)]:
        if cluster and p[0] >= end:
            out.extend(cluster if len(cluster) == 1 else _paint(cluster))
            cluster = []
        cluster.append(p)
        end = max(end if len(cluster) > 1 else -1, p[0] + p[1])
    return out


def _paint(cluster: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    if len(cluster) > MAX_CLUSTER:
        raise FormatError(f"{len(cluster)} flattened pieces overwrite each other (damaged stream?)")
    cuts = sorted({p[0] for p in cluster} | {p[0] + p[1] for p in cluster})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        best = None
        for p in cluster:
            if p[0] <= a and b <= p[0] + p[1] and (best is None or p[3] > best[3]):
                best = p
        if best is not None:
            out.append((a, b - a, best[2] + a - best[0], best[3]))
    return out
