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

Fixtures on the **shipped sample** (a real crash-lab OOM panic of a Debian
6.1 kernel, ~12 MB, ``samples/lab-oom.tsd``): no QEMU, network, root or
vmlinux needed, so they run in any CI and need no marker.  Skipped only when
the sample cannot be found (see :func:`find_sample`).

``tsubaki_sample_path`` (session)
    the sample's ``.tsd`` path.
``tsubaki_sample_truth`` (session)
    its ground truth (``samples/lab-oom.ground_truth.json``): what plain drgn
    with the DWARF vmlinux read from the same crash (tasks, dmesg, panic
    message, backtraces) -- the expected values for your analysis.
``tsubaki_sample_dump`` / ``tsubaki_sample_program`` (session)
    the opened sample and its drgn bridge program, always self-contained
    (types from the dump's BTF, symbols from its kallsyms, ORC unwinding),
    as a user without a vmlinux sees it.
``tsubaki_sample_run_analysis``
    like ``tsubaki_run_analysis``, on the sample.
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
    "SAMPLE_NAME",
    "find_sample",
    "tsubaki_sample_path",
    "tsubaki_sample_truth",
    "tsubaki_sample_dump",
    "tsubaki_sample_program",
    "tsubaki_sample_run_analysis",
]

#: The shipped sample's file stem: ``<stem>.tsd`` and ``<stem>.ground_truth.json``.
SAMPLE_NAME = "lab-oom"


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


def _runner(program: Any, dump: Any) -> Callable[..., Any]:
    """``run(name, plugin=None, **options)``: one analysis on ``dump``, as ``analyze --only name`` runs it."""
    from .analysis import AnalysisContext, run_analyses, select
    from .plugin_system import Plugins

    def run(name: str, plugin: object | None = None, **options: Any) -> Any:
        plugins = Plugins.load(entry_points=plugin is None)
        if plugin is not None:
            plugins.pm.register(plugin, name=f"test-{name}")
        context = AnalysisContext(program.prog, dump, options, program.capabilities)
        (result,) = run_analyses(select(plugins.analyses(), only=[name]), context)
        return result

    return run


@pytest.fixture
def tsubaki_run_analysis(tsubaki_program: Any, tsubaki_dump: Any) -> Callable[..., Any]:
    """Run one analysis by name on the real dump, optionally registering a plugin first."""
    return _runner(tsubaki_program, tsubaki_dump)


def find_sample() -> Path | None:
    """The shipped sample's ``.tsd``, or None.

    In order: ``TSUBAKI_SAMPLE_DUMP``; ``samples/`` inside the installed
    package (when the wheel ships it); ``samples/`` of the source checkout
    this module runs from (an editable install or the sdist).
    """
    if os.environ.get("TSUBAKI_SAMPLE_DUMP"):
        return Path(os.environ["TSUBAKI_SAMPLE_DUMP"])
    here = Path(__file__).resolve().parent
    for folder in (here / "samples", here.parent / "samples"):
        path = folder / f"{SAMPLE_NAME}.tsd"
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def tsubaki_sample_path() -> Path:
    """The shipped sample dump (a real OOM panic, Debian 6.1); skipped if not found."""
    path = find_sample()
    if path is None or not path.is_file():
        pytest.skip(f"the shipped sample {SAMPLE_NAME}.tsd was not found (set TSUBAKI_SAMPLE_DUMP)")
    return path


@pytest.fixture(scope="session")
def tsubaki_sample_truth(tsubaki_sample_path: Path) -> dict:
    """The sample's ground truth (``<stem>.ground_truth.json`` beside it)."""
    import json

    truth = tsubaki_sample_path.with_name(tsubaki_sample_path.name.removesuffix(".tsd") + ".ground_truth.json")
    if not truth.is_file():
        pytest.skip(f"no ground truth beside {tsubaki_sample_path}")
    return json.loads(truth.read_text())


@pytest.fixture(scope="session")
def tsubaki_sample_dump(tsubaki_sample_path: Path) -> Iterator[Any]:
    """The opened sample (closed at the end of the session)."""
    from .tsd import open_dump

    dump = open_dump([tsubaki_sample_path])
    yield dump
    dump.close()


@pytest.fixture(scope="session")
def tsubaki_sample_program(tsubaki_sample_dump: Any) -> Any:
    """The drgn bridge's self-contained program for the sample (no vmlinux, whatever is installed)."""
    from .drgn_bridge import program_from_dump

    return program_from_dump(tsubaki_sample_dump, self_contained=True)


@pytest.fixture
def tsubaki_sample_run_analysis(tsubaki_sample_program: Any, tsubaki_sample_dump: Any) -> Callable[..., Any]:
    """Run one analysis by name on the shipped sample, optionally registering a plugin first."""
    return _runner(tsubaki_sample_program, tsubaki_sample_dump)
