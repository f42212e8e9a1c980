"""Triage on real crashed kernels from the crash lab: grouping, outputs, cache, Dask, a real browser.

The fleet: three sysrq crashes (idle and busy workloads on 6.1, idle on 6.12),
one OOM, one NMI panic, and a byte copy of one sysrq dump under another name
(same dump id: one dump with two paths).  An init-exit crash arrives later to
check that only it is analysed.  Every dump is 512 MiB; signatures are checked
against ones computed from the lab's ground truth (plain drgn, independent of
our analysis).
"""

from __future__ import annotations

import dataclasses

import datetime as dt
import io
import json
import os
import shutil
import subprocess
from contextlib import redirect_stdout
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tsubaki_forensics.cli.app import main
from tsubaki_forensics.lab import get_scenario
from tsubaki_forensics.lab.ground_truth import panic_entry
from tsubaki_forensics.triage.cache import ResultCache
from tsubaki_forensics.triage.report import group_records
from tsubaki_forensics.triage.run import triage
from tsubaki_forensics.triage.signature import make_signature
from tsubaki_forensics.vmcore.importer import import_vmcore

pytestmark = [pytest.mark.realkernel, pytest.mark.slow]

FLEET = {
    "sysrq-idle-61": dict(scenario="sysrq"),
    "sysrq-busy-61": dict(scenario="sysrq", workload="busy"),
    "sysrq-idle-612": dict(scenario="sysrq", kernel="6.12"),
    "oom-idle-61": dict(scenario="oom"),
    "nmi-idle-61": dict(scenario="nmi"),
}
LATE = ("init-exit-idle-61", dict(scenario="init-exit"))
CHROMIUM = Path("/usr/bin/chromium")


def expected_signature(crash):
    """The signature the ground truth implies (ground truth messages lack the 'Kernel panic' prefix)."""
    return make_signature(crash.ground_truth["panic_message"], crash.ground_truth["backtrace"]).key


@pytest.fixture(scope="module")
def fleet(crash_lab, tmp_path_factory):
    """``(directory, {name: CrashResult}, late .tsd path, late crash, cache file after one local run, that run)``."""
    root = tmp_path_factory.mktemp("triage")
    directory = root / "fleet"
    directory.mkdir()
    crashes = {}
    for name, params in FLEET.items():
        crashes[name] = crash_lab(**params)
        import_vmcore(crashes[name].vmcore, directory / f"{name}.tsd")
    shutil.copy(directory / "sysrq-idle-61.tsd", directory / "copy-of-sysrq-idle-61.tsd")
    late_crash = crash_lab(**LATE[1])
    late = root / f"{LATE[0]}.tsd"
    import_vmcore(late_crash.vmcore, late)
    cache_file = root / "cache.sqlite"
    with ResultCache(cache_file) as cache:
        run = triage([str(directory)], jobs=2, cache=cache)
    return directory, crashes, late, late_crash, cache_file, run


def linked_copy(directory: Path, target: Path) -> Path:
    """The fleet under another directory, as hard links (no 200 MB of copying)."""
    target.mkdir()
    for f in directory.iterdir():
        os.link(f, target / f.name)
    return target


def by_signature(records):
    return {g.signature: sorted(r.dump_id for r in g.records) for g in group_records(records)}


def test_groups_follow_scenarios(fleet):
    directory, crashes, _, _, _, run = fleet
    assert run.engine == "local" and run.workers == 2 and not run.unreadable
    assert len(run.records) == len(FLEET) and len(run.analysed) == len(FLEET)  # the copy is not a dump of its own
    records = {Path(r.path).stem: r for r in run.records}
    copy = records.get("copy-of-sysrq-idle-61") or records["sysrq-idle-61"]
    assert sorted(Path(p).name for p in copy.paths) == ["copy-of-sysrq-idle-61.tsd", "sysrq-idle-61.tsd"]
    for name, crash in crashes.items():
        rec = next(r for r in run.records if str(directory / f"{name}.tsd") in r.paths)
        assert rec.error is None and rec.completeness.status == "ok", rec
        assert rec.signature == expected_signature(crash), name
        assert rec.kernel_release == crash.ground_truth["kernel_release"]
        assert rec.crashed_pid == crash.ground_truth["crashed_pid"]
        # The kernel's own clock at the panic, against QEMU's host-clock stamp on the same
        # panic (GUEST_PANICKED): they differ by the guest's clock skew only, not by how long
        # the lab took afterwards to dump and write its manifest (issue 23).
        stamp = crash.manifest["panic_event"]["timestamp"]
        made = dt.datetime.fromtimestamp(stamp["seconds"] + stamp["microseconds"] / 1e6, dt.timezone.utc)
        seen = dt.datetime.fromisoformat(rec.crash_time.replace("Z", "+00:00"))
        assert abs((seen - made).total_seconds()) < 60, (name, seen, made)
    groups = group_records(run.records)
    assert sorted(g.count for g in groups) == [1, 1, 3]
    sysrq = groups[0]
    sysrq_truth = crashes["sysrq-idle-61"].ground_truth
    assert sysrq.frames == make_signature(sysrq_truth["panic_message"], sysrq_truth["backtrace"]).frames
    assert sysrq.frames[0] == get_scenario("sysrq").expected_frames[0]  # what called panic: the sysrq handler
    assert sysrq.kernel_releases == sorted({crashes[n].ground_truth["kernel_release"] for n in FLEET if n.startswith("sysrq")})
    assert len(sysrq.kernel_releases) == 2
    assert len({g.signature for g in groups}) == 3


