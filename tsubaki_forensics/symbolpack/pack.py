"""Symbol packs: the second route to analysis without a vmlinux, for kernels without BTF.

``tsubaki-forensics symbols pack VMLINUX -o kernel.tsp`` extracts from the
DWARF vmlinux (with drgn) the types, enumerators, variables and functions
the analyses look up (:mod:`.lookups`, measured by :mod:`.record`), the
closure of types they reach, and the ELF symbol table, into a compact,
versioned file (:mod:`.fileformat`; about 1 MB instead of a 260-600 MB
vmlinux).  :func:`attach_symbolpack` serves it to a ``drgn.Program`` built
from a dump, like :func:`~tsubaki_forensics.selfcontained.attach_selfcontained`
serves the dump's BTF: drgn's helpers and the bundled analyses run unchanged,
with drgn's own ORC unwinder.  Details: docs/SELFCONTAINED.md.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import drgn

from ..contracts.debuginfo import DebugInfoKind, DebugInfoReport
from ..errors import DebugInfoError
from .fileformat import SymbolPackError, decode_pack, encode_pack
from .finders import PackObjects, PackTypes, image_base, kernel_offset, pack_symbols

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

FINDER_NAME = "tsubaki_symbolpack"
#: Dump property that carried a pack (base64 of the ``.tsp`` bytes) before the
#: format had the SYMBOLPACK METADATA kind (1.1); still read, never written.
DUMP_PROPERTY = "symbolpack.tsp"

LIMITATIONS = (
    "no source file:line for frames or functions (a pack keeps no line tables)",
    "no inline frames: each real frame is named after the function that contains it",
    "frame names are ELF symbols, as kallsyms gives them: GCC's split/cloned parts keep their suffix "
    "(.cold, .part.0, .constprop.0) and assembly is named after the nearest label",
    "no parameter or local variable values in frames",
    "only the types, globals, functions and constants the analyses look up, and the types these reach, "
    "are in the pack; anything else is not found (add names with `symbols pack --type/--object`)",
)


class SymbolPackMismatch(DebugInfoError):
    """The pack was made from another kernel build than the dump's."""


def write_pack(pack: dict[str, Any], path: Path) -> int:
    """Write ``pack`` to ``path``; its size in bytes."""
    data = encode_pack(pack)
    Path(path).write_bytes(data)
    return len(data)


