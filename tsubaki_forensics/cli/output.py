"""Where output goes: data on stdout, progress and errors on stderr.

Strings that come from a dump (task names, log lines) are untrusted: they
pass through :func:`safe_text` before they reach a terminal so that a crafted
dump cannot inject escape sequences.  It lives in ``render/safe.py`` (the
renderers and triage need it, and they sit below the CLI) and is re-exported here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..render.safe import safe_text  # re-exported: the CLI modules and plugins import it from here

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["stdout", "stderr", "print_error", "print_warning", "print_json", "JsonStream", "safe_text", "FORMATS", "check_format",
           "format_option"]

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


class JsonStream:
    """A JSON array written item by item, one compact item per line.

    Why: ``inspect --format json`` of a dump of a million records lists a
    million ranges; building them as one list of dicts and one string cost
    1.2 GiB (issue 22).  Put a ``JsonStream`` as a value of a dict handed to
    :func:`print_json`: its items are made (by the iterable) and written a
    few thousand at a time.
    """

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (never rich-formatted).

    Indented by 2 like ``json.dumps(indent=2)``; a :class:`JsonStream`
    anywhere under nested dicts is written as it is produced."""
    if not _has_stream(data):
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        return
    for chunk in _stream(data, 0):
        sys.stdout.write(chunk)
    sys.stdout.write("\n")


def _has_stream(o: Any) -> bool:
    return isinstance(o, JsonStream) or (isinstance(o, dict) and any(map(_has_stream, o.values())))


def _stream(o: Any, level: int) -> Iterator[str]:
    pad = "\n" + "  " * level
    if isinstance(o, JsonStream):
        inner = pad + "  "
        batch: list[str] = []
        first = True
        for item in o.items:
            batch.append(json.dumps(item, default=str))
            if len(batch) >= 4096:
                yield ("[" if first else ",") + inner + ("," + inner).join(batch)
                batch, first = [], False
        if batch:
            yield ("[" if first else ",") + inner + ("," + inner).join(batch)
            first = False
        yield "[]" if first else pad + "]"
    elif isinstance(o, dict) and _has_stream(o):
        sep = "{"
        for key, value in o.items():
            yield f"{sep}{pad}  {json.dumps(str(key))}: "
            yield from _stream(value, level + 1)
            sep = ","
        yield pad + "}" if sep == "," else "{}"
    else:  # no stream inside: as json.dumps would, re-indented (JSON strings hold no raw newline)
        yield json.dumps(o, indent=2, sort_keys=False, default=str).replace("\n", pad)


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