def test_cache_analyses_only_new_dumps(fleet, tmp_path):
    directory, _, late, late_crash, cache_file, first = fleet
    growing = linked_copy(directory, tmp_path / "fleet")
    shutil.copy(cache_file, tmp_path / "cache.sqlite")
    with ResultCache(tmp_path / "cache.sqlite") as cache:
        again = triage([str(growing)], jobs=2, cache=cache)
        assert again.analysed == [] and len(again.cached) == len(FLEET)
        assert by_signature(again.records) == by_signature(first.records)
        os.link(late, growing / late.name)
        grown = triage([str(growing)], jobs=2, cache=cache)
        assert len(grown.analysed) == 1 and len(grown.cached) == len(FLEET)
        new = next(r for r in grown.records if r.dump_id == grown.analysed[0])
        assert new.path == str(growing / late.name) and new.signature == expected_signature(late_crash)
        shutil.copy(late, growing / "copy-of-late.tsd")  # a copy: same dump id, same files: nothing to do
        copied = triage([str(growing)], jobs=2, cache=cache)
        assert copied.analysed == [] and len(copied.records) == len(FLEET) + 1


def run_cli(args):
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(args)
    return rc, out.getvalue()


def test_json_and_jsonl_outputs(fleet, tmp_path):
    directory, _, _, _, cache_file, first = fleet
    shutil.copy(cache_file, tmp_path / "cache.sqlite")
    common = [str(directory / "*.tsd"), "--cache-file", str(tmp_path / "cache.sqlite")]
    rc, out = run_cli(["triage", *common, "--format", "json"])
    assert rc == 0
    groups = json.loads(out)
    assert isinstance(groups, list) and [g["count"] for g in groups] == [3, 1, 1]
    for g in groups:
        assert {"signature", "count", "dumps", "first_seen", "last_seen", "kernel_releases", "representative"} <= set(g)
        assert len(g["dumps"]) == g["count"] and all(Path(p).is_file() for p in g["dumps"])
        assert g["representative"]["path"] in g["dumps"]
        backtrace = [f.split(".")[0] for f in g["representative"]["backtrace"]]
        entry = panic_entry(backtrace)  # panic, or vpanic since 6.12.118: found by property, not name
        assert entry is not None, backtrace
        below = iter(backtrace[entry:])
        assert all(f in below for f in g["frames"])  # the signature's frames, in order, below the panic entry
    assert {g["signature"]: g["count"] for g in groups} == {s: len(ids) for s, ids in by_signature(first.records).items()}
    rc, out = run_cli(["triage", *common, "--format", "jsonl"])
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(lines) == len(FLEET)
    assert sorted(x["dump_id"] for x in lines) == sorted(r.dump_id for r in first.records)
    assert all(x["signature"] and x["kernel_release"] and x["paths"] for x in lines)


def test_dask_local_cluster_gives_the_same_groups(fleet):
    distributed = pytest.importorskip("distributed")
    directory, _, _, _, _, first = fleet
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run = triage([str(directory)], dask=cluster.scheduler_address, cache=None)
    assert run.engine == "dask" and run.workers == 2 and len(run.analysed) == len(FLEET)
    assert by_signature(run.records) == by_signature(first.records)
    assert [dataclasses.replace(r, seconds=0.0) for r in run.records] == [
        dataclasses.replace(r, seconds=0.0) for r in first.records]


class _Sections(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections: list[dict] = []
        self._in: int = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.sections.append(dict(attrs))
            self._in += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self._in -= 1

    def handle_data(self, data):
        if self._in:
            self.text.append(data)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)")
def test_html_report_renders_in_chromium(fleet, tmp_path):
    directory, _, _, _, cache_file, first = fleet
    shutil.copy(cache_file, tmp_path / "cache.sqlite")
    report = tmp_path / "report.html"
    rc, _ = run_cli(["triage", str(directory), "--cache-file", str(tmp_path / "cache.sqlite"), "--format", "html", "-o", str(report)])
    assert rc == 0
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout
    parsed = _Sections()
    parsed.feed(dom)
    groups = group_records(first.records)
    assert [s["id"] for s in parsed.sections] == [f"sig-{g.signature_id}" for g in groups]
    assert [int(s["data-count"]) for s in parsed.sections] == [3, 1, 1]
    text = " ".join(parsed.text)
    for g in groups:
        assert g.message in text and all(f in text for f in g.frames)
        assert g.representative.path in text


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_self_contained_crash_time_is_the_kernels_clock(crash_lab, tmp_path, kernel):
    """No vmlinux: the crash time is still tk_core's xtime_sec (read here with DWARF), not the file's time."""
    import drgn

    from tsubaki_forensics.triage.scan import iso_utc, scan_dump

    crash = crash_lab(kernel=kernel)
    path = tmp_path / "d.tsd"
    import_vmcore(crash.vmcore, path)
    dwarf = drgn.Program()
    dwarf.set_core_dump(str(crash.vmcore))
    dwarf.load_debug_info([str(crash.vmlinux)])
    truth = dwarf["tk_core"].timekeeper.xtime_sec.value_()
    os.utime(path, (0, 0))  # the file's own time must not matter
    rec = scan_dump("x", [str(path)], 10**9, {"self_contained": True})
    assert rec["error"] is None and rec["debug_info"] == "self-contained (BTF)"
    assert rec["crash_time"] == iso_utc(truth) and rec["crash_time"] != rec["dumped_at"]
