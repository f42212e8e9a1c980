"""Several files of one dump: merged in any order; identical overlaps are fine,
conflicting overlaps name both records; files of other dumps are refused."""

from __future__ import annotations

import itertools
import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsubaki_forensics.errors import ConflictError, FormatError, NotCollectedError
from tsubaki_forensics.tsd import TsdWriter, open_dump

PAGE = 4096


def memory_image(seed, pages=48):
    rng = random.Random(seed)
    out = bytearray()
    for _ in range(pages):
        out += rng.choice([bytes(PAGE), rng.randbytes(PAGE), bytes([rng.randrange(1, 256)]) * PAGE])
    return bytes(out)


def write_parts(tmp_path, image, cuts, dump_id, overlap_pages=0):
    """Split ``image`` at page ``cuts`` into files; neighbours overlap by some pages."""
    paths = []
    edges = [0, *cuts, len(image) // PAGE]
    for i, (a, b) in enumerate(itertools.pairwise(edges)):
        a = max(0, a - overlap_pages)
        path = tmp_path / f"part{i}.tsd"
        with TsdWriter(path, dump_id=dump_id, chunk_size=4 * PAGE, threads=0) as w:
            if i == 0:
                w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\n", properties={"part": "first"})
            else:
                w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\n")
            w.write_event("region-saved", float(i), index=i)
            w.write_memory(a * PAGE, image[a * PAGE:b * PAGE])
        paths.append(path)
    return paths


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), cuts=st.lists(st.integers(1, 47), min_size=1, max_size=4, unique=True),
       overlap=st.integers(0, 5), order=st.randoms())
def test_files_merge_in_any_order(tmp_path, seed, cuts, overlap, order):
    image = memory_image(seed)
    did = uuid.uuid4()
    paths = write_parts(tmp_path, image, sorted(cuts), did, overlap)
    shuffled = paths[:]
    order.shuffle(shuffled)
    with open_dump(shuffled) as a, open_dump(paths) as b:
        assert a.dump_id == did
        assert a.problems == []
        assert a.memory.read(0, len(image)) == image
        assert a.memory.ranges() == b.memory.ranges()
        assert [(e.kind, e.fields) for e in a.events] == [
            ("region-saved", {"index": i}) for i in range(len(paths))]
        assert a.properties == {"part": "first"}
        assert a.vmcoreinfo == b"OSRELEASE=6.1.0\n"


def test_conflicting_overlap_names_both_records(tmp_path):
    did = uuid.uuid4()
    one, two = tmp_path / "one.tsd", tmp_path / "two.tsd"
    with TsdWriter(one, dump_id=did, threads=0) as w:
        w.write_memory(0, b"\xaa" * 2 * PAGE)
    with TsdWriter(two, dump_id=did, threads=0) as w:
        w.write_memory(PAGE, b"\xaa" * 10 + b"\xbb" + b"\xaa" * (PAGE - 11))
    for paths in ([one, two], [two, one]):
        with pytest.raises(ConflictError) as exc:
            open_dump(paths)
        msg = str(exc.value)
        assert "one.tsd offset" in msg and "two.tsd offset" in msg and "MEMORY" in msg
        assert "\n" not in msg


def test_zero_against_data_conflict_and_agreement(tmp_path):
    did = uuid.uuid4()
    zero, data, zero_data = (tmp_path / n for n in ("z.tsd", "d.tsd", "zd.tsd"))
    with TsdWriter(zero, dump_id=did, threads=0) as w:
        w.write_memory(0, bytes(4 * PAGE))
    with TsdWriter(data, dump_id=did, threads=0) as w:
        w.write_memory(2 * PAGE, b"\x01" * PAGE)
    with TsdWriter(zero_data, dump_id=did, threads=0, min_zero_pages=64) as w:
        # a zero page kept inside a MEMORY record (short zero run) overlapping the ZERO record
        w.write_memory(3 * PAGE, bytes(PAGE) + b"\x02" * PAGE)
    with pytest.raises(ConflictError, match="ZERO record"):
        open_dump([zero, data])
    with open_dump([zero_data, zero]) as dump:
        assert dump.memory.read(0, 5 * PAGE) == bytes(4 * PAGE) + b"\x02" * PAGE


def test_files_of_different_dumps_are_refused(tmp_path):
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    for p in (a, b):
        with TsdWriter(p) as w:
            w.write_memory(0, b"x" * PAGE)
    with pytest.raises(FormatError, match="belongs to dump"):
        open_dump([a, b])


def test_conflicting_metadata_is_refused(tmp_path):
    did = uuid.uuid4()
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    with TsdWriter(a, dump_id=did) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\n", properties={"k": "1"})
    with TsdWriter(b, dump_id=did) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\n", properties={"k": "2"})
    with pytest.raises(ConflictError, match="property 'k'"):
        open_dump([a, b])
    with TsdWriter(b, dump_id=did) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.5.0\n")
    with pytest.raises(ConflictError, match="VMCOREINFO differs"):
        open_dump([a, b])


def test_later_properties_in_one_file_update_earlier_ones(tmp_path):
    path = tmp_path / "p.tsd"
    with TsdWriter(path) as w:
        w.write_metadata(properties={"state": "collecting", "mem": "512M"})
        w.write_metadata(properties={"state": "complete"})
    with open_dump(path) as dump:
        assert dump.properties == {"state": "complete", "mem": "512M"}


def test_missing_in_one_file_supplied_by_another(tmp_path):
    did = uuid.uuid4()
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    with TsdWriter(a, dump_id=did) as w:
        w.write_memory(0, b"\x05" * PAGE)
        w.write_missing(PAGE, 3 * PAGE, "storage error")
    with open_dump(a) as dump:
        assert [(r.start, r.length) for r in dump.memory.missing_ranges()] == [(PAGE, 3 * PAGE)]
        with pytest.raises(NotCollectedError) as exc:
            dump.memory.read(PAGE // 2, PAGE)
        assert exc.value.address == PAGE
    with TsdWriter(b, dump_id=did) as w:
        w.write_memory(2 * PAGE, b"\x06" * PAGE)
    with open_dump([b, a]) as dump:
        assert [(r.start, r.length) for r in dump.memory.missing_ranges()] == [
            (PAGE, PAGE), (3 * PAGE, PAGE)]
        assert dump.memory.read(2 * PAGE, PAGE) == b"\x06" * PAGE
