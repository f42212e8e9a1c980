"""Guest memory sizes as people write them (``512M``, ``4G``, ``1.5GiB``).

QEMU's ``-m`` reads a bare number as MiB; we do the same so that a size a
user copies from a QEMU command line means the same thing here.  Sizes are
normalised to a canonical spelling because they are part of cache keys.
"""

from __future__ import annotations

import re

from ..errors import LabError

__all__ = ["parse_size", "format_size", "MIN_GUEST_MEM", "MAX_GUEST_MEM"]

KIB = 1024
_UNITS = {"": KIB * KIB, "b": 1, "k": KIB, "m": KIB**2, "g": KIB**3, "t": KIB**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.IGNORECASE)

# A Debian cloud kernel with our initramfs needs ~100 MiB to reach the panic;
# the upper bound only guards against typos (64G of TCG guest is never meant).
MIN_GUEST_MEM = 128 * KIB**2
MAX_GUEST_MEM = 32 * KIB**3


def parse_size(text: str | int) -> int:
    """Return ``text`` in bytes; a bare number is MiB as in ``qemu -m``.

    :raises LabError: unparsable, not a whole number of MiB, or out of range.
    """
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE_RE.match(text)
        if not m:
            raise LabError(f"cannot read memory size {text!r}: use e.g. 512M, 2G, 4GiB")
        number, unit = m.groups()
        value = int(float(number) * _UNITS[unit.lower()])
    if value % KIB**2:
        raise LabError(f"memory size {text!r} is not a whole number of MiB")
    if not MIN_GUEST_MEM <= value <= MAX_GUEST_MEM:
        raise LabError(
            f"memory size {text!r} is out of range "
            f"({format_size(MIN_GUEST_MEM)}..{format_size(MAX_GUEST_MEM)})"
        )
    return value


def format_size(value: int) -> str:
    """Canonical spelling: the largest unit that divides exactly (``4G``, ``1536M``)."""
    for suffix, unit in (("T", KIB**4), ("G", KIB**3), ("M", KIB**2), ("K", KIB)):
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return f"{value}B"