def read_pack(path: Path) -> dict[str, Any]:
    """The pack in ``path``.

    :raises SymbolPackError: missing, unreadable, not a pack, damaged.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SymbolPackError(f"cannot read symbol pack {path}: {e.strerror or e}") from e
    return decode_pack(data, what=str(path))


def pack_from_dump(dump: Any) -> dict[str, Any] | None:
    """The pack embedded in a dump, or None.

    Read from ``dump.symbolpack`` (the bytes of the SYMBOLPACK METADATA
    record, format 1.1), or else from the ``symbolpack.tsp`` property
    (base64), which ``symbols attach`` wrote before 1.1: such dumps still
    analyse with their pack.
    """
    raw = getattr(dump, "symbolpack", None)
    if raw:
        return decode_pack(bytes(raw), what="the dump's symbol pack")
    text = (getattr(dump, "properties", None) or {}).get(DUMP_PROPERTY)
    if not text:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as e:
        raise SymbolPackError(f"the dump's {DUMP_PROPERTY} property is not base64: {e}") from e
    return decode_pack(data, what=f"the dump's {DUMP_PROPERTY}")


@dataclass
class SymbolPackReport:
    """What :func:`attach_symbolpack` served."""

    build_id: str
    types: int
    objects: int
    symbols: int
    kernel_offset: int
    unwind: Any
    unwind_error: str | None
    limitations: tuple[str, ...] = LIMITATIONS
    finders: tuple[PackTypes, PackObjects] | None = field(default=None, repr=False, compare=False)
    frame_pointers: bool = False  # arm64: drgn unwinds by frame pointer, no tables needed

    def summary(self) -> list[str]:
        """What was served, one line each (the limitations are apart: :meth:`debug_info`)."""
        return [f"symbol pack: no vmlinux; {self.types} types, {self.objects} globals/functions/constants and "
               f"{self.symbols} symbols from a pack of build id {self.build_id}",
               "unwinding: drgn's frame-pointer unwinder (arm64 kernels have no ORC)" if self.frame_pointers
               else f"unwinding: drgn's built-in ORC from the dump ({self.unwind.orc_entries} kernel entries)"
               if self.unwind is not None else f"unwinding: unavailable ({self.unwind_error})"]

    def debug_info(self, provider: str = "symbol-pack") -> DebugInfoReport:
        """This report as the one the drgn bridge keeps (``DumpProgram.debug_info``)."""
        return DebugInfoReport(DebugInfoKind.SYMBOL_PACK, provider, summary=tuple(self.summary()),
                               limitations=tuple(self.limitations), details=self)


def _vmcoreinfo_build_id(text: str) -> str | None:
    m = re.search(r"^BUILD-ID=([0-9a-fA-F]+)$", text, re.M)
    return m.group(1).lower() if m else None


def check_pack_matches(pack: dict[str, Any], vmcoreinfo: bytes | str | None, what: str) -> None:
    """Refuse a pack of another build than ``what``, whose VMCOREINFO is given.

    Checked before a pack is stored with a dump, so that a wrong pack fails
    at collection rather than at analysis.  Without a BUILD-ID line nothing
    can be compared and the pack is accepted.

    :raises SymbolPackMismatch: the build ids differ.
    """
    text = vmcoreinfo.decode(errors="replace") if isinstance(vmcoreinfo, bytes) else (vmcoreinfo or "")
    have, want = _vmcoreinfo_build_id(text), pack["kernel"].get("build_id")
    if have and want != have:
        raise SymbolPackMismatch(f"the symbol pack is of build id {want}; {what} is of {have}")


def attach_symbolpack(prog: drgn.Program, pack: dict[str, Any]) -> SymbolPackReport:
    """Serve drgn the pack's types, objects and symbols, and let it unwind with ORC.

    Call it on a Linux kernel program with memory and VMCOREINFO and no vmlinux.

    :raises SymbolPackMismatch: the pack is of another build than the dump.
    :raises SymbolPackError: already attached.
    """
    from ..selfcontained.unwind import enable_orc

    if FINDER_NAME in prog.registered_type_finders():
        raise SymbolPackError("a symbol pack is already attached to this program")
    want = pack["kernel"].get("build_id")
    have = _vmcoreinfo_build_id(prog["VMCOREINFO"].string_().decode(errors="replace"))
    if have and want != have:
        raise SymbolPackMismatch(f"the symbol pack is of build id {want}; the dump's kernel is {have}")
    offset, base = kernel_offset(prog), image_base(prog)
    types = PackTypes(prog, pack)
    objects = PackObjects(prog, pack, types, offset, base)
    symbols = pack_symbols(pack, offset, base)
    prog.register_symbol_finder(FINDER_NAME, symbols.index, enable_index=-1)
    prog.register_type_finder(FINDER_NAME, types.find, enable_index=-1)
    prog.register_object_finder(FINDER_NAME, objects.find, enable_index=-1)
    unwind = unwind_error = None
    frame_pointers = prog.platform.arch == drgn.Architecture.AARCH64
    if not frame_pointers:
        try:
            unwind = enable_orc(prog, symbols.index)
        except (LookupError, ValueError, drgn.FaultError) as e:
            unwind_error = f"{type(e).__name__}: {e}"
    return SymbolPackReport(want, len(pack["types"]), len(pack["objects"]), symbols.count, offset,
                            unwind, unwind_error, finders=(types, objects), frame_pointers=frame_pointers)
