"""PhysicalMemory: bisect lookup, reads across records, the decompressed-chunk LRU."""

from __future__ import annotations

import random

import pytest

from tsubaki_forensics.errors import NotCollectedError
from tsubaki_forensics.tsd import Range, TsdWriter, open_dump

PAGE = 4096


@pytest.fixture
def dump(tmp_path):
    rng = random.Random(3)
    image = b"".join(rng.randbytes(PAGE // 4) * 4 for _ in range(64))
    path = tmp_path / "m.tsd"
    with TsdWriter(path, chunk_size=4 * PAGE, threads=2) as w:
        w.write_memory(0, image)
        w.write_memory(1 << 30, bytes(8 * PAGE))
    d = open_dump(path, cache_bytes=8 * PAGE)
    yield d, image
    d.close()


def test_ranges_are_merged_and_sorted(dump):
    d, image = dump
    assert d.memory.ranges() == [Range(0, len(image), "data"), Range(1 << 30, 8 * PAGE, "zero")]
    assert d.memory.missing_ranges() == []
    assert 5 in d.memory and (1 << 30) + 1 in d.memory and len(image) not in d.memory


def test_reads_across_chunk_boundaries(dump):
    d, image = dump
    for start in (0, 100, 4 * PAGE - 3, 13 * PAGE + 7):
        for size in (1, 3, PAGE, 9 * PAGE + 5):
            assert d.memory.read(start, size) == image[start:start + size]
    assert d.memory.read((1 << 30) + 10, 100) == bytes(100)


def test_not_collected_reports_first_missing_address(dump):
    d, image = dump
    with pytest.raises(NotCollectedError) as exc:
        d.memory.read(len(image) - 2, 10)
    assert exc.value.address == len(image)
    with pytest.raises(NotCollectedError) as exc:
        d.memory.read((1 << 30) - 5, 10)
    assert exc.value.address == (1 << 30) - 5


def test_lru_decompresses_each_chunk_once_while_it_fits(dump):
    d, _ = dump
    mem = d.memory
    for _ in range(100):
        mem.read(10, 16)
        mem.read(PAGE * 4 + 10, 16)
    assert mem.decompressed == 2
    for i in range(16):  # 16 chunks of 4 pages through an 8-page cache
        mem.read(i * 4 * PAGE, 8)
    before = mem.decompressed
    mem.read(0, 8)  # evicted long ago
    assert mem.decompressed == before + 1
    assert mem._cached <= 8 * PAGE
