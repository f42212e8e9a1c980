"""Fuzz the kdump-compressed and flattened readers (and ``import``) with cut and damaged files.

Files built by the tests (kdump_synth) are cut at drawn offsets (every page
before the cut reads as built, the rest is named missing, the import's
completeness says exactly how much) and get bit flips in their headers,
bitmaps, page descriptors and flattened piece headers (only TsubakiErrors,
one line each, never a traceback or a hang).  ``TSUBAKI_FUZZ_EXAMPLES``
scales the example counts (bench/fuzz_long.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsubaki_forensics.errors import FormatError, TsubakiError
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.vmcore.kdump import KdumpFile
from tsubaki_forensics.vmcore.kdump_import import import_kdump

from kdump_synth import PS, build_kdump, flatten
from test_fuzz_tsd import fuzz_settings
from test_kdump_units import CONTENTS, DUMPED, VALID, _check_pages


@st.composite
def _cut(draw, size: int) -> int:
    return draw(st.integers(1, size - 1))


RAW = build_kdump(VALID, DUMPED, CONTENTS, codec="zlib")
FLAT = flatten(RAW, seed=3, rewrite_header=False)


@pytest.mark.parametrize("blob", [RAW, FLAT], ids=["kdump", "flattened"])
@fuzz_settings(60)
@given(data=st.data())
def test_truncated_file_reads_to_the_cut_and_names_the_rest_missing(tmp_path_factory, blob, data):
    cut = data.draw(_cut(len(blob)))
    d = tmp_path_factory.mktemp("cut")
    path = d / "dump"
    path.write_bytes(blob[:cut])
    try:
        k = KdumpFile(path)
    except FormatError as e:  # cut inside the headers or bitmaps: one line
        assert "\n" not in str(e)
        return
    with k:
        read, missing = _check_pages(k, missing_ok=True)
        mask = np.zeros(len(VALID), bool)
        for a, n in k.missing_ranges():
            mask[a // PS:(a + n) // PS] = True
        assert set(np.flatnonzero(mask).tolist()) >= missing
        if missing:
            assert k.problems
    import_kdump(path, d / "d.tsd")
    with open_dump([d / "d.tsd"]) as dump:
        c = dump.completeness()
        assert (c.complete is True) == (not mask.any())
        assert sum(g.length for g in c.gaps) == int(mask.sum()) * PS


def _header_span(blob: bytes) -> int:
    """Bytes up to the end of the page descriptors (where a flip changes meaning)."""
    return min(len(blob), (1 + 2 + 2) * PS + 24 * int(DUMPED.sum()) + (4096 + 64 if blob is FLAT else 0))


@pytest.mark.parametrize("blob", [RAW, FLAT], ids=["kdump", "flattened"])
@fuzz_settings(80)
@given(data=st.data())
def test_bit_flips_in_headers_are_one_line_errors(tmp_path_factory, blob, data):
    raw = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, _header_span(blob) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    d = tmp_path_factory.mktemp("flip")
    path = d / "dump"
    path.write_bytes(bytes(raw))
    try:
        with KdumpFile(path) as k:
            for pfn in range(k.header.max_mapnr if k.header.max_mapnr < 1 << 16 else 1 << 16):
                try:
                    k.read_page(pfn)
                except TsubakiError as e:
                    assert "\n" not in str(e)
        import_kdump(path, d / "d.tsd")
    except TsubakiError as e:
        assert "\n" not in str(e)
