"""Run the debug-info chain: ask each provider in order until one attaches.

The providers come from the ``tsubaki_register_debug_info`` hook
(``Plugins.debug_info_providers()``): vmlinux files, the crash lab's kernel
cache, a symbol pack embedded in the dump, the dump's own BTF, and any a
plugin adds.  The bridge knows them only as
:class:`~tsubaki_forensics.contracts.DebugInfoProvider`, so it imports
neither the lab nor the symbol packs.  ``--vmlinux`` is not a provider: the
user named the file, so it is that file or an error, never a fallback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import drgn

from ..contracts.debuginfo import DebugInfoKind, DebugInfoProvider, DebugInfoReport, DebugInfoRequest
from ..contracts.dump import Dump
from ..errors import DebugInfoError
from ..sandbox import stdout_to_stderr
from .debuginfo import mismatch_error, needed, not_found_error, safe_build_id, safe_release
from .vmcoreinfo import VmcoreInfo

__all__ = ["VmlinuxLoader", "attach_debug_info"]


class VmlinuxLoader:
    """``load_vmlinux(paths, provider)`` of a request: offer files to drgn, count the misses."""

    def __init__(self, prog: drgn.Program, info: VmcoreInfo) -> None:
        self.prog = prog
        self.info = info
        self.tried = 0  # files offered that were not the kernel's (for the final error)

    def __call__(self, paths: Sequence[Path], provider: str) -> DebugInfoReport | None:
        paths = [Path(p) for p in paths]
        if not paths:
            return None
        try:
            self.prog.load_debug_info(paths)
        except drgn.MissingDebugInfoError as e:
            raise DebugInfoError(f"drgn could not load debug info ({e}); the dump needs "
                                 f"{needed(self.info.build_id, self.info.release)}") from e
        try:
            debug_file = self.prog.main_module().debug_file_path
        except LookupError:  # no kernel module created: nothing was loaded
            debug_file = None
        if debug_file is None:
            self.tried += len(paths)
            return None
        return DebugInfoReport(DebugInfoKind.VMLINUX, provider, Path(debug_file))


def attach_debug_info(
    prog: drgn.Program,
    dump: Dump,
    info: VmcoreInfo,
    providers: Iterable[DebugInfoProvider],
    *,
    vmlinux: Path | None = None,
    search_paths: Iterable[Path] = (),
) -> DebugInfoReport:
    """Attach the kernel's debug info to ``prog`` from the first provider that has it.

    :param providers: the chain, asked by ``order`` (ties keep their given order).
    :param vmlinux: the user's ``--vmlinux``: only this file, the chain is not asked.
    :param search_paths: files and directories the ``vmlinux-files`` provider searches.
    :raises DebugInfoError: nothing fits; the message says what the dump
        needs, how many files did not match and why each other provider declined.
    """
    load = VmlinuxLoader(prog, info)
    if vmlinux is not None:
        report = load([Path(vmlinux)], "--vmlinux")
        if report is None:
            raise mismatch_error(Path(vmlinux), info.build_id, info.release, prog.platform.arch.name.lower())
        return report
    request = DebugInfoRequest(prog, dump, safe_build_id(info.build_id), safe_release(info.release),
                               tuple(Path(p) for p in search_paths), load)
    passed_over: list[str] = []
    for provider in sorted(providers, key=lambda p: p.order):
        try:
            with stdout_to_stderr():  # provider code never writes to the report
                report = provider.provide(request)
        except DebugInfoError as e:
            passed_over.append(str(e))
            continue
        if report is not None:
            return dataclasses.replace(report, passed_over=(*passed_over, *report.passed_over))
    missing = not_found_error(info.build_id, info.release, load.tried)
    raise DebugInfoError("; and ".join([str(missing), *passed_over]))
