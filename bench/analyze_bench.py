"""Benchmark: ``tsubaki-forensics analyze`` on a .tsd vs plain drgn on the ELF vmcore.

Both run as whole processes (interpreter start, imports, debug info, the
three analyses), interleaved, N times each; wall time and peak RSS
(``wait4`` rusage of each child) are reported as medians and ratios, and
written to docs/benchmarks/analyze.md.

    python bench/analyze_bench.py [--runs 7] [--vmcore V --vmlinux L] [--out docs/benchmarks/analyze.md]
    python bench/analyze_bench.py --lab-crashes all [--runs 5] [--ref main] [--out docs/benchmarks/analyze_scenarios.md]

Without --vmcore the crash lab's default crash (sysrq, 512M, 2 vCPUs) is used.
``--lab-crashes`` measures every cached lab crash named (``RELEASE/KEY``,
comma-separated, or ``all``: each scenario of each cached kernel, idle
512M, plus the busy 2G crashes), one table row each (issue 21: the target
holds "on every lab scenario").  Sources are byte-compiled first, as an
installed package is (``PYTHONDONTWRITEBYTECODE`` would otherwise make
every run compile them).
"""

from __future__ import annotations

from machine_info import cpu_model
import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["measure", "main"]

ROOT = Path(__file__).resolve().parent.parent

# The library path only (plugins, bridge, analyses, JSON renderer): no CLI framework.
_LIBRARY = (
    "import sys\n"
    "from pathlib import Path\n"
    "from tsubaki_forensics.plugin_system import Plugins\n"
    "from tsubaki_forensics.analysis.session import open_program, analyze_dump\n"
    "from tsubaki_forensics.render.json_renderer import render\n"
    "plugins = Plugins.load()\n"
    "opened = open_program([Path(sys.argv[1])], plugins, vmlinux=Path(sys.argv[2]))\n"
    "render(analyze_dump(opened, plugins), sys.stdout)\n"
)
_LEAN = (
    "import sys, typer\n"
    "from tsubaki_forensics.cli import analyze_commands\n"
    "app = typer.Typer(pretty_exceptions_enable=False)\n"
    "analyze_commands.register(app)\n"
    "app(args=sys.argv[1:], prog_name='tsubaki-forensics')\n"
)


