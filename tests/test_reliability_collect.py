"""Faults while collecting: unreadable source memory, write errors, a full
disk (a fault-injecting file and, as root, a real 1 MiB tmpfs), and resuming
into a second file of the same dump.

What must hold after every fault: ``collect`` ends with one ``error:`` line
and exit code 3 (StorageError), the partial file opens (a valid prefix) and
its memory is the source's, and ``--resume-from`` finishes the dump so that
the two files together hold every byte of the source.  Memory that cannot be
read is recorded MISSING and reads as "not collected", never as zeros.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import numpy as np
import pytest

from monitor_model.engine import CollectParams, run_policy
from monitor_model.policies import get_policy
from monitor_model.sources import BytesSource
from monitor_model.storage import get_profile
from tsubaki_forensics.cli.app import main
from tsubaki_forensics.errors import NotCollectedError, SourceError
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.tsd import framing as writer_module  # the records' file is opened and synced there

KiB, MiB = 1 << 10, 1 << 20
SIZE = 4 * MiB


def image(size: int = SIZE, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    buf = np.zeros(size, np.uint8)
    buf[: size // 3] = rng.integers(0, 256, size // 3, dtype=np.uint8)  # incompressible
    text = b"".join(b"log line %d\n" % i for i in range(size // 32))[: size // 4]
    buf[size // 2: size // 2 + len(text)] = np.frombuffer(text, np.uint8)
    return buf.tobytes()


@pytest.fixture(scope="module")
def raw_source(tmp_path_factory):
    """A raw image with its sidecar: what ``collect IMAGE`` reads."""
    d = tmp_path_factory.mktemp("src")
    data = image()
    (d / "ram.img").write_bytes(data)
    (d / "ram.img.json").write_text(json.dumps({"vmcoreinfo": "OSRELEASE=test\nPAGESIZE=4096\n",
                                                "properties": {"boot_s": "1.0"}}))
    return d / "ram.img", data


ARGS = ["--storage", "unlimited", "--region-size", "512K", "--reboot-mem", "1M",
        "--reboot-regions", "low", "--format", "json"]


class FaultyFile:
    """A file that fails like a full or broken disk after ``limit`` bytes:
    the write that crosses the limit is partial, then raises."""

    def __init__(self, real, limit: int, err: int) -> None:
        self.real, self.limit, self.err, self.done = real, limit, err, 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        room = self.limit - self.done
        if len(data) > room:
            if room > 0:
                self.real.write(data[:room])
                self.done += room
            raise OSError(self.err, os.strerror(self.err))
        self.done += len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


def collect_with_fault(monkeypatch, capsys, src, out, limit: int, err: int = errno.ENOSPC) -> int:
    real_open = open

    def faulty_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return FaultyFile(f, limit, err) if "w" in mode else f

    monkeypatch.setattr(writer_module, "open", faulty_open, raising=False)
    try:
        return main(["collect", str(src), "-o", str(out), *ARGS])
    finally:
        monkeypatch.delattr(writer_module, "open", raising=False)


# where the disk fails, as a fraction of the complete dump, and how
FAULTS = [(0.0, errno.ENOSPC), (0.02, errno.ENOSPC), (0.2, errno.EIO), (0.45, errno.ENOSPC),
          (0.7, errno.EDQUOT), (0.9, errno.ENOSPC), (0.999, errno.EIO)]


@pytest.fixture(scope="module")
def full_size(raw_source, tmp_path_factory) -> int:
    out = tmp_path_factory.mktemp("full") / "d.tsd"
    assert main(["collect", str(raw_source[0]), "-o", str(out), *ARGS]) == 0
    return out.stat().st_size


@pytest.mark.parametrize("where,err", FAULTS)
def test_write_fault_stops_cleanly_and_resume_completes(tmp_path, monkeypatch, capsys, raw_source,
                                                        full_size, where, err):
    src, data = raw_source
    limit = max(300, int(full_size * where))
    first, second = tmp_path / "first.tsd", tmp_path / "second.tsd"
    rc = collect_with_fault(monkeypatch, capsys, src, first, limit, err)
    _, stderr = capsys.readouterr()
    assert rc == 3, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and os.strerror(err) in errors[0] and "--resume-from" in errors[0]
    assert "Traceback" not in stderr
    assert first.stat().st_size <= limit
    with open_dump(first) as dump:  # the partial dump is a valid prefix: it opens
        saved = dump.memory.ranges()
        for r in saved:
            assert dump.memory.read(r.start, r.length) == data[r.start:r.end]
    rc = main(["collect", str(src), "-o", str(second), "--resume-from", str(first), *ARGS])
    assert rc == 0, capsys.readouterr().err
    with open_dump([second, first]) as both:
        assert both.memory.read(0, SIZE) == data
        assert len({f.header.dump_id for f in both.files}) == 1
    with open_dump(second) as rest:  # the second file holds only what the first lacked
        assert rest.memory.present_bytes <= SIZE - sum(r.length for r in saved) + 8 * MiB


def test_fsync_failure_is_a_storage_error(tmp_path, monkeypatch, capsys, raw_source):
    src, _ = raw_source
    calls = {"n": 0}
    real = os.fsync

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(writer_module.os, "fsync", failing_fsync)
    out = tmp_path / "d.tsd"
    rc = main(["collect", str(src), "-o", str(out), *ARGS[:-2]])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 3 and "Input/output error" in err and "Traceback" not in err
    with open_dump(out) as dump:
        assert dump.vmcoreinfo.startswith(b"OSRELEASE=test")


def test_full_tmpfs_stops_cleanly(tmp_path, capsys, raw_source):
    """A real ENOSPC: a 1 MiB tmpfs (needs root and mount; skipped otherwise)."""
    src, data = raw_source
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mnt / "d.tsd"
        rc = main(["collect", str(src), "-o", str(out), *ARGS])
        err = capsys.readouterr().err
        assert rc == 3 and "No space left on device" in err and "Traceback" not in err
        with open_dump(out) as dump:
            assert dump.memory.present_bytes > 0
            for r in dump.memory.ranges():
                assert dump.memory.read(r.start, r.length) == data[r.start:r.end]
        rest = tmp_path / "rest.tsd"
        assert main(["collect", str(src), "-o", str(rest), "--resume-from", str(out), *ARGS]) == 0
        with open_dump([out, rest]) as both:
            assert both.memory.read(0, SIZE) == data
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


class FlakySource(BytesSource):
    """A source with unreadable spots: an I/O error, a SourceError, a short read."""

    BAD = {MiB: "eio", 2 * MiB + 64 * KiB: "source", 3 * MiB: "short"}

    def read(self, paddr: int, size: int) -> bytes:
        for bad, how in self.BAD.items():
            if paddr <= bad < paddr + size:
                if how == "eio":
                    raise OSError(errno.EIO, "Input/output error")
                if how == "source":
                    raise SourceError(f"page {bad:#x} unreadable")
                return super().read(paddr, size)[:-100]
        return super().read(paddr, size)


def test_unreadable_source_memory_is_missing_not_zero(tmp_path):
    data = image(seed=5)
    src = FlakySource(data, vmcoreinfo=b"OSRELEASE=test\n", name="flaky")
    params = CollectParams(storage=get_profile("unlimited"), region_size=512 * KiB, reboot_mem=MiB,
                           reboot_choice="low", boot_s=1.0, threads=1, fsync=False)
    run_policy(src, get_policy("tsubaki"), params, tmp_path / "d.tsd")
    with open_dump(tmp_path / "d.tsd") as dump:
        missing = dump.memory.missing_ranges()
        reasons = " ".join(r for _, _, r in dump.memory.missing_reasons())
        assert "Input/output error" in reasons and "unreadable" in reasons and "short read" in reasons
        for bad in FlakySource.BAD:
            assert any(r.start <= bad < r.end for r in missing)
            with pytest.raises(NotCollectedError):
                dump.memory.read(bad, 1)
        for r in dump.memory.ranges():  # everything else is the source's bytes
            assert dump.memory.read(r.start, r.length) == data[r.start:r.end]
        assert dump.memory.present_bytes + sum(r.length for r in missing) == SIZE


def test_resume_refuses_the_same_file_and_compare(tmp_path, raw_source, capsys):
    src, _ = raw_source
    out = tmp_path / "a.tsd"
    assert main(["collect", str(src), "-o", str(out), "--resume-from", str(out), *ARGS]) == 1
    assert main(["collect", str(src), "-o", str(out), "--resume-from", str(tmp_path / "x.tsd"),
                 "--compare", *ARGS]) == 1
    assert main(["collect", str(src), "-o", str(out), "--resume-from", str(tmp_path / "nope.tsd"),
                 *ARGS]) == 1
    assert main(["collect", str(src), "-o", str(out), *ARGS]) == 0
    other = [a if a != "512K" else "1M" for a in ARGS]  # a different region size
    assert main(["collect", str(src), "-o", str(tmp_path / "b.tsd"), "--resume-from", str(out), *other]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "Traceback" not in err
    assert "collect.region_size was '524288', now '1048576'" in err
