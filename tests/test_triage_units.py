"""Triage without a kernel: discovery by dump id, the cache, grouping, renderers, bad input."""

from __future__ import annotations

import io
import os
import json
import shutil
import uuid
from html.parser import HTMLParser

import pytest

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.errors import TsubakiError
from tsubaki_forensics.triage.cache import ResultCache, options_key
from tsubaki_forensics.triage.discover import find_files, group_dumps
from tsubaki_forensics.triage.report import group_records, groups_json, render_html, render_jsonl, render_text
from tsubaki_forensics.triage.run import triage
from tsubaki_forensics.triage.scan import RECORD_VERSION, as_record, failed_record
from tsubaki_forensics.triage.signature import make_signature
from tsubaki_forensics.tsd import TsdWriter

PAGE = 4096


def tiny_dump(path, dump_id, fill=1):
    """A valid .tsd with one page and no VMCOREINFO: it opens, but cannot be analysed."""
    with TsdWriter(path, dump_id=dump_id, chunk_size=4 * PAGE, threads=0) as w:
        w.write_metadata(properties={"test": "triage"})
        w.write_memory(0, bytes([fill]) * PAGE)
    return path


def raw_record(dump_id, message, frames, *, release="6.1.0", time="2026-01-01T00:00:00Z", complete=True, path=None):
    """A record as a worker returns it and the cache stores it: plain JSON data."""
    sig = make_signature(message, frames)
    path = path or f"/fleet/{dump_id}.tsd"
    return {
        "version": RECORD_VERSION, "dump_id": dump_id, "parts": [path], "paths": [path], "path": path,
        "kernel_release": release, "panic_message": message, "crashed_pid": 1, "crashed_command": "sh",
        "frames": list(frames), "signature": sig.key, "signature_id": sig.id, "normalized_message": sig.message,
        "signature_frames": list(sig.frames), "crash_time": time, "dumped_at": time,
        "completeness": {"status": "ok" if complete else "partial", "complete": complete, "details": []},
        "error": None,
    }


def record(*args, **kwargs):
    """The typed record the run hands to grouping and rendering."""
    return as_record(raw_record(*args, **kwargs))


SYSRQ = ["panic", "sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger", "entry_SYSCALL_64"]
OOM = ["panic", "check_panic_on_oom", "out_of_memory", "__alloc_pages_may_oom"]


def test_discovery_groups_by_dump_id(tmp_path):
    a, b = uuid.uuid4(), uuid.uuid4()
    fleet = tmp_path / "fleet"
    (fleet / "sub").mkdir(parents=True)
    tiny_dump(fleet / "a.tsd", a)
    shutil.copy(fleet / "a.tsd", fleet / "sub" / "a-copy.tsd")  # a copy: same dump
    tiny_dump(fleet / "a-part2.tsd", a, fill=2)  # a second file of the same dump
    tiny_dump(fleet / "b.tsd", b)
    (fleet / "junk.tsd").write_bytes(b"not a dump")
    (fleet / "notes.txt").write_text("ignored")
    files = find_files([str(fleet)])
    assert [p.name for p in files] == ["a-part2.tsd", "a.tsd", "b.tsd", "junk.tsd", "a-copy.tsd"]
    dumps, bad = group_dumps(files)
    assert [x.path for x in bad] == [str(fleet / "junk.tsd")]
    by_id = {d.dump_id: d for d in dumps}
    assert set(by_id) == {str(a), str(b)}
    da = by_id[str(a)]
    assert len(da.paths) == 3 and len(da.parts) == 2  # the copy is listed, not opened twice
    assert sorted(p.rsplit("/", 1)[1] for p in da.parts) == ["a-part2.tsd", "a.tsd"]
    assert len(da.fingerprint.split(",")) == 2
    assert find_files([str(fleet / "*.tsd")]) == [p for p in files if p.parent == fleet]


def test_discovery_refuses_what_matches_nothing(tmp_path):
    with pytest.raises(TsubakiError, match="no dump files"):
        find_files([str(tmp_path / "nothing-*.tsd")])


