"""collect, inspect and triage build typed results (``contracts/``) that ``render/`` prints (issue 17).

The JSON each command prints is checked field by field elsewhere
(test_collect_cli, test_dump_commands, test_triage_units); here: the typed
result is what the command prints, and the renderers need nothing else.
"""

from __future__ import annotations

import io
import json

import numpy as np

from monitor_model.engine import CollectParams
from monitor_model.session import collect, summarize
from monitor_model.sources import BytesSource
from monitor_model.storage import get_profile
from tsubaki_forensics.contracts.collect import CollectSummary, PolicyOutcome, RegionOutcome, SaveStep, TimelineEvent
from tsubaki_forensics.contracts.inspect import DumpDescription, MemorySummary, PageCounts
from tsubaki_forensics.render import collect as render_collect
from tsubaki_forensics.render import inspect as render_inspect
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.vmcore.describe import describe_dump

from _cli import run_cli

MiB = 1 << 20


def _source():
    rng = np.random.default_rng(3)
    buf = np.zeros(4 * MiB, np.uint8)
    buf[:MiB] = rng.integers(0, 256, MiB, dtype=np.uint8)
    return BytesSource(buf.tobytes(), vmcoreinfo=b"OSRELEASE=test\n", name="unit")


def _params():
    return CollectParams(reboot_choice="low", region_size=512 << 10, reboot_mem=MiB, boot_s=2.0, threads=1,
                         fsync=False, storage=get_profile("custom:bw=1MB/s,lat=1ms,gran=4K,flush=5ms"))


def test_collect_summary_is_typed_and_is_what_json_and_text_print(tmp_path):
    src, params = _source(), _params()
    results = collect(src, ["tsubaki", "kdump"], params, tmp_path / "d.tsd")
    summary = summarize(results, params, src)
    assert isinstance(summary, CollectSummary) and summary.source == "unit"
    tsubaki, kdump = summary.outcomes
    assert isinstance(tsubaki, PolicyOutcome) and summary.baseline is kdump
    assert all(isinstance(r, RegionOutcome) for r in tsubaki.regions)
    assert all(isinstance(s, SaveStep) for s in tsubaki.steps) and tsubaki.steps
    assert all(isinstance(e, TimelineEvent) for e in tsubaki.events) and tsubaki.events[0].kind == "panic"
    assert isinstance(tsubaki.pages, PageCounts) and tsubaki.pages.kept <= tsubaki.pages.total
    assert tsubaki.output == str(tmp_path / "d.tsd") and tsubaki.bytes_written == (tmp_path / "d.tsd").stat().st_size
    assert sum(r.nbytes for r in tsubaki.regions) == summary.memory_bytes == 4 * MiB

    doc = render_collect.summary_json(summary)
    row = doc["policies"]["tsubaki"]
    assert row["restart_speedup_vs_kdump"] == round(kdump.restart_s / tsubaki.restart_s, 3)
    assert "restart_speedup_vs_kdump" in doc["policies"]["kdump"]  # 1.0: itself
    assert row["regions"][0] == {"index": 0, "base": tsubaki.regions[0].base, "bytes": tsubaki.regions[0].nbytes,
                                 "file_bytes": tsubaki.regions[0].file_bytes,
                                 "saved_s": tsubaki.regions[0].saved_s, "given_s": tsubaki.regions[0].given_s}
    assert results[0].to_json() == {k: v for k, v in row.items() if k != "restart_speedup_vs_kdump"}
    assert json.loads(json.dumps(doc)) == doc  # plain JSON data

    out, warnings = io.StringIO(), []
    render_collect.render_text(summary, out, warn=warnings.append)
    text = out.getvalue()
    assert "collect: unit (4.0 MiB, " in text and f"dump: {tmp_path / 'd.tsd'} (tsubaki)" in text
    assert f"{kdump.restart_s / tsubaki.restart_s:.2f}x" in text
    assert warnings == [*tsubaki.notes, *kdump.notes]


def test_inspect_description_is_typed_and_is_what_the_command_prints(tsubaki_sample_path):
    with open_dump(tsubaki_sample_path) as dump:
        description = describe_dump(dump)
        ranges = dump.memory.ranges()
        present = dump.memory.present_bytes
    assert isinstance(description, DumpDescription) and isinstance(description.memory, MemorySummary)
    assert description.is_tsd and description.kernel_release and description.notes.prstatus >= 1
    assert description.memory.present_bytes == present
    doc = json.loads(run_cli("inspect", "--format", "json", tsubaki_sample_path).stdout)
    written = io.StringIO()
    render_inspect.render_json(description, written)  # the lazy parts are sequences: written again
    assert json.loads(written.getvalue()) == doc
    assert doc["dump_id"] == description.dump_id and doc["memory"]["present_bytes"] == present
    assert len(doc["memory"]["ranges"]) == len(ranges)
    text = run_cli("inspect", tsubaki_sample_path).stdout
    written = io.StringIO()
    render_inspect.render_text(description, written)
    assert written.getvalue() == text


class _Range:
    def __init__(self, start, length, kind):
        self.start, self.length, self.kind = start, length, kind


def test_inspect_text_reads_plain_range_objects():
    """A plugin's reassembled dump may list its ranges as plain objects (``MemoryRange``),
    not the ``.tsd`` reader's numpy columns: spans and JSON items come from their attributes."""
    ranges = [_Range(0, 4096, "data"), _Range(4096, 8192, "zero"), _Range(1 << 20, 4096, "data")]
    assert list(render_inspect.spans(ranges)) == [(0, 12288, 8192), (1 << 20, (1 << 20) + 4096, 0)]
    assert list(render_inspect.range_dicts(ranges))[1] == {"start": 4096, "length": 8192, "kind": "zero"}
