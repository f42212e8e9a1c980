"""Tests of the sample plugin with the fixtures of ``tsubaki_forensics.testing``."""

import pytest

import tsubaki_sysinfo

pytestmark = pytest.mark.realkernel


def test_sysinfo_reads_the_crashed_kernel(tsubaki_run_analysis, tsubaki_program):
    result = tsubaki_run_analysis("sysinfo", plugin=tsubaki_sysinfo)
    assert result.status.value == "ok"
    assert result.fact("release") == tsubaki_program.info.release
    assert "console=" in result.fact("command line")
    assert result.fact("uptime seconds") > 0
