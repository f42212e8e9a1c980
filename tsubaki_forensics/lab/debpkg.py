"""Reading Debian kernel packages without installing them.

``dpkg-deb --fsys-tarfile`` streams a package's data tar; we pick the few
members we need and stop early where we can (the DWARF vmlinux is the first
member of ``-dbg``, so the other ~250 MB are never decompressed).  Modules
are stored uncompressed with their ``depends=`` resolved, because busybox's
``insmod`` in the guest reads plain ELF and knows no dependencies.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import LabError

__all__ = [
    "extract_image",
    "extract_vmlinux",
    "module_depends",
    "load_order",
    "select_modules",
    "read_build_id",
    "module_name",
]

_MODULE_RE = re.compile(r"\.ko(\.xz|\.zst|\.gz)?$")


@contextmanager
def _members(deb: Path) -> Iterator[tarfile.TarFile]:
    """The data tar of ``deb`` as a stream; a damaged package becomes a LabError."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            yield tar
    except (tarfile.TarError, EOFError, lzma.LZMAError) as e:
        raise LabError(f"cannot read {deb.name} (damaged download?): {e}") from e
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    src = tar.extractfile(member)
    if src is None:
        raise LabError(f"{member.name} in the kernel package is not a regular file")
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def module_name(path: str) -> str:
    """``.../pvpanic-mmio.ko.xz`` -> ``pvpanic_mmio`` (the kernel's spelling)."""
    return _MODULE_RE.sub("", os.path.basename(path)).replace("-", "_")


def extract_image(deb: Path, release: str, out: Path, wanted: set[str]) -> tuple[Path, dict[str, Path]]:
    """``out/bzImage`` and ``out/modules/<name>.ko`` for ``wanted`` and their dependencies.

    :raises LabError: the package lacks the image or a module.
    """
    modules: dict[str, Path] = {}
    available: set[str] = set()
    bzimage = out / "bzImage"
    moddir = out / "modules"
    moddir.mkdir(exist_ok=True)

    def grab(names: set[str]) -> None:
        with _members(deb) as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if name == f"boot/vmlinuz-{release}" and not bzimage.exists():
                    _copy_member(tar, member, bzimage)
                elif name.startswith(f"lib/modules/{release}/") and _MODULE_RE.search(name):
                    mod = module_name(name)
                    available.add(mod)
                    if mod in names and mod not in modules:
                        raw = moddir / f"{mod}.raw"
                        _copy_member(tar, member, raw)
                        modules[mod] = _decompress_module(raw, moddir / f"{mod}.ko")

    grab(wanted)
    if not bzimage.exists():
        raise LabError(f"{deb.name} has no boot/vmlinuz-{release}")
    while missing := {d for m in modules.values() for d in module_depends(m)} - set(modules):
        if unknown := missing - available:
            raise LabError(f"guest modules need {', '.join(sorted(unknown))}, which {deb.name} lacks")
        grab(missing)
    if lost := wanted - set(modules):
        raise LabError(f"{deb.name} has no module {', '.join(sorted(lost))}")
    return bzimage, modules


def _decompress_module(raw: Path, dest: Path) -> Path:
    data = raw.read_bytes()
    if data[:6] == b"\xfd7zXZ\x00":  # Debian's 6.12 ships .ko.xz
        data = lzma.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        data = zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)
    dest.write_bytes(data)
    raw.unlink()
    return dest


def extract_vmlinux(deb: Path, release: str, dest: Path) -> None:
    """The DWARF vmlinux of ``-dbg``: its first member, so reading stops right after it."""
    target = f"usr/lib/debug/boot/vmlinux-{release}"
    with _members(deb) as tar:
        for member in tar:
            if member.name.lstrip("./") == target:
                _copy_member(tar, member, dest)
                return
    raise LabError(f"{deb.name} has no {target}")


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


def load_order(modules: dict[str, Path]) -> list[Path]:
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
