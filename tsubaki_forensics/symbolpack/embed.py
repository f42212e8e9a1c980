"""Carry a symbol pack with a dump that is already written.

A ``.tsd`` dump may span several files bound by one ``dump_id``
(docs/FORMAT.md §8).  :func:`write_companion` writes a small file of the
same dump holding one SYMBOLPACK METADATA record (format 1.1), so
``analyze DUMP.tsd DUMP.symbols.tsd`` finds the pack
(:func:`~tsubaki_forensics.symbolpack.pack_from_dump`); the reader requires
every file that has one to carry the same pack.  ``collect --symbols``
writes the record into the dump itself.  Companions written before 1.1
carry the pack as a base64 property instead, still read.
"""

from __future__ import annotations

from pathlib import Path

from .fileformat import decode_pack

__all__ = ["write_companion"]


def write_companion(pack_bytes: bytes, dump_path: Path, out: Path) -> int:
    """Write ``out``: a file of the dump in ``dump_path`` carrying the pack; its size.

    :raises SymbolPackMismatch: the pack is of another build than the dump.
    :raises SymbolPackError: ``pack_bytes`` is not a pack.
    """
    from ..tsd import TsdWriter, open_dump
    from . import check_pack_matches

    pack = decode_pack(pack_bytes)
    dump = open_dump([dump_path])
    try:
        header = dump.header
        check_pack_matches(pack, dump.vmcoreinfo, str(dump_path))
    finally:
        dump.close()
    with TsdWriter(out, dump_id=header.dump_id, arch=header.arch, page_size=header.page_size,
                   producer="tsubaki-forensics symbols attach", threads=0) as writer:
        writer.write_metadata(symbolpack=pack_bytes)
    return Path(out).stat().st_size
