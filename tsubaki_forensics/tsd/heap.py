"""glibc heap tuning for code that streams chunk-sized blocks (writer, export).

Why a module of its own: the writer and ``vmcore.export`` both allocate and
free one block per chunk (compressed frames, decompressed chunks), and both
want those blocks served from a heap that keeps them, not mapped afresh.
"""

from __future__ import annotations

__all__ = ["reuse_chunk_sized_blocks", "HEAP_BLOCK_LIMIT", "HEAP_KEEP"]

_heap_tuned = False

# glibc <malloc.h> mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (a compressed frame of a chunk up
#: to 16 MiB, a pread buffer); larger ones are mapped and unmapped each time.
HEAP_BLOCK_LIMIT = 16 << 20
#: Free memory a heap keeps at its top instead of giving it back to the kernel.
HEAP_KEEP = 32 << 20


def reuse_chunk_sized_blocks() -> None:
    """Let glibc serve chunk-sized blocks from the heap and keep them, once per process.

    Why: every compressed frame is a new ``bytes`` that python-zstandard
    allocates at ``ZSTD_compressBound(run)`` (8 MiB for a default chunk) and
    shrinks; it cannot compress into a buffer of ours without changing the
    frames (``stream_reader().readinto()`` writes into a caller's buffer but
    cuts the blocks differently: 4,408,541 vs 4,409,804 bytes for one 8 MiB
    chunk, so the ``.tsd`` would no longer be byte for byte the same).  Above the
    mmap threshold each such block is a fresh mapping that the kernel zeroes
    page by page (one minor fault per 4 KiB written) and unmaps at ``free``:
    measured with the threshold pinned at 1 MiB, 186k faults for a busy 2 GiB
    crash (a third of its pages) and 334k for a busy 4 GiB one, and 1-3 s of
    system time.  With blocks up to :data:`HEAP_BLOCK_LIMIT` from the heap and
    :data:`HEAP_KEEP` of free top kept (not trimmed after every free), the
    same few heap pages are reused for every frame: 29k and 34k faults
    (3-6% of the input pages), half the system time.  Both values are set explicitly, which
    also stops glibc's dynamic threshold from drifting (the creeping RSS an
    earlier revision pinned the threshold against): peak RSS 124 MiB for
    512 MiB to 136 MiB for 4 GiB, +20-25 MiB of kept heap (docs/BENCHMARKS.md,
    "Import pipeline").  A no-op
    where the C library has no ``mallopt`` (musl) or ``ctypes`` cannot load it.

    ``export`` calls it too: each chunk it decompresses is a new 8 MiB
    ``bytes``, which glibc's own threshold (raised to a freed block's size, and
    a block of that same size still mapped) maps afresh every time.
    """
    global _heap_tuned
    if _heap_tuned:
        return
    _heap_tuned = True
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)
    mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP)
