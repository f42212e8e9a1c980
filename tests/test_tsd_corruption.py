"""Damage: single-bit flips are detected and confined to one record; hostile
sizes and decompression bombs are refused; unknown record types are skipped."""

from __future__ import annotations

import random
import struct
import uuid

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import FormatError, NotCollectedError, UnsupportedVersionError
from tsubaki_forensics.tsd import TsdWriter, open_dump, open_file
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.tsd.verify import verify_dump

PAGE = 4096
# Fixed: the damage tests' files are then the same bytes on every run (issue 23)
DUMP_ID = uuid.UUID("3c1f5b2a-7d4e-4f60-9a8b-0123456789ab")


def build(path, seed=7):
    rng = random.Random(seed)
    regions = {}
    with TsdWriter(path, dump_id=DUMP_ID, chunk_size=PAGE, threads=0) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\n", properties={"k": "v"})
        for i in range(3):
            regions[i * PAGE] = rng.randbytes(PAGE // 2) * 2
        regions[4 * PAGE] = rng.randbytes(PAGE)  # incompressible: stored RAW
        for addr, data in regions.items():
            w.write_memory(addr, data)
        w.write_memory(3 * PAGE, bytes(PAGE))
    return regions


def bounds(path):
    f = open_file(path, verify=True)
    out, off = [], R.FILE_HEADER_SIZE
    while off < f.size:
        hdr, _ = f.read_record(off)
        out.append((off, hdr.size, hdr.type))
        off += hdr.size
    f.close()
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("flip") / "sample.tsd"
    regions = build(path)
    f = open_file(path)
    paddr_of = {r.offset: r.paddr for r in f.records}
    f.close()
    return path, path.read_bytes(), regions, bounds(path), paddr_of


def check_flip(tmp_path, sample, pos, bit):
    path, raw, regions, recs, paddr_of = sample
    bad = bytearray(raw)
    bad[pos] ^= 1 << bit
    target = tmp_path / "flipped.tsd"
    target.write_bytes(bad)
    if pos < R.FILE_HEADER_SIZE:
        with pytest.raises(FormatError):  # the file header is checked as a whole
            open_dump(target)
        return
    hit = next(r for r in recs if r[0] <= pos < r[0] + r[1])
    # 1. verify notices, and every problem points at the damaged record or the gap it left
    report = verify_dump([target])
    assert not report.ok
    assert all(p.offset in (hit[0], hit[0] + hit[1]) for p in report.problems
               if "footer" not in p.message or hit[2] in (R.RecordType.INDEX, R.RecordType.END))
    # 2. a scan loses at most that one record
    f = open_file(target, verify=True)
    lost = {r[0] for r in recs if r[2] in R.MEMORY_TYPES} - {r.offset for r in f.records}
    f.close()
    assert lost <= {hit[0]}
    # 3. the normal reader serves every other page byte-exact and faults on the damaged one
    with open_dump(target) as dump:
        for addr, data in regions.items():
            inside = hit[2] == R.RecordType.MEMORY and addr == paddr_of[hit[0]]
            if inside:
                with pytest.raises(NotCollectedError):
                    dump.memory.read(addr, len(data))
                assert dump.problems
            else:
                assert dump.memory.read(addr, len(data)) == data


def test_every_byte_flipped_once(tmp_path, sample):
    """Exhaustive: one bit flipped in each byte of the file, one file at a time."""
    raw = sample[1]
    for pos in range(len(raw)):
        check_flip(tmp_path, sample, pos, pos % 8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_random_single_bit_flips(tmp_path, sample, data):
    pos = data.draw(st.integers(0, len(sample[1]) - 1))
    check_flip(tmp_path, sample, pos, data.draw(st.integers(0, 7)))


def write_records(path, records, dump_id=None):
    """A file from hand-framed (type, flags, payload) records, for hostile inputs."""
    dump_id = dump_id or DUMP_ID
    header = R.FileHeader(dump_id, "x86_64", PAGE, R.Endian.LITTLE, "test", 0)
    parts = [R.pack_file_header(header)]
    for seq, (rtype, flags, payload) in enumerate(records):
        parts.extend(R.pack_record(rtype, flags, seq, dump_id, payload))
    path.write_bytes(b"".join(bytes(p) for p in parts))


def memory_payload(paddr, length, frame, codec=R.Codec.ZSTD):
    return R.pack_memory(paddr, length, codec) + frame


def test_decompression_bomb_is_refused(tmp_path):
    big = zstandard.ZstdCompressor().compress(bytes(R.MAX_CHUNK))  # tiny frame, 64 MiB inside
    path = tmp_path / "bomb.tsd"
    write_records(path, [(R.RecordType.MEMORY, 0, memory_payload(0, PAGE, big))])
    with open_dump(path) as dump:
        with pytest.raises(NotCollectedError, match="content size"):
            dump.memory.read(0, 16)
    assert not verify_dump([path]).ok


def test_frame_without_content_size_is_refused(tmp_path):
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    frame = b"".join(cctx.read_to_iter(__import__("io").BytesIO(b"x" * PAGE)))
    path = tmp_path / "nosize.tsd"
    write_records(path, [(R.RecordType.MEMORY, 0, memory_payload(0, PAGE, frame))])
    with open_dump(path) as dump, pytest.raises(NotCollectedError):
        dump.memory.read(0, 1)


def test_declared_length_beyond_maximum_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.tsd"
    write_records(path, [(R.RecordType.MEMORY, 0, memory_payload(0, R.MAX_CHUNK + 1, b"\0" * 8)),
                         (R.RecordType.ZERO, 0, R.pack_range(PAGE, PAGE))])
    with open_dump(path) as dump:
        assert [r.kind for r in dump.memory.ranges()] == ["zero"]
        assert any("MEMORY length" in p.message for p in dump.problems)


def test_huge_payload_length_in_header_is_not_trusted(tmp_path):
    path = tmp_path / "len.tsd"
    write_records(path, [(R.RecordType.ZERO, 0, R.pack_range(0, PAGE))])
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, R.FILE_HEADER_SIZE + 8, 0xFFFFFFF0)
    path.write_bytes(raw)
    with open_dump(path) as dump:
        assert dump.memory.ranges() == []
        assert dump.problems


def test_trailing_garbage_after_frame_is_refused(tmp_path):
    frame = zstandard.ZstdCompressor().compress(b"y" * PAGE) + b"junk"
    path = tmp_path / "trail.tsd"
    write_records(path, [(R.RecordType.MEMORY, 0, memory_payload(0, PAGE, frame))])
    with open_dump(path) as dump, pytest.raises(NotCollectedError, match="one complete zstd frame"):
        dump.memory.read(0, 1)


def test_unknown_record_types_are_skipped_unless_marked_critical(tmp_path):
    path = tmp_path / "future.tsd"
    write_records(path, [(99, 0, b"a newer kind of record"),
                         (R.RecordType.ZERO, 0, R.pack_range(0, PAGE))])
    with open_dump(path) as dump:
        assert dump.memory.read(0, PAGE) == bytes(PAGE)
        assert [p.message for p in dump.problems] == [
            "no END footer: the file was not closed; 1 memory records recovered by scanning"]
    write_records(path, [(99, R.RecordFlags.MUST_UNDERSTAND, b"critical"),
                         (R.RecordType.ZERO, 0, R.pack_range(0, PAGE))])
    with open_dump(path) as dump:
        assert any("must be understood" in p.message for p in dump.problems)
        assert dump.memory.read(0, 4) == bytes(4)


def test_record_of_another_dump_is_rejected(tmp_path):
    path = tmp_path / "mixed.tsd"
    write_records(path, [(R.RecordType.ZERO, 0, R.pack_range(0, PAGE))])
    other = uuid.UUID(int=DUMP_ID.int ^ 1)
    stray = b"".join(bytes(p) for p in R.pack_record(R.RecordType.ZERO, 0, 1, other,
                                                     R.pack_range(PAGE, PAGE)))
    path.write_bytes(path.read_bytes() + stray)
    with open_dump(path) as dump:
        assert [(r.start, r.length) for r in dump.memory.ranges()] == [(0, PAGE)]
        assert any(str(other) in p.message for p in dump.problems)


def test_newer_major_version_and_wrong_magic(tmp_path):
    path = tmp_path / "v2.tsd"
    build(path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 8, R.FORMAT_MAJOR + 1)
    path.write_bytes(raw)
    with pytest.raises(UnsupportedVersionError, match="newer than this reader"):
        open_dump(path)
    raw[0:8] = b"NOTADUMP"
    path.write_bytes(raw)
    with pytest.raises(FormatError, match="bad magic"):
        open_dump(path)


def test_newer_minor_version_is_read(tmp_path):
    path = tmp_path / "v1x.tsd"
    regions = build(path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 10, R.FORMAT_MINOR + 3)
    struct.pack_into("<Q", raw, 120, R.checksum(bytes(raw[:120])))
    path.write_bytes(raw)
    with open_dump(path) as dump:
        assert dump.header.minor == R.FORMAT_MINOR + 3
        assert dump.memory.read(0, PAGE) == regions[0]
