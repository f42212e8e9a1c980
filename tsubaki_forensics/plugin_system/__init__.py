"""The plugin system: pluggy hook specs, the manager, and its typed facade.

Core code uses :func:`get_plugins` (or :func:`sources`) and never calls
``pm.hook`` itself; plugin authors import :data:`hookimpl` from here.
"""

from __future__ import annotations

from .hookspecs import PROJECT_NAME, hookimpl, hookspec
from .manager import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    PluginInfo,
    Plugins,
    disabled_from_argv,
    disabled_from_env,
    get_plugins,
    reset_plugins,
)
from .specs import RendererSpec, SourceSpec

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "PluginInfo",
    "Plugins",
    "RendererSpec",
    "SourceSpec",
    "disabled_from_argv",
    "disabled_from_env",
    "get_plugins",
    "hookimpl",
    "hookspec",
    "reset_plugins",
    "sources",
]


def sources() -> dict[str, SourceSpec]:
    """Memory sources registered by plugins (for ``collect``), by name."""
    return get_plugins().sources()
