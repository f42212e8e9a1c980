"""Crafted files aimed at the reader's costs, and untrusted strings.

Each test builds one attack with the writer or the record packers (no opaque
blobs): a resync bomb (a candidate record header every 48 bytes, each
claiming a huge payload), overlapping decompression bombs, a zstd frame that
lies about its size, index loops and offsets outside the file, and task
names / log lines / properties carrying terminal escape sequences.  Every
one must end after bounded work (checked as work: bytes hashed or
decompressed; the seconds are bench/fuzz_long.py's) with a one-line message
naming an offset.
"""

from __future__ import annotations

import uuid

import zstandard

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.tsd import TsdWriter, open_dump, open_file
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.tsd.verify import verify_dump

from test_fuzz_tsd import DUMP_ID, build_sample, forge, zstd_frame

PAGE = 4096


def header_only(path) -> bytes:
    with TsdWriter(path, dump_id=DUMP_ID, threads=0) as w:
        w.write_metadata(properties={"k": "v"})
    f = open_file(path)
    first = f.records  # noqa: F841 - keep the file open for the size
    f.close()
    raw = path.read_bytes()
    return raw[:R.FILE_HEADER_SIZE]


def test_resync_bomb_is_bounded(tmp_path):
    """16 MiB of candidate headers, each claiming a payload up to the end of
    the file: unbounded, the scan would hash ~10^12 bytes."""
    path = tmp_path / "bomb.tsd"
    head = header_only(path)
    size = 16 << 20
    n = (size - len(head)) // R.RECORD_HEADER_SIZE
    size = len(head) + n * R.RECORD_HEADER_SIZE
    cands = bytearray()
    for i in range(n):
        remaining = size - len(head) - (i + 1) * R.RECORD_HEADER_SIZE
        cands += R.RECORD_HEADER.pack(R.RECORD_MAGIC, 1, 0, min(remaining, R.MAX_PAYLOAD), 0, i,
                                      DUMP_ID.bytes, 12345)
    path.write_bytes(head + bytes(cands))
    # The bound is on work, checked as work (how long it takes is bench/fuzz_long.py's)
    f = open_file(path)
    f.close()
    assert any("resynchronisation gave up at offset" in p.message for p in f.problems), f.problems
    assert f.resync_work <= f.resync_budget + R.MAX_PAYLOAD


def test_overlapping_decompression_bombs_are_bounded(tmp_path):
    """300 tiny frames each claiming 64 MiB at the same address: comparing them
    all would decompress 19 GiB; the check stops at its budget and says so."""
    path = tmp_path / "overlap.tsd"
    raw = bytearray(header_only(path))
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"\1" * R.MAX_CHUNK)
    for seq in range(300):
        raw += forge(R.RecordType.MEMORY, R.pack_memory(0, R.MAX_CHUNK, R.Codec.ZSTD) + frame, seq)
    path.write_bytes(bytes(raw))
    with open_dump(path) as dump:
        assert any("overlapping records not compared" in p.message for p in dump.problems)
        assert dump.memory.read(R.MAX_CHUNK - 1, 1) == b"\1"
        # the work done is the budget plus at most the one check that crossed it
        # (bounded as work, not seconds: the timing is bench/fuzz_long.py's)
        mem = dump.memory
        assert mem._overlap_work <= mem._overlap_budget + 2 * R.MAX_CHUNK, (mem._overlap_work, mem._overlap_budget)
        assert mem._overlap_budget < 300 * R.MAX_CHUNK  # far below comparing every frame
    assert len(path.read_bytes()) < 1 << 20


def test_zstd_frame_larger_than_declared_is_refused(tmp_path):
    """A frame whose header says 4096 bytes but whose blocks hold 1 MiB."""
    path = tmp_path / "liar.tsd"
    raw = bytearray(header_only(path))
    at = len(raw)
    liar = zstd_frame(bytes(range(256)) * 4096, claim=PAGE)
    assert zstandard.frame_content_size(liar) == PAGE
    raw += forge(R.RecordType.MEMORY, R.pack_memory(0, PAGE, R.Codec.ZSTD) + liar, 0)
    path.write_bytes(bytes(raw))
    with open_dump(path) as dump:
        try:
            dump.memory.read(0, 16)
            raise AssertionError("a lying frame was served")
        except LookupError as e:
            assert f"offset {at}" in str(e) and "\n" not in str(e)
    report = verify_dump([path])
    assert [p.offset for p in report.problems if "zstd" in p.message] == [at]


