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
    reassembly, completeness) and drgn stay unloaded (issue 21, start-up)."""
    import subprocess
    import sys

    code = ("import sys; import tsubaki_forensics.tsd.writer, tsubaki_forensics.vmcore.importer; "
            "print(' '.join(sorted(m for m in sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "tsubaki_forensics.tsd.writer" in loaded
    unwanted = {"tsubaki_forensics.tsd.reader", "tsubaki_forensics.tsd.memory",
                "tsubaki_forensics.tsd.completeness", "tsubaki_forensics.tsd.table",
                "drgn", "tsubaki_forensics.pageclass"}
    assert not loaded & unwanted
