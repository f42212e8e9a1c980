"""The live monitor's driver without QEMU: every live policy through the one protocol loop.

Why: the live monitor now runs the policies of ``monitor_model.policies``
through :func:`monitor_model.protocol.protocol` (issue 17), so a policy the
emulation runs also runs live.  A fake guest stands in for QEMU and its agent
and behaves as the real one does to memory: the reset rewrites the base RAM
(the rebooted kernel boots in it) and onlining a DIMM rewrites that DIMM (the
guest uses it).  So a dump equal to the RAM files copied at the panic proves
the policy gave the guest nothing before it was saved, as
``tests/test_live.py`` proves it on a real guest (``realkernel``, minutes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from monitor_model.policies import TsubakiPolicy
from monitor_model.results import HandbackSafetyError
from tsubaki_forensics.errors import TsubakiError
from tsubaki_forensics.live import monitor
from tsubaki_forensics.live.layout import BLOCK, plan_layout
from tsubaki_forensics.live.monitor import LIVE_POLICIES, LiveParams, live_policy, run_protocol
from tsubaki_forensics.live.notice import Notice
from tsubaki_forensics.live.resume import resume_state
from tsubaki_forensics.tsd import open_dump

MiB = 1 << 20
VMCOREINFO = b"OSRELEASE=6.1.0-fake\nPAGESIZE=4096\n"


class FakeGuest:
    """QEMU + agent as the live monitor sees them, over real (sparse) RAM files."""

    smp = 2

    def __init__(self, tmp: Path) -> None:
        self.layout = plan_layout(448 * MiB, 192 * MiB, 128 * MiB, tmp)
        self.layout.dimm_addrs = [(4 << 30) + i * 128 * MiB for i in range(2)]
        for piece in self.layout.pieces():
            size = self.layout.base if piece.name == "base" else self.layout.dimm_size
            with open(piece.path, "wb") as f:
                f.truncate(size)
                for k in range(4):  # a few non-zero MiB in each file, different per file
                    f.seek(k * (size // 4) + 8 * MiB)
                    f.write(os.urandom(MiB))
        self.online = {b for p in self.layout.dimm_pieces() for b in p.blocks}  # normal operation
        self.up = asyncio.Event()
        self.resets = 0
        self.commands: list[str] = []

    def _scribble(self, path: Path, at: int) -> None:
        """What a running kernel does to memory it owns: writes over it."""
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(b"\xee" * MiB)

    def offline_all(self) -> None:  # the panic: the rebooted kernel will see the DIMMs offline
        self.online.clear()

    # -- QMP ---------------------------------------------------------------
    async def execute(self, cmd: str, args: dict | None = None, timeout: float = 60.0):
        self.commands.append(cmd)
        if cmd == "system_reset":
            self.resets += 1
            self._scribble(self.layout.base_path(), 8 * MiB)  # firmware + kernel boot in the base RAM
        elif cmd == "cont":
            self.up.set()
        return {}

    def drop_agent_state(self) -> None:
        pass

    def console_size(self) -> int:
        return 0

    async def wait_console(self, marker: str, after: int, timeout: float) -> float:
        await self.up.wait()
        return time.time()

    async def wait_hello(self, timeout: float):
        await self.up.wait()
        return time.time(), "boot-2", BLOCK

    async def agent_alive(self, timeout: float) -> float:
        return time.time()

    async def wait_panic(self, timeout: float):
        await asyncio.Event().wait()  # the rebooted guest never panics here

    # -- agent -------------------------------------------------------------
    async def agent(self, command: str, timeout: float = 60.0) -> str:
        self.commands.append(command)
        verb, *blocks = command.split()
        assert verb == "online"
        for piece in self.layout.dimm_pieces():
            if set(piece.blocks) & {int(b) for b in blocks}:
                self._scribble(piece.path, 8 * MiB)  # the guest puts pages there at once
        self.online.update(int(b) for b in blocks)
        return f"ok online {' '.join(blocks)}"

    async def block_states(self) -> dict[int, str]:
        dimm_blocks = {b for p in self.layout.dimm_pieces() for b in p.blocks}
        return {b: "online" if b in self.online else "offline" for b in sorted(dimm_blocks)}


@pytest.fixture
def guest(tmp_path, monkeypatch) -> FakeGuest:
    async def notice(_guest, timeout: float = 30.0) -> Notice:
        return Notice(vmcoreinfo=VMCOREINFO, notes=None)

    monkeypatch.setattr(monitor, "fetch_notice", notice)
    ram = tmp_path / "ram"
    ram.mkdir()
    return FakeGuest(ram)


def _panic(guest: FakeGuest, ref: Path):
    def copy() -> None:
        guest.offline_all()
        for piece in guest.layout.pieces():
            shutil.copyfile(piece.path, ref / piece.path.name)
    return copy


def _run(guest, out, policy, ref, **kw):
    params = LiveParams(policy=policy if isinstance(policy, str) else "tsubaki", fsync=False)
    return asyncio.run(run_protocol(guest, out, params, time.time(), on_panic=_panic(guest, ref),
                                    policy=None if isinstance(policy, str) else policy, **kw))


def _assert_dump_is_the_panic(guest, out, ref):
    dump = open_dump([out])
    assert dump.problems == [] and dump.vmcoreinfo == VMCOREINFO
    for piece in guest.layout.pieces():
        data = (ref / piece.path.name).read_bytes()
        for start, length in piece.ranges:
            off = start - piece.file_base
            assert dump.memory.read(start, length) == data[off:off + length], piece.name
    return dump


def test_live_policies_are_the_emulations_own():
    # the live monitor runs collect's policies (the monitor's own writer), not a list of its own
    assert {"tsubaki", "dump-then-reset", "reboot-only"} <= set(LIVE_POLICIES)
    assert "kdump" not in LIVE_POLICIES and "kdump-full" not in LIVE_POLICIES
    with pytest.raises(TsubakiError, match="capture kernel"):
        live_policy("kdump")
    with pytest.raises(TsubakiError, match="unknown policy"):
        live_policy("no-such-policy")


@pytest.mark.parametrize("policy", ["tsubaki", "dump-then-reset"])
def test_dumping_policies_give_back_only_what_is_saved(guest, tmp_path, policy):
    ref = tmp_path / "ref"
    ref.mkdir()
    out = tmp_path / "live.tsd"
    result = _run(guest, out, policy, ref)
    dump = _assert_dump_is_the_panic(guest, out, ref)
    assert guest.resets == 1 and all(s == "online" for s in asyncio.run(guest.block_states()).values())
    assert result.order == policy and dump.properties["live.order"] == policy
    kinds = [(e.kind, e.fields.get("step") or e.fields.get("region")) for e in dump.events]
    reboot = kinds.index(("reboot_start", None))
    saved = [kinds.index(("saved", p.name)) for p in guest.layout.pieces()]
    if policy == "tsubaki":  # base saved, reset, then the DIMMs
        assert saved[0] < reboot < min(saved[1:])
        assert all(p.online_s >= p.saved_s for p in result.pieces[1:])
    else:  # everything saved, then the reset, then all DIMMs at once
        assert max(saved) < reboot
        assert [c for c in guest.commands if c.startswith("online")] == [
            "online " + " ".join(str(b) for p in guest.layout.dimm_pieces() for b in p.blocks)]


class PanicsAgainGuest(FakeGuest):
    """The rebooted guest panics as soon as it has been given its first DIMM back."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.panicked = asyncio.Event()

    async def agent(self, command: str, timeout: float = 60.0) -> str:
        answer = await super().agent(command, timeout)
        self.panicked.set()
        return answer

    async def wait_panic(self, timeout: float):
        await self.panicked.wait()
        return time.time(), {}


