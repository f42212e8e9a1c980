"""Issue 22's findings, each as a crafted input built here (no committed blobs).

Every attack runs the real CLI in a child process (tests/_budget.py) and
asserts what a user gets: one line on stderr, a non-zero exit where it is an
error, and a peak RSS under the documented budget (limits.BUDGET, 256 MiB),
whatever the file claims.
"""

from __future__ import annotations

import json
import struct

import pytest
import zstandard

from tsubaki_forensics.limits import BUDGET, MAX_JSON_DEPTH, check_json, json_cost
from tsubaki_forensics.errors import FormatError
from tsubaki_forensics.symbolpack.fileformat import HEADER, MAGIC, MAJOR, MINOR, decode_pack
from tsubaki_forensics.tsd import TsdWriter
from tsubaki_forensics.tsd import records as R

from _budget import assert_one_line_error, run_cli
from test_fuzz_tsd import DUMP_ID, build_sample, forge

import xxhash

ELF64_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR64 = struct.Struct("<IIQQQQQQ")
SHDR64 = struct.Struct("<IIQQQQIIQQ")
PT_LOAD, PT_NOTE = 1, 4


def elf_ident() -> bytes:
    return b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)


def elf_core(phdrs: list[bytes], *, phnum: int | None = None, phoff: int = 64, tail: bytes = b"") -> bytes:
    head = ELF64_HEADER.pack(elf_ident(), 4, 62, 1, 0, phoff, 0, 0, 64, PHDR64.size,
                             len(phdrs) if phnum is None else phnum, 0, 0, 0)
    return head + b"".join(phdrs) + tail


# -- 1. ELF note bomb ---------------------------------------------------------------

def test_note_bomb_is_refused_within_budget(tmp_path):
    """3,000 PT_NOTE headers each covering the whole 164 KiB file: on main,
    import peaked at 1.0 GiB (the copies of every note segment were joined)."""
    n = 3000
    size = 64 + n * PHDR64.size
    bomb = elf_core([PHDR64.pack(PT_NOTE, 0, 0, 0, 0, size, size, 4) for _ in range(n)])
    assert len(bomb) == size
    path = tmp_path / "bomb.elf"
    path.write_bytes(bomb)
    run = run_cli("import", path, "-o", tmp_path / "out.tsd")
    assert_one_line_error(run, needle="note bomb")
    assert not (tmp_path / "out.tsd").exists()


def test_disjoint_notes_still_read(tmp_path):
    """The bound does not refuse a real layout: two disjoint note segments."""
    from tsubaki_forensics.vmcore import ElfVmcore, build_note
    note = build_note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\n")
    other = build_note("CORE", 1, bytes(32))
    off = 64 + 3 * PHDR64.size
    data = bytes(range(256)) * 16
    raw = elf_core([PHDR64.pack(PT_NOTE, 0, off, 0, 0, len(note), len(note), 4),
                    PHDR64.pack(PT_NOTE, 0, off + len(note), 0, 0, len(other), len(other), 4),
                    PHDR64.pack(PT_LOAD, 0, off + len(note) + len(other), 0, 0x1000, len(data), len(data), 4096)],
                   tail=note + other + data)
    path = tmp_path / "ok.elf"
    path.write_bytes(raw)
    with ElfVmcore(path) as v:
        assert v.vmcoreinfo == b"OSRELEASE=6.1.0\n"
        assert v.notes == note + other
        assert v.read(0x1000, len(data)) == data


# -- 2. program-header count ----------------------------------------------------

def test_pn_xnum_forged_count_is_refused(tmp_path):
    """128 bytes: e_phoff 0, e_phentsize 0, e_phnum PN_XNUM, section 0's sh_info
    0xffffffff: on main a list of 4.29e9 headers was being built."""
    head = ELF64_HEADER.pack(elf_ident(), 4, 62, 1, 0, 0, 64, 0, 64, 0, 0xFFFF, SHDR64.size, 1, 0)
    sect0 = SHDR64.pack(0, 0, 0, 0, 0, 0, 0, 0xFFFFFFFF, 0, 0)
    path = tmp_path / "xnum.elf"
    path.write_bytes(head + sect0)
    assert path.stat().st_size == 128
    run = run_cli("import", path, "-o", tmp_path / "out.tsd", timeout=60)
    assert_one_line_error(run, needle="program header")


