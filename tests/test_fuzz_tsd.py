"""Fuzz the ``.tsd`` reader and every command that opens a file.

A small but complete dump is built with the writer, then hypothesis damages
it: bit flips, truncation, inserted bytes, copied records, and *forged*
records (sound checksums around hostile payloads: zstd bombs, huge lengths,
index loops, unknown types), so the fuzzer gets past the checksum and
exercises the decoders.  Whatever the input, the library may only raise a
:class:`TsubakiError` with a one-line message, every read of memory either
returns the right number of bytes or raises :class:`NotCollectedError`
(the long run also holds each example under ``SLOW_S``).  The commands (``inspect``,
``verify``, ``export``, ``analyze``) run in-process through ``cli.app.main``,
which re-raises anything but a handled error, so a traceback fails the test.

Short by default (CI); ``TSUBAKI_FUZZ_EXAMPLES`` makes it long
(bench/fuzz_long.py), and ``TSUBAKI_FUZZ_STATS`` names a JSON-lines file
where each test appends its execution count and slowest example.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
import uuid
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import NotCollectedError, TsubakiError
from tsubaki_forensics.tsd import TsdWriter, open_dump
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.tsd.verify import verify_dump

PAGE = 4096
EXAMPLES = int(os.environ.get("TSUBAKI_FUZZ_EXAMPLES", "0")) or None
# No example may take longer than this in the long run (bench/fuzz_long.py sets
# TSUBAKI_FUZZ_EXAMPLES): a benchmark criterion, so not checked in CI, where the
# costs are bounded as work instead (test_reliability_hostile.py) (issue 23).
SLOW_S = 10.0 if EXAMPLES else None
DUMP_ID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")


def fuzz_settings(default: int):
    return settings(max_examples=EXAMPLES or default, deadline=None, derandomize=EXAMPLES is None,
                    suppress_health_check=list(HealthCheck), database=None)


class Stats:
    """Counts executions and the slowest one, for docs/RELIABILITY.md."""

    def __init__(self, name: str) -> None:
        self.name, self.runs, self.slowest, self.errors = name, 0, 0.0, 0

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        took = time.perf_counter() - self.t0
        self.runs += 1
        self.slowest = max(self.slowest, took)
        if SLOW_S is not None:
            assert took < SLOW_S, f"{self.name}: one example took {took:.1f} s"

    def save(self) -> None:
        out = os.environ.get("TSUBAKI_FUZZ_STATS")
        if out:
            with open(out, "a") as f:
                f.write(json.dumps({"test": self.name, "executions": self.runs,
                                    "handled_errors": self.errors,
                                    "slowest_s": round(self.slowest, 3)}) + "\n")


def build_sample(path: Path) -> bytes:
    """A closed dump with every record type: metadata, memory (zstd and raw),
    zero pages, a missing range, events."""
    rng = random.Random(3)
    with TsdWriter(path, dump_id=DUMP_ID, chunk_size=2 * PAGE, threads=0) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\nPAGESIZE=4096\n", notes=b"\0" * 24,
                         properties={"kernel_release": "6.1.0", "source": "fuzz"})
        w.write_event("panic_notice", 0.0, cpus=2)
        w.write_memory(0, rng.randbytes(PAGE // 4) * 4 + bytes(PAGE) + rng.randbytes(PAGE))
        w.write_missing(8 * PAGE, PAGE, "read error")
        w.write_memory(16 * PAGE, b"task\x1b[31mred\n" * 300)
        w.write_event("saved", 0.5, step="region 0")
    return path.read_bytes()


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> bytes:
    return build_sample(tmp_path_factory.mktemp("fuzz") / "sample.tsd")


def forge(rtype: int, payload: bytes, seq: int, flags: int = 0, dump_id: uuid.UUID = DUMP_ID) -> bytes:
    """A record with a sound checksum around whatever payload."""
    return b"".join(bytes(p) for p in R.pack_record(rtype, flags, seq, dump_id, payload))


def zstd_frame(content: bytes, claim: int | None = None) -> bytes:
    """A zstd frame of ``content``; ``claim`` rewrites its declared content size."""
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(content)
    if claim is not None:  # the 4-byte FCS field sits right after magic + descriptor (+ window)
        desc = frame[4]
        fcs_size = (0, 2, 4, 8)[desc >> 6]
        single = desc & 0x20
        at = 5 + (0 if single else 1)
        if fcs_size == 0 and single:
            fcs_size = 1
        if fcs_size:
            value = claim - (256 if fcs_size == 2 else 0)
            frame = frame[:at] + (value % (1 << (8 * fcs_size))).to_bytes(fcs_size, "little") + \
                frame[at + fcs_size:]
    return frame


# -- hostile payloads a fuzzer would rarely guess --------------------------------
_u64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, PAGE, 2**63, 2**64 - 1,
                                                              R.MAX_CHUNK, R.MAX_CHUNK + 1]))
_memory_payload = st.builds(
    lambda paddr, length, codec, body: R.MEMORY_PREFIX.pack(paddr, length, codec) + body,
    _u64.map(lambda v: v % (1 << 40)), st.sampled_from([1, PAGE, 64 * PAGE, R.MAX_CHUNK, R.MAX_CHUNK + 1, 0]),
    st.integers(0, 3),
    st.one_of(
        st.binary(max_size=64),
        st.builds(lambda n, c: zstd_frame(bytes(n), c), st.integers(1, 1 << 20),
                  st.one_of(st.none(), st.integers(1, 1 << 20))),
        st.builds(lambda n: zstd_frame(bytes(n)) + b"trailing", st.integers(1, 4096)),
        st.builds(lambda n: zstd_frame(bytes(n))[:-3], st.integers(1, 4096)),
    ))
_index_payload = st.builds(
    lambda entries: R.pack_index([R.IndexEntry(*e) for e in entries]),
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 1), st.integers(0, 1 << 16),
                       _u64.map(lambda v: v % (1 << 40)), st.integers(0, 1 << 30)), max_size=8))
_payload = st.one_of(
    st.tuples(st.just(R.RecordType.MEMORY), _memory_payload),
    st.tuples(st.sampled_from([R.RecordType.ZERO, R.RecordType.MISSING]),
              st.builds(lambda a, n, t: R.RANGE_PAYLOAD.pack(a, n) + t, _u64, _u64, st.binary(max_size=16))),
    st.tuples(st.just(R.RecordType.METADATA),
              st.builds(lambda k, d: R.METADATA_PREFIX.pack(k) + d, st.integers(0, 5),
                        st.one_of(st.binary(max_size=32), st.just(b'{"kernel_release": 5}'),
                                  st.just(b'{"source": "other"}')))),
    st.tuples(st.just(R.RecordType.EVENT),
              st.builds(lambda t, b: struct.pack("<d", t) + b, st.floats(allow_nan=True),
                        st.one_of(st.binary(max_size=32), st.just(b'{"kind": 1}'),
                                  st.just(b'{"kind": "x\\u001b[2J", "fields": {"a": [1]}}')))),
    st.tuples(st.just(R.RecordType.INDEX), _index_payload),
    st.tuples(st.just(R.RecordType.END), st.builds(R.END_PAYLOAD.pack, st.integers(0, 1 << 16),
                                                   st.integers(0, 1 << 20))),
    st.tuples(st.integers(8, 0xFFFF), st.binary(max_size=32)),
)


def _pos(draw, n: int) -> int:
    """A position in 0..n, spread evenly (hypothesis favours small integers,
    which would put most damage in the file header)."""
    return draw(st.integers(0, 2**32)) % (n + 1) if n > 0 else 0


@st.composite
def damage(draw, raw: bytes) -> bytes:
    """Apply 1-4 random kinds of damage to ``raw``."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "copy", "forge", "forge_tail",
                                     "footer", "zero"]))
        n = max(len(data), 1)
        if kind == "flip":
            pos = _pos(draw, n - 1)
            if pos < len(data):
                data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[_pos(draw, n):]
        elif kind == "insert":
            pos = _pos(draw, n)
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "zero":
            pos = _pos(draw, n)
            data[pos:pos + draw(st.integers(1, 256))] = bytes(draw(st.integers(1, 256)))
        elif kind == "copy":
            a = _pos(draw, n)
            b = _pos(draw, n)
            data[b:b] = data[a:a + draw(st.integers(1, 2048))]
        elif kind in ("forge", "forge_tail"):
            rtype, payload = draw(_payload)
            rec = forge(rtype, payload, draw(st.integers(0, 40)), draw(st.integers(0, 3)),
                        draw(st.sampled_from([DUMP_ID, DUMP_ID, uuid.UUID(int=1)])))
            pos = n if kind == "forge_tail" else _pos(draw, n)
            data[pos:pos] = rec
        else:  # a forged footer: INDEX (maybe looping/out of file) + END
            _, index = draw(st.tuples(st.just(0), _index_payload))
            at = len(data)
            data += forge(R.RecordType.INDEX, index, 50)
            data += forge(R.RecordType.END, R.END_PAYLOAD.pack(draw(st.sampled_from(
                [at, 0, 128, at + 1, 2**63])), 51), 51)
    return bytes(data)