def test_a_second_panic_while_the_hand_back_waits_is_in_the_dump(tmp_path, monkeypatch):
    """The rebooted guest panics while the hand-back waits for the next saved DIMM (not for
    the agent): the dump still records ``panic_again`` before it closes.  The last DIMM is held
    until the panic, so the order is certain (CI caught the event lost under load)."""
    async def notice(_guest, timeout: float = 30.0) -> Notice:
        return Notice(vmcoreinfo=VMCOREINFO, notes=None)

    monkeypatch.setattr(monitor, "fetch_notice", notice)
    (tmp_path / "ram").mkdir()
    guest = PanicsAgainGuest(tmp_path / "ram")
    real = monitor._Run.write

    async def write(self, step, todo):
        if self.label(step) == self.layout.dimm_pieces()[-1].name:
            await asyncio.wait({self.second})
        await real(self, step, todo)

    monkeypatch.setattr(monitor._Run, "write", write)
    ref = tmp_path / "ref"
    ref.mkdir()
    out = tmp_path / "live.tsd"
    result = _run(guest, out, "tsubaki", ref)
    dump = _assert_dump_is_the_panic(guest, out, ref)
    assert result.panicked_again_s is not None
    (again,) = [e for e in dump.events if e.kind == "panic_again"]
    assert again.fields["at"] == pytest.approx(result.panicked_again_s, abs=1e-5)
    # only the first DIMM went back: the paused guest gets nothing more
    assert [c for c in guest.commands if c.startswith("online")] == [
        f"online {' '.join(map(str, guest.layout.dimm_pieces()[0].blocks))}"]


