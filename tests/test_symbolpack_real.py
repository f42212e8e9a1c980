"""Symbol packs on real crashes: made from the DWARF vmlinux, used with no vmlinux.

Every packed named type is checked against DWARF; a fresh lab crash of the
newest 6.1 (imported into a .tsd by the project's own import) and a 6.12
crash analysed with only a pack give the ground truth's tasks, dmesg, crash
facts, and DWARF's real frames (same pc, same function), all computed from
that same crash at run time.  A pack needs the dump's exact build, so these
tests never pair a pack with the shipped sample (made with whatever kernel
Debian served the day it was made; tests/test_sample.py covers it alone),
except to check that a pack of another build is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import drgn
import pytest
from drgn.helpers.linux.kallsyms import load_module_kallsyms

from tsubaki_forensics.analysis import AnalysisContext, Need, run_analyses, select
from tsubaki_forensics.cli.app import main
from tsubaki_forensics.drgn_bridge import program_from_dump
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.selfcontained.compare import compare_types
from tsubaki_forensics.selfcontained.verify import KERNEL_SPACE, base_name, observe
from tsubaki_forensics.symbolpack import SymbolPackMismatch, attach_symbolpack, pack_from_dump, read_pack, write_pack
from tsubaki_forensics.symbolpack.extract import build_pack, program_for_vmlinux
from tsubaki_forensics.symbolpack.lookups import LOOKUP_OBJECTS
from tsubaki_forensics.triage.scan import scan_dump
from tsubaki_forensics.tsd import open_dump
from tsubaki_forensics.vmcore.importer import import_vmcore

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "lab-oom.tsd"


@pytest.fixture(scope="module")
def crash61(crash_lab):
    """A lab crash of the newest 6.1 (the OOM scenario, like the shipped sample)."""
    return crash_lab(scenario="oom")


@pytest.fixture(scope="module")
def dump61(crash61, tmp_path_factory) -> Path:
    """``crash61`` as a .tsd, made by the project's own ``import`` of its ELF vmcore."""
    path = tmp_path_factory.mktemp("dump") / "lab-oom.tsd"
    import_vmcore(crash61.vmcore, path)
    return path


@pytest.fixture(scope="module")
def pack61(crash61, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("pack") / "kernel.tsp"
    write_pack(build_pack(crash61.vmlinux), path)
    return read_pack(path)


@pytest.fixture(scope="module")
def crash612(crash_lab):
    return crash_lab(kernel="6.12")


def _same_function(packed: str, dwarf: str) -> bool:
    name, dwarf = base_name(packed), base_name(dwarf)
    return name == dwarf or name.startswith(dwarf + "_")


def _dwarf_real_frames(vmcore: Path, vmlinux: Path) -> tuple[list, dict]:
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)

    def frames(trace):
        out = []
        for f in trace:
            if f.pc < KERNEL_SPACE:
                break
            if not f.is_inline:
                out.append((f.pc, f.name or prog.symbol(f.pc).name))
        return out

    from drgn.helpers.linux.cpumask import for_each_present_cpu
    from drgn.helpers.linux.sched import cpu_curr

    crashed_cpu = int(prog["panic_cpu"].counter)
    return (frames(prog.crashed_thread().stack_trace()),
            {cpu: frames(prog.stack_trace(cpu_curr(prog, cpu))) for cpu in for_each_present_cpu(prog)
             if cpu != crashed_cpu})


def _check_trace(prog: drgn.Program, trace, real: list) -> None:
    got = []
    for f in trace:
        if f.pc < KERNEL_SPACE:
            break
        got.append((f.pc, f.name if f.name and not f.name.startswith("0x") else prog.symbol(f.pc).name))
    assert [pc for pc, _ in got] == [pc for pc, _ in real]
    assert [(g, d) for (_, g), (_, d) in zip(got, real) if not _same_function(g, d)] == []


def test_pack_is_small_and_holds_what_was_recorded(pack61):
    objects = set(pack61["objects"])
    # names of other kernels: MOD_TEXT (6.4+), sparse_irqs (6.5+; irq_desc_tree before), and those
    # the 6.12 runs of symbolpack.record met: pcpu_hot and _cea_offset (x86, 6.2+), timekeeper_data
    other_kernels = {"MOD_TEXT", "sparse_irqs", "pcpu_hot", "_cea_offset", "timekeeper_data"}
    assert set(LOOKUP_OBJECTS) - objects == set(pack61["not_in_vmlinux"]["objects"]) <= other_kernels
    assert {"struct task_struct", "struct module", "struct pid"} <= pack61["names"].keys()
    assert len(pack61["symbols"]["names"]) > 100_000


def test_every_packed_named_type_equals_dwarf(pack61, crash61):
    dwarf, _ = program_for_vmlinux(crash61.vmlinux)
    packed = drgn.Program(dwarf.platform)
    from tsubaki_forensics.symbolpack.finders import PackTypes

    types = PackTypes(packed, pack61)
    packed.register_type_finder("pack", types.find, enable_index=0)
    ambiguous = set(pack61["ambiguous"])
    differences, opaque = {}, 0
    for name in pack61["names"]:
        if name in ambiguous:
            continue
        try:
            want = dwarf.type(name)
        except LookupError:  # declared, never defined (opaque): DWARF's index has no definition either
            assert not packed.type(name).is_complete(), name
            opaque += 1
            continue
        diff = compare_types(packed.type(name), want)
        if diff:
            differences[name] = diff
    assert differences == {}
    assert len(pack61["names"]) - len(ambiguous) - opaque > 2000


