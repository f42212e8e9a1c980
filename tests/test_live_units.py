"""Live mode without QEMU: the memory layout, the guest's command line and init, pacing, prediction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor_model.storage import PROFILES, get_profile
from tsubaki_forensics.errors import TsubakiError
from tsubaki_forensics.live.guest import CMDLINE, READY_MARKER, qemu_argv, render_init
from tsubaki_forensics.live.layout import BLOCK, LEGACY_HOLE, plan_layout
from tsubaki_forensics.live.predict import DumpSource, predict
from tsubaki_forensics.live import throttle
from tsubaki_forensics.live.throttle import PacedDevice
from tsubaki_forensics.tsd import TsdWriter


def test_layout_splits_memory_into_base_and_dimms(tmp_path):
    layout = plan_layout(1 << 30, 256 << 20, 128 << 20, tmp_path)
    assert layout.dimms == 6 and layout.total == 1 << 30
    layout.dimm_addrs = [(4 << 30) + i * (128 << 20) for i in range(6)]
    base = layout.base_piece()
    assert base.ranges == ((0, LEGACY_HOLE[0]), (LEGACY_HOLE[1], (256 << 20) - LEGACY_HOLE[1]))
    assert base.blocks == [0, 1]
    dimm = layout.dimm_pieces()[2]
    assert dimm.file_base == dimm.ranges[0][0] == (4 << 30) + 2 * BLOCK
    assert dimm.blocks == [34]
    assert layout.ranges()[0] == (0, LEGACY_HOLE[0]) and len(layout.ranges()) == 8


@pytest.mark.parametrize("mem,base,dimm", [
    (1 << 30, 100 << 20, 128 << 20),          # base too small
    (1 << 30, 256 << 20, 96 << 20),           # DIMM not a memory block multiple
    ((1 << 30) + (64 << 20), 256 << 20, 128 << 20),  # does not split evenly
    (256 << 20, 256 << 20, 128 << 20),        # no DIMM at all
])
def test_layout_refuses_sizes_that_do_not_split(tmp_path, mem, base, dimm):
    with pytest.raises(TsubakiError):
        plan_layout(mem, base, dimm, tmp_path)


def test_layout_needs_dimm_addresses_before_pieces(tmp_path):
    with pytest.raises(TsubakiError, match="query-memory-devices"):
        plan_layout(512 << 20, 256 << 20, 128 << 20, tmp_path).dimm_pieces()


def test_qemu_argv_puts_all_ram_in_shared_files_and_keeps_reset_possible(tmp_path):
    layout = plan_layout(512 << 20, 256 << 20, 128 << 20, tmp_path)
    argv = qemu_argv(layout, bzimage=Path("bz"), initrd=Path("rd"), smp=2, qmp=Path("q"),
                     agent=Path("a"), console=Path("c"))
    text = " ".join(argv)
    assert "-no-reboot" not in argv  # system_reset would shut the guest down
    assert "-m 256M,slots=2,maxmem=512M" in text
    assert text.count("memory-backend-file") == 3 and text.count("share=on") == 3
    assert text.count("pc-dimm") == 2 and "panic=pause" in text and "pvpanic" in text
    assert "memhp_default_state=offline" in argv[argv.index("-append") + 1] == CMDLINE


def test_init_marks_ready_then_runs_the_agent():
    init = render_init(["pvpanic.ko", "pvpanic_mmio.ko", "qemu_fw_cfg.ko"])
    assert init.index("insmod /lib/modules/pvpanic_mmio.ko") < init.index(READY_MARKER)
    assert init.index(READY_MARKER) < init.index("/dev/ttyS1")
    assert "online_movable" in init and "sysrq-trigger" in init


class FakeClock:
    """Wall clock and ``asyncio.sleep`` for the pacer: sleeping advances the
    clock by exactly what was asked, so the verdict is the model's arithmetic,
    not the machine's scheduling (issue 23)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(throttle, "time", fake)
    monkeypatch.setattr(throttle, "asyncio", fake)
    return fake


