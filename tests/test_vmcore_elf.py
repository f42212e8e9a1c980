"""ELF vmcores: QEMU-style input, /proc/vmcore-style output, lossless round trip."""

from __future__ import annotations

import os
import random
import struct

import pytest
from elftools.elf.elffile import ELFFile

from tsubaki_forensics.errors import FormatError, NotCollectedError
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.vmcore import ElfVmcore, build_note, iter_notes, write_elf_vmcore
from tsubaki_forensics.vmcore.export import DIRECT_MAP_BASE
from tsubaki_forensics.vmcore.importer import import_vmcore

PAGE = 4096
VMCOREINFO = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff8260a000\n"


def qemu_style_elf(path, segments, notes, memsz_extra=0):
    """An ELF core laid out like QEMU's dump-guest-memory: p_vaddr 0, unaligned
    offsets, one section header; the last segment may have p_memsz > p_filesz."""
    phnum = 1 + len(segments)
    notes_off = 64 + phnum * 56
    off = notes_off + len(notes)
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, notes_off, 0, 0, len(notes), len(notes), 0)]
    body = bytearray(notes)
    for i, (paddr, data) in enumerate(segments):
        extra = memsz_extra if i == len(segments) - 1 else 0
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 0, off, 0, paddr, len(data), len(data) + extra, 0))
        body += data
        off += len(data)
    shoff = off
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 4, 62, 1, 0, 64, shoff, 0, 64, 56, phnum, 64, 1, 0)
    path.write_bytes(ehdr + b"".join(phdrs) + bytes(body) + bytes(64))


def sample_memory(seed=5):
    rng = random.Random(seed)
    low = b"".join(rng.choice([bytes(PAGE), rng.randbytes(PAGE), b"\x90" * PAGE]) for _ in range(40))
    high = rng.randbytes(3 * PAGE) + bytes(5 * PAGE)
    return [(0, low), (0x100000, high)]


def sample_notes():
    prstatus = bytes(range(256)) + bytes(80)
    return (build_note("CORE", 1, prstatus) + build_note("CORE", 1, prstatus[::-1])
            + build_note("VMCOREINFO", 0, VMCOREINFO))


def test_reads_qemu_style_core(tmp_path):
    path = tmp_path / "qemu.elf"
    segs = sample_memory()
    qemu_style_elf(path, segs, sample_notes(), memsz_extra=PAGE)
    with ElfVmcore(path) as core:
        assert core.arch == "x86_64"
        assert [(s.paddr, s.size) for s in core.segments] == [(0, len(segs[0][1])),
                                                              (0x100000, len(segs[1][1]))]
        assert core.vmcoreinfo == VMCOREINFO
        assert core.notes == sample_notes()
        assert [n.name for n in iter_notes(core.notes)] == ["CORE", "CORE", "VMCOREINFO"]
        for paddr, data in segs:
            assert core.read(paddr, len(data)) == data
        end = 0x100000 + len(segs[1][1])
        assert core.read(end, PAGE) == bytes(PAGE)  # p_memsz beyond p_filesz
        with pytest.raises(NotCollectedError) as exc:
            core.read(len(segs[0][1]) - 1, 2)
        assert exc.value.address == len(segs[0][1])


def test_import_export_round_trip_is_bit_for_bit(tmp_path):
    src, tsd, out = tmp_path / "qemu.elf", tmp_path / "d.tsd", tmp_path / "out.elf"
    segs = sample_memory()
    qemu_style_elf(src, segs, sample_notes(), memsz_extra=2 * PAGE)
    res = import_vmcore(src, tsd, chunk_size=4 * PAGE)
    # p_memsz beyond p_filesz is what makedumpfile -E left out: excluded (issue 18), never zeros
    assert res.stats.raw_bytes == sum(len(d) for _, d in segs)
    assert res.excluded_bytes == 2 * PAGE
    with open_dump(tsd) as dump:
        assert dump.properties["kernel_release"] == "6.1.0-test"
        write_elf_vmcore(out, dump.memory, dump.vmcoreinfo, dump.notes)
    with ElfVmcore(src) as a, ElfVmcore(out) as b:
        assert b.notes == a.notes and b.vmcoreinfo == a.vmcoreinfo
        held = [(s, min(s + n, seg.paddr + seg.size) - s) for s, n, seg in a.ranges()]
        for start, length in held:
            assert b.read(start, length) == a.read(start, length)
        assert [(s, n) for s, n, _ in b.ranges()] == held