def test_lab_dump_with_only_a_pack_equals_ground_truth(pack61, crash61, dump61):
    truth = crash61.ground_truth
    crashed, cpus = _dwarf_real_frames(crash61.vmcore, crash61.vmlinux)
    dump = open_dump([dump61])
    try:
        program = program_from_dump(dump, debug_info=False)
        prog = program.prog
        report = attach_symbolpack(prog, pack61)
        prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
        assert report.unwind is not None and report.kernel_offset != 0
        seen = observe(prog)
        for key in ("kernel_release", "crashed_cpu", "crashed_pid", "tasks", "dmesg"):
            assert seen[key] == truth[key], key
        _check_trace(prog, prog.crashed_thread().stack_trace(), crashed)
        from drgn.helpers.linux.sched import cpu_curr

        for cpu, real in cpus.items():
            _check_trace(prog, prog.stack_trace(cpu_curr(prog, cpu)), real)
        context = AnalysisContext(prog, dump, {}, frozenset(program.capabilities | {Need.DEBUG_INFO}))
        results = run_analyses(select(Plugins.load().analyses()), context)
        assert {r.name for r in results} >= {"dmesg", "panic", "tasks"}
        assert [r.status.value for r in results] == ["ok"] * len(results)
        panic = [r for r in results if r.name == "panic"][0]
        assert panic.fact("panic message").endswith(truth["panic_message"])
        assert report.finders[1].answered  # the pack, not something else, answered the globals
    finally:
        dump.close()


def test_612_crash_with_only_a_pack_equals_ground_truth(crash612, tmp_path):
    pack_path = tmp_path / "k612.tsp"
    assert main(["symbols", "pack", str(crash612.vmlinux), "-o", str(pack_path), "--format", "json"]) == 0
    pack = read_pack(pack_path)
    assert pack_path.stat().st_size < crash612.vmlinux.stat().st_size / 100
    prog = drgn.Program()
    prog.set_core_dump(str(crash612.vmcore))  # drgn's own ELF path, no vmlinux
    attach_symbolpack(prog, pack)
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    seen, truth = observe(prog), crash612.ground_truth
    for key in ("kernel_release", "crashed_cpu", "crashed_pid", "tasks", "dmesg"):
        assert seen[key] == truth[key], key
    crashed, cpus = _dwarf_real_frames(crash612.vmcore, crash612.vmlinux)
    _check_trace(prog, prog.crashed_thread().stack_trace(), crashed)
    from drgn.helpers.linux.sched import cpu_curr

    for cpu, real in cpus.items():
        _check_trace(prog, prog.stack_trace(cpu_curr(prog, cpu)), real)


def test_pack_of_another_build_is_refused(crash612, tmp_path, capsys):
    pack = build_pack(crash612.vmlinux)
    write_pack(pack, tmp_path / "k612.tsp")
    assert main(["symbols", "attach", str(tmp_path / "k612.tsp"), str(SAMPLE), "-o", str(tmp_path / "x.tsd")]) == 1
    assert "build id" in capsys.readouterr().err and not (tmp_path / "x.tsd").exists()
    dump = open_dump([SAMPLE])  # a 6.1 kernel
    try:
        prog = program_from_dump(dump, debug_info=False).prog
        with pytest.raises(SymbolPackMismatch, match="build id"):
            attach_symbolpack(prog, pack)
    finally:
        dump.close()


def test_pack_travels_with_the_dump_as_a_companion_file(crash61, dump61, tmp_path, capsys):
    pack_path, companion = tmp_path / "k.tsp", tmp_path / "lab-oom.symbols.tsd"
    assert main(["symbols", "pack", str(crash61.vmlinux), "-o", str(pack_path)]) == 0
    assert main(["symbols", "attach", str(pack_path), str(dump61), "-o", str(companion)]) == 0
    assert companion.stat().st_size < pack_path.stat().st_size * 1.5
    dump = open_dump([dump61, companion])
    try:
        pack = pack_from_dump(dump)
        assert pack == read_pack(pack_path)
        program = program_from_dump(dump, debug_info=False)
        attach_symbolpack(program.prog, pack)
        assert observe(program.prog)["tasks"] == crash61.ground_truth["tasks"]
    finally:
        dump.close()


def test_analyze_uses_an_embedded_pack_when_no_vmlinux_is_found(crash61, dump61, tmp_path, monkeypatch, capsys):
    """The drgn bridge prefers the dump's own pack over BTF when no vmlinux matches."""
    pack_path, companion = tmp_path / "k.tsp", tmp_path / "lab-oom.symbols.tsd"
    assert main(["symbols", "pack", str(crash61.vmlinux), "-o", str(pack_path)]) == 0
    assert main(["symbols", "attach", str(pack_path), str(dump61), "-o", str(companion)]) == 0
    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("TSUBAKI_CACHE_DIR", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty))
    capsys.readouterr()
    assert main(["analyze", str(dump61), str(companion), "--only", "panic", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert "symbol pack: no vmlinux" in err
    (panic,) = [a for a in json.loads(out)["analyses"] if a["name"] == "panic"]
    assert crash61.ground_truth["panic_message"] in json.dumps(panic)
    # triage names what the bridge used: the pack, not the dump's BTF (issue 17)
    record = scan_dump("pack", [str(dump61), str(companion)], 0)
    assert record["error"] is None and record["debug_info"] == "symbol pack"
    assert crash61.ground_truth["panic_message"] in record["panic_message"]
