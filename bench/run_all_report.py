"""Markdown and plots for bench/run_all.py, kept apart so a result can be re-rendered from its JSON.

Every ratio here is computed from numbers measured in the same run of
run_all.py; nothing is typed in by hand.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["render", "targets"]

MIB = 1 << 20
OURS = "tsubaki-forensics import (CLI, end to end)"
OURS_LIB = "tsd import (in-process)"
SIZE = {"256M": 256 << 20, "512M": 512 << 20, "1G": 1 << 30, "2G": 2 << 30, "4G": 4 << 30, "8G": 8 << 30}


DEDUP_PREFIX = "tsubaki-forensics import --dedup"


def _ours(imp: dict) -> str:
    return OURS if OURS in imp["median"] else OURS_LIB


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def targets(result: dict) -> list[tuple[str, str, str, str]]:
    """(target, crash, measured, met?) for every issue-7 target the run measured."""
    rows = []
    for spec, imp in result["import"].items():
        m = imp["median"]
        # The default import, then the opt-in variants the run measured (format 1.2 page dedup).
        for ours in [_ours(imp), *(k for k in m if k.startswith(DEDUP_PREFIX))]:
            who = "" if ours == _ours(imp) else f" ({ours.removeprefix('tsubaki-forensics import ').removesuffix(' (CLI)')})"
            for peer in ("zstd -1 -T2", "makedumpfile -l -d 1"):
                if peer in m:
                    x = m[peer]["wall"] / m[ours]["wall"]
                    rows.append((f"collect{who} >= 2x faster than `{peer}`", spec, f"{x:.2f}x faster "
                                 f"({m[ours]['wall']:.2f} s vs {m[peer]['wall']:.2f} s)", _yes(x >= 2)))
            if "zstd -3 -T2" in m:
                x = m[ours]["bytes"] / m["zstd -3 -T2"]["bytes"]
                rows.append((f"output{who} <= `zstd -3 -T2`", spec, f"{x:.2f}x ({m[ours]['bytes'] / MIB:.1f} vs "
                             f"{m['zstd -3 -T2']['bytes'] / MIB:.1f} MiB)", _yes(x <= 1)))
    for spec, a in result["analyze"].items():
        x = a["ours"]["wall"] / a["peer"]["wall"]
        rows.append(("analyze <= 1.2x plain drgn on the ELF (wall)", spec,
                     f"{x:.2f}x ({a['ours']['wall']:.2f} s vs {a['peer']['wall']:.2f} s; CPU "
                     f"{a['ours']['cpu'] / a['peer']['cpu']:.2f}x; RSS {a['ours']['rss_mib'] / a['peer']['rss_mib']:.2f}x)",
                     _yes(x <= 1.2)))
    for workload in result["workloads"]:
        rss = [(s, result["import"][f"{s}:{workload}"]) for s in result["sizes"] if f"{s}:{workload}" in result["import"]]
        if len(rss) > 1:
            vals = [imp["median"][_ours(imp)]["rss_mib"] for _, imp in rss]
            flat = max(vals) / min(vals)
            rows.append(("collect peak RSS flat across sizes", f"{rss[0][0]}->{rss[-1][0]} {workload}",
                         " -> ".join(f"{v:.0f}" for v in vals) + f" MiB ({flat:.2f}x)", _yes(flat <= 1.15)))
        elif rss:
            rows.append(("collect peak RSS flat across sizes", f"{rss[0][0]} {workload}",
                         f"{rss[0][1]['median'][_ours(rss[0][1])]['rss_mib']:.0f} MiB (one size only)", "n/a"))
    return rows


def _import_table(spec: str, imp: dict) -> list[str]:
    m, ours = imp["median"], _ours(imp)
    mem = imp["memory_bytes"]
    lines = [f"### {spec}: {mem / MIB:.0f} MiB of memory, {imp['data_bytes'] / MIB:.0f} MiB non-zero", "",
             "| tool | wall s | MiB/s of memory | CPU s | peak RSS MiB | output MiB | peer / ours time | size vs ours |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in sorted(m.items(), key=lambda kv: kv[1]["wall"]):
        mark = " (**ours**)" if name == ours else ""
        lines.append(f"| {name}{mark} | {r['wall']:.2f} | {mem / MIB / r['wall']:.0f} | {r['cpu']:.2f} | "
                     f"{r['rss_mib']:.0f} | {r['bytes'] / MIB:.1f} | {r['wall'] / m[ours]['wall']:.2f}x | "
                     f"{r['bytes'] / m[ours]['bytes']:.2f}x |")
    return lines + [""]


def _growth(result: dict) -> list[str]:
    sizes = [s for s in result["sizes"]]
    if len(sizes) < 2:
        return ["Only one size in this run (`--quick`): run without `--quick` (or `--sizes 512M,4G`) "
                "for the growth table.", ""]
    lo, hi = sizes[0], sizes[-1]
    lines = [f"Cost at {hi} / cost at {lo}; the memory grew {SIZE[hi] / SIZE[lo]:.0f}x.", "",
             "| workload | cost | at " + lo + " | at " + hi + " | growth | vs size growth |", "|---|---|---:|---:|---:|---:|"]
    size_x = SIZE[hi] / SIZE[lo]
    for w in result["workloads"]:
        a, b = f"{lo}:{w}", f"{hi}:{w}"
        metrics = []
        if a in result["import"] and b in result["import"]:
            ia, ib = result["import"][a]["median"], result["import"][b]["median"]
            for name in (_ours(result["import"][a]), "zstd -1 -T2", "zstd -3 -T2", "makedumpfile -l -d 1", "makedumpfile -c -d 31"):
                if name in ia and name in ib:
                    metrics.append((f"{name}: wall s", ia[name]["wall"], ib[name]["wall"]))
                    metrics.append((f"{name}: output MiB", ia[name]["bytes"] / MIB, ib[name]["bytes"] / MIB))
            o = _ours(result["import"][a])
            metrics.append((f"{o}: peak RSS MiB", ia[o]["rss_mib"], ib[o]["rss_mib"]))
        if a in result["analyze"] and b in result["analyze"]:
            for who in ("ours", "peer"):
                metrics.append((f"analyze {who}: wall s", result["analyze"][a][who]["wall"], result["analyze"][b][who]["wall"]))
                metrics.append((f"analyze {who}: peak RSS MiB", result["analyze"][a][who]["rss_mib"], result["analyze"][b][who]["rss_mib"]))
        if a in result["lab"] and b in result["lab"]:
            la, lb = result["lab"][a]["median"], result["lab"][b]["median"]
            metrics.append(("QEMU kdump-zlib dump s", la["peer_s"], lb["peer_s"]))
            metrics.append(("QEMU ELF dump s", la["elf_s"], lb["elf_s"]))
        for name, x, y in metrics:
            g = y / x if x else float("nan")
            lines.append(f"| {w} | {name} | {x:.2f} | {y:.2f} | {g:.2f}x | {g / size_x:.2f} |")
    return lines + [""]


def _plots(result: dict, out: Path) -> list[str]:
    """Import wall time per tool and read latency per reader (PNG next to the markdown)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(matplotlib missing: no plots)", ""]
    lines = []
    if result["import"]:
        specs = list(result["import"])
        tools = sorted({t for imp in result["import"].values() for t in imp["median"]},
                       key=lambda t: -list(result["import"].values())[0]["median"].get(t, {"wall": 0})["wall"])
        fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(tools) * len(specs) / 2 + 1))
        height = 0.8 / len(specs)
        for i, spec in enumerate(specs):
            m = result["import"][spec]["median"]
            ys = [j + i * height for j in range(len(tools))]
            ax.barh(ys, [m.get(t, {"wall": 0})["wall"] for t in tools], height=height, label=spec)
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(tools))], tools, fontsize=8)
        ax.set_xlabel("wall seconds (median; lower is better)")
        ax.set_title("import / compress a crash-lab vmcore: ours vs peers, same run")
        ax.legend(fontsize=8)
        lines += _save(fig, plt, out, "import", "import wall time per tool")
    if len(result["sizes"]) > 1 and result["import"]:
        lines += _growth_plot(result, out, plt)
    if result["latency"]:
        specs = list(result["latency"])
        readers = list(next(iter(result["latency"].values()))["median"])
        fig, ax = plt.subplots(figsize=(9, 3.5))
        height = 0.8 / len(specs)
        for i, spec in enumerate(specs):
            med = result["latency"][spec]["median"]
            ax.barh([j + i * height for j in range(len(readers))], [med[r]["total_ms"] for r in readers],
                    height=height, label=spec)
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(readers))], readers, fontsize=8)
        ax.set_xlabel("ms to replay drgn's reads for tasks+dmesg+panic (median; lower is better)")
        ax.legend(fontsize=8)
        lines += _save(fig, plt, out, "readlatency", "read latency per reader")
    return lines


