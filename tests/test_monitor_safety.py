"""The hand-back safety invariant, over many randomised machines and policies.

Invariant: at every instant, every byte of the crashed kernel's memory is
either still intact in RAM or durable in the dump.  The oracle is physical,
not the engine's own bookkeeping: a power cut at time ``t`` leaves exactly
the dump prefix that was durable at ``t``; every region Linux had been given
by ``t`` (and so overwrote) must be readable from that prefix and equal the
pre-crash bytes.  Correct policies pass on every example; two deliberately
broken policies are caught on every example.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from monitor_model.engine import CollectParams, run_policy
from monitor_model.machine import Machine
from monitor_model.policies import Step, TsubakiPolicy, get_policy
from monitor_model.sources import BytesSource
from monitor_model.storage import StorageProfile
from tsubaki_forensics.errors import NotCollectedError
from tsubaki_forensics.tsd import open_dump

PAGE = 4096
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def machines(draw):
    """A small crashed machine: 1-3 RAM ranges with holes, mixed page contents."""
    ranges, pos = [], draw(st.integers(0, 4)) * PAGE
    for _ in range(draw(st.integers(1, 3))):
        pages = draw(st.integers(1, 48))
        ranges.append((pos, pages * PAGE))
        pos += (pages + draw(st.integers(0, 40))) * PAGE
    total = sum(n for _, n in ranges)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = rng.integers(0, 3, total // PAGE)  # 0 zero, 1 random, 2 text
    buf = np.zeros(total, np.uint8)
    text = np.frombuffer(b"".join(b"pid %d comm kworker\n" % i for i in range(300))[:PAGE], np.uint8)
    for i, kind in enumerate(kinds):
        if kind == 1:
            buf[i * PAGE : (i + 1) * PAGE] = rng.integers(0, 256, PAGE, dtype=np.uint8)
        elif kind == 2:
            buf[i * PAGE : (i + 1) * PAGE] = np.roll(text, i)
    source = BytesSource(buf.tobytes(), ranges, vmcoreinfo=b"OSRELEASE=hypothesis\n", name="hyp")
    region_size = draw(st.sampled_from([4, 8, 16, 32])) * PAGE
    reboot_mem = draw(st.integers(1, total // PAGE)) * PAGE
    storage = StorageProfile(
        "hyp",
        bandwidth=draw(st.floats(1e4, 1e8)),
        write_latency=draw(st.floats(0, 5e-3)),
        granularity=draw(st.sampled_from([1, 512, 4096])),
        flush_latency=draw(st.floats(1e-4, 2e-2)),
        max_write=draw(st.sampled_from([4096, 65536, 1 << 20])),
    )
    params = CollectParams(storage=storage, region_size=region_size, reboot_mem=reboot_mem,
                           boot_s=draw(st.floats(0, 5)), capture_boot_s=draw(st.floats(0, 5)),
                           threads=1, fsync=False, strict=False)
    # random triage steps: any pages, in any order (the triage policy dumps them first)
    triage_pages = draw(st.lists(st.integers(0, total // PAGE - 1), max_size=6))
    cuts = draw(st.lists(st.floats(0, 1), min_size=1, max_size=4))
    return source, params, triage_pages, cuts


def _triage_for(source, pages):
    flat = [start + off for start, length in source.ranges for off in range(0, length, PAGE)]

    def triage(machine):
        return [Step(f"triage {i}", ((flat[p], PAGE),)) for i, p in enumerate(pages)]

    return triage


def _lost_at(result, source, params, path, tmp_path, time):
    """Regions given to Linux by ``time`` that a power cut at ``time`` loses."""
    cut = tmp_path / "cut.tsd"
    with open(path, "rb") as f:
        cut.write_bytes(f.read(result.durable_offset_at(time)))
    given = [h.region for h in result.handbacks if h.time <= time]
    if not given:
        return []
    regions = Machine.from_ranges(source.ranges, params.region_size).regions
    lost = []
    with open_dump(cut) as dump:
        for index in given:
            for start, length in regions[index].ranges:
                try:
                    if dump.memory.read(start, length) != source.read(start, length):
                        lost.append(index)
                except NotCollectedError:
                    lost.append(index)
    return lost


def _run(policy, source, params, triage_pages, tmp_path):
    path = tmp_path / "d.tsd"
    result = run_policy(source, policy, params, path, triage=_triage_for(source, triage_pages))
    return result, path


def _check_cuts(result, source, params, path, tmp_path, cuts):
    """Power cuts at every hand-back instant and at random instants."""
    end = result.dump_complete_s or 0.0
    times = [h.time for h in result.handbacks] + [c * end for c in cuts]
    return {t: _lost_at(result, source, params, path, tmp_path, t) for t in times}


@pytest.mark.parametrize("name", ["kdump", "dump-then-reset", "tsubaki", "tsubaki-triage"])
@SETTINGS
@given(case=machines())
def test_correct_policies_never_lose_evidence(tmp_path_factory, name, case):
    source, params, triage_pages, cuts = case
    tmp_path = tmp_path_factory.mktemp("safe")
    result, path = _run(get_policy(name), source, params, triage_pages, tmp_path)
    assert result.unsafe_handbacks == []
    total = sum(n for _, n in source.ranges)
    with open_dump(path) as dump:
        for start, length in source.ranges:
            assert dump.memory.read(start, length) == source.read(start, length)
        assert sum(r.length for r in dump.memory.ranges()) == total
    assert all(lost == [] for lost in _check_cuts(result, source, params, path, tmp_path, cuts).values())
    assert result.restart_s >= result.boot_s
    assert len({h.region for h in result.handbacks}) == len(result.regions)
    shutil.rmtree(tmp_path)


class HandsBackBeforeFlush(TsubakiPolicy):
    """Broken: hands a region back when its records are written, before the flush."""

    name = "broken-before-flush"

    def on_written(self, ctx, step):
        if ctx.rebooted and step.region is not None and step.region not in ctx.handed_back:
            if step.region not in {r.index for r in ctx.reboot_set}:
                ctx.hand_back(ctx.machine.regions[step.region])


class HandsBackAhead(TsubakiPolicy):
    """Broken: after the reboot, hands back the next region before dumping it."""

    name = "broken-ahead"

    def on_saved(self, ctx, step):
        super().on_saved(ctx, step)
        if ctx.rebooted:
            for region in ctx.machine.regions:
                if region.index not in ctx.handed_back:
                    ctx.hand_back(region)
                    break


def _has_region_after_reboot(result):
    return any(h.how == "hand-back" for h in result.handbacks)


@SETTINGS
@given(case=machines())
def test_handing_back_before_the_flush_is_caught(tmp_path_factory, case):
    source, params, triage_pages, cuts = case
    tmp_path = tmp_path_factory.mktemp("broken")
    result, path = _run(HandsBackBeforeFlush(), source, params, [], tmp_path)
    early = [h for h in result.handbacks if h.how == "hand-back" and h.records_end is not None
             and h.durable_offset < h.records_end]
    event(f"handed back after reboot: {_has_region_after_reboot(result)}")
    if _has_region_after_reboot(result):
        assert early, "the broken policy handed back before a flush, yet nothing was flagged"
        assert set(h.region for h in early) <= set(h.region for h in result.unsafe_handbacks)
        # physical proof: a power cut at that instant loses the region
        assert _lost_at(result, source, params, path, tmp_path, early[0].time) != []
    shutil.rmtree(tmp_path)


@SETTINGS
@given(case=machines())
def test_handing_back_undumped_memory_corrupts_the_dump_and_is_caught(tmp_path_factory, case):
    source, params, triage_pages, cuts = case
    tmp_path = tmp_path_factory.mktemp("ahead")
    result, path = _run(HandsBackAhead(), source, params, [], tmp_path)
    ahead = [h for h in result.handbacks if not h.complete]
    event(f"handed back undumped memory: {bool(ahead)}")
    if ahead:
        assert set(h.region for h in ahead) <= set(h.region for h in result.unsafe_handbacks)
        with open_dump(path) as dump:
            differs = any(dump.memory.read(s, n) != source.read(s, n) for s, n in source.ranges)
        assert differs, "Linux overwrote memory before it was dumped, yet the dump matches"
    shutil.rmtree(tmp_path)
