"""Assemble the typer application and run it with one error boundary.

Each command module exposes ``register(app)``; plugins add their own
commands through the ``tsubaki_register_commands`` hook.  Errors of the
domain family end as ``error: <one line>`` on stderr and a non-zero exit,
never as a traceback.

Start-up is lazy where that is invisible to the user: when the command line
names a built-in command, only the module that defines it is imported (and
plugin entry points are left to the commands that use plugins); help,
unknown names and plugin commands get the full application.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from ..errors import TsubakiError
from .output import print_error

if TYPE_CHECKING:
    import typer

__all__ = ["build_app", "main", "COMMAND_MODULES", "BUILTIN_COMMANDS"]

# Command modules in help order; each one's ``register(app)`` adds the
# commands listed for it in BUILTIN_COMMANDS.
COMMAND_MODULES = ("collect_commands", "live_commands", "dump_commands", "analyze_commands", "triage_commands",
                   "lab_commands", "symbols_commands")
BUILTIN_COMMANDS = {
    "collect": "collect_commands",
    "monitor": "live_commands",
    "import": "dump_commands",
    "export": "dump_commands",
    "inspect": "dump_commands",
    "verify": "dump_commands",
    "analyze": "analyze_commands",
    "shell": "analyze_commands",
    "plugins": "analyze_commands",
    "triage": "triage_commands",
    "lab": "lab_commands",
    "symbols": "symbols_commands",
}


def _new_app() -> typer.Typer:
    import typer

    return typer.Typer(
        name="tsubaki-forensics",
        help="Collect Linux kernel crash dumps Tsubaki-style and analyse them with drgn.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )


def _register(app: typer.Typer, module_name: str) -> None:
    importlib.import_module(f"{__package__}.{module_name}").register(app)


def _invoked(argv: list[str]) -> str | None:
    """The built-in command the command line names, or None (help, plugin command, typo)."""
    if not argv or argv[0].startswith("-"):
        return None
    return argv[0] if argv[0] in BUILTIN_COMMANDS else None


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """Return the application for ``argv``: built-in commands, then plugin commands.

    With ``argv`` naming a built-in command only its module is registered
    (plus the rest if typer would otherwise collapse a lone command into the
    root); ``build_app()`` without argv reads ``sys.argv``.
    """
    args = sys.argv[1:] if argv is None else argv
    command = _invoked(args)
    if command is not None:
        app = _new_app()
        _register(app, BUILTIN_COMMANDS[command])
        if app.registered_groups or len(app.registered_commands) > 1:
            # Plugin commands are not reachable under a built-in name; the
            # commands that use plugins (analyze, collect, ...) load them.
            return app
        # typer runs a lone command as the root: fall through to the full app.
    app = _new_app()
    for module in COMMAND_MODULES:
        _register(app, module)
    # Plugins load once per process (--disable is read early, like pytest's -p no:NAME).
    from ..plugin_system import disabled_from_argv, get_plugins

    get_plugins(disabled_from_argv(args)).register_commands(app)
    return app


def _click_exceptions():
    """The click that typer really uses (typer >= 0.20 ships its own copy)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer on the real click
        from click import exceptions
    return exceptions


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    import typer

    try:
        app = build_app(argv)
        # With standalone_mode=False click *returns* the code of typer.Exit(n).
        rc = app(args=argv, prog_name="tsubaki-forensics", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
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
