"""``tsubaki-forensics collect`` end to end on a raw image, and its bad-input paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor_model.sources import SOURCE_TYPES, RawImageSource, open_source
from tsubaki_forensics.cli.app import main
from tsubaki_forensics.errors import SourceError
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.tsd import open_dump

MiB = 1 << 20


@pytest.fixture()
def raw_image(tmp_path):
    """A 6 MiB raw image with a hole, text, random and zero pages, plus its sidecar."""
    rng = np.random.default_rng(5)
    img = np.zeros(6 * MiB, np.uint8)
    img[: 2 * MiB] = rng.integers(0, 256, 2 * MiB, dtype=np.uint8)
    text = b"".join(b"[%6d] eth0: link up\n" % i for i in range(200000))[: 2 * MiB]
    img[3 * MiB : 5 * MiB] = np.frombuffer(text, np.uint8)
    path = tmp_path / "mem.raw"
    img.tofile(path)
    sidecar = {
        "ranges": [{"paddr": 0, "length": 640 << 10, "offset": 0},
                   {"paddr": MiB, "length": 5 * MiB, "offset": MiB}],
        "vmcoreinfo": "OSRELEASE=6.1.0-test\nPAGESIZE=4096\n",
        "properties": {"boot_s": "1.0"},
    }
    (tmp_path / "mem.raw.json").write_text(json.dumps(sidecar))
    return path


def _run(capsys, *args):
    code = main(["collect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_collect_json_summary_and_exact_dump(raw_image, tmp_path, capsys):
    out_file = tmp_path / "d.tsd"
    code, out, err = _run(capsys, raw_image, "-o", out_file, "--region-size", "1M",
                          "--reboot-mem", "2M", "--storage", "sd-class10", "--format", "json",
                          "--no-fsync")
    assert code == 0, err
    doc = json.loads(out)
    row = doc["policies"]["tsubaki"]
    for key in ("restart_s", "full_memory_s", "dump_complete_s", "stall_s", "bytes_written"):
        assert isinstance(row[key], (int, float)), key
    assert row["boot_s"] == 1.0  # from the sidecar's measured boot
    assert row["bytes_written"] == out_file.stat().st_size
    assert doc["storage"]["name"] == "sd-class10" and doc["params"]["region_size"] == MiB
    src = RawImageSource(raw_image)
    with open_dump(out_file) as dump:
        for start, length in src.ranges:
            assert dump.memory.read(start, length) == src.read(start, length)
        assert dump.properties["collect.policy"] == "tsubaki"
    src.close()


def test_collect_compare_table_and_plot(raw_image, tmp_path, capsys):
    plot = tmp_path / "t.png"
    code, out, err = _run(capsys, raw_image, "-o", tmp_path / "d.tsd", "--region-size", "1M",
                          "--reboot-mem", "1M", "--compare", "--plot", plot, "--no-fsync")
    assert code == 0, err
    for name in ("kdump", "reboot-only", "tsubaki", "tsubaki-triage"):
        assert name in out
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    code, out, err = _run(capsys, raw_image, "-o", tmp_path / "d.tsd", "--region-size", "1M",
                          "--reboot-mem", "1M", "--compare", "--format", "json", "--no-fsync", "--force")
    doc = json.loads(out)
    assert list(doc["policies"]) == ["tsubaki", "kdump", "reboot-only", "tsubaki-triage"]
    kdump, tsubaki = doc["policies"]["kdump"], doc["policies"]["tsubaki"]
    assert tsubaki["restart_s"] < kdump["restart_s"]
    assert tsubaki["restart_speedup_vs_kdump"] == pytest.approx(kdump["restart_s"] / tsubaki["restart_s"], rel=1e-3)
    assert doc["policies"]["reboot-only"]["dump_complete_s"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "floppy"], "unknown storage profile"),
        (["--policy", "yolo"], "--policy 'yolo'"),
        (["--region-size", "huge"], "--region-size: not a size"),
        (["--region-size", "1000"], "multiple of 4096"),
        (["--reboot-mem", "1G"], "more than Linux's memory"),
        (["--plot", "x.gif"], "use a .png, .svg or .pdf"),
        (["--format", "xml"], "unknown format 'xml' for --format"),
        (["--boot-time", "-1"], "must not be negative"),
    ],
)
def test_bad_options_are_one_line_errors(raw_image, tmp_path, capsys, args, message):
    code, out, err = _run(capsys, raw_image, "-o", tmp_path / "d.tsd", "--no-fsync", *args)
    assert code != 0
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    code, _, err = _run(capsys, tmp_path / "nope.raw", "-o", tmp_path / "d.tsd")
    assert code != 0 and "no such file" in err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"x" * 8192)
    code, _, err = _run(capsys, junk, "-o", tmp_path / "d.tsd")
    assert code != 0 and "sidecar" in err
    (tmp_path / "junk.bin.json").write_text("{not json")
    code, _, err = _run(capsys, junk, "-o", tmp_path / "d.tsd")
    assert code != 0 and "not a readable JSON sidecar" in err
    code, _, err = _run(capsys, "lab:sysrq,color=red", "-o", tmp_path / "d.tsd")
    assert code != 0 and "unknown crash-lab parameter" in err


def test_sources_are_registered_through_the_plugin_hook():
    plugins = Plugins.load(entry_points=False)
    import monitor_model.sources as module

    plugins.pm.register(module, name="memory-sources")
    found = plugins.sources()
    assert {t.name for t in SOURCE_TYPES} <= set(found)
    assert found["lab"].probe("lab:sysrq,mem=2G") and not found["lab"].probe("/tmp/x")


def test_the_installed_entry_point_provides_the_sources(raw_image):
    src = open_source(str(raw_image))
    assert isinstance(src, RawImageSource) and src.vmcoreinfo.startswith(b"OSRELEASE=")
    with pytest.raises(SourceError, match="not in"):
        src.read(700 << 10, 10)  # the hole below 1 MiB
    src.close()


@pytest.mark.parametrize(
    "head, kind",
    [
        (b"\x7fELF\x02\x01\x01", "ELF"),
        (b"KDUMP   \x06\x00\x00\x00", "kdump-compressed"),
        (b"DISKDUMP", "diskdump"),
        (b"makedumpfile\x00\x00\x00\x00", "flattened"),
        (b"\x89TSD\r\n\x1a\n", ".tsd"),
    ],
)
def test_raw_refuses_containers_even_with_a_sidecar(tmp_path, capsys, head, kind):
    """A container read as raw bytes would give a dump of headers: refused, one line, non-zero."""
    image = tmp_path / "x.img"
    image.write_bytes(head + bytes(8192 - len(head)))
    (tmp_path / "x.img.json").write_text(json.dumps({"vmcoreinfo": "OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"}))
    out_file = tmp_path / "d.tsd"
    code, out, err = _run(capsys, image, "--source-type", "raw", "-o", out_file, "--no-fsync")
    assert code != 0 and not out_file.exists()
    assert err.startswith("error: ") and kind in err and "not a raw memory image" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_raw_requires_its_sidecar(tmp_path, capsys):
    image = tmp_path / "mem.img"
    image.write_bytes(bytes(range(256)) * 64)
    code, out, err = _run(capsys, image, "--source-type", "raw", "-o", tmp_path / "d.tsd", "--no-fsync")
    assert code != 0 and not (tmp_path / "d.tsd").exists()
    assert err.startswith("error: ") and "needs its sidecar" in err and "mem.img.json" in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "mem.img.json").write_text("[1, 2]")  # JSON, but not an object
    code, out, err = _run(capsys, image, "--source-type", "raw", "-o", tmp_path / "d.tsd", "--no-fsync")
    assert code != 0 and "not a readable JSON sidecar" in err and len(err.strip().splitlines()) == 1


def test_raw_refuses_a_real_elf_vmcore(real_crash, tmp_path, capsys):
    """The issue's case: a real lab vmcore forced through --source-type raw."""
    elf = tmp_path / "crash.elf"
    elf.symlink_to(real_crash.vmcore)
    (tmp_path / "crash.elf.json").write_text("{}")
    code, out, err = _run(capsys, elf, "--source-type", "raw", "-o", tmp_path / "d.tsd", "--no-fsync")
    assert code != 0 and not (tmp_path / "d.tsd").exists()
    assert "ELF" in err and len(err.strip().splitlines()) == 1
