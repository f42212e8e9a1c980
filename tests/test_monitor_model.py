"""Unit tests of the monitor emulation's models: machine, storage, timeline, policies, engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor_model.engine import CollectParams, HandbackSafetyError, run_policy
from monitor_model.machine import (
    EmulatedRam,
    IntervalSet,
    Machine,
    choose_reboot_regions,
    format_size,
    parse_size,
)
from monitor_model.policies import POLICIES, TsubakiPolicy, get_policy
from monitor_model.sources import BytesSource
from monitor_model.storage import PROFILES, StorageDevice, get_profile
from monitor_model.timeline import DemandModel, stall_intervals
from tsubaki_forensics.errors import TsubakiError
from tsubaki_forensics.tsd import open_dump

KiB, MiB = 1 << 10, 1 << 20


def test_parse_size():
    assert parse_size("128M") == 128 * MiB
    assert parse_size("2G") == 2 << 30
    assert parse_size("512KiB") == 512 * KiB
    assert parse_size("4096") == 4096
    assert format_size(3 * MiB // 2) == "1.5 MiB"
    with pytest.raises(TsubakiError, match="not a size"):
        parse_size("lots")


def test_interval_set_merges_and_subtracts():
    s = IntervalSet([(0, 10), (20, 10)])
    s.add(10, 5)
    assert list(s) == [(0, 15), (20, 30)]
    assert s.covers(2, 10) and not s.covers(10, 12)
    assert s.subtract_from(0, 40) == [(15, 5), (30, 10)]
    s.add(14, 7)
    assert list(s) == [(0, 30)] and s.total() == 30


def test_machine_regions_follow_hotplug_blocks_and_skip_holes():
    # 0-640K, 1M-300M: like a small PC guest
    m = Machine.from_ranges([(0, 640 * KiB), (MiB, 299 * MiB)], region_size=128 * MiB)
    assert [r.base for r in m.regions] == [0, 128 * MiB, 256 * MiB]
    assert m.regions[0].ranges == ((0, 640 * KiB), (MiB, 127 * MiB))
    assert m.total == 640 * KiB + 299 * MiB
    assert m.region_of(200 * MiB).index == 1 and m.region_of(400 * MiB) is None
    assert [r.index for r in m.reboot_regions(200 * MiB)] == [0, 1]
    with pytest.raises(TsubakiError, match="more than Linux's memory"):
        m.reboot_regions(1 << 30)
    with pytest.raises(TsubakiError, match="multiple of 4096"):
        Machine.from_ranges([(0, MiB)], region_size=1000)


def test_sparse_reboot_regions_are_region_0_then_nearly_empty_ones():
    size, region = 8 * MiB, MiB
    buf = np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)
    buf[5 * MiB : 7 * MiB] = 0  # regions 5 and 6 are empty
    buf[5 * MiB + 8192 : 5 * MiB + 12288] = 1  # one non-zero page: still sparse
    src = BytesSource(buf.tobytes())
    m = Machine.from_ranges(src.ranges, region_size=region)
    choice = choose_reboot_regions(m, EmulatedRam(src), 3 * MiB)
    assert [r.index for r in choice.regions] == [0, 5, 6] and choice.sparse == [5, 6]
    # dense regions are given up early: far less than the 6 MiB before region 6 is read
    assert choice.scanned < 3 * MiB
    # not enough sparse memory: the lowest dense regions fill up
    assert [r.index for r in choose_reboot_regions(m, EmulatedRam(src), 5 * MiB).regions] == [0, 1, 2, 5, 6]


def test_emulated_ram_overlay_is_lazy_and_never_the_old_bytes():
    data = bytes(range(256)) * 4096  # 1 MiB
    ram = EmulatedRam(BytesSource(data))
    ram.overwrite(4096, 8192, seed=7)
    out = ram.read(0, 16384)
    assert out[:4096] == data[:4096] and out[12288:] == data[12288:16384]
    new = out[4096:12288]
    assert new != data[4096:12288] and new.count(0) < 100
    assert ram.read(4100, 8) == new[4:12]  # deterministic, address-based
    assert len(ram._overwrites) == 1  # a record, not a copy of memory


def test_storage_profiles_and_custom():
    sd = PROFILES["sd-uhs1"]
    assert sd.write_time(40_000_000) == pytest.approx(1.0 + 39 * 1e-3, rel=0.01)
    assert sd.write_time(1) == pytest.approx(4096 / 40e6 + 1e-3)  # granularity
    assert PROFILES["unlimited"].write_time(10**9) == 0
    c = get_profile("custom:bw=20MB/s,lat=2ms,gran=4K,flush=10ms")
    assert (c.bandwidth, c.write_latency, c.granularity, c.flush_latency) == (20e6, 2e-3, 4096, 10e-3)
    assert get_profile("custom:base=emmc,bw=50MB/s").write_latency == PROFILES["emmc"].write_latency
    for bad in ("floppy", "custom:bw=fast", "custom:speed=1"):
        with pytest.raises(TsubakiError):
            get_profile(bad)


def test_storage_device_durability_follows_flushes():
    dev = StorageDevice(get_profile("custom:bw=1MB/s,lat=0s,gran=1,flush=100ms"))
    t = dev.write(1_000_000, 0.0)
    assert t == pytest.approx(1.0) and dev.durable_offset(5.0) == 0
    t = dev.flush(t)
    assert t == pytest.approx(1.1)
    assert dev.durable_offset(1.05) == 0 and dev.durable_offset(1.1) == 1_000_000


def test_demand_and_stalls():
    demand = DemandModel(footprint=100, rate=10, target=300)
    assert demand.at(-1) == 0 and demand.at(5) == 150 and demand.at(100) == 300
    # owned: 200 from t=1, 300 from t=20; restart at 2 -> demand passes 200 at 2+10
    owned = [(0.0, 0), (1.0, 200), (20.0, 300)]
    assert stall_intervals(owned, 2.0, demand) == [(12.0, 20.0)]
    # everything given back before demand grows: no stall
    assert stall_intervals([(0.0, 0), (1.0, 300)], 2.0, demand) == []


def _source(size=4 * MiB, seed=0):
    rng = np.random.default_rng(seed)
    buf = np.zeros(size, np.uint8)
    buf[: size // 4] = rng.integers(0, 256, size // 4, dtype=np.uint8)
    text = b"".join(b"log line %d\n" % i for i in range(size // 64))[: size // 8]
    buf[size // 2 : size // 2 + len(text)] = np.frombuffer(text, np.uint8)
    return BytesSource(buf.tobytes(), vmcoreinfo=b"OSRELEASE=test\n", name="unit")


def _params(**kw):
    base = dict(reboot_choice="low", region_size=512 * KiB, reboot_mem=MiB, boot_s=2.0, threads=1, fsync=False,
                storage=get_profile("custom:bw=1MB/s,lat=1ms,gran=4K,flush=5ms"))
    base.update(kw)
    return CollectParams(**base)


@pytest.mark.parametrize("name", ["kdump", "tsubaki", "tsubaki-triage"])
def test_every_dumping_policy_writes_the_exact_memory(tmp_path, name):
    src = _source()
    r = run_policy(src, get_policy(name), _params(), tmp_path / "d.tsd")
    assert not r.unsafe_handbacks
    with open_dump(tmp_path / "d.tsd") as dump:
        assert dump.memory.read(0, 4 * MiB) == src.read(0, 4 * MiB)
        assert dump.vmcoreinfo == b"OSRELEASE=test\n"
        kinds = {e.kind for e in dump.events}
    assert {"panic_notice", "saved", "reboot_start", "restart"} <= kinds
    if name == "kdump":  # the timeline and size are makedumpfile's; no struct pages: level 1
        assert r.dump_level == 1 and "level 1" in r.notes[0]
    else:
        assert r.bytes_written == (tmp_path / "d.tsd").stat().st_size and r.dump_level == 1


def test_policy_timelines_are_ordered_as_designed(tmp_path):
    src = _source()
    res = {n: run_policy(src, get_policy(n), _params(), tmp_path / f"{n}.tsd") for n in POLICIES}
    kdump, tsubaki, reboot = res["kdump"], res["tsubaki"], res["reboot-only"]
    # kdump: capture boot + dump + boot; tsubaki: reboot regions + boot
    assert kdump.restart_s > kdump.dump_complete_s - 0.1 > 2.0
    assert reboot.restart_s == 2.0 and reboot.dump_complete_s is None and reboot.bytes_written == 0
    assert tsubaki.restart_s < kdump.restart_s
    assert tsubaki.restart_s <= 1.1 * tsubaki.ideal_restart_s
    assert tsubaki.full_memory_s == pytest.approx(tsubaki.dump_complete_s, abs=0.1)
    # tsubaki hands regions back one by one, in order of being saved
    given = [h for h in tsubaki.handbacks if h.how == "hand-back"]
    assert len(given) == 6 and [h.time for h in given] == sorted(h.time for h in given)
    # emulated time is deterministic
    again = run_policy(src, get_policy("tsubaki"), _params(), tmp_path / "again.tsd")
    assert again.restart_s == tsubaki.restart_s and again.bytes_written == tsubaki.bytes_written


def test_slow_handback_causes_recorded_stalls(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, 8 * MiB, dtype=np.uint8).tobytes()
    src = BytesSource(data, vmcoreinfo=b"OSRELEASE=test\n", name="dense")  # no cheap region
    params = _params(boot_s=0.5, boot_footprint=512 * KiB, demand_rate=4 * MiB)
    r = run_policy(src, get_policy("tsubaki"), params, tmp_path / "d.tsd")
    assert r.stall_s > 0 and r.stalls
    kinds = [e.kind for e in r.timeline.events]
    assert "stall_start" in kinds and "stall_end" in kinds
    assert math.isclose(r.stall_s, sum(b - a for a, b in r.stalls))


def test_cpu_scale_puts_compression_on_the_timeline(tmp_path):
    src = _source()
    fast = run_policy(src, get_policy("tsubaki"), _params(storage=PROFILES["unlimited"]), tmp_path / "a.tsd")
    slow = run_policy(src, get_policy("tsubaki"), _params(storage=PROFILES["unlimited"], cpu_scale=1000.0),
                      tmp_path / "b.tsd")
    assert fast.cpu_compress_s > 0  # measured either way
    assert slow.dump_complete_s > fast.dump_complete_s


def test_strict_engine_refuses_an_early_handback(tmp_path):
    class Eager(TsubakiPolicy):
        name = "eager"

        def on_written(self, ctx, step):  # before the flush
            if ctx.rebooted and step.region is not None and step.region not in ctx.handed_back:
                ctx.hand_back(ctx.machine.regions[step.region])

    with pytest.raises(HandbackSafetyError, match="before its dump was durable"):
        run_policy(_source(), Eager(), _params(), tmp_path / "d.tsd")


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(TsubakiError, match="unknown policy 'fast'"):
        get_policy("fast")


def test_a_dump_cut_short_still_records_when_linux_got_memory(tmp_path):
    r = run_policy(_source(), get_policy("tsubaki"), _params(), tmp_path / "d.tsd")
    later = [h for h in r.handbacks if h.how == "hand-back"][2]
    # a power cut just after the next flush following that hand-back
    after = min(t for t, _ in r.flushes if t > later.time)
    cut = tmp_path / "cut.tsd"
    cut.write_bytes((tmp_path / "d.tsd").read_bytes()[: r.durable_offset_at(after)])
    with open_dump(cut) as dump:
        given = [e.fields["region"] for e in dump.events if e.kind in ("reboot", "hand-back")]
        kinds = {e.kind for e in dump.events}
    assert {"reboot_start", "restart"} <= kinds
    assert later.region in given and len(given) < len(r.regions)


def test_read_into_fills_a_buffer_with_what_read_returns(tmp_path):
    """The collect engine reads every window into a reused buffer (issue 21):
    ``read_into`` of each built-in source and of the emulated RAM (overwritten
    ranges included) gives the bytes ``read`` gives; a subclass that changes
    only ``read`` is read through it, short reads named."""
    import json
    import random
    import struct

    from monitor_model.sources import RawImageSource, VmcoreSource
    from tsubaki_forensics.errors import SourceError

    rng = random.Random(4)
    data = rng.randbytes(3 * 4096) + bytes(4096) + rng.randbytes(2 * 4096)
    raw = tmp_path / "ram.bin"
    raw.write_bytes(b"pad" + data)
    (tmp_path / "ram.bin.json").write_text(json.dumps({"ranges": [
        {"paddr": 0x10000, "length": 4 * 4096, "offset": 3},
        {"paddr": 0x40000, "length": 2 * 4096, "offset": 3 + 4 * 4096}]}))
    elf = tmp_path / "core.elf"  # one PT_LOAD with p_memsz beyond p_filesz (reads as zeros)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 0, 120, 0, 0x10000, len(data), len(data) + 4096, 0)
    elf.write_bytes(ehdr + phdr + data)
    sources = [BytesSource(data, [(0x10000, 4 * 4096), (0x40000, 2 * 4096)]),
               RawImageSource(raw), VmcoreSource(elf)]
    for src in sources:
        for paddr, size in src.ranges:
            for a, n in ((paddr, size), (paddr + 100, size - 300), (paddr + 4096, 4096)):
                buf = bytearray(b"\xaa" * (n + 7))
                src.read_into(a, memoryview(buf)[:n])
                assert bytes(buf[:n]) == src.read(a, n) and buf[n:] == b"\xaa" * 7
        with pytest.raises(SourceError):
            src.read_into(0x30000, memoryview(bytearray(16)))
        ram = EmulatedRam(src)
        ram.overwrite(src.ranges[0][0] + 4096, 100, seed=3)
        lo, n = src.ranges[0]
        buf = bytearray(n)
        ram.read_into(lo, buf)
        assert bytes(buf) == ram.read(lo, n) != src.read(lo, n)
        src.close()

    class Short(BytesSource):
        def read(self, paddr, size):
            return super().read(paddr, size)[:-1]

    with pytest.raises(SourceError, match="short read"):
        EmulatedRam(Short(data)).read_into(0, memoryview(bytearray(4096)))
