"""The plugin system: pluggy hook specs, the manager, and its typed facade.

Core code uses :func:`get_plugins` (or :func:`sources`) and never calls
``pm.hook`` itself; plugin authors import :data:`hookimpl` from here.

The manager and the spec types are imported on first use (PEP 562): a
plugin module that only needs :data:`hookimpl`, and the command line's
start-up (:mod:`.discovery`), do not pay for the analysis layer they pull in;
nor does the root ``--help`` pay for pluggy (issue 21): the markers come from
:mod:`.hookspecs` when first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .names import PROJECT_NAME

if TYPE_CHECKING:
    from .hookspecs import hookimpl, hookspec
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


_LAZY = {
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    "DISABLE_ENV": "manager",
    "ENTRY_POINT_GROUP": "manager",
    "PluginInfo": "manager",
    "Plugins": "manager",
    "disabled_from_argv": "manager",
    "disabled_from_env": "manager",
    "get_plugins": "manager",
    "reset_plugins": "manager",
    "RendererSpec": "specs",
    "SourceSpec": "specs",
}


__getattr__ = lazy_exports(__name__, _LAZY)


def sources() -> dict[str, SourceSpec]:
    """Memory sources registered by plugins (for ``collect``), by name."""
    from .manager import get_plugins

    return get_plugins().sources()
