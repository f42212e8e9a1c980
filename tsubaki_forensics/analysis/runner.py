"""Run the chosen analyses; one failing never stops the others.

Each analysis either returns its result, is skipped because a need is not
met, or raises; a raise is recorded as a ``failed`` result with the reason
(type and message, plus the traceback kept for ``--format json``), and the
next analysis runs.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from ..errors import TsubakiError
from .results import AnalysisResult, Status
from .spec import AnalysisContext, AnalysisSpec

__all__ = ["select", "run_analyses"]


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
) -> list[AnalysisResult]:
    """Run each analysis and return one result per analysis, in order."""
    results = []
    for spec in specs:
        if progress is not None:
            progress(spec.name)
        results.append(_run_one(spec, context))
    return results


def _run_one(spec: AnalysisSpec, context: AnalysisContext) -> AnalysisResult:
    missing = spec.missing_needs(context.capabilities)
    if missing:
        needs = ", ".join(n.value.replace("_", " ") for n in missing)
        return AnalysisResult(spec.name, spec.name, status=Status.SKIPPED, error=f"needs {needs}")
    start = time.perf_counter()
    try:
        result = spec.function(context)
        if not isinstance(result, AnalysisResult):
            raise TypeError(f"returned {type(result).__name__}, not AnalysisResult")
    except Exception as e:  # one failing analysis must not stop the others
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
