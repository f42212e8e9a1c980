"""Where output goes: data on stdout, progress and errors on stderr.

Strings that come from a dump (task names, log lines) are untrusted: they
pass through :func:`safe_text` before they reach a terminal so that a crafted
dump cannot inject escape sequences.  It lives in ``render/safe.py`` (the
renderers and triage need it, and they sit below the CLI) and is re-exported here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..render.json_stream import JsonStream, write_json  # JsonStream re-exported (its old home)
from ..render.safe import safe_text  # re-exported: the CLI modules and plugins import it from here

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["stdout", "stderr", "print_error", "print_warning", "print_json", "JsonStream", "safe_text", "FORMATS", "check_format",
           "format_option", "pause_gc", "resume_gc", "restore_gc", "allow_quick_exit", "quick_exit_allowed"]

# Declared for readers and linters; the values come from __getattr__ on first use.
stdout: Console
stderr: Console
_CONSOLES: dict[str, Console] = {}


def __getattr__(name: str) -> Console:
    """Create the rich consoles on first use (PEP 562).

    Importing rich costs ~20 ms of start-up; ``analyze --format json`` and
    the error path never print through rich, so they should not pay it.
    """
    if name not in ("stdout", "stderr"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _CONSOLES:
        from rich.console import Console

        _CONSOLES[name] = Console(stderr=name == "stderr", highlight=False, soft_wrap=True)
    return _CONSOLES[name]

def print_error(message: str) -> None:
    """One line on stderr, the only way a handled error reaches the user."""
    first = safe_text(message.splitlines()[0] if message.strip() else "unknown error")
    sys.stderr.write(f"error: {first}\n")


def print_warning(message: str) -> None:
    sys.stderr.write(f"warning: {safe_text(message)}\n")


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (never rich-formatted): :func:`..render.json_stream.write_json`.

    Indented by 2 like ``json.dumps(indent=2)``; a :class:`JsonStream`
    anywhere under nested dicts is written as it is produced."""
    write_json(data, sys.stdout)


# What the process may skip, decided by the console script (cli/app.py) and the
# command it runs (issue 21: ``analyze`` spent ~13 ms in the cyclic garbage
# collector while importing, and ~40 ms tearing down its heap after the output
# was written).  Only for a run that *is* the process
# (``main()`` called without ``argv``): code that runs a command in-process
# keeps the interpreter's normal behaviour.
_PROCESS = {"gc_paused": False, "gc_frozen": False, "quick_exit": False}


def pause_gc() -> None:
    """Stop the cyclic garbage collector while a command starts up.

    Imports, plugin loading and building the program make ~100,000 objects
    that live until the process ends, and few cycles (~7,000 objects of
    garbage in a whole ``analyze``); the collector would scan them ~80 times.
    """
    import gc

    if gc.isenabled():
        gc.disable()
        _PROCESS["gc_paused"] = True


def resume_gc() -> None:
    """Restart the collector paused by :func:`pause_gc` (if it was), before the
    work whose garbage grows with the dump.  What exists now is frozen
    (``gc.freeze``): it lives to the end and is never scanned again."""
    if _PROCESS["gc_paused"]:
        import gc

        _PROCESS["gc_paused"] = False
        _PROCESS["gc_frozen"] = True
        gc.freeze()
        gc.enable()


def restore_gc() -> None:
    """Before an ordinary exit: the collector as it was, running and nothing frozen.

    The interpreter's exit never finalizes a frozen object (its ``__del__``
    does not run, a file it holds is not flushed), so what was frozen goes
    back to the collector.
    """
    import gc

    if _PROCESS["gc_paused"]:
        _PROCESS["gc_paused"] = False
        gc.enable()
    if _PROCESS["gc_frozen"]:
        _PROCESS["gc_frozen"] = False
        gc.unfreeze()


def allow_quick_exit() -> None:
    """The command's output is complete and it holds nothing an exit must release:
    the console script may end the process without tearing down the heap
    (:func:`tsubaki_forensics.cli.app.main`)."""
    _PROCESS["quick_exit"] = True


def quick_exit_allowed() -> bool:
    return _PROCESS["quick_exit"]


#: The formats every data-printing command takes (some add more: triage's jsonl, html).
FORMATS = ("text", "json")


def check_format(value: str, choices: Sequence[str] = FORMATS) -> str:
    """``value`` if it is one of ``choices``; else the one-line error every command gives (exit 1)."""
    from ..errors import TsubakiError

    if value not in choices:
        raise TsubakiError(f"unknown format {value!r} for --format (choose {', '.join(choices)})")
    return value


def format_option(choices: Sequence[str] = FORMATS, help: str | None = None) -> Any:
    """The ``-f/--format`` option, checked while the command line is parsed, spelled alike everywhere."""
    import typer

    return typer.Option("-f", "--format", metavar="{" + ",".join(choices) + "}",
                        callback=lambda value: check_format(value, choices),
                        help=help or "text for people, json for programs.")
