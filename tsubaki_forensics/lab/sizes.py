"""Guest memory sizes for the crash lab (``512M``, ``4G``, ``1.5GiB``): range and canonical spelling.

The parsing is the project's one size parser (:mod:`tsubaki_forensics.sizes`:
binary units, **a bare number is bytes**).  ``qemu -m 512`` means MiB, so a
bare number here is refused with a hint (``write 512M``) rather than taken as
512 bytes or silently read as MiB.  Sizes are normalised to a canonical
spelling because they are part of cache keys.
"""

from __future__ import annotations

from ..errors import LabError, SizeError
from ..sizes import parse_size as parse_bytes

__all__ = ["parse_size", "format_size", "MIN_GUEST_MEM", "MAX_GUEST_MEM"]

KIB = 1024

# A Debian cloud kernel with our initramfs needs ~100 MiB to reach the panic;
# the upper bound only guards against typos (64G of TCG guest is never meant).
MIN_GUEST_MEM = 128 * KIB**2
MAX_GUEST_MEM = 32 * KIB**3


def parse_size(text: str | int) -> int:
    """Return ``text`` in bytes (:func:`tsubaki_forensics.sizes.parse_size`), checked for a guest.

    :raises LabError: unparsable, a bare number (bytes: too small, say ``512M``),
        not a whole number of MiB, or out of range.
    """
    try:
        value = parse_bytes(text)
    except SizeError:
        raise LabError(f"cannot read memory size {text!r}: use e.g. 512M, 2G, 4GiB") from None
    if isinstance(text, str) and text.strip().isdigit() and value < MIN_GUEST_MEM:
        raise LabError(f"memory size {text!r} is {value} bytes (a bare number is bytes, unlike qemu -m): "
                       f"write {text.strip()}M for MiB")
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
