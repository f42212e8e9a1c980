"""The core's own hook implementations, registered like any plugin.

Only the defaults live here: reassembling with
:func:`tsubaki_forensics.tsd.open_dump` (tried last, so a plugin can take
over), the debug-info providers of the layers below (vmlinux files, the
crash lab's kernel cache, the dump's BTF) and the text and JSON renderers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .hookspecs import hookimpl
from .specs import RegisterDebugInfo, RegisterRenderer

__all__ = ["BUILTIN_NAME", "tsubaki_reassemble", "tsubaki_register_debug_info", "tsubaki_register_renderers"]

BUILTIN_NAME = "builtin"


@hookimpl(trylast=True)
def tsubaki_reassemble(paths: Sequence[Path]) -> Any | None:
    """Open the ``.tsd`` files of one dump (the format's own reader), or one
    ELF vmcore or makedumpfile file (detected by magic, docs/FORMATS.md)."""
    from ..tsd import open_dump
    from ..vmcore.detect import is_tsd, open_foreign

    paths = list(paths)
    if paths and all(Path(p).exists() for p in paths) and not is_tsd(paths[0]):
        return open_foreign(paths)
    return open_dump(paths)


@hookimpl
def tsubaki_register_debug_info(register: RegisterDebugInfo) -> None:
    """vmlinux files (debug directories), the crash lab's cache and the dump's own BTF.

    The embedded symbol pack registers itself the same way, through the
    entry point ``symbol-pack`` (it sits above this layer).  Imported here,
    when a program is built, not when the CLI starts (drgn and the lab cost
    0.1-0.3 s to import, and most commands never build a program).
    """
    from ..drgn_bridge.debuginfo import VmlinuxFiles
    from ..lab.provider import LabKernels
    from ..selfcontained.provider import BtfProvider

    register(VmlinuxFiles())
    register(LabKernels())
    register(BtfProvider())


def _render_text(report: Any, out: IO[str]) -> None:
    from ..render import text_renderer  # rich is imported only for text output

    text_renderer.render(report, out)


def _render_json(report: Any, out: IO[str]) -> None:
    from ..render import json_renderer

    json_renderer.render(report, out)


@hookimpl
def tsubaki_register_renderers(register: RegisterRenderer) -> None:
    """Text (close to crash's output) and versioned JSON (docs/JSON.md)."""
    register("text", _render_text, "tables close to what crash prints")
    register("json", _render_json, "JSON, versioned schema (docs/JSON.md)")
