"""JSON documents written as they are made: :class:`JsonStream` and :func:`write_json`.

Why here: the renderers of ``inspect`` (and ``verify``) write documents with
a million items (issue 22); the streaming writer sits with them, below the
CLI, which re-exports both (``cli.output.JsonStream``, ``print_json``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = ["JsonStream", "write_json"]


class JsonStream:
    """A JSON array written item by item, one compact item per line.

    Why: ``inspect --format json`` of a dump of a million records lists a
    million ranges; building them as one list of dicts and one string cost
    1.2 GiB (issue 22).  Put a ``JsonStream`` as a value of a dict handed to
    :func:`write_json`: its items are made (by the iterable) and written a
    few thousand at a time.
    """

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


def write_json(data: Any, out: IO[str]) -> None:
    """``data`` as JSON on ``out``, indented by 2 like ``json.dumps(indent=2)``, and a newline;
    a :class:`JsonStream` anywhere under nested dicts is written as it is produced."""
    if not _has_stream(data):
        out.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        return
    for chunk in _stream(data, 0):
        out.write(chunk)
    out.write("\n")


def _has_stream(o: Any) -> bool:
    return isinstance(o, JsonStream) or (isinstance(o, dict) and any(map(_has_stream, o.values())))


def _stream(o: Any, level: int) -> Iterator[str]:
    pad = "\n" + "  " * level
    if isinstance(o, JsonStream):
        inner = pad + "  "
        batch: list[str] = []
        first = True
        for item in o.items:
            batch.append(json.dumps(item, default=str))
            if len(batch) >= 4096:
                yield ("[" if first else ",") + inner + ("," + inner).join(batch)
                batch, first = [], False
        if batch:
            yield ("[" if first else ",") + inner + ("," + inner).join(batch)
            first = False
        yield "[]" if first else pad + "]"
    elif isinstance(o, dict) and _has_stream(o):
        sep = "{"
        for key, value in o.items():
            yield f"{sep}{pad}  {json.dumps(str(key))}: "
            yield from _stream(value, level + 1)
            sep = ","
        yield pad + "}" if sep == "," else "{}"
    else:  # no stream inside: as json.dumps would, re-indented (JSON strings hold no raw newline)
        yield json.dumps(o, indent=2, sort_keys=False, default=str).replace("\n", pad)
