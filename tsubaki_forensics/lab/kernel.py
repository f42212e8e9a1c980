"""Debian kernels for the lab: resolve, download, extract, cache by release.

The newest ABI of a series is resolved at run time from what its meta
package depends on (Debian's security pocket keeps only the newest ABI, so a
hard-coded release breaks when superseded).  From the ``-unsigned`` image we
keep the bzImage and the few modules the guest needs; from ``-dbg`` only the
DWARF vmlinux, slimmed with ``objcopy --remove-relocations='*'``.  Each
release is one atomic cache entry; a second run downloads nothing.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LabError
from .cache import atomic_entry, cache_root, entry_is_complete, entry_lock
from .host import ensure_host_tools, run_tool

__all__ = [
    "KernelArtifacts",
    "SERIES_META",
    "GUEST_MODULES",
    "meta_package",
    "parse_depends",
    "resolve_release",
    "ensure_kernel",
    "read_build_id",
    "module_depends",
    "DownloadError",
    "OPTIONAL_MODULES",
    "select_modules",
]

# series -> meta package of its cloud flavour (what the image package is named after)
SERIES_META = {"6.1": "linux-image-cloud-amd64", "6.12": "linux-image-6.12-cloud-amd64"}
FLAVOURS = ("cloud-amd64", "amd64")
# Without pvpanic there is no GUEST_PANICKED; without qemu_fw_cfg no VMCOREINFO in the dump.
GUEST_MODULES = ("pvpanic", "pvpanic-mmio", "qemu_fw_cfg")
# Cached too, loaded only by the scenarios that need them (loop: a frozen ext2 image).
OPTIONAL_MODULES = ("loop",)
_RELEASE_RE = re.compile(r"^\s*Depends:\s*linux-image-(\S+?)(?:-unsigned)?\s*$")


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

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(bzimage=str(self.bzimage), vmlinux=str(self.vmlinux), modules=[str(m) for m in self.modules])
        return d


def meta_package(series: str, flavour: str = "cloud-amd64") -> str:
    """Name of the meta package that tracks the newest ABI of ``series``."""
    if flavour not in FLAVOURS:
        raise LabError(f"unknown kernel flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
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
    meta = meta_package(series, flavour)
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
        found = sorted(dest.glob(f"{glob_escape(pkg)}_*.deb"))
        if not found:
            raise LabError(f"apt-get download left no .deb for {pkg}")
        debs.append(found[0])
    return debs


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


class _Tar:
    """Stream a .deb's data tar (``dpkg-deb --fsys-tarfile``) without unpacking it all."""

    def __init__(self, deb: Path) -> None:
        self.proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.tar = tarfile.open(fileobj=self.proc.stdout, mode="r|")
        self.deb = deb

    def close(self) -> None:
        self.tar.close()
        self.proc.stdout.close()
        self.proc.kill()
        self.proc.wait()


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    src = tar.extractfile(member)
    if src is None:
        raise LabError(f"{member.name} in the kernel package is not a regular file")
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def _extract_image(deb: Path, release: str, out: Path) -> dict[str, Path]:
    """bzImage and every guest module (plus their dependencies) from the image .deb."""
    wanted = {m.replace("-", "_") for m in GUEST_MODULES + OPTIONAL_MODULES}
    modules: dict[str, Path] = {}
    all_modules: dict[str, str] = {}
    bzimage = out / "bzImage"
    found_image = False
    moddir = out / "modules"
    moddir.mkdir()

    def module_name(path: str) -> str:
        return re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", os.path.basename(path)).replace("-", "_")

    def grab(wanted_names: set[str]) -> None:
        nonlocal found_image
        t = _Tar(deb)
        try:
            for member in t.tar:
                name = member.name.lstrip("./")
                if name == f"boot/vmlinuz-{release}" and not found_image:
                    _copy_member(t.tar, member, bzimage)
                    found_image = True
                elif name.startswith(f"lib/modules/{release}/") and re.search(r"\.ko(\.\w+)?$", name):
                    mod = module_name(name)
                    all_modules[mod] = name
                    if mod in wanted_names and mod not in modules:
                        raw = out / "raw.ko"
                        _copy_member(t.tar, member, raw)
                        modules[mod] = _decompress_module(raw, moddir / f"{mod}.ko")
        finally:
            t.close()

    grab(wanted)
    if not found_image:
        raise LabError(f"{deb.name} has no boot/vmlinuz-{release}")
    while True:
        missing = {d for m in modules.values() for d in module_depends(m)} - set(modules)
        if not missing:
            break
        unknown = missing - set(all_modules)
        if unknown:
            raise LabError(f"guest modules need {', '.join(sorted(unknown))}, which {deb.name} lacks")
        grab(missing)
    lost = wanted - set(modules)
    if lost:
        raise LabError(f"{deb.name} has no module {', '.join(sorted(lost))}")
    return {"bzimage": bzimage, **{f"module:{k}": v for k, v in modules.items()}}