def test_export_reads_through_one_chunk_and_gives_the_cache_back(tmp_path):
    """A sequential export keeps one chunk decoded, not the reader's whole LRU,
    writes the same bytes, and leaves the dump's cache budget as it found it."""
    src, tsd, out = tmp_path / "qemu.elf", tmp_path / "d.tsd", tmp_path / "out.elf"
    segs = sample_memory()
    qemu_style_elf(src, segs, sample_notes())
    import_vmcore(src, tsd, chunk_size=4 * PAGE)
    with open_dump(tsd) as dump:
        budget = dump.memory.cache_bytes
        write_elf_vmcore(out, dump.memory, dump.vmcoreinfo, dump.notes)
        assert dump.memory.cache_bytes == budget
        assert len(dump.memory._cache) == 1  # only the chunk being copied
        chunks = dump.memory.decompressed
    assert chunks > 1
    with ElfVmcore(src) as a, ElfVmcore(out) as b:
        for start, length, _ in a.ranges():
            assert b.read(start, length) == a.read(start, length)


def test_export_layout_is_proc_vmcore_style(tmp_path):
    src, tsd, out = tmp_path / "qemu.elf", tmp_path / "d.tsd", tmp_path / "out.elf"
    qemu_style_elf(src, sample_memory(), sample_notes())
    import_vmcore(src, tsd)
    with open_dump(tsd) as dump:
        write_elf_vmcore(out, dump.memory, dump.vmcoreinfo, dump.notes)
    with open(out, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
        assert elf["e_shoff"] == 0 and elf["e_shnum"] == 0
        phdrs = [s.header for s in elf.iter_segments()]
    assert phdrs[0]["p_type"] == "PT_NOTE"
    loads = phdrs[1:]
    assert loads and all(h["p_type"] == "PT_LOAD" for h in loads)
    for h in loads:
        assert h["p_offset"] % PAGE == 0 and h["p_paddr"] % PAGE == 0
        assert h["p_vaddr"] == DIRECT_MAP_BASE["x86_64"] + h["p_paddr"]
        assert h["p_filesz"] == h["p_memsz"]


def test_export_adds_vmcoreinfo_note_only_when_missing(tmp_path):
    src, tsd, out = tmp_path / "qemu.elf", tmp_path / "d.tsd", tmp_path / "out.elf"
    only_prstatus = build_note("CORE", 1, bytes(336))
    qemu_style_elf(src, sample_memory(), only_prstatus)
    import_vmcore(src, tsd)
    with open_dump(tsd) as dump:
        assert dump.vmcoreinfo is None
        write_elf_vmcore(out, dump.memory, VMCOREINFO, dump.notes)
    with ElfVmcore(out) as b:
        assert b.vmcoreinfo == VMCOREINFO
        assert b.notes.startswith(only_prstatus)


def test_missing_ranges_are_left_out_of_the_export(tmp_path):
    from tsubaki_forensics.tsd import TsdWriter

    tsd, out = tmp_path / "d.tsd", tmp_path / "out.elf"
    with TsdWriter(tsd) as w:
        w.write_memory(0, b"\x07" * PAGE)
        w.write_missing(PAGE, PAGE, "lost")
        w.write_memory(2 * PAGE, b"\x08" * PAGE)
    with open_dump(tsd) as dump:
        write_elf_vmcore(out, dump.memory, None, None)
    with ElfVmcore(out) as core:
        assert core.read(0, PAGE) == b"\x07" * PAGE and core.read(2 * PAGE, PAGE) == b"\x08" * PAGE
        with pytest.raises(NotCollectedError):
            core.read(PAGE, 1)


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"hello world, not an elf", "not an ELF"),
    (b"\x7fELF\x02\x01\x01" + bytes(20), "malformed ELF"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "bad.elf"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=match) as exc:
        ElfVmcore(path)
    assert "\n" not in str(exc.value)


def test_truncated_vmcore_reads_to_the_cut(tmp_path):
    """A copy of /proc/vmcore that ran out of space (issue 18): what the file holds
    reads, the rest of each PT_LOAD is named missing (never zeros)."""
    path = tmp_path / "cut.elf"
    qemu_style_elf(path, sample_memory(), sample_notes())
    full = ElfVmcore(path)
    whole = [(a, n) for a, n, _ in full.ranges()]
    original = {a: full.read(a, n) for a, n in whole}
    full.close()
    path.write_bytes(path.read_bytes()[:20000])
    with ElfVmcore(path) as core:
        assert core.cut_off and core.problems and "cut short" in core.problems[0]
        held = sum(s.size for s in core.segments)
        assert held + sum(n for _, n in core.cut_off) == sum(n for _, n in whole)
        for a, n, _ in core.ranges():
            base = max(x for x in original if x <= a)
            assert core.read(a, n) == original[base][a - base:a - base + n]
        with pytest.raises(NotCollectedError):
            core.read(core.cut_off[-1][0], 8)


