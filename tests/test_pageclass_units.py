"""Page classification rules on synthetic struct-page arrays (no kernel, no QEMU).

The vectorised rules are checked case by case and, on seeded random arrays,
against a page-by-page transcription of makedumpfile's walk
(``pageclass_synth.reference``).
"""

from __future__ import annotations

import drgn
import numpy as np
import pytest

from pageclass_synth import FOLIO, OLD, PAGE, VMEMMAP, Pages, reference, without
from tsubaki_forensics.errors import PageClassError, TsubakiError
from tsubaki_forensics.pageclass import PageClass, PageClassifier, classify, page_layout
from tsubaki_forensics.pageclass.features import PageFeatures, extract_features
from tsubaki_forensics.pageclass.rules import classify_struct_pages
from tsubaki_forensics.pageclass.zero import zero_mask

K, Z, C, CP, U, F, HW, OFFL = (PageClass.KEPT, PageClass.ZERO, PageClass.CACHE, PageClass.CACHE_PRIVATE,
                              PageClass.USER, PageClass.FREE, PageClass.HWPOISON, PageClass.OFFLINE)


def run(pages: Pages, level: int, text: str | None = None) -> np.ndarray:
    layout = page_layout(text or (OLD if pages.era == "old" else FOLIO))
    feat = PageFeatures.empty(pages.a.size)
    extract_features(pages.raw(), 0, layout, feat)
    if not layout.walks_struct_pages(level):
        return np.zeros(pages.a.size, np.uint8)
    cls, _ = classify_struct_pages(feat, level, free_area_orders=layout.free_area_orders)
    return cls


# -- one rule at a time -----------------------------------------------------------------

@pytest.mark.parametrize("era", ["old", "folio"])
def test_buddy_block_is_free_as_a_whole_only_with_bit_16(era):
    p = Pages(64, era).buddy(8, 3)
    assert list(run(p, 16)[8:16]) == [F] * 8
    assert run(p, 16)[16] == K and run(p, 16)[7] == K
    assert not run(p, 15).any()


def test_buddy_with_an_impossible_order_is_kept():
    p = Pages(64).buddy(0, 11)  # LENGTH(zone.free_area)=11: orders 0..10
    assert not run(p, 31).any()


def test_free_blocks_are_reported_with_their_order():
    p = Pages(64).buddy(16, 4).buddy(4, 0)
    layout = page_layout(OLD)
    feat = PageFeatures.empty(64)
    extract_features(p.raw(), 0, layout, feat)
    _, free = classify_struct_pages(feat, 16, free_area_orders=11)
    assert free.tolist() == [[4, 0], [16, 4]]


@pytest.mark.parametrize("era", ["old", "folio"])
def test_cache_private_and_non_private(era):
    p = Pages(8, era).cache(1).cache(2, private=True)
    assert (run(p, 2)[1], run(p, 2)[2]) == (C, K)
    assert (run(p, 4)[1], run(p, 4)[2]) == (C, CP)  # bit 4 takes non-private cache too
    assert (run(p, 6)[1], run(p, 6)[2]) == (C, CP)
    assert not run(p, 8).any()


def test_swap_cache_counts_as_cache_only_when_swap_backed():
    p = Pages(8).flag(1, "swapcache").flag(2, "swapcache", "swapbacked")
    assert (run(p, 2)[1], run(p, 2)[2]) == (K, C)
    text = without(OLD, "NUMBER(PG_swapbacked)")  # kernels before 4.10: swapcache alone
    assert run(p, 2, text)[1] == C


@pytest.mark.parametrize("era", ["old", "folio"])
def test_anonymous_pages_are_user_data_not_cache(era):
    p = Pages(8, era).anon(3)
    assert run(p, 2)[3] == K and run(p, 6)[3] == K
    assert run(p, 8)[3] == U


@pytest.mark.parametrize("era", ["old", "folio"])
def test_slab_word_that_looks_anonymous_is_not_user_data(era):
    p = Pages(8, era).slab(5)
    assert not run(p, 31).any()


@pytest.mark.parametrize("era", ["old", "folio"])
def test_compound_page_follows_its_head(era):
    p = Pages(64, era).compound(32, 2).cache(32)
    assert list(run(p, 2)[32:36]) == [C] * 4 and run(p, 2)[36] == K
    kept = Pages(64, era).compound(32, 2)  # head kept: tails are kept with it
    kept.flag(33, "lru")                   # even a tail that looks like cache
    assert not run(kept, 31).any()


@pytest.mark.parametrize("era", ["old", "folio"])
def test_hugetlb_is_user_data(era):
    p = Pages(64, era).compound(16, 3, hugetlb=True)
    assert list(run(p, 8)[16:24]) == [U] * 8
    assert not run(p, 7).any()


def test_misaligned_compound_order_counts_only_the_head():
    p = Pages(64).compound(2, 2).cache(2)  # order 2 at pfn 2: not aligned, order taken as 0
    assert list(run(p, 2)[2:6]) == [C, K, K, K]


