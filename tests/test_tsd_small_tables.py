"""Small record tables (issue 21): plain lists instead of numpy, the same dump.

Why: every real dump has hundreds to thousands of records, and importing
numpy for them cost ``analyze`` 50-80 ms and 12-17 MiB.  Tables of at most
``SMALL_TABLE`` records are tuples; the pieces, ranges and completeness of
such a dump are computed with lists.  The property here: for any dump the
writer can make (several files, overlaps, ZERO, MISSING, a memory map or
none, cut short or closed), both paths give the same records, problems,
ranges, completeness and bytes.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import TsubakiError
from tsubaki_forensics.tsd import MemoryMap, TsdWriter, open_dump
from tsubaki_forensics.tsd import reader as reader_module
from tsubaki_forensics.tsd import table as table_module

PAGE = 4096
PAGES = 48
INFO = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"


def content(first: int, count: int) -> bytes:
    """The machine's pages: every fifth page zero, so ZERO records may overlap data consistently."""
    return b"".join(bytes(PAGE) if p % 5 == 0 else bytes([p % 251 + 1]) * PAGE for p in range(first, first + count))


op = st.tuples(st.sampled_from(["memory", "memory", "zero", "missing"]), st.integers(0, PAGES - 1),
               st.integers(1, 8))
file_ops = st.lists(op, min_size=0, max_size=8)


def write(path, ops, memory_map, close, dump_id):
    w = TsdWriter(path, threads=0, memory_map=memory_map, dump_id=dump_id)
    w.write_metadata(vmcoreinfo=INFO)
    for kind, first, count in ops:
        count = min(count, PAGES - first)
        if kind == "memory":
            w.write_memory(first * PAGE, content(first, count))
        elif kind == "zero":
            w.write_zero(first * PAGE, count * PAGE)
        else:
            w.write_missing(first * PAGE, count * PAGE, f"read failed at page {first}")
    if close:
        w.close()
    else:
        w.flush()
        w._f.close()  # the writer died: no INDEX, no END (the scan path)
        w._closed = True


def observe(paths):
    """Everything a reader of the dump can see, or the error opening it raises."""
    try:
        dump = open_dump(paths)
    except TsubakiError as e:
        return ("error", type(e).__name__, str(e))
    with dump:
        mem = dump.memory
        pages = []
        for p in range(PAGES):
            try:
                pages.append(mem.read(p * PAGE, PAGE))
            except TsubakiError as e:
                pages.append(type(e).__name__)
        return (
            [list(f.records) for f in dump.files],
            [str(p) for p in dump.problems],
            list(mem.ranges()), mem.missing_ranges(), mem.missing_reasons(), mem.present_bytes, mem.zero_bytes,
            dump.completeness(), pages, [str(p) for p in dump.problems],
        )


@settings(max_examples=60, deadline=None)
@given(files=st.lists(st.tuples(file_ops, st.booleans()), min_size=1, max_size=3),
       mapped=st.one_of(st.none(), st.lists(st.tuples(st.integers(0, PAGES - 1), st.integers(1, 16)),
                                            min_size=1, max_size=3)))
def test_small_tables_read_as_the_numpy_tables(tmp_path_factory, files, mapped):
    tmp = tmp_path_factory.mktemp("small")
    memory_map = MemoryMap.from_ranges([(a * PAGE, n * PAGE) for a, n in mapped]) if mapped else None
    dump_id = uuid.uuid4()
    paths = []
    for k, (ops, close) in enumerate(files):
        paths.append(tmp / f"d{k}.tsd")
        write(paths[-1], ops, memory_map, close, dump_id)
    small = observe(paths)
    with pytest.MonkeyPatch.context() as mp:  # every table numpy-backed, as a dump of a million records
        mp.setattr(table_module, "SMALL_TABLE", -1)
        mp.setattr(reader_module, "SMALL_TABLE", -1)
        big = observe(paths)
    assert small == big


