"""Run the debug-info chain: ask each provider in order until one attaches.

The providers come from the ``tsubaki_register_debug_info`` hook
(``Plugins.debug_info_providers()``): vmlinux files, the crash lab's kernel
cache, a symbol pack embedded in the dump, the dump's own BTF, and any a
plugin adds.  The bridge knows them only as
:class:`~tsubaki_forensics.contracts.DebugInfoProvider`, so it imports
neither the lab nor the symbol packs.  ``--vmlinux`` is not a provider: the
user named the file, so it is that file or an error, never a fallback.

Each provider runs as plugin code (:func:`~tsubaki_forensics.sandbox.plugin_call`,
the mechanism of the hooks and analyses): its stdout goes to stderr, and it
has a time limit (:func:`~tsubaki_forensics.contracts.debuginfo.provider_time_limit`,
120 s by default).  One that hangs past it or raises is one line naming its
plugin in the report's ``passed_over`` (``not used: plugin 'x' (debug-info
provider 'y') ran past its 120 s time limit``), and the next is asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import drgn

from ..contracts.debuginfo import (
    DebugInfoKind,
    DebugInfoProvider,
    DebugInfoReport,
    DebugInfoRequest,
    RegisteredProvider,
    provider_time_limit,
)
from ..contracts.dump import Dump
from ..errors import DebugInfoError, TsubakiError
from ..sandbox import plugin_call
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
            report = _ask(provider, request)
        except DebugInfoError as e:  # it has something that does not fit, or it raised or hung
            passed_over.append(str(e))
            continue
        if report is not None:
            return dataclasses.replace(report, passed_over=(*passed_over, *report.passed_over))
    missing = not_found_error(info.build_id, info.release, load.tried)
    raise DebugInfoError("; and ".join([str(missing), *passed_over]))


def _ask(provider: DebugInfoProvider, request: DebugInfoRequest) -> DebugInfoReport | None:
    """``provider.provide(request)`` as plugin code: stdout kept clean and
    time-limited; a raise, a hang or ``sys.exit`` a one-line :class:`DebugInfoError`
    naming the plugin (``?`` for a provider handed to the bridge directly)."""
    entry = provider if isinstance(provider, RegisteredProvider) else RegisteredProvider(provider)
    plugin, what = entry.plugin or "?", f"debug-info provider {provider.name!r}"
    limit = provider_time_limit(entry.timeout)  # a bad TSUBAKI_DEBUG_INFO_TIMEOUT is an error of its own
    try:
        return plugin_call(plugin, what, entry.provide, request, timeout=limit)
    except DebugInfoError:
        raise
    except TsubakiError as e:  # plugin_call's PluginError, or the project's own error passed through
        text = " ".join(str(e).split()) or type(e).__name__
        if not text.startswith(f"plugin {plugin!r} ({what})"):
            text = f"plugin {plugin!r} ({what}) raised {type(e).__name__}: {text}"
        raise DebugInfoError(text) from e