def test_hwpoison_and_offline_go_at_every_level_when_the_kernel_publishes_pg_hwpoison():
    p = Pages(8, "folio").flag(1, "hwpoison")
    p.a["mapcount"][2] = -257
    for level in (0, 1, 31):
        r = run(p, level)
        assert (r[1], r[2]) == (HW, OFFL)
    old = Pages(8, "old")
    old.a["mapcount"][2] = -257
    assert run(old, 1)[2] == K      # no PG_hwpoison: makedumpfile does not walk at level 1
    assert run(old, 2)[2] == OFFL   # but any walk drops offline pages


def test_a_page_counts_once_in_the_first_class_that_takes_it():
    p = Pages(32).buddy(8, 3).anon(9).cache(10)  # stale struct pages inside a free block
    assert list(run(p, 31)[8:16]) == [F] * 8
    assert list(run(p, 15)[8:12]) == [K, U, C, K]


# -- against makedumpfile's walk, on random arrays --------------------------------------

@pytest.mark.parametrize("era", ["old", "folio"])
@pytest.mark.parametrize("seed", range(6))
def test_vectorised_rules_equal_the_page_by_page_walk(era, seed):
    rng = np.random.default_rng(seed)
    n = 2048
    p = Pages(n, era)
    for pfn in rng.choice(n, 300, replace=False).tolist():
        kind = rng.integers(0, 9)
        if kind == 0:  # the buddy allocator keeps blocks aligned to their size
            order = int(rng.integers(0, 12))
            p.buddy(pfn & ~((1 << min(order, 10)) - 1), order)
        elif kind == 1:
            p.cache(pfn, private=bool(rng.integers(0, 2)))
        elif kind == 2:
            p.anon(pfn)
        elif kind == 3:
            p.slab(pfn)
        elif kind == 4 and pfn + 16 < n:
            order = int(rng.integers(1, 5))
            head = pfn & ~((1 << order) - 1)
            if rng.integers(0, 3) == 0:
                head = pfn  # sometimes misaligned
            p.compound(head, order, hugetlb=bool(rng.integers(0, 3) == 0))
            [p.cache, p.anon, lambda x: p][int(rng.integers(0, 3))](head)
        elif kind == 5:
            p.flag(pfn, "hwpoison")
        elif kind == 6:
            p.a["mapcount"][pfn] = -257
        elif kind == 7:
            p.flag(pfn, "swapcache", *(["swapbacked"] if rng.integers(0, 2) else []))
    for level in range(32):
        expect = reference(p, level)
        got = run(p, level)
        assert np.array_equal(got, expect), (level, np.flatnonzero(got != expect)[:10])


# -- zero pages -------------------------------------------------------------------------

def test_zero_mask_sees_a_single_nonzero_byte_anywhere():
    buf = bytearray(PAGE * 4)
    buf[PAGE + PAGE - 1] = 1     # last byte of page 1
    buf[2 * PAGE] = 1            # first byte of page 2
    buf[3 * PAGE + 1000] = 0x80  # middle of page 3
    assert zero_mask(bytes(buf), PAGE).tolist() == [True, False, False, False]


# -- the whole classifier on a fake kernel ------------------------------------------------

