"""The console-script entry point and the one error boundary of the command line.

:mod:`.root` assembles the typer application (each command module exposes
``register(app)``; plugins add commands through the
``tsubaki_register_commands`` hook).  Errors of the domain family end as
``error: <one line>`` on stderr and a non-zero exit, never as a traceback.
This module imports typer only once it is needed: ``--version`` answers
before (issue 21, docs/BENCHMARKS.md "Start-up").
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing before --version
if TYPE_CHECKING:
    import typer

__all__ = ["build_app", "main"]

_VERSION_FLAGS = ("--version", "-V")  # root.VERSION_FLAGS, without importing typer


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The application (see :func:`.root.build_app`)."""
    from .root import build_app as build

    return build(argv)


def _click_exceptions():
    """The click that typer really uses (typer >= 0.20 ships its own copy)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer on the real click
        from click import exceptions
    return exceptions


def _drop_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


#: Commands whose start-up runs without the cyclic garbage collector when they
#: are the process (:func:`.output.pause_gc`; the command resumes it).
_GC_PAUSED_COMMANDS = ("analyze", "shell")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point.

    Called without ``argv`` it is the process: a command that allows it
    (:func:`.output.allow_quick_exit`: ``analyze`` once its output is
    written, ``import`` once its .tsd is published) then ends the process
    here, with ``os._exit`` after flushing stdout and stderr and running the
    ``atexit`` handlers, instead of returning: the interpreter's teardown (freeing drgn's program and every
    module, two full collections) cost ~40 ms of a ~0.45 s ``analyze``
    (issue 21) and releases nothing the kernel does not.  The start-up of
    ``analyze`` and ``shell`` runs without the cyclic garbage collector
    (:func:`.output.pause_gc`, ~13 ms of ``analyze``); an ordinary exit gets
    it back as it was (:func:`.output.restore_gc`).  Called with ``argv``
    (tests, code embedding the command line), none of this: it returns.
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in _VERSION_FLAGS:  # eager in click too: nothing else on the line matters
        from .. import __version__

        sys.stdout.write(f"tsubaki-forensics {__version__}\n")
        return 0
    if argv is None and args[:1] and args[0] in _GC_PAUSED_COMMANDS:
        from .output import pause_gc

        pause_gc()
    if argv is not None:
        return _run(argv)
    try:
        code = _run(argv)
        _end_quickly(code)
        return code
    finally:
        from .output import restore_gc

        restore_gc()  # an ordinary exit: what it finalizes must not be frozen


def _end_quickly(code: int) -> None:
    """``os._exit(code)`` if the command allowed it and nothing else must run; else return."""
    import os
    import threading

    from .output import quick_exit_allowed

    if not quick_exit_allowed() or threading.active_count() > 1:  # a thread the normal exit would join
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        return  # the normal exit reports it
    import atexit

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)  # CPython's; without it, the normal exit
    if run_exitfuncs is None:
        return
    run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    """Run the command line (``argv``, else sys.argv); every error of the domain family is one line and an exit code."""
    import errno
    import os

    # numpy's OpenBLAS starts a thread pool when imported (~25 ms of CPU on
    # every dump-reading command, issue 21); nothing here does linear algebra.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import typer

    from ..errors import TsubakiError
    from .output import print_error

    try:
        app = build_app(argv)
        # With standalone_mode=False click *returns* the code of typer.Exit(n).
        rc = app(args=argv, prog_name="tsubaki-forensics", standalone_mode=False)
        sys.stdout.flush()  # a full or closed stdout fails here, not in the interpreter's exit
        return rc if isinstance(rc, int) else 0
    except OSError as e:
        if e.filename is not None or e.errno not in (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
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
