"""The ``btf`` debug-info provider: the dump describes itself (BTF, kallsyms, ORC).

Last in the chain (``order`` 900): every full dump of a modern kernel carries
these tables, so it answers when no vmlinux or symbol pack did.  The built-in
plugin registers it; ``analyze --self-contained`` uses it alone.
"""

from __future__ import annotations

from ..contracts.debuginfo import DESCRIPTION, ORDER, DebugInfoReport, DebugInfoRequest
from . import SelfContainedError, attach_selfcontained

__all__ = ["BtfProvider"]


class BtfProvider:
    """Serve drgn the dump's own BTF, kallsyms and ORC (:func:`attach_selfcontained`)."""

    name = "btf"
    description = DESCRIPTION[name]
    order = ORDER[name]

    def provide(self, request: DebugInfoRequest) -> DebugInfoReport | None:
        try:
            return attach_selfcontained(request.prog).debug_info(self.name)
        except SelfContainedError as e:
            raise SelfContainedError(f"the dump cannot describe itself: {e}") from e