def measure(argv: list[str], env: dict | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds (user+sys) of one child; output discarded."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0,):
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {err[-500:]}")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def _lab_crashes(spec: str) -> list[tuple[str, Path, Path]]:
    """(name, vmcore, vmlinux) of the cached lab crashes ``spec`` names (no QEMU run, no network)."""
    from tsubaki_forensics.lab.cache import cache_root
    from tsubaki_forensics.lab.cache import entry_is_complete
    from tsubaki_forensics.lab.crash import load_crash

    root = cache_root() / "crashes"
    if spec == "all":  # the newest cached release of each amd64 series (6.1, 6.12, ...)
        newest: dict[str, Path] = {}
        for rel in sorted((d for d in root.glob("*-amd64") if d.is_dir()),
                          key=lambda d: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", d.name)]):
            newest[".".join(rel.name.split(".")[:2])] = rel
        names = sorted(f"{rel.name}/{d.name}" for rel in newest.values() for d in rel.iterdir()
                       if d.name.endswith("-idle-512M-smp2") or d.name == "sysrq-busy-2G-smp2")
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    out = []
    for name in names:
        entry = root / name
        if entry_is_complete(entry):
            crash = load_crash(entry)
            out.append((name, crash.vmcore, crash.vmlinux))
    return out


def _before_tree(ref: str, tmp: str) -> tuple[Path, str]:
    """A detached worktree of ``ref`` (the *before* code), byte-compiled; and its short hash."""
    tree = Path(tmp) / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
    _compile_sources(tree)
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return tree, rev


def scenarios(args: argparse.Namespace) -> None:
    """One row per lab crash: ours (CLI on the imported .tsd) vs the peer on the ELF, interleaved;
    with ``--ref``, also the CLI of that git ref (*before*) in the same interleaving."""
    from tsubaki_forensics.vmcore.importer import import_vmcore

    crashes = _lab_crashes(args.lab_crashes)
    rows_md = []
    ratios = []
    before_ratios = []
    keep = tempfile.TemporaryDirectory(prefix="tsubaki-analyze-") if args.ref else None
    before, rev = _before_tree(args.ref, keep.name) if keep else (None, "")
    # python -m puts the working directory first on sys.path: run every command from a neutral one
    cwd = tempfile.gettempdir()
    try:
        for name, vmcore, vmlinux in crashes:
            with tempfile.TemporaryDirectory() as tmp:
                tsd = Path(tmp) / "crash.tsd"
                import_vmcore(vmcore, tsd)
                analyze = [sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(tsd), "--vmlinux",
                           str(vmlinux), "--format", "json"]
                commands = {"ours": (analyze, None),
                            "peer": ([sys.executable, str(ROOT / "bench" / "analyze_peer.py"), str(vmcore),
                                      str(vmlinux), *_peer_flags(args)], None)}
                if before is not None:
                    commands["before"] = (analyze, dict(os.environ, PYTHONPATH=os.pathsep.join(
                        [str(before), str(before / "plugins")])))
                for argv, env in commands.values():  # analyze exits 4 on partial
                    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
                runs: dict[str, list] = {k: [] for k in commands}
                for _ in range(args.runs):
                    for k, (argv, env) in commands.items():
                        runs[k].append(_measure_any(argv, env=env, cwd=cwd))
            med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in runs.items()}
            o, p = med["ours"], med["peer"]
            ratios.append((o[0] / p[0], o[2] / p[2], o[1] / p[1]))
            row = (f"| {name} | {o[0]:.3f} | {p[0]:.3f} | **{o[0] / p[0]:.2f}x** | {o[2]:.3f} | {p[2]:.3f} | "
                   f"{o[2] / p[2]:.2f}x | {o[1] / 2**20:.0f} | {p[1] / 2**20:.0f} | {o[1] / p[1]:.2f}x |")
            if "before" in med:
                b = med["before"]
                before_ratios.append((b[0] / p[0], b[2] / p[2], b[1] / p[1]))
                row += f" {b[0] / p[0]:.2f}x / {b[2] / p[2]:.2f}x / {b[1] / p[1]:.2f}x |"
            rows_md.append(row)
            print(row, flush=True)
    finally:
        if keep is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
            keep.cleanup()
    load = os.getloadavg()[0]
    ref_opt = f" --ref {args.ref}" if args.ref else ""
    header = ("| crash | ours wall s | peer wall s | wall ratio | ours CPU s | peer CPU s | CPU ratio | ours RSS MiB | "
              "peer RSS MiB | RSS ratio |" + (f" before ({args.ref}{'' if rev.startswith(args.ref) else ' at ' + rev}): wall / CPU / RSS ratio |"
                                          if rev else ""))
    text = "\n".join([
        "# Benchmark: analyze on every lab scenario\n",
        f"Command: `python bench/analyze_bench.py --lab-crashes {args.lab_crashes} --runs {args.runs}{ref_opt}"
        f"{' --peer-names-only' if args.peer_names_only else ''}` "
        f"(whole processes, ours{', before' if rev else ''} and the peer interleaved, {args.runs} runs each after "
        "one warm-up; medians).\n",
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, Linux "
        f"{platform.release()}; load average at the end {load:.2f} (shared machine: wall is inflated and "
        "noisy under load, CPU much less)",
        "- ours: `tsubaki-forensics analyze crash.tsd --vmlinux VMLINUX --format json` (the default run: every "
        "bundled analysis: sys, tasks, dmesg, panic, blocked, runq, memory, modules) on the crash imported to .tsd",
        f"- peer: `python bench/analyze_peer.py VMCORE VMLINUX{' --names-only' if args.peer_names_only else ''}` "
        "(plain drgn on the ELF vmcore doing the same work with drgn's own helpers"
        f"{'; frames named only, no symbol+offset/size' if args.peer_names_only else ', symbol+offset/size of each frame as drgn prints a trace'})",
        "- Target (issue 21): <= 1.2x wall and <= 1.2x peak RSS on every scenario.\n",
        header,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if rev else ""),
        *rows_md,
        "",
        f"Ratios over the {len(ratios)} crashes: wall {min(r[0] for r in ratios):.2f}-{max(r[0] for r in ratios):.2f}x, "
        f"CPU {min(r[1] for r in ratios):.2f}-{max(r[1] for r in ratios):.2f}x, "
        f"RSS {min(r[2] for r in ratios):.2f}-{max(r[2] for r in ratios):.2f}x." if ratios else "No cached crash found.",
        (f"Before ({args.ref}{'' if rev.startswith(args.ref) else ' at ' + rev}), same run: wall {min(r[0] for r in before_ratios):.2f}-"
         f"{max(r[0] for r in before_ratios):.2f}x, CPU {min(r[1] for r in before_ratios):.2f}-"
         f"{max(r[1] for r in before_ratios):.2f}x, RSS {min(r[2] for r in before_ratios):.2f}-"
         f"{max(r[2] for r in before_ratios):.2f}x." if before_ratios else ""),
    ]) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