def one_line(e: BaseException) -> None:
    assert str(e) and "\n" not in str(e), f"not a one-line error: {e!r}"


def exercise(path: Path, stats: Stats) -> None:
    """Open, read every byte the dump claims, verify: only handled errors."""
    for verify in (False, True):
        try:
            dump = open_dump(path, verify=verify)
        except TsubakiError as e:
            stats.errors += 1
            one_line(e)
            continue
        with dump:
            assert isinstance(dump.properties, dict)
            [str(p) for p in dump.problems]
            for r in dump.memory.ranges()[:64]:
                for addr in range(r.start, r.end, 1 << 20):
                    size = min(1 << 20, r.end - addr)
                    try:
                        assert len(dump.memory.read(addr, size)) == size
                    except NotCollectedError as e:
                        one_line(e)
                    if addr - r.start > 8 << 20:
                        break  # a forged ZERO range may claim 2^64 bytes
            dump.memory.missing_ranges()
    try:
        report = verify_dump([path])
        [str(p) for p in report.problems]
    except TsubakiError as e:
        one_line(e)


@fuzz_settings(400)
@given(data=st.data())
def test_reader_survives_damaged_and_forged_files(sample, tmp_path_factory, data):
    stats = _STATS.setdefault("reader", Stats("reader"))
    path = tmp_path_factory.mktemp("f", numbered=True) / "x.tsd"
    path.write_bytes(data.draw(damage(sample)))
    with stats:
        exercise(path, stats)


