"""Round trips through TsdWriter and open_dump: random sparse memory maps, byte-exact."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import NotCollectedError
from tsubaki_forensics.tsd import TsdWriter, open_dump

PAGE = 4096


@st.composite
def sparse_maps(draw):
    """Disjoint (paddr, bytes) regions mixing zero pages, random pages and short tails."""
    regions = []
    addr = draw(st.integers(0, 64)) * PAGE
    for _ in range(draw(st.integers(1, 5))):
        addr += draw(st.integers(0, 40)) * PAGE + draw(st.sampled_from([0, 0, 0, 512, 1]))
        pages = []
        for _ in range(draw(st.integers(1, 24))):
            kind = draw(st.sampled_from(["zero", "random", "pattern", "sparse"]))
            if kind == "zero":
                pages.append(bytes(PAGE))
            elif kind == "random":
                pages.append(random.Random(draw(st.integers(0, 2**32))).randbytes(PAGE))
            elif kind == "pattern":
                pages.append(bytes([draw(st.integers(1, 255))]) * PAGE)
            else:
                page = bytearray(PAGE)
                page[draw(st.integers(0, PAGE - 1))] = draw(st.integers(1, 255))
                pages.append(bytes(page))
        data = b"".join(pages)[: draw(st.integers(1, len(pages) * PAGE))]
        regions.append((addr, data))
        addr += len(data)
    return regions


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(regions=sparse_maps(), chunk_pages=st.sampled_from([1, 2, 4, 16]),
       threads=st.sampled_from([0, 2]), min_zero=st.sampled_from([1, 4]))
def test_round_trip_is_byte_exact(tmp_path, regions, chunk_pages, threads, min_zero):
    path = tmp_path / f"{uuid.uuid4()}.tsd"
    with TsdWriter(path, chunk_size=chunk_pages * PAGE, threads=threads,
                   min_zero_pages=min_zero) as w:
        for addr, data in regions:
            stats = w.write_memory(addr, data)
            assert stats.raw_bytes == len(data)
    with open_dump(path) as dump:
        assert dump.problems == []
        mem = dump.memory
        for addr, data in regions:
            assert mem.read(addr, len(data)) == data
        covered = sum(r.length for r in mem.ranges())
        assert covered == sum(len(d) for _, d in regions)
        starts = [r.start for r in mem.ranges()]
        assert starts == sorted(starts)
        # the byte after the last region was never written
        last_addr, last = regions[-1]
        with pytest.raises(NotCollectedError) as exc:
            mem.read(last_addr + len(last) - 1, 2)
        assert exc.value.address == last_addr + len(last)


def test_metadata_events_missing_round_trip(tmp_path):
    path = tmp_path / "m.tsd"
    notes = random.Random(4).randbytes(333)
    did = uuid.uuid4()
    with TsdWriter(path, dump_id=did, page_size=PAGE) as w:
        w.write_metadata(vmcoreinfo="OSRELEASE=6.1.0-test\nPAGESIZE=4096\n", notes=notes,
                         properties={"kernel_release": "6.1.0-test", "mem": 512})
        w.write_event("panic-notice", 0.0, cpu=1)
        w.write_memory(0, b"\1" * PAGE)
        w.write_missing(PAGE, 2 * PAGE, "bad sector")
        w.write_event("region-saved", 1.25, start=0, length=PAGE)
        assert w.dump_id == did
    with open_dump([path]) as dump:
        assert dump.dump_id == did
        assert dump.header.page_size == PAGE and dump.header.arch == "x86_64"
        assert dump.vmcoreinfo == b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"
        assert dump.notes == notes
        assert dump.properties == {"kernel_release": "6.1.0-test", "mem": "512"}
        assert [(e.kind, e.time_s, e.fields) for e in dump.events] == [
            ("panic-notice", 0.0, {"cpu": 1}),
            ("region-saved", 1.25, {"start": 0, "length": PAGE})]
        assert [(r.start, r.length, r.kind) for r in dump.memory.missing_ranges()] == [
            (PAGE, 2 * PAGE, "missing")]
        assert dump.memory.missing_reasons() == [(PAGE, 2 * PAGE, "bad sector")]
        with pytest.raises(NotCollectedError) as exc:
            dump.memory.read(0, 2 * PAGE)
        assert exc.value.address == PAGE


def test_output_is_deterministic_across_thread_counts(tmp_path):
    data = (random.Random(5).randbytes(3000) + bytes(5192)) * 64 + bytes(1 << 20)
    outs = []
    did = uuid.uuid4()
    for threads in (0, 1, 2, 3):
        path = tmp_path / f"t{threads}.tsd"
        with TsdWriter(path, dump_id=did, threads=threads, chunk_size=64 * 1024) as w:
            w.write_memory(0x1000, data)
        outs.append(path.read_bytes()[128:])  # the file header holds the creation time
    assert all(o == outs[0] for o in outs)


def test_zero_pages_become_zero_records_and_coalesce(tmp_path):
    path = tmp_path / "z.tsd"
    with TsdWriter(path, chunk_size=8 * PAGE) as w:
        stats = w.write_memory(0, bytes(64 * PAGE))
        stats2 = w.write_memory(64 * PAGE, bytes(8 * PAGE))
    assert stats.zero_bytes == 64 * PAGE and stats2.zero_bytes == 8 * PAGE
    with open_dump(path) as dump:
        f = dump.files[0]
        assert [(r.type, r.paddr, r.length) for r in f.records] == [(2, 0, 72 * PAGE)]
        assert dump.memory.ranges()[0].kind == "zero"
        assert dump.memory.read(5, 100) == bytes(100)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), paddr_pages=st.integers(0, 9), paddr_extra=st.sampled_from([0, 0, 100]),
       file_off=st.integers(0, 5000), batch_pages=st.sampled_from([1, 3, 64]), threads=st.sampled_from([0, 2]))
def test_write_file_range_matches_write_memory(tmp_path, monkeypatch, seed, paddr_pages, paddr_extra,
                                               file_off, batch_pages, threads):
    import tsubaki_forensics.tsd.encode as E

    monkeypatch.setattr(E, "FILE_BATCH", batch_pages * PAGE)
    rng = random.Random(seed)
    image = b"".join(rng.choice([bytes(PAGE), rng.randbytes(PAGE), b"\x42" * PAGE]) for _ in range(20))
    image = image[: rng.randrange(1, len(image))]
    src = tmp_path / f"{uuid.uuid4()}.bin"
    src.write_bytes(rng.randbytes(file_off) + image + b"trailer")
    paddr = paddr_pages * PAGE + paddr_extra
    a, b = tmp_path / f"{uuid.uuid4()}.tsd", tmp_path / f"{uuid.uuid4()}.tsd"
    did = uuid.uuid4()
    with TsdWriter(a, dump_id=did, chunk_size=2 * PAGE, threads=threads) as w, open(src, "rb") as f:
        stats = w.write_file_range(paddr, f.fileno(), file_off, len(image))
        assert stats.raw_bytes == len(image)
    with TsdWriter(b, dump_id=did, chunk_size=2 * PAGE, threads=threads) as w:
        w.write_memory(paddr, image)
    assert a.read_bytes()[128:] == b.read_bytes()[128:]  # same records, byte for byte
    with open_dump(a) as dump:
        assert dump.memory.read(paddr, len(image)) == image


def test_write_file_range_short_source_is_a_storage_error(tmp_path):
    from tsubaki_forensics.errors import StorageError

    src = tmp_path / "short.bin"
    src.write_bytes(b"\x01" * PAGE)
    with TsdWriter(tmp_path / "s.tsd", threads=0) as w, open(src, "rb") as f:
        with pytest.raises(StorageError, match="bytes short"):
            w.write_file_range(0, f.fileno(), 0, 2 * PAGE)
