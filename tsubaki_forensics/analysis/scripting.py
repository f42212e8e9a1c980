"""drgn code on an opened dump, as ``drgn -e CODE``, ``drgn script.py`` and a piped REPL behave.

``shell`` is drgn's interactive mode on a terminal.  Off a terminal a user
scripts it, so this module gives the three non-interactive forms drgn users
know, with the globals of drgn's CLI (``prog``, drgn's helpers) plus
``dump``:

- :func:`run_code`: ``-e CODE`` (``sys.argv`` is ``["-e", *args]``);
- :func:`run_script`: a script file run as ``__main__`` (``sys.argv`` is
  ``[script, *args]``), the way ``drgn script.py`` runs it;
- :func:`run_piped`: statements read from a non-terminal stdin, line by
  line with REPL semantics (expressions are echoed, ``%crash bt`` and other
  drgn commands work) but with no prompt and no banner.

Each returns an exit status: 0, or 1 after an uncaught exception, whose
traceback (user code only) goes to stderr.  ``SystemExit`` raised by the
code propagates, as in Python.
"""

from __future__ import annotations

import code
import os
import runpy
import sys
import traceback
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import drgn

__all__ = ["run_code", "run_script", "run_piped", "script_globals"]


def script_globals(prog: drgn.Program, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """drgn CLI's globals (``prog``, ``Object``, the Linux helpers ...) plus ``extra``."""
    import drgn.cli

    namespace = drgn.cli.default_globals(prog)
    namespace.update(extra or {})
    return namespace


@contextmanager
def _as_default(prog: drgn.Program, argv: list[str]) -> Iterator[None]:
    """``prog`` as drgn's default program and ``argv`` as ``sys.argv`` for the duration."""
    try:
        old_prog = drgn.get_default_prog()
    except drgn.NoDefaultProgramError:
        old_prog = None
    old_argv = sys.argv
    drgn.set_default_prog(prog)
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = old_argv
        drgn.set_default_prog(old_prog)


def _print_user_traceback(error: BaseException, skip_files: Sequence[str]) -> None:
    """The traceback without the frames of this module and runpy (what ``python script.py`` shows)."""
    tb = error.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename in skip_files
                              or os.path.basename(tb.tb_frame.f_code.co_filename) in ("runpy.py", "<frozen runpy>")):
        tb = tb.tb_next
    sys.stdout.flush()
    traceback.print_exception(type(error), error, tb, file=sys.stderr)


def run_code(prog: drgn.Program, source: str, args: Sequence[str] = (), extra: dict[str, Any] | None = None) -> int:
    """Execute ``source`` like ``drgn -e``; return 0, or 1 after an uncaught exception."""
    namespace = script_globals(prog, extra)
    with _as_default(prog, ["-e", *args]):
        try:
            exec(compile(source, "<string>", "exec"), namespace)
        except SystemExit:
            raise
        except BaseException as e:  # the user's error, shown as Python shows it
            _print_user_traceback(e, [__file__])
            return 1
    return 0


def run_script(prog: drgn.Program, path: str, args: Sequence[str] = (), extra: dict[str, Any] | None = None) -> int:
    """Run the script ``path`` as ``__main__`` like ``drgn script.py``; return 0, or 1 after an uncaught exception."""
    init = {"prog": prog, **(extra or {})}
    added = False
    with _as_default(prog, [path, *args]):
        script_dir = os.path.dirname(os.path.abspath(path))
        if script_dir not in sys.path:
            sys.path.insert(0, script_dir)
            added = True
        try:
            runpy.run_path(path, init_globals=init, run_name="__main__")
        except SystemExit:
            raise
        except BaseException as e:
            _print_user_traceback(e, [__file__])
            return 1
        finally:
            if added:
                sys.path.remove(script_dir)
    return 0


class _PipedConsole(code.InteractiveConsole):
    """Python's console reading stdin with no prompt; ``%cmd`` lines are drgn commands (as in drgn's REPL)."""

    failed = False

    def raw_input(self, prompt: str = "") -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def showtraceback(self) -> None:
        self.failed = True
        sys.stdout.flush()
        super().showtraceback()

    def showsyntaxerror(self, filename: str | None = None, **kwargs: Any) -> None:
        self.failed = True
        sys.stdout.flush()
        super().showsyntaxerror(filename, **kwargs)

    def _command_error(self, error: Exception) -> None:
        from drgn.commands import _write_command_error

        self.failed = True
        sys.stdout.flush()
        _write_command_error(sys.stderr, error)

    def runsource(self, source: str, filename: str = "<stdin>", symbol: str = "single") -> bool:
        if not source.startswith("%"):
            return super().runsource(source, filename, symbol)
        from drgn.commands import run_command

        run_command(self.locals["prog"], source[1:], globals=self.locals, onerror=self._command_error)
        return False


def run_piped(prog: drgn.Program, extra: dict[str, Any] | None = None) -> int:
    """Read statements from stdin with REPL semantics and no prompt; 1 if any raised."""
    import drgn.cli

    console = _PipedConsole(script_globals(prog, extra), filename="<stdin>")
    old_hook = sys.displayhook
    sys.displayhook = drgn.cli._displayhook  # drgn's REPL display of Objects
    try:
        with _as_default(prog, [""]):
            console.interact(banner="", exitmsg="")
    finally:
        sys.displayhook = old_hook
    return 1 if console.failed else 0
