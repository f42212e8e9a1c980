"""Crash consistency: every prefix on a record boundary is a valid dump, and a
file cut anywhere else gives back every complete record and says what is lost."""

from __future__ import annotations

import random

import pytest

from tsubaki_forensics.errors import FormatError, NotCollectedError
from tsubaki_forensics.tsd import TsdWriter, open_dump, open_file
from tsubaki_forensics.tsd.records import FILE_HEADER_SIZE, RecordType

PAGE = 4096


def build(path, seed=1):
    """A small dump with every record type; returns {paddr: bytes} written."""
    rng = random.Random(seed)
    regions = {}
    with TsdWriter(path, chunk_size=2 * PAGE, threads=0) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\n", notes=b"N" * 40, properties={"k": "v"})
        w.write_event("panic-notice", 0.0, cpu=0)
        for i in range(4):
            addr = i * 4 * PAGE
            data = rng.randbytes(PAGE) + bytes(PAGE) + bytes([i + 1]) * PAGE
            w.write_memory(addr, data)
            regions[addr] = data
        w.write_missing(64 * PAGE, PAGE, "unreadable")
        w.write_event("dump-complete", 2.0)
    return regions


def record_bounds(path):
    """(offset, size, type) of every record, from a full scan."""
    f = open_file(path, verify=True)
    try:
        assert f.problems == []
        out = []
        off = FILE_HEADER_SIZE
        while off < f.size:
            hdr, _ = f.read_record(off)
            out.append((off, hdr.size, hdr.type))
            off += hdr.size
        return out
    finally:
        f.close()


def test_every_record_boundary_prefix_is_a_valid_dump(tmp_path):
    full = tmp_path / "full.tsd"
    regions = build(full)
    raw = full.read_bytes()
    bounds = record_bounds(full)
    assert bounds[-1][2] == RecordType.END and bounds[-2][2] == RecordType.INDEX
    cuts = [FILE_HEADER_SIZE] + [off + size for off, size, _ in bounds]
    assert cuts[-1] == len(raw)
    for cut in cuts:
        part = tmp_path / f"cut{cut}.tsd"
        part.write_bytes(raw[:cut])
        with open_dump(part) as dump:
            if cut == len(raw):
                assert dump.problems == []
            else:
                # the only thing missing from a clean prefix is the footer
                assert len(dump.problems) == 1, dump.problems
                assert "no END footer" in dump.problems[0].message
            # every memory record that ends before the cut reads back exactly
            for off, size, rtype in bounds:
                if rtype == RecordType.MEMORY and off + size <= cut:
                    rec = next(r for r in dump.files[0].records if r.offset == off)
                    start = max(a for a in regions if a <= rec.paddr)
                    want = regions[start][rec.paddr - start:rec.paddr - start + rec.length]
                    assert dump.memory.read(rec.paddr, rec.length) == want
            present = sum(r.length for r in dump.memory.ranges())
            expected = sum(r.length for r in dump.files[0].records if r.type != RecordType.MISSING)
            assert present == expected


def test_cut_inside_records_recovers_complete_ones_and_names_the_loss(tmp_path):
    full = tmp_path / "full.tsd"
    build(full)
    raw = full.read_bytes()
    bounds = record_bounds(full)
    for off, size, rtype in bounds:
        for cut in sorted({off + 1, off + 20, off + 47, off + 48, off + size - 1}):
            if not off < cut < off + size:
                continue
            part = tmp_path / "part.tsd"
            part.write_bytes(raw[:cut])
            with open_dump(part) as dump:
                kept = [r.offset for r in dump.files[0].records]
                assert all(o + 1 <= off for o in kept)  # nothing past the cut
                wanted = [o for o, _, t in bounds if o < off and t in
                          (RecordType.MEMORY, RecordType.ZERO, RecordType.MISSING)]
                assert kept == wanted
                messages = " | ".join(p.message for p in dump.problems)
                assert "file ends inside" in messages
                assert "no END footer" in messages
                assert any(p.offset == off for p in dump.problems)


def test_footerless_file_reads_like_the_closed_one(tmp_path):
    full = tmp_path / "full.tsd"
    regions = build(full)
    bounds = record_bounds(full)
    index_at = next(o for o, _, t in bounds if t == RecordType.INDEX)
    cut = tmp_path / "nofooter.tsd"
    cut.write_bytes(full.read_bytes()[:index_at])
    with open_dump(full) as a, open_dump(cut) as b:
        assert a.files[0].has_footer and not b.files[0].has_footer
        assert a.memory.ranges() == b.memory.ranges()
        assert a.memory.missing_ranges() == b.memory.missing_ranges()
        assert [e.kind for e in a.events] == [e.kind for e in b.events]
        assert (a.vmcoreinfo, a.notes, a.properties) == (b.vmcoreinfo, b.notes, b.properties)
        for addr, data in regions.items():
            assert b.memory.read(addr, len(data)) == data


def test_writer_flush_offset_is_a_valid_prefix(tmp_path):
    path = tmp_path / "live.tsd"
    w = TsdWriter(path, threads=0)
    w.write_memory(0, b"\x11" * PAGE)
    durable = w.flush()
    w.write_memory(PAGE, b"\x22" * PAGE)
    snapshot = path.read_bytes()[:durable]
    w.close()
    prefix = tmp_path / "prefix.tsd"
    prefix.write_bytes(snapshot)
    with open_dump(prefix) as dump:
        assert dump.memory.read(0, PAGE) == b"\x11" * PAGE
        with pytest.raises(NotCollectedError) as exc:
            dump.memory.read(0, 2 * PAGE)
        assert exc.value.address == PAGE


@pytest.mark.parametrize("size", [0, 5, 100])
def test_short_files_are_one_line_errors(tmp_path, size):
    full = tmp_path / "full.tsd"
    build(full)
    part = tmp_path / "short.tsd"
    part.write_bytes(full.read_bytes()[:size])
    with pytest.raises(FormatError) as exc:
        open_dump(part)
    assert "\n" not in str(exc.value)
    assert ("empty" if size == 0 else "truncated file header") in str(exc.value)


def test_disk_full_is_a_storage_error_and_close_stays_quiet():
    import os

    from tsubaki_forensics.errors import StorageError

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    w = TsdWriter("/dev/full", threads=0)
    with pytest.raises(StorageError, match="No space left"):
        w.write_memory(0, random.Random(1).randbytes(4 << 20))
    with pytest.raises(StorageError, match="earlier write failed"):
        w.write_event("after", 1.0)
    w.close()  # nothing more to say: the caller already has the error
