"""Write an ELF vmcore in the /proc/vmcore style that drgn and makedumpfile read.

Why this exact shape: makedumpfile 1.7.2 refuses QEMU's own ELF dumps but
accepts the kernel's /proc/vmcore layout (NOTES-drgn.md): no section
headers, the PT_NOTE first, then one page-aligned PT_LOAD per contiguous
physical range with ``p_paddr`` set and ``p_vaddr`` in the x86_64 direct map
(0xffff888000000000 + paddr).  drgn reads physical memory through
``p_paddr``.  Zero ranges are left as holes, so the file is sparse; missing
ranges get no PT_LOAD at all, so a reader faults on them instead of seeing
invented zeros.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable

from ..contracts.dump import MemoryView
from ..errors import FormatError, StorageError
from ..tsd.heap import reuse_chunk_sized_blocks
from ..tsd.memory import Range
from .elf import ElfVmcore
from .notes import VMCOREINFO_NAME, VMCOREINFO_TYPE, build_note, iter_notes

__all__ = ["write_elf_vmcore", "check_exportable", "copy_as_proc_vmcore", "DIRECT_MAP_BASE", "MemoryLike"]

ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr (only section 0, for PN_XNUM)
PN_XNUM = 0xFFFF
MAX_FILE = (1 << 63) - 1  # largest off_t
ET_CORE, EV_CURRENT, PT_LOAD, PT_NOTE = 4, 1, 1, 4
PF_RWX = 7
MACHINES = {"x86_64": 62, "aarch64": 183, "riscv64": 243}  # 64-bit little-endian only
DIRECT_MAP_BASE = {"x86_64": 0xFFFF888000000000}
#: Bytes per read and write.  Whole 8 MiB chunks (a read of exactly one decoded
#: chunk is that chunk itself, no copy) were measured slower: 0.1 s less user
#: CPU but ~0.8 s more system time for a 2 GiB export, the kernel copying from
#: a cold 8 MiB block instead of a cache-warm 1 MiB slice (issue 21, "Fourth pass").
COPY_WINDOW = 1 << 20


# What the exporter reads: the same memory view the drgn bridge maps (one Protocol, contracts/).
MemoryLike = MemoryView


def _spans(memory: MemoryLike) -> list[tuple[int, int, list]]:
    """Contiguous physical spans (data and zero together) with their parts."""
    spans: list[tuple[int, int, list]] = []
    for r in memory.ranges():
        if spans and spans[-1][0] + spans[-1][1] == r.start:
            start, length, parts = spans[-1]
            spans[-1] = (start, length + r.length, parts + [r])
        else:
            spans.append((r.start, r.length, [r]))
    return spans


def check_exportable(memory: MemoryLike, vmcoreinfo: bytes | None, notes: bytes | None, *,
                     what: str = "the dump") -> None:
    """Refuse, before anything is written, a dump whose ELF no reader could
    use: one with no memory at all, or without VMCOREINFO (drgn and
    makedumpfile need it to find the kernel) in its metadata or its notes.

    :raises FormatError: naming ``what`` and what it lacks.
    """
    lacks = []
    if not memory.ranges():
        lacks.append("no memory")
    has_info = bool(vmcoreinfo) or any(n.name == VMCOREINFO_NAME for n in iter_notes(bytes(notes or b"")))
    if not has_info:
        lacks.append("no VMCOREINFO")
    if lacks:
        raise FormatError(f"{what}: nothing to export: the dump holds {' and '.join(lacks)} "
                          f"(a prefix too short to hold the panic notice?)")


def write_elf_vmcore(path: str | os.PathLike[str], memory: MemoryLike, vmcoreinfo: bytes | None,
                     notes: bytes | None, *, arch: str = "x86_64", page_size: int = 4096,
                     progress: Callable[[int, int], None] | None = None) -> int:
    """Write ``memory`` (its ``ranges()``) as an ELF core; returns the file size.

    ``notes`` (the raw PT_NOTE bytes of the original vmcore) are written
    unchanged; a VMCOREINFO note is appended only if they lack one.
    """
    if arch not in MACHINES:
        raise FormatError(f"cannot export a {arch} dump as an ELF vmcore (supported: "
                          f"{', '.join(MACHINES)})")
    blob = bytes(notes or b"")
    if vmcoreinfo and not any(n.name == VMCOREINFO_NAME for n in iter_notes(blob)):
        blob += build_note(VMCOREINFO_NAME, VMCOREINFO_TYPE, bytes(vmcoreinfo))
    spans = _spans(memory)
    nph = 1 + len(spans)
    # More than 65,534 headers: e_phnum is PN_XNUM and section 0's sh_info holds the count
    xnum = nph >= PN_XNUM
    shoff = ELF_HEADER.size + nph * PROGRAM_HEADER.size
    notes_off = shoff + (SECTION_HEADER.size if xnum else 0)
    offset = -(-(notes_off + len(blob)) // page_size) * page_size
    base = DIRECT_MAP_BASE.get(arch, 0)
    phdrs = [PROGRAM_HEADER.pack(PT_NOTE, 0, notes_off, 0, 0, len(blob), len(blob), 0)]
    layout = []
    for start, length, parts in spans:
        if start + length > 1 << 64:
            raise FormatError(f"cannot export: range {start:#x}+{length:#x} runs past the end of "
                              "the 64-bit physical address space")
        if offset + length > MAX_FILE:
            raise FormatError(f"cannot export: the ELF would be larger than {MAX_FILE} bytes "
                              f"(range {start:#x}+{length:#x})")
        vaddr = base + start if base and base + start + length <= 1 << 64 else 0  # outside the direct map
        phdrs.append(PROGRAM_HEADER.pack(PT_LOAD, PF_RWX, offset, vaddr, start, length, length, 0))
        layout.append((offset, start, parts))
        offset = -(-(offset + length) // page_size) * page_size
    if xnum:
        phdrs.append(SECTION_HEADER.pack(0, 0, 0, 0, 0, 0, 0, nph, 0, 0))
    ident = b"\x7fELF" + bytes([2, 1, EV_CURRENT, 0]) + bytes(8)
    ehdr = ELF_HEADER.pack(ident, ET_CORE, MACHINES.get(arch, 0), EV_CURRENT, 0,
                           ELF_HEADER.size, shoff if xnum else 0, 0, ELF_HEADER.size, PROGRAM_HEADER.size,
                           PN_XNUM if xnum else nph, SECTION_HEADER.size if xnum else 0, 1 if xnum else 0, 0)
    total = sum(r.length for _, _, parts in layout for r in parts if r.kind == "data")
    done = 0
    # The copy reads every chunk once, in order: a read cache (a .tsd's 128 MiB
    # chunk LRU) would only hold chunks never read again, each a new block.
    # Each chunk is decompressed into a new block: reuse the heap for those
    # (docs/BENCHMARKS.md, issue 21: a busy 1 GiB dump, RSS 210 -> 83 MiB).
    reuse_chunk_sized_blocks()
    cache_bytes = getattr(memory, "cache_bytes", None)
    if isinstance(cache_bytes, int):
        memory.cache_bytes = 0  # type: ignore[attr-defined]  # the LRU keeps the chunk in use
    try:
        with open(Path(path), "wb") as f:
            f.write(ehdr + b"".join(phdrs) + blob)
            for file_off, start, parts in layout:
                for r in parts:
                    if r.kind != "data":
                        continue  # zero: a hole in a sparse file
                    f.seek(file_off + r.start - start)
                    pos = r.start
                    while pos < r.end:
                        n = min(COPY_WINDOW - pos % COPY_WINDOW, r.end - pos)
                        f.write(memory.read(pos, n))
                        pos += n
                        done += n
                        if progress:
                            progress(done, total)
            size = offset if layout else f.tell()
            f.truncate(size)
    except OSError as e:
        raise StorageError(f"writing {path}: {e.strerror or e}") from None
    finally:
        if isinstance(cache_bytes, int):
            memory.cache_bytes = cache_bytes  # type: ignore[attr-defined]
    return size


class _ElfMemory:
    """An ``ElfVmcore`` seen as ``MemoryLike`` (every range is data)."""

    def __init__(self, vmcore: ElfVmcore) -> None:
        self._vmcore = vmcore

    def ranges(self) -> list[Range]:
        return [Range(start, length, "data") for start, length, _ in self._vmcore.ranges()]

    def read(self, paddr: int, size: int) -> bytes:
        return self._vmcore.read(paddr, size)


def copy_as_proc_vmcore(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> int:
    """Rewrite any ELF vmcore (QEMU's, say) in the /proc/vmcore layout; returns its size.

    Why: makedumpfile refuses QEMU's ``dump-guest-memory`` ELF files but
    reads this layout, so tests and benchmarks compare against it on a copy.
    """
    with ElfVmcore(source) as vmcore:
        return write_elf_vmcore(path, _ElfMemory(vmcore), vmcore.vmcoreinfo, vmcore.notes,
                                arch=vmcore.arch)