def test_reboot_only_runs_live_and_saves_the_notice_only(guest, tmp_path):
    """A policy the live monitor never had (it knew two orders): it runs through the same loop."""
    ref = tmp_path / "ref"
    ref.mkdir()
    out = tmp_path / "live.tsd"
    result = _run(guest, out, "reboot-only", ref)
    dump = open_dump([out])
    assert dump.vmcoreinfo == VMCOREINFO and dump.memory.ranges() == []
    assert guest.resets == 1 and result.order == "reboot-only"
    assert all(s == "online" for s in asyncio.run(guest.block_states()).values())


class Reverse(TsubakiPolicy):
    """A policy registered nowhere: the reboot set, then the rest in reverse address order."""

    name = "tsubaki-reverse"

    def steps(self, ctx):
        first = len(ctx.reboot_set)
        plan = super().steps(ctx)
        return plan[:first] + plan[first:][::-1]


def test_a_new_policy_runs_live_as_in_the_emulation(guest, tmp_path):
    """The same policy object runs in ``collect``'s emulation and on the (fake) live guest."""
    from monitor_model.engine import CollectParams, run_policy
    from monitor_model.sources import BytesSource
    from monitor_model.storage import get_profile

    source = BytesSource(os.urandom(MiB) + bytes(3 * MiB), vmcoreinfo=VMCOREINFO, name="small")
    params = CollectParams(region_size=MiB, reboot_mem=MiB, reboot_choice="low", boot_s=1.0, fsync=False,
                           threads=1, storage=get_profile("unlimited"))
    emulated = run_policy(source, Reverse(), params, tmp_path / "emulated.tsd")
    assert [s["label"] for s in emulated.steps] == ["region 0", "region 3", "region 2", "region 1"]
    assert emulated.unsafe_handbacks == [] and emulated.policy == "tsubaki-reverse"

    ref = tmp_path / "ref"
    ref.mkdir()
    out = tmp_path / "live.tsd"
    result = _run(guest, out, Reverse(), ref)
    dump = _assert_dump_is_the_panic(guest, out, ref)
    order = [e.fields["step"] for e in dump.events if e.kind == "saved"]
    assert order == ["base", "dimm1", "dimm0"] and result.order == "tsubaki-reverse"


def test_an_eager_policy_is_stopped_before_the_guest_gets_unsaved_memory(guest, tmp_path):
    """Hand back on *written* (before the flush): the emulation's strict engine refuses it,
    and so does the live driver, before the agent is asked to online anything."""
    class Eager(TsubakiPolicy):
        name = "eager"

        def on_written(self, ctx, step):
            if ctx.rebooted and step.region is not None and step.region not in ctx.handed_back:
                ctx.hand_back(ctx.machine.regions[step.region])

    ref = tmp_path / "ref"
    ref.mkdir()
    with pytest.raises(HandbackSafetyError, match="before its dump is durable"):
        _run(guest, tmp_path / "live.tsd", Eager(), ref)
    assert not any(c.startswith("online") for c in guest.commands)


