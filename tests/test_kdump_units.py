"""The kdump-compressed and flattened readers on files the tests build (kdump_synth).

Every codec makedumpfile writes, the flattened stream in any piece order
with a rewritten header, INCOMPLETE files, files cut at seeded offsets
are in test_fuzz_kdump.py.  makedumpfile's own output
of real crashes is in test_kdump_real.py.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tsubaki_forensics.errors import FormatError, NotCollectedError
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.tsd.records import PageClass
from tsubaki_forensics.vmcore.detect import import_any, sniff
from tsubaki_forensics.vmcore.foreign import open_foreign
from tsubaki_forensics.vmcore import kdump
from tsubaki_forensics.vmcore.kdump import KdumpFile
from tsubaki_forensics.vmcore.kdump_import import import_kdump

from _cli import CLI
from _budget import BUDGET, run_cli
from kdump_synth import PS, VMCOREINFO, build_kdump, flatten, sample_memory, write_claimed_machine

VALID, DUMPED, CONTENTS = sample_memory()
RAW = build_kdump(VALID, DUMPED, CONTENTS, codec="zlib")


def _check_pages(k: KdumpFile, missing_ok: bool = False) -> tuple[set[int], set[int]]:
    """Every dumped page reads as built (or, if allowed, is missing); excluded and
    holes are not collected.  Returns (read, missing) pfns."""
    read, missing = set(), set()
    for pfn in range(len(VALID)):
        try:
            page = k.read_page(pfn)
        except NotCollectedError:
            if DUMPED[pfn]:
                assert missing_ok, pfn
                missing.add(pfn)
            continue
        assert DUMPED[pfn] and page == CONTENTS[pfn], pfn
        read.add(pfn)
    return read, missing


@pytest.mark.parametrize("codec", ["zlib", "lzo", "snappy", "zstd", "none"])
@pytest.mark.parametrize("flat", [False, True])
def test_every_codec_plain_and_flattened(tmp_path, codec, flat):
    raw = build_kdump(VALID, DUMPED, CONTENTS, codec=codec)
    path = tmp_path / "dump"
    path.write_bytes(flatten(raw) if flat else raw)
    assert sniff(path) == ("flattened" if flat else "kdump")
    with KdumpFile(path) as k:
        assert k.flattened == flat and not k.problems
        assert k.vmcoreinfo == VMCOREINFO and k.header.dump_level == 31
        read, _ = _check_pages(k)
        assert read == set(np.flatnonzero(DUMPED).tolist())
        assert k.excluded_ranges() == [(30 * PS, 10 * PS), (50 * PS, PS)]
        assert k.memory_ranges() == [(0, 20 * PS), (24 * PS, 40 * PS)]
        assert codec in k.codecs() or codec == "none"


def test_import_records_excluded_as_unknown_class(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(build_kdump(VALID, DUMPED, CONTENTS))
    import_kdump(path, tmp_path / "d.tsd")
    with open_dump([tmp_path / "d.tsd"]) as d:
        c = d.completeness()
        assert c.complete is True and d.memory_map.dump_level == 31
        assert [(r.paddr, r.length, r.cls) for r in d.excluded] == [
            (30 * PS, 10 * PS, PageClass.UNKNOWN), (50 * PS, PS, PageClass.UNKNOWN)]
        for pfn, page in CONTENTS.items():
            assert d.memory.read(pfn * PS, PS) == page
        with pytest.raises(NotCollectedError, match="excluded"):
            d.memory.read(31 * PS, 8)


def test_incomplete_file_names_unwritten_pages_missing(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(build_kdump(VALID, DUMPED, CONTENTS, incomplete_after=30))
    with KdumpFile(path) as k:
        assert k.header.incomplete and any("INCOMPLETE" in p for p in k.problems)
        read, missing = _check_pages(k, missing_ok=True)
        assert len(read) == 30 and missing == set(np.flatnonzero(DUMPED)[30:].tolist())
    import_kdump(path, tmp_path / "d.tsd")
    with open_dump([tmp_path / "d.tsd"]) as d:
        c = d.completeness()
        assert c.complete is False
        assert sum(g.length for g in c.gaps) == len(missing) * PS
        assert all("INCOMPLETE" in g.reason for g in c.gaps)


def test_cli_one_line_for_damaged_and_unknown_files(tmp_path):
    bad = bytearray(RAW)
    bad[8:12] = (99).to_bytes(4, "little")  # header version 99
    (tmp_path / "bad").write_bytes(bytes(bad))
    (tmp_path / "junk").write_bytes(b"hello, not a dump\n" * 100)
    for args, words in [(["import", tmp_path / "bad", "-o", tmp_path / "o.tsd"], "header version 99"),
                        (["analyze", tmp_path / "bad"], "header version 99"),
                        (["import", tmp_path / "junk", "-o", tmp_path / "o.tsd"], "understood formats"),
                        (["analyze", tmp_path / "junk"], "understood formats"),
                        (["inspect", tmp_path / "junk"], "understood formats")]:
        run = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert run.returncode != 0 and len(errors) == 1 and words in errors[0], run.stderr
        assert "Traceback" not in run.stderr


def test_foreign_dump_serves_memory_for_the_drgn_bridge(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(flatten(build_kdump(VALID, DUMPED, CONTENTS, codec="lzo")))
    with open_foreign([path]) as dump:
        assert dump.vmcoreinfo == VMCOREINFO and dump.header.page_size == PS
        spans = [(r.start, r.length) for r in dump.memory.ranges()]
        assert sum(n for _, n in spans) == int(DUMPED.sum()) * PS
        for a, n in spans:
            assert dump.memory.read(a, n) == b"".join(CONTENTS[p] for p in range(a // PS, (a + n) // PS))


def _wrap(kind: str, blob: bytes) -> bytes:
    import bz2
    import gzip
    import lzma

    import lz4.frame

    return {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
            "lz4": lz4.frame.compress}[kind](blob)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "lz4"])
def test_wrapped_flattened_files_open_and_import(tmp_path, kind):
    path = tmp_path / f"dump.{kind}"
    path.write_bytes(_wrap(kind, flatten(RAW, seed=5)))
    assert sniff(path) == kind
    with open_foreign([path]) as dump:
        assert dump.properties["wrapper"] == kind and dump.vmcoreinfo == VMCOREINFO
        for pfn, page in CONTENTS.items():
            assert dump.memory.read(pfn * PS, PS) == page
    import_any(path, tmp_path / "d.tsd")
    with open_dump([tmp_path / "d.tsd"]) as d:
        assert d.completeness().complete is True
    assert not list(tmp_path.glob("tsubaki-unwrap-*"))


def test_cut_gzip_reads_what_decompressed(tmp_path):
    blob = _wrap("gzip", flatten(RAW, seed=5, rewrite_header=False))
    path = tmp_path / "dump.gz"
    path.write_bytes(blob[:len(blob) * 2 // 3])
    warnings: list[str] = []
    import_any(path, tmp_path / "d.tsd", warn=warnings.append)
    assert len(warnings) == 1 and "gzip stream" in warnings[0] and "\n" not in warnings[0]
    with open_dump([tmp_path / "d.tsd"]) as d:
        c = d.completeness()
        assert c.complete is False and c.present_bytes > 0
        for r in d.memory.ranges():
            for pfn in range(r.start // PS, r.end // PS):
                assert d.memory.read(pfn * PS, PS) == CONTENTS[pfn]


def test_wrapped_junk_is_one_line(tmp_path):
    path = tmp_path / "junk.gz"
    path.write_bytes(_wrap("gzip", b"not a dump at all\n" * 1000))
    run = subprocess.run([*CLI, "analyze", str(path)], capture_output=True, text=True)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 1 and len(errors) == 1 and "understood formats" in errors[0], run.stderr
    (tmp_path / "empty.xz").write_bytes(_wrap("xz", b""))
    run = subprocess.run([*CLI, "import", str(tmp_path / "empty.xz"), "-o", str(tmp_path / "o.tsd")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "nothing decompresses" in run.stderr and "Traceback" not in run.stderr


def test_split_set_in_any_order_reads_as_one(tmp_path):
    cuts = [(0, 17), (17, 45), (45, len(VALID))]
    paths = []
    for i, (a, b) in enumerate(cuts):
        paths.append(tmp_path / f"part{i}")
        paths[-1].write_bytes(build_kdump(VALID, DUMPED, CONTENTS, codec="lzo", split=(a, b)))
    with KdumpFile(paths[1]) as one:  # alone: its own pages only
        assert one.header.split and len(one.dumped_pfns) == int(DUMPED[17:45].sum())
    shuffled = [paths[2], paths[0], paths[1]]
    with open_foreign(shuffled) as dump:
        for pfn, page in CONTENTS.items():
            assert dump.memory.read(pfn * PS, PS) == page
    import_any(shuffled, tmp_path / "d.tsd")
    with open_dump([tmp_path / "d.tsd"]) as d:
        assert d.completeness().complete is True
        assert [(r.paddr, r.length) for r in d.excluded] == [(30 * PS, 10 * PS), (50 * PS, PS)]
    for subset, words in [([paths[0], paths[2]], "lacks the file holding pfns 0x11..0x2d"),
                          ([paths[0], paths[0], paths[1], paths[2]], "the same file twice")]:
        with pytest.raises(FormatError, match=words):
            open_foreign(subset)
    plain = tmp_path / "plain"
    plain.write_bytes(RAW)
    with pytest.raises(FormatError, match="not part of a makedumpfile --split set"):
        open_foreign([paths[0], plain])


def _everything(k: KdumpFile) -> tuple:
    pages = {}
    for pfn in range(k.header.max_mapnr):
        try:
            pages[pfn] = k.read_page(pfn)
        except NotCollectedError as e:
            pages[pfn] = type(e).__name__
    return (k.memory_ranges(), k.excluded_ranges(), k.present_ranges(), k.missing_ranges(),
            k.dumped_pfns.tolist(), k.valid.tolist(), k.present_mask().tolist(), k.dumped_count, pages)


@pytest.mark.parametrize("variant", ["plain", "incomplete", "split", "flat"])
def test_bitmap_slices_and_rank_blocks_read_the_same(tmp_path, monkeypatch, variant):
    """The bitmaps are read a slice at a time and a page's descriptor found by
    rank blocks: with slices of 16 pfns and blocks of 8 (runs crossing every
    boundary), the reader sees exactly what it sees in one slice."""
    args = {"incomplete": {"incomplete_after": 20}, "split": {"split": (17, 45)}}.get(variant, {})
    raw = build_kdump(VALID, DUMPED, CONTENTS, **args)
    path = tmp_path / "dump"
    path.write_bytes(flatten(raw) if variant == "flat" else raw)
    with KdumpFile(path) as k:
        whole = _everything(k)
    monkeypatch.setattr(kdump, "RANK_BLOCK", 8)
    monkeypatch.setattr(kdump, "SLICE_PFNS", 16)
    with KdumpFile(path) as k:
        assert _everything(k) == whole
    assert whole[4] == [p for p in np.flatnonzero(DUMPED).tolist()
                        if variant != "split" or 17 <= p < 45]


@pytest.mark.parametrize("command", ["inspect", "verify", "import"])
def test_a_claimed_huge_machine_costs_no_memory(tmp_path, command):
    """A 32 MiB sparse file (12 KiB on disk) whose header claims 2^27 page
    frames (512 GiB): the bitmaps were expanded to a byte per frame (inspect
    and verify peaked at 746 MiB on main 0f2fd7e, import 741 MiB); read a
    slice at a time, the claim costs time, not memory (87-91 MiB)."""
    path = tmp_path / "claim.kdump"
    write_claimed_machine(path, 1 << 27)
    run = run_cli(command, path, *(["-o", tmp_path / "out.tsd"] if command == "import" else []))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert run.peak_rss < BUDGET, run.peak_rss >> 20

