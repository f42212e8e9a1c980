"""``crash`` on real lab crashes: our commands on the ``.tsd`` against drgn's on the original ELF.

The ground truth is drgn's own crash commands run on the crash lab's ELF
vmcore with the DWARF vmlinux.  The same crash, imported into a ``.tsd``, is
opened twice through the drgn bridge (with the vmlinux, and self-contained)
and the same commands compared field by field.  Expected differences are
only those docs/SELFCONTAINED.md lists (DUMPFILE, KERNEL without a vmlinux,
inline frames and kallsyms names without DWARF).
"""

from __future__ import annotations

import contextlib
import io
import re

import drgn
import drgn.cli
import pytest
from crash_probes import probe_lines
from test_crash_command import documented_failures, run_every_probe

from tsubaki_forensics.analysis.crash import CrashSession
from tsubaki_forensics.analysis.session import open_program
from tsubaki_forensics.plugin_system import get_plugins
from tsubaki_forensics.vmcore.importer import import_vmcore

CASES = [("6.1", "sysrq"), ("6.1", "oom"), ("6.12", "sysrq"), ("6.12", "oom")]
SAME_TEXT = ["ps", "log", "kmem -i", "mod", "runq", "sys"]
FRAME = re.compile(r"^\s*#\d+ \[(?P<sp>[0-9a-f]+)\] (?P<name>\S+) at (?P<pc>[0-9a-f]+)(?P<rest>.*)$")
INLINE = re.compile(r"^\s*#\d+ \(inline\)")


def _run_truth(prog: drgn.Program, line: str) -> str:
    import drgn.commands._crash  # noqa: F401
    from drgn.commands._crash.common import CRASH_COMMAND_NAMESPACE

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        CRASH_COMMAND_NAMESPACE.run(prog, line, globals=drgn.cli.default_globals(prog))
    return out.getvalue()


def _run_ours(session: CrashSession, line: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        failures = session.run(line)
    assert not failures, [f.message() for f in failures]
    return out.getvalue()


def _without(text: str, *fields: str) -> str:
    return "\n".join(line for line in text.splitlines() if not re.match(rf"^\s*({'|'.join(fields)}): ", line))


def _bt(text: str) -> list:
    """A bt text as comparable items: real frames [sp, pc, name, rest] and every other line; inline frames dropped."""
    items: list = []
    for line in text.splitlines():
        if INLINE.match(line):
            continue
        m = FRAME.match(line)
        items.append(line if m is None else [m["sp"], m["pc"], m["name"], m["rest"]])
    return items


def _same_bt(ours: str, truth: str, *, names: bool) -> None:
    mine, theirs = _bt(ours), _bt(truth)
    assert len(mine) == len(theirs), (ours, truth)
    for a, b in zip(mine, theirs):
        if isinstance(b, str):
            assert a == b
        elif names and not b[2].startswith("0x"):  # drgn on the ELF may leave module frames unnamed
            assert a == b
        else:
            assert a[:2] == b[:2], (a, b)


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}-{s}" for k, s in CASES])
def trio(request, crash_lab, tmp_path_factory):
    """(truth program, our session with the vmlinux, our self-contained session) on one lab crash."""
    kernel, scenario = request.param
    crash = crash_lab(kernel=kernel, scenario=scenario)
    tsd = tmp_path_factory.mktemp("crash") / "crash.tsd"
    import_vmcore(crash.vmcore, tsd)
    truth = drgn.Program()
    truth.set_core_dump(str(crash.vmcore))
    truth.load_debug_info([str(crash.vmlinux)])
    truth.config["crash_scroll"] = False
    plugins = get_plugins([])
    with_vmlinux = open_program([tsd], plugins, vmlinux=crash.vmlinux)
    selfcontained = open_program([tsd], plugins, self_contained=True)
    assert selfcontained.program.debug_info.kind == "btf"
    yield truth, CrashSession(with_vmlinux.program.prog), CrashSession(selfcontained.program.prog), (with_vmlinux, selfcontained)
    with_vmlinux.close()
    selfcontained.close()


