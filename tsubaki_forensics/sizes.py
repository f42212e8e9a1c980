"""Sizes as people write them (``128M``, ``2G``, ``512KiB``, ``1.5G``, ``4096``): one parser.

One meaning everywhere (issue 17: four parsers disagreed on a bare number):

* units are binary: ``K``, ``M``, ``G``, ``T`` are KiB, MiB, GiB, TiB, and
  ``K``, ``Ki``, ``KB``, ``KiB`` (any case) mean the same; ``B`` alone is bytes;
* **a bare number is bytes** (``--chunk-size 262144``, ``--reboot-mem 4096``);
  ``qemu -m 512`` means MiB, so ``lab crash --mem 512`` is refused with a
  hint to write ``512M`` rather than silently taken as 512 bytes;
* a decimal is allowed (``1.5G``) when it comes to a whole number of bytes.

Used by every option and spec that takes a size: ``collect`` and ``monitor``
(through ``monitor_model.machine.parse_size_option``), ``import --chunk-size``
and the crash lab's ``--mem`` / ``mem=`` (``lab/sizes.py`` adds its range
and whole-MiB checks).  It sits in the bottom layer: it imports only ``errors``.
"""

from __future__ import annotations

import re

from .errors import SizeError

__all__ = ["parse_size", "format_size", "SizeError", "UNITS"]

#: bytes per unit letter ("" and "b": bytes)
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:ib?|b)?|(b))?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``text`` in bytes (see the module docstring for the one meaning of a size).

    :raises SizeError: not a size (a ``TsubakiError``: one line at the CLI).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise SizeError(f"not a size: {text!r} (a size is not negative)")
        return text
    m = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise SizeError(f"not a size: {text!r} (use e.g. 128M, 2G, 4096)")
    number, unit, byte = m.groups()
    from decimal import Decimal  # here: the root --help imports this module (issue 21)

    value = Decimal(number) * UNITS[(unit or byte or "").lower()]
    if value != value.to_integral_value():
        raise SizeError(f"not a size: {text!r} is not a whole number of bytes")
    return int(value)


def format_size(n: float) -> str:
    """Human-readable binary size, e.g. ``1.5 GiB`` (the inverse of :func:`parse_size`, one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover
