"""Debian kernels for the lab: resolve, download, extract, cache by release.

The newest ABI of a series is resolved at run time from what its meta
package depends on (Debian's security pocket keeps only the newest ABI, so a
hard-coded release breaks when superseded).  A request may pin one release
instead (:mod:`.pinning`): it is used from the cache, or downloaded while the
archive still has it, and otherwise replaced by the newest of its series with
a warning on stderr.  From the ``-unsigned`` image we
keep the bzImage and the few modules the guest needs; from ``-dbg`` only the
DWARF vmlinux, slimmed with ``objcopy --remove-relocations='*'``.  Each
release is one atomic cache entry; a second run downloads nothing.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import LabError
from .cache import atomic_entry, cache_root, entry_is_complete, entry_lock
from .debpkg import extract_image, extract_vmlinux, load_order, read_build_id
from .arch import X86_64, GuestArch, arch_of_flavour
from .host import ensure_host_tools, run_tool
from .pinning import FLAVOURS, KernelRequest, parse_kernel_request

__all__ = [
    "KernelArtifacts",
    "GUEST_MODULES",
    "meta_package",
    "parse_depends",
    "resolve_release",
    "in_archive",
    "choose_release",
    "ensure_kernel",
    "cached_releases",
    "DownloadError",
    "OPTIONAL_MODULES",
    "arch_of_release",
    "ensure_apt_arch",
]

# The x86_64 guest's (each architecture's are in :mod:`.arch`).
GUEST_MODULES = X86_64.guest_modules
# Cached too, loaded only by the scenarios that need them (loop: a frozen ext2 image).
OPTIONAL_MODULES = ("loop",)
_RELEASE_RE = re.compile(r"^\s*Depends:\s*linux-image-(\S+?)(?:-unsigned)?(?::[a-z0-9]+)?\s*$")


@dataclass(frozen=True)
class KernelArtifacts:
    """One cached Debian kernel: what the lab boots and what drgn reads."""

    series: str
    release: str
    version: str
    bzimage: Path
    vmlinux: Path
    modules: list[Path] = field(default_factory=list)  # every cached module, load order
    build_id: str = ""
    download_bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    # What the caller asked for: the series ("6.1": its newest) or a pinned release.
    requested: str = ""
    arch: str = "x86_64"  # the guest architecture (lab.arch), from the flavour

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(bzimage=str(self.bzimage), vmlinux=str(self.vmlinux), modules=[str(m) for m in self.modules])
        return d


def meta_package(series: str, flavour: str = "cloud-amd64") -> str:
    """Name of the meta package that tracks the newest ABI of ``series``."""
    arch_of_flavour(flavour)  # validates
    if series == "6.1":
        return f"linux-image-{flavour}"
    if re.fullmatch(r"\d+\.\d+", series):
        return f"linux-image-{series}-{flavour}"
    raise LabError(f"kernel series {series!r} is not of the form MAJOR.MINOR (e.g. 6.1, 6.12)")


def parse_depends(text: str) -> str:
    """The kernel release a meta package depends on, from ``apt-cache depends`` output."""
    for line in text.splitlines():
        m = _RELEASE_RE.match(line)
        if m:
            return m.group(1)
    raise LabError("apt-cache shows no linux-image dependency")


def _apt_env() -> dict[str, str]:
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")


def apt_update() -> None:
    """Refresh the package lists (root only)."""
    if os.geteuid() != 0:
        raise LabError("the apt package lists are stale or missing and updating them needs root: run apt-get update")
    run_tool(["apt-get", "update", "-q"], what="apt-get update", env=_apt_env(), timeout=600)


def resolve_release(series: str, flavour: str = "cloud-amd64", *, update: bool = False) -> str:
    """Current Debian release string of ``series`` (e.g. ``6.1.0-56-cloud-amd64``)."""
    arch = arch_of_flavour(flavour)
    ensure_apt_arch(arch)
    meta = arch.package(meta_package(series, flavour))
    if update:
        apt_update()
    proc = subprocess.run(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", meta],
        capture_output=True, text=True, env=_apt_env(),
    )
    if proc.returncode != 0 or "Depends:" not in proc.stdout:
        if not update and os.geteuid() == 0:
            return resolve_release(series, flavour, update=True)
        raise LabError(
            f"apt does not know {meta} (series {series}); run apt-get update, "
            "or check that bookworm and bookworm-security are in the apt sources"
        )
    return parse_depends(proc.stdout)


def _apt_version(package: str) -> str:
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", package],
                          capture_output=True, text=True, env=_apt_env())
    m = re.search(r"^Version:\s*(\S+)", proc.stdout, re.MULTILINE)
    if not m:
        raise LabError(f"apt has no package {package}")
    return m.group(1)


def _download(packages: list[str], dest: Path) -> list[Path]:
    """``apt-get download`` into ``dest``; returns the .deb paths in order."""
    for pkg in packages:
        try:
            run_tool(["apt-get", "download", "-q", pkg], what=f"downloading {pkg} (network needed once)",
                     cwd=dest, env=_apt_env(), timeout=1800)
        except LabError as e:
            raise DownloadError(str(e)) from e
    debs = []
    for pkg in packages:
        found = sorted(dest.glob(f"{glob.escape(pkg.split(':')[0])}_*.deb"))
        if not found:
            raise LabError(f"apt-get download left no .deb for {pkg}")
        debs.append(found[0])
    return debs


def _wanted_modules(arch: GuestArch) -> tuple[str, ...]:
    return arch.guest_modules + OPTIONAL_MODULES


def flavour_of_release(release: str) -> str:
    """The flavour a full release name ends in (``6.1.0-57-cloud-arm64`` -> ``cloud-arm64``).

    :raises LabError: the name ends in no flavour the lab knows.
    """
    for flavour in sorted(FLAVOURS, key=len, reverse=True):  # "-cloud-arm64" before "-arm64"
        if release.endswith("-" + flavour):
            return flavour
    raise LabError(f"kernel release {release!r} names no flavour the lab boots ({', '.join(FLAVOURS)})")


def arch_of_release(release: str) -> GuestArch:
    """The architecture of a full release name (``6.1.0-57-cloud-arm64`` -> arm64)."""
    return arch_of_flavour(flavour_of_release(release))


def ensure_apt_arch(arch: GuestArch) -> None:
    """Make apt know ``arch``'s packages (a foreign architecture on this host), once.

    ``dpkg --add-architecture`` only widens which package lists apt fetches;
    nothing of the foreign architecture is installed.

    :raises LabError: apt lacks the architecture and we are not root.
    """
    if arch.package("x") == "x":
        return
    have = run_tool(["dpkg", "--print-foreign-architectures"], what="dpkg").stdout.split()
    if arch.deb_arch in have:
        return
    if os.geteuid() != 0:
        raise LabError(f"apt does not fetch {arch.deb_arch} packages here; as root run: "
                       f"dpkg --add-architecture {arch.deb_arch} && apt-get update")
    run_tool(["dpkg", "--add-architecture", arch.deb_arch], what=f"dpkg --add-architecture {arch.deb_arch}")
    apt_update()


def _has_debug_relocations(vmlinux: Path) -> bool:
    """Whether the -dbg vmlinux carries ``.rela.debug_*`` sections (x86_64's do: ~2/3 of its size)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(vmlinux, "rb") as f:
            return any(sec.name.startswith(".rela.debug") for sec in ELFFile(f).iter_sections())
    except (OSError, ELFError) as e:
        raise LabError(f"the -dbg vmlinux {vmlinux.name} is not a readable ELF file: {e}") from e


def kernels_dir() -> Path:
    return cache_root() / "kernels"


def _load_cached(entry: Path) -> KernelArtifacts:
    meta = json.loads((entry / "kernel.json").read_text())
    return KernelArtifacts(
        series=meta["series"], release=meta["release"], version=meta["version"],
        bzimage=entry / "bzImage", vmlinux=entry / "vmlinux",
        modules=[entry / "modules" / m for m in meta["modules"]],
        build_id=meta["build_id"], download_bytes=meta["download_bytes"], timings=meta["timings"],
        arch=meta.get("arch") or arch_of_release(meta["release"]).name,
    )


def _release_key(release: str) -> list:
    """Sort key that puts 6.1.0-56 after 6.1.0-9."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", release)]


def cached_releases(series: str | None = None, flavour: str | None = None) -> list[KernelArtifacts]:
    """Every complete kernel in the cache (optionally of one series and flavour), oldest first."""
    root = kernels_dir()
    found = []
    if root.is_dir():
        for entry in sorted(root.iterdir(), key=lambda p: _release_key(p.name)):
            if entry_is_complete(entry) and (entry / "kernel.json").is_file():
                art = _load_cached(entry)
                if (series is None or art.series == series) and \
                        (flavour is None or flavour_of_release(art.release) == flavour):
                    found.append(art)
    return found


class DownloadError(LabError):
    """``apt-get download`` failed (no network, or the lists name a superseded ABI)."""


def in_archive(release: str) -> bool:
    """Whether apt still offers both packages the lab needs of ``release`` (image and ``-dbg``)."""
    try:
        arch = arch_of_release(release)
        ensure_apt_arch(arch)
        for suffix in ("unsigned", "dbg"):
            _apt_version(arch.package(f"linux-image-{release}-{suffix}"))
    except LabError:
        return False
    return True


def _warn(log, message: str) -> None:
    """A warning the user must see: through ``log`` when given, else on stderr."""
    if log is None:
        sys.stderr.write(f"warning: {message}\n")
    else:
        log(f"warning: {message}")


def ensure_kernel(kernel: str = "6.1", flavour: str = "cloud-amd64", *, log=None) -> KernelArtifacts:
    """The cached kernel for ``kernel``, downloading and extracting it on first use.

    ``kernel`` is a series (``6.1``: its newest ABI, unless ``TSUBAKI_LAB_KERNELS``
    pins one) or a release (``6.1.0-57``, ``6.12.118+deb12``).  A pinned release
    is taken from the cache without asking apt; one that is neither cached nor
    in the archive any more falls back to the newest of its series, with a
    warning.  Without apt lists (or network) but with a cached release of the
    series, that release is used.  When a download fails as root, the apt
    lists are refreshed and the release resolved again once: the security
    pocket drops an ABI as soon as a newer one is published.  The returned
    artifacts say what was requested (``requested``) and what is used
    (``release``).

    :raises LabError: malformed request, resolution, download or extraction failed.
    """
    request = parse_kernel_request(kernel, flavour)
    given = log
    warn = lambda message: _warn(given, message)  # noqa: E731
    log = log or (lambda msg: None)
    try:
        art = _ensure_kernel(request, log, warn)
    except DownloadError:
        if os.geteuid() != 0:
            raise
        log("download failed; refreshing apt lists and resolving the release again")
        apt_update()
        art = _ensure_kernel(request, log, warn)
    return replace(art, requested=str(request))


def choose_release(request: KernelRequest, warn) -> str:
    """The release to fetch for ``request``: its pin while the archive has it, else the newest.

    :raises LabError: apt cannot resolve the series.
    """
    if request.pinned and in_archive(request.pinned):
        return request.pinned
    newest = resolve_release(request.series, request.flavour)
    if request.pinned:
        by = f" (pinned by {request.pinned_by})" if request.pinned_by else ""
        warn(f"kernel {request.pinned}{by} is no longer in the archive nor in the cache; "
             f"using the newest {request.series}: {newest}")
    return newest


def _ensure_kernel(request: KernelRequest, log, warn) -> KernelArtifacts:
    if request.pinned and _usable(kernels_dir() / request.pinned):
        return _load_cached(kernels_dir() / request.pinned)
    try:
        release = choose_release(request, warn)
    except LabError:
        cached = cached_releases(request.series, request.flavour)
        if cached:
            (warn if request.pinned else log)(
                f"apt cannot resolve {request}; using cached {cached[-1].release}")
            return cached[-1]
        raise
    entry = kernels_dir() / release
    if _usable(entry):
        return _load_cached(entry)
    with entry_lock(entry):
        if _usable(entry):  # another process fetched it while we waited
            return _load_cached(entry)
        _fetch(request.series, request.flavour, release, entry, log)
    return _load_cached(entry)


def _usable(entry: Path) -> bool:
    """Complete and holding every module this version of the lab extracts (else refetched)."""
    if not entry_is_complete(entry):
        return False
    try:
        have = set(json.loads((entry / "kernel.json").read_text())["modules"])
    except (OSError, ValueError, KeyError):
        return False
    return {f"{m.replace('-', '_')}.ko" for m in _wanted_modules(arch_of_release(entry.name))} <= have


def _fetch(series: str, flavour: str, release: str, entry: Path, log) -> None:
    ensure_host_tools(["apt-get", "dpkg-deb", "objcopy"])
    log(f"downloading Debian kernel {release} (image + debug info, once)")
    timings: dict[str, float] = {}
    with atomic_entry(entry) as tmp:
        arch = arch_of_flavour(flavour)
        packages = [arch.package(f"linux-image-{release}-{suffix}") for suffix in ("unsigned", "dbg")]
        version = _apt_version(packages[0])
        dl = tmp / "download"
        dl.mkdir()
        t0 = time.monotonic()
        debs = _download(packages, dl)
        timings["download_s"] = time.monotonic() - t0
        download_bytes = sum(d.stat().st_size for d in debs)
        t0 = time.monotonic()
        wanted = {m.replace("-", "_") for m in _wanted_modules(arch)}
        _, modules = extract_image(debs[0], release, tmp, wanted)
        timings["extract_image_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        fat = tmp / "vmlinux.full"
        extract_vmlinux(debs[1], release, fat)
        shutil.rmtree(dl)
        timings["extract_vmlinux_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        if _has_debug_relocations(fat):
            run_tool(["objcopy", "--remove-relocations=*", str(fat), str(tmp / "vmlinux")],
                     what="slimming vmlinux with objcopy", timeout=900)
            fat.unlink()
        else:  # arm64's -dbg vmlinux carries none (and the host's objcopy cannot read it)
            fat.rename(tmp / "vmlinux")
        timings["objcopy_s"] = time.monotonic() - t0
        order = load_order(modules)
        meta = {
            "series": series, "release": release, "version": version, "flavour": flavour, "arch": arch.name,
            "modules": [p.name for p in order], "build_id": read_build_id(tmp / "vmlinux"),
            "download_bytes": download_bytes, "timings": timings,
            "packages": packages,
        }
        (tmp / "kernel.json").write_text(json.dumps(meta, indent=2) + "\n")