@fuzz_settings(60)
@given(data=st.data())
def test_commands_survive_damaged_files(sample, tmp_path_factory, data, capsys):
    """``inspect``, ``verify``, ``export`` and ``analyze`` end with an exit code, never a traceback."""
    from tsubaki_forensics.cli.app import main

    stats = _STATS.setdefault("commands", Stats("commands"))
    d = tmp_path_factory.mktemp("c", numbered=True)
    path = d / "x.tsd"
    path.write_bytes(data.draw(damage(sample)))
    command = data.draw(st.sampled_from([
        ["inspect", str(path)], ["inspect", "--format", "json", str(path)], ["verify", str(path)],
        ["export", str(path), "-o", str(d / "out.elf")],
        ["analyze", "--self-contained", str(path)], ["analyze", "--format", "json", str(path)],
    ]))
    with stats:
        rc = main(command)
    out, err = capsys.readouterr()
    assert isinstance(rc, int)
    stats.errors += rc != 0  # exit codes: 1 bad input, 2 verify found damage, 4/5 analyze
    assert "Traceback" not in err
    for line in err.splitlines():
        if line.startswith("error:"):
            assert "\x1b" not in line
    assert "\x1b" not in out


_STATS: dict[str, Stats] = {}


@pytest.fixture(scope="module", autouse=True)
def _save_stats():
    yield
    for s in _STATS.values():
        s.save()
