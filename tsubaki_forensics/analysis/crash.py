"""drgn's crash-compatible commands (``bt``, ``ps``, ``log``, ``sys``, ...) on an opened dump.

drgn 0.3.0 ships 42 commands that behave like the crash utility's
(``drgn.commands._crash``).  They are reused here as they are: this module
only feeds them command lines, collects their failures and chooses between
crash's interactive prompt and a batch run.  No crash command is
re-implemented.

Why a session object: the commands share state through ``prog.config``
(crash's ``set`` context, the pager), and Python code run by the ``drgn``
command needs one globals dictionary for the whole run, as in drgn's CLI.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import drgn

__all__ = ["CrashSession", "CommandFailure", "command_lines", "crash_globals"]


@dataclass(frozen=True)
class CommandFailure:
    """One failed command line and why (the exception drgn's command raised)."""

    line: str
    error: BaseException

    def message(self) -> str:
        """One line: the command and its error, the way crash names a failed command."""
        text = str(self.error).strip().splitlines()
        reason = text[-1] if text else type(self.error).__name__
        name = self.line.split(None, 1)[0] if self.line.split() else self.line
        # drgn's argument errors already start with the command's name
        # ("struct: error: the following arguments are required: ...").
        if reason.startswith(f"{name}:"):
            return f"{name}: " + reason[len(name) + 1:].lstrip().removeprefix("error:").lstrip()
        kind = type(self.error).__name__
        generic = ("CommandError", "CommandArgumentError", "CommandNotFoundError", "CommandExitStatusError")
        return f"{name}: {reason}" if kind in generic else f"{name}: {kind}: {reason}"


def crash_globals(prog: drgn.Program, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The globals drgn's CLI gives commands and ``drgn`` code (``prog``, helpers), plus ``extra``."""
    import drgn.cli

    namespace = drgn.cli.default_globals(prog)
    namespace.update(extra or {})
    return namespace


def command_lines(lines: Iterable[str]) -> Iterator[str]:
    """Command lines of a crash input file: blank lines and ``#`` comments skipped."""
    for raw in lines:
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


class CrashSession:
    """drgn's crash command namespace bound to one program.

    :param prog: the program of an opened dump.
    :param globals: namespace for the ``drgn`` and ``p`` commands (default:
        :func:`crash_globals`).
    :param pager: let drgn pipe long output through ``less`` (crash's
        ``scroll on``); batch runs pass ``False``.
    """

    def __init__(self, prog: drgn.Program, *, globals: dict[str, Any] | None = None, pager: bool = False) -> None:
        import drgn.commands._crash  # noqa: F401  (registers the 42 commands)
        from drgn.commands._crash.common import CRASH_COMMAND_NAMESPACE

        self.prog = prog
        self.globals = globals if globals is not None else crash_globals(prog)
        self._namespace = CRASH_COMMAND_NAMESPACE
        prog.config["crash_scroll"] = pager

    def names(self) -> list[str]:
        """The crash commands drgn enables on this program, sorted."""
        return sorted(name for name, _ in self._namespace.enabled(self.prog))

    def run(self, line: str) -> list[CommandFailure]:
        """Run one crash command line (arguments, ``|`` pipes and ``>`` redirections as in crash).

        :returns: the failures (empty when the command succeeded).
        """
        errors: list[BaseException] = []
        self._namespace.run(self.prog, line, globals=self.globals, onerror=errors.append)
        sys.stdout.flush()
        return [CommandFailure(line, e) for e in errors]

    def run_all(self, lines: Iterable[str], on_failure: Callable[[CommandFailure], None]) -> int:
        """Run every line, reporting each failure as it happens; return how many failed.

        A failed command does not stop the run (as in ``crash -i FILE``), and
        neither does ``exit``/``q``'s request to leave, which ends it early.
        """
        from drgn.commands._crash import _ExitCrash

        failed = 0
        for line in lines:
            try:
                failures = self.run(line)
            except _ExitCrash:
                break
            for failure in failures:
                on_failure(failure)
            failed += bool(failures)
        return failed

    def interactive(self) -> None:
        """crash's prompt (drgn's ``%crash`` mode): ``sys`` summary first, readline history, ``q`` leaves."""
        from drgn.commands import DEFAULT_COMMAND_NAMESPACE

        DEFAULT_COMMAND_NAMESPACE.run(self.prog, "crash", globals=self.globals)