def _save(fig, plt, out: Path, suffix: str, alt: str) -> list[str]:
    """Write ``fig`` beside ``out`` as OUT-SUFFIX.png; the Markdown lines that show it."""
    fig.tight_layout()
    png = out.with_name(f"{out.stem}-{suffix}.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [f"![{alt}]({png.name})", ""]


def _growth_plot(result: dict, out: Path, plt) -> list[str]:
    """Import wall time against guest memory, one panel per workload, with a linear reference."""
    workloads = result["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        specs = [(SIZE[s] / (1 << 30), result["import"].get(f"{s}:{w}")) for s in result["sizes"]]
        specs = [(x, imp) for x, imp in specs if imp]
        if not specs:
            continue
        ours = _ours(specs[0][1])
        for name in (ours, "zstd -1 -T2", "zstd -3 -T2", "makedumpfile -l -d 1", "makedumpfile -c -d 31"):
            pts = [(x, imp["median"][name]["wall"]) for x, imp in specs if name in imp["median"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="ours" if name == ours else name)
        x0, y0 = specs[0][0], specs[0][1]["median"][ours]["wall"]
        ax.plot([x for x, _ in specs], [y0 * x / x0 for x, _ in specs], "k:", label="ours if cost grew with size")
        ax.set_title(f"{w} crashes")
        ax.set_xlabel("guest memory (GiB)")
        ax.set_ylabel("wall seconds (median)")
        ax.legend(fontsize=7)
    return _save(fig, plt, out, "growth", "import time against memory size")


def render(result: dict, out: Path) -> str:
    """The whole summary.md for one run (plots are written beside ``out``)."""
    out = Path(out)
    env = result["env"]
    lines = [
        "# Benchmarks: every peer, one harness (issue 7)",
        "",
        f"Command: `{result['command']}` (started {result['started']}, took {result.get('seconds', 0) / 60:.1f} min).  ",
        f"Machine: {env['cpu']}, {env['cpus']} CPUs, {env['ram_mib'] / 1024:.0f} GiB RAM, {env['kernel']}; "
        f"**shared** with other jobs: load average {result['load_start']} at the start, {result['load_end']} at the end.  ",
        f"Versions: Python {env['python']}, drgn {env['drgn']}, zstandard {env['zstandard']}, typer {env['typer']}, "
        f"{env['zstd']}, {env['makedumpfile']}, {env['qemu']}.  ",
        f"Dumps: crash lab, `sysrq` scenario, Debian 12 cloud kernel 6.1, 2 vCPUs, QEMU TCG; sizes {', '.join(result['sizes'])}, "
        f"workloads {', '.join(result['workloads'])}. Every figure is the median of {result['repeats']} runs "
        "(tools interleaved in a rotating order); every ratio is against the peer measured in the same run.",
        "",
        *[f"Note: {note}  " for note in result.get("notes", ())],
        "",
        "## Issue-7 targets",
        "",
        "| target | crash | measured (same run) | met? |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t} | {c} | {m} | {ok} |" for t, c, m, ok in targets(result)]
    lines += ["", "*ours* for collect/import is `tsubaki-forensics import` end to end (process start, read the ELF, "
              "zero elision, zstd -3 on 2 threads, write the .tsd); the peers read the same ELF (our `export`, "
              "which makedumpfile accepts). makedumpfile `-d 31` also drops page-cache, user and free pages: "
              "a smaller dump that no longer holds them (drgn cannot read user memory or the page cache from it), "
              "listed for reference, not as a like-for-like peer.", ""]
    if result["import"]:
        lines += ["## Collect/import: throughput, output size, peak RSS", "",
                  "Script: `bench/import_bench.py` (its `tools`, `run_child`, `warm`) plus makedumpfile `-d 31`. "
                  "Wall time measured here, CPU and peak RSS by GNU time around each child; "
                  "MiB/s is guest memory over wall time.", ""]
        for spec, imp in result["import"].items():
            lines += _import_table(spec, imp)
    if result["lab"]:
        lines += ["## QEMU's own compressed dump (kdump-zlib)", "",
                  "Script: `bench/lab_dump.py` (`one_run`): a fresh guest with the same parameters, panicked, then "
                  "dumped by QEMU as ELF and as kdump-zlib (one thread inside QEMU, the guest paused). "
                  "*ours* = the ELF dump + our import of a crash of the same size and workload "
                  "(the import above), which is what collecting from QEMU costs us.", "",
                  "| crash | boots | kdump-zlib s | kdump-zlib MiB | ELF dump s | ours: ELF dump + import s | ours .tsd MiB | kdump-zlib / ours time | size vs ours |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for spec, lab in result["lab"].items():
            m = lab["median"]
            imp = result["import"].get(spec)
            if imp:
                o = imp["median"][_ours(imp)]
                ours_s, ours_b = m["elf_s"] + o["wall"], o["bytes"]
                lines.append(f"| {spec} | {lab['repeats']} | {m['peer_s']:.2f} | {m['peer_bytes'] / MIB:.1f} | {m['elf_s']:.2f} | "
                             f"{ours_s:.2f} | {ours_b / MIB:.1f} | {m['peer_s'] / ours_s:.2f}x | {m['peer_bytes'] / ours_b:.2f}x |")
            else:
                lines.append(f"| {spec} | {lab['repeats']} | {m['peer_s']:.2f} | {m['peer_bytes'] / MIB:.1f} | {m['elf_s']:.2f} | | | | |")
        lines.append("")
    if result["analyze"]:
        lines += ["## Analyze: time and peak RSS vs plain drgn on the ELF", "",
                  "Whole processes, interleaved after one warm-up each (the commands of `bench/analyze_bench.py`; "
                  "CPU and peak RSS by GNU time around each child). ours = `tsubaki-forensics analyze crash.tsd --vmlinux V --format json` "
                  "(tasks, dmesg, panic); peer = plain drgn, same work, on the ELF vmcore.", "",
                  "| crash | ours wall s | peer wall s | ratio | ours CPU s | peer CPU s | ratio | ours RSS MiB | peer RSS MiB | ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for spec, a in result["analyze"].items():
            o, p = a["ours"], a["peer"]
            lines.append(f"| {spec} | {o['wall']:.3f} | {p['wall']:.3f} | {o['wall'] / p['wall']:.2f}x | {o['cpu']:.3f} | "
                         f"{p['cpu']:.3f} | {o['cpu'] / p['cpu']:.2f}x | {o['rss_mib']:.0f} | {p['rss_mib']:.0f} | "
                         f"{o['rss_mib'] / p['rss_mib']:.2f}x |")
        lines.append("")
    if result["latency"]:
        lines += ["## Random-access reads in drgn's pattern, cold and warm", "",
                  "Script: `bench/readlatency_bench.py`. The physical reads drgn makes for tasks+dmesg+panic are "
                  "recorded once (a recording `read_fn` between drgn and the bridge), then replayed: against the "
                  ".tsd `PhysicalMemory` (cold = freshly opened dump, warm = second pass), through the bridge's "
                  "`read_fn` (its page LRU in front of the chunk LRU: what drgn really calls), and against the ELF "
                  "vmcore via `mmap`. The OS page cache is warm for both files; cold is the reader's own state.", ""]
        for spec, lat in result["latency"].items():
            lines += [f"### {spec}: {lat['reads']} reads, {lat['bytes'] / MIB:.1f} MiB, {lat['distinct_pages']} distinct "
                      f"pages in {lat['distinct_mib']} distinct MiB", "",
                      "| reader | total ms | vs ELF mmap (same pass) | p50 µs | p99 µs | max µs |", "|---|---:|---:|---:|---:|---:|"]
            med = lat["median"]
            for name, r in med.items():
                ref = med["ELF vmcore mmap, " + name.rsplit(", ", 1)[1]]
                lines.append(f"| {name} | {r['total_ms']:.1f} | {r['total_ms'] / ref['total_ms']:.2f}x | {r['p50_us']:.2f} | "
                             f"{r['p99_us']:.2f} | {r['max_us']:.0f} |")
            lines.append("")
    if result.get("downtime"):
        lines += ["## Emulated downtime: policies x storage profiles x sizes", "",
                  "Script: `bench/collect_compare.py` (run as a subprocess by run_all.py; its tables follow "
                  f"verbatim, with `--repeat {result['repeats']}`).", "", result["downtime"]]
    lines += ["## How each cost grows with memory size", ""] + _growth(result)
    lines += ["## Plots", ""] + _plots(result, out)
    return "\n".join(lines).rstrip() + "\n"
