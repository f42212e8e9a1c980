"""Where the kernel's types and symbols come from: one chain of debug-info providers.

A dump alone gives drgn memory and VMCOREINFO; names and types need debug
info.  It can come from several places: a vmlinux file (debug directories,
``--debug-dir``, plugin paths), the crash lab's kernel cache, a symbol pack
embedded in the dump, the dump's own BTF and kallsyms, or a third party's
server (debuginfod, a company symbol store).  Each is a
:class:`DebugInfoProvider` registered through the
``tsubaki_register_debug_info`` hook (the built-in ones too); the drgn bridge
asks them in :attr:`~DebugInfoProvider.order` until one attaches debug info
and returns its :class:`DebugInfoReport`.  The bridge knows none of them by
name, so it never imports the lab or the symbol packs.

This module imports only the standard library: ``prog`` is a
``drgn.Program`` and ``dump`` a :class:`~tsubaki_forensics.contracts.Dump`,
typed loosely so that the bottom layer does not import drgn.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import TsubakiError
from .frozen import Frozen, Record, dataclass_fields

__all__ = ["DebugInfoKind", "DebugInfoReport", "DebugInfoRequest", "DebugInfoProvider", "DeferredProvider", "ORDER",
           "DESCRIPTION", "RegisteredProvider", "DEBUG_INFO_TIMEOUT_S", "TIMEOUT_ENV", "provider_time_limit"]


class DebugInfoKind(enum.StrEnum):
    """What kind of debug info was attached (values appear in JSON: never rename)."""

    VMLINUX = "vmlinux"  # the kernel's DWARF, from a vmlinux file whose build id matched
    SYMBOL_PACK = "symbol-pack"  # a pack cut from that DWARF (``symbols pack``), embedded in the dump
    BTF = "btf"  # the dump's own BTF, kallsyms and ORC tables (self-contained, no vmlinux)


#: Conventional :attr:`DebugInfoProvider.order` values of the built-in providers.
#: Lower runs first; a DWARF vmlinux beats a pack, a pack beats BTF.  A provider
#: that fetches a vmlinux (debuginfod) fits between ``lab-kernels`` and ``symbol-pack``.
ORDER = {"vmlinux-files": 100, "lab-kernels": 200, "symbol-pack": 800, "btf": 900}
#: What each built-in provider serves (its ``description``), here so that the
#: built-in plugin registers them by name without importing them (:class:`DeferredProvider`).
DESCRIPTION = {
    "vmlinux-files": "vmlinux files in --debug-dir, plugin paths, /usr/lib/debug and /boot, matched by build id",
    "lab-kernels": "vmlinux files of the crash lab's cached Debian kernels, by build id",
    "symbol-pack": "a symbol pack embedded in the dump (symbols attach, collect --symbols)",
    "btf": "the dump's own BTF types, kallsyms and ORC tables (Linux >= 6.0, no vmlinux)",
}


@dataclass_fields
class DebugInfoReport(Frozen):
    """What one provider attached to the program (``DumpProgram.debug_info``).

    :param kind: vmlinux DWARF, symbol pack or the dump's BTF.
    :param provider: the name of the provider that attached it.
    :param vmlinux: the file drgn loaded (kind ``VMLINUX`` only).
    :param summary: what was served, one line each (empty for a vmlinux: nothing to warn about).
    :param limitations: what this kind cannot give compared with DWARF.
    :param passed_over: why earlier providers that had something did not
        attach it (``symbol-pack: ...``), one line each.
    :param details: the provider's own record (``SelfContainedReport``,
        ``SymbolPackReport``...), for statistics and tests; never rendered.

    A dataclass (the chain ``replace``-s ``passed_over``) whose methods are
    written here, not generated (:func:`~.frozen.dataclass_fields`).
    """

    kind: DebugInfoKind
    provider: str
    vmlinux: Path | None = None
    summary: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()
    passed_over: tuple[str, ...] = ()
    details: Any = field(default=None, repr=False, compare=False)

    def __init__(self, kind: DebugInfoKind, provider: str, vmlinux: Path | None = None,
                 summary: tuple[str, ...] = (), limitations: tuple[str, ...] = (),
                 passed_over: tuple[str, ...] = (), details: Any = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "kind", kind)
        setattr_(self, "provider", provider)
        setattr_(self, "vmlinux", vmlinux)
        setattr_(self, "summary", summary)
        setattr_(self, "limitations", limitations)
        setattr_(self, "passed_over", passed_over)
        setattr_(self, "details", details)

    @property
    def label(self) -> str:
        """A few words for a report column: the vmlinux path, ``symbol pack`` or ``self-contained (BTF)``."""
        if self.kind is DebugInfoKind.VMLINUX:
            return str(self.vmlinux) if self.vmlinux is not None else f"vmlinux ({self.provider})"
        return "symbol pack" if self.kind is DebugInfoKind.SYMBOL_PACK else "self-contained (BTF)"

    def lines(self) -> list[str]:
        """What was passed over, the summary and every limitation, for a renderer's notes
        (empty for a vmlinux found first)."""
        return [*(f"not used: {text}" for text in self.passed_over), *self.summary,
                *(f"limitation: {text}" for text in self.limitations)]


class DebugInfoRequest(Record):
    """What a provider gets: the program to serve and what identifies the kernel.

    :param prog: the ``drgn.Program`` with memory, VMCOREINFO and registers
        set up and no debug info yet.
    :param dump: the dump it was built from (a symbol pack rides in it).
    :param build_id: VMCOREINFO's ``BUILD-ID`` if it is lowercase hex, else ``None``.
    :param release: ``OSRELEASE`` if it is a plain release name, else ``None``
        (both come from the crashed machine: never build a path from anything else).
    :param search_paths: vmlinux files or debug directories to search
        (``--debug-dir``, ``tsubaki_debug_info_paths``, then ``/usr/lib/debug``).
    :param load_vmlinux: ``load_vmlinux(paths, provider)`` offers files to drgn,
        which loads the one whose build id is the kernel's; the report, or
        ``None`` when none matched.  Use it rather than loading DWARF yourself.
    """

    _fields = ("prog", "dump", "build_id", "release", "search_paths", "load_vmlinux")
    prog: Any
    dump: Any
    build_id: str | None
    release: str | None
    search_paths: tuple[Path, ...]
    load_vmlinux: Callable[[Sequence[Path], str], DebugInfoReport | None]

    def __init__(self, prog: Any, dump: Any, build_id: str | None, release: str | None,
                 search_paths: tuple[Path, ...],
                 load_vmlinux: Callable[[Sequence[Path], str], DebugInfoReport | None]) -> None:
        self.prog = prog
        self.dump = dump
        self.build_id = build_id
        self.release = release
        self.search_paths = search_paths
        self.load_vmlinux = load_vmlinux


@runtime_checkable
class DebugInfoProvider(Protocol):
    """One place debug info may come from (registered with ``tsubaki_register_debug_info``).

    ``provide`` returns a report once it has attached debug info to
    ``request.prog`` (the chain stops), ``None`` when it has nothing for this
    kernel, or raises :class:`~tsubaki_forensics.errors.DebugInfoError` when
    what it has does not fit (a pack of another build, no BTF in the dump).
    After ``None`` or an error the next provider is asked; an error's reason
    is kept: in the report's ``passed_over`` if a later provider attaches,
    else in the final error.  ``provide`` must leave ``prog`` untouched when
    it does not attach.
    """

    name: str
    description: str
    order: int

    def provide(self, request: DebugInfoRequest) -> DebugInfoReport | None: ...


class DeferredProvider:
    """A provider whose module is imported only when the chain first asks it.

    Why: the crash lab (asyncio, tarfile, QEMU plumbing) and the dump's BTF
    reader cost ~50 ms to import, and ``analyze --vmlinux`` (or a vmlinux
    found in a debug directory) never asks them (issue 21).  ``target`` is
    ``"package.module:Class"``; the class is built with no arguments.
    """

    def __init__(self, target: str, name: str, description: str, order: int) -> None:
        self.target = target
        self.name = name
        self.description = description
        self.order = order
        self._provider: DebugInfoProvider | None = None

    def load(self) -> DebugInfoProvider:
        """The real provider (imported on first use)."""
        if self._provider is None:
            import importlib

            module, _, attr = self.target.partition(":")
            self._provider = getattr(importlib.import_module(module), attr)()
        return self._provider

    def provide(self, request: DebugInfoRequest) -> DebugInfoReport | None:
        return self.load().provide(request)

    def __repr__(self) -> str:
        return f"DeferredProvider({self.target!r})"


#: Seconds one provider's ``provide`` may run before the chain gives up on it
#: and asks the next (a debuginfod client on a dead network, a symbol server
#: that never answers).  The built-in providers take < 5 s (drgn indexing a
#: Debian vmlinux on a shared 2-core machine); a download of a ~500 MB vmlinux
#: at 10 MB/s fits.  A provider declares its own with ``register(provider,
#: timeout=SECONDS)``; the user's :data:`TIMEOUT_ENV` wins over both.
DEBUG_INFO_TIMEOUT_S = 120.0
#: ``TSUBAKI_DEBUG_INFO_TIMEOUT=SECONDS`` (``0``: no limit) for every provider.
TIMEOUT_ENV = "TSUBAKI_DEBUG_INFO_TIMEOUT"


class RegisteredProvider(Frozen):
    """A provider as the chain runs it: with the plugin that registered it
    (named when it raises or hangs) and the time limit it declared.

    It is a :class:`DebugInfoProvider` itself (``name``, ``description``,
    ``order`` and ``provide`` are the provider's).

    :param timeout: seconds ``provide`` may run; ``None``: the default
        (:data:`DEBUG_INFO_TIMEOUT_S`); ``0``: no limit.
    """

    _fields = ("provider", "plugin", "timeout")
    provider: DebugInfoProvider
    plugin: str | None
    timeout: float | None

    def __init__(self, provider: DebugInfoProvider, plugin: str | None = None, timeout: float | None = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "provider", provider)
        setattr_(self, "plugin", plugin)
        setattr_(self, "timeout", timeout)

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def description(self) -> str:
        return self.provider.description

    @property
    def order(self) -> int:
        return self.provider.order

    def provide(self, request: DebugInfoRequest) -> DebugInfoReport | None:
        return self.provider.provide(request)


def provider_time_limit(declared: float | None, environ: Mapping[str, str] = os.environ) -> float | None:
    """The seconds a provider may run: the user's :data:`TIMEOUT_ENV`, else what
    it declared, else :data:`DEBUG_INFO_TIMEOUT_S`; ``None``: no limit.

    :raises TsubakiError: the variable is not a number of seconds >= 0.
    """
    text = environ.get(TIMEOUT_ENV, "").strip()
    if text:
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not seconds >= 0 or seconds == float("inf"):
            raise TsubakiError(f"{TIMEOUT_ENV}={text!r}: give the seconds a debug-info provider "
                               f"may run (0: no limit)")
    else:
        seconds = DEBUG_INFO_TIMEOUT_S if declared is None else declared
    return seconds or None
