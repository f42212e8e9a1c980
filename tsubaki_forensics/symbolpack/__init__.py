"""Symbol packs: the second route to analysis without a vmlinux, for kernels without BTF.

The package's names live in :mod:`.pack` (what a pack is and how it is
served to drgn; docs/SELFCONTAINED.md) and are imported on first use: every
``analyze`` imports this package through the symbol-pack debug-info
provider's entry point (:mod:`.provider`), and most runs never read a pack,
so importing ``drgn``'s symbol finders, ``base64`` and the pack file format
there cost ~3 ms of each run (issue 21).
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__ = [
    "DUMP_PROPERTY",
    "LIMITATIONS",
    "SymbolPackError",
    "SymbolPackMismatch",
    "SymbolPackReport",
    "attach_symbolpack",
    "check_pack_matches",
    "pack_from_dump",
    "read_pack",
    "write_pack",
]
__getattr__ = lazy_exports(__name__, {name: "pack" for name in [*__all__, "FINDER_NAME"]})
