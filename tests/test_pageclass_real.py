"""Page classes on real crashed Debian kernels, against makedumpfile and the kernel itself.

Expectations come from the same crash at run time: makedumpfile's own report
(on a /proc/vmcore-style copy, which it accepts) and, on 6.12, the kernel's
own free lists walked by drgn with the DWARF vmlinux (tests/_free_pages.py).
We compare below makedumpfile's ``max_mapnr`` (the end of the last section
that has struct pages): makedumpfile neither counts nor writes the pages above
it (QEMU's BIOS ROM), while we keep them (docs/FILTER.md).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _free_pages import buddy_free_pages

from tsubaki_forensics.lab.makedumpfile import makedumpfile_counts
from tsubaki_forensics.errors import PageClassError
from tsubaki_forensics.pageclass import PageClass, PageClassifier
from tsubaki_forensics.pageclass.features import Feature
from tsubaki_forensics.vmcore import ElfVmcore
from tsubaki_forensics.vmcore.export import copy_as_proc_vmcore

pytestmark = [pytest.mark.realkernel,
              pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")]

LEVELS = (31, 1, 2, 4, 8, 16, 6, 30)


@pytest.fixture(scope="module")
def proc_copies(tmp_path_factory):
    """One /proc/vmcore-style copy per crash, made on first use."""
    made: dict[Path, Path] = {}

    def get(vmcore: Path) -> Path:
        if vmcore not in made:
            made[vmcore] = tmp_path_factory.mktemp("proc") / "vmcore"
            copy_as_proc_vmcore(vmcore, made[vmcore])
        return made[vmcore]

    return get


def ours(classifier: PageClassifier, level: int) -> dict[str, int]:
    r = classifier.classify(level).below(classifier.managed_end_pfn)
    return {**r.counts(), "total": r.total, "kept": r.kept}


def theirs(vmcore: Path, proc: Path, level: int) -> dict[str, int]:
    m = makedumpfile_counts(vmcore, level, proc_copy=proc)
    return {k: m[k] for k in ("zero", "cache", "cache_private", "user", "free", "hwpoison", "offline",
                              "total", "kept")}


# -- 6.1: every class equals makedumpfile's report ----------------------------------------

@pytest.mark.parametrize("workload", ["idle", "busy"])
def test_6_1_counts_equal_makedumpfile_at_every_level(crash_lab, proc_copies, workload):
    crash = crash_lab(workload=workload)
    proc = proc_copies(crash.vmcore)
    with ElfVmcore(crash.vmcore) as vmcore:
        c = PageClassifier(vmcore, vmcore.vmcoreinfo)
        for level in LEVELS:
            assert ours(c, level) == theirs(crash.vmcore, proc, level), f"level {level}"
        r31 = c.classify(31)
    # something was filtered, and kept + excluded add up on the whole dump too
    assert r31.counts()["free"] > 0 and r31.counts()["zero"] > 0
    assert r31.kept + sum(r31.counts().values()) == r31.total


def test_6_1_busy_has_user_and_cache_pages(crash_lab):
    """The busy workload's anonymous and page-cache memory is found (not an empty filter)."""
    crash = crash_lab(workload="busy")
    with ElfVmcore(crash.vmcore) as vmcore:
        counts = PageClassifier(vmcore, vmcore.vmcoreinfo).classify(31).counts()
    assert counts["user"] > 0 and counts["cache"] > 0


def test_same_classes_from_a_tsd_as_from_the_elf(crash_lab, tmp_path):
    """The .tsd reader (ranges with a kind, known-zero ranges) gives the same answer."""
    from tsubaki_forensics.tsd import open_dump
    from tsubaki_forensics.vmcore.importer import import_vmcore

    crash = crash_lab(workload="busy")
    import_vmcore(crash.vmcore, tmp_path / "d.tsd")
    with ElfVmcore(crash.vmcore) as vmcore, open_dump(tmp_path / "d.tsd") as dump:
        a = PageClassifier(vmcore, vmcore.vmcoreinfo)
        b = PageClassifier(dump.memory, dump.vmcoreinfo)
        for level in (31, 1, 16):
            assert np.array_equal(a.classify(level).classes, b.classify(level).classes), level


