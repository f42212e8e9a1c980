"""Where a vmlinux file (the kernel's DWARF) is looked for: the ``vmlinux-files`` provider.

Places, in order: files and directories offered by ``--debug-dir`` and by
plugins (``tsubaki_debug_info_paths``), the standard debug directories
(``/usr/lib/debug/.build-id/xx/yyyy.debug``, ``/usr/lib/debug/boot/vmlinux-RELEASE``,
...) and ``/boot/vmlinux-RELEASE``.  :class:`VmlinuxFiles` is the first
provider of the debug-info chain (:mod:`.chain`; the crash lab's cache, a
symbol pack and the dump's BTF are others, registered beside it).  drgn
itself loads the candidate whose GNU build id equals VMCOREINFO's
``BUILD-ID`` and ignores the others: a mismatched vmlinux gives wrong
answers silently, which is worse than none.  pyelftools reads a file's build
id only to word the error when nothing matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..contracts.debuginfo import DESCRIPTION, ORDER, DebugInfoReport, DebugInfoRequest
from ..elfnotes import ARCH_BY_MACHINE
from ..errors import DebugInfoError

__all__ = ["DEFAULT_DEBUG_DIRS", "VmlinuxFiles", "read_build_id", "candidate_paths", "safe_build_id", "safe_release",
           "needed", "mismatch_error", "not_found_error"]

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


_BUILD_ID = re.compile(r"[0-9a-f]{8,128}")
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")


def safe_build_id(build_id: str | None) -> str | None:
    """``build_id`` if it is plain lowercase hex, else None.

    Why: BUILD-ID comes from the dump's VMCOREINFO, which the crashed (maybe
    compromised) machine wrote; ``../../etc/x`` must not become a path.
    """
    return build_id if build_id and _BUILD_ID.fullmatch(build_id) else None


def safe_release(release: str | None) -> str | None:
    """``release`` if it is a plain kernel release name (no ``/``, no ``..``), else None."""
    return release if release and _RELEASE.fullmatch(release) and ".." not in release else None


def _in_debug_dir(directory: Path, build_id: str | None, release: str | None) -> Iterator[Path]:
    if build_id:
        yield directory / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
        yield directory / ".build-id" / build_id[:2] / build_id[2:]
    if release:
        yield directory / "boot" / f"vmlinux-{release}"
        yield directory / "lib" / "modules" / release / "vmlinux"
        yield directory / f"vmlinux-{release}"
    yield directory / "vmlinux"


def candidate_paths(
    build_id: str | None,
    release: str | None,
    extra: Iterable[Path] = (),
    debug_dirs: Iterable[Path] = DEFAULT_DEBUG_DIRS,
) -> list[Path]:
    """Every existing file worth offering to drgn, in search order, without duplicates.

    A build id that is not hex or a release that is not a plain name (both
    come from the dump) is not used to build any path.
    """
    seen: dict[Path, None] = {}
    build_id, release = safe_build_id(build_id), safe_release(release)

    def expand() -> Iterator[Path]:
        for p in extra:
            yield from (_in_debug_dir(p, build_id, release) if p.is_dir() else (p,))
        for d in debug_dirs:
            yield from _in_debug_dir(d, build_id, release)
        if release:
            yield Path("/boot") / f"vmlinux-{release}"

    for path in expand():
        if path not in seen and path.is_file():
            seen[path] = None
    return list(seen)


class VmlinuxFiles:
    """The ``vmlinux-files`` debug-info provider: :func:`candidate_paths` of the request's search paths.

    Without a (plain hex) build id it offers nothing: only ``--vmlinux`` is
    trusted then, never a guess by release name.
    """

    name = "vmlinux-files"
    description = DESCRIPTION[name]
    order = ORDER[name]

    def provide(self, request: DebugInfoRequest) -> DebugInfoReport | None:
        if request.build_id is None:
            return None
        paths = candidate_paths(request.build_id, request.release, request.search_paths, debug_dirs=())
        return request.load_vmlinux(paths, self.name)


def needed(build_id: str | None, release: str | None) -> str:
    """``build id X, kernel R``: what the dump needs, for error messages."""
    return f"build id {build_id or 'unknown'}, kernel {release or 'unknown'}"


def elf_arch(path: Path) -> str | None:
    """``x86_64``, ``aarch64``... of an ELF file (the dumps' spelling), ``None`` when not ELF."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            machine = ELFFile(f)["e_machine"]
    except (OSError, ELFError, ValueError):
        return None
    return ARCH_BY_MACHINE.get(machine, str(machine).removeprefix("EM_").lower())


def mismatch_error(path: Path, build_id: str | None, release: str | None, arch: str | None = None) -> DebugInfoError:
    """``--vmlinux PATH`` is not the crashed kernel's (named by architecture first: the likeliest mix-up)."""
    if not path.is_file():
        return DebugInfoError(f"--vmlinux {path} does not exist (the dump needs {needed(build_id, release)})")
    theirs = elf_arch(path)
    if arch and theirs and theirs != arch:
        return DebugInfoError(f"--vmlinux {path} is an {theirs} kernel; the dump is of an {arch} kernel "
                              f"({needed(build_id, release)})")
    found = read_build_id(path)
    return DebugInfoError(f"--vmlinux {path} has build id {found or 'none'}; the dump needs {needed(build_id, release)}")


def not_found_error(build_id: str | None, release: str | None, tried: int) -> DebugInfoError:
    """No candidate matched (or there were none)."""
    if build_id is None:  # never guess: without a build id only --vmlinux is trusted
        return DebugInfoError(f"the dump's VMCOREINFO has no BUILD-ID (kernel {release or 'unknown'}); pass --vmlinux PATH")
    return DebugInfoError(
        f"no vmlinux with debug info found for {needed(build_id, release)} ({tried} candidate(s) did not match); "
        f"pass --vmlinux PATH (Debian: linux-image-{release or 'RELEASE'}-dbg) or --self-contained"
    )
