"""LiME memory images (``.lime``, as LiME and AVML write them uncompressed).

Why here, read by hand: the format is one 32-byte header per physical range
(``lime_mem_range_header``: magic ``EMiL``, version 1, first and last
address, 8 reserved bytes) followed by the range's bytes, and no library on
PyPI reads it for us.  Every header is checked against the file before its
range is believed; a file cut inside a range keeps what it holds and names
the rest missing.  AVML's compressed variant (its own magic ``AVML``,
version 2, snappy-framed ranges) is refused in one line by ``detect``.

A LiME image carries no VMCOREINFO and no registers.  The running kernel
keeps its VMCOREINFO as an ELF note in its own memory (``vmcoreinfo_note``);
:func:`find_vmcoreinfo` finds that note in the image, so drgn and ``export``
can use the image.  Without it the image still imports (memory only).
"""

from __future__ import annotations

import bisect
import os
import struct
from pathlib import Path

from ..errors import FormatError, NotCollectedError
from .mapped import MappedDumpFile, stat_dump_file

__all__ = ["LimeFile", "LIME_MAGIC", "LIME_HEADER", "find_vmcoreinfo", "import_lime"]

LIME_MAGIC = 0x4C694D45  # "EMiL" on disk (little-endian)
LIME_HEADER = struct.Struct("<IIQQ8x")  # magic, version, s_addr, e_addr (inclusive), reserved
MAX_RANGES = 1 << 16
_MAX_INFO = 1 << 16


