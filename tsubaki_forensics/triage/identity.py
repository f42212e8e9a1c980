"""A dump file's identity from its content, for triage's grouping and cache.

Why: on main a file was known by its header's dump id, creation time and
size.  A forged file with those three equal to a real dump's made triage
report the forged panic for the real dump (the two were taken for byte
copies and only one was opened), and the cache kept serving it after the
forgery was deleted.  The identity is now a BLAKE2b-128 over:

- the file header (dump id, creation time, producer, page size, ...);
- every METADATA record in full: VMCOREINFO (so the kernel's build id),
  ELF notes (the crashed CPUs' registers), properties, the memory map, an
  embedded symbol pack;
- the framing of every other record: type, sequence, physical range and
  the XXH64 checksum of its payload (so the memory, without re-reading
  gigabytes: a file of the same crash differs here unless it is a copy).

Two files with the same identity are copies; two with different ones are
different parts (the reader then checks they agree), and the cache key
changes with it.  Cost: one small read per record, plus the metadata.
"""

from __future__ import annotations

import hashlib
import struct

from ..tsd import records as R
from ..tsd.reader import TsdFile

__all__ = ["file_identity"]

_FRAME = struct.Struct("<HQQQQ")  # type, sequence, paddr, length, checksum


def file_identity(f: TsdFile) -> str:
    """The hex content identity of an open ``.tsd`` file (see the module doc)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f._pread(R.FILE_HEADER_SIZE, 0))
    for _, kind, data in f.metadata:
        h.update(struct.pack("<HQ", kind, len(data)))
        h.update(data)
    for rec in f.records:
        head = R.unpack_record_header(f._pread(R.RECORD_HEADER_SIZE, rec.offset), rec.offset)
        checksum = head.checksum if head is not None else 0
        h.update(_FRAME.pack(rec.type, rec.sequence or 0, rec.paddr, rec.length, checksum))
    h.update(struct.pack("<Q", len(f.events)))
    return h.hexdigest()
