"""``tsubaki-forensics lab``: make real kernel crashes on demand (see docs/LAB.md).

``lab crash`` goes from nothing to a crashed Debian kernel under QEMU (tools,
kernel download, initramfs, boot, panic, ELF vmcore, ground truth);
``lab list`` shows the scenarios, workloads and what is cached;
``lab kernel`` only fetches a kernel series into the cache.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LabError
from . import output as cli_output
from .output import format_option, print_json, safe_text

__all__ = ["register"]

lab_app = typer.Typer(
    name="lab",
    help="Crash real Debian kernels under QEMU for tests, samples and benchmarks.",
    no_args_is_help=True,
)


def _check_format(fmt: str) -> None:
    if fmt not in ("text", "json"):
        raise LabError(f"--format must be text or json, not {fmt!r}")


def _progress(message: str) -> None:
    cli_output.stderr.print(f"[dim]lab:[/dim] {safe_text(message)}")


@lab_app.command("crash")
def crash_command(
    output: Annotated[Optional[Path], typer.Option("-o", "--output", metavar="DIR", help="Directory to write the crash into (created). Required.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", hidden=True, help="Old spelling of --output.")] = None,
    scenario: Annotated[str, typer.Option(help="How to panic: see `lab list`.")] = "sysrq",
    mem: Annotated[str, typer.Option(help="Guest RAM, e.g. 256M, 512M, 4G (above 3G the PCI hole splits RAM).")] = "512M",
    smp: Annotated[int, typer.Option(help="Number of vCPUs (1-8).")] = 2,
    workload: Annotated[str, typer.Option(help="idle, or busy (most RAM filled with realistic data).")] = "idle",
    kernel: Annotated[str, typer.Option(help=(
        "Debian kernel: a series, 6.1 or 6.12 (its newest ABI, resolved via apt), or a release to pin, "
        "e.g. 6.1.0-57 or 6.12.118+deb12 (the newest of its series if the archive no longer has it). "
        "TSUBAKI_LAB_KERNELS=6.1.0-57,... pins series-wide."))] = "6.1",
    arch: Annotated[str, typer.Option(help=(
        "Guest architecture: x86_64, or arm64 (Debian's cloud-arm64 kernel under qemu-system-aarch64 "
        "-M virt, TCG; see docs/LAB.md)."))] = "x86_64",
    ram_file: Annotated[bool, typer.Option("--ram-file", help="Keep guest RAM in guest-ram.bin (memory-backend-file) for live collection.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the panic (default scales with RAM).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier crash in the same directory.")] = False,
    fmt: Annotated[str, format_option()] = "text",
) -> None:
    """Boot a Debian kernel under QEMU, panic it, and save vmcore, console, manifest and ground truth."""
    from ..lab import crash

    _check_format(fmt)
    if output is not None and out is not None and output != out:
        raise LabError("give the directory once, with -o/--output")
    out = output or out
    if out is None:  # a usage error (exit 2), as when the option was required
        raise typer.BadParameter("missing: the directory to write the crash into", param_hint="'-o' / '--output'")
    result = crash(scenario, mem, smp, workload, kernel, out, ram_file=ram_file, timeout=timeout,
                   force=force, log=_progress, arch=arch)
    m = result.manifest
    if fmt == "json":
        print_json(m)
        return
    cli_output.stdout.print(f"crash directory  {safe_text(result.directory)}")
    requested = m["kernel"].get("requested", kernel)
    asked = "" if requested == m["kernel"]["release"] else f", requested {safe_text(requested)}"
    cli_output.stdout.print(f"kernel           {m['kernel']['release']} (build id {m['kernel']['build_id']}{asked})")
    cli_output.stdout.print(f"scenario         {m['scenario']} / {m['workload']}, {m['mem']}, {m['smp']} vCPU, "
                            f"{m.get('arch', 'x86_64')}, {m['accel']}")
    cli_output.stdout.print(f"panic            {safe_text(m['panic_message'])}")
    cli_output.stdout.print(f"crashed          cpu {m['crashed_cpu']}, pid {m['crashed_pid']}")
    cli_output.stdout.print(f"backtrace        {' <- '.join(m['backtrace_top'])}")
    cli_output.stdout.print(f"vmcore           {result.vmcore} ({m['files']['vmcore']['bytes'] / 2**20:.0f} MiB)")
    t = m["timings"]
    cli_output.stdout.print(f"times            boot->panic {t['boot_to_panic_s']:.1f} s, dump {t['dump_s']:.1f} s, ground truth {t['ground_truth_s']:.1f} s")


@lab_app.command("kernel")
def kernel_command(
    kernel: Annotated[str, typer.Argument(help="Debian kernel series (6.1, 6.12: its newest ABI) or release to pin (6.1.0-57).")] = "6.1",
    arch: Annotated[str, typer.Option(help="Guest architecture: x86_64 or arm64.")] = "x86_64",
) -> None:
    """Fetch a kernel into the cache (bzImage, guest modules, DWARF vmlinux)."""
    from ..lab import ensure_kernel
    from ..lab.arch import get_arch

    art = ensure_kernel(kernel, get_arch(arch).default_flavour, log=_progress)
    print_json(art.to_json())


@lab_app.command("list")
def list_command(
    fmt: Annotated[str, format_option()] = "text",
) -> None:
    """Show the scenarios, workloads, cached kernels and cached crashes."""
    from ..lab import SCENARIOS, WORKLOADS
    from ..lab.cache import cache_root
    from ..lab.kernel import cached_releases

    _check_format(fmt)
    crashes_dir = cache_root() / "crashes"
    crashes = sorted(str(p.parent.relative_to(crashes_dir)) for p in crashes_dir.glob("*/*/.complete")) if crashes_dir.is_dir() else []
    data = {
        "scenarios": {s.name: {"summary": s.summary, "panic_message": s.panic_message} for s in SCENARIOS.values()},
        "workloads": {w.name: w.summary for w in WORKLOADS.values()},
        "cache": str(cache_root()),
        "kernels": [k.release for k in cached_releases()],
        "crashes": crashes,
    }
    if fmt == "json":
        print_json(data)
        return
    cli_output.stdout.print("scenarios:")
    for name, s in data["scenarios"].items():
        cli_output.stdout.print(f"  {name:<10} {s['summary']}")
    cli_output.stdout.print("workloads:")
    for name, summary in data["workloads"].items():
        cli_output.stdout.print(f"  {name:<10} {summary}")
    cli_output.stdout.print(f"cache: {data['cache']}")
    cli_output.stdout.print(f"  kernels: {', '.join(data['kernels']) or '(none)'}")
    for c in crashes:
        cli_output.stdout.print(f"  crash: {c}")


def register(app: typer.Typer) -> None:
    """Add the ``lab`` command group to ``app``."""
    app.add_typer(lab_app, name="lab")