class LimeFile(MappedDumpFile):
    """A LiME image: ``ranges()`` held, ``missing_ranges()`` cut off, ``read()``.

    :ivar vmcoreinfo: found in the image's memory, or ``None``.
    :ivar problems: one line per thing found wrong or missing.
    """

    page_size = 4096
    arch = "x86_64"  # LiME does not say; AVML and LiME are used on x86_64 here
    notes = None
    flattened = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        st = stat_dump_file(path, "a LiME image")
        self.file_size = st.st_size
        self._file = open(self.path, "rb")
        try:
            self._map()
            self.problems: list[str] = []
            self._held: list[tuple[int, int, int]] = []  # paddr, length, file offset
            self._missing: list[tuple[int, int]] = []
            self._parse()
            self._starts = [a for a, _, _ in self._held]
            self.vmcoreinfo = find_vmcoreinfo(self)
            if self.vmcoreinfo is None:
                self.problems.append("no VMCOREINFO note found in the image's memory (drgn "
                                     "cannot open it; import keeps the memory)")
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        pos, size, last_end = 0, self.file_size, -1
        while pos < size:
            if len(self._held) >= MAX_RANGES:
                raise FormatError(f"{self.path}: more than {MAX_RANGES} LiME ranges (damaged?)")
            if size - pos < LIME_HEADER.size:
                self.problems.append(f"the file ends inside a LiME range header at byte {pos} (cut short)")
                break
            magic, version, start, last = LIME_HEADER.unpack_from(self._mm, pos)
            if magic != LIME_MAGIC:
                raise FormatError(f"{self.path}: no LiME range header at byte {pos} (magic {magic:#x})")
            if version != 1:
                raise FormatError(f"{self.path}: LiME version {version} at byte {pos} (1 is known)")
            if last < start or start <= last_end:
                raise FormatError(f"{self.path}: LiME range {start:#x}-{last:#x} at byte {pos} is "
                                  f"empty, reversed or overlaps the one before (damaged header)")
            length = last - start + 1
            body = pos + LIME_HEADER.size
            held = min(length, size - body)
            if held > 0:
                self._held.append((start, held, body))
            if held < length:
                self._missing.append((start + held, length - held))
                self.problems.append(f"the file ends inside the range {start:#x}-{last:#x}: "
                                     f"{length - held} bytes missing (cut short)")
                break
            pos, last_end = body + length, last

    def ranges(self) -> list[tuple[int, int]]:
        return [(a, n) for a, n, _ in self._held]

    def present_ranges(self) -> list[tuple[int, int]]:
        return self.ranges()

    def missing_ranges(self) -> list[tuple[int, int]]:
        return list(self._missing)

    def memory_ranges(self) -> list[tuple[int, int]]:
        """What the headers describe (held and cut off)."""
        return sorted(self.ranges() + self._missing)

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; NotCollectedError at the first byte not held."""
        parts, pos, end = [], paddr, paddr + size
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i < 0 or pos >= self._held[i][0] + self._held[i][1]:
                raise NotCollectedError(pos)
            start, length, off = self._held[i]
            stop = min(end, start + length)
            parts.append(self._mm[off + pos - start:off + stop - start])
            pos = stop
        return b"".join(parts)



def find_vmcoreinfo(image: LimeFile) -> bytes | None:
    """The kernel's own VMCOREINFO note (``vmcoreinfo_note``) in the image's memory.

    The note is ``namesz 11, descsz N, type 0, "VMCOREINFO\\0"`` padded to 4,
    then text starting ``OSRELEASE=``; the first whose text has ``PAGESIZE=``
    and ``SYMBOL(swapper_pg_dir)=`` wins (what drgn needs).
    """
    key = b"VMCOREINFO\0\0OSRELEASE="
    for _, length, off in image._held:
        pos, end = off, off + length
        while (at := image._mm.find(key, pos, end)) >= 0:
            pos = at + 1
            head = image._mm[at - 12:at] if at >= off + 12 else b""
            namesz, descsz, ntype = struct.unpack("<III", head) if len(head) == 12 else (0, 0, 1)
            if namesz != 11 or ntype != 0 or not 0 < descsz <= _MAX_INFO:
                continue
            text = bytes(image._mm[at + 12:min(end, at + 12 + descsz)]).split(b"\0", 1)[0]
            if b"\nPAGESIZE=" in text and b"SYMBOL(swapper_pg_dir)=" in text:
                return text
    return None


def import_lime(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                chunk_size: int | None = None, level: int | None = None, threads: int = 2,
                progress=None, dedup: bool = False):
    """Copy every range of a LiME image (and the VMCOREINFO found in it) into ``output``;
    a range the file was cut inside is written as MISSING past the cut."""
    import time

    from ..tsd import MemoryMap, TsdWriter
    from ..tsd.writer import DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL
    from .importer import ImportResult, byte_progress, vmcoreinfo_fields

    t0 = time.perf_counter()
    with LimeFile(source) as img:
        info = vmcoreinfo_fields(img.vmcoreinfo)
        props = {"source": "lime", "source_name": os.path.basename(os.fspath(source)),
                 "source_bytes": str(img.file_size)}
        if info.get("OSRELEASE"):
            props["kernel_release"] = info["OSRELEASE"]
        memory_map = MemoryMap.from_ranges(img.memory_ranges())
        total = sum(n for _, n in img.ranges())
        done = 0
        extra: dict = {"dedup": True} if dedup else {}
        with TsdWriter(output, arch=img.arch, page_size=img.page_size,
                       chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, level=level or DEFAULT_LEVEL,
                       threads=threads, memory_map=memory_map, **extra) as w:
            w.write_metadata(vmcoreinfo=img.vmcoreinfo, notes=None, properties=props)
            for start, length, off in img._held:  # one call a range: the pipeline stays full
                w.write_file_range(start, img._file.fileno(), off, length,
                                   progress=byte_progress(progress, done, total))
                done += length
            for start, length in img.missing_ranges():
                w.write_missing(start, length, "not in the LiME file (cut short)")
            stats, dump_id, dedup_pages = w.stats, str(w.dump_id), w.dedup_pages
    return ImportResult(dump_id, os.fspath(source), os.fspath(output), stats,
                        time.perf_counter() - t0, os.path.getsize(output), len(memory_map.ranges),
                        dedup_pages)
