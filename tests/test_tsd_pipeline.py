"""The writer's job pipeline (``tsd.encode.Pipeline``): results in submission
order, and no worker left idle behind one slow job.

Timing-free: the slow job waits for an event that only the job generator sets,
when the pipeline asks it for a job beyond the first ``threads + 1``; the
event's own timeout only turns a hang into a failure.
"""

from __future__ import annotations

import threading

from tsubaki_forensics.tsd.encode import RESULTS_PER_THREAD, Pipeline


def test_results_come_in_order_and_a_slow_job_does_not_stop_the_queue():
    threads = 2
    release = threading.Event()
    started: list[int] = []

    def job(i: int):
        started.append(i)
        if i == 0:  # the slow head: ends only once the pipeline asked for job 3
            return [i], float(release.wait(timeout=30))
        return [i], 1.0

    def jobs():
        for i in range(12):
            if i == threads + 1:
                release.set()
            yield job, (i,)

    done: list[int] = []
    released: list[float] = []
    pipe = Pipeline(threads)
    try:
        pipe.run(jobs(), lambda pieces, cpu: (done.extend(pieces), released.append(cpu)))
    finally:
        pipe.shutdown()
    assert done == list(range(12))
    assert released[0] == 1.0  # job 3 was asked for while job 0 still ran
    assert sorted(started) == list(range(12))
    assert RESULTS_PER_THREAD * threads > threads + 1  # room for results behind a slow head


def test_no_threads_runs_every_job_on_the_callers_thread_in_order():
    caller = threading.get_ident()
    seen: list[tuple[int, bool]] = []
    pipe = Pipeline(0)
    pipe.run(((lambda i: ([i], 0.0), (i,)) for i in range(5)),
             lambda pieces, cpu: seen.append((pieces[0], threading.get_ident() == caller)))
    assert seen == [(i, True) for i in range(5)]


