"""Every crash-lab scenario: analyze on the .tsd gives what plain drgn gives on the ELF vmcore."""

from __future__ import annotations

import pytest

from tsubaki_forensics.analysis import Status
from tsubaki_forensics.analysis.session import analyze_dump, open_program
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.vmcore.importer import import_vmcore

pytestmark = [pytest.mark.realkernel, pytest.mark.slow]

CASES = [
    dict(scenario="sysrq"),
    dict(scenario="oom"),
    dict(scenario="init-exit"),
    dict(scenario="nmi"),
    dict(scenario="sysrq", workload="busy"),
    dict(scenario="sysrq", kernel="6.12"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_scenario_matches_ground_truth(case, crash_lab, tmp_path):
    crash = crash_lab(**case)
    gt = crash.ground_truth
    path = tmp_path / "crash.tsd"
    import_vmcore(crash.vmcore, path)
    plugins = Plugins.load()
    opened = open_program([path], plugins, vmlinux=crash.vmlinux)
    try:
        report = analyze_dump(opened, plugins, only=["tasks", "dmesg", "panic"])
    finally:
        opened.close()
    results = {r.name: r for r in report.results}
    assert {n: r.status for n, r in results.items()} == {n: Status.OK for n in ("tasks", "dmesg", "panic")}

    rows = results["tasks"].table("tasks").dicts()
    assert [{k: r[k] for k in ("pid", "ppid", "comm", "state", "cpu", "on_cpu")} for r in rows] == sorted(
        gt["tasks"], key=lambda t: t["pid"]
    )
    log = results["dmesg"].table("log").dicts()
    assert [{"time": r["time"], "level": r["level"], "text": r["text"]} for r in log] == gt["dmesg"]

    panic = results["panic"]
    assert panic.fact("panic message") == "Kernel panic - not syncing: " + gt["panic_message"]
    assert panic.fact("panicking CPU") == gt["crashed_cpu"]
    assert panic.fact("crashed pid") == gt["crashed_pid"]
    assert [f["function"] for f in panic.table("backtrace").dicts()] == gt["backtrace"]
    others = {t.name: [f["function"] for f in t.dicts()] for t in panic.tables
              if t.name != "backtrace" and not t.name.endswith("_registers")}  # exception frames' registers
    assert others == {f"cpu{cpu}": names for cpu, names in gt["cpu_backtraces"].items()}