class FakeKernel:
    """Physical memory plus a virtual view (the part of drgn the classifier uses)."""

    MEM_SECTION = 0xFFFF888000100000
    ROOT = 0xFFFF888000200000

    def __init__(self, pages: Pages, ram: bytearray, *, sections: int) -> None:
        self.ram = ram
        roots = np.zeros(4, "<u8")
        roots[0] = self.ROOT
        secs = np.zeros(PAGE // 8, "<u8")
        secs[0:2 * sections:2] = VMEMMAP | 0b11  # present, has a mem_map
        self.virt = {self.MEM_SECTION: roots.tobytes(), self.ROOT: secs.tobytes(), VMEMMAP: pages.raw()}

    def read(self, addr: int, size: int, physical: bool = False) -> bytes:
        for base, blob in self.virt.items():
            if base <= addr and addr + size <= base + len(blob):
                return blob[addr - base:addr - base + size]
        raise drgn.FaultError("not mapped", addr)

    # PhysicalReader
    def ranges(self):
        return [(0, len(self.ram))]

    def pread(self, paddr: int, size: int) -> bytes:
        return bytes(self.ram[paddr:paddr + size])


class Memory:
    def __init__(self, k: FakeKernel) -> None:
        self.k = k

    def ranges(self):
        return self.k.ranges()

    def read(self, paddr, size):
        return self.k.pread(paddr, size)


def fake(n: int = 512, era: str = "old") -> tuple[Pages, FakeKernel]:
    pages = Pages(n, era)
    ram = bytearray(n * PAGE)
    for pfn in range(0, n, 2):  # even pages hold data, odd pages are zero
        ram[pfn * PAGE + 17] = 0xAA
    return pages, FakeKernel(pages, ram, sections=n // 256)


def test_classifier_counts_like_makedumpfile_zero_last():
    pages, k = fake()
    pages.buddy(64, 4).anon(2).anon(3).cache(4)
    k.virt[VMEMMAP] = pages.raw()
    c = PageClassifier(Memory(k), OLD, prog=k)
    r = c.classify(31)
    counts = r.counts()
    assert counts["free"] == 16 and counts["user"] == 2 and counts["cache"] == 1
    # zero: the odd pages among those no struct-page rule took (64..79 went as free, 3 as user)
    assert counts["zero"] == 256 - 8 - 1
    assert r.kept + sum(counts.values()) == r.total == 512
    assert c.classify(1).counts()["zero"] == 256  # level 1: every zero page
    assert c.managed_end_pfn == 512


def test_excluded_runs_cover_exactly_the_excluded_pages():
    pages, k = fake()
    pages.buddy(64, 4).cache(80).cache(81).anon(82)
    k.virt[VMEMMAP] = pages.raw()
    r = PageClassifier(Memory(k), OLD, prog=k).classify(30)
    runs = list(r.excluded_runs())
    assert [(x.pfn, x.count, x.cls) for x in runs] == [(64, 16, F), (80, 2, C), (82, 1, U)]
    mask = np.zeros(512, bool)
    for x in runs:
        mask[x.pfn:x.pfn + x.count] = True
    assert np.array_equal(mask, r.excluded_mask())


def test_pages_whose_struct_page_is_missing_are_kept_and_counted():
    pages, k = fake(512)
    for pfn in range(0, 128):
        pages.buddy(pfn, 0)
    raw = pages.raw()
    k.virt = {**k.virt, VMEMMAP: raw[:PAGE]}  # only the first 64 struct pages are in the dump
    r = PageClassifier(Memory(k), OLD, prog=k).classify(16)
    assert r.counts()["free"] == 64
    assert r.unclassified == 512 - 64


@pytest.mark.parametrize("field", ["SIZE(page)", "OFFSET(page.flags)", "OFFSET(page._mapcount)",
                                   "NUMBER(PG_lru)", "NUMBER(PG_head_mask)",
                                   "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", "SYMBOL(mem_section)",
                                   "OFFSET(page.compound_head)", "LENGTH(zone.free_area)"])
def test_missing_field_is_one_error_naming_it(field):
    pages, k = fake()
    c = PageClassifier(Memory(k), without(OLD, field), prog=k)
    with pytest.raises(PageClassError) as e:
        c.classify(31)
    assert field in str(e.value) and e.value.field == field and "\n" not in str(e.value)
    assert isinstance(e.value, TsubakiError)


def test_level_1_needs_no_struct_page_field_on_a_kernel_without_pg_hwpoison():
    pages, k = fake()
    r = PageClassifier(Memory(k), without(OLD, "SIZE(page)"), prog=k).classify(1)
    assert r.counts()["zero"] == 256


def test_free_needs_buddy_value_but_cache_does_not():
    pages, k = fake()
    pages.cache(10)
    k.virt[VMEMMAP] = pages.raw()
    c = PageClassifier(Memory(k), without(OLD, "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"), prog=k)
    assert c.classify(2).counts()["cache"] == 1
    with pytest.raises(PageClassError, match="PAGE_BUDDY_MAPCOUNT_VALUE"):
        c.classify(16)


@pytest.mark.parametrize("bad", [-1, 32, 3.0, "31", True])
def test_dump_level_out_of_range(bad):
    pages, k = fake()
    with pytest.raises(PageClassError, match="dump level"):
        classify(Memory(k), OLD, bad, prog=k)


@pytest.mark.parametrize("text", [None, b"", b"OSRELEASE=x\n"])
def test_no_vmcoreinfo_or_no_pagesize(text):
    pages, k = fake()
    with pytest.raises(PageClassError):
        PageClassifier(Memory(k), text, prog=k)


def test_struct_pages_that_do_not_decode_are_an_error():
    pages, k = fake()
    k.virt[FakeKernel.ROOT] = bytes(PAGE)  # no present section anywhere
    with pytest.raises(PageClassError, match="mem_section"):
        PageClassifier(Memory(k), OLD, prog=k).classify(31)


def test_sections_that_disagree_with_a_published_vmemmap_are_an_error():
    pages, k = fake()
    text = OLD + f"SYMBOL(vmemmap)={VMEMMAP + (1 << 30):x}\n"
    with pytest.raises(PageClassError, match="vmemmap"):
        PageClassifier(Memory(k), text, prog=k).classify(31)
    ok = OLD + f"SYMBOL(vmemmap)={VMEMMAP:x}\n"
    assert PageClassifier(Memory(k), ok, prog=k).classify(31).total == 512


def test_memory_far_beyond_any_machine_is_refused():
    class Huge(Memory):
        def ranges(self):
            return [(0, PAGE), (1 << 62, PAGE)]

    pages, k = fake()
    with pytest.raises(PageClassError, match="beyond"):
        PageClassifier(Huge(k), OLD, prog=k)
