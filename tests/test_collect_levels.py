"""Unit tests of collect's dump levels, CPU model and kdump baseline (synthetic memory).

Deterministic: the page classes are given (a :class:`PageBook` with a made-up
classification), every figure is emulated time, and the expectations are
computed from the models' own formulas, never from a clock.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest

from monitor_model.cpu import DEFAULT_CPU, CpuModel
from monitor_model.engine import CollectParams, run_policy
from monitor_model.kdumpfile import DESC_BYTES, kdump_size
from monitor_model.pages import KEPT, ZERO, MonitorPages, PageBook
from monitor_model.policies import get_policy
from monitor_model.sources import BytesSource
from monitor_model.storage import get_profile
from tsubaki_forensics.pageclass import PageClass
from tsubaki_forensics.tsd import open_dump

KiB, MiB, PAGE = 1 << 10, 1 << 20, 4096
REGION = 512 * KiB
# region -> what its pages are at level 31 (the content is random unless "zero")
LAYOUT = ["data", "free", "user", "data", "zero", "cache", "data", "free"]


def _memory():
    rng = np.random.default_rng(7)
    buf = np.zeros(len(LAYOUT) * REGION, np.uint8)
    for i, kind in enumerate(LAYOUT):
        if kind != "zero":
            # half compressible, half random: zlib and zstd sizes differ from the raw size
            buf[i * REGION: i * REGION + REGION // 2] = rng.integers(0, 256, REGION // 2, dtype=np.uint8)
            text = b"".join(b"kernel log line %d\n" % n for n in range(REGION // 16))[: REGION // 2]
            buf[i * REGION + REGION // 2: (i + 1) * REGION] = np.frombuffer(text, np.uint8)
    return BytesSource(buf.tobytes(), vmcoreinfo=b"OSRELEASE=test\n", name="levels")


_CLASS = {"data": KEPT, "zero": ZERO, "free": PageClass.FREE, "user": PageClass.USER,
          "cache": PageClass.CACHE}


def _book(source):
    def classify(level):
        per = REGION // PAGE
        classes = np.concatenate([
            np.full(per, _CLASS[k] if (level > 1 or k in ("data", "zero")) else KEPT, np.uint8)
            for k in LAYOUT])
        classes[[i * per + j for i, k in enumerate(LAYOUT) if k == "zero" for j in range(per)]] = ZERO
        candidate = int(np.count_nonzero((classes == KEPT) | (classes == ZERO))) * PAGE
        return MonitorPages(level, PAGE, classes, (), candidate)

    return PageBook(source, classify)


def _params(**kw):
    base = dict(region_size=REGION, reboot_mem=MiB, boot_s=2.0, threads=1, fsync=False,
                storage=get_profile("custom:bw=1MB/s,lat=1ms,gran=4K,flush=5ms"))
    base.update(kw)
    return CollectParams(**base)


def test_level_31_writes_only_kept_pages_and_reboots_where_nothing_needs_writing(tmp_path):
    src = _memory()
    out = tmp_path / "d31.tsd"
    r31 = run_policy(src, get_policy("tsubaki"), _params(dump_level=31), out, book=_book(src))
    r1 = run_policy(src, get_policy("tsubaki"), _params(dump_level=1), tmp_path / "d1.tsd", book=_book(src))
    assert r31.dump_level == 31 and r1.dump_level == 1 and not r31.unsafe_handbacks
    # region 0 (the trampoline) and the cheapest other: region 1, whose free pages need nothing
    assert r31.timeline.first("reboot_start").fields["regions"] == [0, 1]
    assert r31.timeline.first("reboot_regions_chosen").fields["write_bytes"] == REGION
    # every region goes back to Linux, those the level leaves out entirely too
    assert sorted(h.region for h in r31.handbacks) == list(range(len(LAYOUT)))
    # hand-back order: cheapest first (left-out and zero regions before data)
    order = [h.region for h in r31.handbacks if h.how == "hand-back"]
    assert order == [2, 4, 5, 7, 3, 6]
    assert r31.bytes_written < r1.bytes_written and r31.restart_s < r1.restart_s
    assert r31.pages["kept"] == 3 * REGION // PAGE
    assert r31.pages["excluded"]["free"] == 2 * REGION // PAGE
    with open_dump(out) as dump:
        for i, kind in enumerate(LAYOUT):
            if kind in ("data", "zero"):
                assert dump.memory.read(i * REGION, REGION) == src.read(i * REGION, REGION)
        excluded = {(e.paddr // REGION, e.cls) for e in dump.excluded}
    assert excluded == {(1, PageClass.FREE), (2, PageClass.USER), (5, PageClass.CACHE),
                        (7, PageClass.FREE)}


def test_a_region_left_out_entirely_is_handed_back(tmp_path):
    """The engine once skipped a step with nothing left to write, so the policy
    never heard the region was saved and never gave it back."""
    src = _memory()
    r = run_policy(src, get_policy("tsubaki-triage"), _params(dump_level=31), tmp_path / "t.tsd",
                   book=_book(src), triage=lambda machine: [])
    assert {h.region for h in r.handbacks} == set(range(len(LAYOUT)))
    assert all(row["given_s"] is not None for row in r.regions)


def test_kdump_timeline_is_capture_boot_then_one_serial_cpu_then_boot(tmp_path):
    src = _memory()
    book = _book(src)
    params = _params(capture_boot_s=1.5)
    r = run_policy(src, get_policy("kdump"), params, None, book=book)
    size = kdump_size(book.at(31), book.zlib_sizes(), vmcoreinfo_bytes=len(src.vmcoreinfo))
    cpu = DEFAULT_CPU
    memory = len(LAYOUT) * REGION
    expect = (1.5 + cpu.classify_s(memory) + cpu.zero_test_s(size.candidate_bytes)
              + cpu.zlib_s(size.input_bytes) + params.storage.write_time(size.total)
              + params.storage.flush_latency)
    assert r.dump_level == 31 and r.bytes_written == size.total
    assert r.reboot_start_s == pytest.approx(expect, rel=1e-9)
    assert r.restart_s == pytest.approx(expect + 2.0, rel=1e-9)
    assert r.stall_s == 0 and not r.unsafe_handbacks
    # a slower zlib costs exactly its extra CPU time: nothing overlaps it
    slow = run_policy(src, get_policy("kdump"), replace(params, cpu=CpuModel(zlib1=cpu.zlib1 / 2)), None,
                      book=book)
    assert slow.restart_s - r.restart_s == pytest.approx(cpu.zlib_s(size.input_bytes), rel=1e-9)
    # kdump-full keeps every non-zero page
    full = run_policy(src, get_policy("kdump-full"), params, None, book=book)
    assert full.dump_level == 1 and full.bytes_written > r.bytes_written
    assert full.restart_s > r.restart_s


def test_kdump_size_is_makedumpfiles_layout_of_per_page_zlib(tmp_path):
    src = _memory()
    book = _book(src)
    size = kdump_size(book.at(31), book.zlib_sizes())
    kept = [i for i, k in enumerate(LAYOUT) if k == "data"]
    data = sum(min(PAGE, len(zlib.compress(src.read(i * REGION + j, PAGE), 1)))
               for i in kept for j in range(0, REGION, PAGE))
    assert size.data_bytes == data + PAGE  # + the one zero page makedumpfile always writes
    zero = LAYOUT.count("zero")  # zero pages get a descriptor to the shared zero page
    assert size.desc_bytes == DESC_BYTES * (len(kept) + zero) * REGION // PAGE
    assert size.input_bytes == len(kept) * REGION
    assert size.total == size.header_bytes + size.desc_bytes + size.data_bytes + size.flat_bytes


def test_level_above_1_without_struct_pages_is_one_clear_error(tmp_path):
    from tsubaki_forensics.errors import TsubakiError

    src = _memory()  # VMCOREINFO has no PAGESIZE, no struct-page fields
    with pytest.raises(TsubakiError, match="--dump-level 31: .*PAGESIZE"):
        run_policy(src, get_policy("tsubaki"), _params(dump_level=31), tmp_path / "x.tsd")
    # kdump falls back to level 1 and says so
    r = run_policy(src, get_policy("kdump"), _params(), None)
    assert r.dump_level == 1 and "level 1" in r.notes[0]


def test_the_default_timeline_uses_the_cpu_model_not_this_host(tmp_path):
    src = _memory()
    a = run_policy(src, get_policy("tsubaki"), _params(), tmp_path / "a.tsd", book=_book(src))
    b = run_policy(src, get_policy("tsubaki"), _params(cpu=CpuModel(zstd3=DEFAULT_CPU.zstd3 / 1000)),
                   tmp_path / "b.tsd", book=_book(src))
    assert a.cpu_model_s > 0 and b.cpu_model_s > a.cpu_model_s
    assert b.dump_complete_s > a.dump_complete_s  # a slow CPU becomes the bottleneck
    again = run_policy(src, get_policy("tsubaki"), _params(), tmp_path / "c.tsd", book=_book(src))
    assert again.restart_s == a.restart_s and again.dump_complete_s == a.dump_complete_s
