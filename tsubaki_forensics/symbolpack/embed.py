"""Carry a symbol pack with a dump, in the format as it is today.

A ``.tsd`` dump may span several files bound by one ``dump_id``
(docs/FORMAT.md §8), whose PROPERTIES records merge.  :func:`write_companion`
writes a small file of the same dump holding one PROPERTIES record with the
pack (``symbolpack.tsp``, base64), so ``analyze DUMP.tsd DUMP.symbols.tsd``
sees it (:func:`~tsubaki_forensics.symbolpack.pack_from_dump`).  Once the
format has a SYMBOLPACK METADATA kind, ``collect --symbols`` writes the pack
into the dump itself (docs/SELFCONTAINED.md lists the change).
"""

from __future__ import annotations

import base64
from pathlib import Path

from .fileformat import decode_pack

__all__ = ["write_companion"]


def write_companion(pack_bytes: bytes, dump_path: Path, out: Path) -> int:
    """Write ``out``: a file of the dump in ``dump_path`` carrying the pack; its size.

    :raises SymbolPackMismatch: the pack is of another build than the dump.
    :raises SymbolPackError: ``pack_bytes`` is not a pack.
    """
    from ..tsd import TsdWriter, open_dump
    from . import DUMP_PROPERTY, SymbolPackMismatch, _vmcoreinfo_build_id

    pack = decode_pack(pack_bytes)
    dump = open_dump([dump_path])
    try:
        header = dump.header
        have = _vmcoreinfo_build_id(bytes(dump.vmcoreinfo or b"").decode(errors="replace"))
    finally:
        dump.close()
    want = pack["kernel"].get("build_id")
    if have and want != have:
        raise SymbolPackMismatch(f"the symbol pack is of build id {want}; {dump_path} is of {have}")
    with TsdWriter(out, dump_id=header.dump_id, arch=header.arch, page_size=header.page_size,
                   producer="tsubaki-forensics symbols attach", threads=0) as writer:
        writer.write_metadata(properties={DUMP_PROPERTY: base64.b64encode(pack_bytes).decode()})
    return Path(out).stat().st_size
