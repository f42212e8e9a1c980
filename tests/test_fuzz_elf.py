"""Fuzz ``import`` (and ``ElfVmcore``) with hostile ELF vmcores.

A small ELF core is written by the project's own exporter from a synthetic
dump, then damaged: bit flips (mostly in the ELF and program headers, where
the parser looks), program-header fields set to hostile values (offsets and
sizes past the file, addresses near 2^64, overlapping segments, a huge
``e_phnum``), truncation.  ``import`` must end with an exit code and at most
one ``error:`` line; ``ElfVmcore`` may only raise a TsubakiError.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsubaki_forensics.errors import TsubakiError
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.vmcore import ElfVmcore, write_elf_vmcore

from test_fuzz_tsd import Stats, _pos, build_sample, fuzz_settings

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")


_STATS: dict[str, Stats] = {}


@pytest.fixture(scope="module", autouse=True)
def _save_stats():
    yield
    for s in _STATS.values():
        s.save()


@pytest.fixture(scope="module")
def elf(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("elf")
    build_sample(d / "s.tsd")
    with open_dump(d / "s.tsd") as dump:
        write_elf_vmcore(d / "core.elf", dump.memory, dump.vmcoreinfo, dump.notes)
    return (d / "core.elf").read_bytes()


_hostile = st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 2**64 - 4096, 1 << 40, 4096])


@st.composite
def damaged_elf(draw, raw: bytes) -> bytes:
    data = bytearray(raw)
    phoff, phnum = EHDR.unpack_from(raw)[5], EHDR.unpack_from(raw)[11]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip_head", "flip", "phdr", "ehdr", "truncate", "dup"]))
        if kind == "flip_head":
            pos = _pos(draw, min(len(data), phoff + phnum * PHDR.size) - 1)
            if pos < len(data):
                data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "flip" and data:
            pos = _pos(draw, len(data) - 1)
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "phdr" and phnum:
            i = draw(st.integers(0, phnum - 1))
            at = phoff + i * PHDR.size
            if at + PHDR.size <= len(data):
                fields = list(PHDR.unpack_from(data, at))
                field = draw(st.integers(0, 7))
                fields[field] = draw(_hostile) % (1 << (32 if field < 2 else 64))
                PHDR.pack_into(data, at, *fields)
        elif kind == "ehdr" and len(data) >= EHDR.size:
            fields = list(EHDR.unpack_from(data))
            field = draw(st.sampled_from([5, 8, 9, 10, 11]))  # phoff, ehsize, phentsize, phnum
            fields[field] = draw(_hostile) % (1 << (64 if field == 5 else 16))
            EHDR.pack_into(data, 0, *fields)
        elif kind == "truncate":
            del data[_pos(draw, len(data)):]
        elif kind == "dup" and phnum >= 2:  # two segments claiming the same memory
            a = phoff
            data[a + PHDR.size:a + 2 * PHDR.size] = data[a:a + PHDR.size]
    return bytes(data)


@fuzz_settings(80)
@given(data=st.data())
def test_import_survives_hostile_elf(elf, tmp_path_factory, data, capsys):
    from tsubaki_forensics.cli.app import main

    stats = _STATS.setdefault("elf-import", Stats("elf-import"))
    d = tmp_path_factory.mktemp("e", numbered=True)
    src = d / "core.elf"
    src.write_bytes(data.draw(damaged_elf(elf)))
    with stats:
        try:
            with ElfVmcore(src) as core:
                for paddr, length, _ in core.ranges()[:16]:
                    core.read(paddr, min(length, 1 << 20))
        except TsubakiError as e:
            stats.errors += 1
            assert "\n" not in str(e)
        rc = main(["import", str(src), "-o", str(d / "out.tsd")])
    err = capsys.readouterr().err
    assert isinstance(rc, int) and "Traceback" not in err
    stats.errors += rc != 0
    assert len([line for line in err.splitlines() if line.startswith("error:")]) <= 1
    if rc == 0:
        with open_dump(d / "out.tsd") as dump:
            assert not dump.problems