def _peer_flags(args: argparse.Namespace) -> list[str]:
    return ["--names-only"] if getattr(args, "peer_names_only", False) else []


def _measure_any(argv: list[str], env: dict | None = None, cwd: str | None = None) -> tuple[float, int, float]:
    """:func:`measure` for a command whose exit code 4 (partial results) is a normal outcome."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 4):
        raise SystemExit(f"{argv[:4]} failed ({code})")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def _compile_sources(tree: Path = ROOT) -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(tree / d) for d in
                    ("tsubaki_forensics", "monitor_model", "plugins"))], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--vmcore", type=Path)
    ap.add_argument("--vmlinux", type=Path)
    ap.add_argument("--lab-crashes", help="RELEASE/KEY,... of cached lab crashes, or 'all'")
    ap.add_argument("--ref", help="with --lab-crashes: also run the CLI of this git ref (before), interleaved")
    ap.add_argument("--peer-names-only", action="store_true",
                    help="the peer of the first three passes: frames named, no symbol+offset/size lookups")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    _compile_sources()
    if args.lab_crashes:
        args.out = args.out or ROOT / "docs" / "benchmarks" / "analyze_scenarios.md"
        scenarios(args)
        return
    args.out = args.out or ROOT / "docs" / "benchmarks" / "analyze.md"
    if args.vmcore is None:
        from tsubaki_forensics.lab import cached_crash

        crash = cached_crash()
        args.vmcore, args.vmlinux = crash.vmcore, crash.vmlinux
    from tsubaki_forensics.vmcore.importer import import_vmcore

    with tempfile.TemporaryDirectory() as tmp:
        tsd = Path(tmp) / "crash.tsd"
        imported = import_vmcore(args.vmcore, tsd)
        ours = [sys.executable, "-m", "tsubaki_forensics.cli.app", "analyze", str(tsd), "--vmlinux", str(args.vmlinux), "--format", "json"]
        peer = [sys.executable, str(ROOT / "bench" / "analyze_peer.py"), str(args.vmcore), str(args.vmlinux), *_peer_flags(args)]
        # The same command in an app that registers only the analyze commands:
        # what the CLI costs when other command modules import lazily.
        lean = [sys.executable, "-c", _LEAN, "analyze", str(tsd), "--vmlinux", str(args.vmlinux), "--format", "json"]
        library = [sys.executable, "-c", _LIBRARY, str(tsd), str(args.vmlinux)]
        commands = {"ours": ours, "peer": peer, "lean": lean, "library": library}
        for argv in commands.values():
            measure(argv)  # warm the page cache
        rows: dict[str, list[tuple[float, int, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                rows[name].append(measure(argv))
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in rows.items()}
    t_ratio = med["ours"][0] / med["peer"][0]
    r_ratio = med["ours"][1] / med["peer"][1]
    verdict = "within" if t_ratio <= 1.2 and r_ratio <= 1.2 else "NOT within"
    cmd = "python bench/analyze_bench.py" + (f" --runs {args.runs}" if args.runs != 7 else "")
    text = f"""# Benchmark: analyze

