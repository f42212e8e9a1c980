"""The root of the command line: built-in and plugin commands, each loaded when first needed.

Start-up is lazy (issue 21: ``--version`` and ``--help`` within 0.15 s): a
command's module is imported, and its typer functions turned into click
commands, only when that command runs or a help lists it.  Plugins load
only when a command needs them, when the command name is not a built-in
one, or when the root help lists commands and a plugin from another
distribution is installed (the bundled plugins add no commands);
``analyze --help`` loads them, for the options their analyses declare.
tests/test_cli_startup.py checks the table below against what each module
registers, and that light commands import no drgn, numpy, rich or
zstandard.  Help is click's plain text (``rich_markup_mode=None``): rich's
panels cost ~50-90 ms of import and rendering, most of the budget
(docs/BENCHMARKS.md, "Start-up and analyze speed").
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Annotated, Any

import typer
import typer.core
import typer.main
import typer.models

from . import set_argv
from .examples import add_examples

__all__ = ["BUILTIN_COMMANDS", "VERSION_FLAGS", "LazyCommands", "build_app"]

#: Each built-in command and the module that registers it, in help order.
BUILTIN_COMMANDS: dict[str, str] = {
    "collect": "collect_commands",
    "monitor": "live_commands",
    "import": "dump_commands",
    "export": "dump_commands",
    "inspect": "dump_commands",
    "verify": "dump_commands",
    "analyze": "analyze_commands",
    "shell": "analyze_commands",
    "plugins": "analyze_commands",
    "crash": "crash_commands",
    "triage": "triage_commands",
    "lab": "lab_commands",
    "symbols": "symbols_commands",
}
VERSION_FLAGS = ("--version", "-V")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"tsubaki-forensics {__version__}\n")
        raise typer.Exit()


def _root(
    version: Annotated[bool, typer.Option(*VERSION_FLAGS, is_eager=True, callback=_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Collect Linux kernel crash dumps Tsubaki-style and analyse them with drgn."""


def _typer(**kwargs: Any) -> typer.Typer:
    """A typer app with the settings every part of the command line shares."""
    return typer.Typer(pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None, **kwargs)


def _short_help(info: Any, limit: int) -> str:
    """The one-line help of a registered command or group, as click would shorten it."""
    try:
        from typer._click.utils import make_default_short_help
    except ImportError:  # older typer on the real click
        from click.utils import make_default_short_help

    if isinstance(info, typer.models.TyperInfo):
        text = typer.main.solve_typer_info_help(info)
    elif isinstance(info.help, str):
        text = info.help
    else:
        text = inspect.getdoc(info.callback) or ""
    short = info.short_help if isinstance(info.short_help, str) else None
    return inspect.cleandoc(short) if short else make_default_short_help(text, limit)


class LazyCommands(typer.core.TyperGroup):
    """The root group: built-in commands (:data:`BUILTIN_COMMANDS`) and plugin commands, on demand.

    A command's module is imported when the command is looked up or listed;
    its typer function becomes a click command (typer evaluates every
    annotation, a few ms per command) only when it is looked up.  The root
    help lists commands from their typer registrations alone.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: registered but not yet converted: name -> typer CommandInfo or TyperInfo (a group)
        self.registered: dict[str, Any] = {}
        self._modules: set[str] = set()
        self._plugins_loaded = False

    def _take(self, app: typer.Typer) -> None:
        for info in app.registered_commands:
            name = info.name or typer.main.get_command_name(info.callback.__name__)
            self.registered.setdefault(name, info)  # a built-in name stays the built-in
        for group in app.registered_groups:
            if group.name:
                self.registered.setdefault(group.name, group)

    def _load_builtin(self, name: str) -> None:
        module_name = BUILTIN_COMMANDS[name]
        if module_name in self._modules:
            return
        self._modules.add(module_name)
        module = importlib.import_module(f".{module_name}", __package__)
        sub = _typer()
        module.register(sub)
        add_examples(sub)
        self._take(sub)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from ..plugin_system import get_plugins
        from . import argv_disabled

        sub = _typer()
        get_plugins(argv_disabled()).register_commands(sub)
        self._take(sub)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            if cmd_name in BUILTIN_COMMANDS:
                self._load_builtin(cmd_name)
            elif cmd_name not in self.registered:
                self._load_plugins()
            info = self.registered.get(cmd_name)
            if info is None:
                return None
            one = _typer()
            if isinstance(info, typer.models.TyperInfo):
                one.registered_groups.append(info)
            else:
                one.registered_commands.append(info)
            self.commands[cmd_name] = typer.main.get_group(one).commands[cmd_name]
        return self.commands[cmd_name]

    def list_commands(self, ctx: Any) -> list[str]:
        for name in BUILTIN_COMMANDS:
            self._load_builtin(name)
        from ..plugin_system.discovery import foreign_entry_points

        if foreign_entry_points():
            self._load_plugins()
        return [*BUILTIN_COMMANDS, *(n for n in self.registered if n not in BUILTIN_COMMANDS)]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The root help's command list, from the registrations (no command is converted)."""
        names = [n for n in self.list_commands(ctx) if not self.registered[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        with formatter.section("Commands"):
            formatter.write_dl([(n, _short_help(self.registered[n], limit)) for n in names])


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """Return the application: built-in commands, then plugin commands, each loaded when first needed."""
    set_argv(sys.argv[1:] if argv is None else list(argv))
    app = _typer(
        name="tsubaki-forensics",
        cls=LazyCommands,
        help="Collect Linux kernel crash dumps Tsubaki-style and analyse them with drgn.",
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
    )
    app.callback()(_root)
    return app