def test_phnum_beyond_the_file_is_refused(tmp_path):
    """A sane e_phentsize but 60,000 headers claimed in a 4 KiB file."""
    raw = elf_core([PHDR64.pack(PT_LOAD, 0, 0, 0, 0, 0, 0, 0)], phnum=60000).ljust(4096, b"\0")
    path = tmp_path / "many.elf"
    path.write_bytes(raw)
    run = run_cli("import", path, "-o", tmp_path / "out.tsd", timeout=60)
    assert_one_line_error(run, needle="program header table")


def test_memsz_past_2_64_is_refused(tmp_path):
    raw = elf_core([PHDR64.pack(PT_LOAD, 0, 120, 0, (1 << 64) - 4096, 8, 1 << 20, 4096)]) + bytes(8)
    path = tmp_path / "wrap.elf"
    path.write_bytes(raw)
    run = run_cli("import", path, "-o", tmp_path / "out.tsd", timeout=60)
    assert_one_line_error(run, needle="64-bit address space")


# -- 3. symbol-pack bomb --------------------------------------------------------

def pack_file(content: bytes) -> bytes:
    payload = zstandard.ZstdCompressor(level=19).compress(content)
    return HEADER.pack(MAGIC, MAJOR, MINOR, 0, len(payload), len(content),
                       xxhash.xxh64_intdigest(payload)) + payload


def companion_with_pack(tmp_path, content: bytes):
    dump = tmp_path / "d.tsd"
    build_sample(dump)
    comp = tmp_path / "d.symbols.tsd"
    with TsdWriter(comp, dump_id=DUMP_ID, producer="test", threads=0) as w:
        w.write_metadata(symbolpack=pack_file(content))
    return dump, comp


@pytest.mark.parametrize("mib", [60, 256])
def test_symbol_pack_bomb_is_refused_within_budget(tmp_path, mib):
    """A 24 KB pack that inflates to 60 (256) MiB of ``[{},...]``: on main a
    companion carrying it made analyze peak at 6.7 GB for 23 s."""
    n = (mib << 20) // 3
    pack = tmp_path / "bomb.tsp"
    pack.write_bytes(pack_file(b"[" + b"{}," * (n - 1) + b"{}]"))
    assert pack.stat().st_size < 64 << 10
    dump = tmp_path / "d.tsd"
    build_sample(dump)
    why = "JSON bomb" if mib < 64 else "exceeds the"
    run = run_cli("symbols", "info", pack, timeout=120)
    assert_one_line_error(run, needle=why)
    run = run_cli("symbols", "attach", pack, dump, "-o", tmp_path / "c.tsd", timeout=120)
    assert_one_line_error(run, needle=why)


def test_symbol_pack_bomb_in_a_companion(tmp_path):
    """The dump route (pack_from_dump, what analyze uses without a vmlinux)."""
    from tsubaki_forensics.symbolpack import pack_from_dump
    from tsubaki_forensics.tsd import open_dump
    dump, comp = companion_with_pack(tmp_path, b"[" + b"{}," * (20 << 20) + b"{}]")
    with open_dump([dump, comp]) as d, pytest.raises(FormatError, match="JSON bomb"):
        pack_from_dump(d)


def test_deeply_nested_pack_is_refused(tmp_path):
    """406 bytes of nesting gave a RecursionError traceback on main."""
    pack = tmp_path / "deep.tsp"
    pack.write_bytes(pack_file(b"[" * 200_000 + b"]" * 200_000))
    run = run_cli("symbols", "info", pack, timeout=120)
    assert_one_line_error(run, needle="nested")


