"""``crash``: drgn's crash-compatible commands on a dump, interactive or batch.

``tsubaki-forensics crash DUMP.tsd`` on a terminal is crash's prompt (the
``sys`` summary, then ``%crash>``); with ``-c CMD`` (repeatable) or
``-i FILE`` it runs those commands and exits; with stdin not a terminal it
reads the commands from stdin, with no prompt (``crash < cmds``).  Each
failed command is one ``error:`` line on stderr; the run goes on and exits
5 at the end.  The commands are drgn's own (``drgn.commands._crash``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import TsubakiError
from ..plugin_system import get_plugins
from .analyze_commands import EXIT_FAILED, check_dumps, _debug_dirs, _DebugDirs, _Disable, _DumpPaths, _names, _Quiet, _SelfContained, _Vmlinux
from .output import print_error, print_warning

__all__ = ["register", "crash"]



def crash(
    dumps: _DumpPaths,
    command: Annotated[
        Optional[list[str]],
        typer.Option("-c", "--command", metavar="CMD", help="Run this crash command (e.g. 'bt -a'); repeatable, run in order."),
    ] = None,
    input_file: Annotated[
        Optional[Path],
        typer.Option("-i", "--input", metavar="FILE", help="Run the crash commands of FILE, one a line ('#' comments), after any -c."),
    ] = None,
    vmlinux: _Vmlinux = None,
    debug_dir: _DebugDirs = None,
    self_contained: _SelfContained = False,
    disable: _Disable = None,
    quiet: _Quiet = False,
) -> None:
    """drgn's crash-compatible commands (bt, ps, log, sys, kmem, mod, files, net, runq, foreach, struct, rd, ...).

    Interactive like crash on a terminal; batch with -c, -i or commands on
    stdin. Exit 0 when every command succeeded, 5 when one failed (each
    failure is one 'error:' line on stderr), 1 on bad input.

    """
    from ..analysis.crash import CrashSession, command_lines, crash_globals
    from ..analysis.session import open_program

    check_dumps(dumps)
    if input_file is not None and not input_file.exists():
        raise TsubakiError(f"{input_file}: no such file")
    if self_contained and vmlinux is not None:
        raise TsubakiError("--self-contained and --vmlinux exclude each other")
    lines: list[str] = [c for c in command or () if c.strip()]
    if input_file is not None:
        try:
            lines += command_lines(input_file.read_text(errors="replace").splitlines())
        except OSError as e:
            raise TsubakiError(f"{input_file}: {e.strerror or e}") from None
    batch = bool(command or input_file)
    interactive = not batch and sys.stdin.isatty()

    plugins = get_plugins(_names(disable))
    opened = open_program(dumps, plugins, vmlinux=vmlinux, debug_dirs=_debug_dirs(debug_dir), self_contained=self_contained)
    try:
        for problem in getattr(opened.dump, "problems", ()):
            print_warning(str(problem))
        if not quiet:
            if opened.program.debug_info is not None:
                for line in opened.program.debug_info.lines():
                    print_warning(line)
        session = CrashSession(
            opened.program.prog,
            globals=crash_globals(opened.program.prog, {"dump": opened.dump}),
            pager=interactive and sys.stdout.isatty(),
        )
        if interactive:
            session.interactive()
            return
        if not batch:
            lines = list(command_lines(sys.stdin))
        failed = session.run_all(lines, lambda f: print_error(f.message()))
    finally:
        opened.close()
    if failed:
        sys.exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``crash`` to ``app``."""
    app.command("crash")(crash)
