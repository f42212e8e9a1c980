"""Find the vmlinux whose build id matches the dump.

Places, in order: ``--vmlinux PATH`` (must match, or it is an error), files
and directories offered by plugins (``tsubaki_debug_info_paths``), the
standard debug directories (``/usr/lib/debug/.build-id/xx/yyyy.debug``,
``/usr/lib/debug/boot/vmlinux-RELEASE``, ...), ``--debug-dir`` directories
laid out the same way, and the crash lab's kernel cache.  A candidate is
used only when its GNU build id equals VMCOREINFO's ``BUILD-ID``: a
mismatched vmlinux gives wrong answers silently, which is worse than none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import DebugInfoError

__all__ = ["read_build_id", "candidate_paths", "find_vmlinux", "DEFAULT_DEBUG_DIRS"]

DEFAULT_DEBUG_DIRS = (Path("/usr/lib/debug"),)


def read_build_id(path: Path) -> str | None:
    """The GNU build id of an ELF file in hex, ``None`` when it has none or is not ELF."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for section in elf.iter_sections():
                if section["sh_type"] == "SHT_NOTE":
                    for note in section.iter_notes():
                        # vmlinux also has Xen notes of the same type number
                        if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                            return str(note["n_desc"]).lower()
    except (OSError, ELFError, ValueError):
        return None
    return None


def _in_debug_dir(directory: Path, build_id: str | None, release: str | None) -> Iterator[Path]:
    if build_id:
        yield directory / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
        yield directory / ".build-id" / build_id[:2] / build_id[2:]
    if release:
        yield directory / "boot" / f"vmlinux-{release}"
        yield directory / "lib" / "modules" / release / "vmlinux"
        yield directory / f"vmlinux-{release}"
    yield directory / "vmlinux"


def _lab_cache(build_id: str | None, release: str | None) -> Iterator[Path]:
    """vmlinux files of the crash lab's cached kernels, matching ones first."""
    from ..lab.kernel import cached_releases

    kernels = cached_releases()
    kernels.sort(key=lambda k: (k.build_id != build_id, k.release != release))
    for kernel in kernels:
        yield kernel.vmlinux


def candidate_paths(
    build_id: str | None,
    release: str | None,
    extra: Iterable[Path] = (),
    debug_dirs: Iterable[Path] = DEFAULT_DEBUG_DIRS,
    lab_cache: bool = True,
) -> Iterator[Path]:
    """Every existing file worth checking, in search order, without duplicates."""
    seen: set[Path] = set()

    def expand() -> Iterator[Path]:
        for p in extra:
            yield from (_in_debug_dir(p, build_id, release) if p.is_dir() else (p,))
        for d in debug_dirs:
            yield from _in_debug_dir(d, build_id, release)
        if lab_cache:
            yield from _lab_cache(build_id, release)
        if release:
            yield Path("/boot") / f"vmlinux-{release}"

    for path in expand():
        if path not in seen and path.is_file():
            seen.add(path)
            yield path


def _needed(build_id: str | None, release: str | None) -> str:
    return f"build id {build_id or 'unknown'}, kernel {release or 'unknown'}"


def find_vmlinux(
    build_id: str | None,
    release: str | None,
    *,
    explicit: Path | None = None,
    extra: Iterable[Path] = (),
    debug_dirs: Iterable[Path] = DEFAULT_DEBUG_DIRS,
    lab_cache: bool = True,
) -> Path:
    """The vmlinux to load for a kernel of ``build_id`` / ``release``.

    :raises DebugInfoError: ``explicit`` is missing or mismatched, or no
        candidate matches; the message names the build id and release needed.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise DebugInfoError(f"--vmlinux {explicit} does not exist (the dump needs {_needed(build_id, release)})")
        found = read_build_id(explicit)
        if build_id and found != build_id:
            raise DebugInfoError(
                f"--vmlinux {explicit} has build id {found or 'none'}; the dump needs {_needed(build_id, release)}"
            )
        return explicit
    if build_id is None:  # never guess: without a build id only --vmlinux is trusted
        raise DebugInfoError(f"the dump's VMCOREINFO has no BUILD-ID (kernel {release or 'unknown'}); pass --vmlinux PATH")
    for path in candidate_paths(build_id, release, extra, debug_dirs, lab_cache):
        if read_build_id(path) == build_id:
            return path
    raise DebugInfoError(
        f"no vmlinux with debug info found for {_needed(build_id, release)}; "
        f"pass --vmlinux PATH (Debian: linux-image-{release or 'RELEASE'}-dbg)"
    )
