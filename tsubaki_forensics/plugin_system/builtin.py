"""The core's own hook implementations, registered like any plugin.

Only the defaults live here: reassembling with
:func:`tsubaki_forensics.vmcore.foreign.open_any` (``.tsd`` files through
the format's own reader, ELF, kdump, flattened, split, LiME and wrapped
files by magic; tried last, so a plugin can take over), the debug-info
providers of the layers below (vmlinux files, the crash lab's kernel cache,
the dump's BTF) and the text and JSON renderers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from ..contracts.debuginfo import DESCRIPTION, ORDER, DeferredProvider
from .hookspecs import hookimpl
from .specs import RegisterDebugInfo, RegisterRenderer

__all__ = ["BUILTIN_NAME", "tsubaki_reassemble", "tsubaki_register_debug_info", "tsubaki_register_renderers"]

BUILTIN_NAME = "builtin"
#: The chunk LRU of a .tsd opened for drgn (analyze, shell, crash, triage): three
#: full 8 MiB chunks.  drgn's hot pages are cached in front of it by the bridge,
#: so a bigger LRU only holds chunks no read comes back to: on the lab's 512 MiB
#: and busy 2 GiB crashes 16 MiB instead of 128 MiB cut analyze's peak RSS by
#: 9-17 MiB for 4-7 more decompressions out of ~60 (issue 21).  24 MiB: the
#: hung-task crash decoded 10 records twice at 16 (30 MiB of zstd output; 20 MiB
#: at 24, no gain beyond), for at most 8 MiB more peak RSS.
PROGRAM_CHUNK_CACHE = 24 << 20


@hookimpl(trylast=True)
def tsubaki_reassemble(paths: Sequence[Path]) -> Any | None:
    """Open the files of one dump, whatever their format (the one opening path
    every command uses, docs/FORMATS.md).

    ``.tsd`` files go straight to the ``.tsd`` reader, as ``open_any`` sends
    them, without importing the foreign-format readers (issue 21: ~2 ms and
    two dataclasses of every ``analyze``); anything else, and any error
    message, is ``open_any``'s.
    """
    from ..vmcore.detect import sniff

    if paths and all(sniff(p) == "tsd" for p in paths):
        from ..tsd import open_dump

        return open_dump([Path(p) for p in paths], cache_bytes=PROGRAM_CHUNK_CACHE)
    from ..vmcore.foreign import open_any

    return open_any(list(paths), cache_bytes=PROGRAM_CHUNK_CACHE)


@hookimpl
def tsubaki_register_debug_info(register: RegisterDebugInfo) -> None:
    """vmlinux files (debug directories), the crash lab's cache and the dump's own BTF.

    The embedded symbol pack registers itself the same way, through the
    entry point ``symbol-pack`` (it sits above this layer).  Imported here,
    when a program is built, not when the CLI starts (drgn and the lab cost
    0.1-0.3 s to import, and most commands never build a program); the lab's
    and the BTF provider only when the chain reaches them (``--vmlinux`` or a
    vmlinux in a debug directory never does: issue 21).
    """
    from ..drgn_bridge.debuginfo import VmlinuxFiles

    register(VmlinuxFiles())
    for name, target in (("lab-kernels", "tsubaki_forensics.lab.provider:LabKernels"),
                         ("btf", "tsubaki_forensics.selfcontained.provider:BtfProvider")):
        register(DeferredProvider(target, name, DESCRIPTION[name], ORDER[name]))


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
