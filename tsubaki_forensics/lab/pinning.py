"""Which Debian kernel the lab should boot: a series (its newest ABI) or one pinned release.

Pure parsing, no apt: ``6.1`` or ``6.12`` asks for the newest ABI of the
series (what the tests and the quick start want, so they follow Debian's
updates); ``6.1.0-57``, ``6.12.118+deb12`` or the full release
``6.1.0-57-cloud-amd64`` pins one ABI (to reproduce a run, or to check that
the suite passes on another kernel of the same series).  The environment
variable ``TSUBAKI_LAB_KERNELS`` pins series-wide without touching any
command line or test: ``TSUBAKI_LAB_KERNELS=6.1.0-56,6.12.117+deb12`` makes
every request for ``6.1`` and ``6.12`` (fixtures, ``lab crash``, ``collect
lab:...``, benchmarks) use those releases.  Whether a pinned release still
exists, and the fallback to the newest when it does not, is decided in
:mod:`.kernel`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import LabError
from .arch import ARCHES

__all__ = ["KernelRequest", "PIN_ENV", "FLAVOURS", "parse_kernel_request", "env_pins", "series_of"]

PIN_ENV = "TSUBAKI_LAB_KERNELS"
FLAVOURS = tuple(f for arch in ARCHES.values() for f in arch.flavours)
_SERIES_RE = re.compile(r"^(\d+)\.(\d+)$")
# 6.1.0-57, 6.12.118+deb12, 6.1.0-57-cloud-amd64: MAJOR.MINOR.PATCH then Debian's ABI suffix.
_RELEASE_RE = re.compile(r"^(\d+)\.(\d+)\.\d+(?:[-+][0-9A-Za-z.+~-]*)?$")


@dataclass(frozen=True)
class KernelRequest:
    """What the caller asked for; ``pinned`` is a full release name or None (= newest of ``series``)."""

    series: str
    pinned: str | None = None
    flavour: str = "cloud-amd64"
    pinned_by: str = ""  # "" (argument) or PIN_ENV

    def __str__(self) -> str:
        return self.pinned or self.series


def series_of(spec: str) -> str:
    """``6.12`` of ``6.12``, ``6.12.118+deb12`` or ``6.12.118+deb12-cloud-amd64``.

    :raises LabError: neither a series nor a release.
    """
    m = _SERIES_RE.match(spec) or _RELEASE_RE.match(spec)
    if not m:
        raise LabError(f"kernel {spec!r} is neither a series (6.1, 6.12) nor a Debian release "
                       "(6.1.0-57, 6.12.118+deb12, 6.1.0-57-cloud-amd64)")
    return f"{m.group(1)}.{m.group(2)}"


def _release_name(abi: str, flavour: str) -> str:
    """The full release of an ABI (the flavour appended unless it is there already)."""
    for f in sorted(FLAVOURS, key=len, reverse=True):  # "-cloud-amd64" before "-amd64"
        if abi.endswith("-" + f):
            if f != flavour:
                raise LabError(f"kernel {abi!r} is of the {f} flavour; the lab boots {flavour}")
            return abi
    return f"{abi}-{flavour}"


def env_pins(environ: Mapping[str, str] | None = None, flavour: str = "cloud-amd64") -> dict[str, str]:
    """``{series: pinned release}`` from ``TSUBAKI_LAB_KERNELS`` (comma-separated releases).

    :raises LabError: an entry that is not a release, or two pins of one series.
    """
    text = (os.environ if environ is None else environ).get(PIN_ENV, "")
    pins: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if _SERIES_RE.match(item):
            raise LabError(f"{PIN_ENV}: {item!r} is a series; pin a release such as {item}.0-57 or "
                           f"{item}.118+deb12 (the newest of a series needs no pin)")
        series = series_of(item)
        if series in pins:
            raise LabError(f"{PIN_ENV} pins series {series} twice ({pins[series]}, {item})")
        pins[series] = _release_name(item, flavour)
    return pins


def parse_kernel_request(spec: str, flavour: str = "cloud-amd64", *,
                         environ: Mapping[str, str] | None = None) -> KernelRequest:
    """The request meant by ``--kernel spec`` (a bare series honours ``TSUBAKI_LAB_KERNELS``).

    :raises LabError: ``spec`` or the environment variable is malformed, or of another flavour.
    """
    if flavour not in FLAVOURS:
        raise LabError(f"unknown kernel flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    spec = str(spec).strip()
    series = series_of(spec)
    if _SERIES_RE.match(spec):
        pinned = env_pins(environ, flavour).get(series)
        return KernelRequest(series, pinned, flavour, PIN_ENV if pinned else "")
    return KernelRequest(series, _release_name(spec, flavour), flavour)