def test_the_writer_loads_neither_the_reader_nor_drgn():
    """``import`` needs the writer only: the reader's modules (record table, memory
    reassembly, completeness), drgn, numpy (zero pages are found with
    ``bytes.startswith``), the dedup planner, ``concurrent.futures`` and the
    decompressors of wrapped inputs stay unloaded (issue 21, start-up)."""
    import subprocess
    import sys

    code = ("import sys; import tsubaki_forensics.tsd.writer, tsubaki_forensics.vmcore.importer; "
            "print(' '.join(sorted(m for m in sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "tsubaki_forensics.tsd.writer" in loaded
    unwanted = {"tsubaki_forensics.tsd.reader", "tsubaki_forensics.tsd.memory",
                "tsubaki_forensics.tsd.completeness", "tsubaki_forensics.tsd.table",
                "drgn", "tsubaki_forensics.pageclass", "numpy", "tsubaki_forensics.tsd.dedup",
                # the writer's own worker pool, not concurrent.futures (3 ms: logging and friends)
                "concurrent.futures", "logging", "gzip", "tempfile"}
    assert not loaded & unwanted


# -- zero-page scan: bytes.find/memcmp and numpy agree ------------------------------

from hypothesis import given, strategies as st  # noqa: E402

from tsubaki_forensics.tsd.encode import Run, _runs_numpy, runs  # noqa: E402

PS = 512  # small pages keep the examples small; the scan is the same for 4 KiB


def _image(kinds: list[int], head: int, tail: int, seed: int) -> bytes:
    """Pages that are zero (0), data (1), zero but one byte at the start (2) or
    end (3), or zero for more than a page's length across a page boundary (4),
    between a partial head and tail page."""
    import random

    rng = random.Random(seed)
    out = [bytes(head) if seed % 2 else rng.randbytes(head)]
    for k in kinds:
        page = bytearray(PS)
        if k == 1:
            page[:] = rng.randbytes(PS)
        elif k == 2:
            page[0] = 1
        elif k == 3:
            page[-1] = 1
        elif k == 4:
            page[PS // 2] = 7  # zeros around it reach into the neighbours
        out.append(bytes(page))
    out.append(bytes(tail) if seed % 3 else b"\x01" * tail)
    return b"".join(out)


@given(kinds=st.lists(st.integers(0, 4), max_size=40), head=st.integers(0, PS - 1),
       tail=st.integers(0, PS - 1), seed=st.integers(0, 5), min_pages=st.integers(1, 4))
def test_zero_runs_without_numpy_are_those_of_numpy(kinds, head, tail, seed, min_pages):
    """The writer's numpy-free scan of a bytes buffer gives the very runs of the
    numpy scan, for every placement of zero and data pages, partial pages at
    either end and any shortest zero record; so the output stays byte for byte
    what it was (tests/test_tsd_golden.py pins the bytes)."""
    data = _image(kinds, head, tail, seed)
    if not data:
        return
    paddr = 0x10000 - head  # the head partial page ends on a page boundary
    want = _runs_numpy(memoryview(data), paddr, PS, min_pages * PS)
    assert runs(data, paddr, PS, min_pages * PS) == want
    assert runs(bytearray(data), paddr, PS, min_pages * PS) == want
    framed = bytearray(b"\xff" * 3) + data + b"\xff"  # a file job: the chunk inside its read buffer
    assert runs(memoryview(framed)[3:3 + len(data)], paddr, PS, min_pages * PS,
                base=framed, start=3) == want
    assert sum(r.length for r in want) == len(data)
    assert all(isinstance(r, Run) for r in want)


def test_a_view_of_part_of_a_buffer_is_scanned_by_numpy_and_agrees():
    """A caller's memoryview of part of a bytearray (kdump import's batch) has no
    known offset into it: it takes the numpy scan, with the same result."""
    data = bytearray(PS) + bytearray(b"\x05" * PS) + bytearray(3 * PS)
    view = memoryview(data)[PS:]
    assert runs(view, 0, PS, PS) == [Run(True, 0, PS), Run(False, PS, 3 * PS)]


# -- early writeback: the disk works while later chunks compress --------------------

def test_writeback_is_requested_for_every_byte_once_and_stops_where_refused(tmp_path, monkeypatch):
    """Every WRITEBACK_STEP bytes written, the writer asks the kernel to start writing
    back exactly the bytes since the last request (no byte twice, none skipped up to
    the last request); a file that refuses (returns False) is never asked again; the
    dump reads back byte for byte either way."""
    import random

    from tsubaki_forensics.tsd import framing, open_dump
    from tsubaki_forensics.tsd.writer import TsdWriter

    data = random.Random(21).randbytes(3 * framing.WRITEBACK_STEP + 12345)  # incompressible
    for refuse in (False, True):
        calls: list[tuple[int, int]] = []

        def fake(fd: int, offset: int, length: int) -> bool:
            calls.append((offset, length))
            return not refuse

        monkeypatch.setattr(framing, "start_writeback", fake)
        path = tmp_path / f"wb{refuse}.tsd"
        with TsdWriter(path, chunk_size=1 << 20, level=1, threads=2) as w:
            w.write_memory(0x100000, data)
        if refuse:
            assert len(calls) == 1
        else:
            assert len(calls) >= 3
            assert calls[0][0] == 0
            assert all(a + n == b for (a, n), (b, _) in zip(calls, calls[1:]))
            assert all(n >= framing.WRITEBACK_STEP for _, n in calls)
            assert calls[-1][0] + calls[-1][1] <= path.stat().st_size
        with open_dump(path) as dump:
            assert dump.problems == []
            assert dump.memory.read(0x100000, len(data)) == data


def test_start_writeback_works_on_a_file_and_says_no_on_a_pipe(tmp_path):
    """The real call: True on a regular file with dirty pages (Linux), False on a pipe
    (ESPIPE), never an exception."""
    import os
    import sys

    from tsubaki_forensics.tsd.framing import start_writeback

    path = tmp_path / "f.bin"
    with open(path, "wb") as f:
        f.write(b"x" * 65536)
        f.flush()
        ok = start_writeback(f.fileno(), 0, 65536)
    assert ok is (sys.platform == "linux")
    r, w = os.pipe()
    try:
        assert start_writeback(w, 0, 4096) is False
    finally:
        os.close(r)
        os.close(w)


def test_a_failing_job_raises_in_order_and_the_jobs_behind_it_are_dropped():
    """A job's exception reaches the caller when its turn to be written comes
    (results before it are written first); jobs no worker has started are
    cancelled, and shutdown still ends the threads."""
    import pytest

    release = threading.Event()
    ran: list[int] = []

    def job(i: int):
        ran.append(i)
        if i == 0:
            release.wait(timeout=30)  # keep one worker busy so later jobs queue up
        if i == 1:
            raise OSError("disk on fire")
        return [i], 0.0

    def jobs():
        for i in range(50):
            if i == 4:
                release.set()
            yield job, (i,)

    done: list[int] = []
    pipe = Pipeline(2)
    with pytest.raises(OSError, match="disk on fire"):
        pipe.run(jobs(), lambda pieces, cpu: done.extend(pieces))
    pipe.shutdown()
    assert done == [0]
    assert max(ran) < 2 + RESULTS_PER_THREAD * 2  # never more jobs than the pipeline's bound
    assert all(not t.is_alive() for t in pipe.pool._started)
