"""Build the drgn program of ``analyze`` on a second thread while the CLI starts.

Why: two costs of ``analyze`` do not depend on each other.  The CLI's own
start-up (typer, the command modules, option parsing, plugin entry points)
is Python work that holds the GIL; indexing the vmlinux DWARF is drgn's C
work that releases it (~0.15 s for a Debian cloud kernel; measured: a Python
loop keeps ~3/4 of its speed while ``load_debug_info`` runs on another
thread).  Run one after the other they add up; on two cores they overlap
(docs/benchmarks/analyze.md has the before/after).

It is speculative, like a CPU's branch prediction: :func:`start` guesses the
dump files and ``--vmlinux`` from the raw ``argv`` before typer parses it,
and only for the plain form ``analyze DUMP... [--vmlinux V] [--format F]
[--only A] [--exclude A] [--tail N] [--timeout S] [--strict]``; anything
else (``--debug-dir``, ``--self-contained``, ``--disable``, ``--help``, an
unknown option) means no guess.  :func:`take` hands the program over only
when the parsed command asks for exactly the guessed program and no plugin
would have built it differently (a third-party ``tsubaki_reassemble`` or
``tsubaki_debug_info_paths``); otherwise the guess is dropped and the
command builds its program the normal way, so a wrong guess costs time,
never a different result.  Any error on the warm thread is dropped too: the
normal path then raises it with its usual one-line message.

``TSUBAKI_WARMSTART=0`` turns it off (the benchmark measures both).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ENV", "Guess", "WarmStart", "drop", "guess", "start", "take"]

ENV = "TSUBAKI_WARMSTART"

# Options of ``analyze`` that take a value and do not change how the program is built.
_VALUE_OPTIONS = frozenset({"--format", "--only", "--exclude", "--tail", "--timeout"})
_FLAG_OPTIONS = frozenset({"--strict"})


@dataclass(frozen=True)
class Guess:
    """What the program of a plain ``analyze`` command line is built from."""

    dumps: tuple[Path, ...]
    vmlinux: Path | None


def guess(argv: Sequence[str]) -> Guess | None:
    """The dump files and vmlinux of ``analyze DUMP... [options]``, or None if unsure."""
    if not argv or argv[0] != "analyze":
        return None
    dumps: list[Path] = []
    vmlinux: Path | None = None
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if not arg.startswith("-"):
            dumps.append(Path(arg))
        elif name == "--vmlinux" or name in _VALUE_OPTIONS:
            if not eq:
                i += 1
                if i >= len(args):
                    return None
                value = args[i]
            if name == "--vmlinux":
                if vmlinux is not None:
                    return None
                vmlinux = Path(value)
        elif arg not in _FLAG_OPTIONS:
            return None  # an option that may change the program, or one we do not know
        i += 1
    if not dumps or not all(p.is_file() for p in dumps):
        return None
    if vmlinux is not None and not vmlinux.is_file():
        return None
    return Guess(tuple(dumps), vmlinux)


@dataclass
class WarmStart:
    """A program being built on a second thread for a guessed command line."""

    guess: Guess
    thread: threading.Thread | None = None
    result: tuple[Any, Any] | None = None  # (dump, DumpProgram)
    error: BaseException | None = field(default=None, repr=False)

    def run(self) -> None:
        from ..drgn_bridge.program import program_from_dump
        from ..tsd import open_dump

        dump = None
        try:
            dump = open_dump(list(self.guess.dumps))
            program = program_from_dump(dump, vmlinux=self.guess.vmlinux, describe_itself=False)
            self.result = (dump, program)
        except BaseException as e:  # dropped: the normal path reports it
            self.error = e
            if dump is not None:
                dump.close()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def discard(self) -> None:
        self.wait()
        if self.result is not None:
            self.result[0].close()
            self.result = None


_current: WarmStart | None = None


def start(argv: Sequence[str]) -> WarmStart | None:
    """Start building the program for ``argv`` if it is a plain ``analyze`` line."""
    global _current
    drop()
    if os.environ.get(ENV, "1") == "0":
        return None
    g = guess(argv)
    if g is None:
        return None
    _import_what_the_thread_runs()

    warm = WarmStart(g)
    # Not a daemon: at exit Python waits for it rather than killing it inside drgn.
    warm.thread = threading.Thread(target=warm.run, name="tsubaki-warmstart")
    warm.thread.start()
    _current = warm
    return warm


def _import_what_the_thread_runs() -> None:
    """Import, on the calling thread, every module the warm thread will need.

    Two threads importing overlapping sets of modules can deadlock on the
    per-module import locks (Python then hands one of them a half-initialised
    module).  ``set_core_dump`` makes drgn import its own plugins (its
    ``drgn.plugins`` entry points: the crash-compatible commands) on first
    use, and ``program_from_dump`` imports drgn's kallsyms helper lazily; all
    of them are needed by ``analyze`` anyway, so this costs no extra time.
    """
    import importlib
    import importlib.metadata

    import drgn.helpers.linux  # noqa: F401  (all helpers: the analyses import them too)

    from ..drgn_bridge import program as _program  # noqa: F401
    from ..tsd import reader as _reader  # noqa: F401

    try:  # drgn's plugin loader itself, imported by libdrgn on first use
        importlib.import_module("_drgn_util.plugins")
    except ImportError:
        pass
    if os.environ.get("DRGN_DISABLE_PLUGINS") != "*":
        for ep in importlib.metadata.entry_points(group="drgn.plugins"):
            try:
                importlib.import_module(ep.module)
            except Exception:  # drgn reports a broken plugin itself when it loads them
                pass


def take(dumps: Sequence[Path], plugins: Any, *, vmlinux: Path | None, debug_dirs: Sequence[Path] | None,
         self_contained: bool) -> tuple[Any, Any] | None:
    """The warm (dump, program) if it is exactly what this command would build, else None."""
    global _current
    warm, _current = _current, None
    if warm is None:
        return None
    from ..drgn_bridge.debuginfo import DEFAULT_DEBUG_DIRS
    from ..plugin_system.builtin import BUILTIN_NAME

    same_line = (tuple(Path(p) for p in dumps) == warm.guess.dumps and vmlinux == warm.guess.vmlinux
                 and not self_contained
                 and (debug_dirs is None or list(debug_dirs) == list(DEFAULT_DEBUG_DIRS)))
    reassemblers = [impl.plugin_name for impl in plugins.pm.hook.tsubaki_reassemble.get_hookimpls()]
    if not same_line or reassemblers != [BUILTIN_NAME]:
        warm.discard()
        return None
    warm.wait()
    if warm.result is None:
        return None
    dump, program = warm.result
    if vmlinux is None and plugins.debug_info_paths(program.info.build_id, program.info.release):
        warm.discard()  # a plugin offers vmlinux files the guess did not look at
        return None
    return dump, program


def drop() -> None:
    """Discard a warm program nobody took (the command failed before, or was not analyze)."""
    global _current
    warm, _current = _current, None
    if warm is not None:
        warm.discard()
