"""The records that registration hooks produce, validated by the core.

Registration hooks take a ``register`` callback (llm's
``register_models(register)``): plugins stay declarative and the core checks
each name, callable and description here, once, with an error that names the
plugin.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..contracts.debuginfo import DebugInfoProvider, RegisteredProvider
from ..contracts.frozen import Frozen

if TYPE_CHECKING:
    from ..contracts.report import Report
    from ..contracts.debuginfo import DebugInfoProvider
    from ..contracts.analysis import AnalysisFunction, AnalysisOption
    from ..contracts.needs import Need

__all__ = [
    "SourceFactory",
    "SourceSpec",
    "RendererFunction",
    "RendererSpec",
    "RegisterSource",
    "RegisterAnalysis",
    "RegisterRenderer",
    "RegisterDebugInfo",
    "DebugInfoSpec",
]

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

#: ``factory(spec, **options)`` returns a ``MemorySource`` (docs/ARCHITECTURE.md).
SourceFactory = Callable[..., Any]
#: ``render(report, out)`` writes the whole report to the text stream ``out``.
RendererFunction = Callable[["Report", IO[str]], None]


def _check(kind: str, name: str, function: object, description: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{kind} name {name!r} must match {_NAME.pattern}")
    if not callable(function):
        raise TypeError(f"{kind} {name!r}: {function!r} is not callable")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"{kind} {name!r} needs a description")


class SourceSpec(Frozen):
    """A memory source for ``collect`` (a QEMU ELF vmcore, a raw image, ...).

    :param probe: optional ``probe(spec) -> bool``: does ``spec`` look like
        this source's (a path, ``"lab:..."``)?
    :param source_type: the object the plugin registered, when it registered
        one object (``register(source_type)``) rather than three values.
    """

    _fields = ("name", "factory", "description", "plugin", "probe", "source_type")
    name: str
    factory: SourceFactory
    description: str
    plugin: str
    probe: Callable[[str], bool] | None
    source_type: Any

    def __init__(self, name: str, factory: SourceFactory, description: str, plugin: str = "?",
                 probe: Callable[[str], bool] | None = None, source_type: Any = None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "factory", factory)
        setattr_(self, "description", description)
        setattr_(self, "plugin", plugin)
        setattr_(self, "probe", probe)
        setattr_(self, "source_type", source_type)
        _check("memory source", name, factory, description)


class RendererSpec(Frozen):
    """An output format for ``analyze --format NAME``."""

    _fields = ("name", "function", "description", "plugin")
    name: str
    function: RendererFunction
    description: str
    plugin: str

    def __init__(self, name: str, function: RendererFunction, description: str, plugin: str = "?") -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "function", function)
        setattr_(self, "description", description)
        setattr_(self, "plugin", plugin)
        _check("renderer", name, function, description)


class DebugInfoSpec(RegisteredProvider):
    """A debug-info provider, the plugin that registered it and its time limit
    (checked once, here); the chain runs it as a
    :class:`~tsubaki_forensics.contracts.debuginfo.RegisteredProvider`."""

    def __init__(self, provider: DebugInfoProvider, plugin: str | None = None, timeout: float | None = None) -> None:
        super().__init__(provider, plugin, timeout)
        p = self.provider
        for attr in ("name", "description", "order", "provide"):
            if not hasattr(p, attr):
                raise TypeError(f"debug-info provider {p!r} lacks {attr!r}")
        _check("debug-info provider", p.name, p.provide, p.description)
        if not isinstance(p.order, int) or isinstance(p.order, bool):
            raise TypeError(f"debug-info provider {p.name!r}: order must be an int, not {p.order!r}")
        t = self.timeout
        if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < float("inf")):
            raise TypeError(f"debug-info provider {p.name!r}: timeout must be seconds >= 0 "
                            f"(0: no limit), not {t!r}")


class RegisterSource(Protocol):
    """``register(name, factory, description)`` or ``register(source_type)``.

    ``source_type`` is any object with ``name``, ``description``, ``open``
    (the factory) and optionally ``probe``.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> None: ...


class RegisterAnalysis(Protocol):
    """``register(name, function, description, needs=(), options=())``."""

    def __call__(
        self, name: str, function: AnalysisFunction, description: str, needs: Iterable[Need] = (),
        options: Iterable[AnalysisOption] = (),
    ) -> None: ...


class RegisterDebugInfo(Protocol):
    """``register(provider, timeout=None)``: a :class:`~tsubaki_forensics.contracts.DebugInfoProvider`
    and the seconds its ``provide`` may run (``None``: the default, 120 s; ``0``: no limit)."""

    def __call__(self, provider: DebugInfoProvider, timeout: float | None = None) -> None: ...


class RegisterRenderer(Protocol):
    """``register(name, function, description)``."""

    def __call__(self, name: str, function: RendererFunction, description: str) -> None: ...