def test_a_small_table_is_tuples_and_gives_numpy_rows_on_demand(tmp_path):
    path = tmp_path / "d.tsd"
    write(path, [("memory", 0, 4), ("zero", 10, 2), ("missing", 20, 1)], None, True, uuid.uuid4())
    with open_dump(path) as dump:
        table = dump.files[0].records
        assert table.tuples is not None and len(table) >= 3
        assert [r.type for r in table] == table.rows["type"].tolist()  # the numpy view agrees
        assert list(dump.memory.ranges().starts) == [r.start for r in dump.memory.ranges()]


_PROBE = """
import sys
from tsubaki_forensics.tsd import open_dump
with open_dump(sys.argv[1]) as dump:
    dump.memory.read(0, 4096)
    list(dump.memory.ranges())
    dump.completeness()
    dump.memory.missing_ranges(), dump.memory.missing_reasons()  # MISSING records as lists too (issue 22)
print("numpy" in sys.modules)
"""


def test_reading_a_small_dump_does_not_import_numpy(tmp_path):
    path = tmp_path / "d.tsd"
    write(path, [("memory", 0, 4), ("zero", 10, 2), ("missing", 20, 1)],
          MemoryMap.from_ranges([(0, 32 * PAGE)]), True, uuid.uuid4())
    run = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


# -- big records decoded as far as reads ask (memory._Prefix, issue 21) --------------------

def test_a_big_record_is_decoded_only_as_far_as_reads_ask(tmp_path):
    from tsubaki_forensics.tsd import memory as M

    size = 3 << 20
    # compressible about 2x (zstd, not RAW), then zero pages
    data = random.Random(1).randbytes(size // 2).translate(bytes(i & 15 for i in range(256))) + bytes(size // 2)
    path = tmp_path / "big.tsd"
    w = TsdWriter(path, threads=0, dump_id=uuid.uuid4())
    w.write_metadata(vmcoreinfo=INFO)
    w.write_memory(0x100000, data)
    w.close()
    with open_dump(path) as dump:
        mem = dump.memory
        assert mem.read(0x100000, PAGE) == data[:PAGE]
        (entry,) = mem._cache.values()
        assert isinstance(entry, M._Prefix) and len(entry.out) < M.PREFIX_LIMIT + M.PREFIX_STEP
        assert mem.read(0x100000 + 100_000, 5000) == data[100_000:105_000]  # still a prefix
        assert isinstance(next(iter(mem._cache.values())), M._Prefix)
        far = size // 2 - PAGE  # the last page of the MEMORY record (ZERO pages follow)
        assert mem.read(0x100000 + far, PAGE) == data[far:far + PAGE]  # far: the whole record, once
        (entry,) = mem._cache.values()
        assert isinstance(entry, bytes) and entry == data[:size // 2] and mem.decompressed == 1
        assert mem.read(0x100000 + size - PAGE, PAGE) == bytes(PAGE)
        assert mem.read(0x100000 + 7, 3 * PAGE) == data[7:7 + 3 * PAGE]


def test_a_prefix_checks_the_frame_like_a_whole_decode():
    import zstandard

    from tsubaki_forensics.errors import FormatError
    from tsubaki_forensics.tsd import memory as M

    data = bytes(range(256)) * 8192  # 2 MiB
    frame = zstandard.ZstdCompressor(level=3).compress(data)
    p = M._Prefix(memoryview(frame), len(data))
    p.extend(PAGE)
    assert p.out[:PAGE] == data[:PAGE]
    p.extend(len(data))
    assert bytes(p.out) == data and p.dec is None
    with pytest.raises(FormatError, match="not exactly one complete zstd frame"):
        M._Prefix(memoryview(frame + b"junk"), len(data)).extend(len(data))
    with pytest.raises(FormatError, match="gave"):
        M._Prefix(memoryview(frame[:-100]), len(data)).extend(len(data))
    with pytest.raises(FormatError, match="content size"):
        M._Prefix(memoryview(frame), len(data) + 1)
