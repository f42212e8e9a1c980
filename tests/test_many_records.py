"""Issue 22, finding 14: a dump of a million tiny records reads in bounded memory.

On main before the fix, ``inspect`` of 1,000,000 ZERO records (a 96 MB file)
peaked at 1.0 GiB: one Python object per record, per piece, per range
(``inspect --format json`` at 1.2 GiB, ``verify`` at 0.3 GiB after the first fix).  The
reader now keeps numpy columns (tsd/table.py, tsd/memory.py) and completeness
works on them (tsd/completeness.py); these tests hold that, and that the
vectorised interval algebra agrees with the plain one it replaced.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsubaki_forensics.tsd import TsdWriter, open_dump
from tsubaki_forensics.tsd import completeness as C
from tsubaki_forensics.tsd.memory import Range

from _budget import BUDGET, run_cli

STRIDE, LENGTH = 8192, 4096  # gaps between records: the writer cannot coalesce them


def write_zero_records(path, n: int) -> None:
    with TsdWriter(path, producer="test", threads=0) as w:
        for i in range(n):
            w.write_zero(i * STRIDE, LENGTH)


N = 1_000_000


@pytest.fixture(scope="module")
def million_zero(tmp_path_factory):
    """A 96 MB dump of a million ZERO records, built once for the module."""
    path = tmp_path_factory.mktemp("many") / "many.tsd"
    write_zero_records(path, N)
    return path


def test_inspect_of_a_million_zero_records_stays_under_the_budget(million_zero):
    run = run_cli("inspect", million_zero, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert f"{N} memory/zero/missing records" in run.stdout
    spans = [ln for ln in run.stdout.splitlines() if ln.startswith("  present ")]
    assert len(spans) == N  # every span listed, streamed
    assert spans[-1].split()[1] == f"{(N - 1) * STRIDE:#014x}-{(N - 1) * STRIDE + LENGTH:#014x}"
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"


def test_inspect_json_of_a_million_zero_records_stays_under_the_budget(million_zero):
    # 1.2 GiB before: a dict per range and the whole document as one string
    run = run_cli("inspect", "--format", "json", million_zero, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"
    info = json.loads(run.stdout)
    ranges = info["memory"]["ranges"]
    assert len(ranges) == N and info["files"][0]["memory_records"] == N
    assert ranges[0] == {"start": 0, "length": LENGTH, "kind": "zero"}
    assert ranges[-1] == {"start": (N - 1) * STRIDE, "length": LENGTH, "kind": "zero"}
    assert info["memory"]["zero_bytes"] == N * LENGTH and info["memory"]["missing"] == []


def test_verify_of_a_million_zero_records_stays_under_the_budget(million_zero):
    # 298 MiB before: the scan checked the INDEX by building an object per
    # entry, and reopening by the footer copied the entries (issue 22).
    run = run_cli("verify", million_zero, "--format", "json", timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    report = json.loads(run.stdout)
    assert report["status"] == "ok" and report["problems"] == []
    (f,) = report["files"]
    assert f["index_matches"] is True and f["has_footer"] is True
    assert report["completeness"]["present_bytes"] == N * LENGTH
    assert run.peak_rss < BUDGET, f"peak RSS {run.peak_rss >> 20} MiB >= {BUDGET >> 20} MiB"


def test_records_ranges_and_completeness_keep_their_api(tmp_path):
    path = tmp_path / "few.tsd"
    with TsdWriter(path, producer="test", threads=0) as w:
        w.write_zero(0, 4096)
        w.write_memory(4096, b"\x01" * 4096)
        w.write_zero(3 * 4096, 4096)
        w.write_missing(5 * 4096, 4096, "bad page")
    with open_dump(path) as d:
        f = d.files[0]
        recs = list(f.records)
        assert [r.paddr for r in recs] == [0, 4096, 3 * 4096, 5 * 4096]
        assert f.records[-1] == recs[-1] and f.records[1:2] == recs[1:2] and len(f.records) == 4
        assert d.memory.ranges() == [Range(0, 4096, "zero"), Range(4096, 4096, "data"),
                                     Range(3 * 4096, 4096, "zero")]
        assert d.memory.ranges()[1].kind == "data"
        assert d.memory.missing_ranges() == [Range(5 * 4096, 4096, "missing")]
        assert d.memory.present_bytes == 3 * 4096 and d.memory.zero_bytes == 2 * 4096
        assert d.memory.read(4096 - 2, 4) == b"\0\0\x01\x01"
        c = d.completeness()
        assert (c.present_bytes, c.data_bytes, c.missing_bytes) == (3 * 4096, 4096, 4096)
        assert [(g.start, g.kind, g.reason) for g in c.gaps] == [(5 * 4096, "unreadable", "bad page")]


_edge = st.sampled_from([0, 1, 4095, 4096, 2**63, 2**64 - 4096, 2**64 - 1])
_pos = st.one_of(st.integers(0, 2**64 - 1), _edge, st.integers(0, 200))
_ranges = st.lists(st.tuples(_pos, st.integers(1, 2**64)).map(
    lambda t: (t[0], min(t[0] + t[1], 2**64))), max_size=12)


@given(_ranges, _ranges)
def test_vectorised_interval_algebra_matches_the_plain_one(xs, ys):
    x, y = C._merge(xs), C._merge(ys)
    raw = C._np_merge(np.array([a for a, _ in xs], np.uint64), np.array([b - 1 for _, b in xs], np.uint64))
    assert [(a, b + 1) for a, b in zip(raw[0].tolist(), raw[1].tolist())] == x
    assert C._np_size(raw) == C._size(x)
    assert C._np_overlap(y, raw) == C._size(C._intersect(x, y))
    assert C._np_minus(y, raw) == C._subtract(y, x)
