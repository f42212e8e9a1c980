"""Format 1.3: the MEMORY_MAP record and completeness measured against it.

The map is the first record of a file, so any prefix knows its total; files
written before 1.3 have none and their total is unknown (never 100 %).
``verify`` tells damaged (2) from incomplete (4); ``export`` refuses a dump
with no memory or no VMCOREINFO and names every missing range on stderr.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from _cli import CLI

from tsubaki_forensics.errors import FormatError
from tsubaki_forensics.tsd import MemoryMap, TsdWriter, open_dump
from tsubaki_forensics.tsd import records as R

PAGE = 4096
INFO = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"
MAP = MemoryMap.from_ranges([(0x100000, 8 * PAGE), (0x200000, 4 * PAGE)])


def run(*args):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write(path, *, memory_map=MAP, close=True, missing=False):
    """A dump of MAP: its first range written (with a zero page), the second
    written only if ``missing`` is False (else recorded MISSING)."""
    w = TsdWriter(path, threads=0, memory_map=memory_map, dump_id=uuid.UUID(int=7))
    w.write_metadata(vmcoreinfo=INFO)
    w.write_memory(0x100000, b"\x01" * 7 * PAGE + bytes(PAGE))
    if missing:
        w.write_missing(0x200000, 4 * PAGE, "read timeout")
    else:
        w.write_memory(0x200000, b"\x02" * 4 * PAGE)
    end = w.flush()
    if close:
        w.close()
    else:
        w._f.close()  # as if the writer died: no INDEX, no END
        w._closed = True
    return end


# -- the record ------------------------------------------------------------------

def test_map_round_trips_and_is_the_first_record(tmp_path):
    m = MemoryMap.from_ranges([(0x200000, 4 * PAGE), (0x100000, 4 * PAGE), (0x104000, 4 * PAGE)],
                              dump_level=1, excluded=[(0x101000, PAGE, 16)])
    assert m.ranges == ((0x100000, 8 * PAGE), (0x200000, 4 * PAGE))  # sorted, adjacent merged
    assert (m.total_bytes, m.excluded_bytes, m.expected_bytes) == (12 * PAGE, PAGE, 11 * PAGE)
    assert R.unpack_memory_map(R.pack_memory_map(m)) == m
    path = tmp_path / "d.tsd"
    write(path)
    raw = path.read_bytes()
    head = R.unpack_record_header(raw[128:176], 128)
    assert head.sequence == 0 and head.type == R.RecordType.METADATA
    kind, body = R.unpack_metadata(memoryview(raw[176:176 + head.payload_length]))
    assert kind == R.MetadataKind.MEMORY_MAP == 5 and R.unpack_memory_map(body) == MAP
    for verify in (False, True):
        with open_dump(path, verify=verify) as dump:
            assert dump.header.minor == R.FORMAT_MINOR_MAP == 3
            assert dump.memory_map == MAP and dump.problems == []


@pytest.mark.parametrize("body,message", [
    (R.MEMORY_MAP_HEAD.pack(1, 2, 0) + R.MEMORY_MAP_RANGE.pack(0, PAGE), "declares 2 ranges"),
    (R.MEMORY_MAP_HEAD.pack(1, 0xFFFFFFFF, 0), "declares 4294967295 ranges"),
    (R.MEMORY_MAP_HEAD.pack(1, 2, 0) + R.MEMORY_MAP_RANGE.pack(PAGE, PAGE) + R.MEMORY_MAP_RANGE.pack(0, PAGE),
     "out of order"),
    (R.MEMORY_MAP_HEAD.pack(1, 1, 0) + R.MEMORY_MAP_RANGE.pack(0, 0), "empty"),
    (R.MEMORY_MAP_HEAD.pack(1, 1, 1) + R.MEMORY_MAP_RANGE.pack(0, PAGE) + R.MEMORY_MAP_EXCLUDED.pack(PAGE, PAGE, 16),
     "not inside"),
    (b"\x01\x00", "too short"),
])
def test_malformed_maps_are_refused_before_anything_is_built(body, message):
    with pytest.raises(FormatError, match=message):
        R.unpack_memory_map(body)


def test_a_malformed_map_record_is_a_problem_not_a_total(tmp_path):
    path = tmp_path / "d.tsd"
    with TsdWriter(path, threads=0) as w:
        w._record(R.RecordType.METADATA, R.pack_metadata(R.MetadataKind.MEMORY_MAP, b"\x01" * 20))
        w.write_memory(0, b"\x01" * PAGE)
    for verify in (False, True):
        with open_dump(path, verify=verify) as dump:
            assert dump.memory_map is None
            assert any("MEMORY_MAP" in p.message for p in dump.problems)
            assert dump.completeness().complete is None


def test_files_of_one_dump_with_different_maps_are_refused(tmp_path):
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    write(a)
    write(b, memory_map=MemoryMap.from_ranges([(0x100000, 8 * PAGE)]))
    with pytest.raises(FormatError, match="memory map differs"):
        open_dump([a, b])


# -- completeness against the map -----------------------------------------------------

def test_every_record_boundary_prefix_is_measured_against_the_map(tmp_path):
    path = tmp_path / "d.tsd"
    write(path)
    raw = path.read_bytes()
    seen = set()
    for cut in range(129, len(raw) + 1):
        part = tmp_path / "p.tsd"
        part.write_bytes(raw[:cut])
        with open_dump(part) as dump:
            c = dump.completeness()
            present = dump.memory.present_bytes
        if c.has_map:
            assert c.expected_bytes == MAP.total_bytes
            assert c.present_bytes == present and c.present_bytes + c.missing_bytes == c.expected_bytes
            assert c.complete == (present == MAP.total_bytes)
            assert (c.percent == 100.0) == c.complete
            assert sum(g.length for g in c.gaps) == c.missing_bytes
        else:
            assert c.complete is None and c.percent is None and present == 0
        seen.add((c.has_map, present))
    assert {p for m, p in seen if m} == {0, 7 * PAGE, 8 * PAGE, 12 * PAGE}  # the zero page: a ZERO record


def test_missing_records_and_cut_files_are_named(tmp_path):
    path = tmp_path / "d.tsd"
    write(path, missing=True)
    with open_dump(path) as dump:
        c = dump.completeness()
    assert (c.complete, c.percent, c.missing_bytes) == (False, 66.666, 4 * PAGE)
    assert [(g.start, g.length, g.kind, g.reason) for g in c.gaps] == [
        (0x200000, 4 * PAGE, "unreadable", "read timeout")]
    assert c.zero_bytes == PAGE and c.data_bytes == 7 * PAGE


def test_present_bytes_outside_the_map_do_not_count(tmp_path):
    path = tmp_path / "d.tsd"
    with TsdWriter(path, threads=0, memory_map=MemoryMap.from_ranges([(0, PAGE)])) as w:
        w.write_memory(PAGE, b"\x01" * PAGE)
    with open_dump(path) as dump:
        c = dump.completeness()
    assert (c.complete, c.present_bytes, c.outside_map_bytes, c.percent) == (False, 0, PAGE, 0.0)


def test_excluded_ranges_are_not_expected(tmp_path):
    path = tmp_path / "d.tsd"
    m = MemoryMap.from_ranges([(0, 4 * PAGE)], dump_level=17, excluded=[(PAGE, 2 * PAGE, 16)])
    with TsdWriter(path, threads=0, memory_map=m) as w:
        w.write_memory(0, b"\x01" * PAGE)
        w.write_memory(3 * PAGE, b"\x01" * PAGE)
    with open_dump(path) as dump:
        c = dump.completeness()
    assert (c.complete, c.expected_bytes, c.excluded_bytes, c.dump_level) == (True, 2 * PAGE, 2 * PAGE, 17)


def test_percent_is_never_rounded_up_to_100():
    from tsubaki_forensics.tsd.completeness import _floor_percent

    assert _floor_percent(537133056 - 1, 537133056) == 99.999
    assert _floor_percent(1, 3) == 33.333


# -- files without a map (before 1.3) ---------------------------------------------------

def test_old_files_say_the_total_is_unknown(tmp_path):
    path = tmp_path / "old.tsd"
    with TsdWriter(path, threads=0) as w:
        w.write_metadata(properties={"collect.memory_bytes": str(4 * PAGE)})
        w.write_memory(0, b"\x01" * 4 * PAGE)
    with open_dump(path) as dump:
        assert dump.header.minor == R.FORMAT_MINOR and dump.memory_map is None
        c = dump.completeness()
    assert (c.complete, c.percent, c.at_most_percent, c.lower_bound_bytes) == (None, None, None, 4 * PAGE)
    assert "total is unknown" in c.reason and "lower bound" in c.reason
    info = json.loads(run("inspect", path, "--format", "json").stdout)
    assert info["status"] == "unknown" and info["memory"]["completeness_percent"] is None
    assert "total is unknown" in info["memory"]["completeness_reason"]
    assert run("inspect", path).stdout.startswith("status         UNKNOWN")
    proc = run("verify", path)
    assert proc.returncode == 0 and "completeness unknown" in proc.stdout


def test_an_old_prefix_below_its_lower_bound_is_incomplete(tmp_path):
    path = tmp_path / "old.tsd"
    with TsdWriter(path, threads=0) as w:
        w.write_metadata(properties={"collect.memory_bytes": str(4 * PAGE)})
        w.write_memory(0, b"\x01" * PAGE)
        end = w.flush()
    path.write_bytes(path.read_bytes()[:end])
    info = json.loads(run("inspect", path, "--format", "json").stdout)
    m = info["memory"]
    assert info["status"] == "incomplete" and m["completeness_percent"] is None
    assert m["completeness_at_most_percent"] == 25.0 and "lower bound" in m["completeness_reason"]
    assert run("inspect", path).stdout.startswith("status         INCOMPLETE")
    assert run("verify", path).returncode == 4


# -- verify's exit codes ---------------------------------------------------------------

def test_verify_exit_codes_complete_incomplete_damaged(tmp_path):
    whole, cut, gap, bad = (tmp_path / f"{n}.tsd" for n in ("whole", "cut", "gap", "bad"))
    write(whole)
    end = write(cut, close=False)
    cut.write_bytes(cut.read_bytes()[:end - 1])  # ends inside the last record
    write(gap, missing=True)
    write(bad)
    raw = bytearray(bad.read_bytes())
    raw[-200] ^= 1  # inside the INDEX: a damaged record
    bad.write_bytes(raw)
    expect = {whole: (0, "ok"), cut: (4, "incomplete"), gap: (4, "incomplete"), bad: (2, "damaged")}
    for path, (code, status) in expect.items():
        proc = run("verify", path, "--format", "json")
        data = json.loads(proc.stdout)
        assert (proc.returncode, data["status"]) == (code, status), (path.name, proc.stderr)
        assert proc.stderr.count("\n") == (0 if code == 0 else 1)
    text = run("verify", gap).stdout
    assert "INCOMPLETE" in text and "missing: physical 0x200000-0x204000" in text
    help_text = run("verify", "--help").stdout
    assert "4 INCOMPLETE" in help_text.replace("\n", " ") and "2 DAMAGED" in help_text.replace("\n", " ")


def test_inspect_says_incomplete_first(tmp_path):
    path = tmp_path / "d.tsd"
    end = write(path, close=False)
    path.write_bytes(path.read_bytes()[:end - 60])
    first = run("inspect", path).stdout.splitlines()[0]
    assert first.startswith("status         INCOMPLETE") and "no footer" in first


# -- export ----------------------------------------------------------------------------------

def test_export_refuses_a_prefix_with_no_memory(tmp_path):
    path, out = tmp_path / "d.tsd", tmp_path / "out.elf"
    write(path)
    path.write_bytes(path.read_bytes()[:300])  # the map, no VMCOREINFO, no memory
    with open_dump(path) as dump:
        assert dump.memory_map == MAP and dump.vmcoreinfo is None
    proc = run("export", path, "-o", out)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no memory" in proc.stderr
    assert not out.exists()


def test_export_refuses_a_dump_without_vmcoreinfo(tmp_path):
    path, out = tmp_path / "d.tsd", tmp_path / "out.elf"
    with TsdWriter(path, threads=0, memory_map=MAP) as w:
        w.write_memory(0x100000, b"\x01" * PAGE)
    proc = run("export", path, "-o", out)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no VMCOREINFO" in proc.stderr
    assert not out.exists()


def test_export_of_a_partial_dump_names_every_gap_on_stderr(tmp_path):
    path, out = tmp_path / "d.tsd", tmp_path / "out.elf"
    write(path, missing=True)
    proc = run("export", path, "-o", out)
    assert proc.returncode == 0 and out.exists()
    assert "problem:" not in proc.stdout and "missing:" not in proc.stdout
    assert "missing: physical 0x200000-0x204000" in proc.stderr and "read timeout" in proc.stderr
    assert "INCOMPLETE" in proc.stdout
    data = json.loads(run("export", path, "-o", out, "--force", "--format", "json").stdout)
    assert data["complete"] is False and data["missing_bytes"] == 4 * PAGE
