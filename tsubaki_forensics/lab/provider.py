"""The ``lab-kernels`` debug-info provider: vmlinux files of the crash lab's kernel cache.

The lab keeps the DWARF vmlinux of every kernel it downloaded, with its
build id in ``kernel.json``; a dump of one of them needs no ``--vmlinux``.
The built-in plugin registers this provider (``order`` 200, after the
vmlinux files of the debug directories), so the drgn bridge no longer knows
the lab exists.  Only kernels whose recorded build id is the dump's are
offered, and drgn still checks the file's own build id.
"""

from __future__ import annotations

from ..contracts.debuginfo import DESCRIPTION, ORDER, DebugInfoReport, DebugInfoRequest
from .kernel import cached_releases

__all__ = ["LabKernels"]


class LabKernels:
    """Offer drgn the cached lab kernels' vmlinux files with the dump's build id."""

    name = "lab-kernels"
    description = DESCRIPTION[name]
    order = ORDER[name]

    def provide(self, request: DebugInfoRequest) -> DebugInfoReport | None:
        if request.build_id is None:
            return None
        paths = [k.vmlinux for k in cached_releases() if k.build_id == request.build_id and k.vmlinux.is_file()]
        return request.load_vmlinux(paths, self.name)
