"""Run triage over many dumps: find them, skip the cached ones, analyse the rest in parallel.

Two engines, one job function (:func:`~tsubaki_forensics.triage.scan.scan_dump`,
plain data in and out):

- local processes (default): :class:`concurrent.futures.ProcessPoolExecutor`
  with ``jobs`` workers.  Processes, not threads: drgn's DWARF indexing and
  our chunk decompression hold the GIL for long stretches, and a worker that
  dies with one dump must not take the caller with it;
- ``dask=ADDRESS``: the same function on a Dask distributed cluster
  (``distributed.Client(ADDRESS)``, ``client.map``, ``as_completed``).  The
  workers must see the dumps under the same absolute paths (shared storage)
  and have tsubaki-forensics installed.

Each finished record is written to the cache as soon as it arrives, so an
interrupted run keeps what it did.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

from ..contracts.triage import TriageRecord
from ..errors import TsubakiError
from .cache import ResultCache, options_key
from .discover import DumpFiles, Unreadable, find_files, group_dumps
from .scan import as_record, failed_record, scan_dump, unreadable_record

__all__ = ["TriageRun", "triage", "default_jobs"]

Progress = Callable[[int, int, TriageRecord], None]


def default_jobs() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class TriageRun:
    """What one triage run found and did.

    :param records: one :class:`TriageRecord` per dump (sorted by dump id),
        each with ``paths`` (every file of the dump, copies included) and
        ``path`` (the first); then one per unreadable file
        (:func:`~.scan.unreadable_record`), so every report names them with their error.
    :param analysed: dump ids analysed in this run; ``cached`` those reused.
    """

    records: list[TriageRecord]
    unreadable: list[Unreadable]
    analysed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    engine: str = "local"
    workers: int = 1
    seconds: float = 0.0


def _local(pending: Sequence[DumpFiles], options: dict[str, Any], jobs: int) -> Iterator[dict[str, Any]]:
    # forkserver, not fork: the caller may already hold threads (drgn's, a
    # test runner's), and a child forked from a threaded parent can deadlock
    # in native code (seen: a worker stuck forever inside load_debug_info).
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=context) as pool:
        futures = {pool.submit(scan_dump, d.dump_id, d.parts, d.created_ns, options): d for d in pending}
        for future in as_completed(futures):
            yield _result(future, futures[future])


def _result(future: Any, dump: DumpFiles) -> dict[str, Any]:
    """The record of a finished job; a worker that died (a crash in native code, OOM kill) fails only its dump."""
    try:
        return future.result()
    except Exception as e:  # BrokenProcessPool, distributed's KilledWorker, ...
        return failed_record(dump.dump_id, dump.parts, dump.created_ns, f"worker died: {type(e).__name__}: {e}")


def _dask(pending: Sequence[DumpFiles], options: dict[str, Any], address: str, run: TriageRun,
          timeout: float) -> Iterator[dict[str, Any]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError as e:
        raise TsubakiError("--dask needs dask[distributed]: pip install 'tsubaki-forensics[fleet]'") from e
    try:
        client = Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as e:
        raise TsubakiError(f"cannot reach the Dask scheduler at {address}: {e}") from e
    try:
        run.workers = sum(client.nthreads().values())
        futures = client.map(
            scan_dump,
            [d.dump_id for d in pending],
            [list(d.parts) for d in pending],
            [d.created_ns for d in pending],
            [options] * len(pending),
            pure=False,
        )
        by_key = {future.key: dump for future, dump in zip(futures, pending)}
        for future in dask_completed(futures):
            yield _result(future, by_key[future.key])
    finally:
        client.close()


def triage(
    arguments: Iterable[str],
    *,
    jobs: int | None = None,
    dask: str | None = None,
    dask_timeout: float = 20.0,
    cache: ResultCache | None = None,
    options: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> TriageRun:
    """Analyse every dump named by ``arguments`` (dirs, globs, files) that the cache does not already hold."""
    t0 = time.perf_counter()
    options = dict(options or {})
    key = options_key(options)
    dumps, unreadable = group_dumps(find_files(arguments))
    by_id = {d.dump_id: d for d in dumps}
    records: dict[str, dict[str, Any]] = {}
    run = TriageRun([], unreadable, engine="dask" if dask else "local")
    for d in dumps:
        hit = cache.get(d.dump_id, d.fingerprint, key) if cache is not None else None
        if hit is not None:
            records[d.dump_id] = hit
            run.cached.append(d.dump_id)
    pending = [d for d in dumps if d.dump_id not in records]
    if pending:
        if dask:
            results = _dask(pending, options, dask, run, dask_timeout)
        else:
            run.workers = max(1, jobs or default_jobs())
            results = _local(pending, options, run.workers)
        for done, record in enumerate(results, 1):
            d = by_id[record["dump_id"]]
            if cache is not None:
                cache.put(d.dump_id, d.fingerprint, key, record)
            records[d.dump_id] = record
            run.analysed.append(d.dump_id)
            if progress is not None:
                progress(done, len(pending), as_record(record))
    for d in dumps:  # plain data from the workers and the cache: typed from here on
        run.records.append(replace(as_record(records[d.dump_id]), paths=tuple(d.paths), path=d.paths[0]))
    for bad in unreadable:  # never cached: the file may be fixed or finish growing
        reason = bad.reason if bad.path in bad.reason else f"{bad.path}: {bad.reason}"
        run.records.append(as_record(unreadable_record(bad.path, reason)))
    run.seconds = time.perf_counter() - t0
    return run
