"""From nothing to a crashed guest: kernel, initramfs, QEMU, vmcore, ground truth.

:func:`crash` writes one crash directory (``vmcore.elf``, ``console.log``,
``manifest.json``, ``ground_truth.json`` and optionally ``guest-ram.bin``)
atomically: it is built beside its final place and renamed when complete.
:func:`cached_crash` keeps crashes under the cache, keyed by the parameters
and the kernel release, for the pytest fixtures and benchmarks.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import LabError
from .cache import atomic_entry, cache_root, entry_is_complete, entry_lock
from .ground_truth import compute_ground_truth
from .arch import ARCHES, HOST_ARCH, GuestArch, get_arch
from .busybox import guest_busybox
from .host import ensure_host_tools, probe_accelerator
from .initramfs import MARKER_PREFIX, build_initramfs
from .debpkg import select_modules
from .kernel import KernelArtifacts, ensure_kernel
from .pinning import series_of
from .qemu import GuestSpec, console_tail, run_guest
from .scenarios import get_scenario
from .sizes import format_size, parse_size
from .workloads import get_workload

__all__ = ["CrashResult", "CrashParams", "crash", "cached_crash", "load_crash", "guest_timings", "guest_digest", "MANIFEST", "GROUND_TRUTH"]

MANIFEST = "manifest.json"
GROUND_TRUTH = "ground_truth.json"
VMCORE = "vmcore.elf"
CONSOLE = "console.log"
RAM_FILE = "guest-ram.bin"
# Bump when a change to the ground truth or the manifest makes cached crashes
# stale; changes to a scenario or workload are noticed by guest_digest().
LAB_FORMAT = 2


@dataclass(frozen=True)
class CrashParams:
    """The parameters that make two crashes comparable (and the cache key)."""

    scenario: str = "sysrq"
    mem: str = "512M"
    smp: int = 2
    workload: str = "idle"
    kernel: str = "6.1"  # a series (its newest ABI, or TSUBAKI_LAB_KERNELS's pin) or a release
    ram_file: bool = False
    arch: str = "x86_64"  # the guest architecture (lab.arch); the kernel is its cloud flavour

    def normalized(self) -> CrashParams:
        """Validated, with the memory size in canonical spelling.

        :raises LabError: unknown scenario/workload/architecture, bad size or CPU count,
            or a scenario the architecture cannot run.
        """
        arch = get_arch(self.arch)
        trigger = get_scenario(self.scenario).qmp_trigger
        if trigger and trigger[0] not in arch.qmp_commands:
            able = ", ".join(a.name for a in ARCHES.values() if trigger[0] in a.qmp_commands)
            raise LabError(f"scenario {self.scenario} needs QMP {trigger[0]}, which the lab sends "
                           f"only to {able} guests, not {arch.name}")
        get_workload(self.workload)
        series_of(str(self.kernel).strip())
        if not 1 <= int(self.smp) <= 8:
            raise LabError(f"--smp {self.smp} is out of range (1..8)")
        return CrashParams(self.scenario, format_size(parse_size(self.mem)), int(self.smp),
                           self.workload, str(self.kernel).strip(), bool(self.ram_file), arch.name)

    @property
    def guest_arch(self) -> GuestArch:
        return get_arch(self.arch)

    @property
    def flavour(self) -> str:
        return self.guest_arch.default_flavour

    def key(self, release: str) -> str:
        ram = "-ramfile" if self.ram_file else ""
        return f"{release}/{self.scenario}-{self.workload}-{self.mem}-smp{self.smp}{ram}"


@dataclass(frozen=True)
class CrashResult:
    """One crashed guest on disk."""

    directory: Path
    vmcore: Path
    vmlinux: Path
    console: Path
    manifest: dict
    ground_truth: dict
    ram_file: Path | None = None


def load_crash(directory: Path) -> CrashResult:
    """Open a crash directory written by :func:`crash`.

    :raises LabError: not a crash directory, or its vmlinux is gone from the cache.
    """
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        ground_truth = json.loads((directory / GROUND_TRUTH).read_text())
    except (OSError, ValueError) as e:
        raise LabError(f"{directory} is not a crash-lab directory: {e}") from e
    vmlinux = Path(manifest["kernel"]["vmlinux"])
    if not vmlinux.is_file():
        raise LabError(f"the vmlinux of {directory} is gone ({vmlinux}); rerun the lab to fetch it")
    # Crashes made before pinning existed asked for a series, which params records.
    manifest["kernel"].setdefault("requested", manifest.get("params", {}).get("kernel"))
    ram = manifest["files"].get("ram_file")
    return CrashResult(
        directory=directory, vmcore=directory / VMCORE, vmlinux=vmlinux,
        console=directory / CONSOLE, manifest=manifest, ground_truth=ground_truth,
        ram_file=directory / ram["name"] if ram else None,
    )


def _timeout_for(mem: int, workload: str, accel: str, arch: GuestArch = HOST_ARCH) -> float:
    """A generous bound on boot-to-panic: TCG boots 512M in ~5-10 s, busy fills scale with RAM.

    A foreign architecture is emulated instruction by instruction: on a loaded
    2-core host an arm64 OOM of 512 MiB took 97 s to panic (x86_64 TCG: 6 s).
    """
    gib = mem / (1 << 30)
    bound = 90 + 30 * gib + (120 * gib if workload == "busy" else 0)
    if arch != HOST_ARCH:
        return 4 * bound
    return bound if accel == "tcg" else bound / 2


def _qemu_version(arch: GuestArch = HOST_ARCH) -> str:
    try:
        out = subprocess.run([arch.qemu, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return ""
    return out.splitlines()[0] if out else ""


def crash(
    scenario: str = "sysrq",
    mem: str = "512M",
    smp: int = 2,
    workload: str = "idle",
    kernel: str = "6.1",
    out_dir: Path | str = "crash",
    *,
    ram_file: bool = False,
    timeout: float | None = None,
    force: bool = False,
    log=None,
    arch: str = "x86_64",
) -> CrashResult:
    """Boot a Debian kernel, panic it by ``scenario`` and save everything in ``out_dir``.

    :param kernel: a series (``6.1``: its newest ABI) or a pinned release
        (``6.1.0-57``); the manifest records the request and the release used.
    :param force: replace ``out_dir`` when it holds an earlier crash.
    :param arch: the guest architecture, ``x86_64`` or ``arm64`` (TCG on an x86_64 host).
    :raises LabError: any step failed; nothing is left at ``out_dir`` then.
    """
    params = CrashParams(scenario, mem, smp, workload, kernel, ram_file, arch).normalized()
    return _crash(params, Path(out_dir), None, timeout=timeout, force=force, log=log)


def _crash(params: CrashParams, out_dir: Path, kern: KernelArtifacts | None, *,
           timeout: float | None, force: bool, log) -> CrashResult:
    """:func:`crash` with normalised parameters (and the kernel, when the caller resolved it)."""
    log = log or (lambda msg: None)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MANIFEST).is_file():
            raise LabError(f"{out_dir} exists and is not a crash-lab directory; choose another -o")
        if not force:
            raise LabError(f"{out_dir} already holds a crash; pass --force to replace it")
    ensure_host_tools([params.guest_arch.qemu])
    t_start = time.monotonic()
    kern = kern or ensure_kernel(params.kernel, params.flavour, log=log)
    t_kernel = time.monotonic() - t_start
    with atomic_entry(out_dir) as tmp:
        try:
            result = _crash_into(tmp, params, kern, timeout, log)
        except _PanicBeforeMarker as e:
            # Once seen on a loaded 2-core host (6.12, busy 2G, TCG): the guest
            # panicked 4 s into its workload, not by the scenario.  One more boot;
            # a second such panic is an error that says why.
            log(f"{e}; booting the guest once more")
            result = _crash_into(tmp, params, kern, timeout, log)
        result["timings"]["kernel_s"] = round(t_kernel, 3)
        (tmp / MANIFEST).write_text(json.dumps(result, indent=2) + "\n")
    return load_crash(out_dir)


class _PanicBeforeMarker(LabError):
    """The guest panicked, but not by the scenario: its workload never reached the marker."""


def _crash_into(tmp: Path, params: CrashParams, kern: KernelArtifacts, timeout: float | None, log) -> dict:
    scenario = get_scenario(params.scenario)
    workload = get_workload(params.workload)
    mem = parse_size(params.mem)
    arch = params.guest_arch
    busybox = guest_busybox(arch, log)
    marker = f"{MARKER_PREFIX} scenario={scenario.name} workload={workload.name} run={secrets.token_hex(4)}"
    initrd = tmp / "initramfs.cpio"
    modules = select_modules(kern.modules, arch.guest_modules + scenario.modules)
    initrd_size = build_initramfs(initrd, busybox, modules, scenario, workload, marker)
    accel = probe_accelerator(kern.bzimage) if arch == HOST_ARCH else "tcg"
    spec = GuestSpec(
        bzimage=kern.bzimage, initrd=initrd, mem=mem, smp=params.smp, workdir=tmp, accel=accel,
        ram_file=tmp / RAM_FILE if params.ram_file else None,
        qmp_trigger=scenario.qmp_trigger, ready_line=scenario.armed_line,
        timeout=timeout or _timeout_for(mem, workload.name, accel, arch), arch=arch,
    )
    log(f"booting {kern.release} ({arch.name}, {format_size(mem)}, {params.smp} vCPU, {accel}), scenario {scenario.name}, workload {workload.name}")
    run = run_guest(spec)
    log(f"panicked after {run.timings['boot_to_panic_s']:.1f} s; dump took {run.timings['dump_s']:.1f} s")
    initrd.unlink()
    t0 = time.monotonic()
    truth = compute_ground_truth(run.vmcore, kern.vmlinux)
    t_truth = time.monotonic() - t0
    if truth["kernel_release"] != kern.release:
        raise LabError(f"the dump is of {truth['kernel_release']}, not {kern.release}")
    if not any(marker in d["text"] for d in truth["dmesg"]):
        # The console may lag the kernel's log: the dump's own log says why it panicked.
        raise _PanicBeforeMarker(f"the guest panicked before printing its marker "
                       f"(panic: {truth.get('panic_message') or 'unknown'}; last kernel log lines: "
                       f"{' | '.join(d['text'] for d in truth['dmesg'][-8:])}): {console_tail(run.console)}")
    (tmp / GROUND_TRUTH).write_text(json.dumps(truth, indent=1) + "\n")
    files = {
        "vmcore": {"name": VMCORE, "bytes": run.vmcore.stat().st_size, "format": "elf"},
        "console": {"name": CONSOLE, "bytes": run.console.stat().st_size},
        "ground_truth": {"name": GROUND_TRUTH},
    }
    if spec.ram_file is not None:
        files["ram_file"] = {"name": RAM_FILE, "bytes": spec.ram_file.stat().st_size}
    return {
        "producer": f"tsubaki-forensics {__version__} lab",
        "lab_format": LAB_FORMAT,
        "guest_digest": guest_digest(scenario.name, workload.name),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": {**params.__dict__},
        "scenario": scenario.name,
        "workload": workload.name,
        "mem": params.mem,
        "mem_bytes": mem,
        "smp": params.smp,
        "marker": marker,
        "accel": accel,
        "arch": arch.name,
        "qemu": _qemu_version(arch),
        "qemu_argv": run.argv,
        "panic_event": run.panic_event,
        "kernel": {
            "requested": kern.requested or params.kernel,
            "series": kern.series, "release": kern.release, "version": kern.version,
            "build_id": kern.build_id, "bzimage": str(kern.bzimage), "vmlinux": str(kern.vmlinux),
            "download_bytes": kern.download_bytes,
        },
        "panic_message": truth["panic_message"],
        "crashed_cpu": truth["crashed_cpu"],
        "crashed_pid": truth["crashed_pid"],
        "backtrace_top": truth["backtrace"][:8],
        "initramfs_bytes": initrd_size,
        "files": files,
        "timings": {**{k: round(v, 3) for k, v in run.timings.items()}, "ground_truth_s": round(t_truth, 3)},
        "guest_timings": guest_timings(truth["dmesg"], marker),
    }


def guest_timings(dmesg: list[dict], marker: str) -> dict[str, float]:
    """Guest-clock seconds of the lab's milestones, from the kernel log timestamps.

    ``workload_start_s`` is when /init began the workload, ``marker_s`` when it
    was done (so their difference is the workload's fill time), ``panic_s``
    when the panic line was logged.
    """
    def first(pred) -> float | None:
        return next((round(d["time"], 3) for d in dmesg if pred(d["text"])), None)

    return {
        "workload_start_s": first(lambda t: t.startswith("tsubaki-lab: starting workload")),
        "marker_s": first(lambda t: t == marker),
        "panic_s": first(lambda t: t.startswith("Kernel panic - not syncing")),
    }


def cached_crash(params: CrashParams | None = None, *, log=None, **kwargs) -> CrashResult:
    """The crash for ``params`` from the cache, making it on first use.

    Keyed by the parameters and the resolved kernel release, so a new Debian
    ABI makes a new crash instead of reusing one of the old kernel.  The
    manifest's ``kernel.requested`` is the request of whoever made the entry
    (a series and a pin that resolve to the same release share it).
    """
    params = (params or CrashParams(**kwargs)).normalized()
    kern = ensure_kernel(params.kernel, params.flavour, log=log)
    entry = cache_root() / "crashes" / params.key(kern.release)
    if _is_current(entry):
        return load_crash(entry)
    with entry_lock(entry):
        if _is_current(entry):
            return load_crash(entry)
        return _crash(params, entry, kern, timeout=None, force=True, log=log)


def _is_current(entry: Path) -> bool:
    """A complete cached crash made by this lab format (older entries are rebuilt)."""
    if not entry_is_complete(entry):
        return False
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    params = manifest.get("params", {})
    return (manifest.get("lab_format") == LAB_FORMAT
            and manifest.get("guest_digest") == guest_digest(params.get("scenario", ""), params.get("workload", "")))


def guest_digest(scenario: str, workload: str) -> str:
    """Hash of what actually goes into the guest for this scenario and workload.

    A cached crash made by an older guest (say, a changed busy workload) is
    rebuilt instead of silently reused; edits to descriptions or expected
    frames do not invalidate anything.
    """
    import hashlib

    from .initramfs import render_init
    from .workloads import DAEMONS

    try:
        s, w = get_scenario(scenario), get_workload(workload)
    except LabError:
        return ""
    parts = [render_init(s, w, sorted(s.modules), "MARKER"), s.trigger, repr(s.qmp_trigger), s.armed_line,
             repr(sorted(DAEMONS.items())), repr(sorted(w.helpers.items())), repr(sorted(s.helpers.items())),
             str(LAB_FORMAT)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
