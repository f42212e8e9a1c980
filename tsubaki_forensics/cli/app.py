"""Assemble the typer application and run it with one error boundary.

Each command module exposes ``register(app)``; plugins add their own
commands through the ``tsubaki_register_commands`` hook.  Errors of the
domain family end as ``error: <one line>`` on stderr and a non-zero exit,
never as a traceback.

Start-up stays simple on purpose: every command module is imported and every
plugin loaded (like pytest, a broken plugin is reported whatever the command).
Importing only the invoked command's module was tried and measured
(``python bench/startup_bench.py --ref <that commit> --runs 9``): it saved
~6 ms of CPU on ``analyze`` (0.640 vs 0.646 s) and ~70 ms on ``--help``, not
worth a second table of command names kept in sync by hand. The command
modules keep their heavy imports inside the command functions instead.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer

from ..errors import TsubakiError
from . import (
    analyze_commands,
    collect_commands,
    crash_commands,
    dump_commands,
    lab_commands,
    live_commands,
    symbols_commands,
    triage_commands,
)
from .examples import add_examples
from .output import print_error

__all__ = ["build_app", "main", "COMMAND_MODULES"]

# In help order.
COMMAND_MODULES = (collect_commands, live_commands, dump_commands, analyze_commands, crash_commands, triage_commands,
                   lab_commands, symbols_commands)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"tsubaki-forensics {__version__}\n")
        raise typer.Exit()


def _root(
    version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Collect Linux kernel crash dumps Tsubaki-style and analyse them with drgn."""


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """Return the full application: built-in commands, then plugin commands."""
    app = typer.Typer(
        name="tsubaki-forensics",
        help="Collect Linux kernel crash dumps Tsubaki-style and analyse them with drgn.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
    )
    app.callback()(_root)
    # Plugins load once per process, first (--disable is read early, like pytest's
    # -p no:NAME): ``analyze`` takes the options their analyses declare.
    from ..plugin_system import disabled_from_argv, get_plugins

    plugins = get_plugins(disabled_from_argv(sys.argv[1:] if argv is None else argv))
    for module in COMMAND_MODULES:
        module.register(app)
    plugins.register_commands(app)
    add_examples(app)
    return app


def _click_exceptions():
    """The click that typer really uses (typer >= 0.20 ships its own copy)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer on the real click
        from click import exceptions
    return exceptions


_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _drop_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        app = build_app(argv)
        # With standalone_mode=False click *returns* the code of typer.Exit(n).
        rc = app(args=argv, prog_name="tsubaki-forensics", standalone_mode=False)
        sys.stdout.flush()  # a full or closed stdout fails here, not in the interpreter's exit
        return rc if isinstance(rc, int) else 0
    except OSError as e:
        if e.filename is not None or e.errno not in _OUTPUT_ERRNOS:
            raise
        _drop_stdout()
        print_error(f"cannot write the output: {e.strerror or e}")
        return 1
    except TsubakiError as e:
        print_error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except SystemExit as e:  # typer.Exit inside commands
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except typer.Abort:
        print_error("aborted")
        return 1
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # click usage errors (typer's own copy of click)
        if isinstance(e, _click_exceptions().ClickException):
            e.show()
            return e.exit_code
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
