"""The drgn bridge without a kernel: notes, VMCOREINFO, debug-info search, a Program over a tiny .tsd."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import drgn
import pytest
from elftools.elf.elffile import ELFFile

from tsubaki_forensics.drgn_bridge import (
    Note,
    candidate_paths,
    iter_notes,
    notes_only_core,
    parse_vmcoreinfo,
    program_from_dump,
    read_build_id,
)
from tsubaki_forensics.drgn_bridge.debuginfo import mismatch_error, not_found_error
from tsubaki_forensics.drgn_bridge.notes import encode_note
from tsubaki_forensics.analysis import Need
from tsubaki_forensics.errors import DebugInfoError, FormatError, NotCollectedError
from tsubaki_forensics.drgn_bridge.program import segment_reader
from tsubaki_forensics.tsd import TsdWriter, open_dump

VMCOREINFO = (
    b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82000000\n"
    b"NUMBER(phys_base)=0\nKERNELOFFSET=0\nBUILD-ID=0011223344556677\n"
)
TRUE = Path(shutil.which("true") or "/bin/true")


def test_vmcoreinfo_fields():
    info = parse_vmcoreinfo(VMCOREINFO + b"\0\0")
    assert (info.release, info.build_id, info.page_size) == ("6.1.0-test", "0011223344556677", 4096)
    assert parse_vmcoreinfo(b"garbage\n=\n").build_id is None


def test_notes_round_trip_and_truncation():
    notes = [Note("VMCOREINFO", 0, b"OSRELEASE=x\n"), Note("CORE", 1, bytes(range(7)))]
    blob = b"".join(encode_note(n) for n in notes)
    assert list(iter_notes(blob)) == notes
    with pytest.raises(FormatError, match="runs past the end"):
        list(iter_notes(blob[:-8]))


def test_notes_only_core_is_a_valid_elf_core():
    core = notes_only_core([Note("VMCOREINFO", 0, VMCOREINFO), Note("CORE", 1, bytes(336))], 62)
    elf = ELFFile(io.BytesIO(core))
    assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
    (seg,) = list(elf.iter_segments())
    assert seg["p_type"] == "PT_NOTE"
    assert [(n["n_name"], n["n_type"]) for n in seg.iter_notes()] == [("VMCOREINFO", 0), ("CORE", "NT_PRSTATUS")]


def test_candidate_paths_by_build_id_and_release(tmp_path):
    build_id = read_build_id(TRUE)
    assert build_id and len(build_id) == 40
    debug = tmp_path / "debug"
    by_id = debug / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    by_release = debug / "boot" / "vmlinux-6.1.0"
    for path in (by_id, by_release):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TRUE, path)
    extra = tmp_path / "plugin-vmlinux"
    shutil.copy(TRUE, extra)
    found = candidate_paths(build_id, "6.1.0", extra=[extra, debug], debug_dirs=[debug])
    assert found == [extra, by_id, by_release]  # plugins first, no duplicates, only existing files
    assert candidate_paths("00ff", "9.9", debug_dirs=[debug]) == []


def test_debug_info_errors_name_build_id_and_release(tmp_path):
    e = mismatch_error(TRUE, "00ff", "6.1.0-x")
    assert re.fullmatch(r"--vmlinux \S+ has build id [0-9a-f]{40}; the dump needs build id 00ff, kernel 6\.1\.0-x", str(e))
    assert "does not exist" in str(mismatch_error(tmp_path / "nope", "00ff", "6.1.0-x"))
    e = not_found_error("00ff", "6.1.0-56-cloud-amd64", 2)
    assert "build id 00ff, kernel 6.1.0-56-cloud-amd64" in str(e) and "\n" not in str(e)
    assert "no BUILD-ID" in str(not_found_error(None, "4.19", 0))
    assert isinstance(e, DebugInfoError)


def test_program_without_matching_debug_info_is_a_debug_info_error(tmp_path):
    with _tiny(tmp_path) as dump:
        with pytest.raises(DebugInfoError, match="does not exist"):
            program_from_dump(dump, vmlinux=tmp_path / "nope")
        with pytest.raises(DebugInfoError, match=r"no vmlinux with debug info found for build id 0011223344556677, kernel 6\.1\.0-test"):
            program_from_dump(dump, debug_dirs=[tmp_path])


def _tiny(tmp_path, notes=None):
    path = tmp_path / "tiny.tsd"
    with TsdWriter(path) as w:
        w.write_metadata(vmcoreinfo=VMCOREINFO, notes=notes)
        w.write_memory(0x1000, bytes(range(256)) * 16)
        w.write_zero(0x2000, 0x1000)
        w.write_missing(0x3000, 0x1000, "lost in the test")
        w.write_memory(0x10000, b"\xab" * 0x1000)
    return open_dump([path])


@pytest.mark.parametrize("with_registers", [False, True])
def test_program_reads_through_the_dump(tmp_path, with_registers):
    notes = encode_note(Note("CORE", 1, bytes(336))) if with_registers else None
    with _tiny(tmp_path, notes) as dump:
        bridged = program_from_dump(dump, debug_info=False)
        prog = bridged.prog
        assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
        assert (Need.REGISTERS in bridged.capabilities) is with_registers
        assert Need.DEBUG_INFO not in bridged.capabilities
        assert prog.read(0x1000, 4, True) == b"\x00\x01\x02\x03"
        assert prog.read(0x1FFE, 4, True) == b"\xfe\xff\x00\x00"  # data range into zero range
        assert prog.read(0x10000, 2, True) == b"\xab\xab"
        with pytest.raises(drgn.FaultError) as e:
            prog.read(0x2FFE, 4, True)
        assert e.value.address == 0x3000


def test_segment_reader_turns_not_collected_into_a_fault():
    def read(paddr, size):
        raise NotCollectedError(paddr + 8)

    with pytest.raises(drgn.FaultError) as e:
        segment_reader(read)(0x5000, 16, 0, True)
    assert e.value.address == 0x5008


def test_dump_without_vmcoreinfo_is_a_clear_error(tmp_path):
    path = tmp_path / "novmci.tsd"
    with TsdWriter(path) as w:
        w.write_memory(0, b"\1" * 4096)
    with open_dump([path]) as dump, pytest.raises(FormatError, match="no VMCOREINFO"):
        program_from_dump(dump, debug_info=False)


def test_segment_reader_caches_whole_pages_and_falls_back_at_gaps():
    calls = []
    memory = bytes(range(256)) * 32  # 8 KiB at physical 0

    def read(paddr, size):
        calls.append((paddr, size))
        if paddr + size > 0x1800:  # everything from 0x1800 on is "not collected"
            raise NotCollectedError(max(paddr, 0x1800))
        return memory[paddr : paddr + size]

    read_fn = segment_reader(read)
    assert read_fn(0x10, 8, 0x10, True) == memory[0x10:0x18]
    assert read_fn(0x20, 8, 0x20, True) == memory[0x20:0x28]
    assert calls == [(0, 4096)]  # one page read served both
    assert read_fn(0x1000, 8, 0x1000, True) == memory[0x1000:0x1008]  # page 1 is half missing: direct read
    assert calls[-2:] == [(0x1000, 4096), (0x1000, 8)]
    with pytest.raises(drgn.FaultError) as e:
        read_fn(0x17FC, 8, 0x17FC, True)
    assert e.value.address == 0x1800


def test_symbol_pack_provider_passes_a_damaged_pack_on_to_the_next_provider():
    """A damaged embedded pack is a DebugInfoError (the chain goes on to BTF), not the end of the run."""
    from tsubaki_forensics.contracts import DebugInfoRequest
    from tsubaki_forensics.symbolpack.provider import SymbolPackProvider

    class Stub:
        symbolpack = b"not a pack at all"

    def request(dump):
        return DebugInfoRequest(None, dump, "00ff", "6.1.0", (), lambda paths, name: None)

    with pytest.raises(DebugInfoError, match="the dump's symbol pack is unusable"):
        SymbolPackProvider().provide(request(Stub()))
    assert SymbolPackProvider().provide(request(object())) is None  # no pack: nothing to offer
