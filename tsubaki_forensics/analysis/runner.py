"""Run the chosen analyses; one failing never stops the others.

Each analysis either returns its result, is skipped because a need is not
met, or raises; a raise is recorded as a ``failed`` result with the reason
(type and message, plus the traceback kept for ``--format json``), and the
next analysis runs.  Plugins are third-party code run on hostile input, so
the runner also fails (instead of trusting) an analysis that runs past its
time limit (SIGALRM on the main thread: the plugin's own frame is
interrupted, so it cannot keep using the program behind the next one's
back; one that swallows the interruption and returns late is failed too),
calls ``sys.exit``, or returns a malformed result; each gets a read-only
copy of the options, and runs with fd 1 sent to stderr (:mod:`..sandbox`).  ``strict`` turns the first failure into a
:class:`~tsubaki_forensics.errors.PluginError` (CI use).
"""

from __future__ import annotations

import time
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from ..errors import PluginError, TsubakiError
from ..sandbox import PluginTimeout, deadline, stdout_to_stderr
from ..contracts.results import fact_key
from .results import AnalysisResult, Completeness, Missing, Status, Table, is_placeholder
from .spec import AnalysisContext, AnalysisSpec

__all__ = ["select", "run_analyses", "AnalysisTimeout", "DEFAULT_TIMEOUT_S", "check_result"]

DEFAULT_TIMEOUT_S = 300.0  # per analysis; the built-ins take < 2 s on a real 512 MiB crash


#: Raised inside an analysis that ran past its limit (a BaseException: a
#: plugin's ``except Exception`` cannot swallow it).
AnalysisTimeout = PluginTimeout


def select(
    available: Mapping[str, AnalysisSpec],
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[AnalysisSpec]:
    """The analyses to run, in registration order (``--only`` order if given).

    :raises TsubakiError: a name in ``only`` or ``exclude`` is not registered.
    """
    for name in [*only, *exclude]:
        if name not in available:
            known = ", ".join(available) or "none"
            raise TsubakiError(f"unknown analysis {name!r} (registered: {known})")
    names = list(only) if only else list(available)
    return [available[n] for n in dict.fromkeys(names) if n not in set(exclude)]


def run_analyses(
    specs: Iterable[AnalysisSpec],
    context: AnalysisContext,
    progress: Callable[[str], None] | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    strict: bool = False,
) -> list[AnalysisResult]:
    """Run each analysis and return one result per analysis, in order.

    :param timeout: seconds each analysis may run (None or 0: no limit).
    :param strict: raise :class:`PluginError` at the first failed analysis.
    """
    results = []
    for spec in specs:
        if progress is not None:
            progress(spec.name)
        # each analysis sees its own read-only options: none can change another's
        mine = replace(context, options=types.MappingProxyType(dict(context.options)))
        result = _run_one(spec, mine, timeout)
        if strict and result.status is Status.FAILED:
            raise PluginError(f"--strict: analysis {spec.name} ({spec.plugin}) failed: {result.error}")
        results.append(result)
    return results


def check_result(result: object, facts: tuple[str, ...] = ()) -> None:
    """Refuse a result that breaks the contract of :mod:`.results` (TypeError),
    or gives a fact outside ``facts``, the keys its analysis declared (if any)."""
    if not isinstance(result, AnalysisResult):
        raise TypeError(f"returned {type(result).__name__}, not AnalysisResult")
    for name, kind in (("facts", tuple), ("tables", tuple), ("completeness", tuple), ("notes", tuple)):
        if not isinstance(getattr(result, name), kind):
            raise TypeError(f"malformed result: {name} is a {type(getattr(result, name)).__name__}, not a tuple")
    for fact in result.facts:
        if not (isinstance(fact, tuple) and len(fact) == 2 and isinstance(fact[0], str) and _value(fact[1])):
            raise TypeError(f"malformed result: fact {fact!r:.80} is not a (name, value) pair")
    for table in result.tables:
        if not isinstance(table, Table):
            raise TypeError(f"malformed result: table {table!r:.80} is not a Table")
        width = len(table.columns)
        for row in table.rows:
            if not isinstance(row, tuple) or len(row) != width or \
                    not (_PLAIN.issuperset(map(type, row)) or all(map(_value, row))):
                raise TypeError(f"malformed result: table {table.name} row {row!r:.80}")
    for c in result.completeness:
        if not isinstance(c, Completeness) or not all(isinstance(m, Missing) for m in c.missing):
            raise TypeError(f"malformed result: completeness {c!r:.80}")
    if not all(isinstance(n, str) for n in result.notes):
        raise TypeError("malformed result: notes must be strings")
    if not isinstance(result.status, Status):
        raise TypeError(f"malformed result: status {result.status!r:.40}")
    if facts:
        undeclared = [name for name, _ in result.facts if fact_key(name) not in facts]
        if undeclared:
            raise TypeError(f"fact {undeclared[0]!r} (key {fact_key(undeclared[0])!r}) is not among the facts "
                            f"it declares: {', '.join(facts)}")


#: Cell types accepted without a closer look (the rest: subclasses, placeholders, through :func:`_value`).
_PLAIN = frozenset({int, float, str, bool, type(None)})


def _value(v: object) -> bool:
    return v is None or isinstance(v, (int, float, str, bool)) or is_placeholder(v)


def _run_one(spec: AnalysisSpec, context: AnalysisContext, timeout: float | None = None) -> AnalysisResult:
    missing = spec.missing_needs(context.capabilities)
    if missing:
        needs = ", ".join(n.value.replace("_", " ") for n in missing)
        return AnalysisResult(spec.name, spec.name, status=Status.SKIPPED, error=f"needs {needs}")
    start = time.perf_counter()
    try:
        try:
            # fd 1 goes to stderr meanwhile: a plugin's print() cannot corrupt --format json
            with stdout_to_stderr(), deadline(timeout, f"analysis {spec.name} ({spec.plugin})") as state:
                result = spec.function(context)
        except AnalysisTimeout:
            raise TimeoutError(f"ran past its {timeout:g} s time limit") from None
        except SystemExit as e:
            raise RuntimeError(f"called sys.exit({e.code!r})") from None
        if state.overran:  # it swallowed the interruption and returned late: failed, not ok
            raise TimeoutError(f"ran past its {timeout:g} s time limit (and ignored the interruption)")
        check_result(result, spec.facts)
    except (Exception, AnalysisTimeout) as e:  # one failing analysis must not stop the others
        reason = str(e) if isinstance(e, TsubakiError) else f"{type(e).__name__}: {e}"
        return AnalysisResult(
            spec.name,
            spec.name,
            status=Status.FAILED,
            error=reason,
            seconds=time.perf_counter() - start,
            extra={"traceback": traceback.format_exc()},
        )
    status = result.status
    if status is Status.OK and any(not c.complete for c in result.completeness):
        status = Status.PARTIAL
    return replace(result, name=spec.name, status=status, seconds=time.perf_counter() - start)
