"""The guest's busybox: the host's own for x86_64, Debian's package of the guest's arch otherwise.

A foreign-architecture busybox is never run on the host: its ``.deb`` is
downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into
one cache entry per architecture and package version.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import LabError
from .arch import HOST_ARCH, GuestArch
from .cache import atomic_entry, cache_root, entry_is_complete, entry_lock
from .host import ensure_host_tools, find_static_busybox, run_tool
from .kernel import ensure_apt_arch

__all__ = ["guest_busybox"]


def guest_busybox(arch: GuestArch, log=None) -> Path:
    """A statically linked busybox that runs in ``arch``'s guest.

    :raises LabError: none installed (x86_64) or the package cannot be fetched.
    """
    if arch.deb_arch == HOST_ARCH.deb_arch:
        ensure_host_tools(["busybox"])
        found = find_static_busybox()
        if found is None:
            raise LabError("no statically linked busybox found; install busybox-static")
        return found
    entry = cache_root() / "tools" / f"busybox-{arch.deb_arch}"
    binary = entry / "busybox"
    if entry_is_complete(entry) and binary.is_file():
        return binary
    ensure_host_tools(["apt-get", "dpkg-deb"])
    ensure_apt_arch(arch)
    with entry_lock(entry):
        if entry_is_complete(entry) and binary.is_file():
            return binary
        (log or (lambda m: None))(f"downloading {arch.package(arch.busybox_package)} (once)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        with atomic_entry(entry) as tmp, tempfile.TemporaryDirectory(prefix="tsk-busybox-") as dl:
            run_tool(["apt-get", "download", "-q", arch.package(arch.busybox_package)],
                     what=f"downloading busybox for {arch.name} (network needed once)", cwd=dl, env=env, timeout=600)
            debs = sorted(Path(dl).glob(f"{arch.busybox_package}_*.deb"))
            if not debs:
                raise LabError(f"apt-get download left no .deb for {arch.package(arch.busybox_package)}")
            unpacked = Path(dl) / "root"
            run_tool(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], what="unpacking busybox-static", timeout=120)
            src = unpacked / "bin" / "busybox"
            if not src.is_file():
                raise LabError(f"{debs[0].name} has no bin/busybox")
            src.rename(tmp / "busybox")
            (tmp / "package").write_text(debs[0].name + "\n")
    return binary