def test_resume_reads_the_earlier_file_with_the_emulations_reader(guest, tmp_path, monkeypatch):
    """A monitor killed after the reset: the rest goes to a second file, the guest is not reset again."""
    ref = tmp_path / "ref"
    ref.mkdir()
    first, rest = tmp_path / "first.tsd", tmp_path / "rest.tsd"

    class Killed(Exception):
        pass

    real = monitor._Run.write

    async def write(self, step, todo):  # die while writing the first DIMM
        if step.region == 1:
            self.writer.flush(False)
            raise Killed
        await real(self, step, todo)

    monkeypatch.setattr(monitor._Run, "write", write)
    with pytest.raises(Killed):
        _run(guest, first, "tsubaki", ref)
    monkeypatch.setattr(monitor._Run, "write", real)
    state = resume_state([first])
    assert state.rebooted and state.policy == "tsubaki" and "base" in state.saved
    params = LiveParams(policy=state.policy, fsync=False)
    result = asyncio.run(run_protocol(guest, rest, params, state.panic_wall, resume=state))
    assert guest.resets == 1  # attached to the running guest, never reset twice
    assert not any(e.kind == "reboot_start" for e in open_dump([rest]).events)
    whole = open_dump([first, rest])
    assert whole.dump_id == state.dump_id and any(e.kind == "resumed" for e in whole.events)
    for piece in guest.layout.pieces():
        data = (ref / piece.path.name).read_bytes()
        for start, length in piece.ranges:
            off = start - piece.file_base
            assert whole.memory.read(start, length) == data[off:off + length], piece.name
    assert {p.name for p in result.pieces if p.online_s is not None} == {"dimm0", "dimm1"}


def test_triage_policy_saves_what_the_planner_found_first(guest, tmp_path):
    """``tsubaki-triage`` live: the planner reads the paused guest's memory (a
    :class:`GuestMemory`, as the drgn planner does) and its ranges, in base RAM and in a DIMM,
    are saved before anything else; the rest as ``tsubaki``."""
    from monitor_model.policies import Step
    from tsubaki_forensics.live.memory import GuestMemory

    dimm1 = guest.layout.dimm_pieces()[1].ranges[0][0]
    seen = []

    def planner(memory: GuestMemory):
        seen.append(memory.read(8 * MiB, 16))  # the crashed kernel's bytes, before any reset
        return [Step("triage: a stack", ((dimm1 + 8 * MiB, 64 << 10),)),
                Step("triage: kernel data", ((16 * MiB, 2 * MiB),))], ["a note"]

    ref = tmp_path / "ref"
    ref.mkdir()
    out = tmp_path / "live.tsd"
    said: list[str] = []
    asyncio.run(run_protocol(guest, out, LiveParams(policy="tsubaki-triage", fsync=False), time.time(),
                             on_panic=_panic(guest, ref), triage=planner, progress=said.append))
    assert seen == [(ref / "base.ram").read_bytes()[8 * MiB:8 * MiB + 16]]
    assert "triage: a note" in said
    dump = _assert_dump_is_the_panic(guest, out, ref)
    order = [e.fields["step"] for e in dump.events if e.kind == "saved"]
    assert order == ["triage: a stack", "triage: kernel data", "base", "dimm0", "dimm1"]


def test_guest_memory_reads_across_pieces_and_refuses_holes(guest):
    from tsubaki_forensics.errors import SourceError
    from tsubaki_forensics.live.memory import GuestMemory

    mem = GuestMemory(guest.layout, vmcoreinfo=VMCOREINFO, notes=None)
    try:
        base = guest.layout.base_path().read_bytes()
        assert mem.read(8 * MiB, 4096) == base[8 * MiB:8 * MiB + 4096]
        d0, d1 = (p.ranges[0][0] for p in guest.layout.dimm_pieces())
        tail = guest.layout.dimm_path(0).read_bytes()[-4096:]
        head = guest.layout.dimm_path(1).read_bytes()[:4096]
        assert mem.read(d1 - 4096, 8192) == tail + head  # DIMMs are adjacent: one read spans two files
        with pytest.raises(SourceError):
            mem.read(0xA0000, 16)  # the legacy hole is not guest memory
    finally:
        mem.close()


def test_monitor_cli_takes_a_policy_and_refuses_kdump_in_one_line():
    from _cli import run_cli

    bad = run_cli("monitor", "--policy", "kdump", ok=False)
    assert bad.returncode != 0 and "tsubaki" in bad.stderr and "dump-then-reset" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    old = run_cli("monitor", "--order", "no-such", ok=False)  # the old option name still parses
    assert old.returncode != 0 and "--policy 'no-such'" in old.stderr
