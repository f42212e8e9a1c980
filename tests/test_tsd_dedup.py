"""Page deduplication (``TsdWriter(dedup=True)``, format 1.2, codec ZSTD_DEDUP).

A whole page that repeats a page stored literally by an earlier record of the
same file is stored as a 12-byte reference (FORMAT.md §4.1).  These tests
check that the pages read back exactly, that dedup off writes exactly what
the writer wrote before 1.2, that the output does not depend on threads, that
truncated and damaged files degrade as the format promises (a reference to a
damaged page reads as not collected, never a crash), and, on a real crash,
that export and analysis give the same results with and without dedup.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import uuid

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import FormatError, NotCollectedError
from tsubaki_forensics.tsd import TsdWriter, open_dump, open_file, verify_dump
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.tsd.memory import decode_dedup

PAGE = 4096
DID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
CLI = [sys.executable, "-m", "tsubaki_forensics.cli.app"]


def image(seed: int, pages: int, page: int = PAGE, distinct: int = 6) -> bytes:
    """Random pages, zero pages and many repeats of a few distinct pages."""
    rng = random.Random(seed)
    pool = [rng.randbytes(page) for _ in range(distinct)]
    out = []
    for _ in range(pages):
        r = rng.random()
        out.append(bytes(page) if r < 0.2 else rng.choice(pool) if r < 0.65 else rng.randbytes(page))
    return b"".join(out)


def write(path, regions, *, dedup=True, threads=0, chunk=4 * PAGE, page=PAGE, **kw):
    with TsdWriter(path, dump_id=DID, dedup=dedup, threads=threads, chunk_size=chunk,
                   page_size=page, **kw) as w:
        for addr, data in regions:
            w.write_memory(addr, data)
    return w


def codecs(path):
    """(offset, codec) of every MEMORY record."""
    f = open_file(path, verify=True)
    try:
        out = []
        for rec in f.records:
            if rec.type == R.RecordType.MEMORY:
                _, payload = f.read_record(rec.offset)
                out.append((rec.offset, R.unpack_memory(payload).codec))
        return out
    finally:
        f.close()


# -- round trip ------------------------------------------------------------------

@st.composite
def dup_maps(draw):
    """Disjoint regions of pages drawn from a small pool (so they repeat),
    zero pages, unique pages, odd starts and short tails."""
    page = draw(st.sampled_from([512, 4096, 4096]))
    pool_seed = draw(st.integers(0, 2**16))
    pool = [random.Random(pool_seed + i).randbytes(page) for i in range(4)]
    regions = []
    addr = draw(st.integers(0, 16)) * page
    for _ in range(draw(st.integers(1, 4))):
        addr += draw(st.integers(0, 9)) * page + draw(st.sampled_from([0, 0, 0, 100]))
        pages = []
        for _ in range(draw(st.integers(1, 24))):
            kind = draw(st.sampled_from(["pool", "pool", "zero", "unique"]))
            if kind == "pool":
                pages.append(pool[draw(st.integers(0, 3))])
            elif kind == "zero":
                pages.append(bytes(page))
            else:
                pages.append(random.Random(draw(st.integers(0, 2**32))).randbytes(page))
        data = b"".join(pages)[: draw(st.integers(1, len(pages) * page))]
        regions.append((addr, data))
        addr += len(data)
    return page, regions


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(m=dup_maps(), chunk_pages=st.sampled_from([1, 2, 4, 16]), threads=st.sampled_from([0, 2]),
       min_zero=st.sampled_from([1, 4]))
def test_round_trip_with_repeated_pages_is_byte_exact(tmp_path, m, chunk_pages, threads, min_zero):
    page, regions = m
    path = tmp_path / f"{uuid.uuid4()}.tsd"
    write(path, regions, threads=threads, chunk=chunk_pages * page, page=page,
          min_zero_pages=min_zero)
    with open_dump(path) as dump:
        assert dump.header.minor == R.FORMAT_MINOR_DEDUP
        for addr, data in regions:
            assert dump.memory.read(addr, len(data)) == data
        assert dump.problems == []
    assert verify_dump([path]).ok


def test_repeats_in_other_chunks_become_references_and_shrink_the_file(tmp_path):
    data = image(1, 256)
    on, off = tmp_path / "on.tsd", tmp_path / "off.tsd"
    w = write(on, [(0, data)], chunk=8 * PAGE)
    write(off, [(0, data)], chunk=8 * PAGE, dedup=False)
    assert w.dedup_pages > 50
    assert any(c == R.Codec.ZSTD_DEDUP for _, c in codecs(on))
    assert os.path.getsize(on) < 0.8 * os.path.getsize(off)
    with open_dump(on) as dump:
        assert dump.memory.read(0, len(data)) == data
    # a repeat inside its own record is left to zstd: no reference points
    # into the record that holds it, and every reference points backwards
    f = open_file(on)
    try:
        mem = [r for r in f.records if r.type == R.RecordType.MEMORY]
        for rec in mem:
            _, payload = f.read_record(rec.offset)
            m = R.unpack_memory(payload)
            if m.codec != R.Codec.ZSTD_DEDUP:
                continue
            refs, _ = decode_dedup(m, PAGE)
            for _, src in refs:
                assert not rec.paddr <= src < rec.paddr + rec.length
                assert any(s.offset < rec.offset and s.paddr <= src < s.paddr + s.length
                           for s in mem)
    finally:
        f.close()


def test_write_file_range_with_dedup_matches_write_memory(tmp_path):
    data = image(2, 100)
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 300 + data)
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    with TsdWriter(a, dump_id=DID, dedup=True, chunk_size=4 * PAGE, threads=2) as w, \
            open(src, "rb") as fh:
        w.write_file_range(0x10000, fh.fileno(), 300, len(data))
    write(b, [(0x10000, data)], threads=2)
    assert a.read_bytes()[128:] == b.read_bytes()[128:]
    with open_dump(a) as dump:
        assert dump.memory.read(0x10000, len(data)) == data


def test_a_hash_collision_is_caught_by_comparing_bytes(tmp_path, monkeypatch):
    """Every page hashes alike: only byte-equal pages may become references."""
    import tsubaki_forensics.tsd.dedup as D

    class FakeXX:
        @staticmethod
        def xxh3_128_intdigest(b):
            return 0 if not any(b) else 7

    monkeypatch.setattr(D, "xxhash", FakeXX)
    rng = random.Random(3)
    a, b = rng.randbytes(PAGE), rng.randbytes(PAGE)
    data = a + b + bytes(PAGE) + b + a + rng.randbytes(PAGE) + a
    path = tmp_path / "c.tsd"
    w = write(path, [(0, data)], chunk=PAGE)
    assert w.dedup_pages == 2  # the two later copies of a; b's copy hashes like a but differs
    with open_dump(path) as dump:
        assert dump.memory.read(0, len(data)) == data


def test_rewriting_a_range_never_leaves_a_stale_reference(tmp_path):
    a = image(4, 8)
    b = image(5, 8)
    path = tmp_path / "r.tsd"
    with TsdWriter(path, dump_id=DID, dedup=True, threads=0, chunk_size=4 * PAGE) as w:
        w.write_memory(0, a)
        w.write_memory(0x100000, a)  # references to the first copy
        w.write_memory(0, a)  # the same bytes again: allowed (§8), resets the table
        w.write_memory(0x200000, a)
        w.write_zero(0x300000, PAGE)
        w.write_memory(0x400000, b + a)
    with open_dump(path) as dump:
        assert dump.problems == []
        for addr, data in ((0, a), (0x100000, a), (0x200000, a), (0x400000, b + a)):
            assert dump.memory.read(addr, len(data)) == data
    assert verify_dump([path]).ok


# -- dedup off: exactly as before ---------------------------------------------------

def _regions():
    return [(0x1000, image(6, 40)), (0x100000 + 512, image(7, 9)), (0x200000, bytes(8 * PAGE))]


def test_dedup_off_is_byte_identical_to_the_writer_without_the_flag(tmp_path):
    outs = []
    for i, kw in enumerate(({}, {"dedup": False})):
        path = tmp_path / f"o{i}.tsd"
        with TsdWriter(path, dump_id=DID, threads=2, chunk_size=4 * PAGE, **kw) as w:
            w.write_metadata(vmcoreinfo=b"OSRELEASE=x\n", properties={"a": "b"})
            for addr, data in _regions():
                w.write_memory(addr, data)
        raw = path.read_bytes()
        assert struct.unpack_from("<HH", raw, 8) == (1, 1)  # still format 1.1
        outs.append(raw[:56] + raw[64:120] + raw[128:])  # all but created_ns and checksum
    assert outs[0] == outs[1]
    assert all(c in (R.Codec.RAW, R.Codec.ZSTD) for _, c in codecs(tmp_path / "o1.tsd"))


# The SHA-256 of the records (from byte 128) that the writer of format 1.1,
# before dedup existed, wrote for _regions() (computed with that code).
# zstd output depends on the libzstd version, so only that version is checked.
GOLDEN_1_1 = "16453769947643b9c52bd3efa9c9f15ed36f6a2e8131af554919a8e5ba74e9f5"
GOLDEN_ZSTD = (1, 5, 7)


def golden_records(path) -> str:
    with TsdWriter(path, dump_id=DID, threads=2, chunk_size=4 * PAGE) as w:
        for addr, data in _regions():
            w.write_memory(addr, data)
    return hashlib.sha256(path.read_bytes()[128:]).hexdigest()


@pytest.mark.skipif(zstandard.ZSTD_VERSION != GOLDEN_ZSTD, reason="golden made with libzstd 1.5.7")
def test_dedup_off_writes_what_the_1_1_writer_wrote(tmp_path):
    assert golden_records(tmp_path / "g.tsd") == GOLDEN_1_1


# -- determinism -----------------------------------------------------------------

def test_output_is_deterministic_across_thread_counts(tmp_path):
    data = image(8, 300)
    outs = []
    for threads in (0, 2, 3):
        path = tmp_path / f"t{threads}.tsd"
        write(path, [(0x1000, data), (0x400000, data[: 50 * PAGE])], threads=threads,
              chunk=16 * PAGE)
        outs.append(path.read_bytes()[128:])
    assert outs[0] == outs[1] == outs[2]


# -- truncation and damage ---------------------------------------------------------

def record_bounds(path):
    f = open_file(path, verify=True)
    try:
        out = []
        off = R.FILE_HEADER_SIZE
        while off < f.size:
            hdr, _ = f.read_record(off)
            out.append((off, hdr.size))
            off += hdr.size
        return out
    finally:
        f.close()


def test_every_record_boundary_prefix_reads_a_consistent_prefix(tmp_path):
    data = image(9, 64)
    full = tmp_path / "full.tsd"
    write(full, [(0, data)], chunk=4 * PAGE)
    raw = full.read_bytes()
    cuts = [R.FILE_HEADER_SIZE] + [o + s for o, s in record_bounds(full)]
    for cut in cuts:
        part = tmp_path / "cut.tsd"
        part.write_bytes(raw[:cut])
        with open_dump(part) as dump:
            assert not [p for p in dump.problems if "reference" in p.message]
            for r in dump.memory.ranges():
                assert dump.memory.read(r.start, r.length) == data[r.start:r.end]
        assert not [p for p in verify_dump([part]).problems if "refers" in p.message]


def test_a_bit_flip_is_confined(tmp_path):
    data = image(10, 64)
    path = tmp_path / "f.tsd"
    write(path, [(0, data)], chunk=4 * PAGE)
    raw = bytearray(path.read_bytes())
    bounds = record_bounds(path)
    rng = random.Random(11)
    for _ in range(12):
        off, size = rng.choice(bounds[:-2])  # not INDEX/END
        pos = off + rng.randrange(size)
        bad = bytearray(raw)
        bad[pos] ^= 1 << rng.randrange(8)
        p = tmp_path / "flip.tsd"
        p.write_bytes(bad)
        with open_dump(p) as dump:
            for page_at in range(0, len(data), PAGE):
                try:
                    got = dump.memory.read(page_at, PAGE)
                except NotCollectedError:
                    continue
                assert got == data[page_at:page_at + PAGE]  # never wrong bytes
        assert not verify_dump([p]).ok


def test_a_reference_to_a_damaged_source_reads_as_not_collected(tmp_path):
    rng = random.Random(12)
    a, b = rng.randbytes(PAGE), rng.randbytes(PAGE)
    data = a + rng.randbytes(PAGE) + b + a  # chunk = 2 pages: a's copy is in record 2
    path = tmp_path / "d.tsd"
    write(path, [(0, data)], chunk=2 * PAGE)
    recs = [r for r in open_file(path).records if r.type == R.RecordType.MEMORY]
    first, second = recs
    assert codecs(path)[1][1] == R.Codec.ZSTD_DEDUP
    raw = bytearray(path.read_bytes())
    raw[first.offset + first.size - 3] ^= 0x40  # damage the source record
    path.write_bytes(raw)
    with open_dump(path) as dump:
        assert dump.memory.read(2 * PAGE, PAGE) == b  # the literal page still reads
        with pytest.raises(NotCollectedError) as exc:
            dump.memory.read(3 * PAGE, PAGE)
        assert exc.value.address == 3 * PAGE
        assert "refers to page 0x0" in str(exc.value)
        with pytest.raises(NotCollectedError):
            dump.memory.read(0, 1)
    report = verify_dump([path])
    assert any("refers to page 0x0" in p.message for p in report.problems)


def forge(payload: bytes, page_size: int = PAGE) -> bytes:
    """A one-record file holding a MEMORY record with ``payload``."""
    header = R.FileHeader(dump_id=DID, arch="x86_64", page_size=page_size,
                          endian=R.Endian.LITTLE, producer="t", created_ns=0)
    return R.pack_file_header(header) + b"".join(
        R.pack_record(R.RecordType.MEMORY, 0, 0, DID, payload))


def dedup_payload(paddr, length, refs, literal: bytes, frame: bytes | None = None) -> bytes:
    if frame is None:
        frame = zstandard.ZstdCompressor(write_content_size=True).compress(literal)
    return R.pack_memory(paddr, length, R.Codec.ZSTD_DEDUP) + R.pack_dedup(refs) + frame


@pytest.mark.parametrize("refs, why", [
    ([(1, 0x100000)] * 3, "references"),  # count > pages
    ([(5, 0x100000)], "beyond"),
    ([(1, 0x100000), (1, 0x101000)], "out of order"),
    ([(1, 0x100001)], "whole page"),
    ([(1, 0x1000)], "inside its own record"),
])
def test_bad_reference_tables_are_refused(tmp_path, refs, why):
    path = tmp_path / "bad.tsd"
    path.write_bytes(forge(dedup_payload(0, 2 * PAGE, refs, b"x" * PAGE)))
    with open_dump(path) as dump:
        with pytest.raises(NotCollectedError, match=why):
            dump.memory.read(0, 1)


def test_a_reference_with_no_earlier_source_is_not_collected(tmp_path):
    path = tmp_path / "nosrc.tsd"
    path.write_bytes(forge(dedup_payload(0x200000, 2 * PAGE, [(1, 0)], b"y" * PAGE)))
    with open_dump(path) as dump:
        assert dump.memory.read(0x200000, PAGE) == b"y" * PAGE
        with pytest.raises(NotCollectedError, match="no earlier MEMORY record"):
            dump.memory.read(0x201000, 1)
    assert any("refers to page 0x0" in p.message for p in verify_dump([path]).problems)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.binary(max_size=200), paddr=st.sampled_from([0, 0x1000, 0x1234]),
       length=st.sampled_from([1, PAGE, 3 * PAGE, R.MAX_CHUNK]), real_frame=st.booleans())
def test_fuzzed_dedup_bodies_only_raise_format_errors(body, paddr, length, real_frame):
    if real_frame:
        body = body + zstandard.ZstdCompressor(write_content_size=True).compress(body[:64])
    m = R.Memory(paddr, length, R.Codec.ZSTD_DEDUP, memoryview(body))
    try:
        refs, lit = decode_dedup(m, PAGE)
    except FormatError:
        return
    assert len(lit) == length - len(refs) * PAGE


def test_fuzzed_dedup_records_never_crash_the_reader(tmp_path):
    rng = random.Random(13)
    base = dedup_payload(0x10000, 3 * PAGE, [(0, 0), (2, 0x1000)], b"z" * PAGE)
    src = R.pack_memory(0, 2 * PAGE, R.Codec.RAW) + rng.randbytes(2 * PAGE)
    for i in range(200):
        body = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        header = forge(src)
        extra = b"".join(R.pack_record(R.RecordType.MEMORY, 0, 1, DID, bytes(body)))
        p = tmp_path / "fz.tsd"
        p.write_bytes(header + extra)
        with open_dump(p) as dump:
            for addr in range(0x10000, 0x13000, PAGE):
                try:
                    dump.memory.read(addr, PAGE)
                except NotCollectedError:
                    pass
        verify_dump([p])


# -- inspect and verify on the command line -----------------------------------------

def test_inspect_and_verify_handle_dedup_files(tmp_path):
    path = tmp_path / "cli.tsd"
    write(path, [(0, image(14, 64))], chunk=8 * PAGE)
    out = subprocess.run(CLI + ["inspect", str(path), "--format", "json"], capture_output=True,
                         text=True, check=True).stdout
    info = json.loads(out)
    assert info["format"] == "1.2" and info["problems"] == []
    subprocess.run(CLI + ["verify", str(path)], capture_output=True, text=True, check=True)


def test_merging_files_resolves_references_within_each_file(tmp_path):
    data = image(15, 48)
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    write(a, [(0, data[: 24 * PAGE])])
    write(b, [(0x10000, data[16 * PAGE:]), (0x80000, data[:8 * PAGE])])
    with open_dump([b, a]) as dump:
        assert dump.problems == []
        assert dump.memory.read(0, 24 * PAGE) == data[: 24 * PAGE]
        assert dump.memory.read(0x80000, 8 * PAGE) == data[:8 * PAGE]
    assert verify_dump([a, b]).ok


# -- a real crash ---------------------------------------------------------------

@pytest.fixture(scope="module")
def real_pair(real_crash, tmp_path_factory):
    from tsubaki_forensics.vmcore.importer import import_vmcore

    d = tmp_path_factory.mktemp("dedup_real")
    plain, dedup = d / "plain.tsd", d / "dedup.tsd"
    import_vmcore(real_crash.vmcore, plain)
    res = import_vmcore(real_crash.vmcore, dedup, dedup=True)
    assert res.dedup_pages > 0
    return plain, dedup


@pytest.mark.realkernel
def test_real_crash_dedup_exports_the_same_elf(real_pair, tmp_path):
    plain, dedup = real_pair
    assert os.path.getsize(dedup) < os.path.getsize(plain)
    outs = []
    for src in (plain, dedup):
        out = tmp_path / (src.stem + ".elf")
        subprocess.run(CLI + ["export", str(src), "-o", str(out)], check=True, capture_output=True)
        outs.append(out)
    assert hashlib.sha256(outs[0].read_bytes()).digest() == hashlib.sha256(outs[1].read_bytes()).digest()
    assert verify_dump([dedup]).ok


@pytest.mark.realkernel
def test_real_crash_dedup_analyzes_the_same(real_pair, real_crash):
    from tsubaki_forensics.analysis.session import analyze_dump, open_program
    from tsubaki_forensics.plugin_system import Plugins

    plugins = Plugins.load()
    results = []
    for src in real_pair:
        opened = open_program([src], plugins, vmlinux=real_crash.vmlinux)
        try:
            report = analyze_dump(opened, plugins, only=["tasks", "dmesg", "panic"])
        finally:
            opened.close()
        # everything but the time each analysis took
        results.append({r.name: (r.status, repr(dataclasses.replace(r, seconds=0.0)))
                        for r in report.results})
    assert results[0] == results[1]
    assert all(status.name == "OK" for status, _ in results[0].values())


def test_import_dedup_on_the_command_line(tmp_path):
    """export an ELF, import it back with and without --dedup: same memory,
    same ELF again, smaller file."""
    data = image(16, 96)
    src = tmp_path / "src.tsd"
    with TsdWriter(src, dump_id=DID, threads=0, chunk_size=8 * PAGE) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n")  # export needs it
        w.write_memory(0x100000, data)
    elf = tmp_path / "core.elf"
    subprocess.run(CLI + ["export", str(src), "-o", str(elf)], check=True, capture_output=True)
    outs = {}
    for flag in ([], ["--dedup"]):
        out = tmp_path / f"imp{len(flag)}.tsd"
        res = subprocess.run(CLI + ["import", str(elf), "-o", str(out), "--chunk-size", "32K",
                                    "--format", "json"] + flag, check=True, capture_output=True,
                             text=True)
        info = json.loads(res.stdout)
        assert ("dedup_pages" in info) == bool(flag)
        again = tmp_path / f"again{len(flag)}.elf"
        subprocess.run(CLI + ["export", str(out), "-o", str(again)], check=True, capture_output=True)
        outs[bool(flag)] = (out, again.read_bytes(), info)
    assert outs[True][2]["dedup_pages"] > 0
    assert outs[True][1] == outs[False][1]
    assert os.path.getsize(outs[True][0]) < os.path.getsize(outs[False][0])
    with open_dump(outs[True][0]) as dump:
        # import writes a memory map first (1.3), which includes the dedup codec of 1.2
        assert dump.header.minor == R.FORMAT_MINOR_MAP > R.FORMAT_MINOR_DEDUP
        assert dump.completeness().complete
        assert dump.memory.read(0x100000, len(data)) == data


def test_references_cannot_make_one_record_decode_without_bound(tmp_path):
    """Tiny frames claiming MAX_CHUNK each, all sources of one small record:
    resolving stops at the record's budget and the rest reads as not collected."""
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(R.MAX_CHUNK))
    header = R.FileHeader(dump_id=DID, arch="x86_64", page_size=PAGE, endian=R.Endian.LITTLE,
                          producer="t", created_ns=0)
    parts = [R.pack_file_header(header)]
    n = 8
    for k in range(n):
        parts += R.pack_record(R.RecordType.MEMORY, 0, k, DID,
                               R.pack_memory(k * R.MAX_CHUNK, R.MAX_CHUNK, R.Codec.ZSTD) + frame)
    at = n * R.MAX_CHUNK
    refs = [(k, k * R.MAX_CHUNK) for k in range(n)]
    parts += R.pack_record(R.RecordType.MEMORY, 0, n, DID,
                           dedup_payload(at, n * PAGE, refs, b""))
    path = tmp_path / "bomb.tsd"
    path.write_bytes(b"".join(parts))
    with open_dump(path) as dump:
        assert dump.memory.read(at, PAGE) == bytes(PAGE)  # within the budget
        with pytest.raises(NotCollectedError, match="64 times"):
            dump.memory.read(at, n * PAGE)
