"""Read ELF vmcores: QEMU ``dump-guest-memory`` files and /proc/vmcore copies.

Why mmap: a vmcore is as large as the guest's RAM, and importing it must keep
a flat RSS; :meth:`ElfVmcore.view` hands out zero-copy windows and
:meth:`ElfVmcore.release` drops the pages of a window already consumed from
the process's resident set (they stay in the page cache).  Physical
addresses come from ``p_paddr``.

Why ``struct`` and not pyelftools for the 64-byte ELF header and the program
headers: a vmcore needs a dozen fixed fields, and importing pyelftools (its
enums, construct, DWARF modules) cost 0.05 s of CPU, a sixth of a whole
256 MiB import (issue 21).  pyelftools stays the oracle: tests/test_vmcore_elf.py
checks these fields against it.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
from pathlib import Path
from typing import Iterator

from ..contracts.frozen import Frozen
from ..errors import FormatError, NotCollectedError
from ..elfnotes import ARCH_BY_MACHINE
from ..limits import MAX_NOTE_BYTES, check_count
from .mapped import MappedDumpFile, stat_dump_file
from .notes import VMCOREINFO_NAME, iter_notes

__all__ = ["ElfVmcore", "Segment", "ARCH_BY_MACHINE", "stat_dump_file"]


#: Most program headers a vmcore may have (real ones: tens; an export of a
#: fragmented dump: tens of thousands).  Bounds the Segment objects built.
MAX_SEGMENTS = 1 << 18
_PT_LOAD, _PT_NOTE = 1, 4
_ET_CORE, _PN_XNUM = 4, 0xFFFF
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
#: e_machine codes of the architectures a vmcore comes from (pyelftools' names)
_EM_NAMES = {62: "EM_X86_64", 183: "EM_AARCH64", 3: "EM_386", 21: "EM_PPC64", 22: "EM_S390",
             243: "EM_RISCV"}
#: after e_ident: e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags,
#: e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
_EHDR = {64: "HHIQQQIHHHHHH", 32: "HHIIIIIHHHHHH"}
_SH_INFO = {64: 44, 32: 28}  # offset of sh_info in a section header
_PT_NAMES = {_PT_LOAD: "PT_LOAD", _PT_NOTE: "PT_NOTE"}
#: (type, offset, vaddr, paddr, filesz, memsz) of an Elf64_Phdr / Elf32_Phdr
#: (struct, not a numpy table: importing numpy cost more than a whole
#: small import's parsing, issue 21)
_PHDR64 = "I4xQQQQQ"
_PHDR32 = "IIIIII"
_PHDR_SIZE = {64: 56, 32: 32}


class Segment(Frozen):
    """A PT_LOAD: ``size`` bytes at file ``offset`` hold physical ``paddr``.

    ``memsz`` beyond ``size`` reads as zero, as the ELF spec says.  A
    :class:`~..contracts.frozen.Frozen` (what the frozen dataclass gave,
    without its ``exec`` per method at import: issue 21).
    """

    _fields = ("paddr", "size", "offset", "vaddr", "memsz")
    paddr: int
    size: int
    offset: int
    vaddr: int
    memsz: int

    def __init__(self, paddr: int, size: int, offset: int, vaddr: int = 0, memsz: int = 0) -> None:
        object.__setattr__(self, "paddr", paddr)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "vaddr", vaddr)
        object.__setattr__(self, "memsz", memsz)

    @property
    def end(self) -> int:
        return self.paddr + max(self.size, self.memsz)


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:  # short reads happen on some filesystems; EOF is a truncated file
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise FormatError(f"vmcore ends at offset {offset + len(data)}, inside a PT_LOAD")
        data += more
    return data


class ElfVmcore(MappedDumpFile):
    """An ELF core file of a whole machine's physical memory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        st = stat_dump_file(path, "an ELF vmcore")
        self._file = open(self.path, "rb")
        try:
            self._parse(st.st_size)
        except BaseException:
            self.close()
            raise

    def _parse(self, size: int) -> None:
        if self._file.read(4) != b"\x7fELF":
            raise FormatError(f"{self.path}: not an ELF file (bad magic)")
        phnum, phoff, phentsize, machine = self._elf_header(size)
        self.arch = ARCH_BY_MACHINE.get(machine, machine)
        self.file_size = size
        self._map()
        phdrs = self._program_headers(phnum, phoff, phentsize, size)
        segs: list[Segment] = []
        notes: list[bytes] = []
        note_bytes = 0
        #: (paddr, length) of PT_LOAD data past the end of a file cut short: missing
        self.cut_off: list[tuple[int, int]] = []
        self.problems: list[str] = []
        for p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz in phdrs:
            if p_type == _PT_LOAD and p_offset + p_filesz > size and p_paddr + max(p_filesz, p_memsz) <= 1 << 64:
                # A copy of /proc/vmcore that ran out of space: keep what is there,
                # name the rest missing (never zeros: p_memsz is cut with it)
                held = max(0, size - p_offset)
                self.cut_off.append((p_paddr + held, max(p_filesz, p_memsz) - held))
                self.problems.append(f"the file ends at {size}, inside the PT_LOAD for physical "
                                     f"{p_paddr:#x}: {max(p_filesz, p_memsz) - held} bytes of it "
                                     f"missing (cut short)")
                if not held:
                    continue
                p_filesz = p_memsz = held
            if p_offset + p_filesz > size:
                raise FormatError(
                    f"{self.path}: {_PT_NAMES.get(p_type, p_type)} at file offset {p_offset} needs "
                    f"{p_filesz} bytes but the file ends at {size} (truncated vmcore?)")
            if p_type == _PT_LOAD and max(p_filesz, p_memsz) > 0:
                if p_paddr + max(p_filesz, p_memsz) > 1 << 64:
                    raise FormatError(f"{self.path}: PT_LOAD at {p_paddr:#x} of {max(p_filesz, p_memsz)} "
                                      "bytes runs past the end of the 64-bit address space")
                segs.append(Segment(p_paddr, p_filesz, p_offset, p_vaddr, p_memsz))
            elif p_type == _PT_NOTE:
                # A note bomb: many PT_NOTE headers over the same bytes.  Real notes
                # are disjoint, so their total fits in the file (and in the budget).
                note_bytes += p_filesz
                if note_bytes > min(size, MAX_NOTE_BYTES):
                    raise FormatError(
                        f"{self.path}: PT_NOTE segments total more than "
                        f"{min(size, MAX_NOTE_BYTES)} bytes (overlapping notes: possible note bomb)")
                notes.append(self._mm[p_offset:p_offset + p_filesz])
        del phdrs
        self.segments = sorted(segs, key=lambda s: (s.paddr, s.offset))
        self._ranges = self.ranges()
        self._starts = [r[0] for r in self._ranges]
        self.notes = b"".join(notes)
        self.vmcoreinfo: bytes | None = None
        byteorder = "<" if self.little_endian else ">"
        for blob in notes:
            for note in iter_notes(blob, byteorder):
                if note.name == VMCOREINFO_NAME:
                    self.vmcoreinfo = note.desc
                    break

    def _elf_header(self, size: int) -> tuple[int, int, int, str]:
        """(phnum, e_phoff, e_phentsize, e_machine name) from the ELF header; sets
        ``elfclass`` and ``little_endian``.  PN_XNUM: the count is section 0's ``sh_info``."""
        head = os.pread(self._file.fileno(), 64, 0)
        if len(head) < 16:
            raise FormatError(f"{self.path}: malformed ELF header: the file ends at {len(head)} bytes")
        if head[4] not in (1, 2):
            raise FormatError(f"{self.path}: malformed ELF: EI_CLASS {head[4]} is neither 32- nor 64-bit")
        if head[5] not in (1, 2):
            raise FormatError(f"{self.path}: malformed ELF: EI_DATA {head[5]} is neither LSB nor MSB")
        self.elfclass = 64 if head[4] == 2 else 32
        self.little_endian = head[5] == 1
        order = "<" if self.little_endian else ">"
        ehdr = struct.Struct(order + _EHDR[self.elfclass])
        if len(head) < 16 + ehdr.size:
            raise FormatError(f"{self.path}: malformed ELF header: the file ends at {len(head)} bytes, "
                              f"inside the {16 + ehdr.size}-byte header")
        e_type, e_machine, _, _, phoff, shoff, _, _, phentsize, phnum, _, _, _ = ehdr.unpack_from(head, 16)
        if e_type != _ET_CORE:
            raise FormatError(f"{self.path}: ELF type {_ET_NAMES.get(e_type, e_type)}, not a core dump")
        if phnum == _PN_XNUM:  # the real count is in section 0
            info = os.pread(self._file.fileno(), 4, shoff + _SH_INFO[self.elfclass]) if shoff else b""
            if len(info) < 4:
                raise FormatError(f"{self.path}: malformed ELF header: e_phnum is PN_XNUM but "
                                  f"section header 0 is not in the file")
            (phnum,) = struct.unpack(order + "I", info)
        return phnum, phoff, phentsize, _machine_name(e_machine)

    def _program_headers(self, phnum: int, phoff: int, phentsize: int,
                         size: int) -> Iterator[tuple[int, int, int, int, int, int]]:
        """The program headers, one (type, offset, vaddr, paddr, filesz, memsz)
        at a time, the table's claimed size checked first.

        A header claiming more entries than the file can hold (PN_XNUM with
        a forged ``sh_info``, ``e_phentsize`` 0) is refused before anything is
        read; rows are unpacked one by one from the mapping (bounded RSS).
        """
        if phnum == 0:
            return iter(())
        itemsize = _PHDR_SIZE[self.elfclass]
        if phentsize < itemsize:
            raise FormatError(f"{self.path}: e_phentsize {phentsize} is smaller than a program header "
                              f"({itemsize} bytes)")
        check_count(phnum, f"{self.path}: program header table", item_size=phentsize,
                    available=max(0, size - phoff), limit=MAX_SEGMENTS)
        row = struct.Struct(("<" if self.little_endian else ">")
                            + (_PHDR64 if self.elfclass == 64 else _PHDR32))
        assert self._mm is not None
        mm = self._mm
        return (row.unpack_from(mm, phoff + i * phentsize) for i in range(phnum))

    def ranges(self) -> list[tuple[int, int, Segment]]:
        """Disjoint (paddr, length, segment) covering every PT_LOAD once.

        A /proc/vmcore maps kernel text twice (direct map and text mapping);
        each physical byte is taken from the first segment that has it.
        """
        out: list[tuple[int, int, Segment]] = []
        covered = 0
        for s in self.segments:
            start = max(s.paddr, covered)
            if start < s.end:
                out.append((start, s.end - start, s))
                covered = s.end
        return out

    def view(self, paddr: int, size: int) -> memoryview:
        """Zero-copy bytes at ``paddr``, inside one segment's file bytes."""
        s = self._segment(paddr)
        if paddr + size > s.paddr + s.size:
            raise NotCollectedError(s.paddr + s.size if paddr + size > s.end else paddr,
                                    f"{paddr:#x}+{size:#x} is not in one segment's file data")
        off = s.offset + paddr - s.paddr
        assert self._mm is not None
        return memoryview(self._mm)[off:off + size]

    def release(self, paddr: int, size: int) -> None:
        """Drop the resident pages behind an already-consumed window (RSS stays flat)."""
        s = self._segment(paddr)
        start = s.offset + paddr - s.paddr
        end = start + min(size, s.paddr + s.size - paddr)
        start -= start % mmap.PAGESIZE
        if self._mm is not None and end > start and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def _segment(self, paddr: int) -> Segment:
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0:
            start, length, seg = self._ranges[i]
            if paddr < start + length:
                return seg
        raise NotCollectedError(paddr)

    def _pieces(self, paddr: int, size: int) -> Iterator[tuple[int | None, int]]:
        """(file offset, length) of each stretch of the ``size`` bytes at
        ``paddr``, in order; offset None for bytes past a segment's
        ``p_filesz`` (zeros).  NotCollectedError at the first address no
        segment has.  The one walk :meth:`read` and :meth:`read_into` share."""
        pos, end = paddr, paddr + size
        while pos < end:
            s = self._segment(pos)
            stop = min(end, s.end)
            file_end = s.paddr + s.size
            if pos < file_end:
                cut = min(stop, file_end)
                yield s.offset + pos - s.paddr, cut - pos
                pos = cut
            if pos < stop:
                yield None, stop - pos
                pos = stop

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; NotCollectedError at the first address no segment has."""
        fd = self._file.fileno()
        # pread, not a slice of the mmap: a copy either way, but the mapped
        # pages would stay resident (the page classifier reads every struct
        # page through here: +40 MiB of RSS at 2 GiB)
        return b"".join([bytes(n) if off is None else _pread(fd, n, off)
                         for off, n in self._pieces(paddr, size)])

    def read_into(self, paddr: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``paddr`` (:meth:`read` without a new
        block per call: ``preadv`` into the caller's buffer, zeros past
        ``p_filesz``); NotCollectedError at the first address no segment has."""
        view = memoryview(view).cast("B")
        fd, at = self._file.fileno(), 0
        for off, n in self._pieces(paddr, len(view)):
            if off is None:
                view[at:at + n] = bytes(n)
            else:
                got = 0
                while got < n:  # short reads happen; EOF is a truncated file
                    k = os.preadv(fd, [view[at + got:at + n]], off + got)
                    if k <= 0:
                        raise FormatError(f"vmcore ends at offset {off + got}, inside a PT_LOAD")
                    got += k
            at += n

    def fileno(self) -> int:
        """The open vmcore's file descriptor (for ``TsdWriter.write_file_range``)."""
        return self._file.fileno()


def _machine_name(code: int) -> str:
    """pyelftools' name of an e_machine code ("EM_X86_64"); its table is loaded
    only for a machine no vmcore of ours comes from."""
    name = _EM_NAMES.get(code)
    if name is None:
        try:
            from elftools.elf.enums import ENUM_E_MACHINE
        except ImportError:  # pragma: no cover - pyelftools is a dependency
            return str(code)
        name = next((k for k, v in ENUM_E_MACHINE.items() if v == code and k != "_default_"), str(code))
    return name
