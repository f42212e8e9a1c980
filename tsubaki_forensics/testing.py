"""pytest plugin for authors of tsubaki-forensics analysis plugins.

Installed with tsubaki-forensics (entry point ``pytest11``), so these
fixtures are available in any test suite once the package is installed:

``tsubaki_crash`` (session)
    a real crashed Debian kernel: ``.vmcore`` (ELF) and ``.vmlinux`` (DWARF).
    From ``TSUBAKI_TEST_VMCORE`` and ``TSUBAKI_TEST_VMLINUX`` if set, else
    made (once, then cached) by the crash lab; skipped when neither works.
``tsubaki_dump_path`` (session)
    that crash imported into a ``.tsd`` (about 40 MB for 512 MiB of RAM).
``tsubaki_dump`` / ``tsubaki_program`` (session)
    the opened dump and the :class:`~tsubaki_forensics.drgn_bridge.DumpProgram`
    built from it by the drgn bridge (``tsubaki_program.prog`` is the
    ``drgn.Program``).
``tsubaki_plugins``
    a fresh plugin manager with only the core's built-ins; register your
    plugin on it (it is thrown away after the test).
``tsubaki_run_analysis``
    ``run(name, plugin=None, **options) -> AnalysisResult``: register
    ``plugin`` (a module or object with hook implementations) on a fresh
    manager and run the analysis ``name`` on the real dump, exactly as
    ``tsubaki-forensics analyze --only name`` would.

Mark tests that use the real dump with ``@pytest.mark.realkernel``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

__all__ = [
    "tsubaki_crash",
    "tsubaki_dump_path",
    "tsubaki_dump",
    "tsubaki_program",
    "tsubaki_plugins",
    "tsubaki_run_analysis",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realkernel: needs a real crashed kernel (tsubaki_forensics.testing)")


@pytest.fixture(scope="session")
def tsubaki_crash() -> Any:
    """A real crash: ``.vmcore`` and ``.vmlinux`` paths (env or crash lab)."""
    vmcore, vmlinux = os.environ.get("TSUBAKI_TEST_VMCORE"), os.environ.get("TSUBAKI_TEST_VMLINUX")
    if vmcore and vmlinux:
        return SimpleNamespace(vmcore=Path(vmcore), vmlinux=Path(vmlinux))
    from .errors import TsubakiError
    from .lab import cached_crash

    try:
        return cached_crash()
    except TsubakiError as e:
        pytest.skip(f"no real crash available (set TSUBAKI_TEST_VMCORE/TSUBAKI_TEST_VMLINUX): {e}")


@pytest.fixture(scope="session")
def tsubaki_dump_path(tsubaki_crash: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real crash as a ``.tsd`` file."""
    from .vmcore.importer import import_vmcore

    path = tmp_path_factory.mktemp("tsubaki-dump") / "crash.tsd"
    import_vmcore(tsubaki_crash.vmcore, path)
    return path


@pytest.fixture(scope="session")
def tsubaki_dump(tsubaki_dump_path: Path) -> Iterator[Any]:
    """The opened dump (closed at the end of the session)."""
    from .tsd import open_dump

    dump = open_dump([tsubaki_dump_path])
    yield dump
    dump.close()


@pytest.fixture(scope="session")
def tsubaki_program(tsubaki_dump: Any, tsubaki_crash: Any) -> Any:
    """The drgn bridge's program for the dump, with the crash's vmlinux."""
    from .drgn_bridge import program_from_dump

    return program_from_dump(tsubaki_dump, vmlinux=Path(tsubaki_crash.vmlinux))


@pytest.fixture
def tsubaki_plugins() -> Any:
    """A fresh plugin manager with the core's built-ins only."""
    from .plugin_system import Plugins

    return Plugins.load(entry_points=False)


@pytest.fixture
def tsubaki_run_analysis(tsubaki_program: Any, tsubaki_dump: Any) -> Callable[..., Any]:
    """Run one analysis by name on the real dump, optionally registering a plugin first."""
    from .analysis import AnalysisContext, run_analyses, select
    from .plugin_system import Plugins

    def run(name: str, plugin: object | None = None, **options: Any) -> Any:
        plugins = Plugins.load(entry_points=plugin is None)
        if plugin is not None:
            plugins.pm.register(plugin, name=f"test-{name}")
        context = AnalysisContext(tsubaki_program.prog, tsubaki_dump, options, tsubaki_program.capabilities)
        (result,) = run_analyses(select(plugins.analyses(), only=[name]), context)
        return result

    return run