def test_not_a_core_and_directory(tmp_path):
    with pytest.raises(FormatError, match="is a directory"):
        ElfVmcore(tmp_path)
    with pytest.raises(FormatError, match="no such file"):
        ElfVmcore(tmp_path / "nope")
    exe = tmp_path / "exe"
    data = bytearray(open("/bin/true", "rb").read())
    exe.write_bytes(data)
    with pytest.raises(FormatError, match="not a core dump"):
        ElfVmcore(exe)


def test_sparse_vmcore_holes_become_zero_without_reading(tmp_path):
    from tsubaki_forensics.vmcore.importer import file_extents

    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as f:
        f.write(b"\x01" * PAGE)
        f.seek(6 << 20)
        f.write(b"\x02" * PAGE)
        f.truncate(8 << 20)
    with open(sparse, "rb") as f:
        ext = file_extents(f.fileno(), 0, 8 << 20, min_hole=1 << 20)
    if len(ext) == 1:
        pytest.skip("this filesystem reports no holes (no SEEK_HOLE support)")
    mib = 1 << 20
    assert ext == [(0, PAGE, True), (PAGE, 6 * mib - PAGE, False),
                   (6 * mib, PAGE, True), (6 * mib + PAGE, 2 * mib - PAGE, False)]
    with open(sparse, "rb") as f:  # holes under min_hole are read with the data
        assert file_extents(f.fileno(), 0, 8 << 20, min_hole=7 << 20) == [(0, 8 << 20, True)]


def test_import_of_sparse_export_equals_import_of_original(tmp_path):
    src, a, out, b = (tmp_path / n for n in ("qemu.elf", "a.tsd", "out.elf", "b.tsd"))
    segs = [(0, bytes(3 << 20) + b"\x33" * PAGE + bytes(2 << 20))]
    qemu_style_elf(src, segs, sample_notes())
    import_vmcore(src, a, chunk_size=1 << 20)
    with open_dump(a) as dump:
        write_elf_vmcore(out, dump.memory, dump.vmcoreinfo, dump.notes)
    assert os.stat(out).st_blocks * 512 < os.stat(out).st_size  # the export is sparse
    import_vmcore(out, b, chunk_size=1 << 20)
    with open_dump(a) as da, open_dump(b) as db:
        assert da.memory.ranges() == db.memory.ranges()
        assert db.memory.read(0, len(segs[0][1])) == segs[0][1]


def test_proc_vmcore_style_overlapping_text_segment_is_imported_once(tmp_path):
    """/proc/vmcore maps kernel text twice: once in the direct map, once at its
    text address; both PT_LOADs name the same physical pages."""
    src, tsd = tmp_path / "proc.elf", tmp_path / "d.tsd"
    ram = random.Random(9).randbytes(16 * PAGE)
    qemu_style_elf(src, [(0, ram), (4 * PAGE, ram[4 * PAGE:8 * PAGE])], sample_notes())
    with ElfVmcore(src) as core:
        assert [(s, n) for s, n, _ in core.ranges()] == [(0, 16 * PAGE)]
        assert core.read(3 * PAGE, 6 * PAGE) == ram[3 * PAGE:9 * PAGE]
    res = import_vmcore(src, tsd)
    assert res.stats.raw_bytes == len(ram)
    with open_dump(tsd) as dump:
        assert dump.problems == [] and dump.memory.read(0, len(ram)) == ram


def test_a_level_1_import_runs_without_numpy_and_reads_back(tmp_path):
    """A whole ``import`` of an ELF at the default level (start-up, program
    headers, zero scan, compression) never loads numpy nor pyelftools: importing
    them was a quarter of a 256 MiB import (issue 21).  The dump reads back
    byte for byte."""
    import subprocess
    import sys

    src, tsd = tmp_path / "qemu.elf", tmp_path / "d.tsd"
    segs = sample_memory()
    qemu_style_elf(src, segs, sample_notes())
    # main() is the process here: it may end with os._exit after the atexit handlers (cli/app.py),
    # so an atexit handler reports the modules loaded
    code = ("import atexit, sys; from tsubaki_forensics.cli.app import main\n"
            "atexit.register(lambda: print('numpy' in sys.modules or 'elftools' in sys.modules, file=sys.stderr))\n"
            "sys.argv = ['tsubaki-forensics', 'import', sys.argv[1], '-o', sys.argv[2]]\n"
            "sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(tsd)], capture_output=True,
                          text=True, check=True)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr
    with open_dump(tsd) as dump:
        for paddr, data in segs:
            assert dump.memory.read(paddr, len(data)) == data