def test_paced_device_sleeps_to_the_profile_bandwidth(clock):
    async def run() -> None:
        dev = PacedDevice(get_profile("custom:bw=10MB/s,lat=0ms,gran=1,flush=0ms"), clock.time())
        await dev.wrote(5_000_000)   # 0.5 s of device time
        assert clock.sleeps == [pytest.approx(0.5 - throttle.QUEUE_S)]  # a write queue of QUEUE_S
        await dev.flushed()          # the flush waits for the rest
    asyncio.run(run())
    assert sum(clock.sleeps) == pytest.approx(0.5) and len(clock.sleeps) == 2


def test_paced_device_lets_the_compressor_run_ahead_by_the_queue_only(clock):
    async def run() -> None:
        dev = PacedDevice(get_profile("custom:bw=10MB/s,lat=0ms,gran=1,flush=0ms"), clock.time())
        await dev.wrote(2_000_000)   # 0.2 s: within the queue, no wait
        assert clock.sleeps == []
        clock.now += 1.0             # the device caught up meanwhile
        await dev.flushed()
        assert clock.sleeps == []
    asyncio.run(run())


def test_unlimited_device_never_sleeps(clock):
    async def run() -> None:
        dev = PacedDevice(PROFILES["unlimited"], clock.time())
        await dev.wrote(1 << 40)
        await dev.flushed()
    asyncio.run(run())
    assert clock.sleeps == []


def test_prediction_runs_the_emulation_on_a_live_shaped_dump(tmp_path):
    """A tiny dump with the live layout (base at 0, one DIMM at 4 GiB) through monitor_model."""
    ranges = [(0, 0xA0000), (0x100000, (256 << 20) - 0x100000), (4 << 30, 128 << 20)]
    path = tmp_path / "d.tsd"
    with TsdWriter(path) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\nPAGESIZE=4096\n")
        for start, length in ranges[:2]:
            w.write_zero(start, length)
        w.write_memory(4 << 30, b"\x5a" * (1 << 20))
        w.write_zero((4 << 30) + (1 << 20), (127 << 20))
    src = DumpSource(path, ranges)
    assert src.read(4 << 30, 4) == b"\x5a" * 4 and src.read(0, 4) == bytes(4)
    src.close()
    base = sum(n for s, n in ranges[:2])
    slow = get_profile("custom:bw=10MB/s,lat=0ms,gran=1,flush=0ms")
    t = predict(path, ranges, "tsubaki", storage=slow, reboot_mem=base, boot_s=5.0, cpu_scale=None)
    k = predict(path, ranges, "dump-then-reset", storage=slow, reboot_mem=base, boot_s=5.0, cpu_scale=None)
    assert t.policy == "tsubaki" and k.policy == "dump-then-reset"  # the policy the live monitor ran
    assert t.restart_s < k.restart_s and k.restart_s == pytest.approx(k.reboot_start_s + 5.0)


def test_agent_drops_late_replies_to_earlier_commands(tmp_path):
    """A slow guest answers a timed-out ``states`` try after the next command was sent:
    that reply must not be taken for the next command's (it made a resumed monitor
    believe blocks were online; found by running test_live.py on a loaded machine)."""
    from tsubaki_forensics.live.vm import LiveError, LiveGuest

    class Writer:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.sent.append(data)

        async def drain(self) -> None:
            pass

    async def run() -> None:
        guest = LiveGuest(plan_layout(512 << 20, 256 << 20, 128 << 20, tmp_path), bzimage=Path("bz"),
                          modules=[], busybox=Path("bb"), workdir=tmp_path)
        guest._writer = Writer()
        for line in ("ok states 32:offline 33:offline", "ok states 32:offline 33:offline",
                     "ok online 32 33", "ok states 32:online 33:online", "err unknown frob"):
            guest._replies.put_nowait(line)
        assert await guest.agent("online 32 33") == "ok online 32 33"
        assert await guest.block_states() == {32: "online", 33: "online"}
        with pytest.raises(LiveError, match="unknown frob"):
            await guest.agent("frob")
        assert guest._writer.sent == [b"online 32 33\n", b"states\n", b"frob\n"]
    asyncio.run(run())
