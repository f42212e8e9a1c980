"""One live QEMU guest: the process, its QMP connection, its console and its agent.

Everything here is asyncio (``qemu.qmp`` is): the monitor awaits the panic
event, talks to the agent and watches the console while its dump runs on
worker threads.  Every wait is bounded; a failure carries the console tail.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import LiveError, TsubakiError
from ..lab.qemu import console_tail
from .guest import HELLO, build_initramfs, qemu_argv
from .layout import Layout
from .resume import AttachedProcess, read_state, write_state

__all__ = ["LiveError", "LiveGuest"]


_HELLO_RE = re.compile(r"tsk-agent hello boot=(\S+) block=([0-9a-fA-F]+)")


class LiveGuest:
    """A QEMU guest whose RAM lives in shared host files (see :mod:`.layout`)."""

    def __init__(self, layout: Layout, *, bzimage: Path, modules: list[Path], busybox: Path,
                 workdir: Path, smp: int = 2, accel: str = "tcg", log=None) -> None:
        self.layout = layout
        self.bzimage, self.modules, self.busybox = bzimage, modules, busybox
        self.workdir = Path(workdir)
        self.smp, self.accel = smp, accel
        self.log = log or (lambda msg: None)
        self.console = self.workdir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.qmp = None
        self.argv: list[str] = []
        self._sockdir = Path(tempfile.mkdtemp(prefix="tsk-live-"))
        self._panics: asyncio.Queue = asyncio.Queue()
        self._hellos: asyncio.Queue = asyncio.Queue()
        self._replies: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._writer: asyncio.StreamWriter | None = None
        self._agent_lock = asyncio.Lock()

    # -- life cycle ----------------------------------------------------------
    async def start(self) -> None:
        """Start QEMU paused, connect QMP and the agent port, learn the DIMM addresses, run."""
        from qemu.qmp import QMPClient

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.layout.ram_dir.mkdir(parents=True, exist_ok=True)
        initrd = self.workdir / "initrd.cpio"
        build_initramfs(initrd, self.busybox, self.modules)
        self.console.unlink(missing_ok=True)
        qmp_sock, agent_sock = self._sockdir / "qmp.sock", self._sockdir / "agent.sock"
        self.argv = qemu_argv(self.layout, bzimage=self.bzimage, initrd=initrd, smp=self.smp,
                              qmp=qmp_sock, agent=agent_sock, console=self.console, accel=self.accel)
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError as e:
            raise LiveError(f"{self.argv[0]} is not installed (Debian package qemu-system-x86)") from e
        # Found by whoever cleans up after a killed monitor (QEMU outlives it).
        (self.workdir / "qemu.pid").write_text(f"{self.proc.pid}\n")
        self.qmp = QMPClient("tsubaki-live")
        deadline = time.monotonic() + 30
        await self._until_listening(qmp_sock, deadline, lambda: self.qmp.connect(str(qmp_sock)))
        reader_writer = await self._until_listening(
            agent_sock, deadline, lambda: asyncio.open_unix_connection(str(agent_sock)))
        reader, self._writer = reader_writer
        self._tasks.append(asyncio.create_task(self._read_events()))
        self._tasks.append(asyncio.create_task(self._read_agent(reader)))
        devices = await self.qmp.execute("query-memory-devices")
        addrs = {d["data"]["memdev"].rsplit("/", 1)[-1]: d["data"]["addr"] for d in devices}
        self.layout.dimm_addrs = [addrs[f"dimm{i}"] for i in range(self.layout.dimms)]
        write_state(self.workdir, pid=self.proc.pid, qmp=qmp_sock, agent=agent_sock,
                    console=self.console, layout=self.layout, smp=self.smp)
        await self.qmp.execute("cont")

    @classmethod
    async def attach(cls, workdir: Path, log=None) -> LiveGuest:
        """The guest a killed monitor left running (``WORKDIR/live.json``), connected again.

        :raises LiveError: no state, QEMU gone, or its sockets do not answer.
        """
        from qemu.qmp import QMPClient

        state = read_state(Path(workdir))
        layout = Layout(base=state["base"], dimm_size=state["dimm_size"], dimms=state["dimms"],
                        ram_dir=Path(state["ram_dir"]), dimm_addrs=list(state["dimm_addrs"]))
        guest = cls(layout, bzimage=Path(), modules=[], busybox=Path(), workdir=Path(workdir),
                    smp=state["smp"], log=log)
        guest._sockdir = Path(state["qmp"]).parent
        guest.console = Path(state["console"])
        guest.proc = AttachedProcess(state["pid"])
        guest.qmp = QMPClient("tsubaki-live-resume")
        deadline = time.monotonic() + 30
        await guest._until_listening(Path(state["qmp"]), deadline, lambda: guest.qmp.connect(state["qmp"]))
        reader, guest._writer = await guest._until_listening(
            Path(state["agent"]), deadline, lambda: asyncio.open_unix_connection(state["agent"]))
        guest._tasks.append(asyncio.create_task(guest._read_events()))
        guest._tasks.append(asyncio.create_task(guest._read_agent(reader)))
        return guest

    async def agent_alive(self, timeout: float) -> float:
        """Wait until the agent answers (a guest that may still be booting); returns the wall time."""
        deadline = time.monotonic() + timeout
        while True:
            while not self._replies.empty():  # late answers to earlier tries (hellos stay queued)
                self._replies.get_nowait()
            try:
                await self.agent("states", timeout=2.0)
                return time.time()
            except LiveError:
                if time.monotonic() > deadline:
                    raise

    async def _until_listening(self, sock: Path, deadline: float, connect):
        while True:
            if self.proc.poll() is not None:
                raise LiveError(f"QEMU exited at start (status {self.proc.returncode}): {self._stderr()}")
            if sock.exists():
                try:
                    return await connect()
                except (OSError, ConnectionError):
                    pass
                except Exception as e:  # qemu.qmp ConnectError while QEMU is still starting
                    if "ConnectError" not in type(e).__name__:
                        raise
            if time.monotonic() > deadline:
                raise LiveError(f"QEMU did not open {sock.name} within 30 s")
            await asyncio.sleep(0.05)

    def _stderr(self) -> str:
        try:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        except (OSError, ValueError):
            err = ""
        return " | ".join(err.strip().splitlines()[-3:]) or "no message"

    async def stop(self) -> None:
        """Quit QEMU (killing it if it does not go) and drop the sockets."""
        for task in self._tasks:
            task.cancel()
        if self.qmp is not None:
            try:
                await asyncio.wait_for(self.qmp.execute("quit"), 5)
            except Exception:
                pass
            try:
                await self.qmp.disconnect()
            except Exception:
                pass
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None and self.proc.poll() is None:
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    async def __aenter__(self) -> LiveGuest:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- events, console -----------------------------------------------------
    async def _read_events(self) -> None:
        async for event in self.qmp.events:
            if event["event"] == "GUEST_PANICKED":
                ts = event.get("timestamp") or {}
                wall = ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6 if ts else time.time()
                await self._panics.put((wall, dict(event)))

    async def wait_panic(self, timeout: float) -> tuple[float, dict]:
        """The next GUEST_PANICKED: (wall-clock time QEMU stamped on it, the event)."""
        return await self._wait(self._panics.get(), timeout, "the guest did not panic")

    async def _wait(self, aw, timeout: float, what: str):
        try:
            return await asyncio.wait_for(aw, timeout)
        except asyncio.TimeoutError:
            if self.proc is not None and self.proc.poll() is not None:
                raise LiveError(f"QEMU exited (status {self.proc.returncode}): "
                                f"{console_tail(self.console)}") from None
            raise LiveError(f"{what} within {timeout:.0f} s: {console_tail(self.console)}") from None

    def console_size(self) -> int:
        try:
            return self.console.stat().st_size
        except OSError:
            return 0

    async def wait_console(self, marker: str, after: int, timeout: float, poll: float = 0.01) -> float:
        """Wall-clock time at which ``marker`` appeared in the console after byte ``after``."""
        deadline = time.monotonic() + timeout
        seen = after
        tail = b""
        needle = marker.encode()
        while True:
            try:
                with open(self.console, "rb") as f:
                    f.seek(seen)
                    new = f.read()
            except OSError:
                new = b""
            if new:
                tail += new
                seen += len(new)
                if needle in tail:
                    return time.time()
                tail = tail[-len(needle):]
            if self.proc.poll() is not None:
                raise LiveError(f"QEMU exited (status {self.proc.returncode}): {console_tail(self.console)}")
            if time.monotonic() > deadline:
                raise LiveError(f"no {marker!r} on the console within {timeout:.0f} s: "
                                f"{console_tail(self.console)}")
            await asyncio.sleep(poll)

    # -- agent ---------------------------------------------------------------
    async def _read_agent(self, reader: asyncio.StreamReader) -> None:
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").strip().strip("\x00")
            m = _HELLO_RE.search(line)
            if m:
                await self._hellos.put((time.time(), m.group(1), int(m.group(2), 16)))
            elif line.startswith(("ok ", "err ")):
                await self._replies.put(line)

    async def wait_hello(self, timeout: float) -> tuple[float, str, int]:
        """The agent of a (re)booted guest: (wall time, boot id, memory block size)."""
        return await self._wait(self._hellos.get(), timeout, f"no {HELLO!r} from the guest agent")

    def drop_agent_state(self) -> None:
        """Forget replies and hellos of a guest about to be reset."""
        for q in (self._replies, self._hellos):
            while not q.empty():
                q.get_nowait()

    async def agent(self, command: str, timeout: float = 60.0) -> str:
        """Send one agent command and return its reply (``ok ...``).

        Every reply names its command (``ok states ...``, ``err online ...``,
        ``err unknown CMD``).  A reply naming another command is a late answer
        to an earlier one that timed out (``agent_alive`` retries while a slow
        guest boots): it is dropped, never taken for this command's reply.

        :raises LiveError: an ``err`` reply or no reply in time.
        """
        name = (command.split() or [""])[0]
        loop = asyncio.get_running_loop()
        async with self._agent_lock:
            self._writer.write(command.encode() + b"\n")
            await self._writer.drain()
            deadline = loop.time() + timeout
            while True:
                reply = await self._wait(self._replies.get(), max(0.0, deadline - loop.time()),
                                         f"no reply to agent {command!r}")
                words = reply.split()
                if words[1:2] == [name] or words[1:3] == ["unknown", name]:
                    break
        if reply.startswith("err"):
            raise LiveError(f"guest agent: {command!r} failed: {reply}")
        return reply

    async def block_states(self) -> dict[int, str]:
        """State of every memory block in the guest (``online``/``offline``)."""
        reply = await self.agent("states")
        out = {}
        for item in reply.split()[2:]:
            n, _, state = item.partition(":")
            out[int(n)] = state
        return out

    # -- QMP -----------------------------------------------------------------
    async def execute(self, cmd: str, args: dict | None = None, timeout: float = 60.0):
        """One QMP command, bounded."""
        try:
            return await asyncio.wait_for(self.qmp.execute(cmd, args), timeout)
        except asyncio.TimeoutError:
            raise LiveError(f"QMP {cmd} did not answer within {timeout:.0f} s") from None
        except TsubakiError:
            raise
        except Exception as e:
            raise LiveError(f"QMP {cmd} failed: {e}") from e