Command: `{cmd}` (whole processes, interleaved, {args.runs} runs each after one warm-up run; medians).

- Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, Linux {platform.release()}
- Dump: {args.vmcore} ({args.vmcore.stat().st_size / 2**20:.0f} MiB ELF) imported to a {imported.file_bytes / 2**20:.1f} MiB .tsd
- ours: `tsubaki-forensics analyze crash.tsd --vmlinux VMLINUX --format json` (every bundled analysis)
- peer: `python bench/analyze_peer.py VMCORE VMLINUX` (plain drgn, same work, drgn's ELF path)

| | wall (s, median) | CPU user+sys (s, median) | peak RSS (MiB, median) |
|---|---:|---:|---:|
| ours (.tsd through the drgn bridge) | {med['ours'][0]:.3f} | {med['ours'][2]:.3f} | {med['ours'][1] / 2**20:.1f} |
| peer (plain drgn on the ELF vmcore) | {med['peer'][0]:.3f} | {med['peer'][2]:.3f} | {med['peer'][1] / 2**20:.1f} |
| ratio ours / peer | {t_ratio:.2f}x | {med['ours'][2] / med['peer'][2]:.2f}x | {r_ratio:.2f}x |
| ours, app with only the analyze commands | {med['lean'][0]:.3f} | {med['lean'][2]:.3f} | {med['lean'][1] / 2**20:.1f} |
| ratio lean / peer | {med['lean'][0] / med['peer'][0]:.2f}x | {med['lean'][2] / med['peer'][2]:.2f}x | {med['lean'][1] / med['peer'][1]:.2f}x |
| ours, library call (no CLI framework) | {med['library'][0]:.3f} | {med['library'][2]:.3f} | {med['library'][1] / 2**20:.1f} |
| ratio library / peer | {med['library'][0] / med['peer'][0]:.2f}x | {med['library'][2] / med['peer'][2]:.2f}x | {med['library'][1] / med['peer'][1]:.2f}x |

Target: within 1.2x on both; this run is **{verdict}** the target.

Rows: *ours* is the real command; *lean* is the same command in a typer app
that registers only the analyze commands (what the CLI would cost if the other
command modules imported their dependencies lazily); *library* runs the same
pipeline (plugins, drgn bridge, analyses, JSON) without the CLI framework.

Where the difference comes from (see the rows): the drgn work itself is not
slower in kind through the bridge (a notes-only ELF core in a memfd plus
physical segments served by the .tsd reader, with a small page cache in front
of its chunk LRU), but every read drgn makes is a call into Python and the
first read of a record decompresses it: ~5,100 reads while drgn loads the
vmlinux and ~12,000 for the three analyses, ~25 ms of zstd in all on this
dump.  The rest is our own imports, pluggy and entry points, and the panic
analysis's symbol offsets (`func+0x12/0x40`), which the peer does not print.
docs/BENCHMARKS.md (b) has the phase-by-phase times.

Load average at the end: {os.getloadavg()[0]:.2f} (the machine is shared; wall times under load are noisy, CPU times less so).

All runs (wall s, RSS MiB, CPU s):
ours {[(round(w, 3), round(r / 2**20, 1), round(c, 3)) for w, r, c in rows['ours']]};
peer {[(round(w, 3), round(r / 2**20, 1), round(c, 3)) for w, r, c in rows['peer']]};
lean {[(round(w, 3), round(r / 2**20, 1), round(c, 3)) for w, r, c in rows['lean']]};
library {[(round(w, 3), round(r / 2**20, 1), round(c, 3)) for w, r, c in rows['library']]}.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
