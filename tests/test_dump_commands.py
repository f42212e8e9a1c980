"""The import/export/inspect/verify commands, run as the installed console script."""

from __future__ import annotations

import json

import pytest
from _cli import run_cli

from tsubaki_forensics.tsd import MemoryMap, TsdWriter, open_dump

from test_vmcore_elf import qemu_style_elf, sample_memory, sample_notes

PAGE = 4096




def run(*args, ok=True):
    """The installed console script, as a user runs it (never a traceback)."""
    return run_cli(*args, ok=ok)


@pytest.fixture
def vmcore(tmp_path):
    path = tmp_path / "qemu.elf"
    qemu_style_elf(path, sample_memory(), sample_notes())
    return path


def test_import_inspect_verify_export_json(tmp_path, vmcore):
    tsd, out = tmp_path / "d.tsd", tmp_path / "out.elf"
    imported = json.loads(run("import", vmcore, "-o", tsd, "--format", "json").stdout)
    assert imported["raw_bytes"] == sum(len(d) for _, d in sample_memory())
    assert imported["file_bytes"] == tsd.stat().st_size
    info = json.loads(run("inspect", tsd, "--format", "json").stdout)
    assert info["dump_id"] == imported["dump_id"]
    assert info["kernel_release"] == "6.1.0-test"
    assert info["notes"]["prstatus"] == 2
    assert info["memory"]["completeness_percent"] == 100.0
    assert info["memory"]["present_bytes"] == imported["raw_bytes"]
    verified = json.loads(run("verify", tsd, "--format", "json").stdout)
    assert verified["ok"] and verified["problems"] == []
    exported = json.loads(run("export", tsd, "-o", out, "--format", "json").stdout)
    assert exported["present_bytes"] == imported["raw_bytes"] and out.exists()


def test_text_output_and_progress_stay_apart(tmp_path, vmcore):
    tsd = tmp_path / "d.tsd"
    proc = run("import", vmcore, "-o", tsd)
    assert proc.stdout.startswith("imported ") and proc.stderr == ""
    text = run("inspect", tsd).stdout
    assert "complete 100.0%" in text and "kernel         6.1.0-test" in text


def test_verify_lists_damage_with_offsets_and_exits_2(tmp_path):
    tsd = tmp_path / "d.tsd"
    with TsdWriter(tsd, threads=0) as w:
        w.write_memory(0, bytes(range(256)) * 64)
    raw = bytearray(tsd.read_bytes())
    raw[300] ^= 0x10
    tsd.write_bytes(raw[:-10])
    proc = run("verify", tsd, ok=False)
    assert proc.returncode == 2
    assert "BAD" in proc.stdout and "offset 128" in proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: verify found")
    data = json.loads(run("verify", tsd, "--format", "json", ok=False).stdout)
    assert not data["ok"] and {p["offset"] for p in data["problems"]} >= {128}


def test_inspect_recovers_and_reports_a_footerless_file(tmp_path):
    tsd = tmp_path / "d.tsd"
    with TsdWriter(tsd, threads=0, memory_map=MemoryMap.from_ranges([(0, 2 * PAGE)])) as w:
        w.write_memory(0, b"\x01" * PAGE)
        w.write_missing(PAGE, PAGE, "timeout")
        w.write_event("panic-notice", 0.25, cpu=1)
        end = w.flush()
    tsd.write_bytes(tsd.read_bytes()[:end])
    info = json.loads(run("inspect", tsd, "--format", "json").stdout)
    assert info["memory"]["completeness_percent"] == 50.0
    assert info["status"] == "incomplete" and info["complete"] is False
    assert info["memory"]["missing"] == [{"start": PAGE, "length": PAGE, "kind": "unreadable",
                                          "reason": "timeout"}]
    assert info["memory"]["missing_records"] == [{"start": PAGE, "length": PAGE, "reason": "timeout"}]
    assert "(timeout)" in run("inspect", tsd).stdout
    assert info["events"] == [{"time_s": 0.25, "kind": "panic-notice", "fields": {"cpu": 1}}]
    assert any("no END footer" in p["message"] for p in info["problems"])


def make_bad(tmp_path, kind):
    path = tmp_path / f"{kind}.tsd"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "magic":
        path.write_bytes(b"GARBAGE!" + bytes(200))
    elif kind == "newer":
        with TsdWriter(path) as w:
            w.write_memory(0, b"x" * PAGE)
        raw = bytearray(path.read_bytes())
        raw[8:10] = (99).to_bytes(2, "little")
        path.write_bytes(raw)
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind,message", [
    ("empty", "empty file"), ("magic", "not a .tsd dump"), ("newer", "newer than this reader"),
    ("directory", "is a directory"), ("missing", "no such file")])
@pytest.mark.parametrize("command", ["inspect", "verify", "export"])
def test_bad_dumps_give_one_line_errors(tmp_path, kind, message, command):
    path = make_bad(tmp_path, kind)
    extra = ["-o", tmp_path / "x.elf"] if command == "export" else []
    proc = run(command, path, *extra, ok=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("kind,message", [("empty", "empty file"), ("magic", "not an ELF"),
                                          ("directory", "is a directory"), ("missing", "no such file")])
def test_import_bad_vmcore_one_line(tmp_path, kind, message):
    path = make_bad(tmp_path, kind)
    proc = run("import", path, "-o", tmp_path / "o.tsd", ok=False)
    assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "o.tsd").exists()


def test_import_refuses_to_overwrite_without_force(tmp_path, vmcore):
    tsd = tmp_path / "d.tsd"
    tsd.write_bytes(b"precious")
    proc = run("import", vmcore, "-o", tsd, ok=False)
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert tsd.read_bytes() == b"precious"
    run("import", vmcore, "-o", tsd, "--force")
    with open_dump(tsd) as dump:
        assert dump.problems == []


def test_dumps_of_two_ids_are_refused(tmp_path):
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    for p in (a, b):
        with TsdWriter(p) as w:
            w.write_memory(0, b"x" * PAGE)
    proc = run("inspect", a, b, ok=False)
    assert proc.returncode == 1 and "belongs to dump" in proc.stderr


def test_inspect_and_verify_several_files_of_one_dump(tmp_path):
    import uuid

    did = uuid.uuid4()
    a, b = tmp_path / "a.tsd", tmp_path / "b.tsd"
    with TsdWriter(a, dump_id=did) as w:
        w.write_memory(0, b"\x01" * 2 * PAGE)
    with TsdWriter(b, dump_id=did) as w:
        w.write_memory(PAGE, b"\x01" * PAGE + b"\x02" * PAGE)  # overlaps a.tsd identically
    info = json.loads(run("inspect", b, a, "--format", "json").stdout)
    assert info["dump_id"] == str(did) and len(info["files"]) == 2
    assert info["memory"]["present_bytes"] == 3 * PAGE
    verified = json.loads(run("verify", a, b, "--format", "json").stdout)
    assert verified["ok"] and len(verified["files"]) == 2