def _decompress_module(raw: Path, dest: Path) -> Path:
    """Store a module uncompressed (busybox insmod in the guest reads plain ELF)."""
    data = raw.read_bytes()
    if data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        data = zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)
    dest.write_bytes(data)
    raw.unlink()
    return dest


def module_depends(path: Path) -> list[str]:
    """Module names in the ``depends=`` field of a module's ``.modinfo`` section."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(".modinfo")
        if section is None:
            return []
        for entry in section.data().split(b"\0"):
            if entry.startswith(b"depends="):
                return [d.replace("-", "_") for d in entry[8:].decode().split(",") if d]
    return []


def _load_order(modules: dict[str, Path]) -> list[Path]:
    """Dependencies first (a topological order of the ``depends=`` graph)."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        if name in stack:
            raise LabError(f"module dependency cycle through {name}")
        for dep in module_depends(modules[name]):
            visit(dep, stack + (name,))
        order.append(name)

    for name in sorted(modules):
        visit(name)
    return [modules[n] for n in order]


def select_modules(modules: list[Path], names: tuple[str, ...]) -> list[Path]:
    """The modules called ``names`` and their dependencies, in load order.

    :param modules: every cached module, already in load order.
    :raises LabError: a name is not in the cache.
    """
    by_name = {p.name.removesuffix(".ko"): p for p in modules}
    needed: set[str] = set()
    todo = [n.replace("-", "_") for n in names]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        if name not in by_name:
            raise LabError(f"module {name} is not in the kernel cache")
        needed.add(name)
        todo.extend(module_depends(by_name[name]))
    return [p for p in modules if p.name.removesuffix(".ko") in needed]


def _extract_vmlinux(deb: Path, release: str, dest: Path) -> None:
    """The DWARF vmlinux: the first member of ``-dbg``, so stop reading right after it."""
    target = f"usr/lib/debug/boot/vmlinux-{release}"
    t = _Tar(deb)
    try:
        for member in t.tar:
            if member.name.lstrip("./") == target:
                _copy_member(t.tar, member, dest)
                return
    finally:
        t.close()
    raise LabError(f"{deb.name} has no {target}")


