"""The ``tsubaki-forensics`` command line (typer).

One module per group of commands; :mod:`.app` assembles them (importing a
command's module only when that command runs or help lists it) and owns the
only place where a :class:`~tsubaki_forensics.errors.TsubakiError` becomes a
one-line message and an exit code.
"""

from __future__ import annotations

__all__ = ["argv_disabled", "set_argv"]

_argv: list[str] = []


def set_argv(argv: list[str]) -> None:
    """Remember the command line :mod:`.app` runs (for ``--disable`` before parsing ends)."""
    _argv[:] = argv


def argv_disabled() -> list[str]:
    """Plugin names given to ``--disable`` anywhere on the command line being run.

    Plugins load on first use, which may be while typer still parses options
    (``analyze --format`` checks its value against the renderers plugins add),
    so ``--disable`` is read from the whole command line, like pytest's ``-p no:NAME``.
    """
    from ..plugin_system import disabled_from_argv

    return disabled_from_argv(_argv)
