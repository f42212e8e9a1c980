"""The ``.tsp`` symbol pack file: a small header, then one zstd frame of JSON.

Layout (all integers little-endian; docs/SELFCONTAINED.md, "Symbol packs"):

| offset | size | field |
|---:|---:|---|
| 0 | 8 | magic ``\\x89TSP\\r\\n\\x1a\\n`` |
| 8 | 2 | major version (1) |
| 10 | 2 | minor version (0) |
| 12 | 4 | reserved, zero |
| 16 | 8 | payload length (bytes after the header) |
| 24 | 8 | content length (bytes of JSON once decompressed) |
| 32 | 8 | XXH64 of the payload |

The payload is one zstd frame whose decompressed content is a UTF-8 JSON
object (the pack: kernel, types, objects, symbols).  A reader refuses a
wrong magic, another major version, a checksum mismatch, a truncated file,
and content larger than :data:`MAX_CONTENT` (a hostile pack must not make
it allocate without bound); a newer minor version is read.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import xxhash
import zstandard

from ..errors import FormatError, UnsupportedVersionError
from ..limits import check_json, decompress_bounded

__all__ = ["MAGIC", "MAJOR", "MINOR", "HEADER", "MAX_CONTENT", "SymbolPackError", "encode_pack", "decode_pack"]

MAGIC = b"\x89TSP\r\n\x1a\n"
MAJOR, MINOR = 1, 0
HEADER = struct.Struct("<8sHHIQQQ")
MAX_CONTENT = 64 << 20  # far above a real pack (~10 MB of JSON); limits.BUDGET bounds the parse
_LEVEL = 19


class SymbolPackError(FormatError):
    """A ``.tsp`` file that cannot be read (not a pack, damaged, or too new)."""


def encode_pack(pack: dict[str, Any], level: int = _LEVEL) -> bytes:
    """The file bytes of ``pack`` (a JSON-able dict)."""
    content = json.dumps(pack, separators=(",", ":"), sort_keys=True).encode()
    payload = zstandard.ZstdCompressor(level=level).compress(content)
    return HEADER.pack(MAGIC, MAJOR, MINOR, 0, len(payload), len(content), xxhash.xxh64_intdigest(payload)) + payload


def decode_pack(data: bytes, what: str = "symbol pack") -> dict[str, Any]:
    """The pack dict in ``data``.

    :raises SymbolPackError: not a pack, truncated, damaged, too large.
    :raises UnsupportedVersionError: a later major version.
    """
    if len(data) < HEADER.size:
        raise SymbolPackError(f"{what}: truncated ({len(data)} bytes; the header alone is {HEADER.size})")
    magic, major, minor, _reserved, length, content_length, checksum = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SymbolPackError(f"{what}: not a tsubaki symbol pack (bad magic)")
    if major != MAJOR:
        raise UnsupportedVersionError(f"{what}: symbol pack version {major}.{minor}; this tsubaki-forensics "
                                      f"reads {MAJOR}.x (upgrade it)")
    payload = memoryview(data)[HEADER.size:]
    if len(payload) != length:
        raise SymbolPackError(f"{what}: payload is {len(payload)} bytes, the header says {length} (truncated?)")
    if xxhash.xxh64_intdigest(payload) != checksum:
        raise SymbolPackError(f"{what}: checksum mismatch (the file is damaged)")
    if content_length > MAX_CONTENT:
        raise SymbolPackError(f"{what}: content of {content_length} bytes exceeds the {MAX_CONTENT} limit")
    try:  # never inflated past what the (already bounded) header claims
        content = decompress_bounded(payload, what, max_output=content_length)
    except FormatError as e:
        raise SymbolPackError(str(e)) from None
    if len(content) != content_length:
        raise SymbolPackError(f"{what}: content is {len(content)} bytes, the header says {content_length}")
    try:
        check_json(content, what)  # a JSON bomb is refused before json.loads allocates
        pack = json.loads(content)
    except FormatError as e:
        raise SymbolPackError(str(e)) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SymbolPackError(f"{what}: unreadable content ({e})") from e
    if not isinstance(pack, dict) or not {"kernel", "types", "names", "objects", "symbols"} <= pack.keys():
        raise SymbolPackError(f"{what}: content is not a symbol pack (missing sections)")
    return pack