def read_build_id(path: Path) -> str:
    """The GNU build ID of an ELF file as hex ('' when it has none)."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        for section in ELFFile(f).iter_sections():
            if section["sh_type"] == "SHT_NOTE":
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                        desc = note["n_desc"]
                        return desc.hex() if isinstance(desc, bytes) else str(desc)
    return ""


def kernels_dir() -> Path:
    return cache_root() / "kernels"


def _load_cached(entry: Path) -> KernelArtifacts:
    meta = json.loads((entry / "kernel.json").read_text())
    return KernelArtifacts(
        series=meta["series"], release=meta["release"], version=meta["version"],
        bzimage=entry / "bzImage", vmlinux=entry / "vmlinux",
        modules=[entry / "modules" / m for m in meta["modules"]],
        build_id=meta["build_id"], download_bytes=meta["download_bytes"], timings=meta["timings"],
    )


def cached_releases(series: str | None = None) -> list[KernelArtifacts]:
    """Every complete kernel in the cache (optionally of one series)."""
    root = kernels_dir()
    found = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry_is_complete(entry) and (entry / "kernel.json").is_file():
                art = _load_cached(entry)
                if series is None or art.series == series:
                    found.append(art)
    return found


class DownloadError(LabError):
    """``apt-get download`` failed (no network, or the lists name a superseded ABI)."""


def ensure_kernel(series: str = "6.1", flavour: str = "cloud-amd64", *, log=None) -> KernelArtifacts:
    """The cached kernel of ``series``, downloading and extracting it on first use.

    Without apt lists (or network) but with a cached release of the series,
    that release is used.  When a download fails as root, the apt lists are
    refreshed and the release resolved again once: the security pocket drops
    an ABI as soon as a newer one is published.

    :raises LabError: resolution, download or extraction failed.
    """
    log = log or (lambda msg: None)
    try:
        return _ensure_kernel(series, flavour, log)
    except DownloadError:
        if os.geteuid() != 0:
            raise
        log("download failed; refreshing apt lists and resolving the release again")
        apt_update()
        return _ensure_kernel(series, flavour, log)


def _ensure_kernel(series: str, flavour: str, log) -> KernelArtifacts:
    try:
        release = resolve_release(series, flavour)
    except LabError:
        cached = cached_releases(series)
        if cached:
            log(f"apt cannot resolve {series}; using cached {cached[-1].release}")
            return cached[-1]
        raise
    entry = kernels_dir() / release
    if _usable(entry):
        return _load_cached(entry)
    with entry_lock(entry):
        if _usable(entry):  # another process fetched it while we waited
            return _load_cached(entry)
        _fetch(series, flavour, release, entry, log)
    return _load_cached(entry)


def _usable(entry: Path) -> bool:
    """Complete and holding every module this version of the lab extracts (else refetched)."""
    if not entry_is_complete(entry):
        return False
    try:
        have = set(json.loads((entry / "kernel.json").read_text())["modules"])
    except (OSError, ValueError, KeyError):
        return False
    return {f"{m.replace('-', '_')}.ko" for m in GUEST_MODULES + OPTIONAL_MODULES} <= have


def _fetch(series: str, flavour: str, release: str, entry: Path, log) -> None:
    ensure_host_tools(["apt-get", "dpkg-deb", "objcopy"])
    log(f"downloading Debian kernel {release} (image + debug info, once)")
    timings: dict[str, float] = {}
    with atomic_entry(entry) as tmp:
        packages = [f"linux-image-{release}-unsigned", f"linux-image-{release}-dbg"]
        version = _apt_version(packages[0])
        dl = tmp / "download"
        dl.mkdir()
        t0 = time.monotonic()
        debs = _download(packages, dl)
        timings["download_s"] = time.monotonic() - t0
        download_bytes = sum(d.stat().st_size for d in debs)
        t0 = time.monotonic()
        parts = _extract_image(debs[0], release, tmp)
        timings["extract_image_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        fat = tmp / "vmlinux.full"
        _extract_vmlinux(debs[1], release, fat)
        shutil.rmtree(dl)
        timings["extract_vmlinux_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        run_tool(["objcopy", "--remove-relocations=*", str(fat), str(tmp / "vmlinux")],
                 what="slimming vmlinux with objcopy", timeout=900)
        fat.unlink()
        timings["objcopy_s"] = time.monotonic() - t0
        modules = {k.split(":", 1)[1]: v for k, v in parts.items() if k.startswith("module:")}
        order = _load_order(modules)
        meta = {
            "series": series, "release": release, "version": version, "flavour": flavour,
            "modules": [p.name for p in order], "build_id": read_build_id(tmp / "vmlinux"),
            "download_bytes": download_bytes, "timings": timings,
            "packages": packages,
        }
        (tmp / "kernel.json").write_text(json.dumps(meta, indent=2) + "\n")
