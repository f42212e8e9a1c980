"""Golden digests of every write path of ``TsdWriter``: the bytes must not change.

The writer is three modules (framing, encoding pipeline, dedup planner) behind
one facade; the digests below were computed with the single-module writer they
replaced (commit 0f2fd7e), so a refactor that changes one byte of any path
(memory, file range, file pages with a dump level, dedup on memory and files,
zero runs kept in frames, excluded runs, events, missing ranges, metadata)
fails here.  zstd output depends on the libzstd version, so only the version
that made them is checked; the records are digested from byte 128 on (the
header holds the creation time and the producer's version).
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid

import numpy as np
import pytest
import zstandard

from tsubaki_forensics.tsd import MemoryMap, TsdWriter
from tsubaki_forensics.tsd import records as R

PAGE = 4096
DID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
GOLDEN_ZSTD = (1, 5, 7)

pytestmark = pytest.mark.skipif(zstandard.ZSTD_VERSION != GOLDEN_ZSTD,
                                reason="goldens made with libzstd 1.5.7")


def image(seed: int, pages: int) -> bytes:
    """Zero pages, repeats of a few pages, one-byte pages, random and text pages."""
    rng = random.Random(seed)
    pool = [rng.randbytes(PAGE) for _ in range(5)]
    out = []
    for i in range(pages):
        r = rng.random()
        out.append(bytes(PAGE) if r < 0.25 else rng.choice(pool) if r < 0.5 else
                   bytes([i % 251]) * PAGE if r < 0.7 else rng.randbytes(PAGE) if r < 0.85 else
                   (b"page %05d " % i * PAGE)[:PAGE])
    return b"".join(out)


IMG = image(1, 120)
HEAD = 777  # the image starts this far into the source file


def classes() -> np.ndarray:
    rng = random.Random(3)
    kinds = [R.PageClass.ZERO, R.PageClass.FREE, R.PageClass.USER, R.PageClass.ABSENT, R.PageClass.CACHE]
    return np.array([rng.choice(kinds) if rng.random() < 0.4 else R.PageClass.KEPT
                     for _ in range(len(IMG) // PAGE)], np.uint8)


def memory(w: TsdWriter, src: str) -> None:
    w.write_metadata(vmcoreinfo="OSRELEASE=x\n", notes=b"notes", properties={"a": "b"}, symbolpack=b"pack")
    w.write_memory(0x1000, IMG[:60 * PAGE])
    w.write_zero(0x1000 + 60 * PAGE, 5 * PAGE)
    w.write_memory(0x1000 + 65 * PAGE, IMG[60 * PAGE:])
    w.write_missing(0x9000000, 3 * PAGE, "unreadable")
    w.write_event("panic", 1.5, cpu=1, text="boom")
    w.write_memory(0x200000 + 100, IMG[:30 * PAGE + 17])


def files(w: TsdWriter, src: str) -> None:
    fd = os.open(src, os.O_RDONLY)
    try:
        w.write_file_range(0, fd, HEAD, len(IMG))
        w.write_file_range(0x1000000 + 12, fd, HEAD + 5 * PAGE, 40 * PAGE + 3)
        w.write_memory(0x3000000, IMG[:33 * PAGE])
        w.write_file_range(0x100, fd, HEAD, 20 * PAGE)  # a rewrite
    finally:
        os.close(fd)


def pages(w: TsdWriter, src: str) -> None:
    fd = os.open(src, os.O_RDONLY)
    try:
        w.write_file_pages(0, fd, HEAD, len(IMG), classes())
        for i, cls in enumerate((R.PageClass.FREE, R.PageClass.FREE, R.PageClass.ZERO, R.PageClass.USER)):
            w.write_excluded(0x1000000 + i * 8 * PAGE, 8 * PAGE, cls)
        w.write_memory(0x1000000 + 32 * PAGE, IMG[:32 * PAGE])
    finally:
        os.close(fd)


MAP = [(0, len(IMG) + PAGE), (0x1000000, 64 * PAGE)]
CASES = {
    # name: (what is written, writer options, SHA-256 of the records)
    "memory": (memory, {},
        "c02a6b2e3ecb9549e58ffc3f38ab26f05e711b3e470740270c663b44d75b3cd1"),
    "memory-dedup": (memory, {"dedup": True},
        "e9a8eef92c4fbedcd81e93d3b850edbfcf8424c14c5f58cf1102b9f5df651593"),
    "files": (files, {},
        "c8c21c72f7855e27ca7810ff691caa90c858098e10ea3646f3653e25f7bb3b18"),
    "files-dedup": (files, {"dedup": True},
        "f43af62977e1adcb8bdaa2d367b22318d209bff81476d454077e406964981b3e"),
    "files-dedup-minzero4": (files, {"dedup": True, "min_zero_pages": 4},
        "7653d176339c2aef1a61807faa93c7da0ced103e26693524a2b43a9c0c6fd18d"),
    "files-minzero8-level1": (files, {"min_zero_pages": 8, "level": 1},
        "be360c6f08b35b275c703dc166aefdf5fd3674807d4946d6e031a090b21e9054"),
    "files-dedup-1thread": (files, {"dedup": True, "threads": 0},
        "f43af62977e1adcb8bdaa2d367b22318d209bff81476d454077e406964981b3e"),
    "pages-level31": (pages, {"memory_map": MemoryMap.from_ranges(MAP, dump_level=31)},
        "ab29d7f546f63172f9f1d5e04ff5e70ef62c3fa494b763a973b7d9e117a95003"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_write_path_writes_the_golden_bytes(tmp_path, name):
    what, options, golden = CASES[name]
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * HEAD + IMG + b"tail")
    path = tmp_path / f"{name}.tsd"
    with TsdWriter(path, dump_id=DID, chunk_size=8 * PAGE, **{"threads": 2, **options}) as w:
        what(w, str(src))
    assert hashlib.sha256(path.read_bytes()[128:]).hexdigest() == golden
