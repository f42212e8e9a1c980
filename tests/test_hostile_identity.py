"""Issue 22 findings 5, 8, 12 and 13: identity from content, a resume file
that must be this crash's, untrusted strings that cannot forge output lines,
and debug-info paths the dump cannot steer.

Every input is crafted here (a forged twin of a dump, a forged all-ZERO
resume file, a dump whose strings carry newlines, bidi overrides and
terminal escapes, a VMCOREINFO whose BUILD-ID is a path).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from monitor_model.sources import RawImageSource
from tsubaki_forensics.drgn_bridge.debuginfo import candidate_paths, safe_build_id, safe_release
from tsubaki_forensics.tsd import TsdWriter
from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.triage.discover import group_dumps

from _budget import assert_one_line_error, run_cli
from test_collect_cli import raw_image  # noqa: F401 - fixture

PAGE = 4096
DUMP = uuid.UUID("0badc0de-0000-4000-8000-000000000001")


def twin(path, seed: int) -> bytes:
    """A dump of DUMP whose memory is ``seed``'s random bytes (same size for any seed)."""
    rng = __import__("random").Random(seed)
    with TsdWriter(path, dump_id=DUMP, threads=0, producer="twin") as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\nPAGESIZE=4096\n")
        w.write_memory(0, rng.randbytes(8 * PAGE))
        w.write_event("panic_notice", 0.0, cpus=1)
    return path.read_bytes()


# -- 5. triage identity --------------------------------------------------------------

def test_forged_twin_is_not_taken_for_a_copy(tmp_path):
    real, forged = tmp_path / "real.tsd", tmp_path / "forged.tsd"
    raw = twin(real, 1)
    fake = twin(forged, 2)
    assert len(raw) == len(fake)
    forged.write_bytes(raw[:R.FILE_HEADER_SIZE] + fake[R.FILE_HEADER_SIZE:])  # same id, time, size
    copy = tmp_path / "copy.tsd"
    copy.write_bytes(raw)

    (alone,), _ = group_dumps([real])
    (both,), _ = group_dumps([real, forged, copy])
    assert both.dump_id == alone.dump_id
    assert len(both.parts) == 2  # the forgery is another part (then checked), not a copy
    assert set(both.paths) == {str(real), str(forged), str(copy)}
    assert both.fingerprint != alone.fingerprint  # so no cache hit carries over, either way
    (forged_alone,), _ = group_dumps([forged])
    assert forged_alone.fingerprint != alone.fingerprint
    (copy_alone,), _ = group_dumps([copy])
    assert copy_alone.fingerprint == alone.fingerprint  # a byte copy is still the same dump


# -- 8. --resume-from verifies the file it trusts --------------------------------------

def forged_resume(path, source, *, zero=True, ranges=None, vmcoreinfo=None):
    ranges = ranges if ranges is not None else source.ranges
    with TsdWriter(path, threads=0, memory_map=R.MemoryMap.from_ranges(ranges)) as w:
        w.write_metadata(vmcoreinfo=vmcoreinfo if vmcoreinfo is not None else source.vmcoreinfo)
        for start, length in ranges:
            if zero:
                w.write_zero(start, length)
            else:
                w.write_memory(start, b"\xaa" * length)
    return path


ARGS = ["--region-size", "1M", "--reboot-mem", "1M", "--no-fsync"]


def test_resume_refuses_an_all_zero_forgery(raw_image, tmp_path):  # noqa: F811
    source = RawImageSource(raw_image)
    try:
        cases = {
            "says every page it holds is zero": forged_resume(tmp_path / "zero.tsd", source),
            "differs from this source's": forged_resume(tmp_path / "aa.tsd", source, zero=False),
            "another machine": forged_resume(tmp_path / "other.tsd", source, ranges=[(0, 8 << 20)]),
            "VMCOREINFO differs": forged_resume(tmp_path / "kernel.tsd", source,
                                                vmcoreinfo=b"OSRELEASE=9.9\nPAGESIZE=4096\n"),
        }
    finally:
        source.close()
    for needle, forged in cases.items():
        out = tmp_path / f"rest-{forged.stem}.tsd"
        run = run_cli("collect", raw_image, "-o", out, "--resume-from", forged, *ARGS)
        assert_one_line_error(run, needle=needle)
        assert not out.exists()


# -- 12. untrusted strings in text and HTML output -----------------------------------

def test_newlines_and_bidi_cannot_forge_text_lines(tmp_path):
    path = tmp_path / "s.tsd"
    with TsdWriter(path, threads=0) as w:
        w.write_metadata(vmcoreinfo=b"OSRELEASE=6.1.0\nPAGESIZE=4096\n",
                         properties={"kernel_release": "6.1\nFORGED: complete", "comm": "a\u202egnp.exe",
                                     "bell": "x\x1b[2J\x07"})
        w.write_memory(0, b"\x11" * PAGE)
        w.write_event("note", 0.5, text="line\nFORGED: event", iso="\u2066x\u2069")
    run = run_cli("inspect", path)
    assert run.returncode == 0, run.stderr
    for line in run.stdout.splitlines():
        assert not line.lstrip().startswith("FORGED")
    for bad in ("\u202e", "\u2066", "\u2069", "\x1b", "\x07"):
        assert bad not in run.stdout
    assert "\\u202e" in run.stdout and "\\x0a" in run.stdout


def test_html_report_has_no_raw_control_characters(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    (d / "evil\x1b[31m\x07name.tsd").write_bytes(b"not a dump\x1b]0;title\x07")
    report = tmp_path / "r.html"
    run = run_cli("triage", d, "--no-cache", "-j", "1", "--format", "html", "-o", report)
    html = report.read_text()
    assert "\x1b" not in html and "\x07" not in html
    assert "\\x1b" in html


# -- 13. debug-info paths ---------------------------------------------------------

def test_build_id_and_release_cannot_leave_the_debug_dirs(tmp_path):
    debug = tmp_path / "debug"
    (debug / ".build-id").mkdir(parents=True)
    (tmp_path / "evil.debug").write_bytes(b"x")  # reachable as .build-id/../../evil.debug
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "vmlinux").write_bytes(b"x")  # as lib/modules/../../../evil/vmlinux
    found = candidate_paths("../../evil", "../../../evil", debug_dirs=[debug])
    assert found == []
    assert safe_build_id("../../evil") is None and safe_release("../x") is None
    assert safe_release("6.1.0-57-cloud-amd64") == "6.1.0-57-cloud-amd64"
    assert safe_release("6.12.118+deb12-cloud-amd64") == "6.12.118+deb12-cloud-amd64"
    good = "ab" + "c" * 38
    (debug / ".build-id" / "ab").mkdir()
    (debug / ".build-id" / "ab" / ("c" * 38 + ".debug")).write_bytes(b"x")
    assert candidate_paths(good, None, debug_dirs=[debug]) == [
        debug / ".build-id" / "ab" / ("c" * 38 + ".debug")]
