"""The ``symbol-pack`` debug-info provider: a pack embedded in the dump.

``symbols attach`` (or ``collect --symbols``) stores a pack cut from the
kernel's own DWARF inside the dump; this provider serves it to drgn when no
vmlinux was found (``order`` 800: after vmlinux files and the lab's cache,
before the dump's BTF).  It is registered the way a third party registers
one, through the ``tsubaki_forensics`` entry-point group
(``symbol-pack = "tsubaki_forensics.symbolpack.provider"``): the symbol
packs sit above the plugin system, so the built-in plugin cannot import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contracts.debuginfo import DESCRIPTION, ORDER
from ..errors import DebugInfoError
from ..plugin_system.hookspecs import hookimpl

if TYPE_CHECKING:
    from ..contracts.debuginfo import DebugInfoReport, DebugInfoRequest
    from ..plugin_system.specs import RegisterDebugInfo

__all__ = ["SymbolPackProvider", "tsubaki_register_debug_info"]


class SymbolPackProvider:
    """Serve drgn the symbol pack the dump carries (:func:`attach_symbolpack`), if any."""

    name = "symbol-pack"
    description = DESCRIPTION[name]
    order = ORDER[name]

    def provide(self, request: DebugInfoRequest) -> DebugInfoReport | None:
        # Imported when the chain asks (after the vmlinux files and the lab's
        # cache): registering the provider costs every command nothing more.
        from . import attach_symbolpack, pack_from_dump
        from .fileformat import SymbolPackError

        try:
            pack = pack_from_dump(request.dump)
            if pack is None:
                return None
            return attach_symbolpack(request.prog, pack).debug_info(self.name)
        except SymbolPackError as e:  # damaged or already attached: say so, let the next provider try
            raise DebugInfoError(f"the dump's symbol pack is unusable: {e}") from e


@hookimpl
def tsubaki_register_debug_info(register: RegisterDebugInfo) -> None:
    """The embedded symbol pack, between the vmlinux files and the dump's BTF."""
    register(SymbolPackProvider())
