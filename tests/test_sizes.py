"""The one size parser (tsubaki_forensics.sizes): binary units, a bare number is bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor_model.machine import parse_size as machine_parse_size
from tsubaki_forensics.errors import SizeError, TsubakiError
from tsubaki_forensics.sizes import UNITS, parse_size

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(("text", "expected"), [
    ("4096", 4096), ("0", 0), ("512b", 512), ("512B", 512), ("32K", 32 * KIB), ("32kb", 32 * KIB),
    ("512KiB", 512 * KIB), ("128M", 128 * MIB), (" 2 G ", 2 * GIB), ("1.5G", 3 * GIB // 2),
    ("1T", 1 << 40), ("0.5k", 512), (4096, 4096),
])
def test_sizes_people_write(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "", "M", "-1G", "12Q", "1.5", "10ib", "1e3", "1,024", -1, None, 1.5])
def test_not_a_size_is_one_clear_error(text):
    with pytest.raises(SizeError, match="not a size") as e:
        parse_size(text)
    assert isinstance(e.value, TsubakiError) and "\n" not in str(e.value)


@given(st.integers(0, 1 << 20), st.sampled_from(["", "b", "k", "m", "g", "t"]), st.sampled_from(["", "i", "ib", "b"]))
def test_every_spelling_is_number_times_unit(number, unit, suffix):
    if not unit and suffix or unit == "b" and suffix:
        return  # "12ib", "12bb": not sizes
    assert parse_size(f"{number}{unit.upper()}{suffix}") == number * UNITS[unit]


def test_the_monitor_and_the_cli_use_the_same_parser():
    assert machine_parse_size is parse_size