def test_excluded_runs_rebuild_the_classes(real_crash):
    with ElfVmcore(real_crash.vmcore) as vmcore:
        r = PageClassifier(vmcore, vmcore.vmcoreinfo).classify(31)
    rebuilt = np.where(r.classes == PageClass.ABSENT, PageClass.ABSENT, PageClass.KEPT).astype(np.uint8)
    for run in r.excluded_runs():
        rebuilt[run.pfn:run.pfn + run.count] = run.cls
    assert np.array_equal(rebuilt, r.classes)
    assert sum(run.count for run in r.excluded_runs()) == r.total - r.kept


# -- 6.12: free pages equal the kernel's own free lists; the rest is makedumpfile 1.7.2's age -------

def as_makedumpfile_1_7_2_reads_it(vmcoreinfo: bytes) -> str:
    """The VMCOREINFO as makedumpfile 1.7.2 understands it (docs/FILTER.md, "6.12").

    1.7.2 does not know ``PAGE_SLAB_MAPCOUNT_VALUE`` (slab pages are then
    told by ``1UL << NUMBER(PG_slab)`` with the not-found value -1, which is
    bit 63 on x86_64) nor ``PAGE_HUGETLB_MAPCOUNT_VALUE`` (so it reads no
    compound order and no hugetlb mark).
    """
    text = vmcoreinfo.decode()
    text = re.sub(r"NUMBER\(PAGE_SLAB_MAPCOUNT_VALUE\)=[^\n]*", "NUMBER(PG_slab)=63", text)
    return re.sub(r"NUMBER\(PAGE_HUGETLB_MAPCOUNT_VALUE\)=[^\n]*\n", "", text)


@pytest.mark.parametrize("workload,mem", [("idle", "512M"), ("busy", "1G")])
def test_6_12_free_pages_equal_the_buddy_free_lists(crash_lab, workload, mem):
    crash = crash_lab(kernel="6.12", workload=workload, mem=mem)
    with ElfVmcore(crash.vmcore) as vmcore:
        r = PageClassifier(vmcore, vmcore.vmcoreinfo).classify(16)
    assert r.counts()["free"] == buddy_free_pages(crash.vmcore, crash.vmlinux)
    assert int((np.int64(1) << r.free_blocks[:, 1]).sum()) == r.counts()["free"]  # whole blocks


@pytest.mark.parametrize("workload,mem", [("idle", "512M"), ("busy", "1G")])
def test_6_12_differences_from_makedumpfile_1_7_2_are_only_the_fields_it_predates(
        crash_lab, proc_copies, workload, mem):
    crash = crash_lab(kernel="6.12", workload=workload, mem=mem)
    proc = proc_copies(crash.vmcore)
    with ElfVmcore(crash.vmcore) as vmcore:
        old = PageClassifier(vmcore, as_makedumpfile_1_7_2_reads_it(vmcore.vmcoreinfo))
        for level in (31, 1, 8, 2):
            assert ours(old, level) == theirs(crash.vmcore, proc, level), f"level {level}"
        new = PageClassifier(vmcore, vmcore.vmcoreinfo)
        a, b = old.classify(31).classes, new.classify(31).classes
        tail = (new.features.bits & np.uint16(Feature.TAIL)) != 0
    # Every page the newer fields move is a slab page 1.7.2 took for user data (now kept,
    # or zero), or a tail of a large folio that 1.7.2 could not size (now follows its head).
    differ = np.flatnonzero(a != b)
    slab_misread = (a[differ] == PageClass.USER) & np.isin(b[differ], (PageClass.KEPT, PageClass.ZERO))
    folio_tail = np.isin(a[differ], (PageClass.KEPT, PageClass.ZERO)) & tail[differ]
    assert np.all(slab_misread | folio_tail), differ[~(slab_misread | folio_tail)][:10]


@pytest.mark.parametrize("field,level", [("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", 31), ("OFFSET(page.compound_head)", 2),
                                         ("SYMBOL(mem_section)", 16), ("NUMBER(PG_lru)", 8)])
def test_real_vmcoreinfo_without_a_field_is_one_error_naming_it(real_crash, field, level):
    with ElfVmcore(real_crash.vmcore) as vmcore:
        text = "".join(line + "\n" for line in vmcore.vmcoreinfo.decode().splitlines()
                       if not line.startswith(field + "="))
        assert text != vmcore.vmcoreinfo.decode()
        with pytest.raises(PageClassError) as e:
            PageClassifier(vmcore, text).classify(level)
    assert e.value.field == field and field in str(e.value) and "\n" not in str(e.value)
