"""In one process: issue 19's four new analyses on a .tsd vs plain drgn doing the same on the ELF.

CPU seconds of ``analyze_dump(only=[blocked, runq, memory, modules])`` on a
fresh program over the .tsd, against ``analyze_peer_figures.crash_figures``
(the same drgn helpers, plus the sys and ps extras) on a fresh program over
the ELF vmcore; medians of N runs, interleaved.  Then the marginal cost in
a default run: whole ``analyze --format json`` processes with and without
``--exclude blocked,runq,memory,modules``, interleaved.  The hung-task
crash (one D-state task to unwind).

    python bench/analyze_new_analyses.py [--runs 7] [--tsd T]   (imports the crash when --tsd is not given)
"""
import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drgn
from drgn.helpers.linux.kallsyms import load_module_kallsyms
from analyze_peer import _frames
from analyze_peer_figures import crash_figures
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.analysis.session import open_program, analyze_dump
from tsubaki_forensics.lab import CrashParams, cached_crash
from tsubaki_forensics.vmcore.importer import import_vmcore

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--runs", type=int, default=7)
ap.add_argument("--tsd", type=Path, help="the crash already imported (else imported into a temporary file)")
args = ap.parse_args()
crash = cached_crash(CrashParams(scenario="hung-task").normalized())
D, V = crash.vmcore.parent, crash.vmlinux
tmp = tempfile.TemporaryDirectory()
tsd = args.tsd or Path(tmp.name) / "crash.tsd"
if args.tsd is None:
    import_vmcore(crash.vmcore, tsd)
plugins = Plugins.load()
ours, peer, per = [], [], {}


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


for i in range(args.runs):
    opened = open_program([tsd], plugins, vmlinux=V)
    c = cpu(); rep = analyze_dump(opened, plugins, only=["blocked", "runq", "memory", "modules"]); ours.append(cpu() - c)
    for r in rep.results: per.setdefault(r.name, []).append(r.seconds)
    opened.close()
    prog = drgn.Program(); prog.set_core_dump(str(crash.vmcore)); prog.load_debug_info([str(V)])
    prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
    c = cpu(); crash_figures(prog, _frames); peer.append(cpu() - c)
m = statistics.median
print(f"ours (blocked+runq+memory+modules, CPU s median of {args.runs}): {m(ours):.4f}; per analysis: " + ", ".join(f"{k} {m(v):.4f}" for k, v in per.items()))
print(f"plain drgn, same figures + sys + ps extras (crash_figures): {m(peer):.4f}")


import os
import subprocess
import time

base = [sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(tsd), "--vmlinux", str(V), "--format", "json", "-q"]
cmds = {"default run (8 analyses)": base, "without the 4 new": [*base, "--exclude", "blocked,runq,memory,modules"]}
res: dict = {k: [] for k in cmds}
for _ in range(args.runs):
    for k, c in cmds.items():
        t = time.perf_counter()
        p = subprocess.Popen(c, stdout=subprocess.DEVNULL)
        _, _, ru = os.wait4(p.pid, 0)
        res[k].append((time.perf_counter() - t, ru.ru_utime + ru.ru_stime))
print("| analyze process | wall s | CPU s |\n|---|---|---|")
for k, v in res.items():
    print(f"| {k} | {m(w for w, _ in v):.3f} | {m(c for _, c in v):.3f} |")
print(f"load {os.getloadavg()[0]:.2f}")
