"""Run plugin code so that it cannot corrupt the output or hang the run.

Why: plugins are third-party code run on hostile input.  On main a plugin's
``print()`` (or a write to fd 1 from C) landed in the middle of ``analyze
--format json`` and ``triage --format json`` (invalid JSON, exit 0); a
plugin that swallowed ``BaseException`` in a loop overran ``--timeout`` and
was reported ok; ``tsubaki_program_ready`` hooks had no time limit; a hook
that raised ended the run with a traceback.  So every call into a plugin
goes through :func:`plugin_call`:

- fd 1 *and* ``sys.stdout`` point at stderr for the duration
  (:func:`stdout_to_stderr`): the only thing on stdout is what a renderer
  writes;
- a time limit (:func:`deadline`; SIGALRM on the main thread, re-fired
  every second while the plugin holds on); a call that ever ran past it is a
  failure even if it swallowed the interruption and returned;
- anything it raises becomes one :class:`~tsubaki_forensics.errors.PluginError`
  line naming the plugin and the hook.

Bottom layer: imports nothing from the project but :mod:`.errors`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import PluginError, TsubakiError

__all__ = ["PluginTimeout", "Deadline", "deadline", "stdout_to_stderr", "plugin_call", "HOOK_TIMEOUT_S"]

T = TypeVar("T")

HOOK_TIMEOUT_S = 60.0  # per hook call; the bundled hooks take milliseconds
#: After the limit, how long a plugin that keeps swallowing the interruption
#: is given before the process stops with one line (the run cannot go on:
#: the plugin's frame still holds the interpreter).
GRACE_S = 30.0


class PluginTimeout(BaseException):
    """Raised inside plugin code that ran past its limit.

    A BaseException so that ``except Exception`` cannot swallow it; the timer
    re-fires every second until the plugin lets go.
    """


class Deadline:
    """What :func:`deadline` observed: whether the limit was ever reached."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = 0
        self.start = time.monotonic()

    @property
    def overran(self) -> bool:
        return bool(self.fired) or (bool(self.seconds) and time.monotonic() - self.start > self.seconds)


@contextlib.contextmanager
def deadline(seconds: float | None, what: str = "plugin code") -> Iterator[Deadline]:
    """Interrupt the body after ``seconds`` (main thread with SIGALRM only).

    The yielded :class:`Deadline` says afterwards whether the body overran
    (also when it swallowed every :class:`PluginTimeout`).  A body that
    ignores the interruption for :data:`GRACE_S` more seconds ends the
    process with one line naming ``what`` (exit 5).
    """
    state = Deadline(seconds)
    if not seconds or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield state
        return

    def fire(signum, frame):  # noqa: ARG001 - signal handler signature
        state.fired += 1
        if state.fired > GRACE_S:
            os.write(2, f"error: {what} ignored its {seconds:g} s time limit for {GRACE_S:g} s more; "
                        "stopping\n".encode("utf-8", "replace"))
            os._exit(5)
        raise PluginTimeout(seconds)

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to fd 1 or ``sys.stdout`` to stderr meanwhile."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        pass
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all: nothing to protect
        saved = -1
    old_stdout = sys.stdout
    try:
        if saved >= 0:
            os.dup2(2, 1)
        sys.stdout = sys.stderr
        yield
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError, AttributeError):
            pass
        sys.stdout = old_stdout
        if saved >= 0:
            os.dup2(saved, 1)
            os.close(saved)


def plugin_call(plugin: str, hook: str, function: Callable[..., T], *args: Any,
                timeout: float | None = HOOK_TIMEOUT_S, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` as plugin code: stdout kept clean, time-limited,
    errors one line.

    :raises PluginError: it raised (``TsubakiError`` passes through unchanged),
        called ``sys.exit``, or ran past ``timeout``.
    """
    what = f"plugin {plugin!r} ({hook})"
    try:
        with stdout_to_stderr(), deadline(timeout, what) as state:
            result = function(*args, **kwargs)
    except PluginTimeout:
        raise PluginError(f"{what} ran past its {timeout:g} s time limit") from None
    except TsubakiError:
        raise
    except SystemExit as e:
        raise PluginError(f"{what} called sys.exit({e.code!r})") from None
    except Exception as e:
        raise PluginError(f"{what} raised {type(e).__name__}: {_one_line(e)}") from e
    if state.overran:
        raise PluginError(f"{what} ran past its {timeout:g} s time limit (and ignored the interruption)")
    return result


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else "(no message)"