@pytest.mark.parametrize("which", ["qemu", "export", "big-endian-32", "xnum"])
def test_elf_header_fields_are_pyelftools_own(tmp_path, which):
    """The vmcore reader unpacks the ELF header with struct (pyelftools cost
    0.05 s of start-up, issue 21); pyelftools is the oracle for what it reads:
    class, byte order, machine, and the program headers (PN_XNUM followed)."""
    path = tmp_path / f"{which}.elf"
    if which == "qemu":
        qemu_style_elf(path, sample_memory(), sample_notes())
    elif which == "export":  # our own writer's layout (proc/vmcore style)
        write_elf_vmcore(path, _Mem(sample_memory()), VMCOREINFO, sample_notes())
    elif which == "big-endian-32":  # a 32-bit big-endian core of a machine we name by number
        notes = b""
        data = bytes(range(256)) * 16
        phnum = 2
        off = 52 + phnum * 32
        phdrs = struct.pack(">IIIIIIII", 4, off, 0, 0, len(notes), len(notes), 0, 4)
        phdrs += struct.pack(">IIIIIIII", 1, off + len(notes), 0, 0x2000, len(data), len(data), 0, 0)
        ident = b"\x7fELF" + bytes([1, 2, 1, 0]) + bytes(8)
        ehdr = struct.pack(">16sHHIIIIIHHHHHH", ident, 4, 20, 1, 0, 52, 0, 0, 52, 32, phnum, 40, 0, 0)
        path.write_bytes(ehdr + phdrs + notes + data)
    else:  # e_phnum PN_XNUM: the count is section 0's sh_info
        data = b"\x11" * PAGE
        ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        phoff, shoff = 64, 64 + 56
        off = shoff + 64
        ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 4, 62, 1, 0, phoff, shoff, 0, 64, 56, 0xFFFF, 64, 1, 0)
        phdr = struct.pack("<IIQQQQQQ", 1, 0, off, 0, 0x5000, len(data), len(data), 0)
        sect0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 1, 0, 0)
        path.write_bytes(ehdr + phdr + sect0 + data)
    with open(path, "rb") as f:
        ref = ELFFile(f)
        want = {"class": ref.elfclass, "little": ref.little_endian, "machine": ref["e_machine"],
                "segments": [(s["p_type"], s["p_offset"], s["p_paddr"], s["p_filesz"], s["p_memsz"])
                             for s in ref.iter_segments()]}
    loads = [(t, o, p, fs, ms) for t, o, p, fs, ms in want["segments"] if t == "PT_LOAD"]
    with ElfVmcore(path) as core:
        assert (core.elfclass, core.little_endian) == (want["class"], want["little"])
        assert core.arch == {"EM_X86_64": "x86_64", "EM_PPC": "EM_PPC"}[want["machine"]]
        assert [("PT_LOAD", s.offset, s.paddr, s.size, s.memsz) for s in core.segments] == loads


class _Mem:
    """The smallest MemoryLike for write_elf_vmcore: the sample segments."""

    def __init__(self, segs):
        self.segs = segs

    def ranges(self):
        from tsubaki_forensics.tsd.memory import Range

        return [Range(p, len(d), "data") for p, d in self.segs]

    def read(self, paddr, size):
        for p, d in self.segs:
            if p <= paddr < p + len(d):
                return d[paddr - p:paddr - p + size]
        raise AssertionError(paddr)


def test_import_progress_counts_every_byte_once_in_order(tmp_path):
    """``progress(done, total)`` rises with each job the writer frames (one writer
    call per extent, no per-window drains) and ends at the total, with and without
    dedup; both dumps hold the memory."""
    from tsubaki_forensics.tsd.writer import FILE_BATCH

    src, a, b = tmp_path / "qemu.elf", tmp_path / "a.tsd", tmp_path / "b.tsd"
    low, high = sample_memory()
    big = (low[1] * (2 * FILE_BATCH // len(low[1]) + 1))[:2 * FILE_BATCH + 5 * PAGE]  # 3 jobs
    segs = [(0, big), (high[0] + len(big), high[1])]
    qemu_style_elf(src, segs, sample_notes())
    seen: list[tuple[int, int]] = []
    res = import_vmcore(src, a, chunk_size=1 << 20, progress=lambda d, t: seen.append((d, t)))
    total = sum(len(d) for _, d in segs)
    assert len(seen) >= 4  # per job (3 + 1), not per call
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (total, total) and {t for _, t in seen} == {total}
    seen_dedup: list[int] = []  # the dedup pipeline reports per job too
    import_vmcore(src, b, chunk_size=1 << 20, dedup=True, progress=lambda d, t: seen_dedup.append(d))
    assert seen_dedup == sorted(seen_dedup) and seen_dedup[-1] == total and len(seen_dedup) >= 4
    with open_dump(a) as da, open_dump(b) as db:
        assert res.stats.raw_bytes == total
        for paddr, data in segs:
            assert da.memory.read(paddr, len(data)) == data == db.memory.read(paddr, len(data))