def test_index_loops_and_out_of_file_offsets_are_refused(tmp_path):
    path = tmp_path / "s.tsd"
    raw = build_sample(path)
    f = open_file(path)
    n_records = len(f.records)
    f.close()
    body = raw[:f.index_offset]
    cases = {
        "loop": [R.IndexEntry(1, 0, 128), R.IndexEntry(1, 0, 128)],
        "outside": [R.IndexEntry(1, 0, 128), R.IndexEntry(1, 0, 1 << 40)],
        "backwards": [R.IndexEntry(1, 0, 128), R.IndexEntry(1, 0, 400), R.IndexEntry(1, 0, 200)],
    }
    for name, entries in cases.items():
        at = len(body)
        bad = body + forge(R.RecordType.INDEX, R.pack_index(entries), 50)
        bad += forge(R.RecordType.END, R.pack_end(at, 51), 51)
        p = tmp_path / f"{name}.tsd"
        p.write_bytes(bad)
        g = open_file(p)
        g.close()
        msgs = [str(x) for x in g.problems if x.offset == at]
        assert msgs and "index ignored" in msgs[0] and "offset" in msgs[0], (name, g.problems)
        # the scan still finds every record of the sample
        assert len(g.records) == n_records
    # an END pointing outside the file
    p = tmp_path / "end.tsd"
    p.write_bytes(body + forge(R.RecordType.END, R.pack_end(1 << 50, 51), 51))
    g = open_file(p)
    g.close()
    assert any("outside the records" in x.message for x in g.problems)


def test_declared_sizes_beyond_the_file_are_refused_before_reading(tmp_path):
    path = tmp_path / "big.tsd"
    raw = bytearray(header_only(path))
    at = len(raw)
    rec = bytearray(forge(R.RecordType.MEMORY, R.pack_memory(0, PAGE, R.Codec.RAW) + bytes(PAGE), 0))
    rec[8:12] = (R.MAX_PAYLOAD).to_bytes(4, "little")  # claims 64 MiB, file has 4 KiB
    raw += rec
    path.write_bytes(bytes(raw))
    f = open_file(path)
    f.close()
    assert [p.offset for p in f.problems][0] == at
    assert f"{len(rec)} of {R.RECORD_HEADER_SIZE + R.MAX_PAYLOAD} bytes present" in f.problems[0].message


ESCAPES = ["\x1b[2J", "\x1b]0;owned\x07", "\x9b31m", "\x1bP+q\x1b\\", "\x07", "\x08\x08"]


def test_inspect_does_not_pass_escape_sequences(tmp_path, capsys):
    path = tmp_path / "esc.tsd"
    with TsdWriter(path, dump_id=uuid.uuid4(), threads=0) as w:
        w.write_metadata(vmcoreinfo="OSRELEASE=6.1\x1b[2J\n",
                         properties={f"k{i}\x1b[1m": e for i, e in enumerate(ESCAPES)})
        w.write_event("saved\x1b[31m", 0.1, step="region\x9b0m", label="\x1b]8;;http://x\x07")
        w.write_missing(0, PAGE, "bad\x1b[5m read")
    for fmt in ("text", "json"):
        assert main(["inspect", "--format", fmt, str(path)]) == 0
        out, err = capsys.readouterr()
        for e in ESCAPES:
            assert e not in out and e not in err
        assert "\x1b" not in out and "\x9b" not in out


def test_text_renderer_does_not_pass_escape_sequences():
    """Task names and log lines from a dump, through the text renderer."""
    import io

    from tsubaki_forensics.analysis.report import DumpSummary, Report
    from tsubaki_forensics.analysis.results import AnalysisResult, Column, Completeness, Missing, Table
    from tsubaki_forensics.render.text_renderer import render

    evil = "".join(ESCAPES) + "\u202e"
    tasks = Table.build("tasks", "Tasks", [Column("pid", "PID", int), Column("comm", "COMM", str)],
                        [(1, "init" + evil), (2, evil)])
    log = Table.build("log", "Kernel log", [Column("time", "T", float), Column("level", "L", int),
                                            Column("text", "TEXT", str)], [(0.5, 3, "oops" + evil + "\nline2" + evil)])
    frames = Table.build("frames", "bt", [Column("index", "#", int), Column("function", "F", str),
                                          Column("symbol", "S", str), Column("offset", "O", int),
                                          Column("pc", "PC", int), Column("file", "FILE", str),
                                          Column("line", "LINE", int), Column("inline", "I", bool)],
                         [(0, "f" + evil, "s" + evil, 4, 0xFFFF, "x.c" + evil, 3, False)])
    result = AnalysisResult("tasks", "Tasks", facts=(("panic", "msg" + evil),), tables=(tasks, log, frames),
                            completeness=(Completeness("tasks", 1, 2, (Missing("pid" + evil, 0x10),)),),
                            notes=("note" + evil,), error="err" + evil)
    summary = DumpSummary(paths=("d" + evil,), dump_id="id", kernel_release="6.1" + evil, build_id=None,
                          vmlinux=None, present_bytes=1, registers=True, problems=("p" + evil,))
    out = io.StringIO()
    render(Report(summary, (result,), ()), out)
    text = out.getvalue()
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text and "\x08" not in text
    assert "init" in text and "oops" in text