def test_same_text_as_drgn_on_the_elf(trio):
    truth, vml, own, _ = trio
    for line in SAME_TEXT:
        expected = _run_truth(truth, line)
        assert expected.strip(), line
        assert _without(_run_ours(vml, line), "DUMPFILE") == _without(expected, "DUMPFILE"), line
        assert _without(_run_ours(own, line), "DUMPFILE", "KERNEL") == _without(expected, "DUMPFILE", "KERNEL"), line
        if line == "sys":  # the dump file the user gave, not the bridge's notes memfd
            for session, opened in zip((vml, own), trio[3]):
                assert f"DUMPFILE: {opened.paths[0]}" in _run_ours(session, line)


def test_bt_frames_equal_drgn_on_the_elf(trio):
    truth, vml, own, _ = trio
    for line in ("bt", "bt -a", "foreach UN bt"):
        expected = _run_truth(truth, line)
        _same_bt(_run_ours(vml, line), expected, names=True)
        # Without DWARF: the same real frames (stack pointer and PC), registers and headers.
        _same_bt(_run_ours(own, line), expected, names=False)


def test_every_command_without_vmlinux_fails_only_as_documented(trio):
    truth, _, own, _ = trio
    failed = run_every_probe(own.prog)
    print("\n".join(f"{k}: {v}" for k, v in failed.items()))
    documented = documented_failures()
    assert not {k: v for k, v in failed.items() if k not in documented}
    # Each documented entry fails only for want of DWARF: drgn runs it on the ELF with the vmlinux.
    for line in probe_lines(truth, sorted({p.split()[0] for p in documented})):
        if line in documented:
            assert _run_truth(truth, line).strip(), line


def test_sys_analysis_equals_drgn_sys_on_the_elf(trio):
    """analyze's ``sys`` summary: drgn's sys + set figures on the ELF with DWARF, with and without a vmlinux."""
    from tsubaki_forensics.analysis.session import analyze_dump

    truth, _, _, opened = trio
    text = _run_truth(truth, "sys") + _run_truth(truth, "set")
    expected = {m[1]: m[2].strip('"') for m in re.finditer(r"^\s*([A-Z][A-Z ]*): (.*)$", text, re.M)}
    for name in ("KERNEL", "DUMPFILE"):
        expected.pop(name, None)
    for each in opened:
        (result,) = analyze_dump(each, get_plugins([]), only=["sys"]).results
        facts = {k: str(v) for k, v in result.facts}
        assert facts.pop("TAINT")
        assert facts == expected


def test_analyze_bt_is_drgn_crash_bt(trio):
    """analyze's crashed-task text backtrace is drgn's crash ``bt`` on the same program, line for line
    (inline frames, modules, exception-frame registers), plus +off/size and, with DWARF, file: line."""
    from test_crash_command import _bt_block

    from tsubaki_forensics.analysis.session import analyze_dump
    from tsubaki_forensics.render import text_renderer

    _, vml, own, opened = trio
    for session, each in zip((vml, own), opened):
        report = analyze_dump(each, get_plugins([]), only=["panic"])
        out = io.StringIO()
        text_renderer.render(report, out)
        ours = [line for line in _bt_block(out.getvalue(), "Backtrace of the crashed task")
                if not re.match(r"^    \S+\.\w+: \d+$", line)]
        # With DWARF drgn names the function (__alloc_pages_slowpath) where crash and the kernel name the
        # ELF symbol (__alloc_pages_slowpath.constprop.0): compare names without GCC's suffixes.
        assert _base_names(ours) == _base_names(_run_ours(session, "bt").splitlines()[1:])


def _base_names(lines: list[str]) -> list[str]:
    from tsubaki_forensics.selfcontained.verify import base_name

    return [re.sub(r"(\] |\(inline\)\s+)(\S+)", lambda m: m[1] + base_name(m[2]), line) for line in lines]