def test_cache_hit_needs_same_files_and_options(tmp_path):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        rec = raw_record("id1", "x", SYSRQ)
        cache.put("id1", "1:10", options_key({"depth": 3}), rec)
        assert cache.get("id1", "1:10", options_key({"depth": 3})) == rec
        assert cache.get("id1", "1:10,2:20", options_key({"depth": 3})) is None  # the dump gained a file
        assert cache.get("id1", "1:10", options_key({"depth": 4})) is None
        cache.put("id2", "3:30", "{}", failed_record("id2", ["/x.tsd"], 0, "no VMCOREINFO"))
        assert cache.get("id2", "3:30", "{}") is None and len(cache) == 1  # failures are retried
    with ResultCache(tmp_path / "c.sqlite") as again:  # persisted
        assert again.get("id1", "1:10", options_key({"depth": 3}))["signature"] == rec["signature"]


def test_cache_bad_path_is_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(TsubakiError, match="cannot open the triage cache"):
        ResultCache(tmp_path / "file" / "c.sqlite")


def test_grouping_counts_times_kernels_representative():
    records = [
        record("d1", "Kernel panic - not syncing: sysrq triggered crash", SYSRQ, time="2026-01-03T00:00:00Z", complete=False),
        record("d2", "Kernel panic - not syncing: sysrq triggered crash", SYSRQ, release="6.12.0", time="2026-01-02T00:00:00Z"),
        record("d3", "Kernel panic - not syncing: sysrq triggered crash", SYSRQ, time="2026-01-01T00:00:00Z", complete=False),
        record("d4", "Kernel panic - not syncing: Out of memory", OOM),
        as_record(failed_record("d5", ["/fleet/d5.tsd"], 0, "no VMCOREINFO in the dump")
                  | {"paths": ["/fleet/d5.tsd"], "path": "/fleet/d5.tsd"}),
    ]
    groups = group_records(records)
    assert [g.count for g in groups] == [3, 1, 1]
    sysrq = groups[0]
    assert [r.dump_id for r in sysrq.records] == ["d3", "d2", "d1"]  # earliest first
    assert sysrq.representative.dump_id == "d2"  # the complete one
    assert (sysrq.first_seen, sysrq.last_seen) == ("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z")
    assert sysrq.kernel_releases == ["6.1.0", "6.12.0"]
    assert groups[-1].failed and groups[-1].signature.startswith("<analysis failed: no VMCOREINFO")
    doc = groups_json(groups)
    assert doc[0]["signature"] == "sysrq triggered crash | sysrq_handle_crash < __handle_sysrq < write_sysrq_trigger"
    assert doc[0]["dumps"] == ["/fleet/d3.tsd", "/fleet/d2.tsd", "/fleet/d1.tsd"]
    assert doc[0]["representative"]["path"] == "/fleet/d2.tsd"
    out = io.StringIO()
    render_jsonl(groups, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(x["dump_id"] for x in lines) == ["d1", "d2", "d3", "d4", "d5"]
    out = io.StringIO()
    render_text(groups, out)
    assert "3" in out.getvalue() and "sysrq_handle_crash" in out.getvalue() and "6.12.0" in out.getvalue()


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.scripts, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.sections.append(dict(attrs))
        self.scripts += tag in ("script", "img", "iframe")

    def handle_data(self, data):
        self.text.append(data)


def test_html_escapes_untrusted_strings():
    evil = "Kernel panic - not syncing: <script>alert(1)</script> & \"quoted\""
    groups = group_records([
        record("d1", evil, ["panic", "<img src=x onerror=alert(1)>"], path="/fleet/<b>bold</b>.tsd"),
        record("d2", "Kernel panic - not syncing: sysrq triggered crash", SYSRQ),
    ])
    out = io.StringIO()
    render_html(groups, out)
    page = out.getvalue()
    parser = _Collect()
    parser.feed(page)
    assert parser.scripts == 0 and "<script>" not in page and "<b>bold" not in page
    assert [s["id"] for s in parser.sections] == [f"sig-{g.signature_id}" for g in groups]
    assert "<script>alert(<n>)</script>" in "".join(parser.text)  # shown as text, normalised


def test_unanalysable_dumps_become_failed_groups(tmp_path):
    """A readable .tsd without VMCOREINFO: a failed record from the worker process, exit 4, nothing cached."""
    tiny_dump(tmp_path / "a.tsd", uuid.uuid4())
    tiny_dump(tmp_path / "b.tsd", uuid.uuid4())
    with ResultCache(tmp_path / "c.sqlite") as cache:
        run = triage([str(tmp_path)], jobs=2, cache=cache)
        assert len(run.analysed) == 2 and len(cache) == 0
    assert all(r.error and r.signature.startswith("<analysis failed") for r in run.records)
    assert len(group_records(run.records)) == 1


def test_a_dead_worker_fails_only_its_dump():
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from tsubaki_forensics.triage.discover import DumpFiles
    from tsubaki_forensics.triage.run import _result

    future: Future = Future()
    future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
    rec = _result(future, DumpFiles("id9", ("/fleet/x.tsd",), ("/fleet/x.tsd",), "1:1", 10**18))
    assert rec["dump_id"] == "id9" and rec["error"].startswith("worker died: BrokenProcessPool")
    assert rec["signature"].startswith("<analysis failed: worker died")
    one = failed_record("a", ["/f/a.tsd"], 0, "/f/a.tsd: truncated at 0x1000")
    two = failed_record("b", ["/g/b.tsd"], 0, "/g/b.tsd: truncated at 0x2000")
    assert one["signature"] == two["signature"] == "<analysis failed: <dump>: truncated at <hex>> | <no frames>"


def test_cli_bad_input(tmp_path, capsys):
    assert main(["triage", str(tmp_path / "missing"), "--no-cache"]) == 1
    assert "no dump files" in capsys.readouterr().err
    tiny_dump(tmp_path / "a.tsd", uuid.uuid4())
    assert main(["triage", str(tmp_path), "--format", "yaml", "--no-cache"]) == 1
    assert "unknown format 'yaml'" in capsys.readouterr().err
    assert main(["triage", str(tmp_path), "--jobs", "1", "--dask", "tcp://127.0.0.1:1", "--no-cache"]) == 1
    rc = main(["triage", str(tmp_path), "--dask", "tcp://127.0.0.1:1", "--dask-timeout", "1", "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot reach the Dask scheduler" in err and "Traceback" not in err
    rc = main(["triage", str(tmp_path), "-j", "1", "--format", "json", "--cache-file", str(tmp_path / "c.sqlite")])
    out = capsys.readouterr()
    assert rc == 4 and json.loads(out.out)[0]["count"] == 1


@pytest.mark.parametrize("fmt", ["text", "json", "jsonl", "html"])
def test_unreadable_files_are_in_every_output(tmp_path, capsys, fmt):
    """Not only on stderr: each report format names the file and its error."""
    tiny_dump(tmp_path / "a.tsd", uuid.uuid4())
    (tmp_path / "junk.tsd").write_bytes(b"not a dump at all")
    (tmp_path / "empty.tsd").write_bytes(b"")
    report = tmp_path / f"report.{fmt}"
    rc = main(["triage", str(tmp_path), "-j", "1", "--no-cache", "--format", fmt, "-o", str(report)])
    err = capsys.readouterr().err
    assert rc == 4 and "junk.tsd" in err
    reasons = {b.path: b.reason for b in group_dumps(find_files([str(tmp_path)]))[1]}
    assert set(map(os.path.basename, reasons)) == {"junk.tsd", "empty.tsd"}
    text = report.read_text()
    if fmt == "json":
        members = [m for g in json.loads(text) for m in g["members"] if m["unreadable"]]
        assert {m["paths"][0] for m in members} == set(reasons)
        for m in members:
            assert reasons[m["paths"][0]] in m["error"] and m["dump_id"] is None
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        bad = {r["path"]: r for r in rows if r.get("unreadable")}
        assert set(bad) == set(reasons) and all(reasons[p] in bad[p]["error"] for p in bad)
        assert sum(1 for r in rows if not r.get("unreadable")) == 1  # the readable dump, analysed (and failed)
    else:
        import html as html_module

        shown = html_module.unescape(text) if fmt == "html" else " ".join(text.split())
        for path, reason in reasons.items():
            assert path in shown or os.path.basename(path) in shown
            assert " ".join(reason.split()) in shown, (reason, shown)


def test_a_typed_record_renders_back_to_the_workers_record():
    """``--format jsonl`` prints each dump's record as the worker made it: the typed record loses nothing."""
    from tsubaki_forensics.render.triage import record_json
    from tsubaki_forensics.triage.scan import unreadable_record

    failed = failed_record("d5", ["/fleet/d5.tsd"], 10**18, "no VMCOREINFO") | {"paths": ["/fleet/d5.tsd"],
                                                                              "path": "/fleet/d5.tsd"}
    unreadable = unreadable_record("/fleet/junk.tsd", "/fleet/junk.tsd: not a .tsd dump")
    for raw in (failed, unreadable):
        typed = as_record(raw)
        assert record_json(typed) == raw
        assert typed.unreadable == bool(raw.get("unreadable")) and typed.completeness.complete is False
