"""Every hook of tsubaki-forensics, grouped by the phase that calls it.

A plugin is any module or object with functions named like these hooks and
marked with :data:`hookimpl`; it is found through the ``tsubaki_forensics``
entry-point group (see docs/PLUGINS.md).  Registration hooks take a
``register`` callback so that the core can validate what plugins add.
Core code never calls ``pm.hook.*`` directly: it goes through the typed
facade in :mod:`tsubaki_forensics.plugin_system.manager`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from .names import PROJECT_NAME

if TYPE_CHECKING:
    import drgn
    import typer

    from .specs import RegisterAnalysis, RegisterDebugInfo, RegisterRenderer, RegisterSource

__all__ = ["PROJECT_NAME", "hookspec", "hookimpl"]

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------
# collect: where memory comes from
# ---------------------------------------------------------------------------


@hookspec
def tsubaki_register_sources(register: RegisterSource) -> None:
    """Register memory sources that ``collect`` can dump from.

    :param register: call ``register(name, factory, description)`` once per
        source; ``factory(spec: str, **options)`` opens ``spec`` (a path, a
        QMP socket, ...) and returns a ``MemorySource``
        (docs/ARCHITECTURE.md).  ``register(source_type)`` with one object
        that has ``name``, ``description``, ``open`` and optionally
        ``probe(spec) -> bool`` is accepted too.  Names are unique across
        plugins.
    """


# ---------------------------------------------------------------------------
# reassemble: .tsd files -> one dump with a physical-memory view
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def tsubaki_reassemble(paths: Sequence[Path]) -> Any | None:
    """Reassemble the records of one or more dump files into a dump.

    The built-in implementation (tried last) is
    :func:`tsubaki_forensics.tsd.open_dump`.
    Stops at the first non-None result.

    :param paths: the files the user named, in command-line order.
    :returns: a ``Dump`` (``.vmcoreinfo``, ``.notes``, ``.memory`` ...), or
        ``None`` to let the next plugin try.
    """


# ---------------------------------------------------------------------------
# program: the drgn.Program built from a dump
# ---------------------------------------------------------------------------


@hookspec
def tsubaki_register_debug_info(register: RegisterDebugInfo) -> None:
    """Register places the kernel's debug info may come from (the debug-info chain).

    :param register: call ``register(provider)`` once per
        :class:`~tsubaki_forensics.contracts.DebugInfoProvider`: an object
        with ``name``, ``description``, ``order`` (lower is asked first; the
        built-in ones: vmlinux files 100, the crash lab's cache 200, an
        embedded symbol pack 800, the dump's BTF 900) and
        ``provide(request) -> DebugInfoReport | None``.  The drgn bridge asks
        the providers in order until one attaches debug info; ``--vmlinux``
        bypasses the chain.  Names are unique across plugins.
        ``register(provider, timeout=SECONDS)`` gives ``provide`` more (or
        less) than the default 120 s (``0``: no limit); one that runs past
        it or raises is passed over with one line naming the plugin
        (docs/PLUGINS.md, section 5).
    """


@hookspec
def tsubaki_debug_info_paths(build_id: str | None, release: str | None) -> list[Path]:
    """Offer vmlinux files or debug directories to search for the kernel's debug info.

    The built-in ``vmlinux-files`` provider searches them before
    ``/usr/lib/debug``; a candidate is used only when its build id matches
    the dump.  (A provider, ``tsubaki_register_debug_info``, can do more:
    fetch a file, or attach other debug info.)

    :param build_id: the kernel's build id from VMCOREINFO (hex), if any.
    :param release: the kernel release (``OSRELEASE``), if any.
    :returns: files or directories to search (may be empty).
    """


@hookspec
def tsubaki_program_ready(prog: drgn.Program, dump: Any) -> None:
    """The ``drgn.Program`` for a dump exists: adjust it before analyses run.

    Load extra debug info (modules), register type, object or symbol finders,
    or add memory segments.

    :param prog: the program, with memory, VMCOREINFO, registers and kernel
        debug info already set up.
    :param dump: the dump it was built from.
    """


# ---------------------------------------------------------------------------
# analyze: named analyses over a program
# ---------------------------------------------------------------------------


@hookspec
def tsubaki_register_analyses(register: RegisterAnalysis) -> None:
    """Register analyses that ``analyze`` can run.

    :param register: call ``register(name, function, description, needs, options)``;
        ``function(ctx: AnalysisContext) -> AnalysisResult`` must not print;
        ``needs`` is an iterable of :class:`~tsubaki_forensics.analysis.Need`
        (debug info, registers) checked before the function is called;
        ``options`` an iterable of
        :class:`~tsubaki_forensics.analysis.AnalysisOption`: each becomes an
        ``analyze --NAME`` option, read with ``ctx.option(NAME)`` (as
        pytest's ``pytest_addoption``).
    """


# ---------------------------------------------------------------------------
# render: results -> text, JSON, ...
# ---------------------------------------------------------------------------


@hookspec
def tsubaki_register_renderers(register: RegisterRenderer) -> None:
    """Register output formats for ``analyze --format``.

    :param register: call ``register(name, function, description)``;
        ``function(report, out)`` writes a whole
        :class:`~tsubaki_forensics.analysis.report.Report` to the text stream
        ``out``.
    """


# ---------------------------------------------------------------------------
# CLI: commands added by plugins
# ---------------------------------------------------------------------------


@hookspec
def tsubaki_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``tsubaki-forensics`` command line.

    Called once, after the built-in commands exist.

    :param app: the root ``typer.Typer``; use ``@app.command()`` or
        ``app.add_typer(...)``.  Raise a ``TsubakiError`` for bad input.
    """
