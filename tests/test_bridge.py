"""The drgn bridge without a kernel: notes, VMCOREINFO, debug-info search, a Program over a tiny .tsd."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import drgn
import pytest
from elftools.elf.elffile import ELFFile

from tsubaki_forensics.drgn_bridge import (
    Note,
    find_vmlinux,
    iter_notes,
    notes_only_core,
    parse_vmcoreinfo,
    program_from_dump,
    read_build_id,
)
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
    notes = [Note(b"VMCOREINFO", 0, b"OSRELEASE=x\n"), Note(b"CORE", 1, bytes(range(7)))]
    blob = b"".join(encode_note(n) for n in notes)
    assert list(iter_notes(blob)) == notes
    with pytest.raises(FormatError, match="runs past the end"):
        list(iter_notes(blob[:-8]))


def test_notes_only_core_is_a_valid_elf_core():
    core = notes_only_core([Note(b"VMCOREINFO", 0, VMCOREINFO), Note(b"CORE", 1, bytes(336))], 62)
    elf = ELFFile(io.BytesIO(core))
    assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
    (seg,) = list(elf.iter_segments())
    assert seg["p_type"] == "PT_NOTE"
    assert [(n["n_name"], n["n_type"]) for n in seg.iter_notes()] == [("VMCOREINFO", 0), ("CORE", "NT_PRSTATUS")]


def test_find_vmlinux_by_build_id(tmp_path):
    build_id = read_build_id(TRUE)
    assert build_id and len(build_id) == 40
    debug = tmp_path / "debug"
    target = debug / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    target.parent.mkdir(parents=True)
    shutil.copy(TRUE, target)
    assert find_vmlinux(build_id, "6.1.0", debug_dirs=[debug], lab_cache=False) == target
    assert find_vmlinux(build_id, "6.1.0", extra=[TRUE], debug_dirs=[], lab_cache=False) == TRUE


def test_missing_or_mismatched_vmlinux_names_build_id_and_release(tmp_path):
    with pytest.raises(DebugInfoError, match=r"build id 00ff, kernel 6\.1\.0-56-cloud-amd64") as e:
        find_vmlinux("00ff", "6.1.0-56-cloud-amd64", debug_dirs=[tmp_path], lab_cache=False)
    assert "\n" not in str(e.value)
    with pytest.raises(DebugInfoError, match=r"has build id [0-9a-f]{40}; the dump needs build id 00ff, kernel 6\.1\.0-x"):
        find_vmlinux("00ff", "6.1.0-x", explicit=TRUE)
    with pytest.raises(DebugInfoError, match="does not exist"):
        find_vmlinux("00ff", "6.1.0-x", explicit=tmp_path / "nope")
    with pytest.raises(DebugInfoError, match="no BUILD-ID"):
        find_vmlinux(None, "4.19", debug_dirs=[], lab_cache=False)


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
    notes = encode_note(Note(b"CORE", 1, bytes(336))) if with_registers else None
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