def test_decode_pack_bounds_are_one_line():
    with pytest.raises(FormatError, match="nested 100000 levels"):
        decode_pack(pack_file(b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(FormatError, match="JSON bomb"):
        decode_pack(pack_file(b"[" + b"[]," * (20 << 20) + b"[]]"))


# -- 4. nested / huge JSON in EVENT and PROPERTIES records --------------------------

def dump_with_raw_record(tmp_path, rtype: int, payload: bytes, name: str = "evil.tsd"):
    """A sound dump with one forged (checksummed) record appended before the footer is
    lost: the reader finds it by scanning, as it would a cut file."""
    path = tmp_path / name
    raw = build_sample(path)
    # cut the footer (END + INDEX) off: the scan path reads every record
    from tsubaki_forensics.tsd import open_file
    with open_file(path) as f:
        last = max(r.offset + r.size for r in f.records)
    path.write_bytes(raw[:last] + forge(rtype, payload, 999))
    return path


NESTED = b'{"kind":"x","fields":' + b'{"a":' * 150 + b"1" + b"}" * 150 + b"}"


@pytest.mark.parametrize("command", [["inspect"], ["verify"], ["inspect", "--format", "json"]])
def test_nested_event_is_one_line(tmp_path, command):
    path = dump_with_raw_record(tmp_path, R.RecordType.EVENT, struct.pack("<d", 1.0) + NESTED)
    run = run_cli(*command, path)
    assert "Traceback" not in run.stderr and "RecursionError" not in run.stderr + run.stdout
    assert "nested" in run.stdout + run.stderr
    assert run.peak_rss < BUDGET


def test_huge_event_is_refused_on_read(tmp_path):
    """A 60 MiB EVENT body: MAX_TEXT is checked when reading, not only when writing
    (on main inspect used 1.9 GB, verify 3.1 GB)."""
    body = b'{"kind":"x","fields":{"a":[' + b"1," * (30 << 20) + b'1]}}'
    path = dump_with_raw_record(tmp_path, R.RecordType.EVENT, struct.pack("<d", 1.0) + body)
    del body
    for command in (["inspect"], ["verify"]):
        run = run_cli(*command, path)
        assert "Traceback" not in run.stderr
        assert "limit" in run.stdout + run.stderr
        assert run.peak_rss < BUDGET, (command, run.peak_rss >> 20)


def test_nested_properties_are_a_problem_not_a_crash(tmp_path):
    data = b'{"a":' * 120 + b'"x"' + b"}" * 120
    payload = R.pack_metadata(R.MetadataKind.PROPERTIES, data)
    path = dump_with_raw_record(tmp_path, R.RecordType.METADATA, payload)
    run = run_cli("inspect", path)
    assert "Traceback" not in run.stderr
    assert "nested" in run.stdout + run.stderr


def test_triage_survives_a_hostile_file(tmp_path):
    """One file with nested JSON no longer aborts a whole triage run."""
    d = tmp_path / "dumps"
    d.mkdir()
    dump_with_raw_record(d, R.RecordType.EVENT, struct.pack("<d", 1.0) + NESTED)
    run = run_cli("triage", d, "--format", "json", timeout=300,
                  env={"TSUBAKI_CACHE_DIR": str(tmp_path / "cache")})
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    json.loads(run.stdout)
    assert run.peak_rss < BUDGET


# -- the helpers themselves ---------------------------------------------------------

def test_json_cost_over_estimates_and_measures_depth():
    for doc in ([{}] * 1000, {"k%d" % i: i for i in range(1000)}, [["ab", 1.5, None]] * 300):
        raw = json.dumps(doc).encode()
        cost, depth = json_cost(raw)
        assert cost > 2 * len(raw)
    assert json_cost(b'["[[[[", {"a": "]]]]"}]')[1] == 2  # brackets inside strings do not count
    assert json_cost(b'"\\"[["')[1] == 0
    with pytest.raises(FormatError, match=f"limit is {MAX_JSON_DEPTH}"):
        check_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "x")
    check_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, "x")
