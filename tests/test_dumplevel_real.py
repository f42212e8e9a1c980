"""``import -d 31`` on real crashed Debian kernels (6.1 and 6.12): what a level-31 dump keeps.

Every expectation comes from the same crash at run time: the level-1 import's
analysis (panic message, backtrace, task list, kernel log must not change
when user, cache and free pages go), makedumpfile's own ``--message-level
31`` report on 6.1 (``inspect``'s per-class counts must equal it, with the
pages above its ``max_mapnr`` that we keep, docs/FILTER.md difference 1,
taken from our classifier on the same ELF), and on 6.12, which Debian's
makedumpfile predates, the kernel's own free lists walked by drgn
(tests/_free_pages.py).
"""

from __future__ import annotations

import json
import shutil

import drgn
import pytest
from _cli import run_cli
from _free_pages import buddy_free_pages

from tsubaki_forensics.lab.makedumpfile import makedumpfile_counts
from tsubaki_forensics.pageclass import PageClassifier, kernel_program
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.tsd.records import PageClass
from tsubaki_forensics.vmcore import ElfVmcore

pytestmark = pytest.mark.realkernel
CLASSES = ("zero", "cache", "cache_private", "user", "free", "hwpoison", "offline")
CRASHES = [("6.1", "busy", "512M"), ("6.1", "idle", "512M"), ("6.12", "busy", "1G")]


def cli(*args, ok=True):
    return run_cli(*args, ok=ok, timeout=1800)


@pytest.fixture(scope="module")
def imported(crash_lab, tmp_path_factory):
    """(crash, level-1 .tsd, level-31 .tsd) per crash, imported once through the CLI."""
    made = {}

    def get(kernel, workload, mem):
        key = (kernel, workload, mem)
        if key not in made:
            crash = crash_lab(kernel=kernel, workload=workload, mem=mem)
            d = tmp_path_factory.mktemp(f"dl-{kernel}-{workload}")
            cli("import", crash.vmcore, "-o", d / "l1.tsd")
            cli("import", crash.vmcore, "-o", d / "l31.tsd", "-d", "31")
            made[key] = (crash, d / "l1.tsd", d / "l31.tsd")
        return made[key]

    return get


def analysis(path) -> dict:
    """The analyses' facts and tables, by name (timings dropped)."""
    proc = cli("analyze", path, "--format", "json", ok=False)
    assert proc.returncode in (0, 4), proc.stderr
    report = json.loads(proc.stdout)
    return {a["name"]: {"status": a["status"], "facts": a["facts"], "tables": a["tables"],
                        "completeness": a["completeness"]} for a in report["analyses"]}


@pytest.mark.parametrize("kernel,workload,mem", CRASHES)
def test_level_31_analyzes_exactly_as_level_1(imported, kernel, workload, mem):
    _, l1, l31 = imported(kernel, workload, mem)
    full, filtered = analysis(l1), analysis(l31)
    assert full["panic"]["facts"]["panic_message"]  # something to compare
    assert full["tasks"]["facts"]["tasks"] > 1
    for name in ("panic", "tasks", "dmesg"):
        assert filtered[name] == full[name], name
    assert filtered["panic"]["status"] == "ok"


@pytest.mark.parametrize("kernel,workload,mem", CRASHES)
def test_level_31_is_complete_smaller_and_says_its_level(imported, kernel, workload, mem):
    _, l1, l31 = imported(kernel, workload, mem)
    proc = cli("verify", l31)
    assert "OK: every record is sound" in proc.stdout
    info = json.loads(cli("inspect", l31, "--format", "json").stdout)
    full = json.loads(cli("inspect", l1, "--format", "json").stdout)
    m = info["memory"]
    assert info["format"] == "1.4" and full["format"] == "1.3"
    assert (m["dump_level"], full["memory"]["dump_level"]) == (31, 1)
    assert info["complete"] is True and m["missing_bytes"] == 0
    pages = m["pages"]
    assert pages["total"] == full["memory"]["pages"]["total"]
    assert pages["kept"] + sum(pages["excluded"].values()) == pages["total"]
    assert m["excluded_bytes"] == 4096 * sum(v for k, v in pages["excluded"].items() if k != "zero")
    assert l31.stat().st_size < l1.stat().st_size


@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")
@pytest.mark.parametrize("workload", ["busy", "idle"])
def test_6_1_inspect_counts_equal_makedumpfile_report(imported, tmp_path, workload):
    crash, _, l31 = imported("6.1", workload, "512M")
    pages = json.loads(cli("inspect", l31, "--format", "json").stdout)["memory"]["pages"]
    theirs = makedumpfile_counts(crash.vmcore, 31)
    with ElfVmcore(crash.vmcore) as vmcore:  # what we keep above makedumpfile's max_mapnr
        c = PageClassifier(vmcore, vmcore.vmcoreinfo)
        r = c.classify(31)
        above = r.classes[c.managed_end_pfn:]
        extra = {k: int((above == PageClass[k.upper()]).sum()) for k in CLASSES}
        extra_total = int((above != PageClass.ABSENT).sum())
    assert pages["total"] == theirs["total"] + extra_total
    assert pages["kept"] == theirs["kept"] + extra_total - sum(extra.values())
    for k in CLASSES:
        assert pages["excluded"][k] == theirs[k] + extra[k], k
    assert pages["excluded"]["user"] > 0 and pages["excluded"]["free"] > 0


def test_6_12_free_pages_equal_the_kernels_count(imported):
    crash, _, l31 = imported("6.12", "busy", "1G")
    pages = json.loads(cli("inspect", l31, "--format", "json").stdout)["memory"]["pages"]
    assert pages["excluded"]["free"] == buddy_free_pages(crash.vmcore, crash.vmlinux)


def test_drgn_read_of_an_excluded_user_page_names_its_class(imported):
    _, _, l31 = imported("6.1", "busy", "512M")
    with open_dump(l31) as dump:
        user = next(r for r in dump.excluded if r.cls == PageClass.USER)
        prog = kernel_program(dump.memory, dump.vmcoreinfo)
        with pytest.raises(drgn.FaultError) as e:
            prog.read(user.paddr + 16, 8, True)
        assert e.value.message == "excluded by dump level 31 (user data)"
        assert e.value.address == user.paddr + 16


def test_level_31_round_trips_through_an_elf(imported, tmp_path):
    _, _, l31 = imported("6.1", "busy", "512M")
    elf, back = tmp_path / "x.elf", tmp_path / "back.tsd"
    cli("export", l31, "-o", elf)
    cli("import", elf, "-o", back)
    a = json.loads(cli("inspect", l31, "--format", "json").stdout)["memory"]
    b = json.loads(cli("inspect", back, "--format", "json").stdout)["memory"]
    assert (b["dump_level"], b["pages"]) == (a["dump_level"], a["pages"])
    with open_dump(l31) as x, open_dump(back) as y:
        assert x.excluded == y.excluded
        assert x.memory_map == y.memory_map
    assert analysis(back) == analysis(l31)
